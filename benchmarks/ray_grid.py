"""Serial vs Ray wall time of a comparison grid against a stub model server.

    python benchmarks/ray_grid.py [--tasks 8] [--latency 0.3] [--cpus 2]

A grid of ``--tasks`` cells (8 by default), each the tiny test task on examples of
its own, so no cell finds another's answers in the cache (as the cells of a real
grid, beyond the shared initial evaluation), every model call answered by
:class:`funcgrad.engines.stub.StubServer` after
``--latency`` seconds, one call in flight per cell (so a cell's time is its calls'
latency, as with a real model). The same grid runs once serially and once on a
local Ray instance with ``--cpus`` CPUs (one per cell), each with a cold cache of its
own; it prints both wall times (the Ray one includes starting the instance) and
checks that the two results tables are identical.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import funcgrad as fg  # noqa: E402
from funcgrad.cli.compare import run_compare  # noqa: E402
from funcgrad.engines.stub import StubServer  # noqa: E402
from train_fixtures import pipeline, respond_body  # noqa: E402


def salted_task(salt: str, n: int = 12) -> fg.Task:
    """train_fixtures.tiny_task on examples of its own (inputs prefixed with ``salt``)."""
    data = [fg.Example(f"e{i}", f"{salt}q{i}", f"{salt}q{i}"[::-1]) for i in range(n)]
    state = fg.PromptState.of(instruction=fg.Param("Answer the question.", role="instruction of the answer node"))
    third = n // 3
    return fg.Task(f"tiny-{salt}", pipeline, state, fg.exact_match, data[:third], data[third:2 * third], data[2 * third:])


GRID = """
[grid]
tasks = {tasks}
strategies = ["hint_bad_first"]
seeds = [0]
{task_tables}
[strategies.hint_bad_first]
name = "train_fixtures:hint_strategy"
first_try_bad = true
[engine]
base_url = "{base_url}"
model = "stub"
concurrency = 1
timeout = 30
[train]
steps = 2
batch_size = 2
concurrency = 1
[run]
dir = "{name}"
cache = "cache-{name}"
{executor}
"""


def _table(root: Path) -> dict:
    data = orjson.loads((root / "results.json").read_bytes())
    for task in data.values():
        for row in task["rows"]:
            row.pop("wall_s")
    return data


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--tasks", type=int, default=8)
    args.add_argument("--latency", type=float, default=0.3)
    args.add_argument("--cpus", type=int, default=2)
    opts = args.parse_args()
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), here, os.environ.get("PYTHONPATH", "")])  # for Ray's workers
    work = Path(tempfile.mkdtemp(prefix="ray-grid-"))
    tasks = [f"t{i}" for i in range(opts.tasks)]
    tables = "\n".join(f'[tasks.{t}]\nname = "ray_grid:salted_task"\nsalt = "{t}"' for t in tasks)
    walls = {}
    with StubServer(respond_body, latency=opts.latency) as stub:
        for name, executor in [("serial", ""), ("ray", '[executor]\nkind = "ray"\ncpus_per_cell = 1')]:
            config = work / f"{name}.toml"
            config.write_text(GRID.format(tasks=tasks, task_tables=tables, base_url=stub.base_url, name=name, executor=executor))
            if name == "ray":
                import ray

                ray.init(num_cpus=opts.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
                ray.shutdown()  # warm-up start: the timed run below starts its own instance
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run_compare(config, quiet=True)
            walls[name] = time.perf_counter() - started
        calls = len(stub.requests)
    same = _table(work / "serial") == _table(work / "ray")
    cells = len(tasks)
    print(f"grid: {cells} cells, stub latency {opts.latency * 1000:.0f} ms per call, {calls} calls in all, {os.cpu_count()} CPU cores")
    print(f"serial: {walls['serial']:.1f} s")
    print(f"ray ({opts.cpus} CPUs, 1 per cell, instance start included): {walls['ray']:.1f} s "
          f"= {walls['serial'] / walls['ray']:.2f}x faster")
    print(f"results tables identical: {same}")


if __name__ == "__main__":
    main()
