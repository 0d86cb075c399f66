"""Running generated pipelines: valid traces, call-index order, purity/replay, batches, failures."""

import threading
import time

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funcgrad
from funcgrad import (
    LLM,
    EngineError,
    Example,
    Loss,
    Param,
    PipelineError,
    PromptState,
    TraceError,
    check_trace,
    fn,
    run,
    run_batch,
    run_example,
)
from funcgrad.core.errors import RunFailed
from funcgrad.core.run import Failure, mean_score, raise_on_failures
from funcgrad.engines.pool import worker_pool
from funcgrad.engines.scripted import ScriptedEngine, replies
from funcgrad.testing import pipelines, recorded_responder, texts

FAST = settings(max_examples=50, deadline=None)


def _ids_loss(output, example):
    return Loss(1.0 if str(output).startswith("a") else 0.0, f"output was {output!r}")


@FAST
@given(pipelines())
def test_generated_pipelines_give_valid_traces(gp):
    engine = ScriptedEngine(gp.respond)
    y, trace = run(gp.pipeline, gp.state, gp.x, engine=engine)
    assert check_trace(trace) is trace
    assert trace.records[0].kind == "input" and trace.records[0].output == gp.x
    assert trace[trace.output].output == y
    assert sum(r.kind == "llm" for r in trace.records) == gp.llm_calls == engine.calls()
    # Every LLM record reads only params of the state, and the request holds their rendered text.
    for r in trace.records:
        assert set(r.params) <= set(gp.state.names)
        if r.kind == "llm" and r.params:
            assert r.request.messages[0] == funcgrad.Message("system", gp.state.render(r.params))
        if r.kind == "llm":
            assert r.request.messages[-1].role == "user" and r.user_text == r.request.messages[-1].content


@FAST
@given(pipelines())
def test_call_indices_of_repeated_calls_strictly_increase_in_call_order(gp):
    _, trace = run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(gp.respond))
    per_node: dict[str, list[int]] = {}
    for r in trace.records:
        per_node.setdefault(r.node, []).append(r.call_index)
    for node, indices in per_node.items():
        assert indices == list(range(len(indices))), node
    # The generator's plan says how often each node is called.
    expected: dict[str, int] = {}
    for name, _kind, _args, times in gp.steps:
        expected[name] = expected.get(name, 0) + times
    assert {n: len(v) for n, v in per_node.items() if n != "x"} == expected


@FAST
@given(pipelines())
def test_run_is_pure_and_replay_reproduces_the_trace(gp):
    # Found by this test: fn records used to carry wall-clock latency, so two runs differed.
    y1, t1 = run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(gp.respond))
    y2, t2 = run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(gp.respond))
    assert (y1, t1) == (y2, t2)
    replay = ScriptedEngine(recorded_responder(t1))
    y3, t3 = run(gp.pipeline, gp.state, gp.x, engine=replay)
    assert t3 == t1 and y3 == y1
    assert funcgrad.dumps(t3) == funcgrad.dumps(t1)
    # Replaying answers strictly in call order reproduces it too.
    in_order = replies(*(r.output for r in t1.records if r.kind == "llm"))
    assert run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(in_order))[1] == t1


@FAST
@given(pipelines(), texts(max_size=8))
def test_different_answers_change_the_trace(gp, suffix):
    _, t1 = run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(gp.respond))
    _, t2 = run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(lambda r: gp.respond(r) + "!" + suffix))
    llm1 = [r for r in t1.records if r.kind == "llm"]
    llm2 = [r for r in t2.records if r.kind == "llm"]
    assert len(llm1) == len(llm2) == gp.llm_calls
    if llm1:
        # The first call sees the same request, so only the engine's answer differs.
        assert llm2[0].request == llm1[0].request
        assert llm2[0].output == llm1[0].output + "!" + suffix
        assert t1 != t2


@FAST
@given(pipelines(), st.lists(texts(max_size=6), min_size=0, max_size=6), st.integers(1, 4))
def test_run_batch_is_in_example_order_and_equals_sequential_runs(gp, xs, concurrency):
    examples = [Example(f"e{i}", x, "a") for i, x in enumerate(xs)]
    engine = ScriptedEngine(gp.respond)
    seen = []
    with worker_pool(concurrency) as pool:
        batch = run_batch(gp.pipeline, gp.state, examples, engine=engine, loss=_ids_loss, executor=pool, on_result=seen.append)
    sequential = tuple(
        run_example(gp.pipeline, gp.state, ex, engine=ScriptedEngine(gp.respond), loss=_ids_loss) for ex in examples
    )
    assert [r.example.id for r in batch] == [ex.id for ex in examples]
    assert batch == sequential
    assert sorted(r.example.id for r in seen) == sorted(ex.id for ex in examples)
    for r in batch:
        assert r.trace.example_id == r.example.id
        assert r.trace.records[-1].kind == "loss"
        assert r.trace.loss.output["score"] == r.loss.score
        check_trace(r.trace)


def _failing_pipelines():
    sys_node = LLM("answer", system=("sys",), user="{q}")

    @fn("parse")
    def parse(text):
        raise ValueError(f"cannot parse {text!r}")

    def node_raises(prompts, x):
        return parse(sys_node(prompts, q=x))

    def engine_raises(prompts, x):
        return sys_node(prompts, q=x)

    return {"fn node raises": (node_raises, "parse", "ValueError"), "engine raises": (engine_raises, "answer", "EngineError")}


@pytest.mark.parametrize("case", ["fn node raises", "engine raises"])
def test_failing_pipelines_are_failures_with_the_cause_recorded_never_scores(case):
    pipeline, bad_node, exc_name = _failing_pipelines()[case]

    def respond(request):
        if case == "engine raises":
            raise EngineError("model is down")
        return "42"

    state = PromptState.of(sys=Param("Answer."))
    with pytest.raises(PipelineError, match=f"node {bad_node!r} failed") as info:
        run(pipeline, state, "q", engine=ScriptedEngine(respond))
    trace = info.value.trace
    check_trace(trace)
    assert trace.output is None
    assert trace.records[-1].node == bad_node and trace.records[-1].error is not None
    assert trace.records[-1].output is None

    result = run_example(pipeline, state, Example("e1", "q", "42"), engine=ScriptedEngine(respond), loss=funcgrad.exact_match)
    assert result.failed and result.output is None and result.loss is None
    assert result.failure.kind == ("engine" if case == "engine raises" else "pipeline")
    assert result.failure.node == bad_node
    assert (exc_name in result.failure.message) or ("model is down" in result.failure.message)
    check_trace(result.trace)
    assert result.trace.loss is None  # never scored
    assert result.trace.records[-1].node == bad_node and result.trace.records[-1].error
    assert funcgrad.loads(funcgrad.dumps(result)) == result


def test_pipeline_body_raising_is_a_pipeline_failure():
    def pipeline(prompts, x):
        raise RuntimeError("bug in user code")

    result = run_example(pipeline, PromptState(), Example("e", "q", "a"), engine=ScriptedEngine(lambda r: ""), loss=funcgrad.exact_match)
    assert result.loss is None and result.failure == Failure("pipeline", "pipeline failed: RuntimeError: bug in user code")
    assert [r.kind for r in result.trace.records] == ["input"]


def test_a_loss_that_raises_is_a_loss_failure_recorded_in_a_loss_record():
    node = LLM("answer", user="{q}")

    def loss(output, example):
        raise ZeroDivisionError("division by zero")

    result = run_example(lambda p, x: node(p, q=x), PromptState(), Example("e", "q", "a"), engine=ScriptedEngine(lambda r: "4"), loss=loss)
    assert result.failure == Failure("loss", "ZeroDivisionError: division by zero") and result.output == "4"
    check_trace(result.trace)
    assert result.trace.loss.error == "ZeroDivisionError: division by zero" and result.trace.loss.output is None


@pytest.mark.parametrize("bad", ["unknown param", "missing template key", "lone surrogate"])
def test_user_errors_in_a_pipeline_are_failures_found_before_any_call(bad):
    node = {
        "unknown param": LLM("answer", system=("nope",), user="{q}"),
        "missing template key": LLM("answer", user="{question}"),
        "lone surrogate": LLM("answer", system=("sys",), user="{q}"),
    }[bad]
    state = PromptState.of(sys=Param("Say \udc80 it."))
    calls = []
    engine = ScriptedEngine(lambda r: calls.append(r) or "4")
    result = run_example(lambda p, x: node(p, q=x), state, Example("e", "q", "4"), engine=engine, loss=funcgrad.exact_match)
    assert result.failure.kind == "pipeline" and calls == []
    assert {"unknown param": "'nope'", "missing template key": "needs input 'question'", "lone surrogate": "not valid Unicode"}[bad] in result.failure.message


def test_a_lone_surrogate_in_an_example_is_refused_when_it_is_made():
    with pytest.raises(funcgrad.SerializationError, match=r"Example.x contains '\\udc80' at position 2 \(after 'ab'\)"):
        Example("e", "ab\udc80")


def _batch(n_failing: int, n: int = 10):
    node = LLM("answer", user="{q}")

    def respond(request):
        if int(request.messages[-1].content) < n_failing:
            raise EngineError("HTTP 500 after retries")
        return "ok"

    return lambda p, x: node(p, q=x), tuple(Example(f"e{i}", str(i), "ok") for i in range(n)), ScriptedEngine(respond)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_run_batch_stops_on_a_failure_and_the_error_names_it(concurrency):
    pipeline, examples, engine = _batch(n_failing=1)
    seen = []
    with pytest.raises(RunFailed, match=r"1 of 10 examples failed .* example 'e0': engine failure in node 'answer': .*HTTP 500") as info:
        with worker_pool(concurrency) as pool:
            run_batch(pipeline, PromptState(), examples, engine=engine, loss=funcgrad.exact_match, executor=pool, on_result=seen.append)
    assert [r.example.id for r in info.value.results if r.failed] == ["e0"]
    assert all(not r.failed for r in seen)  # a failure is never reported as a scored result


@pytest.mark.parametrize("error", [EngineError("HTTP 500 after retries"), funcgrad.EngineUnavailable("HTTP 401")])
def test_once_a_batch_must_stop_no_worker_starts_another_example(error):
    node = LLM("answer", user="{q}")
    started = []

    def respond(request):
        started.append(request.messages[-1].content)
        if request.messages[-1].content == "0":
            raise error
        time.sleep(0.02)  # the other workers are mid-call when the failure lands
        return "ok"

    examples = tuple(Example(f"e{i}", str(i), "ok") for i in range(30))
    with pytest.raises((RunFailed, funcgrad.EngineUnavailable)):
        with worker_pool(3) as pool:
            run_batch(lambda p, x: node(p, q=x), PromptState(), examples, engine=ScriptedEngine(respond), loss=funcgrad.exact_match, executor=pool)
    assert "0" in started and len(started) <= 3  # only the examples already in flight when "0" failed


def test_run_batch_runs_examples_together_on_the_executor_it_is_given():
    node = LLM("answer", user="{q}")
    meet = threading.Barrier(3, timeout=10)  # breaks unless three examples are in flight at once

    def respond(request):
        meet.wait()
        return "ok"

    examples = tuple(Example(f"e{i}", str(i), "ok") for i in range(3))
    with worker_pool(3) as pool:
        results = run_batch(lambda p, x: node(p, q=x), PromptState(), examples, engine=ScriptedEngine(respond),
                            loss=funcgrad.exact_match, executor=pool)
    assert [r.loss.score for r in results] == [1.0, 1.0, 1.0] and not meet.broken


@given(st.integers(0, 10), st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]))
@settings(max_examples=40, deadline=None)
def test_failure_rate_threshold(n_failing, rate):
    pipeline, examples, engine = _batch(n_failing)
    allowed = int(rate * 10)
    try:
        results = run_batch(pipeline, PromptState(), examples, engine=engine, loss=funcgrad.exact_match, max_failure_rate=rate)
    except RunFailed as exc:
        assert n_failing > allowed and sum(r.failed for r in exc.results) == allowed + 1
        return
    assert n_failing <= allowed and sum(r.failed for r in results) == n_failing
    assert len(raise_on_failures(results, max_failure_rate=rate)) == 10 - n_failing
    if n_failing:
        with pytest.raises(RunFailed):
            mean_score(results)  # a failure is never averaged in as a 0
    else:
        assert mean_score(results) == 1.0


def test_a_result_is_an_answer_or_a_failure():
    ex = Example("e", "q")
    with pytest.raises(funcgrad.FuncgradError, match="exactly one of loss"):
        funcgrad.Result(ex, None, funcgrad.Trace(), None)
    with pytest.raises(funcgrad.FuncgradError, match="exactly one of loss"):
        funcgrad.Result(ex, None, funcgrad.Trace(), Loss(0.0), Failure("engine", "x"))


def test_run_errors_name_the_problem():
    node = LLM("answer", system=("nope",), user="{q}")
    state = PromptState.of(sys=Param("x"))
    with pytest.raises(PipelineError, match="'nope'"):
        run(lambda p, x: node(p, q=x), state, "q", engine=ScriptedEngine(lambda r: ""))
    other = LLM("answer", user="{question}")
    with pytest.raises(PipelineError, match="needs input 'question'"):
        run(lambda p, x: other(p, q=x), state, "q", engine=ScriptedEngine(lambda r: ""))
    with pytest.raises(TraceError, match="returned a plain str"):
        run(lambda p, x: "text", state, "q", engine=ScriptedEngine(lambda r: ""))
    with pytest.raises(TraceError, match="PromptState"):
        run(lambda p, x: x, {"sys": "x"}, "q", engine=ScriptedEngine(lambda r: ""))
    with pytest.raises(TraceError, match="outside funcgrad.run"):
        node(state, q="q")
    with pytest.raises(funcgrad.FuncgradError, match="score must be a number in \\[0, 1\\], got 1.5"):
        Loss(1.5)


def test_varargs_vars_stay_edges():
    # Found while writing these tests: Vars passed through *args/**kwargs used to lose their edges.
    @fn("join")
    def join(*parts, sep="|"):
        return sep.join(parts)

    @fn("wrap")
    def wrap(**named):
        return "[" + named["a"] + "]"

    _, trace = run(lambda p, x: wrap(a=join(x, x, sep=",")), PromptState(), "hi", engine=ScriptedEngine(lambda r: ""))
    assert trace.records[1].inputs == (0, 0) and trace.records[1].input_names == ("parts[0]", "parts[1]")
    assert trace.records[2].inputs == (1,) and trace.records[2].input_names == ("a",)
    assert trace.records[2].output == "[hi,hi]"
    assert [r.id for r in funcgrad.prune(attrs.evolve(trace)).records] == [0, 1, 2]
