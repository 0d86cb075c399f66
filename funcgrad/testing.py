"""Hypothesis strategies for property-testing code built on funcgrad.

These are the generators funcgrad's own test-suite uses; they are public so that a
user's transformation or credit-assignment strategy can be checked the same way the
built-in ones are. Every generator returns *valid* values: states satisfy the
:class:`~funcgrad.PromptState` invariants, traces pass :func:`~funcgrad.check_trace`,
and :func:`pipelines` builds small random pipelines that run on a deterministic
:class:`~funcgrad.engines.scripted.ScriptedEngine`.

Property-testing your own transformation (a pure function on a trace) means stating
the invariant it must keep and letting Hypothesis search for a counter-example::

    from hypothesis import given
    import funcgrad
    from funcgrad.testing import traces

    def drop_fn_outputs(trace):          # your transformation
        ...

    @given(traces(with_loss=True))
    def test_drop_fn_outputs_keeps_the_trace_valid(trace):
        funcgrad.check_trace(drop_fn_outputs(trace))

Property-testing a strategy means running generated pipelines, feeding the results
to ``update`` and checking what it promises, e.g. that it only proposes text for
trainable params of the state it was given::

    from funcgrad.testing import pipelines

    @given(pipelines(), losses())
    def test_my_strategy_only_touches_trainable_params(gp, loss):
        engine = funcgrad.ScriptedEngine(gp.respond)
        result = funcgrad.run_example(gp.pipeline, gp.state, funcgrad.Example("e", gp.x),
                                      engine=engine, loss=lambda y, ex: loss)
        program = my_strategy.update([result], gp.state, my_strategy.init(gp.state), funcgrad.StepContext())
        update, _ = funcgrad.run_program(program, lambda effect: funcgrad.Response("<NEW_VALUE>x</NEW_VALUE>"))
        assert set(update.values) <= set(gp.state.trainable_names)

A strategy is sans-I/O, so its answers are fed directly (``run_program``): no engine
and no prompt parsing is needed to test it.

All generators take keyword arguments only and shrink towards small, plain values.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from hypothesis import strategies as st

from funcgrad.core.backward import CallLog, Candidate, EdgeKind, EffectLog, Gradient, GradientSource, StepTrace, Verdict
from funcgrad.core.calls import MESSAGE_ROLES, ROLES, Message, Request, Response, Usage
from funcgrad.core.nodes import LLM, Fn, Var
from funcgrad.core.run import FAILURE_KINDS, Example, Failure, Loss, Result, run
from funcgrad.core.state import PARAM_KINDS, Param, PromptState
from funcgrad.core.strategy import Attempt, Note, NoteStatus, Update
from funcgrad.core.trace import Record, RecordKind, Trace
from funcgrad.core.values import FrozenDict
from funcgrad.engines.scripted import ScriptedEngine

__all__ = [
    "GeneratedPipeline", "attempts", "examples", "gradients", "json_values", "losses", "messages", "names", "notes",
    "params", "pipelines", "prompt_states", "recorded_responder", "records", "requests", "responses",
    "results", "step_traces", "texts", "traces", "updates", "usages",
]

_INT64 = (-(2**63), 2**63 - 1)


# --------------------------------------------------------------------------- scalars


@functools.lru_cache(maxsize=None)
def texts(*, max_size: int = 20) -> st.SearchStrategy[str]:
    """Unicode text that JSON can carry (no lone surrogates).

    >>> isinstance(texts().example(), str)
    True
    """
    return st.text(st.characters(blacklist_categories=("Cs",)), max_size=max_size)


def names() -> st.SearchStrategy[str]:
    """Valid parameter / node names: short identifiers, possibly dotted (``sys.format``).

    >>> import re
    >>> bool(re.fullmatch(r"[a-z][a-z0-9_.]*", names().example()))
    True
    """
    return _NAMES


_LOWER = "abcdefghijklmnopqrstuvwxyz"
_NAMES = st.builds(
    lambda head, tail, dotted: head + tail + ("." + dotted[0] + dotted[1] if dotted else ""),
    st.sampled_from(_LOWER),
    st.text(_LOWER + "0123456789_", max_size=5),
    st.none() | st.tuples(st.sampled_from(_LOWER), st.text(_LOWER + "0123456789", max_size=4)),
)


@functools.lru_cache(maxsize=None)
def json_values(*, max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Immutable JSON values (None, bool, 64-bit int, finite float, str, tuple, FrozenDict).

    These are exactly the values a Record, Example or strategy state may hold; they
    survive ``funcgrad.loads(funcgrad.dumps(...))`` unchanged.

    >>> from funcgrad.core.values import freeze
    >>> v = json_values().example()
    >>> freeze(v) == v
    True
    """
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(*_INT64)
        | st.floats(allow_nan=False, allow_infinity=False)
        | texts()
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(texts(max_size=6), inner, max_size=3).map(FrozenDict),
        max_leaves=max_leaves,
    )


# --------------------------------------------------------------------------- state


def params(*, trainable: bool | None = None) -> st.SearchStrategy[Param]:
    """A :class:`~funcgrad.Param` with random text, role, kind and (unless given) trainable flag.

    >>> params(trainable=False).example().trainable
    False
    """
    flag = st.booleans() if trainable is None else st.just(trainable)
    return st.builds(Param, value=texts(), role=texts(max_size=10), trainable=flag, kind=st.sampled_from(PARAM_KINDS))


@st.composite
def prompt_states(draw, *, min_size: int = 0, max_size: int = 5, with_groups: bool = False) -> PromptState:
    """A valid :class:`~funcgrad.PromptState` with ``min_size..max_size`` params.

    With ``with_groups=True`` it may also have groups (each a non-empty list of
    distinct existing params; group names never clash with param names).

    >>> s = prompt_states(min_size=2, max_size=2, with_groups=True).example()
    >>> len(s), all(m in s for _, ms in s.groups for m in ms)
    (2, True)
    """
    pnames = draw(st.lists(names(), min_size=min_size, max_size=max_size, unique=True))
    ps = [(n, draw(params())) for n in pnames]
    groups: list[tuple[str, tuple[str, ...]]] = []
    if with_groups and pnames:
        gnames = draw(st.lists(names().filter(lambda g: g not in pnames), max_size=2, unique=True))
        for g in gnames:
            members = draw(st.lists(st.sampled_from(pnames), min_size=1, max_size=3, unique=True))
            groups.append((g, tuple(members)))
    return PromptState(ps, groups)


# --------------------------------------------------------------------------- engine values


def usages() -> st.SearchStrategy[Usage]:
    """Token counts and latency of one call.

    >>> usages().example().total_tokens >= 0
    True
    """
    return st.builds(
        Usage,
        prompt_tokens=st.integers(0, 10_000),
        completion_tokens=st.integers(0, 10_000),
        latency_s=st.floats(0, 100, allow_nan=False),
    )


def messages() -> st.SearchStrategy[Message]:
    """One chat message.

    >>> messages().example().role in ("system", "user", "assistant")
    True
    """
    return st.builds(Message, role=st.sampled_from(MESSAGE_ROLES), content=texts())


def requests() -> st.SearchStrategy[Request]:
    """A chat request with every field varied (``seed`` and ``json_schema`` may be None).

    >>> len(requests().example().messages) >= 1
    True
    """
    return st.builds(
        Request,
        messages=st.lists(messages(), min_size=1, max_size=3).map(tuple),
        model=texts(max_size=8),
        temperature=st.floats(0, 2, allow_nan=False),
        max_tokens=st.integers(0, 4096),
        seed=st.none() | st.integers(*_INT64),
        sample=st.integers(0, 5),
        stop=st.lists(texts(max_size=4), max_size=2).map(tuple),
        json_schema=st.none() | texts(),
        role=st.sampled_from(ROLES),
    )


def responses() -> st.SearchStrategy[Response]:
    """A model answer.

    >>> isinstance(responses().example().text, str)
    True
    """
    return st.builds(
        Response, text=texts(), usage=usages(), model=texts(max_size=8),
        finish_reason=st.sampled_from(("", "stop", "length")), cached=st.booleans(),
    )


# --------------------------------------------------------------------------- run values


def losses() -> st.SearchStrategy[Loss]:
    """A :class:`~funcgrad.Loss`: score in [0, 1] (often exactly 0 or 1) and feedback.

    >>> 0.0 <= losses().example().score <= 1.0
    True
    """
    score = st.sampled_from((0.0, 1.0)) | st.floats(0, 1, allow_nan=False)
    return st.builds(Loss, score=score, feedback=texts())


def examples() -> st.SearchStrategy[Example]:
    """An :class:`~funcgrad.Example` with JSON input and target.

    >>> isinstance(examples().example().id, str)
    True
    """
    return st.builds(Example, id=texts(max_size=8), x=json_values(), target=json_values())


def records(*, record_id: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[Record]:
    """One :class:`~funcgrad.Record` with arbitrary field values (alone, not part of a valid trace).

    Use :func:`traces` for records that belong together.

    >>> records().example().kind in ("input", "llm", "fn", "retrieve", "loss")
    True
    """
    ids = st.lists(st.integers(0, 50), max_size=3).map(tuple)
    return ids.flatmap(
        lambda inputs: st.builds(
            Record,
            id=record_id if record_id is not None else st.integers(0, 1000),
            node=names(),
            kind=st.sampled_from(RecordKind),
            call_index=st.integers(0, 10),
            inputs=st.just(inputs),
            input_names=st.lists(names(), min_size=len(inputs), max_size=len(inputs)).map(tuple),
            consts=_consts(),
            params=st.lists(names(), max_size=3).map(tuple),
            request=st.none() | requests(),
            output=json_values(),
            usage=usages(),
            error=st.none() | texts(),
            control=st.lists(st.integers(0, 50), max_size=2, unique=True).map(tuple),
        )
    )


def _consts() -> st.SearchStrategy[FrozenDict]:
    """Constant (non-Var) inputs of a node call: argument name -> JSON value."""
    return st.dictionaries(names(), json_values(max_leaves=2), max_size=2).map(FrozenDict)


@st.composite
def traces(
    draw,
    *,
    max_records: int = 8,
    with_loss: bool | None = None,
    repeated_calls: bool = True,
    skips: bool = True,
    param_names: Sequence[str] | None = None,
    control: bool = True,
) -> Trace:
    """A valid :class:`~funcgrad.Trace` (it passes :func:`~funcgrad.check_trace`).

    Record 0 is the input; then up to ``max_records - 1`` llm / fn / retrieve records
    with strictly increasing (possibly gapped) ids, inputs only to earlier ids, and —
    with ``repeated_calls`` — nodes called several times with increasing call indices.
    ``with_loss=True`` appends a loss record (last), ``False`` never does, ``None``
    (default) decides at random. LLM records read params from ``param_names``
    (default: a small fixed pool). ``skips`` allows random skip connections.
    ``control`` adds control edges as a run records them: a record's ``control`` names
    earlier records not read before, ``Trace.control`` lists them all in order of
    reading, plus perhaps reads after the last record (as before a loss record).

    >>> from funcgrad.core import check_trace
    >>> t = traces(with_loss=True).example()
    >>> check_trace(t) is t, t.records[-1].kind
    (True, 'loss')
    """
    pool = tuple(param_names) if param_names is not None else ("p0", "p1", "p2", "sys.format")
    n = draw(st.integers(1, max(1, max_records - (1 if with_loss else 0))))
    rid = 0
    recs = [Record(0, "x", "input", output=draw(json_values(max_leaves=3)))]
    read: list[int] = []  # ids read for control so far, in order: Trace.control
    node_kind: dict[str, str] = {"x": "input"}
    last_call: dict[str, int] = {"x": 0}
    for _ in range(n - 1):
        rid += draw(st.sampled_from((1, 1, 1, 2)))
        kind = draw(st.sampled_from(("llm", "llm", "fn", "retrieve")))
        same_kind = [nd for nd, k in node_kind.items() if k == kind]
        if repeated_calls and same_kind and draw(st.booleans()):
            node = draw(st.sampled_from(same_kind))
            index = last_call[node] + draw(st.sampled_from((1, 1, 1, 2)))
        else:
            node = draw(names().filter(lambda nm: nm not in node_kind and nm != "loss"))
            index = 0
        node_kind[node] = kind
        last_call[node] = index
        earlier = [r.id for r in recs]
        inputs = tuple(draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3, unique=True)))
        reads = _reads(draw, earlier, read) if control else ()
        params_read = tuple(draw(st.lists(st.sampled_from(pool), max_size=3, unique=True))) if kind == "llm" and pool else ()
        recs.append(
            Record(
                rid, node, kind, call_index=index, inputs=inputs,
                input_names=tuple(f"in{i}" for i in range(len(inputs))),
                consts=draw(_consts().filter(lambda c, n=len(inputs): not set(c) & {f"in{i}" for i in range(n)})),
                params=params_read,
                request=draw(requests()) if kind == "llm" else None,
                output=draw(texts(max_size=12)) if kind != "retrieve" else tuple(draw(st.lists(texts(max_size=8), max_size=3))),
                usage=draw(usages()),
                control=reads,
            )
        )
    output: int | None = recs[-1].id
    if len(recs) > 1 and draw(st.integers(0, 4)) == 0:  # a failed run: the last call errored
        recs[-1] = attrs.evolve(recs[-1], output=None, error=draw(texts(max_size=10)))
        output = None
    elif control:
        _reads(draw, [r.id for r in recs], read)  # reads after the last call (before the loss)
    loss = draw(st.booleans()) if with_loss is None else with_loss
    if loss:
        scored = draw(losses())
        inputs = (output,) if output is not None else ()
        recs.append(
            Record(
                recs[-1].id + 1, "loss", "loss", inputs=inputs, input_names=("output",) * len(inputs),
                consts={"target": draw(json_values(max_leaves=2))},
                output={"score": scored.score, "feedback": scored.feedback},
            )
        )
    skip_nodes = ()
    if skips:
        candidates = [nd for nd in node_kind if nd != "x"]
        if candidates:
            skip_nodes = tuple(draw(st.lists(st.sampled_from(candidates), max_size=2, unique=True)))
    return Trace(tuple(recs), example_id=draw(texts(max_size=6)), skips=skip_nodes, output=output, control=tuple(read))


def _reads(draw, earlier: list[int], read: list[int]) -> tuple[int, ...]:
    """Draw reads of ``earlier`` records not read yet, appending them to ``read``: a record's control edges."""
    unread = [i for i in earlier if i not in read]
    if not unread or draw(st.integers(0, 2)) != 0:
        return ()
    new = tuple(draw(st.lists(st.sampled_from(unread), min_size=1, max_size=2, unique=True)))
    read.extend(new)
    return new


def failures() -> st.SearchStrategy[Failure]:
    """A :class:`~funcgrad.core.run.Failure` (why an example has no answer).

    >>> failures().example().kind in ("engine", "pipeline", "loss")
    True
    """
    return st.builds(Failure, kind=st.sampled_from(FAILURE_KINDS), message=texts(max_size=20), node=texts(max_size=6))


def results() -> st.SearchStrategy[Result]:
    """A :class:`~funcgrad.Result`: an answer (scored trace, loss) or a failure (unscored trace, failure).

    >>> r = results().example()
    >>> r.failed or r.trace.records[-1].kind == "loss"
    True
    """
    answers = st.builds(
        Result, example=examples(), output=json_values(max_leaves=3), trace=traces(with_loss=True), loss=losses()
    )
    failed = st.builds(
        Result, example=examples(), output=st.none(), trace=traces(with_loss=False), loss=st.none(), failure=failures()
    )
    return answers | failed


def notes() -> st.SearchStrategy[Note]:
    """A strategy :class:`~funcgrad.Note`.

    >>> notes().example().status in ("proposed", "no_update")
    True
    """
    return st.builds(Note, param=names() | st.just(""), status=st.sampled_from(NoteStatus), reason=texts())


def updates() -> st.SearchStrategy[Update]:
    """A strategy :class:`~funcgrad.Update` (param -> new text, plus notes).

    >>> all(isinstance(v, str) for v in updates().example().values.values())
    True
    """
    return st.builds(
        Update, values=st.dictionaries(names(), texts(), max_size=3), notes=st.lists(notes(), max_size=2).map(tuple)
    )


def attempts() -> st.SearchStrategy[Attempt]:
    """A past proposal as shown to a strategy (:class:`~funcgrad.Attempt`).

    >>> isinstance(attempts().example().accepted, bool)
    True
    """
    return st.builds(
        Attempt,
        values=st.dictionaries(names(), texts(), max_size=3),
        score=st.none() | st.floats(0, 1, allow_nan=False),
        accepted=st.booleans(),
        reason=texts(),
    )


def gradients(*, max_calls: int = 3) -> st.SearchStrategy[Gradient]:
    """One textual gradient (:class:`~funcgrad.Gradient`), naming a call below ``max_calls`` or none.

    >>> gradients().example().source in GradientSource
    True
    """
    return st.builds(
        Gradient, id=st.just(0), param=names(), node=names(), example_id=names(), record_id=st.integers(0, 20),
        call_index=st.integers(0, 5), score=st.floats(0, 1, allow_nan=False), text=texts(),
        source=st.sampled_from(GradientSource), call=st.none() | st.integers(0, max(0, max_calls - 1)),
        via=st.sampled_from(EdgeKind),
    )


@st.composite
def step_traces(draw, *, max_calls: int = 4) -> StepTrace:
    """A valid recorded backward pass (:class:`~funcgrad.StepTrace`): ids in order, rounds ascending.

    >>> from funcgrad.core import check_step_trace
    >>> isinstance(check_step_trace(step_traces().example()), StepTrace)
    True
    """
    n = draw(st.integers(0, max_calls))
    calls = tuple(CallLog(i, draw(requests()), draw(responses())) for i in range(n))
    kinds = draw(st.lists(st.sampled_from(("validate", "rerun")), max_size=2))
    rounds = sorted(draw(st.lists(st.integers(0, 3), min_size=n + len(kinds), max_size=n + len(kinds))))
    effects, call_ids = [], iter(range(n))
    order = draw(st.permutations(["call"] * n + kinds))
    for i, (kind, rnd) in enumerate(zip(order, rounds)):
        if kind == "call":
            effects.append(EffectLog(i, "call", rnd, call=next(call_ids)))
        else:
            effects.append(EffectLog(i, kind, rnd, seed=draw(st.none() | st.integers(0, 9)),
                                     examples=tuple(draw(st.lists(names(), max_size=3))),
                                     score=draw(st.none() | st.floats(0, 1, allow_nan=False))))
    grads = draw(st.lists(gradients(max_calls=n), max_size=4))
    grads = tuple(attrs.evolve(g, id=i, call=g.call if n else None) for i, g in enumerate(grads))
    candidates = tuple(
        Candidate(draw(names()), draw(texts()), draw(st.none() | texts()), draw(st.sampled_from(("", "tag_leak", "unchanged"))),
                  draw(texts()), tuple(draw(st.lists(st.integers(0, len(grads) - 1), max_size=2))) if grads else (),
                  draw(st.none() | st.integers(0, n - 1)) if n else None)
        for _ in range(draw(st.integers(0, 2)))
    )
    passed = any(c.value is not None and not c.guard for c in candidates)
    verdicts = [v for v in Verdict if v is not Verdict.ACCEPTED or passed]
    return StepTrace(draw(st.integers(1, 9)), draw(st.integers(0, 2)), draw(names()), tuple(draw(st.lists(names(), max_size=3))),
                     calls, tuple(effects), grads, candidates, draw(st.sampled_from(verdicts)), draw(texts()),
                     draw(st.none() | st.floats(0, 1, allow_nan=False)), draw(st.none() | st.floats(0, 1, allow_nan=False)))


# --------------------------------------------------------------------------- pipelines


def _answer(request: Request) -> str:
    digest = hashlib.sha256(request.key()).hexdigest()[:8]
    return f"a{digest}"


def _fn1(a):
    return f"f({str(a)[:24]})"


def _fn2(a, b):
    return f"g({str(a)[:12]},{str(b)[:12]})"


def _retrieve(query):
    q = str(query)[:16]
    return (f"doc1:{q}", f"doc2:{q}")


def _says_stop(verdict: str) -> bool:
    """Whether a verdict node's answer says stop: half of :func:`_answer`'s answers do."""
    return str(verdict)[1:2] < "8"


@attrs.frozen
class GeneratedPipeline:
    """A random pipeline with a matching state, a deterministic responder and an input.

    ``pipeline(prompts, x)`` is a plain funcgrad pipeline; ``state`` holds every param
    its LLM nodes read; ``respond`` is a pure function of the request (use it as
    ``ScriptedEngine(gp.respond)``); ``x`` is a sample input; ``steps`` describes the
    graph as a run on ``x`` with ``respond`` executes it (it is what Hypothesis prints for a
    failing example): ``(node, kind, value indices, calls)`` per step, a stop test or an
    exit test as a step of its own; ``llm_calls`` is the number of model calls that run makes.

    >>> from funcgrad.core import run
    >>> from funcgrad.engines.scripted import ScriptedEngine
    >>> gp = pipelines().example()
    >>> y, trace = run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(gp.respond))
    >>> sum(r.kind == "llm" for r in trace.records) == gp.llm_calls
    True
    """

    pipeline: Callable[[PromptState, Var], Var] = attrs.field(repr=False)
    state: PromptState
    respond: Callable[[Request], str] = attrs.field(repr=False)
    x: str
    steps: tuple[tuple, ...]
    llm_calls: int


@st.composite
def pipelines(
    draw, *, max_steps: int = 6, repeated_calls: bool = True, loops: bool = True, control: bool = True
) -> GeneratedPipeline:
    """A small random pipeline (a DAG, with optional loops and control flow) plus its state and responder.

    Steps are LLM nodes reading random params (or groups) of a generated state, some
    with a constant keyword input (``note="..."``, recorded in ``Record.consts``), fn
    nodes of one or two inputs, and retriever nodes; with ``repeated_calls`` a node
    may be called again later, and with ``loops`` an LLM node may be called several
    times in a row on its own output (so the trace shows ``node#0``, ``node#1``...).
    With ``control`` the pipeline also reads values for control flow, so its traces
    carry control edges: a loop may stop early when a verdict node (an LLM node given
    the input and the round) says so, and the pipeline may return early after a step
    when an exit verdict says so. A verdict's request depends on the input, the state
    and the round only, so answers that differ from ``respond``'s only after their
    first two characters take the same decisions. Every step reads earlier values
    only; the last value computed is returned.

    >>> from funcgrad.core import check_trace, run
    >>> from funcgrad.engines.scripted import ScriptedEngine
    >>> gp = pipelines().example()
    >>> y, trace = run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(gp.respond))
    >>> check_trace(trace) is trace
    True
    """
    state = draw(prompt_states(min_size=1, max_size=4, with_groups=True))
    readable = list(state.names) + [g for g, _ in state.groups]
    n_steps = draw(st.integers(1, max_steps))
    steps: list[tuple] = []  # (name, value indices, times, stop verdict or None, exit verdict or None)
    nodes: dict[str, tuple] = {}  # name -> ("llm", system, arity, const) | ("fn", arity) | ("retrieve",) | ("verdict", system)
    n_values = 1  # value 0 is the input x

    def verdict() -> str:
        name = f"v{len(nodes)}"
        nodes[name] = ("verdict", tuple(draw(st.lists(st.sampled_from(readable), max_size=1))))
        return name

    for _ in range(n_steps):
        reuse = [nm for nm, spec in nodes.items() if spec[0] != "verdict"] if repeated_calls else []
        if reuse and draw(st.integers(0, 3)) == 0:
            name = draw(st.sampled_from(reuse))
            spec = nodes[name]
        else:
            kind = draw(st.sampled_from(("llm", "llm", "fn", "retrieve")))
            name = f"{kind[0]}{len(nodes)}"
            if kind == "llm":
                system = tuple(draw(st.lists(st.sampled_from(readable), max_size=2, unique=True)))
                const = draw(st.none() | texts(max_size=8))  # a constant keyword input, e.g. facts="(none yet)"
                spec = ("llm", system, draw(st.integers(1, 2)), const)
            elif kind == "fn":
                spec = ("fn", draw(st.integers(1, 2)))
            else:
                spec = ("retrieve",)
            nodes[name] = spec
        arity = spec[2] if spec[0] == "llm" else spec[1] if spec[0] == "fn" else 1
        args = tuple(draw(st.integers(0, n_values - 1)) for _ in range(arity))
        times = draw(st.integers(1, 3)) if loops and spec[0] == "llm" and arity == 1 else 1
        stop = verdict() if control and times > 1 and draw(st.booleans()) else None
        exit_ = verdict() if control and draw(st.integers(0, 3)) == 0 else None
        steps.append((name, args, times, stop, exit_))
        n_values += 1

    built: dict[str, Any] = {}
    for name, spec in nodes.items():
        if spec[0] == "llm":
            template = "\n".join(f"in{i}: {{in{i}}}" for i in range(spec[2]))
            if spec[3] is not None:
                template += "\nnote: {note}"
            built[name] = LLM(name, system=spec[1], user=template)
        elif spec[0] == "verdict":
            built[name] = LLM(name, system=spec[1], user="stop after round {round}? {in0}")
        elif spec[0] == "fn":
            built[name] = Fn(name, _fn1 if spec[1] == 1 else _fn2)
        else:
            built[name] = Fn(name, _retrieve, kind="retrieve")
    plan = tuple(steps)

    def pipeline(prompts: PromptState, x: Var) -> Var:
        values = [x]
        for name, args, times, stop, exit_ in plan:
            node = built[name]
            inputs = [values[i] for i in args]
            if isinstance(node, LLM):
                const = nodes[name][3]
                extra = {"note": const} if const is not None else {}
                out = node(prompts, **{f"in{i}": v for i, v in enumerate(inputs)}, **extra)
                for round_ in range(times - 1):  # a loop: the node refines its own output
                    if stop is not None and _says_stop(built[stop](prompts, in0=x, round=round_).value):
                        break
                    out = node(prompts, in0=out, **extra)
            else:
                out = node(*inputs)
            values.append(out)
            if exit_ is not None and _says_stop(built[exit_](prompts, in0=x, round=0).value):
                break  # an early exit
        return values[-1]

    x = draw(texts(max_size=12))
    described = _executed(plan, nodes, pipeline, state, x)
    llm_calls = sum(calls for _, kind, _, calls in described if kind == "llm")
    return GeneratedPipeline(pipeline, state, _answer, x, described, llm_calls)


def _executed(plan: tuple, nodes: dict, pipeline: Callable, state: PromptState, x: str) -> tuple[tuple, ...]:
    """The steps of ``plan`` a run on ``x`` with :func:`_answer` executes: ``(node, kind, value indices, calls)``."""
    _, trace = run(pipeline, state, x, engine=ScriptedEngine(_answer))
    verdicts = (r for r in trace.records if r.node in nodes and nodes[r.node][0] == "verdict")
    said = {(r.node, r.consts["round"]): _says_stop(r.output) for r in verdicts}
    out: list[tuple] = []
    for name, args, times, stop, exit_ in plan:
        kind = nodes[name][0]
        calls = 1
        for round_ in range(times - 1):
            if stop is not None and said[(stop, round_)]:
                break
            calls += 1
        out.append((name, kind, args, calls))
        if stop is not None:
            out.append((stop, "llm", (0,), min(calls, times - 1)))
        if exit_ is not None:
            out.append((exit_, "llm", (0,), 1))
            if said[(exit_, 0)]:
                break
    return tuple(out)


def recorded_responder(trace: Trace) -> Callable[[Request], str]:
    """A responder that replays the LLM outputs recorded in ``trace``.

    Answers are looked up by the recorded :class:`~funcgrad.Request` (equal requests
    match), so replaying a run with ``ScriptedEngine(recorded_responder(trace))``
    reproduces it exactly; an unknown request raises KeyError. Identical requests
    get their recorded answers in call order.

    >>> from funcgrad.core import run
    >>> from funcgrad.engines.scripted import ScriptedEngine
    >>> gp = pipelines().example()
    >>> _, t1 = run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(gp.respond))
    >>> _, t2 = run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(recorded_responder(t1)))
    >>> t1 == t2
    True
    """
    table: dict[Request, list[str]] = {}
    for r in trace.records:
        if r.kind == "llm" and r.error is None:
            table.setdefault(r.request, []).append(r.output)
    position: dict[Request, int] = {}

    def respond(request: Request) -> str:
        answers = table[request]
        i = position.get(request, 0)
        position[request] = i + 1
        return answers[min(i, len(answers) - 1)]

    return respond


# --------------------------------------------------------------------------- typed strategy state
# (funcgrad.core.strategy_state: the values a strategy keeps in S)

from funcgrad.core.strategy_state import Demo, DemoPool, History, HistoryEntry, Pick, Pool, PoolEntry, Stats  # noqa: E402

_SCORES = st.floats(0, 1, allow_nan=False)


def _counters() -> st.SearchStrategy[dict[str, int]]:
    return st.dictionaries(names(), st.integers(0, 1000), max_size=3)


def stats() -> st.SearchStrategy[Stats]:
    """Strategy counters (:class:`~funcgrad.core.strategy_state.Stats`).

    >>> stats().example().steps >= 0
    True
    """
    return st.builds(Stats, steps=st.integers(0, 1000), calls=_counters(), rejections=_counters(), events=_counters())


def _text_values() -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(names(), texts(), max_size=3)


def pool_entries() -> st.SearchStrategy[PoolEntry]:
    """A candidate of a pool: values, scores per example (or None) and a parent index.

    >>> isinstance(pool_entries().example().values, dict | FrozenDict)
    True
    """
    return st.builds(PoolEntry, values=_text_values(), scores=st.none() | st.dictionaries(names(), _SCORES, max_size=3),
                     parent=st.none() | st.integers(0, 20))


def pools() -> st.SearchStrategy[Pool]:
    """A pool of candidates with its cursor, proposed values and counters (:class:`~funcgrad.core.strategy_state.Pool`).

    >>> pools().example().cursor >= 0
    True
    """
    return st.builds(Pool, entries=st.lists(pool_entries(), max_size=3), cursor=st.integers(0, 100),
                     proposed=st.lists(_text_values(), max_size=2), stats=stats())


def history_entries() -> st.SearchStrategy[HistoryEntry]:
    """A past prompt state with its running mean score (:class:`~funcgrad.core.strategy_state.HistoryEntry`).

    >>> history_entries().example().n >= 0
    True
    """
    return st.builds(HistoryEntry, values=_text_values(), mean=st.none() | _SCORES, n=st.integers(0, 100))


def picks() -> st.SearchStrategy[Pick]:
    """A step's pick (:class:`~funcgrad.core.strategy_state.Pick`).

    >>> picks().example().step >= 0
    True
    """
    return st.builds(Pick, step=st.integers(0, 100), values=_text_values(),
                     candidates=st.lists(st.integers(0, 20), max_size=3), seed=st.integers(0, 2**31 - 1))


def histories() -> st.SearchStrategy[History]:
    """A wrapper's history, stream position, pick and inner state (:class:`~funcgrad.core.strategy_state.History`).

    >>> histories().example().stream_position >= 0
    True
    """
    return st.builds(History, entries=st.lists(history_entries(), max_size=3),
                     stream_step=st.none() | st.integers(0, 100), stream_position=st.integers(0, 1000),
                     pick=st.none() | picks(), inner=json_values(max_leaves=4) | stats(), stats=stats())


def demos() -> st.SearchStrategy[Demo]:
    """One harvested demonstration (:class:`~funcgrad.core.strategy_state.Demo`).

    >>> isinstance(demos().example().output, str)
    True
    """
    return st.builds(Demo, example_id=names(), param=names(), node=names(), call=st.integers(0, 20), input=texts(),
                     output=texts(), score=_SCORES,
                     source=st.sampled_from(("plain", "rationalized")) | st.integers(1, 5).map("resample {}".format))


def demo_pools() -> st.SearchStrategy[DemoPool]:
    """Harvested demonstrations and counters (:class:`~funcgrad.core.strategy_state.DemoPool`).

    >>> len(demo_pools().example().demos) <= 3
    True
    """
    return st.builds(DemoPool, demos=st.lists(demos(), max_size=3), stats=stats(),
                     scanned=st.lists(st.text("0123456789abcdef", min_size=12, max_size=12), max_size=2))


__all__ += ["demo_pools", "demos", "histories", "history_entries", "picks", "pool_entries", "pools", "stats"]
