"""Typed strategy state: the frozen values a strategy keeps in ``S`` between steps.

optax gives every transform a typed state value; these are the ones funcgrad's
strategies share, and a user's own strategy may use them too. Each is a frozen attrs
value registered with :mod:`funcgrad.core.serialize`, so a state built from them
checkpoints and resumes exactly (``loads(dumps(s)) == s``):

- :class:`Stats`: steps taken and counters (calls per role, rejections per guard,
  events); counters add up with ``+``;
- :class:`PoolEntry` / :class:`Pool`: candidate prompt states with their scores per
  validation example (a Pareto pool);
- :class:`HistoryEntry` / :class:`History` / :class:`Pick`: past prompt states with a
  running mean score, the random stream's position and the step's pick (a wrapper's
  state, holding the wrapped strategy's state in ``inner``);
- :class:`Demo` / :class:`DemoPool`: demonstrations harvested from traces.

Checkpoints written before these types held ``S`` as plain JSON objects;
:func:`read_state` turns such an object into the typed value (or raises one clear
:class:`~funcgrad.core.errors.StrategyError`), so old runs resume.

>>> s = Stats() + Stats(rejections={"too_long": 1}) + Stats(rejections={"too_long": 1})
>>> dict(s.rejections)
{'too_long': 2}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from funcgrad.core.errors import FuncgradError, StrategyError
from funcgrad.core.values import FrozenDict, freeze


def _counts(value: Mapping[str, int]) -> FrozenDict:
    return FrozenDict({str(k): int(v) for k, v in dict(value).items()})


def _texts(value: Mapping[str, str]) -> FrozenDict:
    return FrozenDict({str(k): str(v) for k, v in dict(value).items()})


def _added(a: FrozenDict, b: FrozenDict) -> FrozenDict:
    out = dict(a)
    for k, n in b.items():
        out[k] = out.get(k, 0) + n
    return FrozenDict(out)


@attrs.frozen
class Stats:
    """Steps taken and counters: ``calls`` per request role, ``rejections`` per guard, ``events`` by name.

    ``a + b`` adds every counter (and the steps), so a strategy step returns the
    counts it made and the update sums them.

    >>> (Stats(steps=1, calls={"optimizer": 1}) + Stats(calls={"optimizer": 2})).calls["optimizer"]
    3
    """

    steps: int = 0
    calls: FrozenDict = attrs.field(factory=FrozenDict, converter=_counts)
    rejections: FrozenDict = attrs.field(factory=FrozenDict, converter=_counts)
    events: FrozenDict = attrs.field(factory=FrozenDict, converter=_counts)

    def __add__(self, other: Stats) -> Stats:
        return Stats(self.steps + other.steps, _added(self.calls, other.calls),
                     _added(self.rejections, other.rejections), _added(self.events, other.events))

    @classmethod
    def previous(cls, data: Mapping) -> Stats:
        """The counters of a previous-format state (a JSON object with ``steps`` and ``events``)."""
        return cls(data["steps"], data.get("calls", {}), data.get("rejections", {}), data["events"])


@attrs.frozen
class PoolEntry:
    """A candidate: the trainable ``values`` of a prompt state, its ``scores`` per example id (None: not yet
    scored) and the index of the entry it was derived from (``parent``).

    >>> PoolEntry({"sys": "Count."}).scores is None
    True
    """

    values: FrozenDict = attrs.field(converter=_texts)
    scores: FrozenDict | None = attrs.field(default=None, converter=attrs.converters.optional(freeze))
    parent: int | None = None

    @property
    def mean(self) -> float:
        """The mean score (0.0 while unscored).

        >>> PoolEntry({}, {"a": 1.0, "b": 0.0}).mean
        0.5
        """
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0


@attrs.frozen
class Pool:
    """A pool of candidates, a round-robin ``cursor`` over components, and the values ``proposed`` so far."""

    entries: tuple[PoolEntry, ...] = attrs.field(converter=tuple)
    cursor: int = 0
    proposed: tuple[FrozenDict, ...] = attrs.field(default=(), converter=lambda v: tuple(_texts(x) for x in v))
    stats: Stats = Stats()

    @classmethod
    def previous(cls, data: Mapping) -> Pool:
        entries = [PoolEntry(e["values"], e["scores"], e["parent"]) for e in data["pool"]]
        return cls(entries, data["component"], data["proposed"], Stats.previous(data))


@attrs.frozen
class HistoryEntry:
    """A past prompt state's trainable ``values`` with the running ``mean`` of its scores over ``n`` evaluations."""

    values: FrozenDict = attrs.field(converter=_texts)
    mean: float | None = None
    n: int = 0


@attrs.frozen
class Pick:
    """The state chosen at ``step`` (its ``values``), the history indices it was chosen among, and their eval seed."""

    step: int
    values: FrozenDict = attrs.field(converter=_texts)
    candidates: tuple[int, ...] = attrs.field(converter=tuple)
    seed: int


@attrs.frozen
class History:
    """Past prompt states, the random stream's ``(stream_step, stream_position)``, this step's pick, and the
    wrapped strategy's state (``inner``, any state value)."""

    entries: tuple[HistoryEntry, ...] = attrs.field(converter=tuple)
    stream_step: int | None = None
    stream_position: int = 0
    pick: Pick | None = None
    inner: Any = None
    stats: Stats = Stats()

    @classmethod
    def previous(cls, data: Mapping) -> History:
        entries = [HistoryEntry(h["values"], h["mean"], h["n"]) for h in data["history"]]
        p = data["pick"]
        pick = Pick(p["step"], p["values"], p["candidates"], p["seed"]) if p else None
        return cls(entries, data["rng"]["step"], data["rng"]["position"], pick, data["inner"], Stats(events=data["events"]))


@attrs.frozen
class Demo:
    """One demonstration: the ``input`` a ``node`` received on call ``call`` of example ``example_id`` and its
    ``output``, for the demos param ``param``, on an example that scored ``score``.

    ``source`` says how it was found: ``plain`` (the node's own greedy run),
    ``resample N`` (the N-th sample of a run that failed greedily) or
    ``rationalized`` (a run given a hint from the loss; the hint is never part of the demo).
    """

    example_id: str
    param: str
    node: str
    call: int
    input: str
    output: str
    score: float
    source: str = "plain"

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What makes two demonstrations the same: ``(example_id, param, node, call)``."""
        return (self.example_id, self.param, self.node, self.call)


@attrs.frozen
class DemoPool:
    """Harvested demonstrations (oldest first), counters, and the prompts whose training split was scanned.

    ``scanned`` holds a signature of each prompt state under which the whole
    training split was already run for demonstrations (so a scan is not repeated).
    """

    demos: tuple[Demo, ...] = attrs.field(default=(), converter=tuple)
    stats: Stats = Stats()
    scanned: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @classmethod
    def previous(cls, data: Mapping) -> DemoPool:
        demos = [Demo(d["id"], d["param"], d["node"], d["call"], d["input"], d["output"], d["score"]) for d in data["pool"]]
        return cls(demos, Stats.previous(data))


def read_state(s: Any, cls: type, strategy: str) -> Any:
    """``s`` as a ``cls`` value: ``s`` itself, read from the previous checkpoint format (a JSON object), or
    ``cls()`` for None.

    >>> read_state({"steps": 2, "calls": {"optimizer": 3}, "rejections": {}, "events": {}}, Stats, "mine").steps
    2
    >>> read_state({"pool": 1}, Stats, "mine")
    Traceback (most recent call last):
    ...
    funcgrad.core.errors.StrategyError: strategy 'mine': its state is neither a Stats nor a state of the previous checkpoint format ('steps'...); start the run afresh instead of resuming
    """
    if isinstance(s, cls):
        return s
    try:
        if s is None:  # a state never initialised: the empty value, where the type has one
            return cls()
        if isinstance(s, Mapping) and hasattr(cls, "previous"):
            return cls.previous(s)
        raise TypeError(f"got {type(s).__name__}")
    except (KeyError, TypeError, ValueError, AttributeError, FuncgradError) as exc:
        why = str(exc).replace("\n", " ")[:60]
        raise StrategyError(f"strategy {strategy!r}: its state is neither a {cls.__name__} nor a state of the previous "
                            f"checkpoint format ({why}...); start the run afresh instead of resuming") from None


def rejection_counts(state: Any) -> dict[str, int]:
    """Rejections per guard found anywhere in a strategy state (wrappers and parts included).

    Reads the typed values of this module and previous-format JSON states alike.

    >>> rejection_counts((Stats(rejections={"tag_leak": 2}), History((), inner=Stats(rejections={"tag_leak": 1}))))
    {'tag_leak': 3}
    >>> rejection_counts({"rejections": {"tag_leak": 2}, "inner": {"rejections": {"tag_leak": 1}}})
    {'tag_leak': 3}
    """
    total: dict[str, int] = {}

    def walk(s):
        if isinstance(s, Stats):
            s = {"rejections": s.rejections}
        if attrs.has(type(s)):
            for field in attrs.fields(type(s)):
                walk(getattr(s, field.name))
        elif isinstance(s, Mapping):
            for k, v in s.items():
                if k == "rejections" and isinstance(v, Mapping):
                    for g, n in v.items():
                        total[g] = total.get(g, 0) + int(n)
                else:
                    walk(v)
        elif isinstance(s, tuple | list):
            for v in s:
                walk(v)

    walk(state)
    return total


STATE_TYPES = (Stats, PoolEntry, Pool, HistoryEntry, Pick, History, Demo, DemoPool)


def freeze_state(value: Any, *, where: str = "strategy state") -> Any:
    """``value`` as an immutable strategy state: typed state values kept, JSON data frozen (see ``freeze``).

    >>> freeze_state([Stats(), {"a": [1]}])
    (Stats(steps=0, calls=FrozenDict({}), rejections=FrozenDict({}), events=FrozenDict({})), FrozenDict({'a': (1,)}))
    """
    if isinstance(value, STATE_TYPES):
        for field in attrs.fields(type(value)):
            freeze_state(getattr(value, field.name), where=f"{where}.{field.name}")
        return value
    if isinstance(value, tuple | list):
        return tuple(freeze_state(v, where=f"{where}[{i}]") for i, v in enumerate(value))
    return freeze(value, where=where)
