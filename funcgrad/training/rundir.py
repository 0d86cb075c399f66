"""A run directory: config, checkpoint, every trace as JSONL, history, report.

Layout::

    RUN_DIR/config.json       the validated config the run was started with
    RUN_DIR/checkpoint.json   the latest FitState (written atomically after every step)
    RUN_DIR/traces.jsonl      one line per example run: {"step", "phase", "result"}
    RUN_DIR/steps.jsonl       one line per strategy attempt: its recorded backward pass (a StepTrace)
    RUN_DIR/history.tsv       one row per step
    RUN_DIR/report.md, learning_curve.png, final_state.json

    RUN_DIR/failures.jsonl    one line per failed example (cause and trace), appended across resumes
    RUN_DIR/.lock             held (flock) by the process writing the run; names its pid and host

The checkpoint records how many bytes of traces.jsonl and steps.jsonl belong to it;
resuming cuts the logs back to that length, so an interrupted step is not duplicated.
Every file is created with mode 0600 (the run's prompts, answers and traces are
private to its owner), whatever the umask.

>>> import tempfile
>>> rd = RunDir(tempfile.mkdtemp())
>>> rd.has_checkpoint()
False
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from funcgrad.core.backward import StepTrace, check_step_trace
from funcgrad.core.errors import CheckpointError, ConfigError
from funcgrad.core.run import Result
from funcgrad.core.serialize import to_data
from funcgrad.engines.files import write_atomic
from funcgrad.training.records import FitState, fit_state_from_data, fit_state_to_data

CHECKPOINT_FORMAT = "funcgrad-checkpoint"
CHECKPOINT_VERSION = 1


FILE_MODE = 0o600
# The files a run writes; a fresh start removes these (and only these) left by a start that never checkpointed.
RUN_FILES = (
    "config.json", "checkpoint.json", "traces.jsonl", "steps.jsonl", "failures.jsonl", "history.tsv",
    "report.md", "report.html", "learning_curve.png", "final_state.json", "wall.json",
)
# What a finished run leaves after its last checkpoint; ``--resume`` rewrites them if one is missing.
FINAL_FILES = ("history.tsv", "final_state.json", "learning_curve.png", "report.md", "report.html")


class RunDir:
    """Files of one run. Creating it makes the directory; nothing else is written yet.

    Raises ConfigError if ``path`` cannot be a run directory (a file, not writable).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(f"run directory {str(self.path)!r} is a file; set [run] dir (or --run-dir) to a directory") from None
        except OSError as exc:
            raise ConfigError(f"cannot create run directory {str(self.path)!r}: {exc.strerror}; choose a writable place") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise ConfigError(f"run directory {str(self.path)!r} is not writable; fix its permissions or choose another")
        self._lock = threading.Lock()

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory's lock while the block runs; ConfigError naming the holder if it is taken.

        The lock is an ``flock`` on ``.lock``, which the kernel releases when its holder
        dies, so a lock left by a killed run is stale by construction and simply taken over.

        >>> import tempfile
        >>> rd = RunDir(tempfile.mkdtemp())
        >>> with rd.locked():
        ...     rd.holder()["pid"] == os.getpid()
        True
        """
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.holder()
                who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"
                raise ConfigError(
                    f"run directory {str(self.path)!r} is being written by {who}; wait for it to finish "
                    "(or stop it), or use another [run] dir / --run-dir"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, orjson.dumps({"pid": os.getpid(), "host": socket.gethostname()}), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing releases the flock

    def holder(self) -> dict:
        """The pid and host written by the lock's current (or last) holder ({} if none)."""
        try:
            data = orjson.loads(self.lock_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def clear(self) -> None:
        """Remove the files a previous start left (:data:`RUN_FILES`), so a fresh start appends to nothing."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)

    def missing_final_files(self) -> tuple[str, ...]:
        """The files of :data:`FINAL_FILES` a finished run should have but does not."""
        return tuple(name for name in FINAL_FILES if not (self.path / name).exists())

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.json"

    @property
    def traces_path(self) -> Path:
        return self.path / "traces.jsonl"

    @property
    def steps_path(self) -> Path:
        return self.path / "steps.jsonl"

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def save_checkpoint(self, fs: FitState, *, fingerprint: str, usage: Any = None) -> None:
        """Atomically write the checkpoint for ``fs`` (with the trace log's current length)."""
        with self._lock:
            log_bytes = self.traces_path.stat().st_size if self.traces_path.exists() else 0
            steps_bytes = self.steps_path.stat().st_size if self.steps_path.exists() else 0
        doc = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "fingerprint": fingerprint,
            "traces_bytes": log_bytes, "steps_bytes": steps_bytes, "usage": usage, "fit": fit_state_to_data(fs),
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
        check_checkpoint_fields(doc, path)
        try:
            fs = fit_state_from_data(doc["fit"])
        except Exception as exc:  # any malformed field: report it as a corrupt checkpoint
            raise CheckpointError(f"checkpoint {path} is corrupt: {type(exc).__name__}: {exc}") from None
        self._truncate_log(int(doc.get("traces_bytes", 0)))
        self._truncate(self.steps_path, int(doc.get("steps_bytes", 0)))
        return fs, doc.get("usage")

    def _truncate_log(self, size: int) -> None:
        self._truncate(self.traces_path, size)

    @staticmethod
    def _truncate(path: Path, size: int) -> None:
        if path.exists() and path.stat().st_size > size:
            with open(path, "r+b") as fh:
                fh.truncate(size)

    def log_step(self, step_trace: StepTrace) -> None:
        """Append one JSONL line: the recorded backward pass of one attempt (see :func:`read_steps`)."""
        line = orjson.dumps(to_data(step_trace)) + b"\n"
        self._append(self.steps_path, line)

    def log_results(self, step: int, phase: str, results: Sequence[Result]) -> None:
        """Append one JSONL line per result (its example, output, loss and full trace)."""
        lines = b"".join(
            orjson.dumps({"step": step, "phase": phase, "result": to_data(r)}) + b"\n" for r in results
        )
        self._append(self.traces_path, lines)

    def log_failures(self, step: int, phase: str, results: Sequence[Result]) -> None:
        """Append the failed ones of ``results`` to failures.jsonl (kept across resumes, as a record of what went wrong)."""
        lines = b"".join(
            orjson.dumps({"step": step, "phase": phase, "result": to_data(r)}) + b"\n" for r in results if r.failed
        )
        if lines:
            self._append(self.path / "failures.jsonl", lines)

    def _append(self, path: Path, data: bytes) -> None:
        with self._lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def write_json(self, name: str, value: Any) -> Path:
        path = self.path / name
        write_atomic(path, orjson.dumps(value, option=orjson.OPT_INDENT_2), durable=True)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        write_atomic(path, text.encode(), durable=True)
        return path


_NUMBER = (int, float)
_CHECKPOINT_FIELDS = {  # field of doc["fit"]: (accepted types, what it must be)
    "step": ((int,), "a whole number >= 0"),
    "steps_since_improvement": ((int,), "a whole number >= 0"),
    "val_score": (_NUMBER, "a number in [0, 1]"),
    "initial_val": (_NUMBER, "a number in [0, 1]"),
    "initial_test": (_NUMBER + (type(None),), "a number in [0, 1] or null"),
    "final_test": (_NUMBER + (type(None),), "a number in [0, 1] or null"),
    "stopped": ((str,), "a string"),
    "log": ((list,), "a list"),
    "attempts": ((list,), "a list"),
    "state": ((dict,), "an object"),
}


def check_checkpoint_fields(doc: dict, path: Path | str = "checkpoint") -> None:
    """Raise CheckpointError naming the first field of a checkpoint document with a wrong type or range.

    >>> check_checkpoint_fields({"traces_bytes": 0, "fit": {"step": "abc"}})
    Traceback (most recent call last):
    funcgrad.core.errors.CheckpointError: checkpoint: field fit.step = 'abc' must be a whole number >= 0; the file was edited or damaged: restore it, or delete it to start the run over
    """

    def bad(field: str, value: Any, want: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: field {field} = {value!r} must be {want}; the file was edited or damaged: "
            "restore it, or delete it to start the run over"
        )

    for name in ("traces_bytes", "steps_bytes"):
        value = doc.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(name, value, "a whole number >= 0")
    fit = doc.get("fit")
    if not isinstance(fit, dict):
        raise bad("fit", fit, "an object")
    for name, (types, want) in _CHECKPOINT_FIELDS.items():
        if name not in fit:
            continue  # a missing field is reported when the state is read
        value = fit[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise bad(f"fit.{name}", value, want)
        if isinstance(value, int | float) and (value < 0 or (want.startswith("a number") and value > 1)):
            raise bad(f"fit.{name}", value, want)


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


def read_steps(path: str | Path) -> tuple[StepTrace, ...]:
    """The recorded backward passes of a run: ``path`` is a run directory or its steps.jsonl.

    Each line is checked (:func:`~funcgrad.core.backward.check_step_trace`); a bad line
    is a CheckpointError naming the file and line. A run without steps.jsonl has none.
    """
    from funcgrad.core.serialize import from_data

    path = Path(path)
    if path.is_dir():
        path = path / "steps.jsonl"
    if not path.exists():
        return ()
    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = from_data(orjson.loads(line))
            if not isinstance(value, StepTrace):
                raise TypeError(f"a {type(value).__name__}, not a StepTrace")
            out.append(check_step_trace(value))
        except Exception as exc:  # any malformed line: name it
            raise CheckpointError(f"{path}:{n}: not a funcgrad step line ({type(exc).__name__}: {exc})") from None
    return tuple(out)
