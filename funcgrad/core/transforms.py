"""Graph transformations: pure functions on states and traces.

Each returns a new value and leaves its argument unchanged; each keeps an invariant
that tests/test_transforms.py checks with Hypothesis:

- :func:`split_param` keeps every node's rendered prompt identical;
- :func:`add_peer` with an empty param keeps every rendered prompt identical;
- :func:`freeze_params` / :func:`unfreeze_params` change only trainable flags;
- :func:`rename_param` keeps state and trace consistent (same text, same readers);
- :func:`add_skip`, :func:`prune`, :func:`subgraph` return traces that pass
  :func:`~funcgrad.core.trace.check_trace`;
- :func:`subgraph` and :func:`prune` follow both kinds of edge: they keep every record
  a kept record depends on through data (``inputs``) or control (the reads made before
  it was created), so a record whose value decided a branch or a loop's stop is never
  dropped while anything after the decision is kept, and every kept record's
  :func:`~funcgrad.core.trace.control_reads` stay the same.

>>> from funcgrad.core.state import Param, PromptState
>>> s = split_param(PromptState.of(sys=Param("Count.\\n\\nAnswer: <n>")), "sys", [("instruction", "Count."), ("format", "Answer: <n>")])
>>> s.names, s.render(["sys"])
(('sys.instruction', 'sys.format'), 'Count.\\n\\nAnswer: <n>')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from funcgrad.core.errors import StateError, TraceError
from funcgrad.core.state import PEER_SEPARATOR, PARAM_KINDS, Param, PromptState
from funcgrad.core.trace import Trace, ancestors, check_trace, control_cone, control_reads


def split_param(state: PromptState, name: str, pieces: Sequence[tuple[str, str]]) -> PromptState:
    """Split param ``name`` into peer params, one per ``(kind, text)`` piece.

    The texts joined by a blank line must equal the original value, and none may be
    empty (an empty param renders as nothing), so rendering is unchanged. The peers are named ``name.kind`` (``name.kind2`` for a repeated
    kind), take the original's place, role and trainable flag, and ``name`` becomes a
    group of them (groups that contained ``name`` now contain the peers).
    """
    original = state[name]
    if len(pieces) < 2:
        raise StateError(f"split_param({name!r}) needs at least two pieces, got {len(pieces)}")
    for kind, text in pieces:
        if kind not in PARAM_KINDS:
            raise StateError(f"piece kind {kind!r} is not one of {', '.join(PARAM_KINDS)}")
        if not text:
            raise StateError(f"split_param({name!r}): a piece is empty; an empty param renders as nothing, "
                             "so rendering would change (give every piece some text)")
    joined = PEER_SEPARATOR.join(text for _, text in pieces)
    if joined != original.value:
        raise StateError(
            f"the pieces of {name!r} joined by a blank line must equal its current text, so rendering "
            f"stays the same; they differ (joined {len(joined)} chars vs {len(original.value)})"
        )
    counts: dict[str, int] = {}
    peers = []
    for kind, text in pieces:
        counts[kind] = counts.get(kind, 0) + 1
        peer = f"{name}.{kind}" if counts[kind] == 1 else f"{name}.{kind}{counts[kind]}"
        if peer in state:
            raise StateError(f"cannot split {name!r}: a parameter named {peer!r} already exists")
        peers.append((peer, Param(text, role=original.role, trainable=original.trainable, kind=kind)))
    params = []
    for n, p in state.params:
        params.extend(peers if n == name else [(n, p)])
    peer_names = tuple(n for n, _ in peers)
    groups = [(g, tuple(x for m in members for x in (peer_names if m == name else (m,)))) for g, members in state.groups]
    return PromptState(params, groups + [(name, peer_names)])


def add_peer(state: PromptState, group: str, name: str, param: Param) -> PromptState:
    """Add ``param`` as a new peer at the end of ``group``; the original is left unchanged.

    The usual use is an empty ``demos`` peer a strategy can fill: an empty param
    renders as nothing, so every node's prompt stays exactly as it was until then.
    An unknown group or a name already taken is a StateError.

    >>> from funcgrad.core.state import Param, PromptState
    >>> s = PromptState(params={"i": Param("Count.")}, groups={"sys": ("i",)})
    >>> t = add_peer(s, "sys", "demos", Param("", kind="demos"))
    >>> t.resolve("sys"), t.render(["sys"]) == s.render(["sys"])
    (('i', 'demos'), True)
    """
    groups = dict(state.groups)
    if group not in groups:
        known = ", ".join(groups) or "(none)"
        raise StateError(f"add_peer: {group!r} is not a group of this state; its groups are: {known}")
    if name in state or name in groups:
        raise StateError(f"add_peer: a parameter or group named {name!r} already exists; choose another name")
    params = tuple(state.params) + ((name, param),)
    return PromptState(params, tuple((g, members + (name,) if g == group else members) for g, members in state.groups))


def _set_trainable(state: PromptState, names: Iterable[str], flag: bool) -> PromptState:
    leaves = {leaf for n in names for leaf in state.resolve(n)}
    return attrs.evolve(
        state, params=tuple((n, attrs.evolve(p, trainable=flag) if n in leaves else p) for n, p in state.params)
    )


def freeze_params(state: PromptState, names: Iterable[str]) -> PromptState:
    """Mark params (or whole groups) as not trainable; their text can then not be updated.

    >>> freeze_params(PromptState.of(a=Param("x")), ["a"])["a"].trainable
    False
    """
    return _set_trainable(state, names, False)


def unfreeze_params(state: PromptState, names: Iterable[str]) -> PromptState:
    """Mark params (or whole groups) as trainable."""
    return _set_trainable(state, names, True)


def rename_param(state: PromptState, trace: Trace, old: str, new: str) -> tuple[PromptState, Trace]:
    """Rename param ``old`` to ``new`` in the state (and its groups) and in the trace's records.

    >>> s, t = rename_param(PromptState.of(a=Param("x")), Trace(), "a", "b")
    >>> s.names
    ('b',)
    """
    state[old]
    if new in state or any(g == new for g, _ in state.groups):
        raise StateError(f"cannot rename {old!r} to {new!r}: that name is already used")
    params = tuple((new if n == old else n, p) for n, p in state.params)
    groups = tuple((g, tuple(new if m == old else m for m in members)) for g, members in state.groups)
    records = tuple(
        attrs.evolve(r, params=tuple(new if p == old else p for p in r.params)) if old in r.params else r
        for r in trace.records
    )
    return PromptState(params, groups), attrs.evolve(trace, records=records)


def add_skip(trace: Trace, node: str) -> Trace:
    """Return ``trace`` with a skip connection from the loss to ``node`` (idempotent).

    >>> from funcgrad.core.trace import Record
    >>> add_skip(Trace((Record(0, "x", "input"),)), "x").skips
    ('x',)
    """
    if node not in trace.nodes:
        raise TraceError(f"cannot add a skip connection to {node!r}: no record of that node; nodes are {list(trace.nodes)}")
    if node in trace.skips:
        return trace
    return attrs.evolve(trace, skips=trace.skips + (node,))


def subgraph(trace: Trace, ids: Iterable[int]) -> Trace:
    """The records ``ids`` plus everything they depend on, in the original order and ids.

    A record depends on its data inputs and on the reads made for control before it
    was created (:func:`~funcgrad.core.trace.control_reads`), transitively. The control
    reads of a dropped record move to the next kept one, so every kept record's
    ``control_reads`` stay the same; ``Trace.control`` keeps the kept ids (it loses the
    reads made after the last kept record that nothing kept depends on). Skips to nodes
    no longer present are dropped; ``output`` is kept if its record is.

    >>> from funcgrad.core.trace import Record
    >>> t = Trace((Record(0, "x", "input"), Record(1, "judge", "llm", inputs=(0,), input_names=("q",)),
    ...            Record(2, "side", "fn", control=(1,)), Record(3, "f", "fn", inputs=(0,), input_names=("a",))),
    ...           output=3, control=(1,))
    >>> s = subgraph(t, [3])
    >>> [(r.id, r.control) for r in s.records], s.control
    ([(0, ()), (1, ()), (3, (1,))], (1,))
    """
    keep: set[int] = set()
    for rid in ids:
        keep.add(rid)
        keep.update(ancestors(trace, rid))
    if keep:
        for rid in control_reads(trace, max(keep)):
            keep.add(rid)
            keep.update(ancestors(trace, rid))
    records = []
    carried: list[int] = []  # control of dropped records, for the next kept one
    for r in trace.records:
        if r.id not in keep:
            carried.extend(r.control)
            continue
        if carried:  # all kept: they were read before r was created
            r = attrs.evolve(r, control=(*carried, *r.control))
            carried = []
        records.append(r)
    nodes = {r.node for r in records}
    return check_trace(
        attrs.evolve(
            trace,
            records=tuple(records),
            skips=tuple(s for s in trace.skips if s in nodes),
            output=trace.output if trace.output in keep else None,
            control=tuple(c for c in trace.control if c in keep),
        )
    )


def prune(trace: Trace) -> Trace:
    """Drop the records that neither reach the loss (or, in an unscored trace, the output)
    nor decided control flow: keeps :func:`~funcgrad.core.trace.control_cone`.

    >>> from funcgrad.core.trace import Record
    >>> t = Trace((Record(0, "x", "input"), Record(1, "unused", "fn"), Record(2, "f", "fn", inputs=(0,), input_names=("a",))), output=2)
    >>> [r.id for r in prune(t).records]
    [0, 2]
    >>> [r.id for r in prune(attrs.evolve(t, control=(1,))).records]  # record 1 decided a branch
    [0, 1, 2]
    """
    if trace.loss is None and trace.output is None:
        raise TraceError("cannot prune a trace with neither a loss record nor an output")
    return subgraph(trace, control_cone(trace))
