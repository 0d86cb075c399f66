"""Atomic file writes: readers see the old file or the new one, never half of it.

A write that fails (disk full, no permission) raises
:class:`~funcgrad.core.errors.StorageError` naming the path and the errno, and
leaves the old file as it was.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> write_atomic(p, b"{}"); p.read_bytes()
b'{}'
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from funcgrad.core.errors import StorageError


def os_error_text(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """``'PATH': [Errno N] reason (ENAME)`` for an OSError met while writing ``path`` (default: the error's
    own filename; without either, no path).

    >>> os_error_text(OSError(errno.ENOSPC, "No space left on device"), "/run/x")
    "'/run/x': [Errno 28] No space left on device (ENOSPC)"
    >>> os_error_text(OSError(errno.EIO, "Input/output error"))
    '[Errno 5] Input/output error (EIO)'
    """
    where = path if path is not None else exc.filename
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    text = f"[Errno {exc.errno}] {exc.strerror or exc}" + (f" ({name})" if name else "")
    return text if where is None else f"{str(where)!r}: {text}"


def storage_error(exc: OSError, path: str | os.PathLike | None = None, fix: str = "") -> StorageError:
    """The StorageError of an OSError met while writing ``path``; ``fix`` says what to do.

    >>> str(storage_error(OSError(errno.EACCES, "Permission denied"), "/r/report.html", "fix its permissions"))
    "cannot write '/r/report.html': [Errno 13] Permission denied (EACCES); fix its permissions"
    """
    return StorageError(f"cannot write {os_error_text(exc, path)}" + (f"; {fix}" if fix else ""))


def write_atomic(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` via a unique temp file in the same folder + rename.

    Safe for concurrent writers (threads and processes); a failed write leaves no
    temp file behind and ``path`` as it was, and raises StorageError naming ``path``.
    ``durable`` also fsyncs before the rename, so a power cut cannot leave an empty
    file (checkpoints use it; cache entries repair themselves).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    except OSError as exc:
        raise storage_error(exc, path) from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise storage_error(exc, path) from None
        raise
