"""Built-in strategies on a scripted engine: call counts, order, guards, drop-in use."""

from __future__ import annotations

import json
import re

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funcgrad
from funcgrad import (
    LLM, Attempt, BudgetExceeded, EngineError, Example, Loss, Param, PromptState, StepContext,
    Strategy, Update, apply_updates, exact_match, fn, run_batch, skip_connection,
)
from funcgrad.engines.scripted import ScriptedEngine, by_role
from funcgrad.core.values import freeze, thaw

from funcgrad.strategies import (
    GUARDS, backprop, backward, check_value, extract_fenced, fence, rejection_counts,
    sampled_momentum, whole_trace,
)
from funcgrad.strategies import proposals as P

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


def keys_of(request) -> list[str]:
    """The entry keys a backward request asks for (from its JSON schema)."""
    schema = json.loads(request.json_schema)
    return schema["properties"]["feedback"]["items"]["properties"]["param"]["enum"]


def critic(text="Say to count every object once."):
    def respond(request):
        return json.dumps([{"param": k, "feedback": f"{text} [{k}]"} for k in keys_of(request)])
    return respond


def forward_right(ids):
    """Forward answers: correct for inputs naming a count in ``ids``, else '0'."""
    def respond(request):
        m = re.search(r"I have (\d+)", request.messages[-1].content)
        n = m.group(1) if m else "0"
        return f"The answer is {n}" if n in ids else "The answer is 0"
    return respond


def engines(forward, backward=None, optimizer="<NEW_VALUE>List the objects, then count them.</NEW_VALUE>"):
    task = ScriptedEngine(by_role({"forward": forward}))
    table = {"backward": backward or critic(), "optimizer": optimizer}
    return task, ScriptedEngine(by_role(table))


def ctx(step=0, **kw):
    return StepContext(step=step, **kw)


def step(strategy, results, state, s, engine, evaluate=lambda st, seed: 0.5, context=None):
    return strategy.update(results, state, s, engine=engine, evaluate=evaluate, context=context or ctx())


class Finish(ScriptedEngine):
    """A scripted engine that reports a fixed finish_reason (to simulate the token cap)."""

    def __init__(self, respond, finish):
        super().__init__(respond)
        self.finish = finish

    def complete(self, request):
        return attrs.evolve(super().complete(request), finish_reason=self.finish)


# ---------------------------------------------------------------- fencing


@given(st.text(min_size=1).filter(lambda t: "<NEW_VALUE>" not in t and "</NEW_VALUE>" not in t))
def test_fenced_value_round_trips(value):
    got, guard = extract_fenced("chatter before\n" + fence(value) + "\nchatter after")
    assert guard == ""
    assert got == P._unwrap(value)
    if value == value.strip() and not value.startswith(("```", '"', "'", "`")):
        assert got == value


def test_fenced_value_edge_cases():
    assert extract_fenced("no tags") == (None, "no_tags")
    assert extract_fenced("<NEW_VALUE>cut off", finish_reason="length") == (None, "truncated")
    assert extract_fenced("<NEW_VALUE>model stopped early") == ("model stopped early", "")
    assert extract_fenced("<NEW_VALUE>\n```\nin a fence\n```\n</NEW_VALUE>") == ("in a fence", "")


# ---------------------------------------------------------------- backprop: order, pass-through, errors-only


def hop_pipeline(order):
    """Calls nodes 'a' and 'b' in ``order``, each consuming the previous output."""
    nodes = {"a": LLM("a", system=("pa",), user="{input}"), "b": LLM("b", system=("pb",), user="{input}")}

    def pipeline(prompts, x):
        y = x
        for name in order:
            y = nodes[name](prompts, input=y)
        return y

    return pipeline


HOP_STATE = PromptState.of(pa=Param("A."), pb=Param("B."))


def echo_call_critic(request):
    """Critique naming the node and call index the backward prompt says it judges."""
    body = request.messages[-1].content
    node = re.search(r"step `(\w+)`", body).group(1)
    m = re.search(r"you judge call #(\d+)", body)
    idx = m.group(1) if m else "0"
    return json.dumps([{"param": k, "feedback": f"{node} call {idx}"} for k in keys_of(request)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from("ab"), min_size=1, max_size=7), st.integers(1, 3))
def test_gradient_order_equals_call_order(order, n_examples):
    task, critic_engine = engines(lambda r: "out", backward=echo_call_critic)
    examples = [Example(f"e{i}", "x", "never") for i in range(n_examples)]
    results = run_batch(hop_pipeline(order), HOP_STATE, examples, engine=task, loss=exact_match)
    grads = backward(results, HOP_STATE, critic_engine, dict(backprop().config), P.new_stats())
    for name, param in (("a", "pa"), ("b", "pb")):
        gs = grads.get(param, ())
        assert isinstance(gs, tuple)
        assert len(gs) == order.count(name) * n_examples
        for e in range(n_examples):
            mine = [g for g in gs if g.example_id == f"e{e}"]
            assert [g.call_index for g in mine] == list(range(order.count(name)))
            assert [g.record_id for g in mine] == sorted(g.record_id for g in mine)
            assert [g.text for g in mine] == [f"{name} call {i}" for i in range(order.count(name))]
    # one backward call per LLM record, and a repeated node says so in its prompt
    assert critic_engine.calls("backward") == len(order) * n_examples
    if order.count("a") > 1:
        prompts = [r.messages[-1].content for r in critic_engine.requests if "step `a`" in r.messages[-1].content]
        assert all(f"was called {order.count('a')} times" in p for p in prompts)


def test_repeated_calls_listed_in_order_in_backward_prompt():
    task, critic_engine = engines(lambda r: "out", backward=echo_call_critic)
    results = run_batch(hop_pipeline("aaa"), HOP_STATE, [Example("e", "x", "y")], engine=task, loss=exact_match)
    backward(results, HOP_STATE, critic_engine, dict(backprop().config), P.new_stats())
    body = critic_engine.requests[0].messages[-1].content
    assert body.index("\n  #0:") < body.index("\n  #1:") < body.index("\n  #2:")
    assert "you judge call #2" in body  # reverse walk: the last call is judged first


def test_pass_through_adds_no_llm_call():
    upper = fn("upper")(lambda s: s.upper())
    retrieve = funcgrad.retriever("docs")(lambda s: [s, "doc"])

    def with_fns(prompts, x):
        return parse(upper(answer(prompts, input=retrieve(x))))

    def bare(prompts, x):
        return answer(prompts, input=x)

    for pipeline in (with_fns, bare):
        task, critic_engine = engines(forward_right(set()))
        results = run_batch(pipeline, STATE, EXAMPLES[:2], engine=task, loss=exact_match)
        update, s = step(backprop(), results, STATE, backprop().init(STATE), critic_engine)
        assert critic_engine.calls("backward") == 2  # one per LLM record, none for fn / retrieve
        assert critic_engine.calls("optimizer") == 1
    body = critic_engine.requests[0].messages[-1].content
    assert "expected '1'" in body  # the loss feedback reached the LLM node unchanged


def test_pass_through_forwards_feedback_to_upstream_llm():
    plan = LLM("plan", system=("p",), user="{input}")
    state = PromptState.of(p=Param("Plan."), sys=Param("Answer."))

    def pipeline(prompts, x):
        return parse(answer(prompts, input=upper(plan(prompts, input=x))))

    upper = fn("upper")(lambda s: s.upper())
    task, critic_engine = engines(lambda r: "no number")
    results = run_batch(pipeline, state, EXAMPLES[:1], engine=task, loss=exact_match)
    grads = backward(results, state, critic_engine, dict(backprop().config), P.new_stats())
    assert set(grads) == {"p", "sys"}
    assert critic_engine.calls("backward") == 2
    plan_prompt = [r for r in critic_engine.requests if "step `plan`" in r.messages[-1].content][0]
    assert "(from `answer` call #0)" in plan_prompt.messages[-1].content


@settings(max_examples=30, deadline=None)
@given(st.sets(st.sampled_from("12345")), st.booleans())
def test_errors_only_skips_exactly_the_passing_examples(right, errors_only):
    task, critic_engine = engines(forward_right(right))
    results = run_batch(count_pipeline, STATE, EXAMPLES, engine=task, loss=exact_match)
    strategy = backprop(errors_only=errors_only, tau=1.0)
    update, s = step(strategy, results, STATE, strategy.init(STATE), critic_engine)
    failing = sum(r.loss.score < 1.0 for r in results)
    assert failing == 5 - len(right)
    assert critic_engine.calls("backward") == (failing if errors_only else 5)
    assert critic_engine.calls("optimizer") == (1 if (failing or not errors_only) else 0)
    if errors_only and not failing:
        assert not update.values and "no noticeable error" in update.notes[0].reason
    assert s["calls"]["backward"] == critic_engine.calls("backward")


def test_errors_only_threshold_tau():
    scores = iter([0.2, 0.5, 0.8, 0.95, 1.0])

    def graded(output, example):
        return Loss(next(scores), "graded")

    task, critic_engine = engines(lambda r: "7")
    results = run_batch(count_pipeline, STATE, EXAMPLES, engine=task, loss=graded, concurrency=1)
    strategy = backprop(tau=0.8)
    step(strategy, results, STATE, strategy.init(STATE), critic_engine)
    assert critic_engine.calls("backward") == 2  # only 0.2 and 0.5 are < 0.8


# ---------------------------------------------------------------- peers and skip connections


def test_peers_get_one_backward_call():
    node = LLM("answer", system=("instr", "demos", "fmt"), user="{input}")
    state = PromptState.of(
        instr=Param("Count."), demos=Param("Q: 1 cat. A: 1", kind="demos"),
        fmt=Param("Answer with a number.", kind="format", trainable=False),
    )
    task, critic_engine = engines(lambda r: "5")
    results = run_batch(lambda p, x: node(p, input=x), state, EXAMPLES[:1], engine=task, loss=exact_match)
    strategy = backprop()
    update, s = step(strategy, results, state, strategy.init(state), critic_engine)
    assert critic_engine.calls("backward") == 1
    req = critic_engine.requests[0]
    assert keys_of(req) == ["instr", "demos"]
    body = req.messages[-1].content
    assert "instr (instruction, to be improved)" in body and "demos (demos, to be improved)" in body and "fmt (format, fixed)" in body
    assert critic_engine.calls("optimizer") == 2  # one per trainable peer
    assert set(update.values) == {"instr", "demos"}
    opt = [r.messages[-1].content for r in critic_engine.requests if r.role == "optimizer"]
    assert "The step also reads (not changed now)" in opt[0] and "fmt" in opt[0]


def test_skip_connection_delivers_loss_feedback():
    plan = LLM("plan", system=("p",), user="{input}")
    state = PromptState.of(p=Param("Plan."), sys=Param("Answer."))

    def pipeline(prompts, x, skip):
        plan(prompts, input=x)  # its output is not used downstream
        if skip:
            skip_connection("plan")
        return answer(prompts, input=x)

    for skip in (False, True):
        task, critic_engine = engines(lambda r: "0")
        results = run_batch(lambda p, x: pipeline(p, x, skip), state, EXAMPLES[:1], engine=task, loss=exact_match)
        grads = backward(results, state, critic_engine, dict(backprop().config), P.new_stats())
        assert ("p" in grads) is skip
        plan_calls = [r for r in critic_engine.requests if "step `plan`" in r.messages[-1].content]
        assert len(plan_calls) == int(skip)
        if skip:
            body = plan_calls[0].messages[-1].content
            assert "(skip connection from the loss) wrong: expected '1'" in body


# ---------------------------------------------------------------- optimizer prompt and guards


def run_counting(forward=forward_right(set()), examples=EXAMPLES[:3]):
    task = ScriptedEngine(by_role({"forward": forward}))
    return run_batch(count_pipeline, STATE, examples, engine=task, loss=exact_match)


def test_optimizer_prompt_has_history_rejected_and_sorted_feedback():
    scores = iter([1.0, 0.0, 0.5])
    results = run_batch(count_pipeline, STATE, EXAMPLES[:3], engine=ScriptedEngine(lambda r: "x"),
                        loss=lambda o, e: Loss(next(scores), f"feedback for {e.id}"), concurrency=1)
    history = (Attempt({"sys": "Old best prompt."}, 0.7, True), Attempt({"sys": "Older prompt."}, 0.4, True))
    rejected = (Attempt({"sys": "A bad idea."}, 0.1, False, "lost on the training minibatch"),)
    _, critic_engine = engines(None)
    strategy = backprop(errors_only=False)
    step(strategy, results, STATE, strategy.init(STATE), critic_engine,
         context=ctx(history=history, rejected=rejected, steps_since_improvement=3))
    body = [r for r in critic_engine.requests if r.role == "optimizer"][0].messages[-1].content
    assert body.index("Example e2 (score 0.00)") < body.index("Example e3 (score 0.50)") < body.index("Example e1 (score 1.00)")
    assert "(val 0.70) Old best prompt." in body and "A bad idea." in body and "lost on the training minibatch" in body
    assert "Steps since last improvement: 3" in body
    assert "<CURRENT_VALUE>\nCount the objects." in body


GARBAGE = [
    ("", "no_tags"),
    ("I would improve the prompt by being clearer.", "no_tags"),
    ("<NEW_VALUE></NEW_VALUE>", "empty"),
    ("<NEW_VALUE>\n1\n</NEW_VALUE>", "too_short"),
    ("<NEW_VALUE>Count.\n(the complete new text of `sys`)</NEW_VALUE>", "tag_leak"),
    ("<NEW_VALUE>Count the objects. Answer with a number.</NEW_VALUE>", "unchanged"),
    ("<NEW_VALUE>Count the objects. For 'I have 1 apples' the answer is 1.</NEW_VALUE>", "label_leak"),
    ("<NEW_VALUE>Count objects.\n<CURRENT_VALUE>\nCount.</NEW_VALUE>", "tag_leak"),
    ("<NEW_VALUE>Count objects. Feedback by example, lowest score first.</NEW_VALUE>", "tag_leak"),
    ("<NEW_VALUE>Count objects.</FEEDBACK></NEW_VALUE>", "tag_leak"),
    ("<NEW_VALUE>The prompt should tell the model to count each object once.</NEW_VALUE>", "critique_paste"),
    ("<NEW_VALUE>" + "x" * 5000 + "</NEW_VALUE>", "too_long"),
]


@pytest.mark.parametrize("reply,guard", GARBAGE)
def test_backprop_garbage_gives_no_update_with_reason(reply, guard):
    results = run_counting()
    _, critic_engine = engines(None, optimizer=reply)
    strategy = backprop()
    update, s = step(strategy, results, STATE, strategy.init(STATE), critic_engine)
    assert dict(update.values) == {}
    note = [n for n in update.notes if n.param == "sys"][0]
    assert note.status == "no_update" and note.reason.startswith(guard)
    assert s["rejections"] == {guard: 1}
    assert rejection_counts(s) == {guard: 1}
    assert guard in GUARDS


def test_backprop_critique_pasted_verbatim_is_rejected():
    text = "Say to count every object once, including the ones mentioned in passing"
    results = run_counting()
    _, critic_engine = engines(None, backward=critic(text), optimizer=f"<NEW_VALUE>{text} [sys]</NEW_VALUE>")
    update, s = step(backprop(), results, STATE, backprop().init(STATE), critic_engine)
    assert not update.values and s["rejections"] == {"critique_paste": 1}


def test_truncated_optimizer_reply_is_rejected():
    results = run_counting()
    critic_engine = Finish(by_role({"backward": critic(), "optimizer": "<NEW_VALUE>List the obj"}), "length")
    update, s = step(backprop(), results, STATE, backprop().init(STATE), critic_engine)
    assert not update.values and s["rejections"]["truncated"] == 1
    # the critiques were unparseable too? no: they were valid JSON, only the optimizer was cut
    assert "critique_truncated" not in s["rejections"]


def test_unusable_and_generic_critiques_fall_back_to_the_downstream_feedback():
    results = run_counting(examples=EXAMPLES[:2])
    replies = iter(["not json at all", json.dumps([{"param": "sys", "feedback": "Clarify the objective."}])])
    _, critic_engine = engines(None, backward=lambda r: next(replies))
    update, s = step(backprop(), results, STATE, backprop().init(STATE), critic_engine)
    assert s["rejections"] == {"critique_unparsed": 1, "critique_generic": 1}
    assert update.values  # the optimizer still saw the (passed-through) loss feedback
    body = [r for r in critic_engine.requests if r.role == "optimizer"][0].messages[-1].content
    assert "wrong: expected" in body and "Clarify the objective" not in body


def test_engine_errors_give_no_update_but_budget_propagates():
    results = run_counting()

    def broken(request):
        raise EngineError("server said 500")

    _, critic_engine = engines(None, optimizer=broken)
    update, s = step(backprop(), results, STATE, backprop().init(STATE), critic_engine)
    assert not update.values and s["rejections"] == {"engine_error": 1}

    def spent(request):
        raise BudgetExceeded("budget of 3 calls spent")

    for strategy in (backprop(), whole_trace(), sampled_momentum(whole_trace())):
        with pytest.raises(BudgetExceeded):
            step(strategy, results, STATE, strategy.init(STATE), ScriptedEngine(spent))


def test_prompts_are_bounded_by_construction():
    huge = "word " * 20000
    results = run_batch(count_pipeline, STATE, [Example(f"e{i}", huge, "1") for i in range(10)],
                        engine=ScriptedEngine(by_role({"forward": lambda r: huge})), loss=exact_match)
    for strategy, limit in ((backprop(max_prompt_chars=3000), 3000), (whole_trace(max_prompt_chars=3000), 3000)):
        _, critic_engine = engines(None, optimizer='{"reasoning": "r", "suggestion": {}}')
        step(strategy, results, STATE, strategy.init(STATE), critic_engine)
        assert critic_engine.requests
        for req in critic_engine.requests:
            assert len(req.messages[-1].content) <= limit + 40
            assert len(req.messages[0].content) < 600
    body = critic_engine.requests[0].messages[-1].content
    assert "showing 4 of 10 examples" in body


# ---------------------------------------------------------------- whole_trace


def test_whole_trace_one_optimizer_call_and_code_lines():
    results = run_counting()
    reply = json.dumps({"reasoning": "It ignored the count.", "suggestion": {"sys": "List the objects, then count them."}})
    _, critic_engine = engines(None, optimizer=reply)
    strategy = whole_trace()
    update, s = step(strategy, results, STATE, strategy.init(STATE), critic_engine)
    assert critic_engine.calls() == critic_engine.calls("optimizer") == 1
    assert dict(update.values) == {"sys": "List the objects, then count them."}
    body = critic_engine.requests[0].messages[-1].content
    for section in ("#Documentation", "#Variables", "#Code", "#Inputs", "#Others", "#Outputs", "#Feedback"):
        assert section in body
    assert "y1 = answer(sys, input=y0)" in body and "y2 = parse(text=y1)" in body
    assert json.loads(critic_engine.requests[0].json_schema)["properties"]["suggestion"]["properties"] == {"sys": {"type": "string", "maxLength": 1500}}


def test_whole_trace_skips_when_all_perfect_and_no_change_is_legal():
    results = run_counting(forward_right(set("123")))
    _, critic_engine = engines(None, optimizer="unused")
    update, s = step(whole_trace(), results, STATE, whole_trace().init(STATE), critic_engine)
    assert critic_engine.calls() == 0 and not update.values
    results = run_counting()
    _, critic_engine = engines(None, optimizer='{"reasoning": "looks fine", "suggestion": {}}')
    update, s = step(whole_trace(), results, STATE, whole_trace().init(STATE), critic_engine)
    assert not update.values and "suggested no change" in update.notes[-1].reason and s["rejections"] == {}


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
    results = run_counting()
    _, critic_engine = engines(None, optimizer=reply)
    update, s = step(whole_trace(), results, STATE, whole_trace().init(STATE), critic_engine)
    assert not update.values
    assert any(n.status == "no_update" and n.reason.startswith(guard) for n in update.notes)
    assert s["rejections"] == {guard: 1}


def test_whole_trace_parses_fenced_json_with_chatter():
    results = run_counting()
    reply = 'Sure!\n```json\n{"reasoning": "r", "suggestion": {"sys": "Count each object once."}}\n```'
    _, critic_engine = engines(None, optimizer=reply)
    update, _ = step(whole_trace(json_schema=False), results, STATE, whole_trace().init(STATE), critic_engine)
    assert dict(update.values) == {"sys": "Count each object once."}
    assert critic_engine.requests[0].json_schema is None


# ---------------------------------------------------------------- sampled momentum


def counter_strategy():
    """An inner strategy that appends the step number to sys (no engine calls)."""
    def update(results, state, s, **kw):
        return Update({"sys": state["sys"].value + f" v{kw['context'].step}"}), s + 1
    return Strategy("counter", lambda state: 0, update)


def value_score(state, seed):
    return (len(state["sys"].value) % 7) / 7


def drive(strategy, s, state, steps, log):
    for t in steps:
        evaluated = []

        def evaluate(st_, seed):
            evaluated.append((st_["sys"].value, seed))
            return value_score(st_, seed)

        reran = []
        context = StepContext(step=t, rerun=lambda st_: reran.append(st_["sys"].value) or ())
        update, s = strategy.update((), state, s, engine=None, evaluate=evaluate, context=context)
        s = freeze(s)
        log.append((evaluated, reran, dict(update.values)))
        state = apply_updates(state, update.values)
    return s, state


def test_momentum_same_seed_same_candidates_after_json_round_trip():
    strategy = sampled_momentum(counter_strategy(), k=3, seed=7)
    log_a, log_b, log_c = [], [], []
    s, state = drive(strategy, strategy.init(STATE), STATE, range(4), log_a)
    s_a, _ = drive(strategy, s, state, range(4, 8), log_a)
    # resume from a JSON checkpoint (both serializers)
    s_json = freeze(orjson.loads(orjson.dumps(thaw(s))))
    s_b, _ = drive(strategy, s_json, state, range(4, 8), log_b)
    s_fg = funcgrad.loads(funcgrad.dumps(s))
    s_c, _ = drive(strategy, s_fg, state, range(4, 8), log_c)
    assert log_a[4:] == log_b == log_c
    assert s_a == s_b == s_c
    assert any(len(ev) == 3 for ev, _, _ in log_a)  # k candidates were evaluated once H grew
    # a different seed draws differently somewhere
    other = sampled_momentum(counter_strategy(), k=3, seed=8)
    log_d = []
    drive(other, other.init(STATE), STATE, range(8), log_d)
    assert log_d != log_a


def test_momentum_steps_from_best_past_state_and_returns_update_relative_to_state():
    good = "Count carefully and answer."  # value_score = len % 7
    state = apply_updates(STATE, {"sys": "Bad."})
    strategy = sampled_momentum(counter_strategy(), k=5, c=0.0)
    s = thaw(strategy.init(STATE))
    s["history"] = [{"values": {"sys": good}, "mean": None, "n": 0}, {"values": {"sys": "Bad."}, "mean": None, "n": 0}]
    reran = []

    def evaluate(st_, seed):
        return 1.0 if st_["sys"].value == good else 0.0

    context = StepContext(step=3, rerun=lambda st_: reran.append(st_["sys"].value) or ())
    update, s2 = strategy.update((), state, freeze(s), engine=None, evaluate=evaluate, context=context)
    assert reran == [good]
    assert dict(update.values) == {"sys": good + " v3"}
    assert apply_updates(state, update.values)["sys"].value == good + " v3"
    means = {h["values"]["sys"]: (h["mean"], h["n"]) for h in s2["history"]}
    assert means[good] == (1.0, 1) and means["Bad."] == (0.0, 1) and means[good + " v3"] == (None, 0)
    assert s2["inner"] == 1
    # a second proposal in the same step reuses p* (no new evaluations)
    calls = []
    update2, s3 = strategy.update((), state, s2, engine=None, evaluate=lambda st_, seed: calls.append(1) or 0.0,
                                  context=context)
    assert calls == [] and reran == [good, good]


def test_gumbel_top_k_is_sampling_without_replacement():
    import random as _random

    from funcgrad.strategies import gumbel_top_k

    rng = _random.Random(0)
    counts = [0, 0, 0]
    for _ in range(3000):
        counts[gumbel_top_k([0.0, 0.5, 1.0], 1, 0.5, 1.0, rng)[0]] += 1
    assert counts[2] > counts[1] > counts[0] > 0
    assert sorted(gumbel_top_k([0.1] * 6, 6, 0.6, 0.4, rng)) == list(range(6))


# ---------------------------------------------------------------- drop-in


def strategies_under_test():
    return [
        backprop(),
        whole_trace(),
        sampled_momentum(backprop(), k=2),
        sampled_momentum(whole_trace(), k=2, seed=3),
    ]


def smart_optimizer(request):
    if request.json_schema and "suggestion" in request.json_schema:
        return json.dumps({"reasoning": "it miscounted", "suggestion": {"sys": "List the objects, then count them. Answer with a number."}})
    return "<NEW_VALUE>List the objects, then count them. Answer with a number.</NEW_VALUE>"


@pytest.mark.parametrize("strategy", strategies_under_test(), ids=lambda s: s.name + str(dict(s.config).get("inner", "")))
def test_each_strategy_is_a_drop_in_in_the_same_loop(strategy):
    def forward(request):
        smart = "List the objects" in request.messages[0].content
        n = re.search(r"I have (\d+)", request.messages[-1].content).group(1)
        return f"so {n}" if smart else "so 0"

    task = ScriptedEngine(by_role({"forward": forward}))
    critic_engine = ScriptedEngine(by_role({"backward": critic(), "optimizer": smart_optimizer}))
    state, s = STATE, strategy.init(STATE)
    scores = []
    for t in range(3):
        batch = EXAMPLES[t:t + 3]
        results = run_batch(count_pipeline, state, batch, engine=task, loss=exact_match)
        scores.append(funcgrad.mean_score(results))
        context = StepContext(step=t, seed=t, rerun=lambda st_: run_batch(count_pipeline, st_, batch, engine=task, loss=exact_match))
        evaluate = lambda st_, seed: funcgrad.mean_score(run_batch(count_pipeline, st_, EXAMPLES, engine=task, loss=exact_match))  # noqa: E731
        update, s = strategy.update(results, state, s, engine=critic_engine, evaluate=evaluate, context=context)
        s = funcgrad.loads(funcgrad.dumps(freeze(s)))  # S stays a JSON value
        assert isinstance(update, Update) and all(isinstance(n, funcgrad.Note) for n in update.notes)
        state = apply_updates(state, update.values)
    assert scores[0] == 0.0 and scores[-1] == 1.0
    assert state["sys"].value.startswith("List the objects")


def test_check_value_allows_targets_already_in_the_old_value():
    assert check_value("Count. Five is not 5 here.", "5 apples: count them.", targets=["5"]) == ("", "")
    assert check_value("Count them; 12 or more.", "Count.", targets=["1", "2"]) == ("", "")  # word boundaries


def test_input_copied_into_the_prompt_is_rejected():
    x = "I have three apples, a banana, and two peaches. How many fruits do I have?"
    assert check_value(x, "Answer with a single integer.", inputs=[x])[0] == "input_copy"
    assert check_value("Count: " + x.upper(), "Count.", inputs=[x])[0] == "input_copy"
    assert check_value("List the items, then count them.", "Count.", inputs=[x]) == ("", "")


@pytest.mark.parametrize("make", [backprop, whole_trace, lambda: sampled_momentum(backprop(), k=2)],
                         ids=["backprop", "whole_trace", "sampled_momentum"])
def test_strategies_run_in_the_training_loop(make):
    from funcgrad.core.task import Task
    from funcgrad.training.fit import FitSettings, fit

    def forward(request):
        smart = "List the objects" in request.messages[0].content
        n = re.search(r"I have (\d+)", request.messages[-1].content).group(1)
        return f"so {n}" if smart else "so 0"

    examples = tuple(Example(f"e{i}", f"I have {i} apples.", str(i)) for i in range(1, 10))
    task = Task("count", count_pipeline, STATE, exact_match, train=examples[:6], val=examples[6:], test=examples[6:])
    critic_engine = ScriptedEngine(by_role({"backward": critic(), "optimizer": smart_optimizer}))
    fs = fit(task, make(), engine=ScriptedEngine(by_role({"forward": forward})), critic=critic_engine,
             settings=FitSettings(steps=2, batch_size=3))
    assert fs.state["sys"].value.startswith("List the objects") and fs.val_score == 1.0
    assert funcgrad.loads(funcgrad.dumps(fs.strategy_state)) == fs.strategy_state


def test_time_stamps_ablation_drops_the_call_listing():
    task, critic_engine = engines(lambda r: "out", backward=echo_call_critic)
    results = run_batch(hop_pipeline("aaa"), HOP_STATE, [Example("e", "x", "y")], engine=task, loss=exact_match)
    backward(results, HOP_STATE, critic_engine, dict(backprop(time_stamps=False).config), P.new_stats())
    bodies = [r.messages[-1].content for r in critic_engine.requests]
    assert len(bodies) == 3
    assert not any("was called 3 times" in b or "you judge call" in b for b in bodies)


def test_a_retry_that_repeats_a_rejected_proposal_is_not_proposed_again():
    results = run_batch(lambda p, x: answer(p, input=x), STATE, EXAMPLES[:2], engine=engines(lambda r: "0")[0], loss=exact_match)
    rejected = (Attempt({"sys": "Count each object once, then give the number."}, 0.0, False, "did not beat"),)
    for strategy, reply in (
        (backprop(), "Pattern: x\n<NEW_VALUE>\nCount each object once, then give the number.\n</NEW_VALUE>"),
        (whole_trace(), json.dumps({"reasoning": "r", "suggestion": {"sys": "Count each object once, then give the number."}})),
    ):
        _, critic_engine = engines(lambda r: "0", backward=critic(), optimizer=reply)
        update, s = strategy.update(results, STATE, strategy.init(STATE), engine=critic_engine, evaluate=None,
                                    context=StepContext(rejected=rejected))
        assert update.values == {}
        assert any(n.reason.startswith("repeats_rejected") for n in update.notes)
        assert rejection_counts(s) == {"repeats_rejected": 1}
        assert all(r.temperature == 0.7 for r in critic_engine.requests if r.role == "optimizer")
