"""Control edges in the trace layer: what a run records, what check_trace refuses, control_reads and control_cone."""

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funcgrad
from funcgrad import (
    LLM,
    PromptState,
    Record,
    ScriptedEngine,
    Trace,
    TraceError,
    check_trace,
    control_cone,
    control_reads,
    run,
)
from funcgrad.testing import pipelines, recorded_responder, traces

FAST = settings(max_examples=60, deadline=None)

draft = LLM("draft", user="Q: {q}")
review = LLM("review", user="Check: {a}")


def _scripted(*answers):
    stream = iter(answers)
    return ScriptedEngine(lambda request: next(stream))


def _review_loop(p, x):
    """Draft, then at most 3 review rounds; a review saying OK stops the loop."""
    a = draft(p, q=x)
    for _ in range(3):
        verdict = review(p, a=a)
        if verdict.value == "OK":
            return a
        a = draft(p, q=verdict)
    return a


def test_an_early_return_on_a_verdict_records_the_verdict_as_control():
    def pipeline(p, x):
        a = draft(p, q=x)
        verdict = review(p, a=a)
        if verdict.value == "OK":
            return a
        return draft(p, q=verdict)

    _, ok = run(pipeline, PromptState(), "2+2?", engine=_scripted("4", "OK"))
    assert [r.control for r in ok.records] == [(), (), ()]
    assert ok.control == (2,) and ok.output == 1
    _, redo = run(pipeline, PromptState(), "2+2?", engine=_scripted("5", "wrong", "4"))
    assert [r.control for r in redo.records] == [(), (), (), (2,)]
    assert redo.control == (2,) and redo.output == 3
    assert check_trace(ok) is ok and check_trace(redo) is redo


def test_a_loop_of_three_rounds_that_stops_at_round_two():
    _, trace = run(_review_loop, PromptState(), "q", engine=_scripted("d1", "no", "d2", "OK"))
    assert [(r.node, r.call_index) for r in trace.records[1:]] == [("draft", 0), ("review", 0), ("draft", 1), ("review", 1)]
    assert [r.control for r in trace.records] == [(), (), (), (2,), ()]
    assert trace.control == (2, 4) and trace.output == 3
    assert control_reads(trace, 2) == () and control_reads(trace, 3) == (2,) and control_reads(trace, 4) == (2,)
    # The stop decision (%4) feeds no node: data edges alone would drop it; the control cone keeps it.
    assert funcgrad.descendants(trace, 4) == ()
    assert control_cone(trace) == (0, 1, 2, 3, 4)
    scored = funcgrad.with_loss(trace, funcgrad.Loss(0.0, "wrong"), target="d3")
    assert [r.id for r in funcgrad.prune(scored).records] == [0, 1, 2, 3, 4, 5]


def test_a_loop_that_never_stops_early_reads_every_verdict():
    _, trace = run(_review_loop, PromptState(), "q", engine=_scripted("d1", "no", "d2", "no", "d3", "no", "d4"))
    assert trace.control == (2, 4, 6)
    assert [r.control for r in trace.records] == [(), (), (), (2,), (), (4,), (), (6,)]
    assert control_reads(trace, 7) == (2, 4, 6)


def test_reads_outside_a_run_and_node_arguments_record_nothing():
    tidy = funcgrad.fn("tidy")(lambda s: s.strip())

    def pipeline(p, x):
        return tidy(draft(p, q=x))  # Vars passed to nodes: data edges only

    _, trace = run(pipeline, PromptState(), "q", engine=_scripted(" a "))
    assert trace.control == () and all(r.control == () for r in trace.records)
    assert trace.records[2].inputs == (1,)


# --------------------------------------------------------------------------- check_trace


def _loop_trace():
    _, trace = run(_review_loop, PromptState(), "q", engine=_scripted("d1", "no", "d2", "OK"))
    return trace


def _with(trace, i, **changes):
    records = list(trace.records)
    records[i] = attrs.evolve(records[i], **changes)
    return attrs.evolve(trace, records=tuple(records))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda t: _with(t, 3, control=(3,)), r"record 3 \('draft'\): control 3 is not an earlier record of this trace"),
        (lambda t: _with(t, 3, control=(4,)), r"record 3 \('draft'\): control 4 is not an earlier record of this trace"),
        (lambda t: _with(t, 3, control=(9,)), r"record 3 \('draft'\): control 9 is not an earlier record of this trace"),
        (lambda t: _with(t, 4, control=(2,)),
         r"record 4 \('review'\): control 2 is also in the control of record 3; a read is recorded once"),
        (lambda t: _with(t, 3, control=(2, 2)),
         r"record 3 \('draft'\): control 2 is also in the control of record 3"),
        (lambda t: attrs.evolve(t, control=(2, 4, 7)), r"trace.control lists 7, which is not a record id of this trace"),
        (lambda t: attrs.evolve(t, control=(2, 4, 2)), r"trace.control lists 2 twice"),
        (lambda t: attrs.evolve(t, control=(4,)),
         r"record 3 \('draft'\) has control 2, but trace.control does not list 2; trace.control must list every"),
    ],
)
def test_check_trace_rejects_malformed_control_naming_the_record_and_id(corrupt, message):
    trace = _loop_trace()
    assert check_trace(trace) is trace
    with pytest.raises(TraceError, match=message):
        check_trace(corrupt(trace))


def test_trace_control_may_list_reads_made_after_the_last_record():
    trace = _loop_trace()
    assert trace.control[-1] == 4 and all(4 not in r.control for r in trace.records)
    extra = attrs.evolve(trace, control=(2, 4, 1))
    assert check_trace(extra) is extra


def test_control_reads_of_an_unknown_record_is_a_trace_error():
    with pytest.raises(TraceError, match="no record with id 5"):
        control_reads(Trace((Record(0, "x", "input"),)), 5)


def test_control_cone_needs_an_output_or_a_loss():
    with pytest.raises(TraceError, match="neither a loss record nor an output"):
        control_cone(Trace((Record(0, "x", "input"),), control=(0,)))


# --------------------------------------------------------------------------- printing and HTML


def test_the_printer_shows_control_edges_after_the_call_and_in_the_header():
    text = funcgrad.format_trace(_loop_trace())
    assert text.splitlines()[0] == "trace (no id): 5 records, output %3 (ctrl %2, %4)"
    assert text.splitlines()[4] == "  %3 = llm draft#1(q=%2) ctrl %2 [3 tok, 0.00s]  -> 'd2'"
    assert "ctrl" not in text.splitlines()[3] and "ctrl" not in text.splitlines()[5]


def test_the_html_table_shows_control_edges_in_their_own_column():
    from funcgrad.core.html import trace_html

    html = trace_html(_loop_trace())
    rows = html.split('<tr id="fg-r')[1:]
    controls = [row.split('<td class="fg-ctrl">')[1].split("</td>")[0] for row in rows]
    assert controls == ["", "", "", '<a href="#fg-r2">%2</a>', ""]
    inputs = rows[3].split("</td>")[3]
    assert inputs == "\n<td><bdi>q</bdi>=%2"  # the data input, apart from the control edge
    assert '(control: <a href="#fg-r2">%2</a>, <a href="#fg-r4">%4</a>)' in html


# --------------------------------------------------------------------------- properties over generated pipelines and traces


def _run(gp, respond=None):
    return run(gp.pipeline, gp.state, gp.x, engine=ScriptedEngine(respond or gp.respond))[1]


def _scored(trace, score):
    return funcgrad.with_loss(trace, funcgrad.Loss(score, "feedback"), target="t")


@FAST
@given(pipelines())
def test_every_verdict_of_a_generated_pipeline_is_a_control_edge(gp):
    trace = _run(gp)
    verdicts = [r.id for r in trace.records if r.node.startswith("v")]
    assert list(trace.control) == verdicts  # each verdict is read once, right after its call
    for r in trace.records:
        if r.id - 1 in verdicts:
            assert r.control == (r.id - 1,)
        else:
            assert r.control == ()
    # The stop and exit tests read no other Var: without them there are no control edges.
    assert (trace.control == ()) == all(s[0][0] != "v" for s in gp.steps)


@FAST
@given(pipelines(), st.sampled_from((0.0, 1.0)))
def test_a_record_that_decided_a_branch_is_never_pruned(gp, score):
    trace = _scored(_run(gp), score)
    pruned = funcgrad.prune(trace)
    kept = {r.id for r in pruned.records}
    assert set(trace.control) <= kept
    assert pruned.control == trace.control
    for c in trace.control:
        assert set(funcgrad.ancestors(trace, c)) <= kept
    assert check_trace(pruned) is pruned


@FAST
@given(traces(), st.data())
def test_prune_and_subgraph_of_generated_traces_pass_check_trace(trace, data):
    ids = data.draw(st.lists(st.sampled_from([r.id for r in trace.records]), max_size=3), label="ids")
    sub = funcgrad.subgraph(trace, ids)
    assert check_trace(sub) is sub
    assert all(set(r.control) <= {s.id for s in sub.records} for r in sub.records)
    if trace.loss is not None or trace.output is not None:
        pruned = funcgrad.prune(trace)
        assert check_trace(pruned) is pruned
        assert set(trace.control) <= {r.id for r in pruned.records}


@FAST
@given(pipelines())
def test_replaying_recorded_answers_reproduces_the_control_edges(gp):
    t1 = _run(gp)
    t2 = _run(gp, recorded_responder(t1))
    assert t2 == t1
    assert t2.control == t1.control and [r.control for r in t2.records] == [r.control for r in t1.records]
    assert funcgrad.dumps(t2) == funcgrad.dumps(t1)


@FAST
@given(pipelines())
def test_traces_with_control_roundtrip_through_json(gp):
    trace = _scored(_run(gp), 1.0)
    back = funcgrad.loads(funcgrad.dumps(trace))
    assert back == trace and back.control == trace.control
    assert [r.control for r in back.records] == [r.control for r in trace.records]


@FAST
@given(traces())
def test_generated_traces_record_control_as_a_run_does(trace):
    # A run records each read once, on the next record created: in reading order, the
    # records' control edges come first in Trace.control, then reads after the last record.
    flat = [c for r in trace.records for c in r.control]
    assert list(trace.control[: len(flat)]) == flat
    assert all(c < r.id for r in trace.records for c in r.control)
    assert funcgrad.loads(funcgrad.dumps(trace)) == trace


_READS = {
    "value": lambda v: v.value, "bool": bool, "eq": lambda v: v == "s1", "lt": lambda v: v < "t",
    "len": len, "iter": list, "in": lambda v: "s" in v, "getitem": lambda v: v[0],
}


@FAST
@given(st.lists(st.tuples(st.sampled_from(("call", *_READS)), st.integers(0, 20)), max_size=12))
def test_control_fields_match_a_plain_model_of_the_reads(program):
    # Model: a read is recorded once, at its first read, on the next record created; Trace.control lists all.
    step = funcgrad.fn("step")(lambda *args: "s" + str(len(args)))
    expected_records, pending, observed = [()], [], []

    def pipeline(p, x):
        values = [x]
        for action, k in program:
            v = values[k % len(values)]
            if action == "call":
                values.append(step(v))
                expected_records.append(tuple(pending))
                pending.clear()
            else:
                _READS[action](v)
                if v.id not in observed:
                    observed.append(v.id)
                    pending.append(v.id)
        return values[-1]

    _, trace = run(pipeline, PromptState(), "s0", engine=_scripted())
    assert [r.control for r in trace.records] == expected_records
    assert trace.control == tuple(observed)
    assert check_trace(trace) is trace
