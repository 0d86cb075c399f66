"""Running pipelines: one example, or a batch (concurrently on an executor the caller passes).

A pipeline is a plain function ``(prompts, x) -> Var``. :func:`run` executes it and
returns its output and the immutable :class:`~funcgrad.core.trace.Trace`; given the same
engine answers, the same inputs give the same trace. :func:`run_example` also scores
the output with a loss and appends the loss record; :func:`run_batch` does that for
many examples at once.

An example either gets an **answer** (a :class:`Result` with a :class:`Loss`: scored,
critiqued, optimized) or a **failure** (a :class:`Result` with a :class:`Failure`: a
model call failed for good, the pipeline or the loss raised). A failure is never
scored: :func:`mean_score` refuses it, :func:`run_batch` stops on it (or above a failure
rate) with :class:`~funcgrad.core.errors.RunFailed`, and :func:`raise_on_failures` is the
check a training loop makes before handing results to an optimizer.

>>> from funcgrad.core import LLM, Param, PromptState, Response
>>> class Four:  # an engine: anything with complete(Request) -> Response
...     def complete(self, request):
...         return Response("4")
>>> node = LLM("answer", system=("sys",), user="{input}")
>>> state = PromptState.of(sys=Param("Reply with a number."))
>>> ex = Example("e1", "2+2?", "4")
>>> result = run_example(lambda p, x: node(p, input=x), state, ex, engine=Four(), loss=exact_match)
>>> result.loss.score, result.trace.records[-1].kind
(1.0, 'loss')
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from funcgrad.core.calls import Engine, Request
from funcgrad.core.errors import EngineError, FuncgradError, PipelineError, RunFailed, TraceError
from funcgrad.core.nodes import _CURRENT, FATAL_ERRORS, Var, _Builder
from funcgrad.core.state import PromptState
from funcgrad.core.trace import Record, Trace
from funcgrad.core.values import freeze

Pipeline = Callable[[PromptState, Var], Var]


def _score(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise FuncgradError(f"Loss.score must be a number in [0, 1], got {value!r}")


@attrs.frozen
class Loss:
    """A score in [0, 1] (1 is perfect) and feedback saying in words what went wrong.

    >>> Loss(0.0, "expected 4, got 5").score
    0.0
    """

    score: float = attrs.field(converter=lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v, validator=_score)
    feedback: str = attrs.field(default="", validator=attrs.validators.instance_of(str))


@attrs.frozen
class Example:
    """One example: an id, the pipeline input ``x`` and the expected ``target`` (JSON values).

    Text must be valid Unicode (no lone surrogates; :func:`~funcgrad.core.values.freeze`
    checks it), so a bad data file fails before any model call is paid for.
    """

    id: str
    x: Any = attrs.field(converter=lambda v: freeze(v, where="Example.x"))
    target: Any = attrs.field(default=None, converter=lambda v: freeze(v, where="Example.target"))


FAILURE_KINDS = ("engine", "pipeline", "loss")


@attrs.frozen
class Failure:
    """Why an example has no answer: ``kind`` is ``engine`` (a model call failed for good),
    ``pipeline`` (the pipeline or one of its nodes raised) or ``loss`` (the loss function
    raised); ``node`` names the failing node ("" if none), ``message`` the cause.

    >>> Failure("engine", "HTTP 400: context length exceeded", node="answer").kind
    'engine'
    """

    kind: str = attrs.field(validator=attrs.validators.in_(FAILURE_KINDS))
    message: str = attrs.field(validator=attrs.validators.instance_of(str))
    node: str = ""


def _answer_or_failure(instance, attribute, value):
    if (instance.loss is None) == (value is None):
        raise FuncgradError("a Result holds exactly one of loss (an answer) and failure (no answer)")


@attrs.frozen
class Result:
    """The outcome of one example: an answer (``loss`` set) or a failure (``failure`` set).

    ``trace`` is the full trace: an answer's ends in its loss record; a failure's ends
    in the record that failed (its ``error`` says why), or in a loss record with an error
    when the loss function raised.

    >>> ex = Example("e", "q", "a")
    >>> Result(ex, None, Trace(), None, Failure("pipeline", "ValueError: bad")).failed
    True
    """

    example: Example
    output: Any = attrs.field(converter=freeze)
    trace: Trace
    loss: Loss | None
    failure: Failure | None = attrs.field(default=None, validator=_answer_or_failure)

    @property
    def failed(self) -> bool:
        """True when the example has no answer (see ``failure``)."""
        return self.failure is not None


@runtime_checkable
class ModelLoss(Protocol):
    """A loss that asks a model, e.g. :class:`funcgrad.core.judge.Judge`.

    :func:`run_example` sends ``request(output, example)`` through its own engine and
    scores with ``read(reply, example)``, which raises EngineError for an unusable reply.
    """

    def request(self, output: Any, example: Example) -> Request: ...

    def read(self, reply: str, example: Example) -> Loss: ...


LossFn = Callable[[Any, Example], Loss] | ModelLoss


def exact_match(output: Any, example: Example) -> Loss:
    """Loss 1 when the stripped output text equals the target text, else 0 with feedback.

    >>> exact_match(" 4 ", Example("e", "2+2?", 4)).score
    1.0
    """
    got, want = str(output).strip(), str(example.target).strip()
    if got == want:
        return Loss(1.0, f"correct: the answer {want!r} was expected and given")
    return Loss(0.0, f"wrong: expected {want!r} but the output was {got[:200]!r}")


def run(pipeline: Pipeline, state: PromptState, x: Any, *, engine: Engine, example_id: str = "") -> tuple[Any, Trace]:
    """Run ``pipeline(state, x)`` and return ``(output value, trace)``.

    The input becomes record 0 (kind ``input``). Node calls inside the pipeline
    record themselves. If the pipeline raises, a PipelineError carrying the partial
    trace is raised (budget exhaustion and replay misses propagate as they are).
    """
    output, trace, _ = _run(pipeline, state, x, engine, example_id, loss=None, example=None)
    return output, trace


def _run(pipeline, state, x, engine, example_id, loss, example):
    """``(output value, trace, Loss or None)``; the loss runs inside the run when given."""
    if not isinstance(state, PromptState):
        raise TraceError(f"run() needs a PromptState, got {type(state).__name__}")
    builder = _Builder(engine)
    token = _CURRENT.set(builder)
    try:
        xvar = Var(builder.add("x", "input", output=x).id, freeze(x, where="pipeline input"))
        try:
            y = pipeline(state, xvar)
        except FATAL_ERRORS:
            raise
        except PipelineError as exc:
            raise PipelineError(str(exc), trace=builder.freeze(example_id, None)) from exc.__cause__
        except Exception as exc:
            message = f"pipeline failed: {type(exc).__name__}: {exc}"
            raise PipelineError(message, trace=builder.freeze(example_id, None)) from exc
        if not isinstance(y, Var):
            raise TraceError(
                f"the pipeline returned a plain {type(y).__name__}; return the Var a node produced "
                "(wrap post-processing in a funcgrad.fn node so the trace keeps the edge)"
            )
        if isinstance(loss, ModelLoss):
            scored = _ask(loss, y._value, example, engine)
        else:
            try:
                scored = loss(y._value, example) if loss is not None else None
            except FATAL_ERRORS:
                raise
            except Exception as exc:
                raise _LossRaised(exc, y._value, builder.freeze(example_id, y.id)) from exc
    finally:
        _CURRENT.reset(token)
    trace = builder.freeze(example_id, y.id)
    return y._value, trace, scored


class _LossRaised(Exception):
    """Private: the loss function raised ``error`` after the pipeline produced ``output``."""

    def __init__(self, error: Exception, output: Any, trace: Trace):
        super().__init__(str(error))
        self.error, self.output, self.trace = error, output, trace


def _ask(loss: ModelLoss, output: Any, example: Example, engine: Engine) -> tuple[Loss | None, dict]:
    """A model loss's one call through ``engine``: (Loss, or None when it failed; the loss record's call fields)."""
    request = loss.request(output, example)
    call: dict = {"request": request}
    try:
        response = engine.complete(request)
    except FATAL_ERRORS:
        raise
    except EngineError as exc:
        return None, {**call, "error": f"{type(exc).__name__}: {exc}"}
    call.update(reply=response.text, usage=response.usage)
    try:
        return loss.read(response.text, example), call
    except EngineError as exc:
        return None, {**call, "error": f"{type(exc).__name__}: {exc}"}


def with_loss(trace: Trace, loss: Loss | None, target: Any = None, call: dict | None = None) -> Trace:
    """Return ``trace`` with a loss record appended (input: the output record, if any).

    The record's ``consts`` hold the ``target``; its ``output`` the score and feedback.
    ``call`` holds a model loss's call (``request``, ``reply``, ``usage``, ``error``):
    the record then carries the :class:`~funcgrad.core.calls.Request`, the reply and
    the usage; when the call failed, ``loss`` is None and the record carries the error
    instead of a score.

    >>> t = with_loss(Trace((Record(0, "x", "input"),), output=0), Loss(1.0, "ok"), target="a")
    >>> t.loss.output["score"], t.loss.consts["target"]
    (1.0, 'a')
    """
    if trace.loss is not None:
        raise TraceError("trace already has a loss record; score each trace once")
    next_id = trace.records[-1].id + 1 if trace.records else 0
    inputs = (trace.output,) if trace.output is not None else ()
    call = call or {}
    output = {"score": loss.score, "feedback": loss.feedback} if loss is not None else {}
    if "reply" in call:
        output["reply"] = call["reply"]
    record = Record(
        next_id, "loss", "loss", inputs=inputs, input_names=("output",) * len(inputs),
        consts={"target": target}, request=call.get("request"), output=output,
        usage=call.get("usage"), error=call.get("error"),
    )
    return attrs.evolve(trace, records=trace.records + (record,))


def _loss_record(trace: Trace, target: Any, **fields) -> Record:
    """A loss record appended after ``trace`` (input: its output record, if any)."""
    next_id = trace.records[-1].id + 1 if trace.records else 0
    inputs = (trace.output,) if trace.output is not None else ()
    return Record(next_id, "loss", "loss", inputs=inputs, input_names=("output",) * len(inputs), consts={"target": target}, **fields)


def _failure_of(exc: BaseException, trace: Trace, default: str) -> Failure:
    """Classify an exception raised while running or scoring an example."""
    cause = exc.__cause__ if isinstance(exc, PipelineError) and exc.__cause__ is not None else exc
    node = next((r.node for r in reversed(trace.records) if r.error is not None), "")
    kind = "engine" if isinstance(cause, EngineError) else default
    return Failure(kind, str(exc) if isinstance(exc, FuncgradError) else f"{type(exc).__name__}: {exc}", node)


def run_example(pipeline: Pipeline, state: PromptState, example: Example, *, engine: Engine, loss: LossFn) -> Result:
    """Run one example and score it; a failure (model call, pipeline or loss raised) is returned, not scored.

    The loss function runs inside the run, so an LLM judge written as an LLM node
    (``role="judge"``) is recorded in the trace too. Budget exhaustion, replay misses
    and an unavailable server (``FATAL_ERRORS``) are raised: they stop the whole run.
    """
    try:
        output, trace, scored = _run(pipeline, state, example.x, engine, example.id, loss, example)
    except PipelineError as exc:
        trace = exc.trace if exc.trace is not None else Trace(example_id=example.id)
        return Result(example, None, trace, None, _failure_of(exc, trace, "pipeline"))
    except _LossRaised as exc:
        failure = _failure_of(exc.error, exc.trace, "loss")
        record = _loss_record(exc.trace, example.target, error=failure.message)
        return Result(example, exc.output, attrs.evolve(exc.trace, records=exc.trace.records + (record,)), None, failure)
    call = None
    if isinstance(loss, ModelLoss):
        scored, call = scored
        if scored is None:  # the judge's call or its reply failed: recorded, never scored
            failure = Failure("loss" if "reply" in call else "engine", f"the judge failed: {call['error']}", node="loss")
            return Result(example, output, with_loss(trace, None, example.target, call), None, failure)
    if not isinstance(scored, Loss):
        raise FuncgradError(f"the loss function returned {type(scored).__name__}; it must return funcgrad.Loss")
    return Result(example, output, with_loss(trace, scored, example.target, call), scored)


def run_batch(
    pipeline: Pipeline,
    state: PromptState,
    examples: Sequence[Example],
    *,
    engine: Engine,
    loss: LossFn,
    executor: concurrent.futures.Executor | None = None,
    on_result: Callable[[Result], None] | None = None,
    max_failure_rate: float | None = 0.0,
) -> tuple[Result, ...]:
    """Run and score many examples: one after another, or on ``executor``'s threads when given.

    The core starts no threads: a caller that wants examples in flight together
    passes an executor (``funcgrad.engines.pool.worker_pool(n)``, or any
    ``concurrent.futures.Executor``; its size bounds the examples in flight).
    Results come back in the order of ``examples``; ``on_result`` is called as each
    finishes (for progress display). As soon as more than ``max_failure_rate`` of the
    examples failed (default 0: any failure; None: never), the examples not yet started
    are cancelled and :class:`~funcgrad.core.errors.RunFailed` is raised carrying the
    results finished so far; failures within the rate are returned (and passed to
    ``on_result``) with ``failure`` set. A fatal error (budget, replay miss, server
    unavailable) cancels the rest and is raised.
    """
    allowed = _allowed_failures(max_failure_rate, len(examples))
    finished: list[Result] = []

    def take(result: Result) -> None:
        finished.append(result)
        if sum(r.failed for r in finished) > allowed:
            raise RunFailed(_failure_message(finished, allowed, len(examples)), finished)
        if on_result:
            on_result(result)

    if executor is None or len(examples) <= 1:
        for ex in examples:
            take(run_example(pipeline, state, ex, engine=engine, loss=loss))
        return tuple(finished)
    stopping = threading.Event()  # set by the worker that hit the stop, so no worker starts another example
    failures = itertools.count(1)

    def guarded(ex: Example) -> Result | None:
        if stopping.is_set():
            return None
        try:
            result = run_example(pipeline, state, ex, engine=engine, loss=loss)
        except BaseException:
            stopping.set()
            raise
        if result.failed and next(failures) > allowed:
            stopping.set()
        return result

    futures = [executor.submit(guarded, ex) for ex in examples]
    try:
        for fut in concurrent.futures.as_completed(futures):
            if (result := fut.result()) is not None:
                take(result)
        return tuple(f.result() for f in futures)
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def _allowed_failures(max_failure_rate: float | None, n: int) -> float:
    if max_failure_rate is None:
        return math.inf
    if isinstance(max_failure_rate, bool) or not isinstance(max_failure_rate, int | float) or not 0.0 <= max_failure_rate <= 1.0:
        raise FuncgradError(f"max_failure_rate={max_failure_rate!r} must be a number in [0, 1] or None")
    return math.floor(max_failure_rate * n + 1e-9)


def _failure_message(results: Sequence[Result], allowed: float, total: int, shown: int = 3) -> str:
    failed = [r for r in results if r.failed]
    first = "; ".join(
        f"example {r.example.id!r}: {r.failure.kind} failure" + (f" in node {r.failure.node!r}" if r.failure.node else "")
        + f": {r.failure.message[:300]}"
        for r in failed[:shown]
    )
    more = f" (and {len(failed) - shown} more)" if len(failed) > shown else ""
    limit = "no failure is allowed" if allowed == 0 else f"at most {allowed} of {total} may fail"
    return f"{len(failed)} of {total} examples failed instead of being answered ({limit}): {first}{more}"


def raise_on_failures(results: Sequence[Result], *, max_failure_rate: float = 0.0) -> tuple[Result, ...]:
    """The answered results, after checking that at most ``max_failure_rate`` of ``results`` failed.

    Raises :class:`~funcgrad.core.errors.RunFailed` naming the first failures and their
    causes otherwise. A training loop calls it before scoring a batch or handing it
    to an optimizer, so a failure is never mistaken for a wrong answer.

    >>> ok = Result(Example("a", "q"), "4", Trace(), Loss(1.0))
    >>> bad = Result(Example("b", "q"), None, Trace(), None, Failure("engine", "HTTP 401"))
    >>> [r.example.id for r in raise_on_failures([ok, bad], max_failure_rate=0.5)]
    ['a']
    >>> raise_on_failures([ok, bad])
    Traceback (most recent call last):
    funcgrad.core.errors.RunFailed: 1 of 2 examples failed instead of being answered (no failure is allowed): example 'b': engine failure: HTTP 401
    """
    allowed = _allowed_failures(max_failure_rate, len(results))
    if sum(r.failed for r in results) > allowed:
        raise RunFailed(_failure_message(results, allowed, len(results)), results)
    return tuple(r for r in results if not r.failed)


def mean_score(results: Sequence[Result]) -> float:
    """Mean loss score of ``results`` (0.0 for none); RunFailed if any of them is a failure.

    >>> mean_score([])
    0.0
    """
    answered = raise_on_failures(results)
    return sum(r.loss.score for r in answered) / len(answered) if answered else 0.0
