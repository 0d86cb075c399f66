"""The ``funcgrad`` command: optimize, evaluate, show, compare.

    funcgrad optimize CONFIG [--resume] [--quiet] [--replay] [--run-dir DIR]
    funcgrad evaluate CONFIG [--state FILE] [--split test|val|train] [--replay]
    funcgrad show RUN_DIR|TRACE_FILE [--step N] [--phase P] [--failing] [--limit N]
    funcgrad compare CONFIG [--quiet]
    funcgrad report RUN_DIR

Errors print one line (``funcgrad: error: ...``) on stderr. Exit status: 0 done;
2 bad input (config, arguments, run directory, checkpoint); 3 the run failed (an
example could not be answered, the model server is unavailable, a budget or replay
miss stopped an evaluation, a file could not be written: disk full, no permission):
fix the cause and rerun, with ``--resume`` for ``optimize`` (the checkpoint keeps
the last complete step); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

import attrs
from pathlib import Path

from funcgrad.cli.config import load_config
from funcgrad.core.errors import ConfigError, EngineError, FuncgradError, RunFailed, SerializationError, StorageError
from funcgrad.cli.job import open_engines, optimize
from funcgrad.cli.plugins import build_task
from funcgrad.cli.progress import make_reporter
from funcgrad.core.run import mean_score, run_batch
from funcgrad.core.state import PromptState
from funcgrad.engines.files import os_error_text, storage_error
from funcgrad.training.counts import change
from funcgrad.training.fit import PHASE_ROLES
from funcgrad.engines.pool import worker_pool
from funcgrad.training.report import loss_warnings
from funcgrad.training.rundir import read_traces
from funcgrad.core.printing import format_changes
from funcgrad.core.serialize import loads
from funcgrad.training.events import ExampleScored


def cmd_optimize(args) -> int:
    config = load_config(args.config)
    if args.run_dir:
        config = attrs.evolve(config, run_dir=str(Path(args.run_dir).resolve()))
    job = optimize(config, resume=args.resume, quiet=args.quiet, config_file=args.config, replay=args.replay)
    fs, calls, c = job.fit_state, sum(r["calls"] for r in job.usage["rows"]), job.counts
    print(
        f"{job.title}: test accuracy {change(fs.initial_test, c.initial_test, fs.final_test, c.final_test)}; "
        f"validation {change(fs.initial_val, c.initial_val, fs.val_score, c.val)}; {fs.step} steps, {calls} model calls, "
        f"{job.wall_s:.0f} s; stopped: {fs.stopped}\nreport: {Path(job.run_dir) / 'report.md'}"
    )
    initial = loads((Path(job.run_dir) / "initial_state.json").read_bytes())
    print("prompts changed by the run (final text):\n" + format_changes(initial, fs.state))
    return 0


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
        _check_state_names(state, task.state, args.state, task.name)
    examples = {"test": task.test, "val": task.val, "train": task.train}[args.split]
    if not examples:
        raise ConfigError(f"the {args.split} split of task {task.name!r} is empty: there is nothing to evaluate; choose another --split")
    reporter = make_reporter(quiet=args.quiet, title=f"evaluate {task.name} ({args.split})")
    with open_engines(config, replay=args.replay) as engines, reporter:
        done = [0]

        def progress(result):
            done[0] += 1
            reporter(ExampleScored(args.split, done[0], len(examples), result.loss.score), engines.meter.report())

        with worker_pool(getattr(engines.task, "concurrency", 1)) as pool:
            results = run_batch(task.pipeline, state, examples, engine=reporter.watch(engines.task), loss=task.loss,
                                executor=pool, on_result=progress)
    # any failure stopped the batch above (RunFailed, exit 3), so this figure is over every example
    print(f"{task.name} {args.split}: accuracy {100 * mean_score(results):.1f}% on {len(results)} examples, none failed")
    for warning in loss_warnings(results):
        print(f"funcgrad: warning: {warning}", file=sys.stderr)
    return 0


def _check_state_names(state, initial: PromptState, path: str, task: str) -> None:
    """ConfigError unless the --state file is a PromptState with exactly the task's params (a misspelt name would be ignored)."""
    if not isinstance(state, PromptState):
        raise ConfigError(f"--state file {path!r} holds a {type(state).__name__}, not a prompt state (e.g. RUN_DIR/final_state.json)")
    unknown = [n for n in state.names if n not in initial.names]
    missing = [n for n in initial.names if n not in state.names]
    if unknown or missing:
        problem = f"has param {unknown[0]!r}, which task {task!r} does not have" if unknown else f"lacks param {missing[0]!r} of task {task!r}"
        raise ConfigError(f"--state file {path!r} {problem}; the task's params are: {', '.join(initial.names)}")


def _check_show_args(args, entries: list[dict], steps: set[int]) -> None:
    """ConfigError for a --step, --phase or --limit that cannot select anything in this run."""
    if args.limit < 0:
        raise ConfigError(f"--limit {args.limit}: must be a whole number >= 0 (how many traces to print; 0: none, "
                          "only the history and the step's backward pass)")
    if args.phase is not None and args.phase not in PHASE_ROLES:
        raise ConfigError(f"--phase {args.phase!r} is not a phase; choose one of {', '.join(PHASE_ROLES)}")
    known = steps | {e["step"] for e in entries}
    if args.step is not None and args.step not in known:
        shown = f"{min(known)} to {max(known)}" if known else "none"
        raise ConfigError(f"--step {args.step}: this run has no such step (its logged steps: {shown})")


def cmd_show(args) -> int:
    from funcgrad.core.printing import format_state, format_trace

    path = Path(args.path)
    traces = path / "traces.jsonl" if path.is_dir() else path
    if not traces.exists():
        raise ConfigError(f"{path} is neither a run directory with traces.jsonl nor a trace file")
    entries = read_traces(traces)
    if path.is_dir():
        from funcgrad.training.rundir import read_steps

        _check_show_args(args, entries, {st.step for st in read_steps(path)})
    else:
        _check_show_args(args, entries, set())
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
    for entry in entries:
        if shown >= args.limit:
            break
        if args.step is not None and entry["step"] != args.step:
            continue
        if args.phase and entry["phase"] != args.phase:
            continue
        r = entry["result"]
        if args.failing and not _failing(r):
            continue
        if r.failed:
            where = f" in node {r.failure.node!r}" if r.failure.node else ""
            print(f"[step {entry['step']} {entry['phase']}] FAILED ({r.failure.kind}{where}): {r.failure.message[:120]}")
        else:
            print(f"[step {entry['step']} {entry['phase']}] score {r.loss.score:.2f}: {r.loss.feedback[:120]}")
        print(format_trace(r.trace) + "\n")
        shown += 1
    return 0


def _failing(result) -> bool:
    """An example that failed or scored below 1 (what ``show --failing`` keeps)."""
    return result.failed or result.loss.score < 1


def cmd_compare(args) -> int:
    from funcgrad.cli.compare import run_compare

    return run_compare(args.config, quiet=args.quiet)


def cmd_report(args) -> int:
    from funcgrad.training.html_report import write_run_report

    path = Path(args.run_dir)
    if not path.is_dir() or not any((path / name).exists() for name in ("checkpoint.json", "traces.jsonl", "config.json")):
        raise ConfigError(f"{path} is not a run directory (give the folder that holds checkpoint.json and traces.jsonl)")
    fix = "free space or fix the run directory's permissions, then rerun funcgrad report (the old report.html is unchanged)"
    try:
        written = write_run_report(path)  # the initial prompts come from the run's initial_state.json
    except StorageError as exc:
        raise StorageError(f"{exc}; {fix}") from None
    except OSError as exc:
        raise storage_error(exc, path / "report.html", fix) from None
    print(f"report: {written}")
    return 0


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
    s.add_argument("--failing", action="store_true", help="only examples that failed or scored below 1")
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
    except (RunFailed, EngineError, StorageError) as exc:
        print(f"funcgrad: error: {_one_line(exc)}", file=sys.stderr)
        return 3
    except FuncgradError as exc:
        print(f"funcgrad: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `funcgrad show RUN | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except OSError as exc:  # a file funcgrad had no specific message for (disk full, no permission): path and errno
        print(f"funcgrad: error: cannot read or write {_one_line(os_error_text(exc))}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("funcgrad: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
