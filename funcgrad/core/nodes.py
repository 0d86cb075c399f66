"""Node calls that record themselves: LLM nodes, function nodes and retrievers.

Inside :func:`funcgrad.core.run`, calling a node appends one :class:`~funcgrad.core.trace.Record`
to the run's trace and returns a :class:`Var` (the record id plus its value). Pass
Vars on to other nodes to draw edges (data edges). Reading a Var's value in the pipeline
itself (``.value``, ``bool(v)``, ``v == "OK"``, ``v["tool"]``, iteration...) is Python
control flow: the run records a **control edge**, so every record created afterwards,
and the output, depend on the record that was read (see docs/control-flow.md).

>>> from funcgrad.core import Param, PromptState, Response, run
>>> class Four:  # an engine: anything with complete(Request) -> Response
...     def complete(self, request):
...         return Response("4")
>>> answer = LLM("answer", system=("sys",), user="Q: {question}")
>>> def pipeline(prompts, x):
...     return answer(prompts, question=x)
>>> y, trace = run(pipeline, PromptState.of(sys=Param("Be brief.")), "2+2?", engine=Four())
>>> y, [r.kind for r in trace.records]
('4', ['input', 'llm'])
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from funcgrad.core.calls import ROLES, Engine, Message, Request
from funcgrad.core.errors import BudgetExceeded, CacheMiss, EngineUnavailable, FuncgradError, PipelineError, TraceError
from funcgrad.core.state import PromptState
from funcgrad.core.trace import Record, Trace
from funcgrad.core.values import check_text, freeze

# Errors that stop a whole run at once instead of failing one example: no other call can succeed.
FATAL_ERRORS = (BudgetExceeded, CacheMiss, EngineUnavailable)


@attrs.frozen(eq=False)
class Var:
    """The value a node call produced, tagged with the id of its trace record.

    Inside a run, reading the value (``.value``, truthiness, comparison, ``len``,
    iteration, ``in``, indexing) records a control edge from this record: the
    pipeline's later records and its output depend on it. Passing the Var to a node
    draws a data edge instead and reads nothing. Two Vars are equal when id and value are.

    >>> v = Var(3, {"tool": "ANSWER"})
    >>> v["tool"] == "ANSWER", bool(v), v == Var(3, {"tool": "ANSWER"})
    (True, True, True)
    """

    id: int
    _value: Any = attrs.field(alias="value")

    @property
    def value(self) -> Any:
        """The node's output; read inside a run, it records a control edge from this record."""
        _observe(self)
        return self._value

    def __bool__(self) -> bool:
        return bool(self.value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Var):
            return self.id == other.id and self._value == other._value
        return self.value == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self.id, repr(self._value)))

    def __lt__(self, other: Any) -> bool:
        return self.value < _plain(other)

    def __le__(self, other: Any) -> bool:
        return self.value <= _plain(other)

    def __gt__(self, other: Any) -> bool:
        return self.value > _plain(other)

    def __ge__(self, other: Any) -> bool:
        return self.value >= _plain(other)

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self):
        return iter(self.value)

    def __contains__(self, item: Any) -> bool:
        return _plain(item) in self.value

    def __getitem__(self, key: Any) -> Any:
        return self.value[key]


def _plain(value: Any) -> Any:
    """The value of a Var (recording the read), anything else as it is."""
    return value.value if isinstance(value, Var) else value


def _observe(var: Var) -> None:
    """Record that the running pipeline read ``var`` for control (nothing outside a run)."""
    builder = _CURRENT.get()
    if builder is not None:
        builder.observe(var.id)


def as_text(value: Any) -> str:
    """How a value appears inside a prompt: str as is, sequences one item a line, else JSON.

    >>> as_text(("a", "b")), as_text(3), as_text(Var(0, "x"))
    ('a\\nb', '3', 'x')
    """
    if isinstance(value, Var):
        value = value._value
    if isinstance(value, str):
        return value
    if isinstance(value, tuple | list):
        return "\n".join(as_text(v) for v in value)
    return orjson.dumps(value, default=dict).decode()


class _Builder:
    """Private, mutable recorder of one run; frozen into a Trace at the end."""

    def __init__(self, engine: Engine | None):
        self.engine = engine
        self.records: list[Record] = []
        self.calls: dict[str, int] = {}
        self.skips: list[str] = []
        self.observed: dict[int, None] = {}  # every record read for control, in order of first read
        self.pending: list[int] = []  # those read since the last record was added

    def observe(self, record_id: int) -> None:
        if record_id not in self.observed and 0 <= record_id < len(self.records):
            self.observed[record_id] = None
            self.pending.append(record_id)

    def add(self, node: str, kind: str, **fields) -> Record:
        index = self.calls.get(node, 0)
        self.calls[node] = index + 1
        record = Record(id=len(self.records), node=node, kind=kind, call_index=index, control=tuple(self.pending), **fields)
        self.pending.clear()
        self.records.append(record)
        return record

    def freeze(self, example_id: str, output: int | None) -> Trace:
        return Trace(
            tuple(self.records), example_id=example_id, skips=tuple(dict.fromkeys(self.skips)), output=output,
            control=tuple(self.observed),
        )


_CURRENT: contextvars.ContextVar[_Builder | None] = contextvars.ContextVar("funcgrad_run", default=None)


def _split_vars(names_values) -> tuple[tuple[int, ...], tuple[str, ...], dict]:
    ids, names, consts = [], [], {}
    for name, value in names_values:
        if isinstance(value, Var):
            ids.append(value.id)
            names.append(name)
        else:
            consts[name] = value
    return tuple(ids), tuple(names), consts


def _fail(node: str, exc: BaseException) -> None:
    if isinstance(exc, FATAL_ERRORS):
        raise exc
    detail = str(exc) if isinstance(exc, FuncgradError) else f"{type(exc).__name__}: {exc}"
    raise PipelineError(f"node {node!r} failed: {detail}") from exc


@attrs.frozen
class LLM:
    """An LLM node: renders params into the system message and inputs into the user message.

    ``system`` names the params (or groups of peer params) the node reads, rendered in
    order and joined by blank lines; ``user`` is a ``str.format`` template filled with
    the keyword inputs of the call (Vars are rendered with :func:`as_text`).
    Returns a Var holding the model's text.

    >>> LLM("answer", system=("sys",), user="{q}").name
    'answer'
    """

    name: str
    system: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    user: str = "{input}"
    temperature: float = 0.0
    max_tokens: int = 256
    model: str = ""
    stop: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    role: str = attrs.field(default="forward", validator=attrs.validators.in_(ROLES))

    def render(self, prompts: PromptState, inputs: Mapping[str, Any], sample: int = 0) -> tuple[Request, tuple[str, ...]]:
        """The request this node sends for ``inputs``, and the leaf params it reads."""
        if not isinstance(prompts, PromptState):
            raise TraceError(f"LLM node {self.name!r} needs the PromptState as its first argument")
        leaves = tuple(leaf for name in self.system for leaf in prompts.resolve(name))
        try:
            user = self.user.format(**{k: as_text(v) for k, v in inputs.items()})
        except (KeyError, IndexError) as exc:
            raise TraceError(
                f"LLM node {self.name!r}: template {self.user!r} needs input {exc}; "
                f"the call passed {sorted(inputs)}"
            ) from None
        messages = []
        if leaves:
            messages.append(Message("system", check_text(prompts.render(leaves), where=f"LLM node {self.name!r}: the system prompt")))
        messages.append(Message("user", check_text(user, where=f"LLM node {self.name!r}: the user message")))
        request = Request(
            messages=tuple(messages),
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            sample=sample,
            stop=self.stop,
            role=self.role,
        )
        return request, leaves

    def __call__(self, prompts: PromptState, /, *, sample: int = 0, **inputs: Any) -> Var:
        builder = _CURRENT.get()
        if builder is None or builder.engine is None:
            raise TraceError(f"LLM node {self.name!r} was called outside funcgrad.run(...); run the pipeline with run()")
        request, leaves = self.render(prompts, inputs, sample)
        ids, names, consts = _split_vars(inputs.items())
        consts = {k: _jsonable(v) for k, v in consts.items()}
        try:
            response = builder.engine.complete(request)
        except Exception as exc:  # recorded, then re-raised as a PipelineError
            builder.add(self.name, "llm", inputs=ids, input_names=names, consts=consts, params=leaves, request=request, error=str(exc))
            _fail(self.name, exc)
        record = builder.add(
            self.name, "llm", inputs=ids, input_names=names, consts=consts, params=leaves,
            request=request, output=response.text, usage=response.usage,
        )
        return Var(record.id, record.output)


@attrs.frozen
class Fn:
    """A function node: calls ``func`` on the values of its arguments and records the call.

    Outside :func:`funcgrad.core.run` it is the plain function. ``kind`` is ``fn`` or
    ``retrieve``. Arguments that are Vars become edges; others are recorded as constants.
    """

    name: str
    func: Callable[..., Any]
    kind: str = attrs.field(default="fn", validator=attrs.validators.in_(("fn", "retrieve")))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = _CURRENT.get()
        plain_args = [a._value if isinstance(a, Var) else a for a in args]
        plain_kwargs = {k: v._value if isinstance(v, Var) else v for k, v in kwargs.items()}
        if builder is None:
            return self.func(*plain_args, **plain_kwargs)
        try:
            bound = _flat_arguments(inspect.signature(self.func).bind(*args, **kwargs))
        except (TypeError, ValueError):
            bound = [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
        ids, names, consts = _split_vars(bound)
        consts = {k: _jsonable(v) for k, v in consts.items()}
        try:
            output = freeze(self.func(*plain_args, **plain_kwargs), where=f"output of node {self.name!r}")
        except Exception as exc:
            builder.add(self.name, self.kind, inputs=ids, input_names=names, consts=consts, error=f"{type(exc).__name__}: {exc}")
            _fail(self.name, exc)
        # No wall-clock reading here: the clock lives behind the engine, so a trace stays a pure
        # function of the inputs and the engine's answers (replay reproduces it exactly).
        record = builder.add(self.name, self.kind, inputs=ids, input_names=names, consts=consts, output=output)
        return Var(record.id, record.output)


def _flat_arguments(bound: inspect.BoundArguments) -> list[tuple[str, Any]]:
    """(name, value) per argument, with ``*args`` as ``args[i]`` and ``**kw`` as their keys, so Vars passed there stay edges."""
    params = bound.signature.parameters
    out: list[tuple[str, Any]] = []
    for name, value in bound.arguments.items():
        kind = params[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out.extend((f"{name}[{i}]", v) for i, v in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            out.extend(value.items())
        else:
            out.append((name, value))
    return out


def _jsonable(value: Any) -> Any:
    try:
        return freeze(value)
    except FuncgradError:
        return repr(value)


def fn(name: str | None = None, *, kind: str = "fn") -> Callable[[Callable], Fn]:
    """Decorator: make a function a traced node (``kind="retrieve"`` for retrievers).

    >>> @fn("double")
    ... def double(n):
    ...     return 2 * n
    >>> double(3)
    6
    """

    def wrap(func: Callable) -> Fn:
        return Fn(name or func.__name__, func, kind)

    return wrap


def retriever(name: str | None = None) -> Callable[[Callable], Fn]:
    """Decorator: a retriever node (a function node of kind ``retrieve``)."""
    return fn(name, kind="retrieve")


def skip_connection(node: str) -> None:
    """Declare, inside a pipeline, that ``node`` receives the loss feedback directly.

    Credit-assignment strategies that follow edges (backprop) then send the final
    feedback straight to that node as well as along the graph.
    """
    builder = _CURRENT.get()
    if builder is None:
        raise TraceError("skip_connection(...) must be called inside a pipeline run by funcgrad.core.run")
    builder.skips.append(node)
