"""Strategy comparison grids: strategies x tasks x seeds under the same budget per cell.

``funcgrad compare CONFIG`` runs every cell as an ordinary optimize job in
``RUN_DIR/cells/<task>--<strategy>--seed<k>``. Cells are resumable: a finished cell is
read back, not rerun; an interrupted one continues from its checkpoint; model
answers come from the shared cache where possible. The result is a markdown table
(``RUN_DIR/results.md``, also printed) of test accuracy before -> after (mean ± 95 %
CI over seeds), calls and tokens per role and wall time, a plot
(``RUN_DIR/results.png``) and the raw figures (``RUN_DIR/results.json``). The "no
optimization" row is the initial prompts' test accuracy.

Config (see examples/compare_counting.toml and examples/compare_multihop.toml)::

    [grid]
    tasks = ["object_counting"]                 # keys of [tasks.*] or built-in task names
    strategies = ["backprop", "whole_trace"]    # keys of [strategies.*] or registered names
    seeds = [0, 1]                              # training seeds (minibatch order, strategy RNG)
    [tasks.object_counting]                     # optional: task name + options
    n_test = 20
    [strategies.backprop_no_timestamps]         # a labelled variant (ablation)
    name = "backprop"
    time_stamps = false
    # [engine] [critic] [train] [budget] [run] as in an optimize config; [budget] is per cell
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from funcgrad.cli.config import parse_config, read_toml
from funcgrad.core.errors import ConfigError
from funcgrad.cli.job import JobResult, optimize
from funcgrad.training.rundir import RunDir
from funcgrad.engines.files import write_atomic

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
_GRID_KEYS = {"tasks", "strategies", "seeds"}
_SECTIONS = {"grid", "tasks", "strategies", "engine", "critic", "train", "budget", "run"}


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and half-width of the 95 % t confidence interval (None for fewer than 2 values).

    >>> mean_ci([0.5, 0.7])
    (0.6, 1.2706)
    """
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None
    half = _T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return round(m, 6), round(half, 6)


def _fmt(values: list[float]) -> str:
    m, half = mean_ci(values)
    return f"{100 * m:.1f}" + (f" ± {100 * half:.1f}" if half is not None else "")


def _entries(section: str, names: Any, table: Mapping) -> list[tuple[str, dict]]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"[grid] {section} must be a non-empty list of names, got {names!r}")
    out = []
    for label in names:
        spec = dict(table.get(label, {}))
        spec.setdefault("name", label)
        out.append((label, spec))
    return out


def plan(data: Mapping, base_dir: Path) -> tuple[list[dict], Path]:
    """The cells of a comparison config: dicts with label, task, strategy, seed and an optimize config."""
    for key in data:
        if key not in _SECTIONS:
            raise ConfigError(f"unknown section [{key}] in a compare config; allowed: {', '.join(sorted(_SECTIONS))}")
    grid = data.get("grid")
    if not isinstance(grid, Mapping):
        raise ConfigError("a compare config needs a [grid] section with tasks, strategies and seeds")
    for key in grid:
        if key not in _GRID_KEYS:
            raise ConfigError(f"[grid] has unknown key {key!r}; allowed keys: {', '.join(sorted(_GRID_KEYS))}")
    seeds = grid.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"[grid] seeds must be a non-empty list of whole numbers >= 0, got {seeds!r}")
    tasks = _entries("tasks", grid.get("tasks"), data.get("tasks", {}))
    strategies = _entries("strategies", grid.get("strategies"), data.get("strategies", {}))
    run = dict(data.get("run", {}))
    root = (base_dir / run.pop("dir", "runs/compare")).resolve()
    cache = run.pop("cache", None)
    if run:
        raise ConfigError(f"[run] has unknown key {next(iter(run))!r}; allowed keys: cache, dir")
    cells = []
    for task_label, task in tasks:
        for strategy_label, strategy in strategies:
            for seed in seeds:
                cell_dir = root / "cells" / f"{task_label}--{strategy_label}--seed{seed}"
                raw = {
                    "task": task, "strategy": strategy, "train": {**data.get("train", {}), "seed": seed},
                    "run": {"dir": str(cell_dir), **({"cache": cache} if cache else {})},
                }
                raw.update({k: data[k] for k in ("engine", "critic", "budget") if k in data})
                config = parse_config(raw, base_dir=base_dir)
                cells.append({"task": task_label, "strategy": strategy_label, "seed": seed, "config": config})
    return cells, root


def _row(label: str, jobs: list[JobResult]) -> dict:
    before = [j.fit_state.initial_test or 0.0 for j in jobs]
    after = [j.fit_state.final_test or 0.0 for j in jobs]
    roles: dict[str, list[int]] = {}
    tokens: dict[str, list[int]] = {}
    for j in jobs:
        per_calls: dict[str, int] = {}
        per_tokens: dict[str, int] = {}
        for r in j.usage["rows"]:
            per_calls[r["role"]] = per_calls.get(r["role"], 0) + r["calls"] + r["cached_calls"]
            per_tokens[r["role"]] = per_tokens.get(r["role"], 0) + r["prompt_tokens"] + r["completion_tokens"] + r.get("cached_tokens", 0)
        for role in per_calls:
            roles.setdefault(role, []).append(per_calls[role])
            tokens.setdefault(role, []).append(per_tokens[role])
    accepted = [sum(e.accepted for e in j.fit_state.log) for j in jobs]
    return {
        "strategy": label, "seeds": len(jobs), "before": before, "after": after,
        "calls": {r: statistics.fmean(v) for r, v in sorted(roles.items())},
        "tokens": {r: statistics.fmean(v) for r, v in sorted(tokens.items())},
        "wall_s": statistics.fmean(j.wall_s for j in jobs), "accepted": statistics.fmean(accepted),
        "steps": statistics.fmean(j.fit_state.step for j in jobs),
    }


def results_markdown(rows_by_task: dict[str, list[dict]]) -> str:
    """The comparison table(s) as markdown, one table per task."""
    out = []
    for task, rows in rows_by_task.items():
        out += [f"### {task}", "", "| strategy | seeds | test before | test after | Δ | accepted | calls per role | tokens per role | wall (s) |", "|---|---|---|---|---|---|---|---|---|"]
        baseline = rows[0]["before"] if rows else []
        out.append(f"| no optimization | {len(baseline)} | {_fmt(baseline)} | {_fmt(baseline)} | 0.0 | - | - | - | - |")
        for r in rows:
            delta = statistics.fmean(a - b for a, b in zip(r["after"], r["before"]))
            calls = ", ".join(f"{k} {v:.0f}" for k, v in r["calls"].items())
            toks = ", ".join(f"{k} {v / 1000:.1f}k" for k, v in r["tokens"].items())
            out.append(
                f"| {r['strategy']} | {r['seeds']} | {_fmt(r['before'])} | {_fmt(r['after'])} | {100 * delta:+.1f} "
                f"| {r['accepted']:.1f} | {calls} | {toks} | {r['wall_s']:.0f} |"
            )
        out.append("")
    out.append(
        "Accuracy in %, mean ± 95 % t-interval over seeds. Calls and tokens are means per cell and count every "
        "request the strategy needed, including those answered from the shared cache (at temperature 0 a cell "
        "repeating another cell's requests gets them from the cache); wall time is lower for such cells."
    )
    return "\n".join(out) + "\n"


def plot_results(rows_by_task: dict[str, list[dict]], path: Path) -> Path:
    """Bar chart: test accuracy before and after, per strategy (and task), with CI error bars and per-seed dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, before, after, err, seeds = [], [], [], [], []
    for task, rows in rows_by_task.items():
        for r in rows:
            labels.append(f"{r['strategy']}\n({task})" if len(rows_by_task) > 1 else r["strategy"])
            before.append(mean_ci(r["before"])[0])
            m, half = mean_ci(r["after"])
            after.append(m)
            err.append(half or 0.0)
            seeds.append(r["after"])
    xs = range(len(labels))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(labels)), 3.5))
    ax.bar([x - 0.2 for x in xs], before, width=0.4, label="before", color="tab:gray")
    ax.bar([x + 0.2 for x in xs], after, width=0.4, yerr=err, capsize=3, label="after (95 % CI)", color="tab:blue")
    for x, values in zip(xs, seeds):
        ax.scatter([x + 0.2] * len(values), values, color="black", s=12, zorder=3, label="after, per seed" if x == 0 else None)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_compare(config_path: str | Path, *, quiet: bool = False) -> int:
    """Run (or continue) the grid in ``config_path``; print and write the results table."""
    path = Path(config_path)
    data = read_toml(path)
    cells, root = plan(data, path.resolve().parent)
    jobs: dict[tuple[str, str], list[JobResult]] = {}
    for n, cell in enumerate(cells, 1):
        config = cell["config"]
        finished = RunDir(config.run_dir).has_checkpoint()
        name = f"{cell['task']} / {cell['strategy']} / seed {cell['seed']}"
        if not quiet:
            print(f"[compare] cell {n}/{len(cells)}: {name}" + (" (resuming or reading back)" if finished else ""), file=sys.stderr, flush=True)
        job = optimize(config, resume=finished, quiet=quiet)
        jobs.setdefault((cell["task"], cell["strategy"]), []).append(job)
    rows_by_task: dict[str, list[dict]] = {}
    for (task, strategy), results in jobs.items():
        rows_by_task.setdefault(task, []).append(_row(strategy, results))
    table = results_markdown(rows_by_task)
    write_atomic(root / "results.md", table.encode(), durable=True)
    write_atomic(root / "results.json", orjson.dumps(rows_by_task, option=orjson.OPT_INDENT_2), durable=True)
    plot_results(rows_by_task, root / "results.png")
    print(table + f"\nwritten: {root / 'results.md'}, {root / 'results.png'}")
    return 0
