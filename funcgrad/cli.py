"""The ``funcgrad`` command: optimize, evaluate, show, compare.

    funcgrad optimize CONFIG [--resume] [--quiet]
    funcgrad evaluate CONFIG [--state FILE] [--split test|val|train]
    funcgrad show RUN_DIR|TRACE_FILE [--step N] [--phase P] [--limit N]
    funcgrad compare CONFIG [--quiet]

Errors print one line (``funcgrad: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import orjson

from funcgrad.config import EngineConfig, RunConfig, load_config
from funcgrad.errors import ConfigError, FuncgradError
from funcgrad.plugins import build_strategy, build_task
from funcgrad.progress import make_reporter
from funcgrad.report import history_tsv, plot_learning_curve, report_markdown
from funcgrad.rundir import RunDir, read_traces
from funcgrad.run import mean_score, run_batch
from funcgrad.serialize import dumps, loads
from funcgrad.train import fit, settings_hash


@attrs.frozen
class Engines:
    """The task engine, the critic engine and the shared meter of a run."""

    task: object
    critic: object
    meter: object


def _base_engine(cfg: EngineConfig, stack: contextlib.ExitStack):
    if cfg.local:
        from funcgrad.local import LocalServer

        server = stack.enter_context(
            LocalServer(cfg.model, n_ctx=cfg.n_ctx, n_parallel=cfg.concurrency, threads=cfg.threads, timeout=cfg.timeout)
        )
        return server.engine
    import os

    from funcgrad.openai import OpenAIEngine

    key = os.environ.get(cfg.api_key_env)
    engine = OpenAIEngine(cfg.model, base_url=cfg.base_url, api_key=key, timeout=cfg.timeout, concurrency=cfg.concurrency)
    stack.callback(engine.close)
    return engine


@contextlib.contextmanager
def open_engines(config: RunConfig, usage=None) -> Iterator[Engines]:
    """Start/connect the configured engines, wrapped in a cache and one shared meter/budget."""
    from funcgrad.cache import CachedEngine
    from funcgrad.local import cache_root
    from funcgrad.meter import Budget, Meter, MeteredEngine, UsageTable

    cache_dir = Path(config.cache_dir) if config.cache_dir else cache_root() / "llm"
    start = UsageTable.from_data(usage) if usage else None
    meter = Meter(Budget(max_calls=config.max_calls, max_tokens=config.max_tokens), start)
    with contextlib.ExitStack() as stack:
        task_base = _base_engine(config.engine, stack)
        critic_base = task_base if config.critic in (None, config.engine) else _base_engine(config.critic, stack)
        task = MeteredEngine(CachedEngine(task_base, cache_dir), meter=meter)
        critic = task if critic_base is task_base else MeteredEngine(CachedEngine(critic_base, cache_dir), meter=meter)
        yield Engines(task, critic, meter)


def fingerprint(config: RunConfig) -> str:
    """What a checkpoint must match to be resumed (budget and run paths may change)."""
    extra = {
        "task": [config.task, config.task_args], "strategy": [config.strategy, config.strategy_args],
        "engine": attrs.asdict(config.engine), "critic": attrs.asdict(config.critic) if config.critic else None,
    }
    return settings_hash(config.train, orjson.loads(orjson.dumps(extra, default=dict)))


def cmd_optimize(args) -> int:
    config = load_config(args.config)
    task = build_task(config.task, config.task_args)
    strategy = build_strategy(config.strategy, config.strategy_args)
    rd = RunDir(config.run_dir)
    fp = fingerprint(config)
    resume_from, usage = None, None
    if rd.has_checkpoint() and not args.resume:
        raise ConfigError(
            f"{rd.path} already holds a run; pass --resume to continue it, or set [run] dir to a new directory"
        )
    if args.resume:
        resume_from, usage = rd.load_checkpoint(fingerprint=fp)
        if resume_from.stopped == "done":
            print(f"run in {rd.path} is already finished (step {resume_from.step}); see {rd.path / 'report.md'}")
            return 0
        resume_from = attrs.evolve(resume_from, stopped="")
    else:
        rd.write_json("config.json", {"config_file": str(Path(args.config).resolve()), "config": orjson.loads(orjson.dumps(config.source, default=dict))})
    started = time.monotonic()
    reporter = make_reporter(quiet=args.quiet, title=f"{task.name} / {strategy.name}")
    with open_engines(config, usage) as engines, reporter:
        meter = engines.meter

        def save(fs):
            rd.save_checkpoint(fs, fingerprint=fp, usage=meter.report().to_data())

        def on_event(kind, data):
            reporter(kind, data, meter.report())

        fs = fit(
            task, strategy, engine=engines.task, critic=engines.critic, settings=config.train,
            resume_from=resume_from, checkpoint=save, on_event=on_event, log_results=rd.log_results,
        )
        usage = meter.report().to_data()
    wall = time.monotonic() - started
    rd.write_text("history.tsv", history_tsv(fs))
    rd.write_text("final_state.json", dumps(fs.state, indent=True).decode())
    plot_learning_curve(fs, rd.path / "learning_curve.png", title=f"{task.name} / {strategy.name}")
    rd.write_text("report.md", report_markdown(fs, task.state, title=f"{task.name} / {strategy.name}", usage=usage, wall_s=wall))
    calls = sum(r["calls"] for r in usage["rows"])
    print(
        f"{task.name} / {strategy.name}: test accuracy {_pct(fs.initial_test)} -> {_pct(fs.final_test)} "
        f"(validation {_pct(fs.initial_val)} -> {_pct(fs.val_score)}), {fs.step} steps, {calls} model calls, "
        f"{wall:.0f} s; stopped: {fs.stopped}\nreport: {rd.path / 'report.md'}"
    )
    return 0


def _pct(score) -> str:
    return "n/a" if score is None else f"{100 * score:.1f}%"


def cmd_evaluate(args) -> int:
    config = load_config(args.config)
    task = build_task(config.task, config.task_args)
    state = task.state
    if args.state:
        try:
            state = loads(Path(args.state).read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"--state file {args.state!r} does not exist") from None
    examples = {"test": task.test, "val": task.val, "train": task.train}[args.split]
    reporter = make_reporter(quiet=args.quiet, title=f"evaluate {task.name} ({args.split})")
    with open_engines(config) as engines, reporter:
        done = [0]

        def progress(result):
            done[0] += 1
            reporter("example", {"phase": args.split, "done": done[0], "total": len(examples), "score": result.loss.score}, engines.meter.report())

        results = run_batch(task.pipeline, state, examples, engine=engines.task, loss=task.loss, on_result=progress)
    print(f"{task.name} {args.split}: accuracy {_pct(mean_score(results))} on {len(results)} examples")
    return 0


def cmd_show(args) -> int:
    from funcgrad.printing import format_state, format_trace

    path = Path(args.path)
    traces = path / "traces.jsonl" if path.is_dir() else path
    if not traces.exists():
        raise ConfigError(f"{path} is neither a run directory with traces.jsonl nor a trace file")
    if path.is_dir() and (path / "history.tsv").exists():
        print((path / "history.tsv").read_text())
    if path.is_dir() and (path / "final_state.json").exists():
        print("final prompts:\n" + format_state(loads((path / "final_state.json").read_bytes())) + "\n")
    shown = 0
    for entry in read_traces(traces):
        if args.step is not None and entry["step"] != args.step:
            continue
        if args.phase and entry["phase"] != args.phase:
            continue
        r = entry["result"]
        print(f"[step {entry['step']} {entry['phase']}] score {r.loss.score:.2f}: {r.loss.feedback[:120]}")
        print(format_trace(r.trace) + "\n")
        shown += 1
        if shown >= args.limit:
            break
    return 0


def cmd_compare(args) -> int:
    from funcgrad.compare import run_compare

    return run_compare(args.config, quiet=args.quiet)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="funcgrad", description="Optimize the prompts of LLM pipelines with textual gradients.")
    sub = p.add_subparsers(dest="command", required=True)
    o = sub.add_parser("optimize", help="optimize a pipeline's prompts (the main job)")
    o.add_argument("config", help="TOML config file")
    o.add_argument("--resume", action="store_true", help="continue the run in the config's run directory")
    o.add_argument("--quiet", action="store_true", help="no progress display")
    o.set_defaults(func=cmd_optimize)
    e = sub.add_parser("evaluate", help="score a prompt state on a split")
    e.add_argument("config")
    e.add_argument("--state", help="a state JSON file (e.g. RUN_DIR/final_state.json); default: the task's initial prompts")
    e.add_argument("--split", choices=("test", "val", "train"), default="test")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    s = sub.add_parser("show", help="print a run's history and traces")
    s.add_argument("path", help="a run directory or a traces.jsonl file")
    s.add_argument("--step", type=int)
    s.add_argument("--phase", help="train, minibatch, val, test, rerun or strategy-eval")
    s.add_argument("--limit", type=int, default=5)
    s.set_defaults(func=cmd_show)
    c = sub.add_parser("compare", help="run a grid of strategies x tasks x seeds and tabulate")
    c.add_argument("config")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_compare)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except FuncgradError as exc:
        print(f"funcgrad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("funcgrad: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
