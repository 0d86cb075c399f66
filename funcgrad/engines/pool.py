"""The one executor: worker threads that put independent model calls in flight together.

The core stays free of threads: :func:`funcgrad.core.run.run_batch` takes the
executor from its caller, and the effect driver (``funcgrad.training.driver``)
performs each batch of a strategy's effects with :func:`in_order`. Both get their
threads from :func:`worker_pool`.

>>> with worker_pool(2) as pool:
...     in_order(pool, lambda n: n * n, [1, 2, 3])
(1, 4, 9)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[concurrent.futures.Executor | None]:
    """A pool of ``workers`` threads for the ``with`` block, or None (run inline) when ``workers`` is 1.

    Leaving the block waits for the work already started.

    >>> with worker_pool(1) as pool:
    ...     pool is None
    True
    """
    if workers <= 1:
        yield None
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        yield pool


def in_order(pool: concurrent.futures.Executor | None, func: Callable[[Any], Any], items: Sequence[Any]) -> tuple[Any, ...]:
    """``func`` of every item, run on ``pool`` (inline without one, or for a single item), results in item order.

    The first failure cancels the items not yet started and is raised.

    >>> in_order(None, str.upper, ["a", "b"])
    ('A', 'B')
    """
    if pool is None or len(items) <= 1:
        return tuple(func(item) for item in items)
    futures = [pool.submit(func, item) for item in items]
    try:
        return tuple(f.result() for f in futures)
    except BaseException:
        for f in futures:
            f.cancel()
        raise
