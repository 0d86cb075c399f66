"""Issue 11: bootstrapped demos, combinations, the GEPA-style strategy, sampled candidates, paired acceptance.

Every strategy is run as an effect program with answers fed directly (Answers from
tests/test_strategies.py: calls by role, Validate/Rerun by function). Forward runs use
ScriptedEngine tables keyed by the exact input (no prompt parsing).
"""

from __future__ import annotations

import json

import orjson
import pytest

from funcgrad.core.errors import StrategyError
from hypothesis import given, settings
from hypothesis import strategies as st

import funcgrad
from funcgrad import (
    LLM, Call, ConfigError, Example, Loss, Param, PromptState, StepContext, Validate,
    exact_match, fn, run_batch, run_program,
)
from funcgrad.core.task import Task
from funcgrad.core.strategy_state import PoolEntry, freeze_state
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.strategies import (
    alternate, backprop, bootstrap_demos, chain_steps, demos_then, gepa, pareto_front, render_demos, whole_trace,
)
from funcgrad.training.fit import FitSettings, fit
from funcgrad.training.gate import paired_gain
from funcgrad.training.records import fit_state_from_data, fit_state_to_data
from tests.test_strategies import NEW, STATE, Answers, run_counting

# ---------------------------------------------------------------- a two-node pipeline with a demos peer

plan = LLM("plan", system=("plan_system",), user="Q: {input}")
answer_node = LLM("answer", system=("answer_instruction",), user="Plan: {plan}")


@fn("parse")
def parse(text):
    return text.split()[-1] if text.split() else ""


def two_node(prompts, x):
    return parse(answer_node(prompts, plan=plan(prompts, input=x)))


DEMO_STATE = PromptState(
    params={"plan_instruction": Param("Plan the count."), "plan_demos": Param("", kind="demos"),
            "answer_instruction": Param("Answer with the number.")},
    groups={"plan_system": ("plan_instruction", "plan_demos")},
)
TRAIN = tuple(Example(f"t{i}", f"I have {i} train cats.", str(i)) for i in range(1, 7))
VAL = tuple(Example(f"v{i}", f"I have {i} validation dogs.", str(i)) for i in range(1, 5))


def two_node_engine(right):
    """plan writes a listing; answer ends with the right count only for inputs whose example id is in ``right``."""
    def respond(request):
        user = request.messages[-1].content
        if user.startswith("Q: "):
            return f"listing of {user[3:]}"
        ex = next(e for e in TRAIN + VAL if e.x in user)
        return f"so {ex.target}" if ex.id in right else "so 0"

    return ScriptedEngine(respond)


def two_node_results(right, examples=TRAIN[:4], state=DEMO_STATE):
    return run_batch(two_node, state, examples, engine=two_node_engine(right), loss=exact_match)


def val_results(state, seed, right=("v1", "v2", "v3", "v4")):
    """Validation Results (all correct, demos param read): must never become demos."""
    return two_node_results(right, VAL, state)


def run_update(strategy, results, state, s=None, answers=None, context=None):
    answers = answers or Answers()
    program = strategy.update(results, state, strategy.init(state) if s is None else s, context or StepContext())
    update, s1 = run_program(program, answers, strategy=strategy.name)
    return update, freeze_state(s1), answers


# ---------------------------------------------------------------- bootstrap_demos


def test_demos_come_from_the_inner_node_of_successful_training_examples_only():
    results = two_node_results(right=("t1", "t3"))
    answers = Answers(validate=val_results)
    update, s, _ = run_update(bootstrap_demos(k=2, n_sets=3), results, DEMO_STATE, answers=answers)
    text = update.values["plan_demos"]
    assert set(update.values) == {"plan_demos"}
    # the inner node's rendered input and its whole output, for the two examples that scored 1
    assert "Input:\nQ: I have 1 train cats.\nReply:\nlisting of I have 1 train cats." in text
    assert "Q: I have 3 train cats." in text and "train cats." in text
    assert "I have 2 train" not in text and "I have 4 train" not in text
    assert {d.example_id for d in s.demos} == {"t1", "t3"} and {d.node for d in s.demos} == {"plan"}


def test_demos_never_include_validation_or_test_examples():
    strategy = bootstrap_demos(k=2, n_sets=4)
    s, state, texts = None, DEMO_STATE, []
    for t in range(3):
        batch = TRAIN[2 * t:2 * t + 2]
        results = two_node_results(right={e.id for e in TRAIN}, examples=batch, state=state)
        answers = Answers(validate=val_results)
        update, s, _ = run_update(strategy, results, state, s=s, answers=answers, context=StepContext(step=t))
        validated = [e for e in answers.effects if isinstance(e, Validate)]
        assert all(isinstance(e, Validate) for e in answers.effects)
        if validated:  # paired: one seed for every candidate set of the step, one batch
            assert len({e.seed for e in validated}) == 1
        texts.append(update.values.get("plan_demos", ""))
        state = funcgrad.apply_updates(state, update.values)
    train_ids = {e.id for e in TRAIN}
    assert {d.example_id for d in s.demos} <= train_ids and len(s.demos) == 6  # harvested across steps
    assert all("validation dogs" not in t for t in texts) and all(t for t in texts)


def test_a_node_that_never_succeeds_gets_a_note_and_no_empty_prompt():
    results = two_node_results(right=())
    answers = Answers(validate=val_results)
    update, s, _ = run_update(bootstrap_demos(), results, DEMO_STATE, answers=answers)
    assert update.values == {} and answers.effects == []
    (note,) = update.notes
    assert note.param == "plan_demos" and note.status == "no_update"
    assert "node plan has not scored >= 1.0 on any training example" in note.reason


def test_k_larger_than_the_successes_uses_what_there_is_with_a_note():
    results = two_node_results(right=("t2",))
    update, s, answers = run_update(bootstrap_demos(k=3), results, DEMO_STATE, answers=Answers(validate=val_results))
    assert "only 1 demonstration(s) for 'plan_demos' so far (k=3): using 1" in update.notes[0].reason
    assert update.values["plan_demos"].count("Input:") == 1 and "I have 2 train cats." in update.values["plan_demos"]
    assert answers.effects == []  # one possible set: nothing to select


def test_a_state_without_a_demos_param_is_a_strategy_error_saying_how_to_add_one():
    with pytest.raises(StrategyError, match=r"has none: add an empty one .*add_peer\(state, '<group>'"):
        run_update(bootstrap_demos(), run_counting(right=("1",)), STATE)


@pytest.mark.parametrize("knobs,field", [({"n_sets": 0}, "n_sets"), ({"k": 0}, "'k'"), ({"tau": 2}, "tau"),
                                         ({"kk": 1}, "no knob 'kk'")])
def test_bad_demos_knobs_are_config_errors(knobs, field):
    with pytest.raises(ConfigError, match=field):
        bootstrap_demos(**knobs)


def test_demo_sets_are_drawn_from_the_run_seed_and_selected_by_validation():
    results = two_node_results(right={e.id for e in TRAIN[:4]})
    picked = {}
    for seed in (0, 1, 2, 3):
        for _ in range(2):
            scores = {}

            def validate(state, vseed):
                text = state["plan_demos"].value
                scores[text] = 1.0 if "I have 4 train" in text else 0.0  # validation prefers sets with t4
                ex = Example("v", "x", "y")
                return (funcgrad.Result(ex, None, funcgrad.Trace(), Loss(scores[text], "")),)

            update, s, answers = run_update(bootstrap_demos(k=2, n_sets=4), results, DEMO_STATE,
                                            answers=Answers(validate=validate), context=StepContext(seed=seed))
            picked.setdefault(seed, set()).add(update.values["plan_demos"])
            if any(v == 1.0 for v in scores.values()):
                assert "I have 4 train" in update.values["plan_demos"]
    assert all(len(v) == 1 for v in picked.values())  # same seed, same choice
    assert len({next(iter(v)) for v in picked.values()}) > 1  # the run's seed reaches the stream


def test_render_demos_is_the_whole_output():
    text = render_demos([{"input": "Q", "output": "line 1\nline 2\nAnswer: 3"}])
    assert text.endswith("Reply:\nline 1\nline 2\nAnswer: 3")


# ---------------------------------------------------------------- combinations


def test_chain_steps_delegates_by_step_and_keeps_both_states():
    combo = chain_steps((bootstrap_demos(k=1, n_sets=1), 1), whole_trace())
    results = two_node_results(right=("t1",))
    reply = json.dumps({"reasoning": "r", "suggestion": {"plan_instruction": "List each item, then count."}})
    u0, s0, a0 = run_update(combo, results, DEMO_STATE, answers=Answers(optimizer=reply), context=StepContext(step=0))
    assert set(u0.values) == {"plan_demos"} and a0.effects == []
    u1, s1, a1 = run_update(combo, results, DEMO_STATE, s=s0, answers=Answers(optimizer=reply), context=StepContext(step=1))
    assert [type(e) for e in a1.effects] == [Call] and u1.values == {"plan_instruction": "List each item, then count."}
    assert s1[0] == s0[0] and s1[1].steps == 1  # both states, each its own
    assert funcgrad.loads(funcgrad.dumps(s1)) == s1
    assert u1.notes[0].reason == "step 2: whole_trace's turn"  # steps are counted from 1, as in the report


def test_alternate_and_demos_then_pick_by_step():
    a, b = bootstrap_demos(), whole_trace()
    turns = alternate(a, b, every=2)
    picks = []
    for t in range(6):
        answers = Answers(validate=val_results)
        update, _, _ = run_update(turns, two_node_results(right=("t1", "t2")), DEMO_STATE, answers=answers,
                                  context=StepContext(step=t))
        picks.append(update.notes[0].reason.split("'s turn")[0].split(": ")[-1])
    assert picks == ["bootstrap_demos", "bootstrap_demos", "whole_trace", "whole_trace", "bootstrap_demos", "bootstrap_demos"]
    assert demos_then(b, demo_steps=2).config["phases"][0] == {"name": "bootstrap_demos", "steps": 2, "config": a.config}
    with pytest.raises(ConfigError, match="steps=0"):
        chain_steps((a, 0), b)


def test_demos_then_instruction_in_the_training_loop():
    """Forward model: right only with demos in its system prompt; demos come from training examples only."""
    examples = tuple(Example(f"e{i}", f"I have {i} apples.", str(i)) for i in range(1, 13))
    node = LLM("count", system=("sys",), user="{input}")
    state = PromptState(params={"ins": Param("Count."), "demos": Param("", kind="demos")}, groups={"sys": ("ins", "demos")})
    targets = {e.x: e.target for e in examples}

    def respond(request):
        if request.role == "optimizer":
            return json.dumps({"reasoning": "r", "suggestion": {}})
        system, user = request.messages[0].content, request.messages[-1].content
        good = "Worked examples" in system or user in ("I have 1 apples.", "I have 2 apples.")
        return targets[user] if good else "0"

    task = Task("t", lambda p, x: node(p, input=x), state, exact_match, examples[:6], examples[6:9], examples[9:])
    fs = fit(task, demos_then(whole_trace(), demo_steps=1, k=2), engine=ScriptedEngine(respond),
             settings=FitSettings(steps=3, epochs=3, batch_size=6))
    demos = fs.state["demos"].value
    assert fs.final_test == 1.0 and fs.initial_test == 0.0
    assert "I have 1 apples." in demos and "I have 2 apples." in demos
    assert not any(e.x in demos for e in examples[6:])
    assert len(fs.log) == 3 and fs.log[0].accepted


# ---------------------------------------------------------------- GEPA


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=3, max_size=3), min_size=1, max_size=6))
def test_pareto_front_is_non_dominated_and_covers_every_best(rows):
    pool = [PoolEntry({}, {f"x{j}": v for j, v in enumerate(row)}) for row in rows]
    front = pareto_front(pool)
    assert front and all(n >= 1 for n in front.values())
    for i in front:
        for j in range(len(rows)):
            assert not (all(a >= b for a, b in zip(rows[j], rows[i])) and rows[j] != rows[i])
    for x in range(3):
        assert max(rows[i][x] for i in front) == max(r[x] for r in rows)


GEPA_STATE = PromptState(params={"pa": Param("Plan the count."), "sys": Param("Count the objects. Answer with a number.")},
                         groups={})


def gepa_answers(child_gain=True, reply=json.dumps({"diagnosis": "The replies said 0.", "text": NEW}), finish="stop"):
    def score_of(state):
        return 1.0 if NEW in state.values().values() else 0.0

    def scored(state, ids):
        return tuple(funcgrad.Result(Example(i, "x", "y"), None, funcgrad.Trace(), Loss(score_of(state) if child_gain else 0.0, "fb"))
                     for i in ids)

    return Answers(optimizer=reply, validate=lambda state, seed: scored(state, ("v1", "v2")),
                   rerun=lambda state: scored(state, ("e1", "e2", "e3")), finish=finish)


def test_gepa_step_reflects_keeps_an_improving_child_and_proposes_the_best():
    results = run_counting()
    strategy = gepa()
    answers = gepa_answers()
    update, s, _ = run_update(strategy, results, STATE, answers=answers)
    kinds = [(type(e).__name__, getattr(e, "seed", None)) for e in answers.effects]
    assert [k for k, _ in kinds] == ["Validate", "Call", "Rerun", "Validate"]
    assert kinds[0][1] == kinds[3][1]  # the same validation minibatch for every pool entry
    (call,) = answers.calls("optimizer")
    body = call.messages[-1].content
    assert "## Reflection example 1 (score 0.00)" in body and "Input to `answer`" not in body and "Input to answer" in body
    assert "Feedback: wrong: expected" in body
    assert dict(update.values) == {"sys": NEW}
    assert [e.scores for e in s.entries] == [{"v1": 0.0, "v2": 0.0}, {"v1": 1.0, "v2": 1.0}]
    assert s.entries[1].parent == 0
    from funcgrad.training.driver import drive

    fresh = gepa_answers()
    done = drive(strategy.update(results, STATE, strategy.init(STATE), StepContext()), strategy="gepa",
                 critic=ScriptedEngine(lambda r: json.dumps({"diagnosis": "d", "text": NEW})), validate=lambda e: fresh.validate(e.state, e.seed), rerun=lambda e: fresh.rerun(e.state))
    traced, _ = done.value
    assert traced == update
    st_ = funcgrad.StepTrace(1, 0, "gepa", calls=done.calls, effects=done.effects, candidates=traced.candidates, verdict="accepted")
    assert funcgrad.check_step_trace(st_) is st_


@pytest.mark.parametrize("json_schema, reply, finish, want", [
    (True, '{"diagnosis": "said 0", "text": "NEWTEXT"}', "stop", ("NEWTEXT", "")),
    (True, "The replies said 0.", "stop", (None, "invalid_json")),  # the 1.5B's typical tagless reply
    (True, '{"diagnosis": "said 0", "text": "Count', "length", (None, "truncated")),
    (False, "The replies said 0.\n<NEW_VALUE>NEWTEXT</NEW_VALUE>", "stop", ("NEWTEXT", "")),
    (False, "The replies said 0.", "stop", (None, "no_tags")),
])
def test_gepa_reads_a_json_reply_by_default_and_tags_when_asked(json_schema, reply, finish, want):
    update, _, answers = run_update(gepa(json_schema=json_schema), run_counting(), STATE,
                                    answers=gepa_answers(reply=reply.replace("NEWTEXT", NEW), child_gain=False, finish=finish))
    (call,) = answers.calls("optimizer")
    assert (call.json_schema is not None) == json_schema
    assert ("<NEW_VALUE>" in call.messages[-1].content) == (not json_schema)
    cand = update.candidates[0]
    assert (cand.value, cand.guard) == (want[0] and want[0].replace("NEWTEXT", NEW), want[1])


def test_gepa_drops_a_child_that_does_not_improve_the_minibatch():
    update, s, answers = run_update(gepa(), run_counting(), STATE, answers=gepa_answers(child_gain=False))
    assert update.values == {} and len(s.entries) == 1
    assert [type(e).__name__ for e in answers.effects] == ["Validate", "Call", "Rerun"]
    assert any("did not improve the minibatch" in n.reason for n in update.notes)


def test_gepa_guards_the_child_and_rounds_robin_over_components():
    two = PromptState(params={"pa": Param("Plan the count."), "sys": STATE["sys"]})
    node = LLM("answer2", system=("pa", "sys"), user="{input}")
    results = run_batch(lambda p, x: node(p, input=x), two, [Example("e1", "I have 1 apples.", "1")],
                        engine=ScriptedEngine(lambda r: "0"), loss=exact_match)
    strategy = gepa()
    s, seen = None, []
    for t in range(3):
        answers = gepa_answers(reply=json.dumps({"diagnosis": "d", "text": "Count. The answer is 1."}))
        update, s, _ = run_update(strategy, results, two, s=s, answers=answers, context=StepContext(step=t))
        seen.append(update.candidates[0].param)
        assert update.candidates[0].guard == "label_leak" and update.values == {}
    assert seen == ["pa", "sys", "pa"] and s.stats.rejections == {"label_leak": 3}


def test_gepa_never_reflects_on_a_demos_param():
    three = PromptState(params={"pa": Param("Plan the count."), "sys": STATE["sys"], "demos": Param("", kind="demos")})
    node = LLM("answer3", system=("pa", "sys", "demos"), user="{input}")
    results = run_batch(lambda p, x: node(p, input=x), three, [Example("e1", "I have 1 apples.", "1")],
                        engine=ScriptedEngine(lambda r: "0"), loss=exact_match)
    strategy = gepa()
    s, seen = None, []
    for t in range(4):
        update, s, _ = run_update(strategy, results, three, s=s, answers=gepa_answers(child_gain=False),
                                  context=StepContext(step=t))
        seen.append(update.candidates[0].param)
    assert seen == ["pa", "sys", "pa", "sys"]
    only_demos = PromptState(params={"pa": Param("Plan.", trainable=False), "demos": Param("", kind="demos")})
    node = LLM("answer4", system=("pa", "demos"), user="{input}")
    results = run_batch(lambda p, x: node(p, input=x), only_demos, [Example("e1", "I have 1 apples.", "1")],
                        engine=ScriptedEngine(lambda r: "0"), loss=exact_match)
    update, _, answers = run_update(gepa(), results, only_demos, answers=gepa_answers())
    assert update.values == {} and not answers.calls("optimizer")
    assert any("other than demos" in n.reason for n in update.notes)


def test_gepa_state_is_json_and_resumes_identically():
    results = run_counting()
    strategy = gepa(pool_size=2)

    def run(s, steps):
        state, log = STATE, []
        for t in steps:
            answers = gepa_answers()
            update, s, _ = run_update(strategy, results, state, s=s, answers=answers, context=StepContext(step=t, seed=5))
            log.append([type(e).__name__ for e in answers.effects])
        return s, log

    s_mid, _ = run(None, range(2))
    s_a, log_a = run(s_mid, range(2, 4))
    s_b, log_b = run(funcgrad.loads(orjson.dumps(orjson.loads(funcgrad.dumps(s_mid)))), range(2, 4))
    assert s_a == s_b and log_a == log_b and len(s_a.entries) <= 2
    with pytest.raises(ConfigError, match="pool_size"):
        gepa(pool_size=0)


# ---------------------------------------------------------------- sampled candidates


def test_backprop_samples_n_candidates_in_one_batch_and_keeps_the_minibatch_best():
    replies = {0: "<NEW_VALUE>First idea: count all.</NEW_VALUE>", 1: "<NEW_VALUE>Count. The answer is 2.</NEW_VALUE>",
               2: f"<NEW_VALUE>{NEW}</NEW_VALUE>"}
    results = run_counting()
    answers = Answers(optimizer=lambda n: replies[n - 3],
                      rerun=lambda state: run_counting(right=("1", "2") if state["sys"].value == NEW else ()))
    update, s, _ = run_update(backprop(n_candidates=3), results, STATE, answers=answers)
    opt = answers.calls("optimizer")
    assert [r.sample for r in opt] == [0, 1, 2] and all(r.temperature == 0.7 for r in opt)
    rounds = [type(e).__name__ for e in answers.effects]
    assert rounds == ["Call"] * 3 + ["Call"] * 3 + ["Rerun", "Rerun"]  # backward, optimizer x3, reruns of the 2 survivors
    assert dict(update.values) == {"sys": NEW}
    assert [c.guard for c in update.candidates] == ["", "label_leak", ""]
    assert "2 sampled candidates on the minibatch (current 0.00): #0=0.00, #1=0.67; best #1" in update.notes[-1].reason


def test_whole_trace_samples_n_candidates():
    sug = lambda v: json.dumps({"reasoning": "r", "suggestion": {"sys": v}})  # noqa: E731
    answers = Answers(optimizer=lambda n: sug([NEW, "Count every object once."][n]),
                      rerun=lambda state: run_counting(right=("3",) if state["sys"].value != NEW else ()))
    update, _, _ = run_update(whole_trace(n_candidates=2), run_counting(), STATE, answers=answers)
    assert [r.sample for r in answers.calls("optimizer")] == [0, 1]
    assert dict(update.values) == {"sys": "Count every object once."} and [c.call for c in update.candidates] == [0, 1]


def test_an_unchanged_reply_does_not_end_the_step_while_attempts_remain():
    examples = tuple(Example(f"e{i}", f"I have {i} apples.", str(i)) for i in range(1, 7))
    node = LLM("answer", system=("sys",), user="{input}")
    targets = {e.x: e.target for e in examples}

    def respond(request):
        if request.role == "optimizer":  # greedy first attempt: unchanged; the retry samples a new text
            return f"<NEW_VALUE>{NEW if request.sample else STATE['sys'].value}</NEW_VALUE>"
        if request.role == "backward":
            return json.dumps({"mistake": "m", "feedback": [{"param": "sys", "feedback": "list them"}]})
        return targets[request.messages[-1].content] if request.messages[0].content == NEW else "0"

    task = Task("t", lambda p, x: node(p, input=x), STATE, exact_match, examples[:3], examples[3:], examples[3:])
    fs = fit(task, backprop(), engine=ScriptedEngine(respond), settings=FitSettings(steps=1, batch_size=3, proposals_per_step=3))
    (entry,) = fs.log
    assert [p.verdict.value for p in entry.proposals] == ["no_update", "accepted"]
    assert fs.state["sys"].value == NEW


# ---------------------------------------------------------------- acceptance rules


def test_paired_gain_rules():
    old = {f"v{i}": 0.0 for i in range(10)}
    four = dict(old, v0=1.0, v1=1.0, v2=1.0, v3=1.0)
    assert paired_gain(four, old, FitSettings(accept="sign", alpha=0.1))[0]  # 4-0: p = 0.0625
    assert not paired_gain(four, old, FitSettings(accept="sign", alpha=0.05))[0]
    one_loss = dict(four)
    old_one = dict(old, v5=1.0)
    assert not paired_gain(one_loss, old_one, FitSettings(accept="sign", alpha=0.1))[0]  # 4-1: p = 0.1875
    assert paired_gain(one_loss, old_one, FitSettings(accept="margin", margin=3))[0]
    assert not paired_gain(one_loss, old_one, FitSettings(accept="margin", margin=4))[0]
    assert paired_gain(four, old, FitSettings(accept="margin", margin=4))[1].startswith("4 wins, 0 losses on 10")
    for bad in ({"accept": "best"}, {"alpha": 0}, {"alpha": 1.5}, {"margin": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            FitSettings(**bad)


def _gain_task():
    """The proposal wins 2 of 10 validation examples and loses none: the mean rule accepts, a sign test at 0.1 not."""
    examples = tuple(Example(f"e{i}", f"I have {i} apples.", str(i)) for i in range(1, 14))
    node = LLM("answer", system=("sys",), user="{input}")
    targets = {e.x: e.target for e in examples}

    def respond(request):
        if request.role == "optimizer":
            return f"<NEW_VALUE>{NEW}</NEW_VALUE>"
        if request.role == "backward":
            return json.dumps({"mistake": "m", "feedback": [{"param": "sys", "feedback": "list them"}]})
        user = request.messages[-1].content
        better = request.messages[0].content == NEW and user in ("I have 1 apples.", "I have 4 apples.", "I have 5 apples.")
        return targets[user] if better else "0"

    task = Task("t", lambda p, x: node(p, input=x), STATE, exact_match, examples[:3], examples[3:13], examples[3:13])
    return task, ScriptedEngine(respond)


@pytest.mark.parametrize("rule,accepted", [({"accept": "mean"}, True), ({"accept": "sign", "alpha": 0.1}, False),
                                           ({"accept": "margin", "margin": 2}, True), ({"accept": "margin", "margin": 3}, False)])
def test_acceptance_rule_in_the_loop(rule, accepted):
    task, engine = _gain_task()
    fs = fit(task, backprop(), engine=engine, settings=FitSettings(steps=1, batch_size=3, proposals_per_step=1, **rule))
    assert fs.log[0].accepted is accepted
    assert fs.val_scores == ({**{f"e{i}": 0.0 for i in range(4, 14)}, "e4": 1.0, "e5": 1.0} if accepted
                             else {f"e{i}": 0.0 for i in range(4, 14)})
    assert fit_state_from_data(orjson.loads(orjson.dumps(fit_state_to_data(fs)))) == fs
    if rule["accept"] != "mean" and not accepted:
        assert "no paired validation gain: 2 wins, 0 losses on 10 paired validation examples" in fs.log[0].proposals[0].reason


def test_config_exposes_the_acceptance_rule():
    from funcgrad.cli.config import parse_config

    cfg = parse_config({"task": {"name": "object_counting"}, "strategy": {"name": "bootstrap_demos"},
                        "train": {"accept": "sign", "alpha": 0.05}})
    assert (cfg.train.accept, cfg.train.alpha) == ("sign", 0.05)
    with pytest.raises(ConfigError, match=r"\[train\] accept='best' must be one of mean, sign, margin"):
        parse_config({"task": {"name": "object_counting"}, "strategy": {"name": "gepa"}, "train": {"accept": "best"}})


@pytest.mark.parametrize("make", [lambda: gepa(), lambda: backprop(n_candidates=2), lambda: whole_trace(n_candidates=2)],
                         ids=["gepa", "backprop(n_candidates=2)", "whole_trace(n_candidates=2)"])
def test_new_strategies_run_in_the_training_loop(make):
    from tests.test_strategies import LOOP_EXAMPLES, count_pipeline, smart_engine

    task = Task("count", count_pipeline, STATE, exact_match, train=LOOP_EXAMPLES[:6], val=LOOP_EXAMPLES[6:], test=LOOP_EXAMPLES[6:])
    steps = []
    fs = fit(task, make(), engine=smart_engine(), settings=FitSettings(steps=2, batch_size=3, val_batch=3), log_step=steps.append)
    assert fs.state["sys"].value.startswith(NEW) and fs.val_score == 1.0 and fs.final_test == 1.0
    assert funcgrad.loads(funcgrad.dumps(fs.strategy_state)) == fs.strategy_state
    assert all(funcgrad.check_step_trace(s) is s and funcgrad.loads(funcgrad.dumps(s)) == s for s in steps)
    assert sum(s.verdict == funcgrad.Verdict.ACCEPTED for s in steps) == 1


# ---------------------------------------------------------------- proposals as edits


@pytest.mark.parametrize("edit,value", [
    ({"op": "add", "old": "", "new": "List each object first."}, "Count the objects. Answer with a number. List each object first."),
    ({"op": "replace", "old": "answer with a number.", "new": "End with 'Answer: N'."}, "Count the objects. End with 'Answer: N'."),
    ({"op": "delete", "old": "Answer with a number.", "new": ""}, "Count the objects."),
    ({"op": "delete", "old": "Not there.", "new": ""}, None),
    ({"op": "rewrite", "old": "", "new": "x"}, None),
])
def test_backprop_edits_change_one_sentence_and_pass_the_guards(edit, value):
    reply = json.dumps({"pattern": "it answered 0", **edit})
    update, s, answers = run_update(backprop(edits=True), run_counting(), STATE, answers=Answers(optimizer=reply))
    (request,) = answers.calls("optimizer")
    body = request.messages[-1].content
    props = json.loads(request.json_schema)["properties"]
    assert "- Count the objects.\n- Answer with a number." in body and props["op"]["enum"] == ["add", "replace", "delete"]
    assert props["old"]["enum"] == ["Count the objects.", "Answer with a number.", ""]
    assert "<NEW_VALUE>" not in request.messages[0].content
    assert update.values.get("sys") == value
    if value is None:
        (c,) = update.candidates
        assert c.guard == "bad_edit" and c.reason


def test_successive_halving_scores_the_rest_of_validation_only_for_promising_proposals():
    from funcgrad.training.gate import halving_subset

    task, engine = _gain_task()  # the proposal wins e4 and e5 of e4..e13 and loses none
    phases = []
    log = lambda step, phase, results: phases.append((phase, len(results)))  # noqa: E731
    for seed, halving, subset, val_runs, accepted in (
        (0, 3, ["e6", "e9", "e13"], [10, 3], False),     # no win in the subset: stopped after 3 examples
        (1, 3, ["e4", "e6", "e11"], [10, 3, 7], True),   # a win in the subset: the other 7 are scored
        (0, None, [], [10, 10], True),                   # off: the whole validation set at once
    ):
        phases.clear()
        settings = FitSettings(steps=1, batch_size=3, proposals_per_step=1, halving=halving, seed=seed)
        assert [e.id for e in halving_subset(task.val, settings)] == subset
        fs = fit(task, backprop(), engine=engine, log_results=log, settings=settings)
        assert [n for phase, n in phases if phase == "val"] == val_runs
        assert fs.log[0].accepted is accepted
        if accepted:
            assert fs.log[0].val_score == 0.2 and set(fs.val_scores) == {e.id for e in task.val}
        else:
            assert fs.log[0].proposals[0].reason == ("successive halving: no gain on the first 3 validation examples "
                                                     "(0.000 <= 0.000)")
