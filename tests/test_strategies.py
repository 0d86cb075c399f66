"""Built-in strategies as effect programs: answers are fed directly, no engine, no prompt parsing.

Forward runs use a ScriptedEngine that looks answers up by the exact input (a table,
not a parser); every critic/optimizer answer is fed to the strategy's program by
:class:`Answers`, which keys on the effect's role and its call number only.
"""

from __future__ import annotations

import json
import random
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funcgrad
from funcgrad import (
    LLM, Attempt, Call, ConfigError, Example, Loss, Param, PromptState, Rerun, Response, StepContext,
    Strategy, StrategyError, Update, Validate, apply_updates, exact_match, fn, run_batch, run_program,
    skip_connection,
)
from funcgrad.core.values import thaw
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.strategies import (
    GUARDS, backprop, backward, check_value, extract_fenced, fence, gumbel_top_k, rejection_counts,
    sampled_momentum, whole_trace,
)
import attrs

from funcgrad.core.strategy_state import HistoryEntry, freeze_state
from funcgrad.strategies import guards, replies, text
from funcgrad.strategies.backprop import BackpropKnobs, optimizer_prompt
from funcgrad.strategies.prompts import guarded_phrases
from funcgrad.strategies.whole_trace import WholeTraceKnobs, problem_text
from funcgrad.training.driver import drive

# ---------------------------------------------------------------- fixtures

answer = LLM("answer", system=("sys",), user="{input}")


@fn("parse")
def parse(text):
    nums = re.findall(r"-?\d+", text)
    return nums[-1] if nums else ""


def count_pipeline(prompts, x):
    return parse(answer(prompts, input=x))


STATE = PromptState.of(sys=Param("Count the objects. Answer with a number.", role="system prompt of answer"))
EXAMPLES = tuple(Example(f"e{i}", f"I have {i} apples.", str(i)) for i in range(1, 6))
NEW = "List the objects, then count them."


def forward(right=()):
    """Forward answers by exact input: the right count for examples in ``right``, else 0."""
    table = {ex.x: (f"The answer is {ex.target}" if ex.target in right else "The answer is 0") for ex in EXAMPLES}
    return ScriptedEngine(lambda request: table.get(request.messages[-1].content, "none"))


def run_counting(right=(), examples=EXAMPLES[:3], pipeline=count_pipeline, state=STATE, loss=exact_match):
    return run_batch(pipeline, state, examples, engine=forward(right), loss=loss)


def keys_of(request) -> list[str]:
    """The entry keys a backward request asks for (from its JSON schema, a structured field)."""
    schema = json.loads(request.json_schema)
    return schema["properties"]["feedback"]["items"]["properties"]["param"]["enum"]


class Answers:
    """Feeds a program's effects: by role for calls (text or ``f(n)`` of the call number), by function for runs.

    Records every effect it answered, in order.
    """

    def __init__(self, backward="Say to count every object once.", optimizer=f"<NEW_VALUE>{NEW}</NEW_VALUE>",
                 validate=lambda state, seed: (), rerun=lambda state: (), finish="stop"):
        self.replies = {"backward": backward, "optimizer": optimizer}
        self.validate, self.rerun, self.finish = validate, rerun, finish
        self.effects: list = []

    def calls(self, role=None):
        return [e.request for e in self.effects if isinstance(e, Call) and role in (None, e.request.role)]

    def __call__(self, effect):
        n = len(self.calls())
        self.effects.append(effect)
        if isinstance(effect, Validate):
            return tuple(self.validate(effect.state, effect.seed))
        if isinstance(effect, Rerun):
            return tuple(self.rerun(effect.state))
        reply = self.replies[effect.request.role]
        text = reply(n) if callable(reply) else reply
        if effect.request.role == "backward" and not text.lstrip().startswith(("{", "[", "not json")):
            text = json.dumps({"mistake": "", "feedback": [{"param": k, "feedback": f"{text} [{k}]"} for k in keys_of(effect.request)]})
        return Response(text, finish_reason=self.finish)


def step(strategy, results, state=STATE, s=None, answers=None, context=None):
    answers = answers or Answers()
    program = strategy.update(results, state, strategy.init(state) if s is None else s, context or StepContext())
    update, s1 = run_program(program, answers, strategy=strategy.name)
    return update, s1, answers


# ---------------------------------------------------------------- the effect interface


def test_a_strategy_is_a_program_that_never_touches_an_engine():
    results = run_counting()
    program = backprop().update(results, STATE, backprop().init(STATE), StepContext())
    first = next(program)
    assert isinstance(first, tuple) and len(first) == 3 and all(isinstance(e, Call) for e in first)
    assert {e.request.role for e in first} == {"backward"}


def test_same_inputs_and_answers_give_the_same_update():
    results = run_counting()
    for strategy in (backprop(), whole_trace(), sampled_momentum(backprop(), k=2)):
        opt = json.dumps({"reasoning": "r", "suggestion": {"sys": NEW}}) if strategy.name == "whole_trace" else f"<NEW_VALUE>{NEW}</NEW_VALUE>"
        a = step(strategy, results, answers=Answers(optimizer=opt))
        b = step(strategy, results, answers=Answers(optimizer=opt))
        assert a[0] == b[0] and a[1] == b[1] and a[2].effects == b[2].effects
        assert dict(a[0].values) == {"sys": NEW}


def test_backward_calls_of_a_minibatch_are_in_flight_together():
    """Through the real driver: 3 failing examples -> one round of 3 critic calls, then one optimizer round."""
    results = run_counting()
    seen = []

    def critic(request):
        seen.append(request.role)
        if request.role == "backward":
            return json.dumps({"mistake": "said 0", "feedback": [{"param": "sys", "feedback": "count each apple"}]})
        return f"<NEW_VALUE>{NEW}</NEW_VALUE>"

    engine = ScriptedEngine(critic)
    engine.concurrency = 3
    done = drive(backprop().update(results, STATE, backprop().init(STATE), StepContext()), strategy="backprop", critic=engine)
    rounds = [(e.round, done.calls[e.call].request.role) for e in done.effects]
    assert rounds == [(0, "backward"), (0, "backward"), (0, "backward"), (1, "optimizer")]
    update, _ = done.value
    assert [g.call for g in update.gradients] == [0, 1, 2]
    assert update.candidates[0].call == 3 and update.candidates[0].gradients == (0, 1, 2)


def test_a_bad_yield_or_a_malformed_result_is_a_strategy_error_naming_the_strategy():
    from funcgrad.core.strategy import check_result

    def yields_text(results, state, s, context):
        yield "please call the critic"

    def returns_dict(results, state, s, context):
        return {"sys": "x"}, s
        yield

    critic = ScriptedEngine(lambda r: "x")
    with pytest.raises(StrategyError, match="strategy 'mine' yielded 'please call the critic'"):
        drive(yields_text((), STATE, None, StepContext()), strategy="mine", critic=critic)
    with pytest.raises(StrategyError, match="strategy 'mine' yielded 'please call the critic'"):
        run_program(yields_text((), STATE, None, StepContext()), lambda e: None, strategy="mine")
    with pytest.raises(StrategyError, match=r"strategy 'mine' returned \(\{'sys': 'x'\}, None\)"):
        check_result(drive(returns_dict((), STATE, None, StepContext()), strategy="mine", critic=critic).value, "mine")
    fit_task = funcgrad.Task("t", count_pipeline, STATE, exact_match, EXAMPLES[:2], EXAMPLES[2:3], EXAMPLES[3:4])
    with pytest.raises(StrategyError, match="strategy 'mine' returned"):  # the training loop checks it too
        funcgrad.fit(fit_task, Strategy("mine", lambda s: None, returns_dict), engine=forward(),
                     settings=funcgrad.FitSettings(steps=1, batch_size=2))


def test_knobs_are_validated_values_that_round_trip_through_json():
    with pytest.raises(ConfigError, match="no knob 'max_exampels'; its knobs are: errors_only, tau"):
        backprop(max_exampels=3)
    with pytest.raises(ConfigError, match="tau"):
        backprop(tau=3)
    with pytest.raises(ConfigError, match="max_prompt_chars"):
        whole_trace(max_prompt_chars=100)
    with pytest.raises(ConfigError, match="unknown guard"):
        backprop(skip_guards=("nope",))
    with pytest.raises(ConfigError, match="no knob 'seed'"):
        sampled_momentum(backprop(), seed=3)  # the run's seed drives it now
    for strategy, cls in ((backprop(tau=0.5, skip_guards=("role_copy",)), BackpropKnobs),
                          (whole_trace(max_examples=2), WholeTraceKnobs)):
        data = orjson.loads(orjson.dumps(thaw(strategy.config)))
        assert cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}) == strategy.knobs


# ---------------------------------------------------------------- fencing


@given(st.text(min_size=1).filter(lambda t: "<NEW_VALUE>" not in t and "</NEW_VALUE>" not in t))
def test_fenced_value_round_trips(value):
    got, guard = extract_fenced("Here you go:\n" + fence(value) + "\nthanks")
    assert guard == ""
    assert got == replies.unwrap(value)


def test_fenced_value_edge_cases():
    assert extract_fenced("<NEW_VALUE>\nabc\n</NEW_VALUE><NEW_VALUE>x</NEW_VALUE>") == ("abc", "")
    assert extract_fenced("<NEW_VALUE>\nno close") == ("no close", "")
    assert extract_fenced("<NEW_VALUE>\ncut", finish_reason="length") == (None, "truncated")


# ---------------------------------------------------------------- backward pass


def hop_pipeline(order):
    nodes = {name: LLM(name, system=(f"p{name}",), user="{input}") for name in "ab"}

    def pipeline(prompts, x):
        y = x
        for name in order:
            y = nodes[name](prompts, input=y)
        return y

    return pipeline


HOP_STATE = PromptState.of(pa=Param("A."), pb=Param("B."))
KNOBS = BackpropKnobs()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from("ab"), min_size=1, max_size=7), st.integers(1, 3))
def test_gradient_order_equals_call_order(order, n_examples):
    examples = [Example(f"e{i}", "x", "never") for i in range(n_examples)]
    results = run_batch(hop_pipeline(order), HOP_STATE, examples, engine=ScriptedEngine(lambda r: "out"), loss=exact_match)
    answers = Answers(backward=lambda n: f"critique number {n}")
    grads, requests, _ = run_program(backward(results, HOP_STATE, KNOBS), answers)
    assert isinstance(grads, tuple) and [g.id for g in grads] == list(range(len(grads)))
    assert len(requests) == len(order) * n_examples == len(answers.calls("backward"))
    for name, param in (("a", "pa"), ("b", "pb")):
        for e in range(n_examples):
            mine = [g for g in grads if g.param == param and g.example_id == f"e{e}"]
            assert [g.call_index for g in mine] == list(range(order.count(name)))
            assert [g.record_id for g in mine] == sorted(g.record_id for g in mine)
            # each gradient carries the critique of exactly the call that produced it
            assert all(g.text.startswith(f"critique number {g.call} ") for g in mine)
            assert all(requests[g.call] is answers.calls()[g.call] for g in mine)
    if order.count("a") > 1:
        prompts = [r.messages[-1].content for r in requests if "step `a`" in r.messages[-1].content]
        assert all(f"was called {order.count('a')} times" in p for p in prompts)


def test_examples_walk_in_lockstep_one_round_per_depth():
    examples = [Example(f"e{i}", "x", "never") for i in range(3)]
    results = run_batch(hop_pipeline("ab"), HOP_STATE, examples, engine=ScriptedEngine(lambda r: "out"), loss=exact_match)
    done = drive(backward(results, HOP_STATE, KNOBS), strategy="backprop",
                 critic=ScriptedEngine(lambda r: json.dumps({"mistake": "", "feedback": []})))
    assert [e.round for e in done.effects] == [0, 0, 0, 1, 1, 1]  # b of every example, then a of every example


def test_repeated_calls_listed_in_order_in_backward_prompt():
    results = run_batch(hop_pipeline("aaa"), HOP_STATE, [Example("e", "x", "y")], engine=ScriptedEngine(lambda r: "out"), loss=exact_match)
    _, requests, _ = run_program(backward(results, HOP_STATE, KNOBS), Answers())
    body = requests[0].messages[-1].content
    assert body.index("\n  #0:") < body.index("\n  #1:") < body.index("\n  #2:")
    assert "you judge call #2" in body  # reverse walk: the last call is judged first


def test_time_stamps_ablation_drops_the_call_listing():
    results = run_batch(hop_pipeline("aaa"), HOP_STATE, [Example("e", "x", "y")], engine=ScriptedEngine(lambda r: "out"), loss=exact_match)
    _, requests, _ = run_program(backward(results, HOP_STATE, BackpropKnobs(time_stamps=False)), Answers())
    assert len(requests) == 3
    assert not any("was called 3 times" in r.messages[-1].content or "you judge call" in r.messages[-1].content for r in requests)


def test_pass_through_adds_no_llm_call():
    upper = fn("upper")(lambda s: s.upper())
    retrieve = funcgrad.retriever("docs")(lambda s: [s, "doc"])

    def with_fns(prompts, x):
        return parse(upper(answer(prompts, input=retrieve(x))))

    for pipeline in (with_fns, lambda p, x: answer(p, input=x)):
        update, s, answers = step(backprop(), run_counting(examples=EXAMPLES[:2], pipeline=pipeline))
        assert len(answers.calls("backward")) == 2  # one per LLM record, none for fn / retrieve
        assert len(answers.calls("optimizer")) == 1
        assert "expected '1'" in answers.calls("backward")[0].messages[-1].content  # the loss feedback, unchanged


def test_pass_through_forwards_feedback_to_upstream_llm():
    plan = LLM("plan", system=("p",), user="{input}")
    upper = fn("upper")(lambda s: s.upper())
    state = PromptState.of(p=Param("Plan."), sys=Param("Answer."))

    def pipeline(prompts, x):
        return parse(answer(prompts, input=upper(plan(prompts, input=x))))

    results = run_counting(examples=EXAMPLES[:1], pipeline=pipeline, state=state)
    grads, requests, _ = run_program(backward(results, state, KNOBS), Answers())
    assert {g.param for g in grads} == {"p", "sys"} and len(requests) == 2
    plan_prompt = [r for r in requests if "step `plan`" in r.messages[-1].content][0]
    assert "(from `answer` call #0)" in plan_prompt.messages[-1].content


@settings(max_examples=30, deadline=None)
@given(st.sets(st.sampled_from("12345")), st.booleans())
def test_errors_only_skips_exactly_the_passing_examples(right, errors_only):
    results = run_counting(right, EXAMPLES)
    update, s, answers = step(backprop(errors_only=errors_only, tau=1.0), results)
    failing = sum(r.loss.score < 1.0 for r in results)
    assert failing == 5 - len(right)
    assert len(answers.calls("backward")) == (failing if errors_only else 5)
    assert len(answers.calls("optimizer")) == (1 if (failing or not errors_only) else 0)
    if errors_only and not failing:
        assert not update.values and "no noticeable error" in update.notes[0].reason
        assert {g.source for g in update.gradients} == {"fixed"}
    assert s.calls["backward"] == len(answers.calls("backward"))


def test_errors_only_threshold_tau():
    scores = iter([0.2, 0.5, 0.8, 0.95, 1.0])
    results = run_counting(examples=EXAMPLES, loss=lambda output, example: Loss(next(scores), "graded"))
    _, _, answers = step(backprop(tau=0.8), results)
    assert len(answers.calls("backward")) == 2  # only 0.2 and 0.5 are < 0.8


def test_peers_get_one_backward_call():
    node = LLM("answer", system=("instr", "rule", "demos", "fmt"), user="{input}")
    state = PromptState.of(
        instr=Param("Count."), rule=Param("Count each item once."), demos=Param("Q: 1 cat. A: 1", kind="demos"),
        fmt=Param("Answer with a number.", kind="format", trainable=False),
    )
    results = run_counting(examples=EXAMPLES[:1], pipeline=lambda p, x: node(p, input=x), state=state)
    update, s, answers = step(backprop(), results, state)
    (req,) = answers.calls("backward")
    assert keys_of(req) == ["instr", "rule"]
    body = req.messages[-1].content
    assert "instr (instruction, to be improved)" in body and "rule (instruction, to be improved)" in body
    # a demos param is context for a writer, never written by it (bootstrap_demos and search harvest demos)
    assert "demos (demos, fixed)" in body and "fmt (format, fixed)" in body
    assert len(answers.calls("optimizer")) == 2  # one per trainable peer, in one batch
    assert set(update.values) == {"instr", "rule"}
    assert "The step also reads (not changed now)" in answers.calls("optimizer")[0].messages[-1].content


def test_skip_connection_delivers_loss_feedback():
    plan = LLM("plan", system=("p",), user="{input}")
    state = PromptState.of(p=Param("Plan."), sys=Param("Answer."))

    def pipeline(prompts, x, skip):
        plan(prompts, input=x)  # its output is not used downstream
        if skip:
            skip_connection("plan")
        return answer(prompts, input=x)

    for skip in (False, True):
        results = run_counting(examples=EXAMPLES[:1], pipeline=lambda p, x: pipeline(p, x, skip), state=state)
        grads, requests, _ = run_program(backward(results, state, KNOBS), Answers())
        assert any(g.param == "p" for g in grads) is skip
        plan_calls = [r for r in requests if "step `plan`" in r.messages[-1].content]
        assert len(plan_calls) == int(skip)
        if skip:
            assert "(skip connection from the loss) wrong: expected '1'" in plan_calls[0].messages[-1].content


# ---------------------------------------------------------------- optimizer prompt and guards


def test_optimizer_prompt_has_history_rejected_and_sorted_feedback():
    scores = iter([1.0, 0.0, 0.5])
    results = run_counting(loss=lambda o, e: Loss(next(scores), f"feedback for {e.id}"))
    history = (Attempt({"sys": "Old best prompt."}, 0.7, True), Attempt({"sys": "Older prompt."}, 0.4, True))
    rejected = (Attempt({"sys": "A bad idea."}, 0.1, False, "lost on the training minibatch"),)
    _, _, answers = step(backprop(errors_only=False), results,
                         context=StepContext(history=history, rejected=rejected, steps_since_improvement=3))
    (request,) = answers.calls("optimizer")
    body = request.messages[-1].content
    assert body.index("Example e2 (score 0.00)") < body.index("Example e3 (score 0.50)") < body.index("Example e1 (score 1.00)")
    assert "(val 0.70) Old best prompt." in body and "A bad idea." in body and "lost on the training minibatch" in body
    assert "Steps since last improvement: 3" in body
    assert "<CURRENT_VALUE>\nCount the objects." in body
    assert request.temperature == 0.7 and request.sample == 1  # a retry samples


GARBAGE = [
    ("", "no_tags"),
    ("I would improve the prompt by being clearer.", "no_tags"),
    ("<NEW_VALUE></NEW_VALUE>", "empty"),
    ("<NEW_VALUE>\n1\n</NEW_VALUE>", "too_short"),
    ("<NEW_VALUE>Count.\nThen write the complete new text of `sys`</NEW_VALUE>", "tag_leak"),
    ("<NEW_VALUE>Count the objects. Answer with a number.</NEW_VALUE>", "unchanged"),
    ("<NEW_VALUE>Count the objects. For 'I have 1 apples' the answer is 1.</NEW_VALUE>", "label_leak"),
    ("<NEW_VALUE>Count objects.\n<CURRENT_VALUE>\nCount.</NEW_VALUE>", "tag_leak"),
    ("<NEW_VALUE>Count objects. Evidence, lowest score first.</NEW_VALUE>", "tag_leak"),
    ("<NEW_VALUE>Count objects.</FEEDBACK></NEW_VALUE>", "tag_leak"),
    ("<NEW_VALUE>The prompt should tell the model to count each object once.</NEW_VALUE>", "critique_paste"),
    ("<NEW_VALUE>I will count the objects once you provide the sentence.</NEW_VALUE>", "chat_reply"),
    ("<NEW_VALUE>Count objects. This is the system prompt of answer.</NEW_VALUE>", "role_copy"),
    ("<NEW_VALUE>" + "x" * 5000 + "</NEW_VALUE>", "too_long"),
]


@pytest.mark.parametrize("reply,guard", GARBAGE)
def test_backprop_garbage_gives_no_update_with_reason(reply, guard):
    update, s, _ = step(backprop(), run_counting(), answers=Answers(optimizer=reply))
    assert dict(update.values) == {}
    note = [n for n in update.notes if n.param == "sys"][0]
    assert note.status == "no_update" and note.reason.startswith(guard)
    assert s.rejections == {guard: 1} and rejection_counts(s) == {guard: 1}
    assert guard in GUARDS or guard in ("no_tags",)
    (candidate,) = update.candidates
    assert candidate.guard == guard and candidate.old == STATE["sys"].value


@pytest.mark.parametrize("guard", ["role_copy", "label_leak", "critique_paste", "chat_reply"])
def test_every_guard_can_be_switched_off(guard):
    reply = dict((g, r) for r, g in GARBAGE)[guard]
    update, s, _ = step(backprop(skip_guards=(guard,)), run_counting(), answers=Answers(optimizer=reply))
    assert guard not in s.rejections and update.values


def test_chat_reply_catches_the_optimizer_talking_to_a_user_and_spares_instructions():
    seen = ("I will count the items of the asked category from the list provided. Please provide the sentence "
            "with the list and the question.")  # accepted on a fresh counting split, 2026-12-07, before the guard
    assert check_value(seen, "Answer the question.")[0] == "chat_reply"
    for reply in ("Sure, here is the instruction: count each item.", "Here's a better prompt: count.", "I'll count each item once."):
        assert check_value(reply, "Answer the question.")[0] == "chat_reply", reply
    for instruction in ("If the question names a category, count only its items.", "Imagine you are a careful clerk.",
                        "It is important to count every item once.", "Identify the category, then count."):
        assert check_value(instruction, "Answer the question.") == ("", ""), instruction
    assert check_value("I am a counter. Count twice.", "I am a counter. Count.") == ("", "")  # the current value did too


def test_role_copy_and_specifics_copy():
    role = "The instruction should make the model count exactly the items of the asked category."
    new = "Count carefully. The instruction should make the model count exactly the items of the asked category."
    assert check_value(new, "Count.", role=role)[0] == "role_copy"
    assert check_value("Count only the items of the asked category.", "Count.", role=role) == ("", "")
    quoting = "Its input is a sentence followed by a question 'How many <category> do I have?'. Make it count."
    echo = "How many <category> do I have? Please provide the number only."  # accepted in a real run, 2026-12-02
    assert check_value(echo, "Answer the question.", role=quoting)[0] == "role_copy"
    assert check_value("Count the items of the asked category.", "Answer.", role=quoting) == ("", "")
    q = "In which country was Ulvira born in Mirelund?"
    assert check_value("Name the country of the town in the question.", "Answer.", inputs=[q]) == ("", "")
    assert check_value("Answer with the country. Mirelund is in Ostria.", "Answer.", inputs=[q])[0] == "specifics_copy"
    reply = "The second query should ask for the country of the city where she was born"
    assert check_value("Query. " + reply + ".", "Query.", replies=[reply])[0] == "specifics_copy"
    assert check_value("Add the 12 items up.", "Count.", inputs=["I have 12 apples"])[0] == "specifics_copy"
    assert check_value("List them in 2 steps.", "Count.", inputs=["I have 2 apples"]) == ("", "")  # single digits are common


def test_backprop_critique_pasted_verbatim_is_rejected():
    text = "Say to count every object once, including the ones mentioned in passing"
    update, s, _ = step(backprop(), run_counting(), answers=Answers(backward=text, optimizer=f"<NEW_VALUE>{text} [sys]</NEW_VALUE>"))
    assert not update.values and s.rejections == {"critique_paste": 1}


def test_truncated_optimizer_reply_is_rejected():
    update, s, _ = step(backprop(), run_counting(), answers=Answers(optimizer="<NEW_VALUE>List the obj", finish="length"))
    assert not update.values and s.rejections["truncated"] == 1
    assert "critique_truncated" not in s.rejections  # the critiques were valid JSON


def test_unusable_and_generic_critiques_fall_back_to_the_downstream_feedback():
    replies = ["not json at all", json.dumps([{"param": "sys", "feedback": "Clarify the objective."}])]
    update, s, answers = step(backprop(), run_counting(examples=EXAMPLES[:2]), answers=Answers(backward=lambda n: replies[n]))
    assert s.rejections == {"critique_unparsed": 1, "critique_generic": 1}
    assert update.values  # the optimizer still saw the (passed-through) loss feedback
    assert [g.source for g in update.gradients] == ["passthrough", "passthrough"]
    body = answers.calls("optimizer")[0].messages[-1].content
    assert "wrong: expected" in body and "Clarify the objective" not in body


# ---------------------------------------------------------------- bounded prompts that keep their instructions


LONG = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), min_size=0, max_size=6000)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(LONG, LONG), min_size=1, max_size=6), LONG, st.integers(2000, 5000), st.sampled_from(["a", "aab", "ab"]))
def test_prompts_stay_within_the_cap_and_end_with_the_reply_instructions(cases, feedback, cap, order):
    examples = [Example(f"e{i}", x, "never") for i, (x, _) in enumerate(cases)]
    table = {x: y for x, y in cases}
    results = run_batch(hop_pipeline(order), HOP_STATE, examples, engine=ScriptedEngine(lambda r: table.get(r.messages[-1].content, feedback)),
                        loss=lambda o, e: Loss(0.0, feedback))
    knobs = BackpropKnobs(max_prompt_chars=cap, max_value_chars=500, max_chars=3000)
    context = StepContext(rejected=(Attempt({"pa": feedback[:300] or "x"}, 0.0, False, feedback[:300]),), steps_since_improvement=2)
    grads, requests, _ = run_program(backward(results, HOP_STATE, knobs), Answers(backward=lambda n: feedback))
    for request in requests:
        body = request.messages[-1].content
        assert len(body) <= cap and body.rstrip().endswith("}]") and "Reply with JSON with these fields" in body
    for name in ("pa", "pb"):
        gs = tuple(g for g in grads if g.param == name)
        if gs:
            _, body = optimizer_prompt(name, HOP_STATE, gs, results, context, knobs)
            assert len(body) <= cap and body.endswith(f"complete new text of `{name}` between <NEW_VALUE> and </NEW_VALUE>.")
            assert "<CURRENT_VALUE>\n" + HOP_STATE[name].value in body
    wk = WholeTraceKnobs(max_prompt_chars=cap, max_value_chars=500, max_chars=3000)
    body, names, _ = problem_text(results, HOP_STATE, wk, context)
    assert len(body) <= cap and body.endswith("an empty suggestion {} means no change.") and "#Variables" in body


def test_over_long_evidence_is_cut_with_a_visible_marker():
    huge = "word " * 20000
    results = run_batch(count_pipeline, STATE, [Example(f"e{i}", huge, "1") for i in range(10)],
                        engine=ScriptedEngine(lambda r: huge), loss=exact_match)
    body, _, _ = problem_text(results, STATE, WholeTraceKnobs(max_prompt_chars=3000), StepContext())
    assert len(body) <= 3000 and "more examples not shown: the prompt is capped at 3000 chars" in body


# ---------------------------------------------------------------- prompts in one place


def live_prompts() -> list[str]:
    """Prompts of the built-in strategies over scenarios that reach every branch of their templates."""
    texts = []
    plan = LLM("plan", system=("p",), user="{input}")
    node = LLM("answer", system=("instr", "fmt"), user="{input}")
    state = PromptState.of(p=Param("Plan."), instr=Param("Count.", role="what the answer node is told"),
                           fmt=Param("Reply with a number.", kind="format", trainable=False))
    retrieve = funcgrad.retriever("docs")(lambda s: [s])

    def pipeline(prompts, x):
        y = plan(prompts, input=x)
        skip_connection("plan")
        for _ in range(8):
            y = node(prompts, input=retrieve(y))
        return y

    many = tuple(Example(f"e{i}", "I have 12 apples. " * (i + 1), "12") for i in range(6))
    results = run_batch(pipeline, state, many, engine=ScriptedEngine(lambda r: "7 " * 300), loss=exact_match)
    context = StepContext(history=(Attempt({"instr": "Older.", "p": "Old plan."}, 0.5, True),),
                          rejected=(Attempt({"instr": "Bad.", "p": "Bad plan."}, 0.0, False, "lost"),), steps_since_improvement=2)
    for knobs in (BackpropKnobs(max_feedback=1, max_calls_listed=2), BackpropKnobs(max_prompt_chars=2000, max_value_chars=100)):
        grads, requests, _ = run_program(backward(results, state, knobs), Answers())
        texts += [m.content for r in requests for m in r.messages]
        for name in ("instr", "p"):
            texts += list(optimizer_prompt(name, state, tuple(g for g in grads if g.param == name), results, context, knobs))
    single = run_batch(count_pipeline, STATE, EXAMPLES[:1], engine=ScriptedEngine(lambda r: "0"), loss=lambda o, e: Loss(0.0, "bad"))
    texts += [m.content for r in run_program(backward(single, STATE, KNOBS), Answers())[1] for m in r.messages]
    for wk in (WholeTraceKnobs(max_records=3), WholeTraceKnobs(max_prompt_chars=1700, max_value_chars=100)):
        texts.append(problem_text(results, state, wk, context)[0])
    _, _, answers = step(whole_trace(), results, state, answers=Answers(optimizer="{}"), context=context)
    texts += [m.content for r in answers.calls() for m in r.messages]
    from tests.test_control_credit import live_control_prompts  # imports this module: import when called

    texts += live_control_prompts()
    texts += list(optimizer_prompt("instr", state, (), results, context, BackpropKnobs(edits=True)))
    g_s = None
    for json_schema in (True, False):
        for _ in ("p", "instr"):  # GEPA reflects on one component per step, round robin
            _, g_s, answers = step(funcgrad.strategies.gepa(json_schema=json_schema), results, state, s=g_s, answers=Answers(), context=context)
            texts += [m.content for r in answers.calls() for m in r.messages]
    texts.append(text.clip("x" * 50, 10))
    return texts


def test_every_guarded_phrase_occurs_in_a_live_prompt():
    texts = live_prompts()
    missing = [p for p in guarded_phrases() if not any(p in t for t in texts)]
    assert missing == []


def test_the_guard_phrase_list_is_derived_from_the_prompt_texts():
    from funcgrad.strategies.prompts import backprop as T

    assert guards.META_PHRASES == guarded_phrases()
    assert "You are an expert prompt engineer" in guards.META_PHRASES
    assert T.OPTIMIZER_SYSTEM.startswith("You are an expert prompt engineer")


# ---------------------------------------------------------------- whole_trace


def test_whole_trace_one_optimizer_call_and_code_lines():
    reply = json.dumps({"reasoning": "It ignored the count.", "suggestion": {"sys": NEW}})
    update, s, answers = step(whole_trace(), run_counting(), answers=Answers(optimizer=reply))
    assert len(answers.calls()) == len(answers.calls("optimizer")) == 1
    assert dict(update.values) == {"sys": NEW}
    body = answers.calls()[0].messages[-1].content
    for section in ("#Documentation", "#Variables", "#Code", "#Inputs", "#Others", "#Outputs", "#Feedback"):
        assert section in body
    assert "y1 = answer(sys, input=y0)" in body and "y2 = parse(text=y1)" in body
    assert json.loads(answers.calls()[0].json_schema)["properties"]["suggestion"]["properties"] == {"sys": {"type": "string", "maxLength": 1500}}
    assert [g.source for g in update.gradients] == ["loss"] * 3 and update.candidates[0].gradients == (0, 1, 2)


def test_whole_trace_skips_when_all_perfect_and_no_change_is_legal():
    update, s, answers = step(whole_trace(), run_counting(right=("1", "2", "3")))
    assert answers.effects == [] and not update.values
    update, s, _ = step(whole_trace(), run_counting(), answers=Answers(optimizer='{"reasoning": "looks fine", "suggestion": {}}'))
    assert not update.values and "suggested no change" in update.notes[-1].reason and s.rejections == {}


@pytest.mark.parametrize("reply,guard", [
    ("not json", "invalid_json"),
    ('{"reasoning": "x", "suggestion": "sys"}', "invalid_json"),
    ('{"reasoning": "x", "suggestion": {"sys": 3}}', "invalid_json"),
    ('{"reasoning": "x", "suggestion": {"nope": "Count."}}', "unknown_param"),
    ('{"reasoning": "x", "suggestion": {"sys": "Count. #Variables"}}', "tag_leak"),
    ('{"reasoning": "x", "suggestion": {"sys": "Count. It is 2 here."}}', "label_leak"),
    ('{"reasoning": "x", "suggestion": {"sys": ""}}', "empty"),
])
def test_whole_trace_garbage_gives_no_update_with_reason(reply, guard):
    update, s, _ = step(whole_trace(), run_counting(), answers=Answers(optimizer=reply))
    assert not update.values
    assert any(n.status == "no_update" and n.reason.startswith(guard) for n in update.notes)
    assert s.rejections == {guard: 1}


def test_whole_trace_parses_fenced_json_with_chatter():
    reply = 'Sure!\n```json\n{"reasoning": "r", "suggestion": {"sys": "Count each object once."}}\n```'
    update, _, answers = step(whole_trace(json_schema=False), run_counting(), answers=Answers(optimizer=reply))
    assert dict(update.values) == {"sys": "Count each object once."}
    assert answers.calls()[0].json_schema is None


def test_whole_trace_code_view_shows_constant_inputs():
    from funcgrad.strategies.whole_trace import code_line

    record = funcgrad.Record(2, "query", "llm", call_index=0, inputs=(0,), input_names=("question",), params=("q",),
                             consts={"facts": "(none yet)"})
    assert code_line(record) == "y2 = query(q, question=y0, facts='(none yet)')"


# ---------------------------------------------------------------- sampled momentum


def counter_strategy():
    """An inner strategy that appends the step number to sys (no effects of its own)."""
    def update(results, state, s, context):
        return Update({"sys": state["sys"].value + f" v{context.step}"}), s + 1
        yield

    return Strategy("counter", lambda state: 0, update)


def value_results(state, seed):
    """Validation Results whose mean score is a function of the state's text."""
    score = (len(state["sys"].value) % 7) / 7
    ex = Example("v", "x", "y")
    return (funcgrad.Result(ex, None, funcgrad.Trace(), Loss(score, "")),)


def run_momentum(strategy, s, state, steps, log, seed=0):
    for t in steps:
        answers = Answers(validate=value_results)
        update, s = run_program(strategy.update((), state, s, StepContext(step=t, seed=seed)), answers)
        s = freeze_state(s)
        log.append(([(type(e).__name__, e.state["sys"].value, getattr(e, "seed", None)) for e in answers.effects], dict(update.values)))
        state = apply_updates(state, update.values)
    return s, state


def test_momentum_same_seed_same_candidates_after_json_round_trip():
    strategy = sampled_momentum(counter_strategy(), k=3)
    log_a, log_b, log_c = [], [], []
    s, state = run_momentum(strategy, strategy.init(STATE), STATE, range(4), log_a, seed=7)
    s_a, _ = run_momentum(strategy, s, state, range(4, 8), log_a, seed=7)
    s_b, _ = run_momentum(strategy, funcgrad.loads(funcgrad.dumps(s, indent=True)), state, range(4, 8), log_b, seed=7)
    s_c, _ = run_momentum(strategy, funcgrad.loads(funcgrad.dumps(s)), state, range(4, 8), log_c, seed=7)
    assert log_a[4:] == log_b == log_c and s_a == s_b == s_c
    assert any(sum(kind == "Validate" for kind, _, _ in effects) == 3 for effects, _ in log_a)  # k candidates, one batch
    log_d = []
    run_momentum(strategy, strategy.init(STATE), STATE, range(8), log_d, seed=8)  # the run's seed reaches the sampler
    assert log_d != log_a


def test_momentum_steps_from_best_past_state_and_returns_update_relative_to_state():
    good = "Count carefully and answer."
    state = apply_updates(STATE, {"sys": "Bad."})
    strategy = sampled_momentum(counter_strategy(), k=5, c=0.0)
    s = attrs.evolve(strategy.init(STATE), entries=(HistoryEntry({"sys": good}), HistoryEntry({"sys": "Bad."})))
    scores = lambda st_, seed: (funcgrad.Result(Example("v", "x"), None, funcgrad.Trace(), Loss(1.0 if st_["sys"].value == good else 0.0, "")),)  # noqa: E731
    answers = Answers(validate=scores)
    update, s2 = run_program(strategy.update((), state, s, StepContext(step=3)), answers)
    validates = [e for e in answers.effects if isinstance(e, Validate)]
    reruns = [e.state["sys"].value for e in answers.effects if isinstance(e, Rerun)]
    assert len(validates) == 2 and len({e.seed for e in validates}) == 1  # paired: one validation minibatch
    assert reruns == [good]
    assert dict(update.values) == {"sys": good + " v3"}
    means = {h.values["sys"]: (h.mean, h.n) for h in s2.entries}
    assert means[good] == (1.0, 1) and means["Bad."] == (0.0, 1) and means[good + " v3"] == (None, 0)
    assert s2.inner == 1
    again = Answers(validate=scores)
    run_program(strategy.update((), state, s2, StepContext(step=3)), again)
    assert [type(e) for e in again.effects] == [Rerun]  # a second proposal of the step reuses p*


def test_gumbel_top_k_is_sampling_without_replacement():
    rng = random.Random(0)
    counts = [0, 0, 0]
    for _ in range(3000):
        counts[gumbel_top_k([0.0, 0.5, 1.0], 1, 0.5, 1.0, rng)[0]] += 1
    assert counts[2] > counts[1] > counts[0] > 0
    assert sorted(gumbel_top_k([0.1] * 6, 6, 0.6, 0.4, rng)) == list(range(6))


# ---------------------------------------------------------------- drop-in, in the training loop


def smart_optimizer(n):
    return f"<NEW_VALUE>{NEW} Answer with a number.</NEW_VALUE>"


def smart_engine():
    """Forward answers are right only under the improved prompt (looked up, not parsed)."""
    def respond(request):
        if request.role in ("backward", "optimizer"):
            if request.role == "backward":
                return json.dumps({"mistake": "said 0", "feedback": [{"param": k, "feedback": "list them first"} for k in keys_of(request)]})
            if request.json_schema and '"diagnosis"' in request.json_schema:  # gepa's reflection
                return json.dumps({"diagnosis": "it miscounted", "text": f"{NEW} Answer with a number."})
            if request.json_schema and "suggestion" in request.json_schema:
                return json.dumps({"reasoning": "it miscounted", "suggestion": {"sys": f"{NEW} Answer with a number."}})
            return smart_optimizer(0)
        smart = request.messages[0].content.startswith(NEW)
        return f"so {TARGETS[request.messages[-1].content]}" if smart else "so 0"

    return ScriptedEngine(respond)


LOOP_EXAMPLES = tuple(Example(f"e{i}", f"I have {i} apples.", str(i)) for i in range(1, 10))
TARGETS = {ex.x: ex.target for ex in LOOP_EXAMPLES}


@pytest.mark.parametrize("make", [backprop, whole_trace, lambda: sampled_momentum(backprop(), k=2),
                                  lambda: sampled_momentum(whole_trace(), k=2)],
                         ids=["backprop", "whole_trace", "momentum(backprop)", "momentum(whole_trace)"])
def test_strategies_run_in_the_training_loop(make):
    from funcgrad.core.task import Task
    from funcgrad.training.fit import FitSettings, fit

    task = Task("count", count_pipeline, STATE, exact_match, train=LOOP_EXAMPLES[:6], val=LOOP_EXAMPLES[6:], test=LOOP_EXAMPLES[6:])
    steps = []
    fs = fit(task, make(), engine=smart_engine(), settings=FitSettings(steps=2, batch_size=3), log_step=steps.append)
    assert fs.state["sys"].value.startswith(NEW) and fs.val_score == 1.0
    assert funcgrad.loads(funcgrad.dumps(fs.strategy_state)) == fs.strategy_state
    accepted = [s for s in steps if s.verdict == funcgrad.Verdict.ACCEPTED]
    assert len(accepted) == 1 and accepted[0].candidates[0].value.startswith(NEW)
    assert all(funcgrad.check_step_trace(s) is s and funcgrad.loads(funcgrad.dumps(s)) == s for s in steps)
    assert any(c.request.role == "optimizer" for c in accepted[0].calls)


def test_check_value_allows_targets_already_in_the_old_value():
    assert check_value("Count. Five is not 5 here.", "5 apples: count them.", targets=["5"]) == ("", "")
    assert check_value("Count them; 12 or more.", "Count.", targets=["1", "2"]) == ("", "")  # word boundaries


def test_input_copied_into_the_prompt_is_rejected():
    x = "I have three apples, a banana, and two peaches. How many fruits do I have?"
    assert check_value(x, "Answer with a single integer.", inputs=[x])[0] == "input_copy"
    assert check_value("Count: " + x.upper(), "Count.", inputs=[x])[0] == "input_copy"
    assert check_value("List the items, then count them.", "Count.", inputs=[x]) == ("", "")


def test_a_retry_that_repeats_a_rejected_proposal_is_not_proposed_again():
    results = run_counting(examples=EXAMPLES[:2], pipeline=lambda p, x: answer(p, input=x))
    same = "Count each object once, then give the number."
    rejected = (Attempt({"sys": same}, 0.0, False, "did not beat"),)
    for strategy, reply in (
        (backprop(), f"Pattern: x\n<NEW_VALUE>\n{same}\n</NEW_VALUE>"),
        (whole_trace(), json.dumps({"reasoning": "r", "suggestion": {"sys": same}})),
    ):
        update, s, answers = step(strategy, results, answers=Answers(optimizer=reply), context=StepContext(rejected=rejected))
        assert update.values == {}
        assert any(n.reason.startswith("repeats_rejected") for n in update.notes)
        assert rejection_counts(s) == {"repeats_rejected": 1}
        assert all(r.temperature == 0.7 for r in answers.calls("optimizer"))
