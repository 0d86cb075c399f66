"""A run directory: config, checkpoint, every trace as JSONL, history, report.

Layout::

    RUN_DIR/config.json       the validated config the run was started with
    RUN_DIR/checkpoint.json   the latest FitState (written atomically after every step)
    RUN_DIR/traces.jsonl      one line per example run: {"step", "phase", "result"}
    RUN_DIR/history.tsv       one row per step
    RUN_DIR/report.md, learning_curve.png, final_state.json

The checkpoint records how many bytes of traces.jsonl belong to it; resuming cuts
the log back to that length, so traces of an interrupted step are not duplicated.

>>> import tempfile
>>> rd = RunDir(tempfile.mkdtemp())
>>> rd.has_checkpoint()
False
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from funcgrad.core.errors import CheckpointError
from funcgrad.core.run import Result
from funcgrad.core.serialize import to_data
from funcgrad.engines.files import write_atomic
from funcgrad.training.fit import FitState, fit_state_from_data, fit_state_to_data

CHECKPOINT_FORMAT = "funcgrad-checkpoint"
CHECKPOINT_VERSION = 1


class RunDir:
    """Files of one run. Creating it makes the directory; nothing else is written yet."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.json"

    @property
    def traces_path(self) -> Path:
        return self.path / "traces.jsonl"

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def save_checkpoint(self, fs: FitState, *, fingerprint: str, usage: Any = None) -> None:
        """Atomically write the checkpoint for ``fs`` (with the trace log's current length)."""
        with self._lock:
            log_bytes = self.traces_path.stat().st_size if self.traces_path.exists() else 0
        doc = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "fingerprint": fingerprint,
            "traces_bytes": log_bytes, "usage": usage, "fit": fit_state_to_data(fs),
        }
        write_atomic(self.checkpoint_path, orjson.dumps(doc, option=orjson.OPT_INDENT_2), durable=True)

    def load_checkpoint(self, *, fingerprint: str) -> tuple[FitState, Any]:
        """Read the checkpoint; returns (FitState, usage data). Cuts traces.jsonl back to it.

        Raises CheckpointError if it is missing, corrupt, or from a different config.
        """
        path = self.checkpoint_path
        if not path.exists():
            raise CheckpointError(f"no checkpoint at {path}; start the run without --resume")
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise CheckpointError(f"checkpoint {path} is corrupt ({exc}); delete it to start over") from None
        if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a funcgrad checkpoint")
        if doc.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint {path} has version {doc.get('version')!r}; this funcgrad reads {CHECKPOINT_VERSION}")
        if doc.get("fingerprint") != fingerprint:
            raise CheckpointError(
                f"checkpoint {path} belongs to a different configuration (task, strategy, engines or train "
                "settings changed); use a new run directory, or restore the original config"
            )
        try:
            fs = fit_state_from_data(doc["fit"])
        except Exception as exc:  # any malformed field: report it as a corrupt checkpoint
            raise CheckpointError(f"checkpoint {path} is corrupt: {type(exc).__name__}: {exc}") from None
        self._truncate_log(int(doc.get("traces_bytes", 0)))
        return fs, doc.get("usage")

    def _truncate_log(self, size: int) -> None:
        if self.traces_path.exists() and self.traces_path.stat().st_size > size:
            with open(self.traces_path, "r+b") as fh:
                fh.truncate(size)

    def log_results(self, step: int, phase: str, results: Sequence[Result]) -> None:
        """Append one JSONL line per result (its example, output, loss and full trace)."""
        lines = b"".join(
            orjson.dumps({"step": step, "phase": phase, "result": to_data(r)}) + b"\n" for r in results
        )
        with self._lock, open(self.traces_path, "ab") as fh:
            fh.write(lines)

    def write_json(self, name: str, value: Any) -> Path:
        path = self.path / name
        write_atomic(path, orjson.dumps(value, option=orjson.OPT_INDENT_2), durable=True)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        write_atomic(path, text.encode(), durable=True)
        return path


def read_traces(path: str | Path) -> list[dict]:
    """Parse a traces.jsonl file into dicts with ``step``, ``phase`` and ``result`` (a Result)."""
    from funcgrad.core.serialize import from_data

    out = []
    for n, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
            out.append({"step": doc["step"], "phase": doc["phase"], "result": from_data(doc["result"])})
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}:{n}: not a funcgrad trace line ({exc})") from None
    return out
