"""funcgrad compare on a local Ray instance: each cell in a Ray worker, results identical to a serial run."""

import os
from pathlib import Path

import orjson
import pytest

from funcgrad.cli.executors import ExecutorConfig, run_cells
from funcgrad.cli.main import main
from funcgrad.engines.stub import StubServer
from train_fixtures import respond_body

ray = pytest.importorskip("ray")
TESTS = Path(__file__).parent


def _grid(tmp_path, base_url, run_dir, executor=""):
    path = tmp_path / f"{run_dir}.toml"
    path.write_text(
        f"""
[grid]
tasks = ["tiny"]
strategies = ["hint", "hint_bad_first"]
seeds = [0]
[tasks.tiny]
name = "train_fixtures:tiny_task"
[strategies.hint]
name = "train_fixtures:hint_strategy"
[strategies.hint_bad_first]
name = "train_fixtures:hint_strategy"
first_try_bad = true
[engine]
base_url = "{base_url}"
model = "stub"
timeout = 10
[train]
steps = 2
batch_size = 2
[budget]
max_calls = 9
[run]
dir = "{run_dir}"
cache = "cache-{run_dir}"
{executor}
"""
    )
    return path


def _results(path):
    data = orjson.loads(path.read_bytes())
    for task in data.values():
        for row in task["rows"]:
            row.pop("wall_s")
    return data


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for this module (about 7 s to start); its workers find the test fixtures."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def test_ray_runs_cells_in_workers_and_matches_a_serial_run(local_ray, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as stub:
        serial = _grid(tmp_path, stub.base_url, "serial")
        parallel = _grid(tmp_path, stub.base_url, "ray", '[executor]\nkind = "ray"\ncpus_per_cell = 1')
        assert main(["compare", str(serial), "--quiet"]) == 0
        assert main(["compare", str(parallel)]) == 0  # separate cold cache: nothing shared with the serial run
    assert "2 cells on ray (local instance, 1 CPU per cell)" in capsys.readouterr().err
    assert _results(tmp_path / "ray" / "results.json") == _results(tmp_path / "serial" / "results.json")
    assert ray.is_initialized()  # an instance the grid did not start is left running


def test_run_cells_on_ray_keeps_the_order_of_the_cells(local_ray):
    out = run_cells(_worker_pid_and_echo, [b"0", b"1", b"2"], ExecutorConfig("ray", cpus_per_cell=0.5))
    docs = [orjson.loads(o) for o in out]
    assert [d["echo"] for d in docs] == ["0", "1", "2"]
    assert all(d["pid"] != os.getpid() for d in docs)  # each cell ran in a worker process


def _worker_pid_and_echo(payload: bytes) -> bytes:
    return orjson.dumps({"echo": payload.decode(), "pid": os.getpid()})
