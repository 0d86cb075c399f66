"""Experiment tracking: a run's config, per-step metrics, accepted prompts and report in MLflow.

Optional (``pip install 'funcgrad[mlflow]'``) and configured by a ``[tracking]`` table
(:func:`funcgrad.cli.config.parse_tracking`, docs/tracking.md). A run becomes one
MLflow run: the config as params (``section.key``), every step's validation score,
minibatch score, proposals and accepted count as metrics at that step, each accepted
prompt as ``prompts/step-NNN.json``, and at the end the test scores, answers and
tokens per phase and the run directory's report, history, final prompts, config and
learning curve as artifacts. A resumed run continues the same MLflow run (its id is
kept in the run directory's ``tracking.json``).

Tracking never fails a run: the first error (mlflow missing, a store that cannot
be opened, a server that stops answering) is one warning line, and the tracker
logs nothing more. Only :class:`~mlflow.tracking.MlflowClient` is used, with the
tracking URI passed in: no global MLflow state (active run, tracking URI) is set.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson

from funcgrad.core.values import thaw
from funcgrad.engines.files import write_atomic
from funcgrad.engines.meter import UsageTable
from funcgrad.training.events import StepDone

MAX_PARAM = 500  # characters of one param value (older MLflow servers refuse longer ones)
ARTIFACTS = ("report.html", "report.md", "history.tsv", "final_state.json", "config.json", "learning_curve.png")
RUN_FILE = "tracking.json"


@attrs.frozen
class TrackingConfig:
    """Where a run is tracked.

    ``uri``: an MLflow tracking URI (``sqlite:///...``, ``http://host:5000``, ...);
    ``artifacts``: where a new experiment keeps its artifacts (None: the store's
    default); ``experiment``: the MLflow experiment's name; ``run_name``: the run's
    name (empty: the run directory's name).

    >>> local_store(Path("/tmp/mlruns")).uri
    'sqlite:////tmp/mlruns/mlflow.db'
    """

    uri: str
    artifacts: str | None = None
    experiment: str = "funcgrad"
    run_name: str = ""


def local_store(folder: Path, *, experiment: str = "funcgrad", run_name: str = "") -> TrackingConfig:
    """A store in a local folder: the SQLite file ``folder/mlflow.db`` and the artifacts in ``folder/artifacts``."""
    folder = folder.resolve()
    return TrackingConfig(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri(), experiment, run_name)


def uri_store(uri: str, *, experiment: str = "funcgrad", run_name: str = "") -> TrackingConfig:
    """Any MLflow tracking URI; with a SQLite file, a new experiment keeps its artifacts in ``artifacts/`` beside it.

    >>> uri_store("sqlite:////data/mlflow.db").artifacts, uri_store("http://127.0.0.1:5000").artifacts
    ('file:///data/artifacts', None)
    """
    artifacts = None
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        artifacts = (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return TrackingConfig(uri, artifacts, experiment, run_name)


def flat_params(source: Any) -> dict[str, str]:
    """A config's tables as MLflow params: ``section.key`` -> value as text (JSON for lists and tables), cut to MAX_PARAM.

    >>> flat_params({"train": {"steps": 4, "accept": "mean"}, "grid": {"seeds": [0, 1]}})
    {'train.steps': '4', 'train.accept': 'mean', 'grid.seeds': '[0,1]'}
    """
    out = {}
    for section, table in thaw(source).items():
        for key, value in (table.items() if isinstance(table, dict) else [("", table)]):
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            out[f"{section}.{key}" if key else section] = text[:MAX_PARAM]
    return out


def _warn_stderr(message: str) -> None:
    print(f"funcgrad: warning: {message}", file=sys.stderr, flush=True)


class Tracker:
    """One run's MLflow logger (see the module docs); a no-op after its first failure or without a config.

    ``source``: the config's tables (logged as params); ``resume``: continue the MLflow
    run named in the run directory's ``tracking.json``; ``warn`` receives the one
    warning line of a failure (default: stderr).

    Use as a context manager around the run: leaving it with an exception marks the
    MLflow run FAILED; :meth:`finish` logs the end and marks it FINISHED.
    """

    def __init__(self, config: TrackingConfig | None, run_dir: Path, source: Any = None, *, resume: bool = False,
                 warn: Callable[[str], None] = _warn_stderr, clock: Callable[[], float] = time.time):
        self._warn, self._clock, self._run_dir, self._resume = warn, clock, Path(run_dir), resume
        self._client: Any = None
        self.run_id: str | None = None
        if config is not None:
            self._safely(self._open, config, source or {})

    def _guard(self, action: Callable[..., None], *args: Any) -> None:
        """``action(*args)`` while tracking is on; its failure is one warning and turns tracking off."""
        if self._client is not None:
            self._safely(action, *args)

    def _safely(self, action: Callable[..., None], *args: Any) -> None:
        try:
            action(*args)
        except ImportError:
            self._client = None
            self._warn("tracking is off: mlflow is not installed (pip install 'funcgrad[mlflow]'); the run goes on")
        except Exception as exc:  # noqa: BLE001 -- any tracking failure must leave the run alone
            self._client = None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self._warn(f"tracking stopped: {type(exc).__name__}: {first}; the run goes on")

    def _open(self, config: TrackingConfig, source: Any) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=config.uri)
        previous = self._run_dir / RUN_FILE
        if self._resume and previous.exists():  # a resumed run continues its MLflow run
            self.run_id = orjson.loads(previous.read_bytes())["run_id"]
            client.update_run(self.run_id, status="RUNNING")
        else:
            found = client.get_experiment_by_name(config.experiment)
            experiment = found.experiment_id if found else client.create_experiment(config.experiment, artifact_location=config.artifacts)
            tags = {"funcgrad.run_dir": str(self._run_dir)}
            run = client.create_run(experiment, run_name=config.run_name or self._run_dir.name, tags=tags)
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, v) for k, v in flat_params(source).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(self.run_id, params=params[i:i + 100])
            write_atomic(previous, orjson.dumps({"run_id": self.run_id, "experiment_id": experiment}))
        self._client = client

    def _metrics(self, values: Mapping[str, float | None], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(self._clock() * 1000)
        metrics = [Metric(k, float(v), stamp, step) for k, v in values.items() if v is not None]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)

    def event(self, event: Any) -> None:
        """A progress event of ``fit`` (``on_event``): each :class:`~funcgrad.training.events.StepDone` logs its
        metrics and its accepted prompt."""
        if isinstance(event, StepDone):
            self._guard(self._step, event)

    def _step(self, event: StepDone) -> None:
        log, step = event.log, event.step
        self._metrics({"val": log.val_score, "minibatch": log.train_score, "proposals": len(log.proposals),
                       "accepted": float(log.accepted)}, step)
        for p in log.proposals:
            if p.accepted:
                self._client.log_text(self.run_id, orjson.dumps(dict(p.values), option=orjson.OPT_INDENT_2).decode(),
                                      f"prompts/step-{step:03d}.json")

    def finish(self, fit_state: Any, usage: Any = None, wall_s: float | None = None) -> None:
        """The end of a run: step-0 validation, test scores, usage per phase, the run directory's files; FINISHED."""
        self._guard(self._finish, fit_state, usage, wall_s)

    def _finish(self, fs: Any, usage: Any, wall_s: float | None) -> None:
        self._metrics({"val": fs.initial_val}, 0)
        final = {"test_initial": fs.initial_test, "test_final": fs.final_test, "wall_s": wall_s}
        if usage:
            table = UsageTable.from_data(usage)
            final |= {f"answers.{k}": v for k, v in table.by_role("answers").items()}
            final |= {f"tokens.{k}": v for k, v in table.by_role("answer_tokens").items()}
        self._metrics(final, fs.step)
        self._client.set_tag(self.run_id, "funcgrad.stopped", fs.stopped[:MAX_PARAM])
        for name in ARTIFACTS:
            if (self._run_dir / name).exists():
                self._client.log_artifact(self.run_id, str(self._run_dir / name))
        self._client.set_terminated(self.run_id, "FINISHED")
        self._client = None  # done: nothing more to log

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            self._guard(lambda: self._client.set_terminated(self.run_id, "FAILED"))
