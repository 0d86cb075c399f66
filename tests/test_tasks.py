"""Built-in tasks: seeded splits, generator correctness, pipelines on scripted engines, registry."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funcgrad
from funcgrad import ConfigError, Example, run_batch, run_example
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.tasks import TASKS, agent, arithmetic, classification, load_task, multihop, object_counting, review_loop
from funcgrad.tasks.agent import build_table, parse_action, safe_eval, table_lookup
from funcgrad.tasks.arithmetic import arithmetic_problem
from funcgrad.tasks.multihop import KeywordIndex, build_world
from funcgrad.tasks.object_counting import CATEGORIES, counting_problem
from funcgrad.tasks.parsing import integer_loss, parse_integer, text_match_loss

FACTORIES = [object_counting, arithmetic, multihop, agent]
SMALL = dict(n_train=6, n_val=4, n_test=5)


def _user(request) -> str:
    return request.messages[-1].content


def _system(request) -> str:
    return request.messages[0].content if request.messages[0].role == "system" else ""


# ------------------------------------------------------------------ splits


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_same_seed_gives_identical_examples(factory):
    a, b = factory(seed=3, **SMALL), factory(seed=3, **SMALL)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert [len(a.train), len(a.val), len(a.test)] == [6, 4, 5]


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_different_seeds_give_different_data(factory):
    a, b = factory(seed=0, **SMALL), factory(seed=1, **SMALL)
    xs_a = [e.x for e in a.train + a.val + a.test]
    xs_b = [e.x for e in b.train + b.val + b.test]
    assert xs_a != xs_b
    assert len(set(xs_a) & set(xs_b)) < len(xs_a)


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_splits_are_disjoint_with_unique_ids_and_json_values(factory):
    task = factory(seed=7)
    splits = [task.train, task.val, task.test]
    xs = [{e.x for e in s} for s in splits]
    assert [len(s) for s in xs] == [len(s) for s in splits] == [30, 20, 50]
    assert xs[0].isdisjoint(xs[1]) and xs[0].isdisjoint(xs[2]) and xs[1].isdisjoint(xs[2])
    ids = [e.id for s in splits for e in s]
    assert len(set(ids)) == 100
    assert ids[0] == f"{task.name}-s7-train-000" and ids[-1] == f"{task.name}-s7-test-049"
    for e in task.train + task.val + task.test:
        assert isinstance(e.x, str) and e.x
        assert type(e.target) in (int, str)
    assert funcgrad.loads(funcgrad.dumps(task.train[0])) == task.train[0]


def test_bad_split_sizes_raise_config_error():
    with pytest.raises(ConfigError, match="n_val must be a non-negative int"):
        object_counting(n_val=-1)
    with pytest.raises(ConfigError, match="has only 140 questions"):
        multihop(n_train=100, n_val=30, n_test=30)
    with pytest.raises(ConfigError, match="max_turns"):
        agent(max_turns=0)


# ------------------------------------------------------------------ generators

CATEGORY_OF = {name: cat for cat, items in CATEGORIES.items() for pair in items for name in pair}
WORD_NUMBERS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4}


def _count_independently(question: str) -> int:
    match = re.fullmatch(r"I have (.+)\. How many (.+) do I have\?", question)
    assert match, question
    listing, asked = match.groups()
    total = 0
    for phrase in re.split(r",\s*(?:and\s+)?|\s+and\s+", listing):
        word, name = phrase.split(" ", 1)
        count = WORD_NUMBERS[word]
        assert (count == 1) == (word in ("a", "an")), phrase
        if CATEGORY_OF[name] == asked:
            total += count
    return total


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_counting_answer_is_number_of_items_of_asked_category(seed):
    question, answer = counting_problem(random.Random(seed))
    assert isinstance(answer, int) and answer >= 1
    assert _count_independently(question) == answer


def test_counting_questions_have_distractors_and_number_words():
    task = object_counting(seed=0)
    questions = [e.x for e in task.train + task.val + task.test]
    assert sum(" two " in q or " three " in q or " four " in q for q in questions) > 50
    distracted = [q for q in questions if _count_independently(q) < len(re.split(r",| and ", q))]
    assert len(distracted) > 30
    asked = {re.search(r"How many (.+) do I have", q).group(1) for q in questions}
    assert asked == set(CATEGORIES)


RECOMPUTE = {
    "add": lambda v: v[0] + v[1],
    "sub": lambda v: v[0] - v[1],
    "mul": lambda v: v[0] * v[1],
    "div": lambda v: v[0] / v[1],
    "packs_eat": lambda v: v[0] * v[1] - v[2],
    "shop": lambda v: v[0] - v[1] * v[2],
    "share_more": lambda v: v[0] / v[1] + v[2],
    "legs": lambda v: v[0] * 4 + v[1] * 2,
    "wage": lambda v: v[0] * (v[1] + v[2]) - v[3],
    "bake": lambda v: v[0] * v[1] - v[2] * v[3],
    "collect": lambda v: v[0] + v[0] * v[1] - v[2],
}


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_arithmetic_answer_is_an_integer_equal_to_a_recomputation(seed):
    p = arithmetic_problem(random.Random(seed))
    in_text = [int(n) for n in re.findall(r"\d+", p.question)]
    it = iter(in_text)
    assert all(any(n == m for m in it) for n in p.numbers), (p.question, p.numbers)  # in order of appearance
    expected = RECOMPUTE[p.template](p.numbers)
    assert type(p.answer) is int and p.answer >= 0
    assert expected == p.answer and float(expected).is_integer()
    assert 1 <= p.steps <= 3


def test_arithmetic_covers_all_templates_and_step_counts():
    r = random.Random(0)
    problems = [arithmetic_problem(r) for _ in range(500)]
    assert {p.template for p in problems} == set(RECOMPUTE)
    assert {p.steps for p in problems} == {1, 2, 3}


def test_multihop_world_support_facts_exist_and_answers_follow_from_them():
    world = build_world(0)
    assert len(world.facts) == len(set(world.facts)) == 164
    kinds = {q.kind for q in world.questions}
    assert kinds == {"employer_hq", "employer_founder", "founder_birthplace"}
    for q in world.questions:
        first, second = q.support
        assert first in world.facts and second in world.facts
        assert second.endswith(f"{q.answer}.")
        bridge = re.search(r"(?:works for|was founded by) (.+)\.$", first).group(1)
        assert second.startswith(bridge)


def test_multihop_retriever_finds_each_hop_with_a_good_query():
    world = build_world(2)
    index = KeywordIndex(world.facts)
    relation = {"employer_hq": "headquarters", "employer_founder": "founded by", "founder_birthplace": "born"}
    for q in world.questions:
        assert q.support[0] in index.search(q.text, 3)
        entity = re.split(r" (?:is headquartered|was founded|was born)", q.support[1])[0]
        assert q.support[1] in index.search(f"{entity} {relation[q.kind]}", 3)
    assert index.search("zzz qqq", 3) == ()


def test_agent_table_lookup_and_questions():
    table = build_table(0)
    item = next(iter(table)).split()[0]
    assert table_lookup(table, f"{item} price") == f"{item} price = {table[item + ' price']}"
    assert table_lookup(table, f"the price of {item}s") == f"{item} price = {table[item + ' price']}"
    assert table_lookup(table, "unicorn price").startswith("no entry for 'unicorn price'")
    assert build_table(0) == table and build_table(1) != table


# ------------------------------------------------------------------ parsing and tools


def test_parse_integer_preferences():
    assert parse_integer("1. apple\n2. pear\n3. fig\nAnswer: 3") == 3
    assert parse_integer("The answer is **12**.") == 12
    assert parse_integer("<answer>7</answer> and 9 more") == 7
    assert parse_integer("I count five items") == 5
    assert parse_integer("4 apples + 2 pears = 6") == 6
    assert parse_integer("3.5") is None and parse_integer("forty-two") is None
    assert parse_integer("") is None and parse_integer(None) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parsers_never_raise(text):
    value = parse_integer(text)
    assert value is None or isinstance(value, int)
    action = parse_action(text)
    assert action["tool"] in ("CALC", "LOOKUP", "ANSWER", "INVALID")
    try:
        result = safe_eval(text)
    except ValueError:
        pass
    else:
        assert isinstance(result, int | float)


def test_safe_eval_accepts_arithmetic_and_rejects_everything_else():
    assert safe_eval("12*7") == 84
    assert safe_eval("(3 + 4) x 2 =") == 14
    assert safe_eval("-5 + 2**3") == 3
    assert safe_eval("7 / 2") == 3.5
    for bad in ("__import__('os').system('ls')", "a + 1", "2**100000", "1/0", "[1, 2]", "print(1)", ""):
        with pytest.raises(ValueError):
            safe_eval(bad)


def test_losses_give_useful_feedback():
    ex = Example("e", "q", 7)
    assert integer_loss({"answer": 7, "raw": "7"}, ex).score == 1.0
    wrong = integer_loss({"answer": 9, "raw": "It is 9"}, ex)
    assert (wrong.score, wrong.feedback) == (0.0, "wrong: expected 7, the pipeline answered 9 (2 too many); its raw answer was: 'It is 9'")
    none = integer_loss({"answer": None, "raw": "dunno"}, ex)
    assert (none.score, none.feedback) == (0.0, "wrong: expected 7, but no integer found in the answer: 'dunno'")
    assert integer_loss(None, ex).feedback == "wrong: expected 7, but no integer found in the answer: '(empty)'"
    tx = Example("e", "q", "Port Ellin")
    assert text_match_loss("Answer: port ellin.", tx).score == 1.0
    near = text_match_loss("It is Port Ellin, I think", tx)
    assert near.score == 0.0 and "the right name appears" in near.feedback
    assert text_match_loss("", tx).feedback == "wrong: expected 'Port Ellin', but the answer was empty (raw output: '')"


# ------------------------------------------------------------------ pipelines on scripted engines


def _answers_by_question(task):
    return {e.x: e.target for e in task.train + task.val + task.test}


@pytest.mark.parametrize("factory", [object_counting, arithmetic], ids=lambda f: f.__name__)
def test_single_step_pipelines_score_one_with_perfect_answers(factory):
    task = factory(seed=1, **SMALL)
    answers = _answers_by_question(task)
    engine = ScriptedEngine(lambda r: f"Let me think. 1, 2, 3.\nAnswer: {answers[_user(r)]}")
    results = run_batch(task.pipeline, task.state, task.train, engine=engine, loss=task.loss)
    assert [r.loss.score for r in results] == [1.0] * 6
    assert [r.output["answer"] for r in results] == [e.target for e in task.train]
    trace = results[0].trace
    assert [(r.node, r.kind) for r in trace.records] == [("x", "input"), (trace.records[1].node, "llm"), ("parse", "fn"), ("loss", "loss")]
    assert trace.records[1].params == tuple(task.state.resolve(task.state.groups[0][0]))
    assert engine.calls("forward") == 6


@pytest.mark.parametrize("factory", [object_counting, arithmetic], ids=lambda f: f.__name__)
def test_single_step_pipelines_score_zero_on_garbage_with_feedback(factory):
    task = factory(seed=1, **SMALL)
    results = run_batch(task.pipeline, task.state, task.test, engine=ScriptedEngine(lambda r: "no idea, sorry"), loss=task.loss)
    assert [r.loss.score for r in results] == [0.0] * 5
    assert not any(r.failed for r in results)
    ex = task.test[0]
    assert results[0].loss.feedback == f"wrong: expected {ex.target}, but no integer found in the answer: 'no idea, sorry'"
    wrong = run_example(task.pipeline, task.state, ex, engine=ScriptedEngine(lambda r: f"Answer: {ex.target + 3}"), loss=task.loss)
    assert wrong.loss.feedback.startswith(f"wrong: expected {ex.target}, the pipeline answered {ex.target + 3} (3 too many)")


def test_starting_params_are_plain_trainable_and_described():
    for factory in FACTORIES:
        state = factory(**SMALL).state
        assert state.trainable_names, factory.__name__
        for name in state.names:
            param = state[name]
            assert len(param.role) > 40, (factory.__name__, name)
            if param.trainable:
                assert len(param.value) < 80, (factory.__name__, name)
        kinds = {state[n].kind for n in state.trainable_names}
        assert {"instruction", "format"} <= kinds


def _multihop_responder(task):
    answers = _answers_by_question(task)

    def respond(request):
        user = _user(request)
        question = re.search(r"Question: (.+?)\n", user).group(1)
        if user.endswith("Search query:"):
            facts = user.split("Facts found so far:\n", 1)[1].rsplit("\n\nSearch query:", 1)[0]
            if facts == "(none yet)":
                return question
            bridge = re.search(r"(?:works for|was founded by) ([^.\n]+)\.", facts).group(1)
            return f"{bridge} headquarters" if "headquarters" in question else f"{bridge} founded born"
        return f"Answer: {answers[question]}"

    return respond


def test_multihop_pipeline_scores_one_and_traces_query_twice_around_the_retriever():
    task = multihop(seed=0, **SMALL)
    engine = ScriptedEngine(_multihop_responder(task))
    results = run_batch(task.pipeline, task.state, task.train, engine=engine, loss=task.loss)
    assert [r.loss.score for r in results] == [1.0] * 6
    trace = results[0].trace
    shape = [(r.node, r.kind, r.call_index) for r in trace.records]
    assert shape == [
        ("x", "input", 0), ("query", "llm", 0), ("retrieve", "retrieve", 0), ("query", "llm", 1),
        ("retrieve", "retrieve", 1), ("answer", "llm", 0), ("loss", "loss", 0),
    ]
    q0, r0, q1, r1, ans = trace.records[1:6]
    assert r0.inputs == (q0.id,) and q1.inputs == (0, r0.id) and r1.inputs == (q1.id,)
    assert ans.inputs == (0, r0.id, r1.id)
    assert r0.consts == {"k": 3} and q0.consts == {"facts": "(none yet)"}
    assert len(r0.output) == 3 and all(isinstance(f, str) for f in r0.output)
    assert q0.params == ("query_instruction", "query_demos") and ans.params == ("answer_instruction", "answer_format", "answer_demos")
    # the retrieved facts in each hop contain the fact that hop needs
    world = build_world(0)
    question = next(q for q in world.questions if q.text == task.train[0].x)
    assert question.support[0] in r0.output and question.support[1] in r1.output


def test_multihop_pipeline_scores_zero_on_garbage_with_feedback():
    task = multihop(seed=0, **SMALL)
    results = run_batch(task.pipeline, task.state, task.val, engine=ScriptedEngine(lambda r: "blah"), loss=task.loss)
    assert [r.loss.score for r in results] == [0.0] * 4
    assert results[0].loss.feedback == f"wrong: expected {task.val[0].target!r}, the pipeline answered 'blah'"
    assert [r.node for r in results[0].trace.records][1:6] == ["query", "retrieve", "query", "retrieve", "answer"]
    assert results[0].trace.records[2].output == ("(no matching facts found)",)


def _agent_policy(table):
    """A scripted agent that really uses the tools: it reads the observations in its history."""

    def respond(request):
        user = _user(request)
        q = re.search(r"Question: (.+?)\n", user).group(1)
        obs = [int(v) for v in re.findall(r"Observation \d+: .+? = (\d+)", user)]
        calc = re.findall(r"Observation \d+: (\d+(?:\.\d+)?)$", user, re.M)
        if m := re.match(r"How many dollars do (\d+) (\w+) cost", q):
            steps = [f"LOOKUP: {m[2]} price", f"CALC: {obs[0] if obs else 0} * {m[1]}"]
        elif m := re.match(r"How many (\w+) can be bought with exactly (\d+) dollars", q):
            steps = [f"LOOKUP: price of {m[1]}", f"CALC: {m[2]} / {obs[0] if obs else 1}"]
        elif m := re.match(r"What is the total value in dollars of all (\w+) in stock", q):
            steps = [f"LOOKUP: {m[1]} price", f"LOOKUP: {m[1]} stock", f"CALC: {obs[0] if obs else 0}*{obs[1] if len(obs) > 1 else 0}"]
        else:
            m = re.match(r"How many more (\w+) than (\w+) are in stock", q)
            steps = [f"LOOKUP: {m[1]} stock", f"LOOKUP: {m[2]} stock", f"CALC: {obs[0] if obs else 0} - {obs[1] if len(obs) > 1 else 0}"]
        done = len(re.findall(r"^Action \d+:", user, re.M))
        return steps[done] if done < len(steps) else f"ANSWER: {calc[-1]}"

    return respond


def test_agent_pipeline_scores_one_with_a_tool_using_policy_and_time_stamps_act():
    task = agent(seed=0)
    engine = ScriptedEngine(_agent_policy(build_table(0)))
    results = run_batch(task.pipeline, task.state, task.train, engine=engine, loss=task.loss)
    assert [r.loss.score for r in results] == [1.0] * 30
    for r in results:
        trace = r.trace
        assert trace.skips == ("act",)
        acts = [rec for rec in trace.records if rec.node == "act"]
        assert [a.call_index for a in acts] == list(range(len(acts)))
        assert 3 <= len(acts) <= 4
        assert [a.id for a in acts] == sorted(a.id for a in acts)
        # each later act reads the history built from the previous turn's tool observation
        for a in acts[1:]:
            history = trace[a.inputs[a.input_names.index("history")]]
            assert history.node == "history" and history.id < a.id
    nodes = {rec.node for r in results for rec in r.trace.records}
    assert nodes == {"x", "act", "parse_action", "lookup", "calc", "history", "finish", "loss"}


def test_agent_pipeline_scores_zero_on_garbage_and_stops_after_max_turns():
    task = agent(seed=0, **SMALL)
    result = run_example(task.pipeline, task.state, task.train[0], engine=ScriptedEngine(lambda r: "hmm, let me think"), loss=task.loss)
    assert result.loss.score == 0.0 and not result.failed
    acts = [rec for rec in result.trace.records if rec.node == "act"]
    assert [a.call_index for a in acts] == [0, 1, 2, 3]
    assert result.trace.skips == ("act",)
    assert result.loss.feedback == (
        f"wrong: expected {task.train[0].target}, but no integer found in the answer: "
        "'no ANSWER action within 4 turns; last action: INVALID: hmm, let me think'"
    )
    bad_calc = run_example(
        task.pipeline, task.state, task.train[0],
        engine=ScriptedEngine(lambda r: "CALC: import os" if "Action 1" not in _user(r) else "ANSWER: forty-two"),
        loss=task.loss,
    )
    calc = next(rec for rec in bad_calc.trace.records if rec.node == "calc")
    assert calc.output.startswith("error: not an arithmetic expression")
    assert bad_calc.loss.score == 0.0 and "no integer found in the answer: 'forty-two'" in bad_calc.loss.feedback


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=120), st.sampled_from(["object_counting", "arithmetic", "multihop", "agent"]))
def test_no_pipeline_crashes_on_arbitrary_model_output(text, name):
    task = load_task(name, n_train=1, n_val=0, n_test=0)
    result = run_example(task.pipeline, task.state, task.train[0], engine=ScriptedEngine(lambda r: text), loss=task.loss)
    assert not result.failed
    assert result.loss.score in (0.0, 1.0) and result.loss.feedback


# ------------------------------------------------------------------ registry


def test_registry_lists_factories_and_is_read_only():
    assert dict(TASKS) == {"object_counting": object_counting, "arithmetic": arithmetic, "multihop": multihop, "agent": agent,
                           "classification": classification, "review_loop": review_loop}
    with pytest.raises(TypeError):
        TASKS["x"] = object_counting  # type: ignore[index]
    task = load_task("arithmetic", seed=2, n_train=2, n_val=1, n_test=1)
    assert task.train == arithmetic(seed=2, n_train=2, n_val=1, n_test=1).train


def test_load_task_unknown_name_raises_config_error_listing_known():
    with pytest.raises(ConfigError) as info:
        load_task("object_countin")
    assert str(info.value) == "unknown task 'object_countin'; known tasks: agent, arithmetic, classification, multihop, object_counting, review_loop"
    with pytest.raises(ConfigError, match="bad arguments"):
        load_task("agent", n_trian=3)
