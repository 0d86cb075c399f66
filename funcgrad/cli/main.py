"""The ``funcgrad`` command: optimize, evaluate, show, compare.

    funcgrad optimize CONFIG [--resume] [--quiet] [--replay] [--run-dir DIR]
    funcgrad evaluate CONFIG [--state FILE] [--split test|val|train] [--replay]
    funcgrad show RUN_DIR|TRACE_FILE [--step N] [--phase P] [--limit N]
    funcgrad compare CONFIG [--quiet]
    funcgrad report RUN_DIR

Errors print one line (``funcgrad: error: ...``) on stderr. Exit status: 0 done;
2 bad input (config, arguments, run directory, checkpoint); 3 the run failed (an
example could not be answered, the model server is unavailable, a budget or replay
miss stopped an evaluation): fix the cause and rerun, with ``--resume`` for
``optimize`` (the checkpoint keeps the last complete step); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

import attrs
from pathlib import Path

from funcgrad.cli.config import load_config
from funcgrad.core.errors import ConfigError, EngineError, FuncgradError, RunFailed, SerializationError
from funcgrad.cli.job import open_engines, optimize
from funcgrad.cli.plugins import build_task
from funcgrad.cli.progress import make_reporter
from funcgrad.core.run import mean_score, run_batch
from funcgrad.training.report import loss_warnings
from funcgrad.training.rundir import read_traces
from funcgrad.core.serialize import loads
from funcgrad.training.events import ExampleScored


def cmd_optimize(args) -> int:
    config = load_config(args.config)
    if args.run_dir:
        config = attrs.evolve(config, run_dir=str(Path(args.run_dir).resolve()))
    job = optimize(config, resume=args.resume, quiet=args.quiet, config_file=args.config, replay=args.replay)
    fs, calls = job.fit_state, sum(r["calls"] for r in job.usage["rows"])
    print(
        f"{job.title}: test accuracy {_pct(fs.initial_test)} -> {_pct(fs.final_test)} "
        f"(validation {_pct(fs.initial_val)} -> {_pct(fs.val_score)}), {fs.step} steps, {calls} model calls, "
        f"{job.wall_s:.0f} s; stopped: {fs.stopped}\nreport: {Path(job.run_dir) / 'report.md'}"
    )
    return 0


def _pct(score) -> str:
    return "n/a" if score is None else f"{100 * score:.1f}%"


def cmd_evaluate(args) -> int:
    config = load_config(args.config)
    task = build_task(config.task, config.task_args, config_dir=config.config_dir)
    task = attrs.evolve(task, loss=config.judge) if config.judge is not None else task  # [loss] table
    state = task.state
    if args.state:
        try:
            state = loads(Path(args.state).read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"--state file {args.state!r} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read --state file {args.state!r}: {exc.strerror}") from None
        except SerializationError as exc:
            raise ConfigError(f"--state file {args.state!r} is not a funcgrad state: {exc}") from None
    examples = {"test": task.test, "val": task.val, "train": task.train}[args.split]
    reporter = make_reporter(quiet=args.quiet, title=f"evaluate {task.name} ({args.split})")
    with open_engines(config, replay=args.replay) as engines, reporter:
        done = [0]

        def progress(result):
            done[0] += 1
            reporter(ExampleScored(args.split, done[0], len(examples), result.loss.score), engines.meter.report())

        results = run_batch(task.pipeline, state, examples, engine=reporter.watch(engines.task), loss=task.loss, on_result=progress)
    print(f"{task.name} {args.split}: accuracy {_pct(mean_score(results))} on {len(results)} examples")
    for warning in loss_warnings(results):
        print(f"funcgrad: warning: {warning}", file=sys.stderr)
    return 0


def cmd_show(args) -> int:
    from funcgrad.core.printing import format_state, format_trace

    path = Path(args.path)
    traces = path / "traces.jsonl" if path.is_dir() else path
    if not traces.exists():
        raise ConfigError(f"{path} is neither a run directory with traces.jsonl nor a trace file")
    if path.is_dir() and (path / "history.tsv").exists():
        print((path / "history.tsv").read_text())
    if path.is_dir() and (path / "final_state.json").exists():
        print("final prompts:\n" + format_state(loads((path / "final_state.json").read_bytes())) + "\n")
    if path.is_dir() and args.step is not None:
        from funcgrad.core.backward import format_step_trace
        from funcgrad.training.rundir import read_steps

        attempts = [st for st in read_steps(path) if st.step == args.step]
        if attempts:
            print(f"backward pass of step {args.step} ({len(attempts)} attempt{'s' if len(attempts) != 1 else ''}):")
            print("\n".join(format_step_trace(st) for st in attempts) + "\n")
    shown = 0
    for entry in read_traces(traces):
        if args.step is not None and entry["step"] != args.step:
            continue
        if args.phase and entry["phase"] != args.phase:
            continue
        r = entry["result"]
        if r.failed:
            where = f" in node {r.failure.node!r}" if r.failure.node else ""
            print(f"[step {entry['step']} {entry['phase']}] FAILED ({r.failure.kind}{where}): {r.failure.message[:120]}")
        else:
            print(f"[step {entry['step']} {entry['phase']}] score {r.loss.score:.2f}: {r.loss.feedback[:120]}")
        print(format_trace(r.trace) + "\n")
        shown += 1
        if shown >= args.limit:
            break
    return 0


def cmd_compare(args) -> int:
    from funcgrad.cli.compare import run_compare

    return run_compare(args.config, quiet=args.quiet)


def cmd_report(args) -> int:
    from funcgrad.training.html_report import write_run_report

    path = Path(args.run_dir)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a run directory (give the folder that holds checkpoint.json and traces.jsonl)")
    print(f"report: {write_run_report(path, initial=_initial_prompts(path))}")
    return 0


def _initial_prompts(run_dir: Path):
    """The task's initial prompt state, rebuilt from the run's config.json; None when that fails (the page says so)."""
    import orjson

    from funcgrad.cli.config import parse_config

    try:
        doc = orjson.loads((run_dir / "config.json").read_bytes())
        config = parse_config(doc["config"], base_dir=Path(doc["config_file"]).parent if doc.get("config_file") else None)
        return build_task(config.task, config.task_args, config_dir=config.config_dir).state
    except (OSError, ValueError, KeyError, TypeError, FuncgradError):
        return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="funcgrad", description="Optimize the prompts of LLM pipelines with textual gradients.")
    sub = p.add_subparsers(dest="command", required=True)
    o = sub.add_parser("optimize", help="optimize a pipeline's prompts (the main job)")
    o.add_argument("config", help="TOML config file")
    o.add_argument("--resume", action="store_true", help="continue the run in the config's run directory")
    o.add_argument("--quiet", action="store_true", help="no progress display")
    o.add_argument("--replay", action="store_true", help="answer only from the cache (no model): reproduce a finished run")
    o.add_argument("--run-dir", help="write the run here instead of the config's [run] dir")
    o.set_defaults(func=cmd_optimize)
    e = sub.add_parser("evaluate", help="score a prompt state on a split")
    e.add_argument("config")
    e.add_argument("--state", help="a state JSON file (e.g. RUN_DIR/final_state.json); default: the task's initial prompts")
    e.add_argument("--split", choices=("test", "val", "train"), default="test")
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--replay", action="store_true", help="answer only from the cache (no model)")
    e.set_defaults(func=cmd_evaluate)
    s = sub.add_parser("show", help="print a run's history, traces, and with --step the recorded backward pass")
    s.add_argument("path", help="a run directory or a traces.jsonl file")
    s.add_argument("--step", type=int)
    s.add_argument("--phase", help="train, minibatch, val, test, rerun or strategy-eval")
    s.add_argument("--limit", type=int, default=5)
    s.set_defaults(func=cmd_show)
    c = sub.add_parser("compare", help="run a grid of strategies x tasks x seeds and tabulate")
    c.add_argument("config")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_compare)
    r = sub.add_parser("report", help="(re)write a run directory's report.html")
    r.add_argument("run_dir", help="a run directory")
    r.set_defaults(func=cmd_report)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (RunFailed, EngineError) as exc:
        print(f"funcgrad: error: {_one_line(exc)}", file=sys.stderr)
        return 3
    except FuncgradError as exc:
        print(f"funcgrad: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `funcgrad show RUN | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except KeyboardInterrupt:
        print("funcgrad: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
