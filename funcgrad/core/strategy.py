"""The credit-assignment strategy interface: optax's shape, sans-I/O.

A :class:`Strategy` is a small value holding two functions::

    s0 = strategy.init(state)
    program = strategy.update(results, state, s0, context)   # a generator (an effect program)
    update, s1 = drive(program)                              # the driver performs its effects
    new_state = apply_updates(state, update.values)

``results`` are the :class:`~funcgrad.core.run.Result` values (trace + loss) of a
training minibatch. ``update`` never calls an engine: it yields batches of effects
(:mod:`funcgrad.core.effects`: critic/optimizer calls, validation minibatches, reruns),
receives their answers, and returns ``(Update, S)``. So a strategy is a
deterministic function of its inputs and the answers it is given. ``S`` is explicit
and a JSON value (see :mod:`funcgrad.core.values`) or built of the typed state values of
:mod:`funcgrad.core.strategy_state`, random-stream position included,
so runs checkpoint and resume. ``context`` carries what the training loop knows
(step, the run's seed, proposals rejected earlier in this step, accepted history).
Built-in strategies live in :mod:`funcgrad.strategies` and use only the public API.

>>> from funcgrad.core.effects import run_program
>>> def idle_update(results, state, s, context):
...     return Update(), s
...     yield  # a program that asks for nothing
>>> idle = Strategy("idle", init=lambda state: None, update=idle_update)
>>> run_program(idle.update((), None, idle.init(None), StepContext()), respond=None)
(Update(values=FrozenDict({}), notes=(), gradients=(), candidates=()), None)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from funcgrad.core.backward import Candidate, Gradient
from funcgrad.core.errors import ConfigError, StrategyError
from funcgrad.core.state import PromptState
from funcgrad.core.strategy_state import freeze_state
from funcgrad.core.values import FrozenDict, Vocabulary, freeze, one_of



class NoteStatus(Vocabulary):
    """What a :class:`Note` says about its param: a value was ``proposed``, or ``no_update``."""

    PROPOSED = "proposed"
    NO_UPDATE = "no_update"


K = TypeVar("K")


def _frozen_text_map(value) -> FrozenDict:
    return FrozenDict({str(k): str(v) for k, v in dict(value).items()})


@attrs.frozen
class Note:
    """Why a strategy did or did not propose a value for ``param`` ("" = the whole step).

    ``status`` is a :class:`NoteStatus`: ``proposed`` or ``no_update``; another value
    is a StrategyError listing them.

    >>> Note("system", "no_update", "optimizer output had no <VALUE> tags").status == "no_update"
    True
    >>> Note("system", "rejected")
    Traceback (most recent call last):
    ...
    funcgrad.core.errors.StrategyError: note status 'rejected' is not one of: proposed, no_update
    """

    param: str
    status: NoteStatus = attrs.field(converter=one_of(NoteStatus, "note status", StrategyError))
    reason: str = ""


@attrs.frozen
class Update:
    """Proposed new text per param (relative to the state passed to ``update``), notes, and credit.

    An empty ``values`` is a legal "no update"; ``notes`` say why. ``gradients`` and
    ``candidates`` (:mod:`funcgrad.core.backward`) are the strategy's account of where
    credit went; the training loop records them with the calls in the step trace.
    """

    values: FrozenDict = attrs.field(factory=FrozenDict, converter=_frozen_text_map)
    notes: tuple[Note, ...] = attrs.field(default=(), converter=tuple)
    gradients: tuple[Gradient, ...] = attrs.field(default=(), converter=tuple)
    candidates: tuple[Candidate, ...] = attrs.field(default=(), converter=tuple)


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


@attrs.frozen
class StepContext:
    """What the training loop tells a strategy about the current step.

    ``step`` (0-based) and ``seed`` (the run's seed: every random stream of a
    strategy derives from it, with the step); ``attempt``: how many proposals of
    this step were rejected so far; ``rejected``: those proposals (the next one
    should differ); ``history``: accepted values with their validation scores, best
    first; ``steps_since_improvement``; ``labels``: the task's label set
    (:attr:`funcgrad.core.task.Task.labels`, empty when it declares none);
    ``train_ids``: the ids of the training split in order, which a
    :class:`~funcgrad.core.effects.Rerun` may name to run beyond the step's minibatch.

    >>> StepContext(step=2, seed=7).attempt
    0
    """

    step: int = 0
    seed: int = 0
    rejected: tuple[Attempt, ...] = attrs.field(default=(), converter=tuple)
    history: tuple[Attempt, ...] = attrs.field(default=(), converter=tuple)
    steps_since_improvement: int = 0
    labels: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    train_ids: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @property
    def attempt(self) -> int:
        return len(self.rejected)


UpdateFn = Callable[[Sequence[Any], PromptState, Any, StepContext], Any]


def _knobs_data(knobs: Any) -> FrozenDict:
    if knobs is None:
        return FrozenDict()
    if isinstance(knobs, Mapping):
        return freeze(knobs, where="strategy knobs")
    if attrs.has(type(knobs)):
        return freeze(attrs.asdict(knobs, recurse=True), where="strategy knobs")
    raise StrategyError(f"knobs must be an attrs value or a mapping, got {type(knobs).__name__}")


@attrs.frozen
class Strategy:
    """A credit-assignment strategy: ``init(state) -> S`` and ``update(results, state, S, context)``.

    ``update`` returns an effect program (a generator) whose result is
    ``(Update, S)``. ``knobs`` is the frozen, validated value of its settings;
    ``config`` is their JSON form (for reports, checkpoints and comparisons).
    """

    name: str
    init: Callable[[PromptState], Any]
    update: UpdateFn
    knobs: Any = None

    @property
    def config(self) -> FrozenDict:
        """The knobs as a JSON value.

        >>> Strategy("s", lambda s: None, lambda *a: None, {"k": 1}).config
        FrozenDict({'k': 1})
        """
        return _knobs_data(self.knobs)


def make_knobs(cls: type[K], strategy: str, values: Mapping[str, Any]) -> K:
    """Build the knobs value ``cls(**values)``; unknown or invalid knobs are one ConfigError naming them.

    >>> @attrs.frozen
    ... class Knobs:
    ...     k: int = attrs.field(default=5, validator=attrs.validators.instance_of(int))
    >>> make_knobs(Knobs, "mine", {"k": 3}).k
    3
    >>> make_knobs(Knobs, "mine", {"kk": 3})
    Traceback (most recent call last):
    ...
    funcgrad.core.errors.ConfigError: strategy 'mine' has no knob 'kk'; its knobs are: k
    """
    names = [f.name for f in attrs.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        which = ", ".join(repr(k) for k in unknown)
        raise ConfigError(f"strategy {strategy!r} has no knob{'s' if len(unknown) > 1 else ''} {which}; "
                          f"its knobs are: {', '.join(names)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # attrs' type check puts its message first, then the attribute
        raise ConfigError(f"strategy {strategy!r}: {exc.args[0] if exc.args else exc}") from None


def check_result(value: Any, strategy: str) -> tuple[Update, Any]:
    """``value`` if it is an ``(Update, S)`` pair with a JSON ``S``, else a StrategyError naming ``strategy``.

    >>> check_result(({"sys": "x"}, None), "mine")
    Traceback (most recent call last):
    ...
    funcgrad.core.errors.StrategyError: strategy 'mine' returned ({'sys': 'x'}, None); update must return (Update, S) with S a JSON value
    """
    ok = isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Update)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 120 else repr(value)[:117] + "..."
        raise StrategyError(f"strategy {strategy!r} returned {shown}; update must return (Update, S) with S a JSON value")
    try:
        s = freeze_state(value[1], where=f"state of strategy {strategy!r}")
    except Exception as exc:
        raise StrategyError(str(exc)) from None
    return value[0], s
