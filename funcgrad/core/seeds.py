"""Seeds derived from a run's seed: one function for every random stream of a run.

Each stream (a minibatch order, a strategy's sampling, the seed sent with a sampled
request) is seeded by hashing its own name and coordinates, so streams never share
draws and the values do not depend on Python's hash seed.
"""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed (valid as an OpenAI ``seed``) derived from ``parts``, e.g. the run seed, a stream name, the step.

    >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(1, 1)
    True
    >>> 0 <= derive_seed("epoch", 3) < 2**31
    True
    """
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1
