"""Strategy comparison grids: strategies x tasks x seeds, fair budgets, paired statistics.

``funcgrad compare CONFIG`` runs every cell as an ordinary optimize job in
``RUN_DIR/cells/<task>--<strategy>--seed<k>``, serially or in parallel on Ray
(``[executor]``, see :mod:`funcgrad.cli.executors`). Cells are resumable: a finished
cell is read back, not rerun; an interrupted one continues from its checkpoint.

Fair by construction: every cell is charged for every answer it needs, whether the
shared cache held it or not (:class:`~funcgrad.engines.meter.Budget`), so the table
does not depend on the order of the cells or on what ran before; the budget bounds
only the optimization, and the initial and final test evaluations always run. The
seed of a cell is the run's seed, from which every random stream derives.

Every arm is scored on the same test examples, so the statistics are paired
(:mod:`funcgrad.core.stats`): per-example outcomes are read from each cell's
``traces.jsonl``; each strategy is compared with no optimization (its own cells'
initial test) and with every other strategy, with a bootstrap 95 % interval over
seeds and examples, win/tie/loss counts, an exact sign (McNemar) test with Holm
correction over all comparisons of a task, and the minimum detectable effect. Output:
``RUN_DIR/results.md`` (also printed), ``results.png`` (paired differences per seed
with intervals), ``results.json`` and ``compare.html`` (:mod:`funcgrad.cli.compare_page`:
the tables, the intervals and every cell's learning curve). See docs/compare.md.

Config (see examples/compare_*.toml)::

    [grid]
    tasks = ["object_counting"]                 # keys of [tasks.*] or built-in task names
    strategies = ["backprop", "whole_trace"]    # keys of [strategies.*] or registered names
    seeds = [0, 1, 2]                           # run seeds (minibatch order, strategy RNG, samples)
    [tasks.object_counting]                     # optional: task name + options
    n_test = 150
    [strategies.backprop_no_timestamps]         # a labelled variant (ablation)
    name = "backprop"
    time_stamps = false
    [executor]                                  # optional: kind = "serial" | "ray", address, cpus_per_cell, engine_urls
    # [engine] [critic] [train] [budget] [run] [loss] [tracking] as in an optimize config; [budget] is per cell,
    # [tracking] logs every cell as its own MLflow run (named after the cell's directory)
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

from funcgrad.cli.compare_page import BASELINE, write_compare_report
from funcgrad.cli.config import parse_config, read_toml
from funcgrad.cli.executors import ExecutorConfig, check_executor, describe, parse_executor, run_cells
from funcgrad.cli.plugins import build_strategy, build_task
from funcgrad.core import errors
from funcgrad.core.errors import ConfigError, FuncgradError
from funcgrad.core.stats import Paired, holm, paired
from funcgrad.engines.files import write_atomic
from funcgrad.engines.meter import UsageTable

_GRID_KEYS = {"tasks", "strategies", "seeds"}
_SECTIONS = {"grid", "tasks", "strategies", "engine", "critic", "train", "budget", "run", "loss", "executor", "tracking"}


@attrs.frozen
class Cell:
    """One cell of a grid: labels, seed, and the optimize config (a plain dict) it runs."""

    task: str
    strategy: str
    seed: int
    config: Mapping[str, Any]
    base_dir: str

    @property
    def name(self) -> str:
        return f"{self.task} / {self.strategy} / seed {self.seed}"

    def to_json(self, *, progress: bool = False) -> bytes:
        """The executor's payload; ``progress``: the cell prints its progress lines (stderr), prefixed with its name."""
        return orjson.dumps({**attrs.asdict(self), "name": self.name, "progress": progress})


def _entries(section: str, names: Any, table: Mapping) -> list[tuple[str, dict]]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"[grid] {section} must be a non-empty list of names, got {names!r}")
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table of labelled {section}, got {type(table).__name__}")
    out = []
    for label in names:
        spec = dict(table.get(label, {}))
        spec.setdefault("name", label)
        out.append((label, spec))
    return out


def _check_buildable(tasks, strategies, config_dir: str) -> None:
    """Build every task and strategy once: a ConfigError names the grid entry that fails."""
    for label, spec in tasks:
        args = {k: v for k, v in spec.items() if k != "name"}
        try:
            task = build_task(spec["name"], args, config_dir=config_dir)
        except ConfigError as exc:
            raise ConfigError(f"[grid] tasks: {label!r}: {exc}") from None
        if not task.test:
            raise ConfigError(f"[grid] tasks: {label!r} has no test examples; a comparison scores arms on the test split")
    for label, spec in strategies:
        args = {k: v for k, v in spec.items() if k != "name"}
        try:
            build_strategy(spec["name"], args, config_dir=config_dir)
        except ConfigError as exc:
            raise ConfigError(f"[grid] strategies: {label!r}: {exc}") from None


def plan(data: Mapping, base_dir: Path) -> tuple[list[Cell], Path, ExecutorConfig]:
    """The cells, output directory and executor of a comparison config.

    Everything is checked here, before any model call: sections and keys, the seed
    list, every task and strategy (built once), every cell's optimize config, and the
    executor (Ray importable, its address reachable).
    """
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
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"[grid] seeds = {seeds!r} repeats a seed; each seed must appear once")
    tasks = _entries("tasks", grid.get("tasks"), data.get("tasks", {}))
    strategies = _entries("strategies", grid.get("strategies"), data.get("strategies", {}))
    executor = parse_executor(data.get("executor", {}))
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
                    "run": {"dir": str(cell_dir), **({"cache": str((base_dir / Path(cache).expanduser()).resolve())} if cache else {})},
                }
                raw.update({k: data[k] for k in ("engine", "critic", "budget", "loss", "tracking") if k in data})
                url = executor.engine_url(len(cells))
                if url is not None:
                    raw["engine"] = {**raw.get("engine", {}), "base_url": url}
                try:
                    parse_config(raw, base_dir=base_dir)  # every cell's config is valid before anything runs
                except ConfigError as exc:
                    raise ConfigError(f"{exc} (in cell {task_label} / {strategy_label} / seed {seed})") from None
                cells.append(Cell(task_label, strategy_label, seed, orjson.loads(orjson.dumps(raw)), str(base_dir)))
    _check_buildable(tasks, strategies, str(base_dir.resolve()))
    check_executor(executor)
    return cells, root, executor


def read_test_outcomes(traces_path: Path, n_test: int) -> tuple[dict[str, float | None], dict[str, float | None] | None]:
    """Per-example test scores (None = failed) of the initial and the final test evaluation of a run.

    The test evaluations are the blocks of ``phase == "test"`` lines of ``traces.jsonl``
    (a block ends where the step changes or an example repeats); the first is the
    initial test, the last the final one (None when the run has only one).
    """
    blocks: list[tuple[int, dict[str, float | None]]] = []
    for line in traces_path.read_bytes().splitlines() if traces_path.exists() else ():
        doc = orjson.loads(line)
        if doc.get("phase") != "test":
            continue
        result = doc["result"]
        example, loss = result["example"]["id"], result.get("loss")
        if not blocks or blocks[-1][0] != doc["step"] or example in blocks[-1][1] or len(blocks[-1][1]) >= n_test:
            blocks.append((doc["step"], {}))
        blocks[-1][1][example] = loss["score"] if loss else None
    complete = [b for _, b in blocks if len(b) == n_test]
    if not complete:
        return {}, None
    return complete[0], complete[-1] if len(complete) > 1 else None


def run_cell(payload: bytes) -> bytes:
    """Run (or read back) one cell and return its summary as JSON bytes (the executor's unit of work).

    Errors come back as ``{"error": {"type", "message"}}`` so a Ray worker's failure
    reads exactly like a serial one.
    """
    from funcgrad.cli.job import optimize
    from funcgrad.training.rundir import RunDir

    cell = orjson.loads(payload)
    try:
        config = parse_config(cell["config"], base_dir=Path(cell["base_dir"]))
        task = build_task(config.task, config.task_args, config_dir=config.config_dir)
        job = optimize(config, resume=RunDir(config.run_dir).has_checkpoint(), quiet=not cell["progress"], label=cell["name"])
    except FuncgradError as exc:
        return orjson.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}})
    fs = job.fit_state
    before, after = read_test_outcomes(Path(job.run_dir) / "traces.jsonl", len(task.test))
    if fs.final_test is None:
        after = None
    return orjson.dumps({
        "task": cell["task"], "strategy": cell["strategy"], "seed": cell["seed"], "test_ids": [e.id for e in task.test],
        "initial_test": fs.initial_test, "final_test": fs.final_test, "stopped": fs.stopped, "steps": fs.step,
        "accepted": sum(e.accepted for e in fs.log), "usage": job.usage, "wall_s": job.wall_s,
        "before": before, "after": after, "val_curve": [[0, fs.initial_val]] + [[e.step, e.val_score] for e in fs.log],
    })


def _reraise(error: Mapping[str, str], cell: Cell):
    kind = getattr(errors, error["type"], FuncgradError)
    kind = kind if isinstance(kind, type) and issubclass(kind, FuncgradError) else FuncgradError
    raise kind(f"cell {cell.name}: {error['message']}")


def _outcome_rows(cells: Sequence[dict], key: str) -> list[list[float | None]]:
    """``[seed][example]`` scores of ``key`` (before/after), examples in test order, None where missing."""
    rows = []
    for c in cells:
        scores = c[key] or {}
        rows.append([scores.get(i) for i in c["test_ids"]])
    return rows


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _per_phase(cells: Sequence[dict], count: str) -> dict[str, float]:
    tables = [UsageTable.from_data(c["usage"]) for c in cells]
    roles: dict[str, list[int]] = {}
    for t in tables:
        for role, n in t.by_role(count).items():
            roles.setdefault(role, []).append(n)
    return {role: sum(v) / len(tables) for role, v in roles.items()}


def _arm_row(strategy: str, cells: Sequence[dict]) -> dict:
    return {
        "strategy": strategy, "seeds": [c["seed"] for c in cells],
        "before": [c["initial_test"] for c in cells], "after": [c["final_test"] for c in cells],
        "stopped": [c["stopped"] for c in cells],
        "answers": _per_phase(cells, "answers"), "tokens": _per_phase(cells, "answer_tokens"),
        "accepted": statistics.fmean(c["accepted"] for c in cells), "steps": statistics.fmean(c["steps"] for c in cells),
        "wall_s": statistics.fmean(c["wall_s"] for c in cells), "val_curves": [c["val_curve"] for c in cells],
    }


def analyse(summaries: Sequence[dict]) -> dict[str, dict]:
    """Per task: arm rows and paired comparisons (vs no optimization, then every pair), Holm-corrected.

    ``summaries`` are :func:`run_cell` outputs; cells of one strategy are paired with
    those of another by seed.
    """
    out: dict[str, dict] = {}
    by_task: dict[str, dict[str, list[dict]]] = {}
    for s in summaries:
        by_task.setdefault(s["task"], {}).setdefault(s["strategy"], []).append(s)
    for task, arms in by_task.items():
        rows = [_arm_row(name, cells) for name, cells in arms.items()]
        comparisons = []
        for name, cells in arms.items():
            c = paired(_outcome_rows(cells, "after"), _outcome_rows(cells, "before"))
            comparisons.append({"a": name, "b": BASELINE, "paired": c})
        names = list(arms)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                seeds = sorted({c["seed"] for c in arms[a]} & {c["seed"] for c in arms[b]})
                pick = lambda name: [next(c for c in arms[name] if c["seed"] == s) for s in seeds]  # noqa: E731
                c = paired(_outcome_rows(pick(a), "after"), _outcome_rows(pick(b), "after"))
                comparisons.append({"a": a, "b": b, "paired": c})
        for comp, p in zip(comparisons, holm([c["paired"].p for c in comparisons])):
            comp["p_holm"] = p
        for row in rows:
            row["seed_diffs"] = [
                paired(_outcome_rows([c], "after"), _outcome_rows([c], "before"), resamples=1).diff for c in arms[row["strategy"]]
            ]
        out[task] = {"rows": rows, "comparisons": comparisons}
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value or value == float("inf") else f"{100 * value:.1f}"


def _accuracy(values: Sequence[float | None]) -> str:
    m = _mean(values)
    missing = sum(v is None for v in values)
    text = _pct(m)
    if len(values) > 1 and m is not None:
        present = [v for v in values if v is not None]
        text += f" ({', '.join(_pct(v) for v in present)})" if len(present) <= 5 else ""
    return text + (f", {missing} of {len(values)} missing" if missing else "")


def _delta(c: Paired) -> str:
    if c.n_examples == 0:
        return "n/a"
    return f"{100 * c.diff:+.1f} [{100 * c.low:+.1f}, {100 * c.high:+.1f}]"


def _p(p: float, holm_p: float) -> str:
    mark = " *" if holm_p < 0.05 else ""
    return f"{p:.3g} / {holm_p:.3g}{mark}"


def _count(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def _phase(counts: Mapping[str, float]) -> str:
    return ", ".join(f"{role} {_count(v)}" for role, v in counts.items()) or "-"


def results_markdown(analysis: Mapping[str, dict]) -> str:
    """The comparison tables as markdown: per task, arms vs no optimization, then strategy pairs."""
    out = []
    for task, data in analysis.items():
        vs_none = {c["a"]: c for c in data["comparisons"] if c["b"] == BASELINE}
        rows = data["rows"]
        n = next((c["paired"].n_examples for c in vs_none.values() if c["paired"].n_examples), 0)
        out += [
            f"### {task}", "",
            "| strategy | seeds | test before | test after | Δ vs none [95 % CI] | p / Holm | W/T/L | MDE | accepted | answers per phase | tokens per phase | wall (s) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        baseline = [b for r in rows for b in r["before"]]
        out.append(f"| {BASELINE} | {len(baseline)} cells | {_accuracy(baseline)} | {_accuracy(baseline)} | 0 | - | - | - | - | - | - | - |")
        for r in rows:
            comp = vs_none[r["strategy"]]
            c = comp["paired"]
            out.append(
                f"| {r['strategy']} | {len(r['seeds'])} | {_accuracy(r['before'])} | {_accuracy(r['after'])} | {_delta(c)} "
                f"| {_p(c.p, comp['p_holm'])} | {c.wins}/{c.ties}/{c.losses} | {_pct(c.mde)} | {r['accepted']:.1f} "
                f"| {_phase(r['answers'])} | {_phase(r['tokens'])} | {r['wall_s']:.0f} |"
            )
        pairs = [c for c in data["comparisons"] if c["b"] != BASELINE]
        if pairs:
            out += ["", "| A vs B (test after) | Δ A − B [95 % CI] | p / Holm | W/T/L | MDE |", "|---|---|---|---|---|"]
            for comp in pairs:
                c = comp["paired"]
                out.append(f"| {comp['a']} vs {comp['b']} | {_delta(c)} | {_p(c.p, comp['p_holm'])} | {c.wins}/{c.ties}/{c.losses} | {_pct(c.mde)} |")
        out += ["", f"{n} test examples per arm (after leaving out failed ones)."]
        out.append("")
    out.append(
        "Accuracy in % (mean over seeds; per seed in brackets). Δ: paired difference in points, averaged over seeds "
        "and test examples, with a bootstrap 95 % interval resampling seeds and examples. p: exact two-sided sign "
        "test over examples (McNemar for one seed), then Holm-corrected over all comparisons of the task; * = "
        "significant at 5 % after correction. W/T/L: test examples whose score, averaged over the seeds, is higher / "
        "the same / lower under the first arm. MDE: smallest true difference this test set detects with 80 % power at 5 % (n/a: too "
        "few examples for the exact test ever to reach 5 %). "
        "Answers and tokens are means per cell and count every answer a cell needed, cached or not; the budget "
        "bounds every phase except evaluation (the initial and final test)."
    )
    return "\n".join(out) + "\n"


def plot_results(analysis: Mapping[str, dict], path: Path) -> Path:
    """Paired test differences vs no optimization: one dot per seed, the mean with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, dots, means, lows, highs = [], [], [], [], []
    for task, data in analysis.items():
        vs_none = {c["a"]: c["paired"] for c in data["comparisons"] if c["b"] == BASELINE}
        for r in data["rows"]:
            c = vs_none[r["strategy"]]
            labels.append(f"{r['strategy']}\n({task})" if len(analysis) > 1 else r["strategy"])
            dots.append([100 * d for d in r["seed_diffs"] if d == d])
            means.append(100 * c.diff if c.n_examples else 0.0)
            lows.append(100 * (c.diff - c.low) if c.n_examples else 0.0)
            highs.append(100 * (c.high - c.diff) if c.n_examples else 0.0)
    xs = list(range(len(labels)))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(labels)), 3.5))
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.errorbar(xs, means, yerr=[lows, highs], fmt="o", color="tab:blue", capsize=4, label="mean, 95 % CI")
    for x, values in zip(xs, dots):
        ax.scatter([x + 0.12] * len(values), values, color="black", s=12, zorder=3, label="per seed" if x == 0 else None)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.set_ylabel("test Δ vs no optimization (points)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _json(analysis: Mapping[str, dict]) -> bytes:
    data = {
        task: {"rows": d["rows"], "comparisons": [{**c, "paired": c["paired"].to_data()} for c in d["comparisons"]]}
        for task, d in analysis.items()
    }
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def run_compare(config_path: str | Path, *, quiet: bool = False) -> int:
    """Run (or continue) the grid in ``config_path``; print and write the results table."""
    path = Path(config_path)
    data = read_toml(path)
    cells, root, executor = plan(data, path.resolve().parent)
    say = (lambda text: None) if quiet else (lambda text: print(f"[compare] {text}", file=sys.stderr, flush=True))
    say(f"{len(cells)} cells on {describe(executor)}")
    done = [0]

    def finished(i: int) -> None:
        done[0] += 1
        say(f"cell {done[0]}/{len(cells)} done: {cells[i].name}")

    results = run_cells(run_cell, [c.to_json(progress=not quiet) for c in cells], executor, on_done=finished)
    summaries = []
    for cell, raw in zip(cells, results):
        summary = orjson.loads(raw)
        if "error" in summary:
            _reraise(summary["error"], cell)
        summaries.append(summary)
    analysis = analyse(summaries)
    table = results_markdown(analysis)
    write_atomic(root / "results.md", table.encode(), durable=True)
    write_atomic(root / "results.json", _json(analysis), durable=True)
    plot_results(analysis, root / "results.png")
    write_compare_report(root)
    print(table + f"\nwritten: {root / 'results.md'}, {root / 'results.png'}")
    return 0
