"""Running pipelines: one example, or a batch with bounded concurrency.

A pipeline is a plain function ``(prompts, x) -> Var``. :func:`run` executes it and
returns its output and the immutable :class:`~funcgrad.core.trace.Trace`; given the same
engine answers, the same inputs give the same trace. :func:`run_example` also scores
the output with a loss and appends the loss record; :func:`run_batch` does that for
many examples at once.

>>> from funcgrad import LLM, Param, PromptState
>>> from funcgrad.engines.scripted import ScriptedEngine
>>> node = LLM("answer", system=("sys",), user="{input}")
>>> state = PromptState.of(sys=Param("Reply with a number."))
>>> ex = Example("e1", "2+2?", "4")
>>> result = run_example(lambda p, x: node(p, input=x), state, ex, engine=ScriptedEngine(lambda r: "4"), loss=exact_match)
>>> result.loss.score, result.trace.records[-1].kind
(1.0, 'loss')
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from funcgrad.core.calls import Engine
from funcgrad.core.errors import FuncgradError, PipelineError, TraceError
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
    """One example: an id, the pipeline input ``x`` and the expected ``target`` (JSON values)."""

    id: str
    x: Any = attrs.field(converter=freeze)
    target: Any = attrs.field(default=None, converter=freeze)


@attrs.frozen
class Result:
    """The outcome of one example: its output, full trace (ending in the loss record) and loss."""

    example: Example
    output: Any = attrs.field(converter=freeze)
    trace: Trace
    loss: Loss

    @property
    def failed(self) -> bool:
        """True when the pipeline raised before producing an output."""
        return self.trace.output is None


LossFn = Callable[[Any, Example], Loss]


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
        scored = loss(y.value, example) if loss is not None else None
    finally:
        _CURRENT.reset(token)
    trace = builder.freeze(example_id, y.id)
    return y.value, trace, scored


def with_loss(trace: Trace, loss: Loss, target: Any = None) -> Trace:
    """Return ``trace`` with a loss record appended (input: the output record, if any).

    >>> t = with_loss(Trace((Record(0, "x", "input"),), output=0), Loss(1.0, "ok"), target="a")
    >>> t.loss.output["score"]
    1.0
    """
    if trace.loss is not None:
        raise TraceError("trace already has a loss record; score each trace once")
    next_id = trace.records[-1].id + 1 if trace.records else 0
    inputs = (trace.output,) if trace.output is not None else ()
    record = Record(
        next_id, "loss", "loss", inputs=inputs, input_names=("output",) * len(inputs),
        request={"target": target}, output={"score": loss.score, "feedback": loss.feedback},
    )
    return attrs.evolve(trace, records=trace.records + (record,))


def run_example(pipeline: Pipeline, state: PromptState, example: Example, *, engine: Engine, loss: LossFn) -> Result:
    """Run one example and score it. A failing pipeline gives score 0 with the error as feedback.

    The loss function runs inside the run, so an LLM judge written as an LLM node
    (``role="judge"``) is recorded in the trace too.
    """
    try:
        output, trace, scored = _run(pipeline, state, example.x, engine, example.id, loss, example)
    except PipelineError as exc:
        trace = exc.trace if exc.trace is not None else Trace(example_id=example.id)
        scored = Loss(0.0, f"the pipeline failed before producing an answer: {exc}")
        output = None
    if not isinstance(scored, Loss):
        raise FuncgradError(f"the loss function returned {type(scored).__name__}; it must return funcgrad.Loss")
    return Result(example, output, with_loss(trace, scored, example.target), scored)


def run_batch(
    pipeline: Pipeline,
    state: PromptState,
    examples: Sequence[Example],
    *,
    engine: Engine,
    loss: LossFn,
    concurrency: int | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> tuple[Result, ...]:
    """Run and score many examples with at most ``concurrency`` in flight (default: the engine's).

    Results come back in the order of ``examples``; ``on_result`` is called as each
    finishes (for progress display). A fatal error (budget, replay miss) cancels the
    examples not yet started and is raised.
    """
    workers = max(1, concurrency or getattr(engine, "concurrency", 1))
    if workers == 1 or len(examples) <= 1:
        out = []
        for ex in examples:
            out.append(run_example(pipeline, state, ex, engine=engine, loss=loss))
            if on_result:
                on_result(out[-1])
        return tuple(out)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_example, pipeline, state, ex, engine=engine, loss=loss) for ex in examples]
        try:
            for fut in concurrent.futures.as_completed(futures):
                if on_result:
                    on_result(fut.result())
            return tuple(f.result() for f in futures)
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def mean_score(results: Sequence[Result]) -> float:
    """Mean loss score of ``results`` (0.0 for none).

    >>> mean_score([])
    0.0
    """
    return sum(r.loss.score for r in results) / len(results) if results else 0.0
