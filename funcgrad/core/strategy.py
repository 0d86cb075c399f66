"""The credit-assignment strategy interface, in the shape of optax's GradientTransformation.

A :class:`Strategy` is a small value holding two functions::

    s0 = strategy.init(state)
    update, s1 = strategy.update(results, state, s0, engine=critic, evaluate=evaluate, context=context)
    new_state = apply_updates(state, update.values)

``results`` are the :class:`~funcgrad.core.run.Result` values (trace + loss) of a
training minibatch. The strategy state ``S`` is explicit and must be a JSON value
(see :mod:`funcgrad.core.values`) so a run can be checkpointed and resumed; it includes
any random-stream position. ``engine`` is the backward/optimizer model (it may
differ from the task model). ``evaluate(state, seed)`` scores a state on a
validation minibatch chosen by ``seed``; ``context`` carries what the training loop
knows (step, rejected proposals of this step, past accepted values and scores).
Built-in strategies live in :mod:`funcgrad.strategies` and use only this public API.

>>> identity = Strategy("identity", init=lambda state: None,
...                     update=lambda results, state, s, **kw: (Update(), s))
>>> identity.update((), None, identity.init(None), engine=None, evaluate=None, context=None)
(Update(values=FrozenDict({}), notes=()), None)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from funcgrad.core.state import PromptState
from funcgrad.core.values import FrozenDict, freeze

NOTE_STATUSES = ("proposed", "no_update")


def _frozen_text_map(value) -> FrozenDict:
    return FrozenDict({str(k): str(v) for k, v in dict(value).items()})


@attrs.frozen
class Note:
    """Why a strategy did or did not propose a value for ``param`` ("" = the whole step).

    >>> Note("system", "no_update", "optimizer output had no <VALUE> tags").status
    'no_update'
    """

    param: str
    status: str = attrs.field(validator=attrs.validators.in_(NOTE_STATUSES))
    reason: str = ""


@attrs.frozen
class Update:
    """Proposed new text per param (relative to the state passed to ``update``) and notes.

    An empty ``values`` is a legal "no update"; ``notes`` say why.
    """

    values: FrozenDict = attrs.field(factory=FrozenDict, converter=_frozen_text_map)
    notes: tuple[Note, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class Attempt:
    """A past proposal and its outcome, as shown to a strategy.

    ``score`` is the validation score it reached (None if never validated),
    ``accepted`` whether the loop kept it, ``reason`` why it was rejected.
    """

    values: FrozenDict = attrs.field(converter=_frozen_text_map)
    score: float | None = None
    accepted: bool = False
    reason: str = ""


class Evaluate(Protocol):
    """``evaluate(state, seed) -> float``: mean score of ``state`` on a validation minibatch drawn with ``seed``."""

    def __call__(self, state: PromptState, seed: int) -> float: ...


@attrs.frozen
class StepContext:
    """What the training loop tells a strategy about the current step.

    ``rejected``: proposals rejected earlier in this step (the next one should differ);
    ``history``: accepted values with their validation scores, best first;
    ``rerun(state)``: run the current training minibatch under another state and
    return its results (used by wrappers that step from a past state).
    """

    step: int = 0
    seed: int = 0
    rejected: tuple[Attempt, ...] = attrs.field(default=(), converter=tuple)
    history: tuple[Attempt, ...] = attrs.field(default=(), converter=tuple)
    steps_since_improvement: int = 0
    rerun: Callable[[PromptState], Sequence[Any]] | None = None


class UpdateFn(Protocol):
    def __call__(
        self, results: Sequence[Any], state: PromptState, strategy_state: Any, *,
        engine: Any, evaluate: Evaluate, context: StepContext,
    ) -> tuple[Update, Any]: ...


@attrs.frozen
class Strategy:
    """A credit-assignment strategy: ``init(state) -> S`` and ``update(...) -> (Update, S)``.

    ``config`` records the knobs it was built with (JSON), for reports and checkpoints.
    """

    name: str
    init: Callable[[PromptState], Any]
    update: UpdateFn
    config: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)
