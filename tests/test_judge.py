"""The LLM-as-judge loss: request, reading replies, failures, replay, TOML config; and on the real model."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from funcgrad import LLM, CacheMiss, ConfigError, EngineError, Example, Param, PromptState, check_trace, dumps, fn, loads, run_batch, run_example
from funcgrad.cli.config import parse_config
from funcgrad.cli.main import main
from funcgrad.core.errors import RunFailed
from funcgrad.core.judge import Judge, JudgeError
from funcgrad.engines.cache import CachedEngine
from funcgrad.engines.meter import Meter, MeteredEngine
from funcgrad.engines.pool import worker_pool
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.engines.stub import StubServer

answer = LLM("answer", system=("sys",), user="{input}", max_tokens=8)
STATE = PromptState.of(sys=Param("Reply with the answer only."))
JUDGE = Judge("The answer is right only if it names the same value as the reference.", scale=(1, 5))
EXAMPLE = Example("e1", "What is 2 + 2?", 4)


def pipeline(prompts, x):
    return answer(prompts, input=x)


def responder(judge_reply, answer_text="4"):
    return lambda request: judge_reply if request.role == "judge" else answer_text


def test_request_shows_rubric_scale_question_target_and_output():
    request = JUDGE.request("5", EXAMPLE)
    system, user = (m.content for m in request.messages)
    assert JUDGE.rubric in system and "from 1 (worst) to 5 (best)" in system
    assert user == "Question:\nWhat is 2 + 2?\n\nReference answer:\n4\n\nAnswer to grade:\n5"
    assert (request.role, request.temperature, request.max_tokens) == ("judge", 0.0, 96)
    schema = orjson.loads(request.json_schema)
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert list(schema["properties"]) == ["answer_says", "reference_says", "critique", "score"]  # copy first, then judge
    assert schema["properties"]["critique"]["maxLength"] == 3 * (96 - 24) - 2 * 40  # the score still fits in max_tokens
    assert Judge("r", scale=(1, 5), json_schema=False).request("5", EXAMPLE).json_schema is None


def test_output_key_grades_one_field_of_a_dict_output():
    request = Judge("r", scale=(0, 1), output_key="raw").request({"answer": 5, "raw": "It is 5."}, EXAMPLE)
    assert request.messages[1].content.endswith("Answer to grade:\nIt is 5.")


@pytest.mark.parametrize("reply, score, feedback", [
    ('{"critique": "same value", "score": 5}', 1.0, "judge score 5/5: same value"),
    ('{"score": 1, "critique": "says 5,\\n not 4"}', 0.0, "judge score 1/5: says 5, not 4"),
    ('```json\n{"critique": "close", "score": 3}\n```', 0.5, "judge score 3/5: close"),
    ('{"critique": "ok", "score": 4.0}', 0.75, "judge score 4/5: ok"),
    ("Score: 2. It is off by one.", 0.25, "judge score 2/5: It is off by one"),
])
def test_read_normalises_the_score_and_keeps_the_critique(reply, score, feedback):
    loss = JUDGE.read(reply, EXAMPLE)
    assert (loss.score, loss.feedback) == (score, feedback)


@pytest.mark.parametrize("reply, message", [
    ("", "no integer score"),
    ("I think it is fine.", "no integer score"),
    ('{"critique": "fine"}', "no integer score"),
    ('{"critique": "fine", "score": "5"}', "no integer score"),
    ('{"critique": "fine", "score": true}', "no integer score"),
    ('{"critique": "great", "score": 9}', "outside the scale 1..5"),
    ("Score: 0", "outside the scale 1..5"),
])
def test_unreadable_replies_raise_judge_error(reply, message):
    with pytest.raises(JudgeError, match=message):
        JUDGE.read(reply, EXAMPLE)


@given(low=st.integers(-5, 5), width=st.integers(1, 20), data=st.data())
def test_every_score_on_the_scale_maps_into_0_1_monotonically(low, width, data):
    judge = Judge("r", scale=(low, low + width))
    a, b = sorted(data.draw(st.lists(st.integers(low, low + width), min_size=2, max_size=2)))
    la = judge.read(orjson.dumps({"critique": "c", "score": a}).decode(), EXAMPLE).score
    lb = judge.read(orjson.dumps({"critique": "c", "score": b}).decode(), EXAMPLE).score
    assert 0.0 <= la <= lb <= 1.0
    assert (la == 0.0) == (a == low) and (lb == 1.0) == (b == low + width)


def test_run_example_records_the_judge_call_as_the_loss_record():
    meter = Meter()
    engine = MeteredEngine(ScriptedEngine(responder('{"critique": "same value", "score": 5}')), meter=meter)
    result = run_example(pipeline, STATE, EXAMPLE, engine=engine, loss=JUDGE)
    record = check_trace(result.trace).records[-1]
    assert (result.loss.score, result.failed) == (1.0, False)
    assert record.kind == "loss" and record.inputs == (1,)
    assert record.request.role == "judge" and record.consts["target"] == 4
    assert record.request.messages[1].content.endswith("Answer to grade:\n4")
    assert record.output == {"score": 1.0, "feedback": "judge score 5/5: same value", "reply": '{"critique": "same value", "score": 5}'}
    assert record.usage.total_tokens > 0
    assert meter.report().by_role() == {"forward": 1, "judge": 1}
    assert loads(dumps(result.trace)) == result.trace


def test_an_unreadable_judge_reply_is_a_recorded_failure_not_a_score():
    result = run_example(pipeline, STATE, EXAMPLE, engine=ScriptedEngine(responder("It looks fine to me.")), loss=JUDGE)
    record = check_trace(result.trace).records[-1]
    assert result.failed and result.loss is None and result.output == "4"
    assert (result.failure.kind, result.failure.node) == ("loss", "loss")
    assert result.failure.message.startswith("the judge failed: JudgeError: judge reply has no integer score")
    assert record.kind == "loss" and record.error.startswith("JudgeError: judge reply has no integer score")
    assert "score" not in record.output and record.output["reply"] == "It looks fine to me."
    with pytest.raises(RunFailed, match="the judge failed"):  # a batch never scores it as 0
        run_batch(pipeline, STATE, [EXAMPLE], engine=ScriptedEngine(responder("It looks fine to me.")), loss=JUDGE)


def test_a_failing_judge_call_is_a_recorded_failure():
    def respond(request):
        if request.role == "judge":
            raise EngineError("judge server down")
        return "4"

    result = run_example(pipeline, STATE, EXAMPLE, engine=ScriptedEngine(respond), loss=JUDGE)
    assert result.failed and result.failure.kind == "engine"
    assert result.trace.records[-1].error == "EngineError: judge server down"
    assert "reply" not in result.trace.records[-1].output


def test_judged_runs_replay_exactly_from_the_cache(tmp_path):
    examples = [Example(f"e{i}", f"What is {i} + {i}?", 2 * i) for i in range(4)]
    answers = {e.x: str(e.target) for e in examples} | {examples[3].x: "8"}

    def respond(request):
        if request.role == "judge":
            user = request.messages[1].content
            right = user.split("Reference answer:\n")[1].split("\n")[0] == user.rsplit("\n", 1)[1]
            return orjson.dumps({"critique": "checked", "score": 5 if right else 1}).decode()
        return answers[request.messages[-1].content]

    live = CachedEngine(ScriptedEngine(respond), tmp_path, model="m")
    first = run_batch(pipeline, STATE, examples, engine=live, loss=JUDGE)
    again = run_batch(pipeline, STATE, examples, engine=CachedEngine(None, tmp_path, replay=True, model="m"), loss=JUDGE)
    assert [r.loss.score for r in first] == [1.0, 1.0, 1.0, 0.0]
    assert [dumps(r.trace) for r in again] == [dumps(r.trace) for r in first]
    with pytest.raises(CacheMiss):  # a judge request never seen is not invented in replay
        run_example(pipeline, STATE, examples[0], engine=CachedEngine(None, tmp_path, replay=True, model="m"),
                    loss=Judge("Another rubric.", scale=(1, 5)))


@pytest.mark.parametrize("kwargs, message", [
    ({"rubric": "Is it right?"}, "a rubric needs a score scale"),
    ({"rubric": "Is it right?", "scale": (5, 1)}, "lowest < highest"),
    ({"rubric": "Is it right?", "scale": (1, 2, 3)}, "two whole numbers"),
    ({"rubric": "Is it right?", "scale": (1.0, 5)}, "two whole numbers"),
    ({"rubric": "  ", "scale": (1, 5)}, "Judge.rubric"),
    ({"rubric": "r", "scale": (1, 5), "max_tokens": 0}, "Judge.max_tokens"),
    ({"rubric": "r", "scale": (1, 5), "max_tokens": 63}, r"must be a whole number >= 64 \(room for a critique and a score\)"),
])
def test_bad_judge_values_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Judge(**kwargs)


BASE = {"task": {"name": "arithmetic"}, "strategy": {"name": "backprop"}}


def test_loss_table_builds_a_judge():
    cfg = parse_config({**BASE, "loss": {"rubric": "Right if equal.", "scale": [0, 10], "max_tokens": 64, "output_key": "raw"}})
    assert cfg.judge == Judge("Right if equal.", scale=(0, 10), max_tokens=64, output_key="raw")
    assert parse_config(BASE).judge is None


@pytest.mark.parametrize("loss, message", [
    ({"rubric": "Right if equal."}, r"\[loss\] rubric is set but scale is missing"),
    ({"scale": [1, 5]}, r"\[loss\] needs rubric"),
    ({"rubric": "r", "scale": [1, 5], "colour": "red"}, r"\[loss\] has unknown key 'colour'"),
    ({"rubric": "r", "scale": [5, 1]}, r"\[loss\] Judge.scale"),
    ({"rubric": "r", "scale": [1, 5], "model": "gpt-judge"}, r"\[loss\] model = 'gpt-judge' is not configured"),
])
def test_bad_loss_tables_raise_one_config_error(loss, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**BASE, "loss": loss})


def test_judge_model_must_be_one_the_engine_serves():
    local = {**BASE, "engine": {"model": "qwen2.5-coder-1.5b"}, "loss": {"rubric": "r", "scale": [1, 5], "model": "qwen2.5-coder-1.5b"}}
    assert parse_config(local).judge.model == ""  # the engine's own model: requests need not name it
    remote = {**BASE, "engine": {"base_url": "http://127.0.0.1:9/v1", "model": "small"},
              "loss": {"rubric": "r", "scale": [1, 5], "model": "large"}}
    assert parse_config(remote).judge.model == "large"  # an OpenAI-compatible server may serve several models


def test_evaluate_with_a_loss_table_scores_with_the_judge_over_http(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from train_fixtures import respond_body

    def respond(body):
        if body["messages"][0]["content"].startswith("You grade an answer"):
            assert body["response_format"]["type"] == "json_schema"
            return '{"critique": "half right", "score": 3}'
        return respond_body(body)

    with StubServer(respond) as stub:
        cfg = tmp_path / "judge.toml"
        cfg.write_text(f"""
[task]
name = "train_fixtures:tiny_task"
[strategy]
name = "train_fixtures:hint_strategy"
[engine]
base_url = "{stub.base_url}"
model = "stub"
[loss]
rubric = "Equal to the reference."
scale = [1, 5]
[run]
cache = "cache"
""")
        assert main(["evaluate", str(cfg), "--quiet"]) == 0
        assert "accuracy 50.0% on 4 examples" in capsys.readouterr().out  # 3 on 1..5 for every answer: the judge scored
        judged = [s.body for s in stub.requests if s.body["messages"][0]["content"].startswith("You grade an answer")]
        assert len(judged) == 4


# --- the real model ---------------------------------------------------------------------------

RUBRIC = (
    "Compare the final number in the answer with the reference number. "
    "If they are equal, the score is 5. If they differ, the score is 1."
)
CASES = (  # (question, reference, right answer, wrong answer)
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", 7, "He has 7 apples.", "He has 12 apples."),
    ("A box holds 6 pens. How many pens are in 2 boxes?", 12, "12", "8"),
    ("Sara had 10 stickers and gave away 4. How many are left?", 6, "10 - 4 = 6. Answer: 6", "10 + 4 = 14. Answer: 14"),
    ("What is 9 divided by 3?", 3, "3", "27"),
)


@pytest.mark.real_model
@pytest.mark.quality
def test_real_judge_ranks_each_right_answer_above_the_wrong_one(large_local_engine):
    """On the 1.5B model (the 0.5B cannot judge: docs/losses.md): each right answer scores above the wrong one."""
    examples = [Example(f"case{i}", question, ref) for i, (question, ref, _, _) in enumerate(CASES)]
    judge = Judge(RUBRIC, scale=(1, 5))
    scores = {}
    for column, kind in ((2, "right"), (3, "wrong")):
        fixed = {case[0]: case[column] for case in CASES}
        answer_of = fn("fixed_answer")(lambda question: fixed[question])
        with worker_pool(2) as pool:
            results = run_batch(lambda p, x: answer_of(x), PromptState(), examples, engine=large_local_engine, loss=judge, executor=pool)
        for r in results:
            record = r.trace.records[-1]
            assert not r.failed, record.error
            assert record.request.role == "judge" and record.usage.completion_tokens > 0
            print(kind, r.example.id, r.loss.score, record.output["reply"])
            scores[kind, r.example.id] = r.loss.score
    for e in examples:
        assert scores["right", e.id] > scores["wrong", e.id], (e.id, scores)
