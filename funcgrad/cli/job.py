"""One optimization job from a config: engines up, fit with checkpoints, run dir written.

``funcgrad optimize`` and every cell of ``funcgrad compare`` run through :func:`optimize`.
The run directory is locked while the job writes it. A failure (an example that
could not be answered, a server that is gone, a disk that is full) stops the job
with the checkpoint at the last complete step and the failed examples in
``failures.jsonl``; ``--resume`` then redoes exactly the lost work (all of it when
the job stopped before its first checkpoint), and also rewrites any file of a
finished run (history, final state, plot, report) that a kill prevented.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson

from funcgrad.cli.config import DEFAULT_KEY_VARIABLE, EngineConfig, RunConfig, api_key, check_api_keys, parse_config
from funcgrad.core.errors import (
    BudgetExceeded, CheckpointError, ConfigError, EngineError, FuncgradError, RunFailed, SerializationError, StorageError,
)
from funcgrad.cli.plugins import build_strategy, build_task
from funcgrad.cli.progress import make_reporter
from funcgrad.training.report import history_tsv, plot_learning_curve, report_markdown
from funcgrad.training.html_report import write_run_report
from funcgrad.training.rundir import FILE_MODE, RunDir, read_steps, read_traces, write_initial_state
from funcgrad.training.tracking import Tracker
from funcgrad.core.serialize import dumps
from funcgrad.engines.files import storage_error
from funcgrad.training.counts import RunCounts, run_counts
from funcgrad.training.events import PhaseEvent, StepDone
from funcgrad.training.fit import FitState, fit, total_steps
from funcgrad.training.settings import settings_hash


@attrs.frozen
class Engines:
    """The task engine, the critic engine and the meter they share."""

    task: Any
    critic: Any
    meter: Any


def _base_engine(cfg: EngineConfig, stack: contextlib.ExitStack, section: str):
    from funcgrad.engines.openai import OpenAIEngine, RetryPolicy

    retry = {} if cfg.retries is None else {"retry": RetryPolicy(max_attempts=cfg.retries + 1)}
    if cfg.local:
        from funcgrad.engines.local import LocalServer

        server = stack.enter_context(LocalServer(
            cfg.model, n_ctx=cfg.n_ctx, n_parallel=cfg.concurrency, threads=cfg.threads, timeout=cfg.timeout,
            deadline=cfg.deadline, **retry,
        ))
        return server.engine
    engine = OpenAIEngine(
        cfg.model, base_url=cfg.base_url, api_key=api_key(cfg, section), timeout=cfg.timeout,
        deadline=cfg.deadline, concurrency=cfg.concurrency, **retry,
    )
    stack.callback(engine.close)
    return engine


def _model_id(cfg: EngineConfig) -> tuple[str, str]:
    """(model id, server identity) that answers of ``cfg`` are cached under (what serve() / OpenAIEngine report)."""
    from funcgrad.engines.local import model_identity, served_name
    from funcgrad.engines.openai import OpenAIEngine

    if cfg.local:
        return served_name(cfg.model), model_identity(cfg.model)
    with OpenAIEngine(cfg.model, base_url=cfg.base_url, api_key="") as engine:  # no call: just its identity
        return cfg.model, engine.identity


@contextlib.contextmanager
def open_engines(config: RunConfig, usage: Any = None, *, replay: bool = False) -> Iterator[Engines]:
    """Start or connect the configured engines, each behind the answer cache, sharing one meter and budget.

    ``usage`` (a usage report's data from a checkpoint) makes the meter continue its
    counts. With ``replay`` no model is started or called: every answer must come from
    the cache, and a missing one raises CacheMiss naming the request (and ``--replay``).
    A key variable that a server section names but that is not set is a ConfigError
    before any engine starts (:func:`funcgrad.cli.config.api_key`).
    """
    if not replay:
        check_api_keys(config)
    from funcgrad.engines.cache import CachedEngine
    from funcgrad.engines.local import cache_root
    from funcgrad.engines.meter import Budget, Meter, MeteredEngine, UsageTable

    cache_dir = Path(config.cache_dir) if config.cache_dir else cache_root() / "llm"
    meter = Meter(Budget(max_calls=config.max_calls, max_tokens=config.max_tokens), UsageTable.from_data(usage) if usage else None)
    same = config.critic is None or config.critic == config.engine
    with contextlib.ExitStack() as stack:

        def cached(cfg: EngineConfig, section: str):
            if replay:
                model, identity = _model_id(cfg)
                return CachedEngine(None, cache_dir, replay=True, model=model, identity=identity, replay_flag="--replay")
            return CachedEngine(_base_engine(cfg, stack, section), cache_dir)

        task = MeteredEngine(cached(config.engine, "engine"), meter=meter)
        critic = task if same else MeteredEngine(cached(config.critic, "critic"), meter=meter)
        yield Engines(task, critic, meter)


def fingerprint(config: RunConfig) -> str:
    """What a checkpoint must match to be resumed (the budget, paths, retries and deadline may change)."""
    extra = {
        "task": [config.task, config.task_args], "strategy": [config.strategy, config.strategy_args],
        "engine": _answer_fields(config.engine), "critic": _answer_fields(config.critic) if config.critic else None,
    }
    if config.judge is not None:
        extra["loss"] = attrs.asdict(config.judge)
    return settings_hash(config.train, orjson.loads(orjson.dumps(extra, default=dict)))


def _answer_fields(cfg: EngineConfig) -> dict:
    """The engine settings that can change answers (retries and the deadline cannot).

    No ``api_key_env`` counts as ``OPENAI_API_KEY`` (the variable it reads), so checkpoints
    made when that was the default still resume.
    """
    fields = {k: v for k, v in attrs.asdict(cfg).items() if k not in ("retries", "deadline")}
    return fields | {"api_key_env": cfg.api_key_env or DEFAULT_KEY_VARIABLE}


def _settings(config: RunConfig) -> dict[str, Any]:
    """The fingerprinted settings of ``config`` by name (``[train] steps``), to say which one changed."""
    out = {f"[train] {k}": v for k, v in attrs.asdict(config.train).items()}
    for section, name, args in (("task", config.task, config.task_args), ("strategy", config.strategy, config.strategy_args)):
        out |= {f"[{section}] name": name} | {f"[{section}] {k}": v for k, v in args.items()}
    for section, cfg in (("engine", config.engine), ("critic", config.critic)):
        out |= {f"[{section}] {k}": v for k, v in (_answer_fields(cfg) if cfg else {}).items()}
    if config.judge is not None:
        out |= {f"[loss] {k}": v for k, v in attrs.asdict(config.judge).items()}
    return out


def changed_settings(before: RunConfig, after: RunConfig) -> str:
    """Which fingerprinted settings differ between two configs, e.g. ``[train] steps: 3 -> 5``.

    >>> from funcgrad.cli.config import parse_config
    >>> base = {"task": {"name": "object_counting"}, "strategy": {"name": "backprop"}}
    >>> changed_settings(parse_config(base), parse_config(base | {"train": {"steps": 5}}))
    '[train] steps: 8 -> 5'
    """
    old, new = _settings(before), _settings(after)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return "; ".join(f"{k}: {_shown(old, k)} -> {_shown(new, k)}" for k in changed)


def _shown(settings: dict, key: str) -> str:
    return "(unset)" if key not in settings else repr(settings[key])


def _explain_change(rd: RunDir, config: RunConfig) -> str:
    """The settings that changed since the run started (from its config.json); "" when that cannot be told."""
    try:
        doc = orjson.loads((rd.path / "config.json").read_bytes())
        return changed_settings(parse_config(doc["config"]), config)
    except (OSError, ValueError, KeyError, TypeError, FuncgradError):
        return ""


@attrs.frozen
class JobResult:
    """The outcome of :func:`optimize`: final fit state, usage data, wall time (all invocations), run dir."""

    fit_state: FitState
    usage: Any
    wall_s: float
    run_dir: str
    title: str
    counts: RunCounts = RunCounts()


def optimize(
    config: RunConfig, *, resume: bool = False, quiet: bool = False, config_file: str | None = None, replay: bool = False,
    label: str | None = None,
) -> JobResult:
    """Run (or, with ``resume``, continue) the job of ``config``; write its run directory.

    Raises ConfigError if the run directory already holds a run and ``resume`` is False,
    if another process is writing it, if the task has no validation examples, or if a
    key variable the config names is not set (all before anything is written).
    ``resume`` without a checkpoint (a start that failed before its first one) starts over. With ``replay``, answers come only from the
    cache (see :func:`open_engines`). A failure raises RunFailed or EngineError saying
    which step the checkpoint keeps. ``label`` prefixes the progress lines (default:
    ``"task / strategy"``; compare passes the cell's name).
    """
    task = build_task(config.task, config.task_args, config_dir=config.config_dir)
    task = attrs.evolve(task, loss=config.judge) if config.judge is not None else task  # [loss] table
    strategy = build_strategy(config.strategy, config.strategy_args, config_dir=config.config_dir)
    title = f"{task.name} / {strategy.name}"
    if not task.val:
        raise ConfigError(
            f"task {task.name!r} has no validation examples (e.g. [task] n_val = 0): a proposal is accepted only if it "
            "beats the current prompts on them, so a run needs at least one (e.g. n_val = 10)"
        )
    if not replay:
        check_api_keys(config)
    rd = RunDir(config.run_dir)
    with rd.locked():
        return _optimize(config, task, strategy, title, rd, resume=resume, quiet=quiet, config_file=config_file, replay=replay,
                         label=label or title)


def _optimize(config, task, strategy, title, rd: RunDir, *, resume, quiet, config_file, replay, label) -> JobResult:
    fp = fingerprint(config)
    resume_from, usage, wall_before = None, None, 0.0
    if rd.has_checkpoint() and not resume:
        raise ConfigError(f"{rd.path} already holds a run; pass --resume to continue it, or set [run] dir to a new directory")
    restart = resume and not rd.has_checkpoint()  # the start failed before its first checkpoint: redoing it is starting over
    resume = resume and not restart
    if resume:
        resume_from, usage = rd.load_checkpoint(fingerprint=fp, explain=lambda: _explain_change(rd, config))
        _check_step(resume_from, task, config, rd)
        wall_before = _read_wall(rd)
        if resume_from.stopped == "done":
            if rd.missing_final_files():  # killed after the last checkpoint: redo what is missing
                _write_final(rd, resume_from, task, title, usage, wall_before)
            return JobResult(resume_from, usage, wall_before, str(rd.path), title, _counts(rd, resume_from))
        resume_from = attrs.evolve(resume_from, stopped="")
    else:
        rd.clear(keep=("failures.jsonl",) if restart else ())  # files of a start that never reached its first checkpoint
        source = orjson.loads(orjson.dumps(config.source, default=dict))
        rd.write_json("config.json", {"config_file": str(Path(config_file).resolve()) if config_file else None, "config": source})
        try:
            write_initial_state(rd, task.state)
        except SerializationError:
            pass  # a prompt JSON cannot hold (a lone surrogate): the run's first model call reports it, naming the node
    started = time.monotonic()
    reporter = make_reporter(quiet=quiet, title=label)
    saved = {"step": None if resume_from is None else resume_from.step, "phase": "initial evaluation"}
    tracker = Tracker(config.tracking, rd.path, config.source, resume=resume_from is not None)  # [tracking]: a failure there is one warning, never the run's
    with open_engines(config, usage, replay=replay) as engines, reporter, tracker:
        meter = engines.meter

        def save(fs):
            rd.save_checkpoint(fs, fingerprint=fp, usage=meter.report().to_data())
            saved["step"] = fs.step
            rd.write_json("wall.json", {"wall_s": wall_before + time.monotonic() - started})

        def on_event(event):
            if isinstance(event, PhaseEvent):
                saved["phase"] = event.label
            elif isinstance(event, StepDone):  # until the next phase event, the run is in the next step's minibatch
                saved["phase"] = f"step {event.step + 1}"
            reporter(event, meter.report())
            tracker.event(event)

        try:
            fs = fit(
                task, strategy, engine=reporter.watch(engines.task), critic=reporter.watch(engines.critic), settings=config.train, resume_from=resume_from,
                checkpoint=save, on_event=on_event, log_results=rd.log_results, log_step=rd.log_step,
            )
        except BudgetExceeded:
            raise
        except (RunFailed, EngineError, StorageError) as exc:
            raise _stopped(exc, rd, saved) from None
        usage = meter.report().to_data()
    wall = wall_before + time.monotonic() - started
    rd.write_json("wall.json", {"wall_s": wall})
    _write_final(rd, fs, task, title, usage, wall)
    tracker.finish(fs, usage, wall)
    return JobResult(fs, usage, wall, str(rd.path), title, _counts(rd, fs))


def _check_step(fs: FitState, task, config: RunConfig, rd: RunDir) -> None:
    """CheckpointError if the checkpoint's step count cannot belong to this run (a hand-edited file)."""
    limit = total_steps(task, config.train)
    problem = (
        f"is beyond the run's {limit} steps ([train] steps, epochs and the training set size)" if fs.step > limit
        else f"does not match its log of {len(fs.log)} steps" if fs.step != len(fs.log) else ""
    )
    if problem:
        raise CheckpointError(
            f"{rd.checkpoint_path}: field fit.step = {fs.step} {problem}; the file was edited or damaged: restore it, "
            "or delete it to start the run over"
        )


def _stopped(exc: RunFailed | EngineError | StorageError, rd: RunDir, saved: dict) -> Exception:
    """``exc`` restated with where the run stopped and how to continue; its failed examples logged."""
    phase, logged = saved["phase"], ""
    if isinstance(exc, RunFailed) and exc.results:
        try:
            rd.log_failures(-1 if saved["step"] is None else saved["step"] + 1, phase, exc.results)
            logged = f"; failed examples are in {rd.path / 'failures.jsonl'}"
        except StorageError as log_error:
            logged = f"; the failed examples could not be logged: {log_error}"
    where = (
        "before its first checkpoint (a rerun, with or without --resume, starts over)" if saved["step"] is None
        else f"with its checkpoint at step {saved['step']} (rerun with --resume to redo only the lost work)"
    )
    message = f"{exc} [the run stopped during {phase!r} {where}{logged}]"
    return RunFailed(message, exc.results) if isinstance(exc, RunFailed) else type(exc)(message)


def _counts(rd: RunDir, fs: FitState) -> RunCounts:
    """The counts behind the run's headline figures, from its trace log."""
    traces = rd.path / "traces.jsonl"
    return run_counts(read_traces(traces), fs) if traces.exists() else RunCounts()


def _write_final(rd: RunDir, fs: FitState, task, title: str, usage, wall: float) -> None:
    """The files a finished run leaves after its last checkpoint (all 0600, each written atomically).

    A write that fails raises StorageError naming the file; the checkpoint (final) is
    already written, so ``--resume`` rewrites the missing files without a model call.
    """
    fix = "free space (or fix permissions), then rerun with --resume to write the missing files (no model call)"
    try:
        rd.write_text("history.tsv", history_tsv(fs))
        rd.write_text("final_state.json", dumps(fs.state, indent=True).decode())
        plot = rd.path / ".learning_curve.tmp.png"
        try:
            os.close(os.open(plot, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))  # savefig keeps this mode
            plot_learning_curve(fs, plot, title=title)
            os.replace(plot, rd.path / "learning_curve.png")
        except OSError as exc:  # a write error inside savefig does not carry the file name
            raise storage_error(exc, rd.path / "learning_curve.png") from None
        finally:
            plot.unlink(missing_ok=True)
        entries = read_traces(rd.path / "traces.jsonl") if (rd.path / "traces.jsonl").exists() else []
        traces = [(entry["step"], entry["phase"], entry["result"]) for entry in entries]
        rd.write_text("report.md", report_markdown(
            fs, task.state, title=title, usage=usage, wall_s=wall, results=[t[2] for t in traces],
            traces=traces, steps=read_steps(rd.path), run_counts=run_counts(entries, fs),
        ))
        write_run_report(rd.path, initial=task.state, title=title)
    except StorageError as exc:
        raise StorageError(f"{exc}; {fix}") from None
    except OSError as exc:
        raise storage_error(exc, exc.filename or rd.path, fix) from None


def _read_wall(rd: RunDir) -> float:
    path = rd.path / "wall.json"
    try:
        return float(orjson.loads(path.read_bytes())["wall_s"])
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0.0
