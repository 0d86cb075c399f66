"""Typed strategy state: previous-format checkpoints resume, bad ones fail in one line; counters add up; labels.

The previous checkpoint format held ``S`` as plain JSON objects; each is written here
by hand, as a checkpoint would give it back (``funcgrad.loads``), and must give the
same step as the typed state it stands for.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings

import funcgrad
from funcgrad import Example, StepContext, StrategyError, run_program
from funcgrad.core.errors import ConfigError
from funcgrad.core.serialize import to_data
from funcgrad.core.strategy_state import (
    Demo, DemoPool, History, HistoryEntry, Pick, Pool, PoolEntry, Stats, rejection_counts,
)
from funcgrad.core.task import Task
from funcgrad.strategies import (
    backprop, bootstrap_demos, chain_steps, check_value, gepa, sampled_momentum, whole_trace,
)
from funcgrad.testing import stats
from tests.test_strategy_golden import STATE, Recorder, forward

SOLVE = STATE["solve_instruction"].value
PLAN = STATE["plan_instruction"].value
VALUES = {"plan_instruction": PLAN, "solve_instruction": SOLVE}
OLD_STATS = {"steps": 3, "calls": {"backward": 5, "optimizer": 2}, "rejections": {"tag_leak": 1}, "events": {"passthrough": 2}}
NEW_STATS = Stats(3, {"backward": 5, "optimizer": 2}, {"tag_leak": 1}, {"passthrough": 2})
OLD_DEMOS = {"pool": [{"id": "e1", "param": "plan_demos", "node": "plan", "call": 0, "input": "Q: one apple",
                       "output": "listing: one apple", "score": 1.0}], "steps": 1, "events": {"harvested": 1}}
NEW_DEMOS = DemoPool((Demo("e1", "plan_demos", "plan", 0, "Q: one apple", "listing: one apple", 1.0),), Stats(1, events={"harvested": 1}))

CASES = {
    "backprop": (backprop(), OLD_STATS, NEW_STATS, "tagged"),
    "whole_trace": (whole_trace(), OLD_STATS, NEW_STATS, "json_wt"),
    "gepa": (gepa(), {"pool": [{"values": VALUES, "scores": {"e1": 1.0, "e2": 0.0}, "parent": None}], "component": 1,
                      "proposed": [{"solve_instruction": "Count."}], **OLD_STATS},
             Pool((PoolEntry(VALUES, {"e1": 1.0, "e2": 0.0}),), 1, ({"solve_instruction": "Count."},), NEW_STATS), "json_gepa"),
    "bootstrap_demos": (bootstrap_demos(k=1), OLD_DEMOS, NEW_DEMOS, "tagged"),
    "sampled_momentum": (
        sampled_momentum(backprop(), k=2),
        {"history": [{"values": VALUES, "mean": 0.5, "n": 1}], "rng": {"step": 0, "position": 2},
         "pick": {"step": 0, "values": VALUES, "candidates": [0], "seed": 5}, "inner": OLD_STATS, "events": {"samples": 1}},
        History((HistoryEntry(VALUES, 0.5, 1),), 0, 2, Pick(0, VALUES, (0,), 5), NEW_STATS, Stats(events={"samples": 1})),
        "tagged"),
    "chain": (chain_steps((bootstrap_demos(k=1), 1), whole_trace()), {"parts": [OLD_DEMOS, OLD_STATS]},
              (NEW_DEMOS, NEW_STATS), "json_wt"),
}


def one_step(strategy, s, optimizer):
    recorder = Recorder(optimizer, 1)
    program = strategy.update(forward(STATE), STATE, s, StepContext(step=1, seed=3))
    return run_program(program, recorder, strategy=strategy.name), recorder.effects


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_previous_format_state_resumes_like_the_typed_state(name):
    strategy, old, new, optimizer = CASES[name]
    from_checkpoint = funcgrad.loads(orjson.dumps({"format": "funcgrad", "version": 2, "value": to_data(old)}))
    assert not isinstance(from_checkpoint, type(new))  # a plain JSON object, as a checkpoint gives it back
    (update_old, s_old), effects_old = one_step(strategy, from_checkpoint, optimizer)
    (update_new, s_new), effects_new = one_step(strategy, new, optimizer)
    assert update_old == update_new and effects_old == effects_new
    if name == "chain":  # the part whose turn it is reads its previous-format state; the other keeps it until its turn
        s_old, s_new = s_old[1], s_new[1]
    assert s_old == s_new and type(s_old) is type(s_new)
    assert funcgrad.loads(funcgrad.dumps(s_old)) == s_old


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_unreadable_state_fails_in_one_line_naming_the_strategy(name):
    strategy, _, _, optimizer = CASES[name]
    with pytest.raises(StrategyError) as err:
        one_step(strategy, {"pool": "corrupt", "parts": 3}, optimizer)
    message = str(err.value)
    assert "\n" not in message and "start the run afresh" in message
    assert repr(strategy.name) in message or "'backprop'" in message  # momentum names its own or its inner part


@settings(max_examples=40, deadline=None)
@given(stats(), stats(), stats())
def test_stats_add_up_associatively_and_rejection_counts_sum_them(a, b, c):
    assert (a + b) + c == a + (b + c)
    assert (a + Stats()) == a
    total = rejection_counts((a, {"inner": b}))
    assert total == {g: a.rejections.get(g, 0) + b.rejections.get(g, 0) for g in {*a.rejections, *b.rejections}}


# ---------------------------------------------------------------- label_leak and declared labels


def test_label_leak_lets_a_declared_label_be_named_but_flags_a_copied_example():
    failing = [("My parcel never arrived at my door", "shipping")]
    rule = "A missing parcel is shipping; a wrong charge is billing."
    assert check_value(rule, "Sort the ticket.", targets=["shipping"], failing=failing)[0] == "label_leak"
    assert check_value(rule, "Sort the ticket.", targets=["shipping"], failing=failing, labels=["shipping", "billing"]) == ("", "")
    copied = "My parcel never arrived at my door: that is shipping."
    guard, reason = check_value(copied, "Sort the ticket.", targets=["shipping"], failing=failing,
                                labels=["shipping", "billing"], skip=["specifics_copy", "input_copy"])
    assert guard == "label_leak" and "pairs the label 'shipping' with" in reason


def test_strategies_learn_the_labels_from_the_step_context():
    state = funcgrad.PromptState.of(sys=funcgrad.Param("Sort the support ticket into a queue."))
    node = funcgrad.LLM("sort", system=("sys",), user="{input}")
    ex = Example("t1", "Where is my parcel? It is late.", "shipping")
    results = funcgrad.run_batch(lambda p, x: node(p, input=x), state, [ex], engine=funcgrad.ScriptedEngine(lambda r: "billing"),
                                 loss=funcgrad.exact_match)
    reply = "<NEW_VALUE>\nA missing or late parcel is shipping; a wrong charge is billing.\n</NEW_VALUE>"

    def respond(effect):
        if effect.request.role == "backward":
            return funcgrad.Response('{"mistake": "said billing", "feedback": [{"param": "sys", "feedback": "late parcels are shipping"}]}')
        return funcgrad.Response(reply)

    for labels, expected in (((), {}), (("shipping", "billing"), {"sys": reply.split("\n")[1]})):
        strategy = backprop()
        update, s = run_program(strategy.update(results, state, strategy.init(state), StepContext(labels=labels)), respond)
        assert dict(update.values) == expected
        assert dict(s.rejections) == ({} if labels else {"label_leak": 1})


def test_a_task_declares_distinct_labels_and_the_classification_task_does():
    from funcgrad.tasks.classification import LABELS, classification

    assert classification(n_train=2, n_val=2, n_test=2).labels == LABELS
    assert Task("t", None, None, None, (), (), ()).labels == ()
    for bad in (["a", "a"], ["a", ""], [3]):
        with pytest.raises(ConfigError, match="labels must be distinct non-empty strings"):
            Task("t", None, None, None, (), (), (), labels=bad)


def test_a_run_resumes_from_a_checkpoint_of_the_previous_format():
    from funcgrad.training.fit import FitSettings, fit
    from funcgrad.training.records import fit_state_from_data, fit_state_to_data
    from tests.test_strategies import LOOP_EXAMPLES, count_pipeline, smart_engine
    from tests.test_strategies import STATE as COUNT_STATE

    task = Task("count", count_pipeline, COUNT_STATE, funcgrad.exact_match, train=LOOP_EXAMPLES[:6],
                val=LOOP_EXAMPLES[6:], test=LOOP_EXAMPLES[6:])
    settings = FitSettings(steps=3, batch_size=2)
    saved = []
    baseline = fit(task, backprop(), engine=smart_engine(), settings=settings, checkpoint=saved.append)
    first = next(fs for fs in saved if fs.step == 1)
    s = first.strategy_state
    data = orjson.loads(orjson.dumps(fit_state_to_data(first)))
    data["strategy_state"] = to_data({"steps": s.steps, "calls": dict(s.calls), "rejections": dict(s.rejections),
                                      "events": dict(s.events)})  # as the previous format wrote it
    resumed = fit(task, backprop(), engine=smart_engine(), settings=settings, resume_from=fit_state_from_data(data))
    assert resumed.state == baseline.state and resumed.log == baseline.log
    assert resumed.strategy_state == baseline.strategy_state and resumed.strategy_state.steps == 3
