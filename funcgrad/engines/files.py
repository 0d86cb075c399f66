"""Atomic file writes: readers see the old file or the new one, never half of it.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> write_atomic(p, b"{}"); p.read_bytes()
b'{}'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` via a unique temp file in the same folder + rename.

    Safe for concurrent writers (threads and processes); a failed write leaves no
    temp file behind. ``durable`` also fsyncs before the rename, so a power cut
    cannot leave an empty file (checkpoints use it; cache entries repair themselves).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
