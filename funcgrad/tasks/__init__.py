"""Built-in tasks, generated offline from a seed (no downloads).

Each factory is ``name(*, seed=0, n_train=30, n_val=20, n_test=50) -> funcgrad.Task``
with disjoint splits; the same seed gives identical examples.

- ``object_counting``: BIG-bench style counting (count → parse).
- ``arithmetic``: GSM-style word problems, 1–3 steps (solve → parse).
- ``multihop``: two-hop QA over a generated knowledge base (query ↺ retrieve, twice → answer).
- ``agent``: a tool-using loop (act → parse_action → calc | lookup → history, up to 4 turns → finish).
- ``classification``: TREC-style question types, 6 labels (classify → parse); also takes ``labels``.
- ``review_loop``: the same questions, then review rounds that confirm or change the label, up to
  ``max_rounds`` (classify → parse → (review → parse_review → revise)* → final; docs/control-flow.md).

>>> sorted(TASKS)
['agent', 'arithmetic', 'classification', 'multihop', 'object_counting', 'review_loop']
>>> load_task("object_counting", n_train=1, n_val=1, n_test=1).name
'object_counting'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from funcgrad.core.errors import ConfigError
from funcgrad.core.task import Task
from funcgrad.tasks.agent import agent
from funcgrad.tasks.arithmetic import arithmetic
from funcgrad.tasks.classification import classification
from funcgrad.tasks.multihop import multihop
from funcgrad.tasks.object_counting import object_counting
from funcgrad.tasks.review_loop import review_loop

TASKS: Mapping[str, Callable[..., Task]] = MappingProxyType({
    "object_counting": object_counting,
    "arithmetic": arithmetic,
    "multihop": multihop,
    "agent": agent,
    "classification": classification,
    "review_loop": review_loop,
})


def task_factory(name: str) -> Callable[..., Task]:
    """The factory of the built-in task ``name``; ConfigError naming it and listing the known ones.

    >>> task_factory("arithmetic").__name__
    'arithmetic'
    """
    factory = TASKS.get(name) if isinstance(name, str) else None
    if factory is None:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return factory


def load_task(name: str, **kwargs: Any) -> Task:
    """Build the built-in task ``name`` with factory keyword arguments (seed, n_train, ...).

    Raises ConfigError naming the unknown task and listing the known ones, or naming a
    bad keyword argument.
    """
    factory = task_factory(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"task {name!r}: bad arguments {sorted(kwargs)}: {exc}") from None
    return factory(**kwargs)


__all__ = [
    "TASKS", "agent", "arithmetic", "classification", "load_task", "multihop", "object_counting", "review_loop", "task_factory",
]
