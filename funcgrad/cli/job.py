"""One optimization job from a config: engines up, fit with checkpoints, run dir written.

``funcgrad optimize`` and every cell of ``funcgrad compare`` run through :func:`optimize`.
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
from funcgrad.core.errors import ConfigError
from funcgrad.cli.plugins import build_strategy, build_task
from funcgrad.cli.progress import make_reporter
from funcgrad.training.report import history_tsv, plot_learning_curve, report_markdown
from funcgrad.training.html_report import write_run_report
from funcgrad.training.rundir import RunDir, read_traces
from funcgrad.core.serialize import dumps
from funcgrad.training.fit import FitState, fit, settings_hash


@attrs.frozen
class Engines:
    """The task engine, the critic engine and the meter they share."""

    task: Any
    critic: Any
    meter: Any


def _base_engine(cfg: EngineConfig, stack: contextlib.ExitStack):
    if cfg.local:
        from funcgrad.engines.local import LocalServer

        server = stack.enter_context(
            LocalServer(cfg.model, n_ctx=cfg.n_ctx, n_parallel=cfg.concurrency, threads=cfg.threads, timeout=cfg.timeout)
        )
        return server.engine
    from funcgrad.engines.openai import OpenAIEngine

    engine = OpenAIEngine(
        cfg.model, base_url=cfg.base_url, api_key=os.environ.get(cfg.api_key_env), timeout=cfg.timeout, concurrency=cfg.concurrency
    )
    stack.callback(engine.close)
    return engine


def _model_id(cfg: EngineConfig) -> str:
    """The model id answers of ``cfg`` are cached under (what serve() / OpenAIEngine report)."""
    from funcgrad.engines.local import served_name

    return served_name(cfg.model) if cfg.local else cfg.model


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
                return CachedEngine(None, cache_dir, replay=True, model=_model_id(cfg))
            return CachedEngine(_base_engine(cfg, stack), cache_dir)

        task = MeteredEngine(cached(config.engine), meter=meter)
        critic = task if same else MeteredEngine(cached(config.critic), meter=meter)
        yield Engines(task, critic, meter)


def fingerprint(config: RunConfig) -> str:
    """What a checkpoint must match to be resumed (the budget and paths may change)."""
    extra = {
        "task": [config.task, config.task_args], "strategy": [config.strategy, config.strategy_args],
        "engine": attrs.asdict(config.engine), "critic": attrs.asdict(config.critic) if config.critic else None,
    }
    return settings_hash(config.train, orjson.loads(orjson.dumps(extra, default=dict)))


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
) -> JobResult:
    """Run (or, with ``resume``, continue) the job of ``config``; write its run directory.

    Raises ConfigError if the run directory already holds a run and ``resume`` is False.
    With ``replay``, answers come only from the cache (see :func:`open_engines`).
    """
    task = build_task(config.task, config.task_args, config_dir=config.config_dir)
    strategy = build_strategy(config.strategy, config.strategy_args, config_dir=config.config_dir)
    title = f"{task.name} / {strategy.name}"
    rd = RunDir(config.run_dir)
    fp = fingerprint(config)
    resume_from, usage, wall_before = None, None, 0.0
    if rd.has_checkpoint() and not resume:
        raise ConfigError(f"{rd.path} already holds a run; pass --resume to continue it, or set [run] dir to a new directory")
    if resume:
        resume_from, usage = rd.load_checkpoint(fingerprint=fp)
        wall_before = _read_wall(rd)
        if resume_from.stopped == "done":
            return JobResult(resume_from, usage, wall_before, str(rd.path), title)
        resume_from = attrs.evolve(resume_from, stopped="")
    else:
        source = orjson.loads(orjson.dumps(config.source, default=dict))
        rd.write_json("config.json", {"config_file": str(Path(config_file).resolve()) if config_file else None, "config": source})
    started = time.monotonic()
    reporter = make_reporter(quiet=quiet, title=title)
    with open_engines(config, usage, replay=replay) as engines, reporter:
        meter = engines.meter

        def save(fs):
            rd.save_checkpoint(fs, fingerprint=fp, usage=meter.report().to_data())
            rd.write_json("wall.json", {"wall_s": wall_before + time.monotonic() - started})

        fs = fit(
            task, strategy, engine=reporter.watch(engines.task), critic=reporter.watch(engines.critic), settings=config.train, resume_from=resume_from,
            checkpoint=save, on_event=lambda kind, data: reporter(kind, data, meter.report()), log_results=rd.log_results,
        )
        usage = meter.report().to_data()
    wall = wall_before + time.monotonic() - started
    rd.write_json("wall.json", {"wall_s": wall})
    rd.write_text("history.tsv", history_tsv(fs))
    rd.write_text("final_state.json", dumps(fs.state, indent=True).decode())
    plot_learning_curve(fs, rd.path / "learning_curve.png", title=title)
    scored = [entry["result"] for entry in read_traces(rd.path / "traces.jsonl")] if (rd.path / "traces.jsonl").exists() else []
    rd.write_text("report.md", report_markdown(fs, task.state, title=title, usage=usage, wall_s=wall, results=scored))
    write_run_report(rd.path, initial=task.state, title=title)
    return JobResult(fs, usage, wall, str(rd.path), title)


def _read_wall(rd: RunDir) -> float:
    path = rd.path / "wall.json"
    try:
        return float(orjson.loads(path.read_bytes())["wall_s"])
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0.0
