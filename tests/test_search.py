"""The search strategy: instruction x format x demo-set candidates, chosen by successive halving on validation."""

import json
import random

import pytest

from funcgrad.core.errors import ConfigError
from funcgrad.core.run import Example, exact_match
from funcgrad.core.state import Param, PromptState
from funcgrad.core.strategy_state import Demo
from funcgrad.core.task import Task
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.strategies import search
from funcgrad.strategies.prompts import demos as demo_prompts
from funcgrad.strategies.prompts.patterns import PATTERNS
from funcgrad.strategies.search import SearchKnobs, Slots, combinations
from funcgrad.training.fit import FitSettings, fit
from test_demos_harvest import pipeline  # count (LLM reading the 'sys' group) -> last word



STATE = PromptState(
    params={"ins": Param("Count.", role="instruction of the counting step", kind="instruction"),
            "fmt": Param("Reply with a number.", kind="format"), "demos": Param("", kind="demos")},
    groups={"sys": ("ins", "fmt", "demos")},
)
TRAIN = tuple(Example(f"t{i}", f"I have {i} cats.", str(i)) for i in range(1, 9))
VAL = tuple(Example(f"v{i}", f"I have {i} dogs.", str(i)) for i in range(1, 9))
WRITTEN = "Say how many animals the sentence names."


def world(seen, listing_needs_demos=True):
    """The list_first pattern works on training examples; on validation only with demos in the prompt too."""
    def respond(request):
        seen.append(request)
        if request.role == "optimizer":
            return json.dumps({"instruction": WRITTEN})
        system, user = request.messages[0].content, request.messages[-1].content
        ex = next(e for e in TRAIN + VAL if e.x == user)
        listing = PATTERNS["list_first"] in system
        demos = demo_prompts.HEADER in system
        right = listing and (ex.id.startswith("t") or demos or not listing_needs_demos)
        return f"- {ex.id}\nAnswer: {ex.target if right else 0}"

    return ScriptedEngine(respond)


def run(knobs, seen, **settings):
    task = Task("cats", pipeline, STATE, exact_match, train=TRAIN, val=VAL, test=())
    logged = []
    base = dict(steps=1, batch_size=2, proposals_per_step=1, val_batch=4, seed=1, accept="sign", alpha=0.1)
    out = fit(task, search(**knobs), engine=world(seen), settings=FitSettings(**(base | settings)),
              log_step=logged.append)
    return out, logged


def test_the_search_finds_the_pattern_and_its_demos_and_the_loop_accepts_them():
    seen = []
    out, logged = run({"proposals": 2, "max_candidates": 30, "minibatch": 2, "rungs": 3}, seen)
    assert out.state["fmt"].value == PATTERNS["list_first"]
    assert out.state["demos"].value.startswith(demo_prompts.HEADER) and "I have" in out.state["demos"].value
    assert out.val_score == 1.0 and logged[0].verdict == "accepted"
    why = logged[0].candidates[0].reason
    assert "format list_first" in why and "demo set" in why


def test_every_candidate_and_its_rung_scores_are_in_the_notes():
    seen = []
    out, logged = run({"proposals": 1, "max_candidates": 6, "minibatch": 2, "rungs": 2}, seen)
    notes = [n.reason for p in out.log[0].proposals for n in p.notes if n.reason.startswith("candidate ")]
    assert len(notes) == 6 and notes[0].startswith("candidate 0: the current prompts: 0.00 on 2")
    assert all(" on 2" in n for n in notes) and sum(" -> " in n for n in notes) == 3  # half go on to the next rung


def test_validation_minibatches_are_nested_and_shared_by_every_candidate():
    out, logged = run({"proposals": 0, "max_candidates": 4, "minibatch": 2, "rungs": 3}, [])
    rounds = {}
    for e in logged[0].effects:
        if e.kind == "validate":
            rounds.setdefault(e.round, set()).add(e.examples)
    sets = [rounds[r] for r in sorted(rounds)]
    assert [len(s_) for s_ in sets] == [1, 1, 1]  # within a rung every candidate saw the same examples
    examples = [set(next(iter(s_))) for s_ in sets]
    assert [len(x) for x in examples] == [2, 4, 8] and examples[0] < examples[1] < examples[2]


def test_instruction_proposals_ask_with_a_tip_and_pass_the_guards():
    seen = []
    run({"proposals": 3, "max_candidates": 4}, seen)
    asked = [r for r in seen if r.role == "optimizer"]
    assert len(asked) == 3 and {r.sample for r in asked} == {0, 1, 2} and {r.temperature for r in asked} == {1.0}
    assert all("instruction of the counting step" in r.messages[-1].content for r in asked)


def test_no_demos_param_means_no_harvest_and_no_demo_sets():
    state = PromptState(params={"ins": Param("Count.", kind="instruction"), "fmt": Param("Reply.", kind="format")},
                        groups={"sys": ("ins", "fmt")})
    task = Task("cats", pipeline, state, exact_match, train=TRAIN, val=VAL, test=())
    seen = []
    fit(task, search(proposals=0), engine=world(seen, listing_needs_demos=False),
        settings=FitSettings(steps=1, batch_size=2, proposals_per_step=1))
    assert not [r for r in seen if r.role == "forward" and r.sample]  # no resampling without a demos param


@pytest.mark.parametrize("knobs,field", [({"patterns": ("chain_of_thought",)}, "unknown pattern"),
                                         ({"eta": 1}, "eta"), ({"minibatch": 0}, "minibatch"),
                                         ({"proposal": 1}, "no knob 'proposal'")])
def test_bad_search_knobs_are_config_errors_naming_the_knob(knobs, field):
    with pytest.raises(ConfigError, match=field):
        search(**knobs)


def test_a_demo_set_over_several_nodes_names_each_param_in_its_note():
    # a multi-hop run gives one example's demos to the query node (two calls) and the answer node: the note
    # must say which param each demo fills, not list the same example id three times
    state = PromptState(params={"q_demos": Param("", kind="demos"), "a_demos": Param("", kind="demos")},
                        groups={"q": ("q_demos",), "a": ("a_demos",)})
    pool = [Demo("t0", "q_demos", "query", 0, "hop 1", "x", 1.0), Demo("t0", "q_demos", "query", 1, "hop 2", "y", 1.0),
            Demo("t0", "a_demos", "answer", 0, "facts", "z", 1.0, "resample 1")]
    knobs = SearchKnobs(proposals=0, demo_sets=1, max_candidates=4)
    cands = combinations(state, Slots("answer", None, None, ("q_demos", "a_demos")), [("current", "")],
                         [("current", "")], [pool], knobs, random.Random(0))
    (with_demos,) = [c.origin for c in cands if "demo set" in c.origin]
    assert with_demos.endswith("demo set 1: q_demos: t0 (plain), t0 (plain) / a_demos: t0 (resample 1)")
