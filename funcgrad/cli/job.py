"""One optimization job from a config: engines up, fit with checkpoints, run dir written.

``funcgrad optimize`` and every cell of ``funcgrad compare`` run through :func:`optimize`.
The run directory is locked while the job writes it. A failure (an example that
could not be answered, a server that is gone) stops the job with the checkpoint at
the last complete step and the failed examples in ``failures.jsonl``; ``--resume``
then redoes exactly the lost work, and also rewrites any file of a finished run
(history, final state, plot, report) that a kill prevented.
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

from funcgrad.cli.config import EngineConfig, RunConfig
from funcgrad.core.errors import BudgetExceeded, ConfigError, EngineError, RunFailed
from funcgrad.cli.plugins import build_strategy, build_task
from funcgrad.cli.progress import make_reporter
from funcgrad.training.report import history_tsv, plot_learning_curve, report_markdown
from funcgrad.training.html_report import write_run_report
from funcgrad.training.rundir import FILE_MODE, RunDir, read_traces
from funcgrad.core.serialize import dumps
from funcgrad.training.events import PhaseEvent, StepDone
from funcgrad.training.fit import FitState, fit
from funcgrad.training.settings import settings_hash


@attrs.frozen
class Engines:
    """The task engine, the critic engine and the meter they share."""

    task: Any
    critic: Any
    meter: Any


def _base_engine(cfg: EngineConfig, stack: contextlib.ExitStack):
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
        cfg.model, base_url=cfg.base_url, api_key=os.environ.get(cfg.api_key_env), timeout=cfg.timeout,
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
    the cache, and a missing one raises CacheMiss naming the request.
    """
    from funcgrad.engines.cache import CachedEngine
    from funcgrad.engines.local import cache_root
    from funcgrad.engines.meter import Budget, Meter, MeteredEngine, UsageTable

    cache_dir = Path(config.cache_dir) if config.cache_dir else cache_root() / "llm"
    meter = Meter(Budget(max_calls=config.max_calls, max_tokens=config.max_tokens), UsageTable.from_data(usage) if usage else None)
    same = config.critic is None or config.critic == config.engine
    with contextlib.ExitStack() as stack:

        def cached(cfg: EngineConfig):
            if replay:
                model, identity = _model_id(cfg)
                return CachedEngine(None, cache_dir, replay=True, model=model, identity=identity)
            return CachedEngine(_base_engine(cfg, stack), cache_dir)

        task = MeteredEngine(cached(config.engine), meter=meter)
        critic = task if same else MeteredEngine(cached(config.critic), meter=meter)
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
    """The engine settings that can change answers (retries and the deadline cannot)."""
    return {k: v for k, v in attrs.asdict(cfg).items() if k not in ("retries", "deadline")}


@attrs.frozen
class JobResult:
    """The outcome of :func:`optimize`: final fit state, usage data, wall time (all invocations), run dir."""

    fit_state: FitState
    usage: Any
    wall_s: float
    run_dir: str
    title: str


def optimize(
    config: RunConfig, *, resume: bool = False, quiet: bool = False, config_file: str | None = None, replay: bool = False,
    label: str | None = None,
) -> JobResult:
    """Run (or, with ``resume``, continue) the job of ``config``; write its run directory.

    Raises ConfigError if the run directory already holds a run and ``resume`` is False,
    or if another process is writing it. With ``replay``, answers come only from the
    cache (see :func:`open_engines`). A failure raises RunFailed or EngineError saying
    which step the checkpoint keeps. ``label`` prefixes the progress lines (default:
    ``"task / strategy"``; compare passes the cell's name).
    """
    task = build_task(config.task, config.task_args, config_dir=config.config_dir)
    task = attrs.evolve(task, loss=config.judge) if config.judge is not None else task  # [loss] table
    strategy = build_strategy(config.strategy, config.strategy_args, config_dir=config.config_dir)
    title = f"{task.name} / {strategy.name}"
    rd = RunDir(config.run_dir)
    with rd.locked():
        return _optimize(config, task, strategy, title, rd, resume=resume, quiet=quiet, config_file=config_file, replay=replay,
                         label=label or title)


def _optimize(config, task, strategy, title, rd: RunDir, *, resume, quiet, config_file, replay, label) -> JobResult:
    fp = fingerprint(config)
    resume_from, usage, wall_before = None, None, 0.0
    if rd.has_checkpoint() and not resume:
        raise ConfigError(f"{rd.path} already holds a run; pass --resume to continue it, or set [run] dir to a new directory")
    if resume:
        resume_from, usage = rd.load_checkpoint(fingerprint=fp)
        wall_before = _read_wall(rd)
        if resume_from.stopped == "done":
            if rd.missing_final_files():  # killed after the last checkpoint: redo what is missing
                _write_final(rd, resume_from, task, title, usage, wall_before)
            return JobResult(resume_from, usage, wall_before, str(rd.path), title)
        resume_from = attrs.evolve(resume_from, stopped="")
    else:
        rd.clear()  # files of a start that never reached its first checkpoint
        source = orjson.loads(orjson.dumps(config.source, default=dict))
        rd.write_json("config.json", {"config_file": str(Path(config_file).resolve()) if config_file else None, "config": source})
    started = time.monotonic()
    reporter = make_reporter(quiet=quiet, title=label)
    saved = {"step": None if resume_from is None else resume_from.step, "phase": "initial evaluation"}
    with open_engines(config, usage, replay=replay) as engines, reporter:
        meter = engines.meter

        def save(fs):
            rd.save_checkpoint(fs, fingerprint=fp, usage=meter.report().to_data())
            rd.write_json("wall.json", {"wall_s": wall_before + time.monotonic() - started})
            saved["step"] = fs.step

        def on_event(event):
            if isinstance(event, PhaseEvent):
                saved["phase"] = event.label
            elif isinstance(event, StepDone):  # until the next phase event, the run is in the next step's minibatch
                saved["phase"] = f"step {event.step + 1}"
            reporter(event, meter.report())

        try:
            fs = fit(
                task, strategy, engine=reporter.watch(engines.task), critic=reporter.watch(engines.critic), settings=config.train, resume_from=resume_from,
                checkpoint=save, on_event=on_event, log_results=rd.log_results, log_step=rd.log_step,
            )
        except BudgetExceeded:
            raise
        except (RunFailed, EngineError) as exc:
            raise _stopped(exc, rd, saved) from None
        usage = meter.report().to_data()
    wall = wall_before + time.monotonic() - started
    rd.write_json("wall.json", {"wall_s": wall})
    _write_final(rd, fs, task, title, usage, wall)
    return JobResult(fs, usage, wall, str(rd.path), title)


def _stopped(exc: RunFailed | EngineError, rd: RunDir, saved: dict) -> Exception:
    """``exc`` restated with where the run stopped and how to continue; its failed examples logged."""
    phase = saved["phase"]
    if isinstance(exc, RunFailed):
        rd.log_failures(-1 if saved["step"] is None else saved["step"] + 1, phase, exc.results)
    where = (
        "before its first checkpoint (a rerun starts over)" if saved["step"] is None
        else f"with its checkpoint at step {saved['step']} (rerun with --resume to redo only the lost work)"
    )
    logged = f"; failed examples are in {rd.path / 'failures.jsonl'}" if isinstance(exc, RunFailed) and exc.results else ""
    message = f"{exc} [the run stopped during {phase!r} {where}{logged}]"
    return RunFailed(message, exc.results) if isinstance(exc, RunFailed) else type(exc)(message)


def _write_final(rd: RunDir, fs: FitState, task, title: str, usage, wall: float) -> None:
    """The files a finished run leaves after its last checkpoint (all 0600, each written atomically)."""
    rd.write_text("history.tsv", history_tsv(fs))
    rd.write_text("final_state.json", dumps(fs.state, indent=True).decode())
    plot = rd.path / ".learning_curve.tmp.png"
    os.close(os.open(plot, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))  # savefig keeps this mode
    try:
        plot_learning_curve(fs, plot, title=title)
        os.replace(plot, rd.path / "learning_curve.png")
    finally:
        plot.unlink(missing_ok=True)
    scored = [entry["result"] for entry in read_traces(rd.path / "traces.jsonl")] if (rd.path / "traces.jsonl").exists() else []
    rd.write_text("report.md", report_markdown(fs, task.state, title=title, usage=usage, wall_s=wall, results=scored))
    write_run_report(rd.path, initial=task.state, title=title)


def _read_wall(rd: RunDir) -> float:
    path = rd.path / "wall.json"
    try:
        return float(orjson.loads(path.read_bytes())["wall_s"])
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0.0
