"""The TREC-style classification task: generator, label-set-aware parsing, confusion feedback, bad label sets."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funcgrad import ConfigError, Example, run_batch
from funcgrad.cli.config import parse_config
from funcgrad.cli.plugins import build_task
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.tasks import load_task
from funcgrad.tasks.classification import LABELS, MEANING, TEMPLATES, classification, classification_question
from funcgrad.tasks.parsing import LabelLoss, label_set, labels_named, parse_label


def test_same_seed_same_examples_and_disjoint_splits():
    a, b = classification(seed=3, n_test=100), classification(seed=3, n_test=100)
    assert a.train + a.val + a.test == b.train + b.val + b.test
    xs = [e.x for e in a.train + a.val + a.test]
    assert len(xs) == len(set(xs)) == 150
    assert {e.id for e in a.val}.isdisjoint({e.id for e in a.test})
    assert classification(seed=4).test != a.test[:50]


def test_labels_are_balanced_and_every_label_has_confusable_templates():
    task = classification(seed=0, n_train=0, n_val=0, n_test=300)
    counts = Counter(e.target for e in task.test)
    assert set(counts) == set(LABELS) and min(counts.values()) >= 30
    for label in LABELS:
        assert any(t.near and t.near != label for t in TEMPLATES if t.label == label), label
    assert {t.near for t in TEMPLATES if t.near} <= set(LABELS) and set(MEANING) == set(LABELS)


@pytest.mark.parametrize("question, label", [
    ("What does NASA stand for?", "ABBREVIATION"), ("What is NASA?", "DESCRIPTION"),
    ("Who invented the telephone?", "HUMAN"), ("What did Nikola Tesla invent?", "ENTITY"),
    ("In which city was Mozart born?", "LOCATION"), ("When was Mozart born?", "NUMERIC"),
    ("What language is spoken in Brazil?", "ENTITY"), ("What company makes the Walkman?", "HUMAN"),
])
def test_confusable_pairs_get_the_answer_type_label(question, label):
    generated = {}
    rng = random.Random(0)
    for _ in range(20000):
        q = classification_question(rng)
        generated.setdefault(q.question, q.label)
    assert generated[question] == label


def test_subset_of_labels():
    task = classification(n_train=5, n_val=5, n_test=20, labels=("HUMAN", "LOCATION"))
    assert {e.target for e in task.train + task.val + task.test} <= {"HUMAN", "LOCATION"}
    assert task.state["classify_labels"].value == "Labels: HUMAN, LOCATION."
    assert not task.state["classify_labels"].trainable


@pytest.mark.parametrize("labels, message", [
    (("HUMAN", "HUMAN"), "duplicate label 'HUMAN'"),
    (("HUMAN", "human", "LOCATION"), "duplicate label 'human'"),
    (("HUMAN",), "at least two labels"),
    (("HUMAN", "PLANET"), "'PLANET'] are not known"),
    ("HUMAN", "must be a list"),
    (("HUMAN", "two words"), "one word"),
])
def test_bad_label_sets_raise_one_config_error(labels, message):
    with pytest.raises(ConfigError, match=message):
        classification(labels=labels)


def test_duplicate_labels_in_a_config_fail_before_any_model_call():
    cfg = parse_config({"task": {"name": "classification", "labels": ["HUMAN", "LOCATION", "HUMAN"]},
                        "strategy": {"name": "backprop"}})
    with pytest.raises(ConfigError, match="duplicate label 'HUMAN'"):
        build_task(cfg.task, cfg.task_args)


@pytest.mark.parametrize("reply, label", [
    ("HUMAN", "HUMAN"), ("human.", "HUMAN"), ("Label: LOC", "LOCATION"), ("<answer>NUMERIC</answer>", "NUMERIC"),
    ("The answer type is: Numeric", "NUMERIC"), ("ENTITY\nIt asks for a thing, not a HUMAN.", "ENTITY"),
    ("Category: DESCRIPTION. Not an ABBREVIATION.", "DESCRIPTION"), ("abbreviations", "ABBREVIATION"),
    ("HUMAN or LOCATION", None), ("I am not sure.", None), ("", None),
])
def test_parse_label(reply, label):
    assert parse_label(reply, LABELS) == label


@given(st.sampled_from(LABELS), st.sampled_from(["{}", "{}.", "Label: {}", " {} ", "<answer>{}</answer>", "{}\nbecause"]))
def test_any_label_in_any_plain_form_parses_to_itself(label, form):
    for shown in (label, label.lower(), label.title()):
        assert parse_label(form.format(shown), LABELS) == label


def test_loss_feedback_names_the_confusion():
    loss = LabelLoss(LABELS)
    ex = Example("e", "Who invented the radio?", "HUMAN")
    assert loss({"label": "HUMAN", "raw": "HUMAN"}, ex).score == 1.0
    wrong = loss({"label": "LOCATION", "raw": "LOCATION"}, ex)
    assert (wrong.score, wrong.feedback) == (0.0, "wrong: answered LOCATION, expected HUMAN; its raw answer was: 'LOCATION'")
    several = loss({"label": None, "raw": "HUMAN or ENTITY"}, ex).feedback
    assert several == "wrong: expected HUMAN, but the answer names several labels (HUMAN, ENTITY) where exactly one was asked for: 'HUMAN or ENTITY'"
    none = loss({"label": None, "raw": "a person"}, ex).feedback
    assert none.startswith("wrong: expected HUMAN, but the answer names none of the labels ABBREVIATION, DESCRIPTION")
    assert loss("HUMAN", ex).score == 1.0  # a plain text output is parsed too
    with pytest.raises(ConfigError, match="duplicate"):
        LabelLoss(("A", "A"))
    assert label_set(["HUMAN", "LOCATION"]) == ("HUMAN", "LOCATION")
    assert labels_named("Type: hum", LABELS) == ("HUMAN",)


def test_pipeline_end_to_end_with_a_scripted_model():
    task = load_task("classification", seed=0, n_train=0, n_val=0, n_test=12)
    system = task.state.render(task.state.resolve("classify_system"))
    assert system == "Classify the question.\n\nLabels: ABBREVIATION, DESCRIPTION, ENTITY, HUMAN, LOCATION, NUMERIC.\n\nReply with the label only."
    results = run_batch(task.pipeline, task.state, task.test, engine=ScriptedEngine(lambda r: "Label: HUMAN"), loss=task.loss)
    for r in results:
        assert r.output == {"label": "HUMAN", "raw": "Label: HUMAN"}
        assert r.loss.score == (1.0 if r.example.target == "HUMAN" else 0.0)
        if r.example.target != "HUMAN":
            assert r.loss.feedback.startswith(f"wrong: answered HUMAN, expected {r.example.target}")
    assert [rec.node for rec in results[0].trace.records] == ["x", "classify", "parse", "loss"]
