"""The review_loop task: a classifier, then review rounds that confirm or change the label; the loop is a control edge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcgrad import ConfigError, Example, ScriptedEngine, check_trace, format_trace, run_example
from funcgrad.cli.compare import plan
from funcgrad.cli.config import read_toml
from funcgrad.cli.plugins import build_task
from funcgrad.testing import recorded_responder
from funcgrad.tasks import load_task
from funcgrad.tasks.classification import LABELS
from funcgrad.tasks.review_loop import current_label, parse_review, review_loop

ROOT = Path(__file__).resolve().parents[1]
QUESTION = Example("q", "Who invented the telephone?", "HUMAN")


def scripted(classify: str, *reviews: str) -> ScriptedEngine:
    """``classify`` answers the classify node; the review calls get ``reviews`` in order (the last one repeats)."""
    answers = list(reviews)

    def respond(request):
        if not request.messages[-1].content.startswith("Question:"):
            return classify
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return ScriptedEngine(respond)


def run(engine: ScriptedEngine, *, max_rounds: int = 2, example: Example = QUESTION):
    task = review_loop(n_train=0, n_val=0, n_test=0, max_rounds=max_rounds)
    return run_example(task.pipeline, task.state, example, engine=engine, loss=task.loss)


def calls(trace) -> list[str]:
    """The node calls of a trace (``review#1``), input and loss records left out."""
    return [f"{r.node}#{r.call_index}" for r in trace.records if r.kind in ("llm", "fn")]


def ids(trace, node: str) -> list[int]:
    return [r.id for r in trace.records if r.node == node]


# ------------------------------------------------------------------ the loop


def test_a_confirming_review_stops_after_round_1_and_its_verdict_is_a_control_edge():
    engine = scripted("ENTITY", "CONFIRM")
    result = run(engine)
    trace = result.trace
    assert calls(trace) == ["classify#0", "parse#0", "review#0", "parse_review#0", "final#0"]
    assert engine.calls() == 2
    (verdict,) = ids(trace, "parse_review")
    (final,) = ids(trace, "final")
    assert trace.records[verdict].output == {"verdict": "confirm", "label": None}
    assert trace.control == (verdict,)
    assert trace.records[verdict + 1].control == (verdict,) and trace.records[verdict + 1].id == final
    assert [r.id for r in trace.records if r.control] == [final]
    assert result.output == {"label": "ENTITY", "raw": "ENTITY"}
    assert result.loss.score == 0.0
    assert result.loss.feedback == "wrong: answered ENTITY, expected HUMAN; its raw answer was: 'ENTITY'"
    check_trace(trace)


def test_a_changing_review_changes_the_label_through_revise():
    engine = scripted("ENTITY", "CHANGE: HUMAN", "CONFIRM")
    result = run(engine)
    trace = result.trace
    assert calls(trace) == ["classify#0", "parse#0", "review#0", "parse_review#0", "revise#0",
                            "review#1", "parse_review#1", "final#0"]
    first, second = ids(trace, "parse_review")
    (revise,) = ids(trace, "revise")
    (final,) = ids(trace, "final")
    assert trace.records[revise].inputs == (first,) and trace.records[revise].output == "HUMAN"
    assert trace.records[revise].control == (first,)
    review_1 = trace.records[ids(trace, "review")[1]]
    assert review_1.inputs == (0, revise) and review_1.user_text == "Question: Who invented the telephone?\nProposed label: HUMAN"
    assert trace.records[final].inputs == (revise,) and trace.records[final].control == (second,)
    assert trace.control == (first, second)
    assert result.output == {"label": "HUMAN", "raw": "HUMAN"}
    assert result.loss.score == 1.0 and result.loss.feedback == "correct: expected HUMAN and the pipeline answered HUMAN"
    check_trace(trace)


@pytest.mark.parametrize("max_rounds", [0, 1, 2, 3])
def test_max_rounds_bounds_the_reviews_of_a_reviewer_that_never_confirms(max_rounds):
    engine = scripted("ENTITY", "CHANGE: LOCATION", "CHANGE: HUMAN", "CHANGE: NUMERIC")
    result = run(engine, max_rounds=max_rounds)
    trace = result.trace
    assert engine.calls() == 1 + max_rounds
    assert len(ids(trace, "review")) == len(ids(trace, "revise")) == max_rounds
    assert trace.control == tuple(ids(trace, "parse_review"))
    (final,) = ids(trace, "final")
    assert trace.records[final].control == ()            # the loop ran out: no read decided the end
    assert result.output["label"] == ["ENTITY", "LOCATION", "HUMAN", "NUMERIC"][max_rounds]


@pytest.mark.parametrize("reply", ["Looks fine to me.", "HUMAN", "CHANGE: HUMAN or ENTITY", ""])
def test_an_invalid_review_reply_stops_the_loop_and_keeps_the_label(reply):
    engine = scripted("ENTITY", reply, "CHANGE: HUMAN")
    result = run(engine, max_rounds=3)
    trace = result.trace
    (verdict,) = ids(trace, "parse_review")
    assert trace.records[verdict].output == {"verdict": "invalid", "label": None}
    assert engine.calls() == 2 and calls(trace)[-1] == "final#0"
    assert trace.control == (verdict,)
    assert result.output == {"label": "ENTITY", "raw": "ENTITY"}


def test_an_unparseable_classification_reaches_the_review_as_the_reply_and_can_be_repaired():
    engine = scripted("It is a DATE", "CHANGE: NUMERIC", "CONFIRM")
    result = run(engine, example=Example("q", "When was Mozart born?", "NUMERIC"))
    first_review = result.trace.records[ids(result.trace, "review")[0]]
    assert first_review.user_text == "Question: When was Mozart born?\nProposed label: It is a DATE"
    assert result.output == {"label": "NUMERIC", "raw": "NUMERIC"}
    unrepaired = run(scripted("It is a DATE", "CONFIRM"), example=Example("q", "When was Mozart born?", "NUMERIC"))
    assert unrepaired.output == {"label": None, "raw": "It is a DATE"}
    assert unrepaired.loss.feedback == (
        "wrong: expected NUMERIC, but the answer names none of the labels ABBREVIATION, DESCRIPTION, ENTITY, HUMAN, "
        "LOCATION, NUMERIC: 'It is a DATE'"
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80), st.lists(st.sampled_from(["CONFIRM", "CHANGE: HUMAN", "CHANGE: DESCRIPTION", "hmm",
                                                       "CHANGE: nothing"]) | st.text(max_size=40), min_size=1, max_size=4),
       st.integers(0, 3))
def test_any_replies_give_a_checked_trace_whose_control_lists_every_verdict_read_and_replays(classify, reviews, max_rounds):
    result = run(scripted(classify, *reviews), max_rounds=max_rounds)
    trace = result.trace
    assert not result.failed and result.loss.score in (0.0, 1.0)
    check_trace(trace)
    verdicts = ids(trace, "parse_review")
    assert len(verdicts) <= max_rounds and trace.control == tuple(verdicts)
    for record in trace.records:                                   # each read is recorded on the record that follows it
        assert record.control == ((record.id - 1,) if record.id - 1 in verdicts else ())
    stopped = [v for v in verdicts if trace.records[v].output["verdict"] != "change"]
    assert stopped == verdicts[len(verdicts) - len(stopped):] and len(stopped) <= 1
    assert result.output["label"] in (*LABELS, None)
    replayed = run(ScriptedEngine(recorded_responder(trace)), max_rounds=max_rounds)
    assert replayed.trace == trace


# ------------------------------------------------------------------ parsers


@pytest.mark.parametrize("reply, verdict", [
    ("CONFIRM", {"verdict": "confirm", "label": None}),
    ("confirmed: the label is right", {"verdict": "confirm", "label": None}),
    ("CHANGE: LOCATION", {"verdict": "change", "label": "LOCATION"}),
    ("change - loc", {"verdict": "change", "label": "LOCATION"}),
    ("**CHANGE**: Numeric (a year)", {"verdict": "change", "label": "NUMERIC"}),
    ("CONFIRM or CHANGE: <label>", {"verdict": "confirm", "label": None}),
    ("CHANGE: DATE", {"verdict": "invalid", "label": None}),
    ("I would change it", {"verdict": "invalid", "label": None}),
    ("HUMAN", {"verdict": "invalid", "label": None}),
    (None, {"verdict": "invalid", "label": None}),
])
def test_parse_review(reply, verdict):
    assert parse_review(reply) == verdict


def test_a_change_to_the_label_shown_is_a_confirmation():
    assert parse_review("CHANGE: LOCATION", current="LOCATION") == {"verdict": "confirm", "label": None}
    assert parse_review("CHANGE: LOCATION", current="ENTITY") == {"verdict": "change", "label": "LOCATION"}
    task = review_loop(n_train=1, n_val=0, n_test=0)
    answers = iter(["LOCATION", "CHANGE: LOCATION"])
    trace = run_example(task.pipeline, task.state, task.train[0], engine=ScriptedEngine(lambda r: next(answers)),
                        loss=task.loss).trace
    assert [r.node for r in trace.records] == ["x", "classify", "parse", "review", "parse_review", "final", "loss"]
    assert trace[4].inputs == (3, 2) and trace.control == (4,)


def test_current_label_is_the_one_label_named_or_else_the_reply():
    assert [current_label(t) for t in ("human", "Type: LOC.", "HUMAN or ENTITY", None)] == [
        "HUMAN", "LOCATION", "HUMAN or ENTITY", ""]


# ------------------------------------------------------------------ task


def test_splits_are_seeded_disjoint_and_their_own():
    a, b = review_loop(seed=3, n_test=60), review_loop(seed=3, n_test=60)
    assert a.train + a.val + a.test == b.train + b.val + b.test
    xs = [e.x for e in a.train + a.val + a.test]
    assert len(xs) == len(set(xs)) == 110
    assert a.test[0].id == "review_loop-s3-test-000" and {e.target for e in a.test} == set(LABELS)
    assert review_loop(seed=4).test != a.test[:50]
    assert load_task("classification", seed=3).train != a.train   # its own random stream, not classification's


def test_state_params_roles_and_empty_demos_peers_that_render_as_nothing():
    task = review_loop()
    state = task.state
    assert state.names == ("classify_instruction", "classify_labels", "classify_format", "classify_demos",
                           "review_instruction", "review_labels", "review_format", "review_demos")
    assert state.trainable_names == ("classify_instruction", "classify_format", "classify_demos",
                                     "review_instruction", "review_format", "review_demos")
    assert all(state[n].role for n in state.names)
    assert [state[n].kind for n in ("classify_demos", "review_demos")] == ["demos", "demos"]
    assert state["classify_demos"].value == state["review_demos"].value == ""
    assert state.resolve("review_system") == ("review_instruction", "review_labels", "review_format", "review_demos")
    engine = scripted("ENTITY", "CHANGE: HUMAN", "CONFIRM")
    run(engine)
    systems = [r.messages[0].content for r in engine.requests]
    labels = "Labels: ABBREVIATION, DESCRIPTION, ENTITY, HUMAN, LOCATION, NUMERIC."
    assert systems == [
        f"Classify the question.\n\n{labels}\n\nReply with the label only.",
        f"Check the label proposed for the question.\n\n{labels}\n\n"
        "Reply CONFIRM if the label is right; otherwise reply CHANGE: <label> with the right label.",
        f"Check the label proposed for the question.\n\n{labels}\n\n"
        "Reply CONFIRM if the label is right; otherwise reply CHANGE: <label> with the right label.",
    ]


def test_labels_are_declared_and_the_config_path_builds_the_task():
    task = build_task("review_loop", {"seed": 1, "n_train": 2, "n_val": 1, "n_test": 1, "max_rounds": 3})
    assert task.labels == LABELS and task.name == "review_loop"
    assert task.train == review_loop(seed=1, n_train=2, n_val=1, n_test=1).train
    assert "at most 3 rounds" in task.description


@pytest.mark.parametrize("bad", [-1, 11, 1.5, True, "2"])
def test_bad_max_rounds_is_one_config_error_naming_it(bad):
    with pytest.raises(ConfigError) as info:
        review_loop(max_rounds=bad)
    assert str(info.value) == f"review_loop: max_rounds must be an int from 0 to 10, got {bad!r}"


def test_the_compare_control_example_plans_twelve_cells():
    data = read_toml(ROOT / "examples" / "compare_control.toml")
    assert data["strategies"]["backprop_no_control"] == {"name": "backprop", "control_credit": False}
    cells, root, _ = plan(data, ROOT / "examples")
    assert [(c.task, c.strategy, c.seed) for c in cells][:3] == [("review_loop", "backprop", s) for s in (0, 1, 2)]
    assert len(cells) == 12 and {c.task for c in cells} == {"review_loop", "agent"}
    assert cells[0].config["budget"] == {"max_calls": 120} and cells[0].config["train"]["accept"] == "sign"
    assert root == ROOT / "runs" / "compare_control"


# ------------------------------------------------------------------ docs/control-flow.md

def test_the_trace_printed_in_docs_control_flow_is_what_the_code_prints():
    text = (ROOT / "docs" / "control-flow.md").read_text(encoding="utf-8")
    (listing,) = re.findall(r"^```text\n(trace review_loop-.*?)^```", text, re.S | re.M)
    task = load_task("review_loop", seed=0, n_train=4, n_val=0, n_test=0)
    answers = iter(["LOCATION", "CHANGE: ENTITY", "CONFIRM"])
    result = run_example(task.pipeline, task.state, task.train[0], engine=ScriptedEngine(lambda r: next(answers)),
                         loss=task.loss)
    trace = result.trace
    assert listing.rstrip("\n") == format_trace(trace)
    assert trace.control == (4, 7)
    assert [r.control for r in trace.records] == [(), (), (), (), (), (4,), (), (), (7,), ()]
