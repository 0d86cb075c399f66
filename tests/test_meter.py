"""Meter, MeteredEngine and budgets."""

import concurrent.futures

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcgrad.engines.cache import CachedEngine
from funcgrad.core.calls import Request
from funcgrad.core.errors import BudgetExceeded, EngineError, SerializationError
from funcgrad.engines.meter import Budget, MeteredEngine, Meter, UsageRow, UsageTable
from funcgrad.engines.openai import OpenAIEngine
from funcgrad.engines.stub import StubServer
from funcgrad.engines.scripted import ScriptedEngine


def ask(text="2+2?", role="forward", **fields):
    return Request(messages=(("user", text),), role=role, **fields)


def test_counts_per_role_and_model():
    engine = MeteredEngine(ScriptedEngine(lambda r: "one two", model="small"))
    engine.complete(ask("a b c"))
    engine.complete(ask("d", role="backward"))
    engine.complete(ask("e", model="big"))
    table = engine.report()
    assert [(r.role, r.model, r.calls) for r in table.rows] == [("backward", "small", 1), ("forward", "big", 1), ("forward", "small", 1)]
    assert table.calls() == 3 and table.calls("forward") == 2
    assert table.rows[2].prompt_tokens == 3 and table.rows[2].completion_tokens == 2
    assert table.tokens() == 3 + 1 + 1 + 2 * 3


def test_budget_exhausted_names_the_spending_and_the_fix():
    engine = MeteredEngine(ScriptedEngine(lambda r: "x"), Budget(max_calls=3))
    for role in ("forward", "forward", "backward"):
        engine.complete(ask(role=role))
    with pytest.raises(BudgetExceeded) as info:
        engine.complete(ask("new"))
    assert str(info.value) == (
        "budget of 3 calls exhausted (forward 2, backward 1; cached answers count too); "
        "raise max_calls or resume with a larger budget"
    )


def test_token_budget():
    engine = MeteredEngine(ScriptedEngine(lambda r: "a b c d"), Budget(max_tokens=6))
    engine.complete(ask("one two"))
    with pytest.raises(BudgetExceeded, match=r"budget of 6 tokens exhausted \(6 used: forward 6\); raise max_tokens"):
        engine.complete(ask("three"))


def test_cache_hits_are_charged_like_model_answers(tmp_path):
    inner = ScriptedEngine(lambda r: "x")
    engine = MeteredEngine(CachedEngine(inner, tmp_path), Budget(max_calls=4))
    engine.complete(ask("a"))
    engine.complete(ask("b"))
    assert engine.complete(ask("a")).cached and engine.complete(ask("a")).cached
    with pytest.raises(BudgetExceeded, match=r"budget of 4 calls exhausted \(forward 4; cached answers count too\)"):
        engine.complete(ask("a"))  # a hit, but the budget is spent
    row = engine.report().rows[0]
    assert (row.calls, row.cached_calls, row.answers, inner.calls()) == (2, 2, 4, 2)
    # "a" cost 1 prompt + 1 completion token when first answered; the 2 hits carry that cost
    assert (row.tokens, row.cached_tokens, row.answer_tokens) == (4, 4, 8)


def test_evaluation_is_counted_but_never_bounded():
    engine = MeteredEngine(ScriptedEngine(lambda r: "x"), Budget(max_calls=1, max_tokens=2))
    engine.complete(ask("a"))
    for i in range(3):
        engine.complete(ask(f"test {i}", role="evaluation"))
    with pytest.raises(BudgetExceeded, match=r"\(forward 1; cached"):
        engine.complete(ask("b", role="validation"))
    table = engine.report()
    assert table.by_role("answers") == {"forward": 1, "evaluation": 3}
    assert table.spent(engine.meter.budget) == (1, 2)
    assert table.by_role("answer_tokens") == {"forward": 2, "evaluation": 9}
    everything = MeteredEngine(ScriptedEngine(lambda r: "x"), Budget(max_calls=1, exempt=()))
    everything.complete(ask("test", role="evaluation"))
    with pytest.raises(BudgetExceeded):
        everything.complete(ask("again", role="evaluation"))
    with pytest.raises(EngineError, match="unknown role 'test'"):
        Budget(exempt=("test",))


def _charged(requests, cache_dir, budget=Budget()):
    engine = MeteredEngine(CachedEngine(ScriptedEngine(lambda r: "a b"), cache_dir), budget)
    refused = []
    for i, r in enumerate(requests):
        try:
            engine.complete(r)
        except BudgetExceeded:
            refused.append(i)
    table = engine.report()
    return table.by_role("answers"), table.by_role("answer_tokens"), refused


grids = st.lists(st.tuples(st.sampled_from(["q1", "q2", "q3", "q4"]), st.sampled_from(["forward", "backward", "evaluation"])),
                 max_size=12)


@settings(deadline=None, max_examples=50)
@given(grids, grids, st.integers(0, 8))
def test_charges_do_not_depend_on_what_the_cache_holds(tmp_path_factory, cell, before, limit):
    """A cell spends the same budget with a cold cache, after other cells, and after itself."""
    cell = [ask(t, role=role) for t, role in cell]
    cache = tmp_path_factory.mktemp("cache")
    cold = _charged(cell, cache, Budget(max_calls=limit))
    _charged([ask(t, role=role) for t, role in before], cache)  # other cells warm the cache
    assert _charged(cell, cache, Budget(max_calls=limit)) == cold
    assert _charged(cell, cache, Budget(max_calls=limit)) == cold  # fully warm


@settings(deadline=None, max_examples=50)
@given(st.lists(st.sampled_from(["q1", "q2", "q3", "q4", "q5"]), min_size=1, max_size=12), st.data())
def test_a_killed_and_resumed_run_is_charged_each_answer_once(tmp_path_factory, texts, data):
    """Checkpoint after ``saved`` requests, killed after ``lost`` more; the resumed run redoes those."""
    saved = data.draw(st.integers(0, len(texts)))
    lost = data.draw(st.integers(0, len(texts) - saved))
    requests = [ask(t) for t in texts]
    cache = tmp_path_factory.mktemp("cache")
    first = MeteredEngine(CachedEngine(ScriptedEngine(lambda r: "x"), cache))
    for r in requests[:saved]:
        first.complete(r)
    checkpoint = UsageTable.from_data(orjson.loads(orjson.dumps(first.report().to_data())))
    for r in requests[saved : saved + lost]:  # answered, then the process is killed
        first.complete(r)
    resumed = MeteredEngine(CachedEngine(ScriptedEngine(lambda r: "x"), cache), start=checkpoint)
    for r in requests[saved:]:
        resumed.complete(r)
    whole = MeteredEngine(CachedEngine(ScriptedEngine(lambda r: "x"), tmp_path_factory.mktemp("fresh")))
    for r in requests:
        whole.complete(r)
    assert resumed.report().answers() == whole.report().answers() == len(requests)
    assert resumed.report().answer_tokens() == whole.report().answer_tokens()


def test_failed_calls_are_counted_and_spend_nothing():
    def respond(request):
        if request.messages[0].content == "bad":
            raise EngineError("nope")
        return "ok"

    engine = MeteredEngine(ScriptedEngine(respond), Budget(max_calls=1))
    with pytest.raises(EngineError, match="nope"):
        engine.complete(ask("bad"))
    engine.complete(ask("good"))
    row = engine.report().rows[0]
    assert (row.calls, row.failed_calls) == (1, 1)


def test_budget_is_exact_under_concurrency():
    engine = MeteredEngine(ScriptedEngine(lambda r: "x", concurrency=32), Budget(max_calls=10))

    def call(i):
        try:
            return engine.complete(ask(f"q{i}")).text
        except BudgetExceeded:
            return "refused"

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(64)))
    assert results.count("x") == 10 and results.count("refused") == 54
    assert engine.report().calls() == 10 and engine.inner.calls() == 10


def test_one_shared_meter_covers_task_model_and_critic(tmp_path):
    meter = Meter(Budget(max_calls=3))
    task = MeteredEngine(CachedEngine(ScriptedEngine(lambda r: "4", model="small"), tmp_path), meter=meter)
    critic = MeteredEngine(CachedEngine(ScriptedEngine(lambda r: "why", model="big"), tmp_path), meter=meter)
    task.complete(ask())
    critic.complete(ask(role="backward"))
    task.complete(ask("again"))
    with pytest.raises(BudgetExceeded, match=r"\(forward 2, backward 1;"):
        critic.complete(ask("more", role="backward"))
    assert task.report() == critic.report() == meter.report()
    assert {(r.role, r.model) for r in meter.report().rows} == {("forward", "small"), ("backward", "big")}
    with pytest.raises(EngineError, match="not both"):
        MeteredEngine(ScriptedEngine(lambda r: ""), Budget(max_calls=1), meter=meter)


def test_report_round_trips_through_json_and_resumes():
    engine = MeteredEngine(ScriptedEngine(lambda r: "x y"), Budget(max_calls=3))
    engine.complete(ask())
    engine.complete(ask(role="judge"))
    saved = orjson.dumps(engine.report().to_data())
    restored = UsageTable.from_data(orjson.loads(saved))
    assert restored == engine.report()
    resumed = MeteredEngine(ScriptedEngine(lambda r: "x y"), Budget(max_calls=3), start=restored)
    resumed.complete(ask("third"))
    with pytest.raises(BudgetExceeded, match="budget of 3 calls"):
        resumed.complete(ask("fourth"))
    assert resumed.report().calls("forward") == 2


def test_malformed_report_is_a_clear_error():
    with pytest.raises(SerializationError, match="format"):
        UsageTable.from_data({"rows": []})
    with pytest.raises(SerializationError, match="row 0 is malformed"):
        UsageTable.from_data({"format": "funcgrad.usage/1", "rows": [{"role": "forward"}]})
    with pytest.raises(EngineError, match="max_calls"):
        Budget(max_calls=-1)


rows = st.builds(
    UsageRow,
    role=st.sampled_from(["forward", "backward", "optimizer", "judge"]),
    model=st.text(max_size=10),
    calls=st.integers(0, 10**6),
    cached_calls=st.integers(0, 10**6),
    failed_calls=st.integers(0, 100),
    prompt_tokens=st.integers(0, 10**9),
    completion_tokens=st.integers(0, 10**9),
    latency_s=st.floats(0, 1e6, allow_nan=False),
)


@given(st.lists(rows, max_size=6, unique_by=lambda r: (r.role, r.model)))
def test_any_report_round_trips(row_list):
    table = UsageTable(tuple(sorted(row_list, key=lambda r: (r.role, r.model))))
    assert UsageTable.from_data(orjson.loads(orjson.dumps(table.to_data()))) == table


def test_metered_cached_http_chain_under_threads(tmp_path):
    with StubServer(latency=0.01) as stub:
        inner = OpenAIEngine("stub", base_url=stub.base_url, api_key="", concurrency=8)
        engine = MeteredEngine(CachedEngine(inner, tmp_path), Budget(max_calls=9))
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(engine.complete, [ask(f"q{i % 4}") for i in range(8)]))
        assert engine.complete(ask("q1")).cached
        inner.close()
    row = engine.report().rows[0]
    assert (row.calls, row.cached_calls, len(stub.requests)) == (4, 5, 4)
    assert row.latency_s > 0 and row.prompt_tokens == 4
