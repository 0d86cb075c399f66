"""Question-type classification with a critique-and-revise loop: a review node may confirm or change the label.

The questions and the six labels are those of :mod:`funcgrad.tasks.classification`.
Pipeline (``max_rounds`` = 2 by default)::

    classify (LLM) → parse (fn: the label)
    repeat ≤ max_rounds:
        review#r (LLM: question, current label) → parse_review (fn: reply, current label → verdict)
        stop unless the verdict is "change"        ← the pipeline reads the verdict: a control edge
        revise (fn: verdict → the review's label, the new current label)
    final (fn: current label → {"label", "raw"})

The loop is plain Python reading the parsed verdict (``verdict["verdict"]``), so the
run records a control edge from each ``parse_review`` it read (docs/control-flow.md).
A ``CHANGE`` to the label the review was shown confirms it (the 1.5B model often
answers so). A review reply that is neither ``CHANGE: <label>`` nor ``CONFIRM`` is ``"invalid"`` and
acts as a confirmation: the loop stops and the label stays (at temperature 0 the same
question and label would only get the same reply again). Loss:
:class:`~funcgrad.tasks.parsing.LabelLoss`.

>>> parse_review("CHANGE: HUMAN"), parse_review("Confirm."), parse_review("Looks fine")
({'verdict': 'change', 'label': 'HUMAN'}, {'verdict': 'confirm', 'label': None}, {'verdict': 'invalid', 'label': None})
"""

from __future__ import annotations

import random
import re
from typing import Any

from funcgrad.core.errors import ConfigError
from funcgrad.core.nodes import LLM, Var, fn
from funcgrad.core.state import Param, PromptState
from funcgrad.core.task import Task
from funcgrad.tasks.classification import LABELS, classification_question, classify_node, labels_param
from funcgrad.tasks.classification import initial_state as classify_state
from funcgrad.tasks.demos import with_demos
from funcgrad.tasks.parsing import LabelLoss, make_splits, parse_label, snippet

REVIEW_INSTRUCTION = "Check the label proposed for the question."
REVIEW_FORMAT = "Reply CONFIRM if the label is right; otherwise reply CHANGE: <label> with the right label."

review_node = LLM("review", system=("review_system",), user="Question: {question}\nProposed label: {label}", max_tokens=48)

_CHANGE = re.compile(r"\bCHANGE\b\s*(?:\*\*)?\s*[:=-]\s*([^\n]*)", re.IGNORECASE)
_CONFIRM = re.compile(r"\bCONFIRM(?:S|ED)?\b", re.IGNORECASE)


def current_label(text: Any) -> str:
    """The one label a classify reply names, else the reply itself on one line (cut to 160 characters).

    >>> current_label("The answer type is LOCATION."), current_label("DATE")
    ('LOCATION', 'DATE')
    """
    raw = "" if text is None else str(text)
    label = parse_label(raw, LABELS)
    return label if label is not None else snippet(raw)


def parse_review(text: Any, current: str | None = None) -> dict:
    """A review reply as ``{"verdict": "confirm" | "change" | "invalid", "label": str | None}``.

    ``CHANGE: <label>`` naming exactly one label is a change to it, unless it is the
    ``current`` label the review was shown (then it confirms it); otherwise a reply
    saying ``CONFIRM`` is a confirmation; anything else (a bare label, a CHANGE naming
    no label or several, prose) is invalid.

    >>> parse_review("**CHANGE**: numeric, it asks for a year")
    {'verdict': 'change', 'label': 'NUMERIC'}
    >>> parse_review("CHANGE: HUMAN or ENTITY")["verdict"], parse_review("CHANGE: HUMAN", current="HUMAN")["verdict"]
    ('invalid', 'confirm')
    """
    raw = "" if text is None else str(text)
    for match in _CHANGE.finditer(raw):
        label = parse_label(match.group(1), LABELS)
        if label is not None and label == current:
            return {"verdict": "confirm", "label": None}
        if label is not None:
            return {"verdict": "change", "label": label}
    if _CONFIRM.search(raw):
        return {"verdict": "confirm", "label": None}
    return {"verdict": "invalid", "label": None}


@fn("parse")
def parse_node(text):
    """The current label after ``classify`` (:func:`current_label`)."""
    return current_label(text)


@fn("parse_review")
def parse_review_node(text, label):
    """The verdict of one ``review`` reply on the current ``label`` (:func:`parse_review`)."""
    return parse_review(text, current=label)


@fn("revise")
def revise(verdict):
    """The label after a review that changed it: the review's label."""
    return verdict["label"]


@fn("final")
def final(label):
    """The pipeline's answer for :class:`~funcgrad.tasks.parsing.LabelLoss`: ``{"label": str | None, "raw": text}``."""
    return {"label": label if label in LABELS else None, "raw": label}


def make_pipeline(max_rounds: int = 2):
    """classify → parse, then up to ``max_rounds`` review rounds that stop on anything but a change, then final.

    >>> from funcgrad.core import Response, run
    >>> class Reviewer:  # an engine: anything with complete(Request) -> Response
    ...     def complete(self, request):
    ...         return Response("CONFIRM" if request.messages[-1].content.startswith("Question:") else "HUMAN")
    >>> output, trace = run(make_pipeline(), initial_state(), "Who wrote Hamlet?", engine=Reviewer())
    >>> output["label"], [trace[i].node for i in trace.control]
    ('HUMAN', ['parse_review'])
    """

    def pipeline(prompts: PromptState, x: Var) -> Var:
        label = parse_node(classify_node(prompts, question=x))
        for _ in range(max_rounds):
            verdict = parse_review_node(review_node(prompts, question=x, label=label), label)
            if verdict["verdict"] != "change":  # a confirmation (or an unreadable reply) ends the loop
                break
            label = revise(verdict)
        return final(label)

    return pipeline


def initial_state(max_rounds: int = 2) -> PromptState:
    """The classification task's classify prompts plus the review node's: instruction, frozen label list, format.

    >>> initial_state().resolve("review_system")
    ('review_instruction', 'review_labels', 'review_format', 'review_demos')
    """
    base = classify_state(LABELS)
    review = {
        "review_instruction": Param(
            REVIEW_INSTRUCTION,
            role=(
                "system instruction of the 'review' LLM node, which sees a question and the label proposed for it "
                "(by the 'classify' node or an earlier review) and confirms or changes it; the label must name the "
                f"type of the answer the question asks for; a confirmation ends the review loop (at most {max_rounds} "
                "rounds), so confirming a wrong label keeps it"
            ),
            kind="instruction",
        ),
        "review_labels": labels_param(LABELS),
        "review_format": Param(
            REVIEW_FORMAT,
            role=(
                "output-format rule of the 'review' node; a parser reads 'CHANGE: <label>' naming exactly one "
                "allowed label other than the proposed one as a change (the loop goes on), else 'CONFIRM' as a confirmation (the loop stops); "
                "any other reply also stops the loop and keeps the label; the reply is cut at 48 tokens"
            ),
            kind="format",
        ),
    }
    state = PromptState(
        params=base.params + tuple(review.items()),
        groups=base.groups + (("review_system", tuple(review)),),
    )
    return with_demos(state, {"review_system": "review"})


def review_loop(*, seed: int = 0, n_train: int = 30, n_val: int = 20, n_test: int = 50, max_rounds: int = 2) -> Task:
    """The question-type task with at most ``max_rounds`` review rounds (0 to 10) after the classifier.

    >>> task = review_loop(n_train=2, n_val=1, n_test=1)
    >>> task.labels == LABELS, task.train[0].id
    (True, 'review_loop-s0-train-000')
    """
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or not 0 <= max_rounds <= 10:
        raise ConfigError(f"review_loop: max_rounds must be an int from 0 to 10, got {max_rounds!r}")

    def generate(rng: random.Random) -> tuple[str, str]:
        q = classification_question(rng)
        return q.question, q.label

    train, val, test = make_splits("review_loop", seed, generate, n_train, n_val, n_test)
    return Task(
        name="review_loop",
        pipeline=make_pipeline(max_rounds),
        state=initial_state(max_rounds),
        loss=LabelLoss(LABELS),
        train=train,
        val=val,
        test=test,
        description=(
            "TREC-style question classification with a critique-and-revise loop: a classifier names the type of the "
            f"answer a question asks for ({', '.join(LABELS)}), then a reviewer confirms the label or changes it, "
            f"at most {max_rounds} rounds, stopping at the first confirmation."
        ),
        labels=LABELS,
    )
