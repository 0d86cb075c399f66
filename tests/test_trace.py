"""check_trace accepts generated traces and rejects targeted corruptions."""

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import funcgrad
from funcgrad import Record, Trace, TraceError, ancestors, check_trace, descendants, format_trace, readers
from funcgrad.testing import traces

FAST = settings(max_examples=80, deadline=None)


def _replace(trace, i, **changes):
    recs = list(trace.records)
    recs[i] = attrs.evolve(recs[i], **changes)
    return attrs.evolve(trace, records=tuple(recs))


@FAST
@given(traces())
def test_generated_traces_pass_check_trace(trace):
    assert check_trace(trace) is trace
    assert trace.records[0].kind == "input"
    ids = [r.id for r in trace.records]
    assert ids == sorted(set(ids))


@FAST
@given(traces(with_loss=True))
def test_loss_record_is_last(trace):
    assert trace.records[-1].kind == "loss"
    assert trace.loss is trace.records[-1]


@FAST
@given(traces(max_records=8), st.data())
def test_forward_reference_is_rejected(trace, data):
    assume(len(trace.records) >= 2)
    i = data.draw(st.integers(0, len(trace.records) - 2), label="record")
    later = data.draw(st.sampled_from([r.id for r in trace.records[i:]]), label="target")
    bad = _replace(trace, i, inputs=trace.records[i].inputs + (later,), input_names=trace.records[i].input_names + ("z",))
    with pytest.raises(TraceError, match=f"input {later} is not an earlier record"):
        check_trace(bad)


@FAST
@given(traces(max_records=8), st.data())
def test_duplicate_id_is_rejected(trace, data):
    assume(len(trace.records) >= 2)
    i = data.draw(st.integers(1, len(trace.records) - 1), label="record")
    bad = _replace(trace, i, id=trace.records[i - 1].id, inputs=(), input_names=())
    with pytest.raises(TraceError, match="ids must strictly increase"):
        check_trace(bad)


@FAST
@given(traces(with_loss=True, max_records=8), st.data())
def test_loss_not_last_is_rejected(trace, data):
    assume(len(trace.records) >= 3)
    recs = list(trace.records)
    loss = attrs.evolve(recs.pop(), inputs=(), input_names=())
    i = data.draw(st.integers(1, len(recs) - 1), label="position")
    recs.insert(i, loss)
    # Renumber 0..n-1 so ids still increase and inputs still point backwards: only the position is wrong.
    new_id = {id(r): k for k, r in enumerate(recs)}
    old_to_new = {r.id: new_id[id(r)] for r in recs if r is not loss}
    recs = [
        attrs.evolve(r, id=new_id[id(r)], inputs=tuple(old_to_new[x] for x in r.inputs), control=()) for r in recs
    ]
    bad = attrs.evolve(trace, records=tuple(recs), output=None, control=())
    with pytest.raises(TraceError, match=f"record {i} .*loss record must be the last"):
        check_trace(bad)


def test_loss_not_last_is_rejected_example():
    t = Trace((Record(0, "x", "input"), Record(1, "loss", "loss", inputs=(0,), input_names=("output",)), Record(2, "f", "fn")))
    with pytest.raises(TraceError, match="record 1 .*loss record must be the last"):
        check_trace(t)


@FAST
@given(traces(max_records=8, repeated_calls=True), st.data())
def test_call_index_not_increasing_is_rejected(trace, data):
    repeated = [
        (i, j)
        for i, a in enumerate(trace.records)
        for j, b in enumerate(trace.records)
        if i < j and a.node == b.node
    ]
    if not repeated:
        # Make one: call the node of some record again, with a non-increasing index.
        assume(len(trace.records) >= 2)
        i = data.draw(st.integers(1, len(trace.records) - 1))
        r = trace.records[i]
        last = trace.records[-1]
        assume(last.kind != "loss" and r.kind != "input")
        extra = attrs.evolve(r, id=last.id + 1, call_index=r.call_index, inputs=(), input_names=())
        bad = attrs.evolve(trace, records=trace.records + (extra,))
        node = r.node
    else:
        i, j = data.draw(st.sampled_from(repeated))
        node = trace.records[j].node
        new_index = data.draw(st.integers(0, trace.records[i].call_index), label="index")
        bad = _replace(trace, j, call_index=new_index)
    with pytest.raises(TraceError, match="call_index"):
        check_trace(bad)
    assert node in [r.node for r in bad.records]


def test_other_corruptions_are_rejected_with_a_message_naming_the_record():
    base = (Record(0, "x", "input"), Record(1, "f", "fn", inputs=(0,), input_names=("a",)))
    with pytest.raises(TraceError, match=r"record 1 \('f'\): 1 inputs but 0 input names"):
        check_trace(Trace((base[0], attrs.evolve(base[1], input_names=()))))
    with pytest.raises(TraceError, match="record kind 'magic' is not one of: input, llm, fn, retrieve, loss"):
        attrs.evolve(base[1], kind="magic")  # a Record never holds an unknown kind
    assert base[1].kind is funcgrad.RecordKind.FN and repr(base[1].kind) == "'fn'"
    with pytest.raises(TraceError, match="'fn' here but 'input' earlier"):
        check_trace(Trace((base[0], attrs.evolve(base[1], node="x", call_index=1))))
    with pytest.raises(TraceError, match="trace.output is 7"):
        check_trace(Trace(base, output=7))
    with pytest.raises(TraceError, match="skip connection to 'nowhere'"):
        check_trace(Trace(base, skips=("nowhere",)))
    with pytest.raises(TraceError, match=r"trace.records\[0\] is a str"):
        check_trace(Trace(("oops",)))
    with pytest.raises(TraceError, match="id must be a non-negative int"):
        check_trace(Trace((attrs.evolve(base[0], id=-1),)))
    with pytest.raises(TraceError, match="no record with id 5"):
        Trace(base)[5]


@FAST
@given(traces())
def test_ancestors_and_descendants_are_consistent(trace):
    for r in trace.records:
        for a in ancestors(trace, r.id):
            assert a < r.id
            assert r.id in descendants(trace, a)
        assert set(r.inputs) <= set(ancestors(trace, r.id))


@FAST
@given(traces())
def test_printer_shows_every_record_in_order(trace):
    # Found by this test: newlines in example ids / errors used to break the one-line-per-record layout.
    trace = attrs.evolve(trace, example_id=trace.example_id + "\n")
    if trace.records[-1].kind != "loss":
        trace = _replace(trace, len(trace.records) - 1, error="Traceback:\n  boom")
    lines = format_trace(trace).splitlines()
    assert len(lines) == len(trace.records) + 1
    for line, r in zip(lines[1:], trace.records):
        assert line.strip().startswith(f"%{r.id} = {r.kind} {r.node}")
        if r.kind in ("llm", "fn", "retrieve"):
            assert f"{r.node}#{r.call_index}(" in line


@FAST
@given(traces(param_names=("a", "b")))
def test_readers_are_the_records_that_read_a_param(trace):
    for p in ("a", "b"):
        assert [r.id for r in readers(trace, p)] == [r.id for r in trace.records if p in r.params]
