"""bootstrap_demos beyond the minibatch: the whole training split, resamples and rationalization, through fit."""

import re

import pytest

from funcgrad.core.effects import Rerun, run_program
from funcgrad.core.errors import StrategyError
from funcgrad.core.nodes import LLM, fn
from funcgrad.core.run import Example, exact_match, run_batch
from funcgrad.core.state import Param, PromptState
from funcgrad.core.strategy import StepContext
from funcgrad.core.task import Task
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.strategies import bootstrap_demos
from funcgrad.strategies.prompts import demos as demo_prompts
from funcgrad.training.fit import FitSettings, fit

count = LLM("count", system=("sys",), user="{question}")


@fn("last_word")
def last_word(text):
    return text.split()[-1] if text.split() else ""


def pipeline(prompts, x):
    return last_word(count(prompts, question=x))


STATE = PromptState(params={"ins": Param("Count."), "demos": Param("", kind="demos")}, groups={"sys": ("ins", "demos")})
TRAIN = tuple(Example(f"t{i}", f"I have {i} cats.", str(i)) for i in range(1, 9))
VAL = tuple(Example(f"v{i}", f"I have {i} dogs.", str(i)) for i in range(1, 5))
PLAIN, RESAMPLED, RATIONALIZED, ECHOED = {"t1", "t2"}, {"t3"}, {"t4", "t5"}, {"t6"}  # t7, t8: never right


def engine(seen):
    """Right greedily for PLAIN, at sample 1 for RESAMPLED, with the hint for RATIONALIZED; with the hint, ECHOED
    answers right but speaks of the note. Validation examples are right only with demos in the prompt."""
    def respond(request):
        seen.append(request)
        system, user = request.messages[0].content, request.messages[-1].content
        ex = next(e for e in TRAIN + VAL if e.x == user)
        hinted = "A note for this one input" in system
        right = (ex.id in PLAIN or (ex.id.startswith("v") and demo_prompts.HEADER in system) or (ex.id in RESAMPLED and request.sample == 1)
                 or (hinted and ex.id in RATIONALIZED))
        if hinted and ex.id in ECHOED:
            return f"the note says {ex.target}"
        return f"{ex.id} has {'cats' if right else 'none'}: {ex.target if right else 0}"

    return ScriptedEngine(respond)


def run_fit(knobs, seen):
    task = Task("cats", pipeline, STATE, exact_match, train=TRAIN, val=VAL, test=())
    logged = []
    settings = FitSettings(steps=1, batch_size=2, proposals_per_step=1, val_batch=4, seed=5)
    out = fit(task, bootstrap_demos(**knobs), engine=engine(seen), settings=settings, log_step=logged.append)
    return out, logged


def test_a_training_split_scan_finds_plain_resampled_and_rationalized_demos_and_never_keeps_the_hint():
    seen = []
    out, logged = run_fit({"k": 3, "scope": "train", "max_rounds": 2, "rationalize": True}, seen)
    pool = out.strategy_state
    sources = {d.example_id: d.source for d in pool.demos}
    assert sources == {"t1": "plain", "t2": "plain", "t3": "resample 1", "t4": "rationalized", "t5": "rationalized"}
    assert all("note" not in d.input + d.output for d in pool.demos)
    assert pool.stats.events["hint_echo"] == 1 and pool.stats.events["rationalize_asked"] == 5
    # resamples ask only the examples still failed, each round with its own sample index and seed, at temperature 1
    resampled = [r for r in seen if r.sample > 0]
    assert sorted({(r.messages[-1].content, r.sample) for r in resampled}) == sorted(
        [(e.x, 1) for e in TRAIN[2:]] + [(e.x, 2) for e in TRAIN[3:]])
    assert {r.temperature for r in resampled} == {1.0} and len({r.seed for r in resampled}) == 2
    # the step trace shows every rerun and which examples it ran
    reruns = [e for e in logged[0].effects if e.kind == "rerun"]
    assert [e.examples for e in reruns[:3]] == [tuple(e.id for e in TRAIN), tuple(e.id for e in TRAIN[2:]),
                                                tuple(e.id for e in TRAIN[3:])]
    assert sorted(e.examples for e in reruns[3:]) == [(f"t{i}",) for i in range(4, 9)]  # one hinted run each
    assert all(not e.examples or set(e.examples) <= {t.id for t in TRAIN} for e in reruns)


def test_the_proposal_names_where_each_demo_came_from():
    seen = []
    out, logged = run_fit({"k": 5, "n_sets": 1, "scope": "train", "max_rounds": 1, "rationalize": True}, seen)
    text = out.state["demos"].value
    assert text.startswith(demo_prompts.HEADER)
    assert "A note for this one input" not in text and "the note says" not in text
    assert sorted(re.findall(r"I have (\d) cats", text)) == ["1", "2", "3", "4", "5"]
    head, listed = logged[0].candidates[0].reason.split(": demos from ")
    assert head == "set #0" and sorted(listed.split(", ")) == [
        "t1 (plain)", "t2 (plain)", "t3 (resample 1)", "t4 (rationalized)", "t5 (rationalized)"]


def test_a_minibatch_harvest_without_resampling_asks_for_no_rerun():
    seen = []
    out, logged = run_fit({"k": 1}, seen)
    assert [e.kind for e in logged[0].effects if e.kind == "rerun"] == []


def test_a_scan_is_done_once_per_prompt():
    strategy = bootstrap_demos(scope="train")
    results = run_batch(pipeline, STATE, TRAIN[:2], engine=engine([]), loss=exact_match)
    asked = []

    def respond(effect):
        asked.append(effect)
        if isinstance(effect, Rerun):
            ids = set(effect.examples)
            return run_batch(pipeline, effect.state, [e for e in TRAIN if e.id in ids], engine=engine([]),
                             loss=exact_match)
        return run_batch(pipeline, effect.state, VAL, engine=engine([]), loss=exact_match)

    context = StepContext(train_ids=tuple(e.id for e in TRAIN))
    _, s = run_program(strategy.update(results, STATE, strategy.init(STATE), context), respond)
    first = sum(isinstance(e, Rerun) for e in asked)
    _, s = run_program(strategy.update(results, STATE, s, context), respond)
    assert first == 1 and sum(isinstance(e, Rerun) for e in asked) == 1 and len(s.scanned) == 1


def test_scope_train_without_training_ids_says_which_loop_to_use():
    results = run_batch(pipeline, STATE, TRAIN[:2], engine=engine([]), loss=exact_match)
    strategy = bootstrap_demos(scope="train")
    with pytest.raises(StrategyError, match="gave none: use scope='minibatch'"):
        run_program(strategy.update(results, STATE, strategy.init(STATE), StepContext()), lambda e: ())


def test_a_rerun_of_an_unknown_example_is_a_strategy_error_naming_it():
    from funcgrad.core.strategy import Strategy, Update

    def update(results, state, s, context):
        yield (Rerun(state, examples=("v1",)),)
        return Update(), s

    task = Task("cats", pipeline, STATE, exact_match, train=TRAIN, val=VAL, test=())
    with pytest.raises(StrategyError, match=r"asked to rerun \['v1'\], which are not training examples"):
        fit(task, Strategy("peek", lambda s: None, update), engine=engine([]), settings=FitSettings(steps=1))


@pytest.mark.parametrize("knobs,field", [({"scope": "all"}, "scope"), ({"max_rounds": -1}, "max_rounds"),
                                         ({"temperature": 0}, "temperature"), ({"max_set_chars": 10}, "max_set_chars")])
def test_bad_harvest_knobs_are_config_errors_naming_the_knob(knobs, field):
    from funcgrad.core.errors import ConfigError
    with pytest.raises(ConfigError, match=field):
        bootstrap_demos(**knobs)
