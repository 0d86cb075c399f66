"""A task: what the training loop optimizes — a pipeline, its starting prompts, a loss, and data splits.

>>> from funcgrad.core.state import Param, PromptState
>>> from funcgrad.core.nodes import LLM
>>> from funcgrad.core.run import Example, exact_match
>>> node = LLM("answer", system=("sys",), user="{input}")
>>> t = Task("echo", lambda p, x: node(p, input=x), PromptState.of(sys=Param("Repeat.")), exact_match,
...          train=(Example("a", "x", "x"),), val=(), test=())
>>> len(t.train)
1
"""

from __future__ import annotations

import attrs

from funcgrad.core.run import Example, LossFn, Pipeline
from funcgrad.core.state import PromptState


@attrs.frozen
class Task:
    """A named optimization problem with seeded train/val/test splits (tuples of Example)."""

    name: str
    pipeline: Pipeline
    state: PromptState
    loss: LossFn
    train: tuple[Example, ...] = attrs.field(converter=tuple)
    val: tuple[Example, ...] = attrs.field(converter=tuple)
    test: tuple[Example, ...] = attrs.field(converter=tuple)
    description: str = ""
