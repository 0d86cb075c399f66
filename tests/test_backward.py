"""The recorded backward pass (StepTrace): checker, printer, JSON round trip, run-directory log."""

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

import funcgrad
from funcgrad import Candidate, StepTrace, TraceError, Verdict, check_step_trace, format_step_trace
from funcgrad.core.backward import OUTCOME_LABELS, outcome
from funcgrad.core.errors import CheckpointError
from funcgrad.testing import step_traces
from funcgrad.training.rundir import RunDir, read_steps


@settings(max_examples=80, deadline=None)
@given(step_traces())
def test_generated_step_traces_check_round_trip_and_print_one_line_per_record(st):
    assert check_step_trace(st) is st
    assert funcgrad.loads(funcgrad.dumps(st)) == st
    lines = format_step_trace(st).splitlines()
    runs = sum(1 for e in st.effects if e.kind != "call")
    assert len(lines) == 1 + len(st.calls) + runs + len(st.gradients) + len(st.candidates)
    assert lines[0].startswith(f"step {st.step} attempt {st.attempt + 1} ")
    assert OUTCOME_LABELS[outcome(st.verdict, st.candidates)] in lines[0]


@settings(max_examples=40, deadline=None)
@given(step_traces(max_calls=3))
def test_the_checker_catches_broken_ids_and_references(st):
    if st.calls:
        with pytest.raises(TraceError, match="call ids"):
            check_step_trace(attrs.evolve(st, calls=st.calls[::-1] if len(st.calls) > 1 else (attrs.evolve(st.calls[0], id=5),)))
    if st.gradients:
        g = attrs.evolve(st.gradients[0], call=len(st.calls) + 3)
        with pytest.raises(TraceError, match="names call"):
            check_step_trace(attrs.evolve(st, gradients=(g,) + st.gradients[1:]))
    bad = Candidate("p", "old", "new", gradients=(len(st.gradients) + 1,))
    with pytest.raises(TraceError, match="unknown gradients"):
        check_step_trace(attrs.evolve(st, candidates=(bad,)))
    with pytest.raises(TraceError, match="no candidate passed"):
        check_step_trace(attrs.evolve(st, candidates=(), verdict=Verdict.ACCEPTED))
    with pytest.raises(TraceError, match="verdict='maybe'"):
        attrs.evolve(st, verdict="maybe")


@settings(max_examples=20, deadline=None)
@given(step_traces(), step_traces())
def test_steps_jsonl_keeps_lines_in_order_and_names_a_bad_line(tmp_path_factory, a, b):
    rd = RunDir(tmp_path_factory.mktemp("run"))
    rd.log_step(a)
    rd.log_step(b)
    assert read_steps(rd.path) == (a, b)
    with open(rd.steps_path, "ab") as fh:
        fh.write(b'{"type": "StepTrace", "step": "x"}\n')
    with pytest.raises(CheckpointError, match="steps.jsonl:3"):
        read_steps(rd.path)


def test_a_run_without_steps_has_none(tmp_path):
    assert read_steps(tmp_path) == ()


# ---------------------------------------------------------------- call ids: the driver numbers, the program reads


def _asker(name, sizes):
    """A program asking batches of ``sizes`` calls; returns every (request text, id) it was answered with."""
    seen = []
    for b, size in enumerate(sizes):
        batch = tuple(funcgrad.Call(funcgrad.Request(messages=(("user", f"{name}.{b}.{i}"),))) for i in range(size))
        logs = yield batch
        seen += [(log.request.messages[0].content, log.id) for log in logs]
    return seen


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.lists(hst.integers(1, 3), max_size=3), min_size=1, max_size=4), hst.integers(1, 3))
def test_call_ids_are_the_order_asked_and_the_same_for_run_program_and_the_driver(plan, workers):
    from funcgrad.core.effects import trampoline
    from funcgrad.engines.scripted import ScriptedEngine
    from funcgrad.training.driver import drive

    def program():
        return funcgrad.gather(_asker(f"p{n}", sizes) for n, sizes in enumerate(plan))

    echo = lambda e: funcgrad.Response(e.request.messages[0].content)  # noqa: E731
    ran = trampoline(program(), lambda batch: [echo(e) for e in batch])
    asked = [e.request.messages[0].content for pairs in ran.rounds for e, _ in pairs]
    answered = sorted((id_, text) for seen in ran.value for text, id_ in seen)
    assert answered == list(enumerate(asked))  # call i is the i-th call asked, and its answer says so
    assert [c.id for c in ran.calls] == list(range(len(asked)))
    assert funcgrad.run_program(program(), echo) == ran.value
    engine = ScriptedEngine(lambda r: r.messages[0].content, concurrency=workers)
    done = drive(program(), strategy="ids", critic=engine)
    assert done.value == ran.value and check_step_trace(StepTrace(1, 0, "ids", calls=done.calls, effects=done.effects))
    assert [(e.round, e.call) for e in done.effects] == [(r, c.id) for r, pairs in enumerate(ran.rounds) for _, c in pairs]


def test_a_call_answered_with_something_else_than_a_response_is_a_strategy_error():
    with pytest.raises(funcgrad.StrategyError, match="a Call of strategy 'mine' was answered with a str, not a Response"):
        funcgrad.run_program(_asker("p", [1]), lambda e: "ok", strategy="mine")


def test_a_wrong_gradient_source_or_effect_kind_names_the_allowed_values():
    with pytest.raises(funcgrad.StrategyError, match="gradient source 'guess' is not one of: critique, passthrough, skip, fixed, loss"):
        funcgrad.Gradient(0, "sys", "answer", "e1", 1, 0, 0.5, "ok", "guess")
    with pytest.raises(TraceError, match="effect kind 'ask' is not one of: call, validate, rerun"):
        funcgrad.EffectLog(0, "ask")
    g = funcgrad.Gradient(0, "sys", "answer", "e1", 1, 0, 0.5, "ok", "fixed")
    assert g.source is funcgrad.GradientSource.FIXED and g.source == "fixed" and repr(g.source) == "'fixed'"
    assert b'"source":"fixed"' in funcgrad.dumps(g) and funcgrad.loads(funcgrad.dumps(g)) == g
