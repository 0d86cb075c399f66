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

from funcgrad.core.errors import ConfigError
from funcgrad.core.run import Example, LossFn, Pipeline
from funcgrad.core.state import PromptState


@attrs.frozen
class Task:
    """A named optimization problem with seeded train/val/test splits (tuples of Example).

    ``labels``: the answers a classification task chooses from (empty for other
    tasks). Declared, a label in a proposed prompt is a class name, not a leaked
    answer: the ``label_leak`` guard then flags only copied examples
    (docs/strategies.md). Each must be a non-empty string, without repeats.

    >>> Task("t", None, None, None, (), (), (), labels=["a", "a"]).labels
    Traceback (most recent call last):
    ...
    funcgrad.core.errors.ConfigError: task 't': labels must be distinct non-empty strings, got ['a', 'a']
    """

    name: str
    pipeline: Pipeline
    state: PromptState
    loss: LossFn
    train: tuple[Example, ...] = attrs.field(converter=tuple)
    val: tuple[Example, ...] = attrs.field(converter=tuple)
    test: tuple[Example, ...] = attrs.field(converter=tuple)
    description: str = ""
    labels: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @labels.validator
    def _check_labels(self, attribute, value) -> None:
        if not all(isinstance(x, str) and x.strip() for x in value) or len(set(value)) < len(value):
            raise ConfigError(f"task {self.name!r}: labels must be distinct non-empty strings, got {list(value)!r}")
