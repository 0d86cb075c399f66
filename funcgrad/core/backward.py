"""The backward pass as a trace: what a strategy asked, what came back, where credit went.

Each strategy update of a training step (an *attempt*) becomes one immutable
:class:`StepTrace`, the backward counterpart of the forward :class:`~funcgrad.core.trace.Trace`:

- ``calls``: every critic/optimizer request with its response, numbered in the
  order the strategy asked for them;
- ``effects``: every effect in the round (batch) it was yielded in, so concurrency
  is visible (``round``) and validation/rerun effects are listed too;
- ``gradients``: each textual gradient with its target param and node, example,
  call index (time stamp), score, source and the call that produced it;
- ``candidates``: each proposed value with the gradients it used, the call that
  wrote it, and the guard verdict;
- ``verdict``/``reason``/``minibatch``/``val``: what validation decided.

It has a checker (:func:`check_step_trace`), a printer (:func:`format_step_trace`,
one line per record, the style of ``format_trace``) and a versioned JSON form
(``funcgrad.dumps``/``loads``); run directories keep one per line in ``steps.jsonl``.

>>> g = Gradient(0, "sys", "answer", "e1", 1, 0, 0.0, "expected 4, got 5", "passthrough")
>>> st = StepTrace(1, 0, "backprop", ("e1",), gradients=(g,), verdict=Verdict.NO_UPDATE)
>>> check_step_trace(st) is st
True
>>> check_step_trace(StepTrace(1, 0, "backprop", gradients=(attrs.evolve(g, call=0),)))
Traceback (most recent call last):
...
funcgrad.core.errors.TraceError: step 1: gradient 0 names call 0, which does not exist
"""

from __future__ import annotations

import enum

import attrs

from funcgrad.core.calls import Request, Response
from funcgrad.core.errors import StrategyError, TraceError
from funcgrad.core.printing import escape_line
from funcgrad.core.values import Vocabulary, one_of


class GradientSource(Vocabulary):
    """How a gradient's text was made: ``critique`` (an LLM backward call, named by
    ``Gradient.call``), ``passthrough`` (downstream feedback passed on unchanged),
    ``skip`` (the loss feedback via a skip connection), ``fixed`` (errors-only: "no
    noticeable error"), ``loss`` (the loss feedback itself) or ``control`` (control
    feedback, i.e. what the record's value caused when the pipeline read it to decide
    what to run next, passed on unchanged)."""

    CRITIQUE = "critique"
    PASSTHROUGH = "passthrough"
    SKIP = "skip"
    FIXED = "fixed"
    LOSS = "loss"
    CONTROL = "control"


class EdgeKind(Vocabulary):
    """The kind of forward edge feedback came along (``Gradient.via``): ``data`` (a later
    record consumed the value, or the loss read the output) or ``control`` (the pipeline
    read the value to decide what to run next: ``Record.control``/``Trace.control``)."""

    DATA = "data"
    CONTROL = "control"


class EffectKind(Vocabulary):
    """The effect an :class:`EffectLog` records: a ``call`` (``Call``), ``validate`` (``Validate``) or ``rerun`` (``Rerun``)."""

    CALL = "call"
    VALIDATE = "validate"
    RERUN = "rerun"


class Verdict(str, enum.Enum):
    """What the training loop decided about one attempt's proposal."""

    ACCEPTED = "accepted"
    LOST_MINIBATCH = "lost_minibatch"
    NO_VAL_GAIN = "no_val_gain"
    NO_UPDATE = "no_update"
    INVALID = "invalid"


# How a person reads an attempt's verdict, wherever it is shown (format_step_trace, report.md, report.html).
# "guard" is a NO_UPDATE whose proposals were all stopped by a guard (see :func:`outcome`).
OUTCOME_LABELS = {
    "accepted": "accepted", "lost_minibatch": "rejected by minibatch", "no_val_gain": "rejected by validation",
    "guard": "stopped by a guard", "no_update": "no update", "invalid": "invalid",
}


def outcome(verdict: Verdict | str, candidates: tuple[Candidate, ...] = ()) -> str:
    """The key of :data:`OUTCOME_LABELS` for a verdict: ``"guard"`` when nothing was proposed because a guard stopped a candidate.

    >>> outcome("no_update", (Candidate("p", "old", "x", guard="too_short"),)), outcome(Verdict.NO_VAL_GAIN)
    ('guard', 'no_val_gain')
    """
    value = Verdict(verdict).value
    if value == "no_update" and any(c.guard for c in candidates):
        return "guard"
    return value


def _verdict(value) -> Verdict:
    try:
        return Verdict(value)
    except ValueError:
        raise TraceError(f"verdict={value!r} is not one of {', '.join(v.value for v in Verdict)}") from None


def _optional_float(value):
    return None if value is None else float(value)


@attrs.frozen
class Gradient:
    """Feedback for one param from one node call.

    ``id`` numbers the gradients of an attempt; ``param`` is the param it is for;
    ``node``/``record_id``/``call_index`` say which call of the forward trace of
    ``example_id`` it is about (the time stamp); ``score`` is that example's loss;
    ``source`` is a :class:`GradientSource`: ``critique`` (an LLM backward call,
    ``call`` = its id), ``passthrough`` (downstream feedback passed on unchanged; with a
    ``call``, the critique that call asked for was dropped and this was passed on instead),
    ``skip`` (the loss feedback via a skip connection), ``fixed`` (errors-only "no
    noticeable error"), ``control`` (control feedback passed on unchanged; with a ``call``,
    the critique was dropped) or ``loss`` (the loss feedback itself, e.g. whole-trace
    propagation); another value is a StrategyError listing these. ``via`` is an
    :class:`EdgeKind`: ``control`` when all the feedback it was written from came along
    control edges (directly, or through the critique of a later record that got only such
    feedback), so the gradient exists only because of control credit; else ``data`` (the
    default; step traces written before the field load so).

    >>> Gradient(0, "sys", "answer", "e1", 1, 0, 0.5, "ok", "fixed").source
    'fixed'
    >>> Gradient(0, "review", "review", "e1", 2, 0, 0.0, "confirm only...", via="control").via
    'control'
    """

    id: int
    param: str
    node: str
    example_id: str
    record_id: int
    call_index: int
    score: float = attrs.field(converter=float)
    text: str
    source: GradientSource = attrs.field(default=GradientSource.CRITIQUE,
                                         converter=one_of(GradientSource, "gradient source", StrategyError))
    call: int | None = None
    via: EdgeKind = attrs.field(default=EdgeKind.DATA, converter=one_of(EdgeKind, "gradient via", StrategyError))


@attrs.frozen
class Candidate:
    """One proposed value of ``param`` (``old`` -> ``value``) and what the guards said.

    ``value`` is None when no usable value came back; ``guard`` names the guard that
    dropped it ("" = it passed every guard and was proposed); ``gradients`` are the
    ids of the gradients the proposal was written from; ``call`` the optimizer call.

    >>> Candidate("sys", "Count.", "List, then count.", gradients=(0,), call=1).guard
    ''
    """

    param: str
    old: str
    value: str | None = None
    guard: str = ""
    reason: str = ""
    gradients: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    call: int | None = None


@attrs.frozen
class CallLog:
    """A critic/optimizer request the driver performed, with its response.

    >>> CallLog(0, Request(messages=(("user", "hi"),), role="backward"), Response("ok")).request.role
    'backward'
    """

    id: int
    request: Request
    response: Response


@attrs.frozen
class EffectLog:
    """One effect as performed: its kind, the ``round`` (batch) it was in, and a summary.

    ``kind`` is an :class:`EffectKind` (``call``, ``validate`` or ``rerun``); ``call``
    is the CallLog id for calls; for ``validate``/``rerun``: ``seed``, the examples
    run and their mean ``score``.

    >>> EffectLog(0, "validate", 0, seed=3, examples=("v1", "v2"), score=0.5).kind
    'validate'
    """

    id: int
    kind: EffectKind = attrs.field(converter=one_of(EffectKind, "effect kind", TraceError))
    round: int = 0
    call: int | None = None
    seed: int | None = None
    examples: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    score: float | None = attrs.field(default=None, converter=_optional_float)


@attrs.frozen
class StepTrace:
    """The recorded backward pass of one attempt of one training step (see module docs)."""

    step: int
    attempt: int
    strategy: str
    batch: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    calls: tuple[CallLog, ...] = attrs.field(default=(), converter=tuple)
    effects: tuple[EffectLog, ...] = attrs.field(default=(), converter=tuple)
    gradients: tuple[Gradient, ...] = attrs.field(default=(), converter=tuple)
    candidates: tuple[Candidate, ...] = attrs.field(default=(), converter=tuple)
    verdict: Verdict = attrs.field(default=Verdict.NO_UPDATE, converter=_verdict)
    reason: str = ""
    minibatch: float | None = attrs.field(default=None, converter=_optional_float)
    val: float | None = attrs.field(default=None, converter=_optional_float)

    def _repr_html_(self) -> str:
        """Verdict, gradients and candidates as HTML, text escaped (Jupyter; :func:`funcgrad.core.html.step_trace_html`)."""
        from funcgrad.core.html import step_trace_html
        return step_trace_html(self)


def check_step_trace(st: StepTrace) -> StepTrace:
    """Return ``st`` if its invariants hold, else raise TraceError naming the broken one.

    Calls and effects are numbered 0..n-1 in order; effect rounds never go back;
    every call is referenced by exactly one call effect; gradients are numbered
    0..n-1 and name an existing call (or none); candidates reference existing
    gradients and calls; an accepted attempt has a proposed candidate.
    """
    if [c.id for c in st.calls] != list(range(len(st.calls))):
        raise TraceError(f"step {st.step}: call ids {[c.id for c in st.calls]} are not 0..{len(st.calls) - 1}")
    if [e.id for e in st.effects] != list(range(len(st.effects))):
        raise TraceError(f"step {st.step}: effect ids are not 0..{len(st.effects) - 1}")
    rounds = [e.round for e in st.effects]
    if rounds != sorted(rounds):
        raise TraceError(f"step {st.step}: effect rounds {rounds} go back in time")
    referenced = sorted(e.call for e in st.effects if e.kind == "call")
    if st.effects and referenced != list(range(len(st.calls))):
        raise TraceError(f"step {st.step}: call effects reference calls {referenced}, expected each of 0..{len(st.calls) - 1} once")
    if [g.id for g in st.gradients] != list(range(len(st.gradients))):
        raise TraceError(f"step {st.step}: gradient ids are not 0..{len(st.gradients) - 1}")
    n_calls = len(st.calls)
    for g in st.gradients:
        if g.call is not None and not 0 <= g.call < n_calls:
            raise TraceError(f"step {st.step}: gradient {g.id} names call {g.call}, which does not exist")
    for c in st.candidates:
        bad = [i for i in c.gradients if not 0 <= i < len(st.gradients)]
        if bad:
            raise TraceError(f"step {st.step}: candidate for {c.param!r} uses unknown gradients {bad}")
        if c.call is not None and not 0 <= c.call < n_calls:
            raise TraceError(f"step {st.step}: candidate for {c.param!r} names call {c.call}, which does not exist")
    if st.verdict is Verdict.ACCEPTED and not any(c.value is not None and not c.guard for c in st.candidates):
        raise TraceError(f"step {st.step}: accepted, but no candidate passed the guards")
    return st


def _one_line(text: object, width: int) -> str:
    s = escape_line(" ".join(str(text).split()))
    return s if len(s) <= width else s[: width - 3] + "..."




def format_step_trace(st: StepTrace, *, width: int = 90) -> str:
    """The backward pass of one attempt, one record a line (attempts numbered from 1, verdicts as :data:`OUTCOME_LABELS`).

    A gradient whose feedback all came along control edges (``via == "control"``) ends its
    bracket with ``ctrl``, e.g. ``[critique c2 ctrl]``.

    >>> g = Gradient(0, "sys", "answer", "e1", 1, 0, 0.0, "count each item once", "critique", call=0)
    >>> c = Candidate("sys", "Count.", "List the items, then count.", gradients=(0,), call=1)
    >>> print(format_step_trace(StepTrace(1, 0, "backprop", ("e1",), gradients=(g,), candidates=(c,),
    ...                                   verdict="no_val_gain", reason="0.30 <= 0.35")))
    step 1 attempt 1 (backprop): batch e1; 0 calls in 0 rounds; rejected by validation: 0.30 <= 0.35
      g0 sys <- answer#0 %1 of e1 (score 0.00) [critique c0]: 'count each item once'
      candidate sys from g0 [c1]: 'Count.' -> 'List the items, then count.'
    """
    rounds = len({e.round for e in st.effects})
    key = outcome(st.verdict, st.candidates)
    label = OUTCOME_LABELS[key]
    # each reason once: a guard's reason is on its candidate's line; the loop's "no update: " repeats the label
    reason = "" if key == "guard" else st.reason.removeprefix(f"{label}: ")
    head = (f"step {st.step} attempt {st.attempt + 1} ({escape_line(st.strategy)}): batch {escape_line(', '.join(st.batch)) or '-'}; "
            f"{len(st.calls)} call{'s' if len(st.calls) != 1 else ''} in {rounds} round{'s' if rounds != 1 else ''}; "
            f"{label}" + (f": {_one_line(reason, 2 * width)}" if reason else ""))
    scores = [f"minibatch {st.minibatch:.3f}" if st.minibatch is not None else "",
              f"val {st.val:.3f}" if st.val is not None else ""]
    if any(scores):
        head += " (" + ", ".join(s for s in scores if s) + ")"
    lines = [head]
    for c in st.calls:
        r, resp = c.request, c.response
        last = r.messages[-1].content if r.messages else ""
        lines.append(f"  c{c.id} {r.role} [{resp.usage.total_tokens} tok, {escape_line(resp.finish_reason) or '-'}]"
                     f" asked {_one_line(last, width // 2)!r} -> {_one_line(resp.text, width // 2)!r}")
    for e in st.effects:
        if e.kind != "call":
            score = f", mean {e.score:.3f}" if e.score is not None else ""
            seed = f" seed {e.seed}" if e.seed is not None else ""
            lines.append(f"  e{e.id} {e.kind} in round {e.round}{seed}: {len(e.examples)} examples{score}")
    for g in st.gradients:
        via = (f" c{g.call}" if g.call is not None else "") + (" ctrl" if g.via == EdgeKind.CONTROL else "")
        lines.append(f"  g{g.id} {escape_line(g.param)} <- {escape_line(g.node)}#{g.call_index} %{g.record_id} of {escape_line(g.example_id)} "
                     f"(score {g.score:.2f}) [{g.source}{via}]: {_one_line(g.text, width)!r}")
    for c in st.candidates:
        used = "from " + ",".join(f"g{i}" for i in c.gradients) if c.gradients else "from no gradient"
        via = f" [c{c.call}]" if c.call is not None else ""
        if c.value is None or c.guard:
            verdict = f" stopped by guard {c.guard}: {_one_line(c.reason, width)}" if c.guard else f" no value: {_one_line(c.reason, width)}"
            lines.append(f"  candidate {escape_line(c.param)} {used}{via}:{verdict}")
        else:
            lines.append(f"  candidate {escape_line(c.param)} {used}{via}: {_one_line(c.old, width // 2)!r} -> {_one_line(c.value, width)!r}")
    return "\n".join(lines)
