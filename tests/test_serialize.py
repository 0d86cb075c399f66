"""JSON round-trip of every public value, and the errors of loads on bad documents."""

import pathlib

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funcgrad
from funcgrad import SerializationError, dumps, loads
from funcgrad.core.serialize import _TYPES, from_data
from funcgrad.testing import (
    attempts,
    examples,
    failures,
    json_values,
    losses,
    messages,
    notes,
    params,
    prompt_states,
    records,
    requests,
    responses,
    results,
    gradients,
    step_traces,
    traces,
    updates,
    usages,
)
from funcgrad.testing import demo_pools, demos, histories, history_entries, picks, pool_entries, pools, stats

FAST = settings(max_examples=60, deadline=None)

PUBLIC_VALUES = {
    "Param": params(),
    "PromptState": prompt_states(with_groups=True),
    "Record": records(),
    "Trace": traces(),
    "Loss": losses(),
    "Example": examples(),
    "Result": results(),
    "Failure": failures(),
    "Usage": usages(),
    "Message": messages(),
    "Request": requests(),
    "Response": responses(),
    "Update": updates(),
    "Note": notes(),
    "Attempt": attempts(),
    "Gradient": gradients(),
    "StepTrace": step_traces(),
    "CallLog": step_traces(max_calls=2).filter(lambda s: s.calls).map(lambda s: s.calls[0]),
    "EffectLog": step_traces().filter(lambda s: s.effects).map(lambda s: s.effects[-1]),
    "Candidate": step_traces().filter(lambda s: s.candidates).map(lambda s: s.candidates[0]),
    "Stats": stats(),
    "PoolEntry": pool_entries(),
    "Pool": pools(),
    "HistoryEntry": history_entries(),
    "Pick": picks(),
    "History": histories(),
    "Demo": demos(),
    "DemoPool": demo_pools(),
}


def test_every_serializable_type_has_a_generator():
    assert set(PUBLIC_VALUES) == set(_TYPES)


def _roundtrip(value):
    data = dumps(value)
    back = loads(data)
    assert back == value
    assert type(back) is type(value)
    # Byte-identical re-serialization also catches type drift that == hides (True vs 1, 1 vs 1.0).
    assert dumps(back) == data
    assert loads(dumps(value, indent=True)) == value
    return data


@pytest.mark.parametrize("tag", sorted(PUBLIC_VALUES))
@FAST
@given(data=st.data())
def test_json_roundtrip_of_every_public_value(tag, data):
    value = data.draw(PUBLIC_VALUES[tag], label=tag)
    raw = _roundtrip(value)
    doc = orjson.loads(raw)
    assert doc["format"] == "funcgrad" and doc["version"] == 4
    assert doc["value"]["type"] == tag


@FAST
@given(json_values())
def test_json_values_roundtrip_inside_a_record(value):
    record = funcgrad.Record(0, "x", "input", consts={"v": value}, output=value)
    back = loads(dumps(record))
    assert back.output == value and back.consts["v"] == value


@FAST
@given(traces(), st.integers(0, 3))
def test_roundtripped_trace_still_passes_check_trace(trace, _):
    assert funcgrad.check_trace(loads(dumps(trace))) == trace


def test_json_object_keys_named_type_are_not_confused_with_value_tags():
    value = {"type": "Param", "value": "not a param"}
    back = loads(dumps(funcgrad.Record(0, "x", "input", output=value)))
    assert dict(back.output) == value


def test_loads_rejects_wrong_format_and_version():
    with pytest.raises(SerializationError, match="format"):
        loads(b'{"value": 1}')
    with pytest.raises(SerializationError, match="version 5 is not supported; this funcgrad reads versions 1, 2, 3, 4"):
        loads(b'{"format": "funcgrad", "version": 5, "value": 1}')
    with pytest.raises(SerializationError, match="not valid JSON"):
        loads(b"{")
    with pytest.raises(SerializationError, match="value"):
        loads(b'{"format": "funcgrad", "version": 1}')


def test_version_1_documents_load_with_their_constants_moved_to_consts():
    # Version 1 kept a fn/retrieve node's constant arguments in request = {"const": {...}}
    # and dropped an LLM node's; version 2 keeps both in Record.consts.
    v1 = orjson.dumps({"format": "funcgrad", "version": 1, "value": {"type": "Trace", "records": [
        {"type": "Record", "id": 0, "node": "x", "kind": "input", "output": "q"},
        {"type": "Record", "id": 1, "node": "retrieve", "kind": "retrieve", "inputs": [0], "input_names": ["query"],
         "request": {"type": "dict", "items": {"const": {"type": "dict", "items": {"k": 3}}}}, "output": ["a fact"]},
        {"type": "Record", "id": 2, "node": "f", "kind": "fn", "inputs": [1], "input_names": ["facts"], "output": "a"},
        {"type": "Record", "id": 3, "node": "loss", "kind": "loss", "inputs": [2], "input_names": ["output"],
         "request": {"type": "dict", "items": {"target": "a"}}},
    ], "output": 2}})
    trace = loads(v1)
    assert trace.records[1].consts == {"k": 3} and trace.records[1].request is None
    assert trace.records[2].consts == {} and trace.records[2].request is None
    assert trace.records[3].consts == {"target": "a"} and trace.records[3].request is None
    assert loads(dumps(trace)) == trace and orjson.loads(dumps(trace))["version"] == 4


def _v2_fixture_results():
    """The pipelines that wrote tests/data/results_v2.json with the version-2 code, run by today's code."""
    from funcgrad.core.judge import Judge
    from funcgrad.engines.scripted import ScriptedEngine

    ask = funcgrad.LLM("answer", system=("sys",), user="Q: {q}\nfacts: {facts}")
    lookup = funcgrad.retriever("lookup")(lambda q, k=2: tuple(f"doc{i}:{q}" for i in range(k)))
    tidy = funcgrad.fn("tidy")(lambda text: text.strip())

    def pipeline(p, x):
        lookup(x, k=2)
        return tidy(ask(p, q=x, facts="(none yet)"))

    state = funcgrad.PromptState.of(sys=funcgrad.Param("Answer with a number."))
    judge = '{"answer_says": "4", "reference_says": "4", "critique": "right", "score": 5}'
    engine = ScriptedEngine(lambda r: " 4 " if r.role == "forward" else judge)
    plain = funcgrad.run_example(pipeline, state, funcgrad.Example("e1", "2+2?", "4"), engine=engine, loss=funcgrad.exact_match)
    judged = funcgrad.run_example(pipeline, state, funcgrad.Example("e2", "2+2?", 4), engine=engine,
                                  loss=Judge("Equal to the reference.", scale=(1, 5)))
    return plain, judged


def test_a_version_2_document_loads_as_what_todays_code_records():
    # Version 2 wrote Record.request as a JSON object ({messages: [[role, content]...], model, ...},
    # plus the loss target); version 3 writes a Request and keeps the target in consts.
    raw = (pathlib.Path(__file__).parent / "data" / "results_v2.json").read_bytes()
    assert orjson.loads(raw)["version"] == 2
    loaded = loads(raw)
    plain, judged = loaded
    fresh_plain, fresh_judged = _v2_fixture_results()
    assert plain == fresh_plain
    # version 2 did not record the judge's json_schema (nor seed and stop: the judge's are the defaults)
    fresh_loss = fresh_judged.trace.loss
    unrecorded = attrs.evolve(fresh_loss, request=attrs.evolve(fresh_loss.request, json_schema=None))
    assert judged == attrs.evolve(fresh_judged, trace=attrs.evolve(fresh_judged.trace, records=fresh_judged.trace.records[:-1] + (unrecorded,)))
    llm = plain.trace.records[2]
    assert isinstance(llm.request, funcgrad.Request) and llm.request.role == "forward"
    assert llm.user_text == "Q: 2+2?\nfacts: (none yet)" and llm.consts == {"facts": "(none yet)"}
    assert plain.trace.loss.consts == {"target": "4"} and plain.trace.loss.request is None
    assert judged.trace.loss.consts == {"target": 4} and judged.trace.loss.request.role == "judge"
    # traces.jsonl lines carry no envelope: the upgrade goes by the record's shape
    line = orjson.loads(raw)["value"][1]
    assert from_data(line) == judged
    assert loads(dumps(loaded)) == loaded and orjson.loads(dumps(loaded))["version"] == 4
    # version 4 added control edges: older records and traces load without any
    assert all(r.trace.control == () and all(rec.control == () for rec in r.trace.records) for r in loaded)
    assert "control" not in raw.decode()


def _without_control(data):
    if isinstance(data, dict):
        return {k: _without_control(v) for k, v in data.items() if k != "control"}
    return [_without_control(v) for v in data] if isinstance(data, list) else data


@FAST
@given(traces())
def test_a_version_3_trace_loads_with_empty_control(trace):
    # Version 4 added Record.control and Trace.control; a version-3 document has neither.
    doc = orjson.loads(dumps(trace))
    v3 = orjson.dumps({**_without_control(doc), "version": 3})
    assert "control" not in orjson.loads(v3)["value"] and all("control" not in r for r in orjson.loads(v3)["value"]["records"])
    plain = attrs.evolve(trace, control=(), records=tuple(attrs.evolve(r, control=()) for r in trace.records))
    assert loads(v3) == plain
    assert funcgrad.check_trace(loads(v3)) == plain


def test_a_version_2_request_that_is_no_call_and_no_target_is_refused():
    v2 = orjson.dumps({"format": "funcgrad", "version": 2, "value": {
        "type": "Record", "id": 4, "node": "f", "kind": "fn", "consts": {"type": "dict", "items": {}},
        "request": {"type": "dict", "items": {"other": 1}}}})
    with pytest.raises(SerializationError, match=r"record 4 has a version-2 request with fields \['other'\]"):
        loads(v2)


def test_a_record_request_must_be_a_request():
    with pytest.raises(funcgrad.TraceError, match="Record.request must be a funcgrad.Request or None, got dict"):
        funcgrad.Record(1, "answer", "llm", request={"messages": [["user", "hi"]]})


def test_run_records_constant_inputs_of_llm_and_fn_nodes():
    from funcgrad.engines.scripted import ScriptedEngine

    query = funcgrad.LLM("query", user="{question} / {facts}")
    pick = funcgrad.fn("pick")(lambda facts, k: facts[:k])

    def pipeline(prompts, x):
        return pick(query(prompts, question=x, facts="(none yet)"), k=2)

    _, trace = funcgrad.run(pipeline, funcgrad.PromptState(), "who?", engine=ScriptedEngine(lambda r: "abc"))
    assert [(r.input_names, dict(r.consts)) for r in trace.records[1:]] == [
        (("question",), {"facts": "(none yet)"}), (("facts",), {"k": 2}),
    ]
    assert "%1 = llm query#0(question=%0, facts='(none yet)')" in funcgrad.format_trace(trace)
    assert loads(dumps(trace)) == trace


def test_loads_errors_name_the_bad_field():
    doc = orjson.loads(dumps(funcgrad.Param("x")))
    doc["value"]["colour"] = "red"
    with pytest.raises(SerializationError, match="colour"):
        loads(orjson.dumps(doc))
    doc = orjson.loads(dumps(funcgrad.Param("x")))
    del doc["value"]["value"]
    with pytest.raises(SerializationError, match="'value'"):
        loads(orjson.dumps(doc))
    doc = orjson.loads(dumps(funcgrad.Param("x")))
    doc["value"]["kind"] = "poem"
    with pytest.raises(SerializationError, match="poem"):
        loads(orjson.dumps(doc))
    with pytest.raises(SerializationError, match="'Widget'"):
        loads(b'{"format": "funcgrad", "version": 1, "value": {"type": "Widget"}}')


def test_dumps_refuses_non_json_with_serialization_error():
    # Found by these tests: orjson's own TypeError used to escape from dumps.
    with pytest.raises(SerializationError, match="64-bit"):
        dumps(funcgrad.Record(0, "x", "input", output=2**70))
    with pytest.raises(SerializationError):
        dumps(funcgrad.Record(0, "x", "input", output="\ud800"))
    with pytest.raises(SerializationError, match="set"):
        dumps({1, 2})
    with pytest.raises(SerializationError, match="NaN"):
        funcgrad.Record(0, "x", "input", output=float("nan"))


def test_result_output_is_frozen_so_lists_roundtrip():
    # Found by these tests: Result.output kept a list, which came back as a tuple.
    result = funcgrad.Result(funcgrad.Example("e", "x"), ["a", {"b": 1}], funcgrad.Trace(), funcgrad.Loss(1))
    assert result.output == ("a", {"b": 1})
    assert loads(dumps(result)) == result


def test_the_example_in_docs_trace_format_loads_and_roundtrips():
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "trace-format.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(.*?)\n```", text, re.S).group(1)
    trace = loads(block)
    assert isinstance(trace, funcgrad.Trace)
    funcgrad.check_trace(trace)
    assert dumps(trace, indent=True).decode() == block
    # And it is what running the documented code gives today.
    from funcgrad.engines.scripted import ScriptedEngine

    answer = funcgrad.LLM("answer", system=("sys",), user="Q: {q}")
    tidy = funcgrad.fn("tidy")(lambda text: text.strip())
    state = funcgrad.PromptState.of(sys=funcgrad.Param("Answer with a number."))

    def pipeline(p, x):
        a = answer(p, q=x)
        if a == "":
            a = answer(p, q=x)
        return tidy(a)

    result = funcgrad.run_example(pipeline, state, funcgrad.Example("e1", "2+2?", "4"),
                                  engine=ScriptedEngine(lambda req: " 4"), loss=funcgrad.exact_match)
    assert result.trace == trace
    assert trace.records[2].control == (1,) and trace.control == (1,)
