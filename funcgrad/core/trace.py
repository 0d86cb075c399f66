"""Traces: the immutable record of one pipeline run.

A :class:`Trace` is a tuple of :class:`Record` in single-assignment topological order
(the shape of a jaxpr): each record has an integer id, and its inputs only reference
earlier ids. Repeated calls of the same node get increasing ``call_index`` values.

Two kinds of edges: a record's ``inputs`` are its **data** edges (the Vars passed to
the node); its ``control`` are **control** edges, the earlier records whose values the
pipeline read (an ``if``, a loop's stop test) since the previous record was created.
A record depends on its data ancestors and on every read made before it was created
(:func:`control_reads`); the output depends on every read of the run
(``Trace.control``; :func:`control_cone` collects all of it).
:func:`ancestors`, :func:`descendants` and :func:`consumers` follow data edges only.

>>> t = Trace((Record(0, "x", "input", output="hi"), Record(1, "echo", "fn", inputs=(0,), input_names=("s",), output="hi")))
>>> check_trace(t) is t, [r.id for r in reverse_topological(t)]
(True, [1, 0])
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from funcgrad.core.calls import Request, Usage
from funcgrad.core.errors import TraceError
from funcgrad.core.values import FrozenDict, Vocabulary, freeze, one_of


class RecordKind(Vocabulary):
    """What a record is: the pipeline ``input`` (record 0), an ``llm`` node call, a Python
    ``fn`` node call, a ``retrieve`` (retriever) call, or the ``loss`` (last, at most one)."""

    INPUT = "input"
    LLM = "llm"
    FN = "fn"
    RETRIEVE = "retrieve"
    LOSS = "loss"


def _frozen_json(value):
    return freeze(value, where="record field")


def _frozen_consts(value):
    return freeze(value if value is not None else {}, where="record consts")


def _request(value):
    if value is None or isinstance(value, Request):
        return value
    raise TraceError(
        f"Record.request must be a funcgrad.Request or None, got {type(value).__name__}; "
        "constant arguments (and a loss record's target) belong in Record.consts"
    )


def _usage(value):
    if value is None:
        return Usage()
    return value


@attrs.frozen
class Record:
    """One node call: ``output = node(inputs..., **consts)`` reading ``params``.

    ``kind`` is a :class:`RecordKind` (``input``, ``llm``, ``fn``, ``retrieve`` or
    ``loss``; a plain string is converted, an unknown one is a TraceError).

    ``inputs``/``input_names`` are the Var arguments (the edges); ``consts`` maps the
    name of every other argument to its value (``facts='(none yet)'``; a loss record's
    ``target``), in call order. ``request`` is the :class:`~funcgrad.core.calls.Request`
    the call sent to the engine (LLM records, and the loss record of a model loss such
    as a judge; None otherwise), ``usage`` the tokens and latency, ``error`` a message
    if the call failed. ``output`` and ``consts`` are immutable JSON (see
    :mod:`funcgrad.core.values`). ``control`` holds the ids of the records whose values
    the pipeline read for control flow (an ``if``, a loop's stop test) since the previous
    record was created: the control edges. This record, and every later one, depends on
    them (:func:`control_reads`).

    >>> r = Record(1, "answer", "llm", request=Request(messages=(("system", "Be brief."), ("user", "2+2?"))))
    >>> r.user_text, Record(0, "x", "input").user_text
    ('2+2?', '')
    """

    id: int
    node: str
    kind: RecordKind = attrs.field(converter=one_of(RecordKind, "record kind", TraceError))
    call_index: int = 0
    inputs: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    input_names: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    consts: FrozenDict = attrs.field(factory=FrozenDict, converter=_frozen_consts)
    params: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    request: Request | None = attrs.field(default=None, converter=_request)
    output: object = attrs.field(default=None, converter=_frozen_json)
    usage: Usage = attrs.field(default=Usage(), converter=_usage)
    error: str | None = None
    control: tuple[int, ...] = attrs.field(default=(), converter=tuple)

    @property
    def user_text(self) -> str:
        """The user message(s) the call sent, joined by newlines: the node's rendered input ("" without a request)."""
        if self.request is None:
            return ""
        return "\n".join(m.content for m in self.request.messages if m.role == "user")


@attrs.frozen
class Trace:
    """The records of one run, in topological order, plus run-level facts.

    ``example_id`` names the example; ``skips`` lists nodes that receive the loss
    feedback directly (skip connections); ``output`` is the id of the record holding
    the pipeline's final output (None if the run failed before producing one);
    ``control`` lists every record the pipeline read for control flow, in order of first
    read: the output depends on each of them.
    """

    records: tuple[Record, ...] = attrs.field(default=(), converter=tuple)
    example_id: str = ""
    skips: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    output: int | None = None
    control: tuple[int, ...] = attrs.field(default=(), converter=tuple)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, record_id: int) -> Record:
        for r in self.records:
            if r.id == record_id:
                return r
        raise TraceError(f"trace has no record with id {record_id}; ids are {[r.id for r in self.records]}")

    @property
    def loss(self) -> Record | None:
        """The loss record, if the run was scored."""
        return next((r for r in self.records if r.kind == "loss"), None)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Distinct node names in order of first call."""
        return tuple(dict.fromkeys(r.node for r in self.records))

    def _repr_html_(self) -> str:
        """The records as an HTML table, text escaped (Jupyter shows it; :func:`funcgrad.core.html.trace_html`)."""
        from funcgrad.core.html import trace_html
        return trace_html(self)


def check_trace(trace: Trace) -> Trace:
    """Return ``trace`` if it is well formed, else raise TraceError saying what is wrong.

    Checks: ids strictly increase; inputs name earlier records of this trace and have
    one name each (a Record's kind is always a known :class:`RecordKind`); a node has one kind and strictly increasing call
    indices; at most one loss record, and it is last; skips name nodes in the trace; output names a record.
    Control edges: a record's ``control`` names earlier records only, and no id is in
    two records' ``control`` (a read is recorded once, on the next record created);
    ``Trace.control`` names records of the trace, once each, and holds every id of every
    record's ``control`` (it may hold more: reads made after the last record).
    """
    if not isinstance(trace, Trace):
        raise TraceError(f"expected a Trace, got {type(trace).__name__}")
    seen: set[int] = set()
    last_id = None
    node_kind: dict[str, RecordKind] = {}
    last_call: dict[str, int] = {}
    read_by: dict[int, int] = {}  # control id -> the record whose control holds it
    for i, r in enumerate(trace.records):
        if not isinstance(r, Record):
            raise TraceError(f"trace.records[{i}] is a {type(r).__name__}, not a Record")
        where = f"record {r.id} ({r.node!r})"
        if not isinstance(r.id, int) or isinstance(r.id, bool) or r.id < 0:
            raise TraceError(f"{where}: id must be a non-negative int")
        if last_id is not None and r.id <= last_id:
            raise TraceError(f"{where}: ids must strictly increase, but it follows id {last_id}")
        if not r.node:
            raise TraceError(f"record {r.id}: node name is empty")
        if len(r.inputs) != len(r.input_names):
            raise TraceError(f"{where}: {len(r.inputs)} inputs but {len(r.input_names)} input names")
        for inp in r.inputs:
            if inp not in seen:
                raise TraceError(f"{where}: input {inp} is not an earlier record of this trace")
        if node_kind.setdefault(r.node, r.kind) != r.kind:
            raise TraceError(f"{where}: node is {r.kind.value!r} here but {node_kind[r.node].value!r} earlier")
        if r.call_index < 0 or (r.node in last_call and r.call_index <= last_call[r.node]):
            raise TraceError(
                f"{where}: call_index {r.call_index} must be >= 0 and exceed the node's previous "
                f"call_index {last_call.get(r.node)}"
            )
        for c in r.control:
            if c not in seen:
                raise TraceError(f"{where}: control {c} is not an earlier record of this trace")
            if c in read_by:
                raise TraceError(
                    f"{where}: control {c} is also in the control of record {read_by[c]}; "
                    "a read is recorded once, on the first record created after it"
                )
            read_by[c] = r.id
        if r.kind == "loss" and i != len(trace.records) - 1:
            raise TraceError(f"{where}: the loss record must be the last record")
        last_call[r.node] = r.call_index
        seen.add(r.id)
        last_id = r.id
    if trace.output is not None and trace.output not in seen:
        raise TraceError(f"trace.output is {trace.output}, which is not a record id of this trace")
    for node in trace.skips:
        if node not in node_kind:
            raise TraceError(f"skip connection to {node!r}, but no record of that node is in the trace")
    listed: set[int] = set()
    for c in trace.control:
        if c not in seen:
            raise TraceError(f"trace.control lists {c}, which is not a record id of this trace")
        if c in listed:
            raise TraceError(f"trace.control lists {c} twice; it lists each record read for control once")
        listed.add(c)
    for c, rid in read_by.items():
        if c not in listed:
            raise TraceError(
                f"record {rid} ({trace[rid].node!r}) has control {c}, but trace.control does not list {c}; "
                "trace.control must list every record read for control"
            )
    return trace


def reverse_topological(trace: Trace) -> tuple[Record, ...]:
    """Records from the last to the first: every consumer comes before its producers."""
    return tuple(reversed(trace.records))


def ancestors(trace: Trace, record_id: int) -> tuple[int, ...]:
    """Ids of the records ``record_id`` depends on through data edges (transitively), in trace order.

    Data only: the reads that decided whether the record was created at all are
    :func:`control_reads`; :func:`control_cone` follows both kinds of edge.

    >>> t = Trace((Record(0, "x", "input"), Record(1, "f", "fn", inputs=(0,), input_names=("a",))))
    >>> ancestors(t, 1)
    (0,)
    """
    found: set[int] = set()
    stack = list(trace[record_id].inputs)
    while stack:
        rid = stack.pop()
        if rid not in found:
            found.add(rid)
            stack.extend(trace[rid].inputs)
    return tuple(r.id for r in trace.records if r.id in found)


def descendants(trace: Trace, record_id: int) -> tuple[int, ...]:
    """Ids of the records that depend on ``record_id`` through data edges (transitively), in trace order."""
    trace[record_id]
    found = {record_id}
    out = []
    for r in trace.records:
        if any(i in found for i in r.inputs):
            found.add(r.id)
            out.append(r.id)
    return tuple(out)


def control_reads(trace: Trace, record_id: int) -> tuple[int, ...]:
    """Ids of the records read for control before record ``record_id`` was created, in order of reading.

    The union of the ``control`` of the records up to and including it: whether (and how)
    the record was created depended on each of them.

    >>> t = Trace((Record(0, "x", "input"), Record(1, "judge", "llm", inputs=(0,), input_names=("q",)),
    ...            Record(2, "fix", "llm", inputs=(0,), input_names=("q",), control=(1,)),
    ...            Record(3, "tidy", "fn", inputs=(2,), input_names=("a",))), output=3, control=(1,))
    >>> control_reads(t, 1), control_reads(t, 3)
    ((), (1,))
    """
    trace[record_id]
    read: list[int] = []
    for r in trace.records:
        read.extend(r.control)
        if r.id == record_id:
            break
    return tuple(dict.fromkeys(read))


def trailing_reads(trace: Trace) -> tuple[int, ...]:
    """Ids read for control after the last record was created: in ``Trace.control`` but on no record's ``control``.

    Such a read decided that the run called nothing more (a loop's last stop test).

    >>> t = Trace((Record(0, "x", "input"), Record(1, "review", "llm", inputs=(0,), input_names=("a",)),
    ...            Record(2, "fix", "llm", inputs=(0,), input_names=("a",), control=(1,)),
    ...            Record(3, "review", "llm", inputs=(2,), input_names=("a",))), output=2, control=(1, 3))
    >>> trailing_reads(t)
    (3,)
    """
    placed = {i for r in trace.records for i in r.control}
    return tuple(i for i in trace.control if i not in placed)


def control_cone(trace: Trace) -> tuple[int, ...]:
    """Ids of the records the result depends on through data or control edges, in trace order.

    The result is the loss record (the output when unscored): it, its data ancestors,
    every record in ``Trace.control`` and their data ancestors. The set is closed under
    both kinds of edge (a kept record's control reads are all in ``Trace.control``).
    It is what :func:`~funcgrad.core.transforms.prune` keeps.

    >>> t = Trace((Record(0, "x", "input"), Record(1, "judge", "llm", inputs=(0,), input_names=("q",)),
    ...            Record(2, "draft", "llm", inputs=(0,), input_names=("q",)), Record(3, "unused", "fn")),
    ...           output=2, control=(1,))
    >>> control_cone(t)
    (0, 1, 2)
    """
    target = trace.loss.id if trace.loss is not None else trace.output
    if target is None:
        raise TraceError("the trace has neither a loss record nor an output, so nothing depends on anything")
    keep = {target, *trace.control}
    for rid in tuple(keep):
        keep.update(ancestors(trace, rid))
    return tuple(r.id for r in trace.records if r.id in keep)


def consumers(trace: Trace, record_id: int) -> tuple[Record, ...]:
    """Records that take ``record_id`` directly as an input (a data edge), in call order."""
    return tuple(r for r in trace.records if record_id in r.inputs)


def readers(trace: Trace, param: str) -> tuple[Record, ...]:
    """Records that read the parameter ``param``, in call order."""
    return tuple(r for r in trace.records if param in r.params)


def params_read(traces: Iterable[Trace]) -> tuple[str, ...]:
    """Distinct parameter names read anywhere in ``traces``, in order of first read.

    Tells which parameters the graph actually reaches.
    """
    return tuple(dict.fromkeys(p for t in traces for r in t.records for p in r.params))
