"""The recorded backward pass (StepTrace): checker, printer, JSON round trip, run-directory log."""

import attrs
import pytest
from hypothesis import given, settings

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
