"""CachedEngine: keys, atomic entries, corruption, replay, de-duplication, faults."""

import concurrent.futures
import subprocess
import sys
import threading
from pathlib import Path

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcgrad.engines.cache import CachedEngine, response_from_data, response_to_data
from funcgrad.core.calls import Request, Response, Usage
from funcgrad.core.errors import CacheMiss, EngineError
from funcgrad.engines.openai import OpenAIEngine, RetryPolicy
from funcgrad.engines.stub import FAULTS, StubServer
from funcgrad.engines.scripted import ScriptedEngine

ROOT = Path(__file__).resolve().parent.parent


def ask(text="2+2?", **fields):
    return Request(messages=(("user", text),), **fields)


def entries(directory):
    return sorted(p for p in Path(directory).rglob("*") if p.is_file())


def assert_all_valid(directory):
    for path in entries(directory):
        assert not path.name.startswith(".tmp-"), f"temporary file left behind: {path}"
        data = orjson.loads(path.read_bytes())
        response_from_data(data["response"])


def test_miss_then_hit(tmp_path):
    inner = ScriptedEngine(lambda r: "4")
    engine = CachedEngine(inner, tmp_path)
    first, second = engine.complete(ask()), engine.complete(ask())
    assert (first.cached, second.cached) == (False, True)
    assert first == Response(**{**response_to_data(second), "usage": second.usage})
    assert inner.calls() == 1 and len(entries(tmp_path)) == 1
    entry = orjson.loads(entries(tmp_path)[0].read_bytes())
    assert entry["model"] == "scripted" and entry["request"]["messages"] == [["user", "2+2?"]]


def test_samples_are_separate_entries_and_role_is_not_in_the_key(tmp_path):
    engine = CachedEngine(ScriptedEngine(lambda r: f"s{r.sample}"), tmp_path)
    assert [engine.complete(ask(sample=k)).text for k in (0, 1, 2)] == ["s0", "s1", "s2"]
    assert len(entries(tmp_path)) == 3
    assert engine.complete(ask(sample=1, role="judge")).cached


def test_model_is_part_of_the_key(tmp_path):
    small = CachedEngine(ScriptedEngine(lambda r: "small", model="small"), tmp_path)
    big = CachedEngine(ScriptedEngine(lambda r: "big", model="big"), tmp_path)
    assert small.complete(ask()).text == "small" and big.complete(ask()).text == "big"
    assert small.key(ask()) != big.key(ask()) and small.key(ask(model="x")) == big.key(ask(model="x"))


requests = st.builds(
    Request,
    messages=st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text(max_size=30)), min_size=1, max_size=3),
    temperature=st.floats(0, 2),
    max_tokens=st.integers(0, 4096),
    seed=st.none() | st.integers(0, 2**31),
    sample=st.integers(0, 100),
    stop=st.lists(st.text(max_size=3), max_size=2),
)


def test_server_identity_is_part_of_the_key(tmp_path):
    """Two servers serving the same model name never share answers; replay needs the identity."""
    a = CachedEngine(ScriptedEngine(lambda r: "from A", model="m"), tmp_path, identity="http://a/v1")
    b = CachedEngine(ScriptedEngine(lambda r: "from B", model="m"), tmp_path, identity="http://b/v1")
    assert a.complete(ask()).text == "from A"
    answer = b.complete(ask())
    assert answer.text == "from B" and not answer.cached
    assert CachedEngine(None, tmp_path, replay=True, model="m", identity="http://b/v1").complete(ask()).text == "from B"
    with pytest.raises(CacheMiss):
        CachedEngine(None, tmp_path, replay=True, model="m", identity="http://c/v1").complete(ask())
    entry = orjson.loads(next(p for p in entries(tmp_path) if orjson.loads(p.read_bytes())["server"] == "http://a/v1").read_bytes())
    assert entry["response"]["text"] == "from A"


def test_an_http_engine_keys_by_its_base_url(tmp_path):
    with StubServer(lambda body: "one") as one, StubServer(lambda body: "two") as two:
        with OpenAIEngine("same-name", base_url=one.base_url, api_key="") as e1, OpenAIEngine("same-name", base_url=two.base_url, api_key="") as e2:
            assert CachedEngine(e1, tmp_path).complete(ask()).text == "one"
            assert CachedEngine(e2, tmp_path).complete(ask()).text == "two"
    assert (len(one.requests), len(two.requests)) == (1, 1)


@given(requests, st.integers(0, 100))
def test_sample_index_gives_distinct_keys(request, other):
    engine = CachedEngine(None, ".", replay=True, model="m")
    same = engine.key(request) == engine.key(attrs.evolve(request, sample=other))
    assert same == (other == request.sample)


clean_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
responses = st.builds(
    Response,
    text=clean_text,
    usage=st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6), st.floats(0, 1e4, allow_nan=False)),
    model=clean_text,
    finish_reason=st.sampled_from(["stop", "length", ""]),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(requests, responses)
def test_any_response_round_trips_through_disk(tmp_path, request, response):
    engine = CachedEngine(ScriptedEngine(lambda r: "unused"), tmp_path)
    engine.store(request, response)
    hit = engine.lookup(request)
    assert hit.cached and attrs.evolve(hit, cached=False) == response


def test_replay_answers_hits_and_names_misses(tmp_path):
    CachedEngine(ScriptedEngine(lambda r: "4", model="m"), tmp_path).complete(ask())
    replay = CachedEngine(None, tmp_path, replay=True, model="m")
    assert replay.complete(ask()).text == "4"
    with pytest.raises(CacheMiss) as info:
        replay.complete(ask("what is the capital of France?", role="judge"))
    message = str(info.value)
    key = replay.key(ask("what is the capital of France?"))
    assert "judge request to model 'm'" in message and "capital of France" in message and key[:12] in message
    assert "without replay=True" in message
    with pytest.raises(EngineError, match="needs model="):
        CachedEngine(None, tmp_path, replay=True)
    with pytest.raises(EngineError, match="can only replay"):
        CachedEngine(None, tmp_path, model="m")


def test_replay_with_an_inner_engine_never_calls_it(tmp_path):
    inner = ScriptedEngine(lambda r: "4")
    with pytest.raises(CacheMiss):
        CachedEngine(inner, tmp_path, replay=True).complete(ask())
    assert inner.calls() == 0


@pytest.mark.parametrize("damage", [b"", b'{"format": "funcgrad.engines.cache/1", "key": "', b"[1, 2]", b'{"format": "other"}'])
def test_truncated_or_corrupt_entry_is_a_miss_and_is_repaired(tmp_path, damage):
    inner = ScriptedEngine(lambda r: "4")
    engine = CachedEngine(inner, tmp_path)
    engine.complete(ask())
    (path,) = entries(tmp_path)
    path.write_bytes(damage)  # as if the process died mid-write without the rename protocol
    assert engine.lookup(ask()) is None
    assert engine.complete(ask()).cached is False and inner.calls() == 2
    assert engine.complete(ask()).cached is True
    assert_all_valid(tmp_path)


def test_replay_treats_a_corrupt_entry_as_a_miss(tmp_path):
    engine = CachedEngine(ScriptedEngine(lambda r: "4"), tmp_path)
    engine.complete(ask())
    entries(tmp_path)[0].write_bytes(b'{"format": "funcgrad.engines.cache/1", "key": "x"}')
    with pytest.raises(CacheMiss):
        CachedEngine(None, tmp_path, replay=True, model="scripted").complete(ask())


def test_identical_requests_in_flight_are_sent_once(tmp_path):
    release = threading.Event()
    inner = ScriptedEngine(lambda r: release.wait(10) and "4")
    engine = CachedEngine(inner, tmp_path)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(engine.complete, ask()) for _ in range(8)]
        while inner.calls() == 0:
            threading.Event().wait(0.01)
        threading.Event().wait(0.05)
        release.set()
        results = [f.result() for f in futures]
    assert inner.calls() == 1
    assert sorted(r.cached for r in results) == [False] + [True] * 7
    assert {r.text for r in results} == {"4"}


def test_a_failing_leader_fails_its_followers_and_caches_nothing(tmp_path):
    release = threading.Event()

    def respond(request):
        release.wait(10)
        raise EngineError("boom")

    inner = ScriptedEngine(respond)
    engine = CachedEngine(inner, tmp_path)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(engine.complete, ask()) for _ in range(4)]
        while inner.calls() == 0:
            threading.Event().wait(0.01)
        threading.Event().wait(0.05)
        release.set()
        errors = [f.exception() for f in futures]
    assert all(isinstance(e, EngineError) for e in errors) and entries(tmp_path) == []


WRITER = """
import sys
from funcgrad.engines.cache import CachedEngine
from funcgrad.core.calls import Request
from funcgrad.engines.scripted import ScriptedEngine
engine = CachedEngine(ScriptedEngine(lambda r: "x" * 5000 + r.messages[0].content), sys.argv[1])
for i in range(40):
    engine.store(Request(messages=(("user", str(i % 10)),)), engine.inner.complete(Request(messages=(("user", str(i % 10)),))))
"""


def test_concurrent_writer_processes_leave_only_valid_entries(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    assert len(entries(tmp_path)) == 10
    assert_all_valid(tmp_path)
    replay = CachedEngine(None, tmp_path, replay=True, model="scripted")
    assert replay.complete(ask("7")).text == "x" * 5000 + "7"


def test_faults_through_the_cache_never_corrupt_it(tmp_path):
    """Every fault ends in a successful retry or one clear EngineError; the cache stays valid."""
    fast = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.01, malformed_attempts=2)
    permanent = {"400": "EngineError", "context": "EngineError", "401": "EngineUnavailable", "403": "EngineUnavailable", "404": "EngineUnavailable"}
    outcomes = {}
    for fault in FAULTS:
        with StubServer(faults=lambda i, body: fault if i % 2 == 0 or fault in permanent else None, trickle_s=0.001) as stub:
            with OpenAIEngine("m", base_url=stub.base_url, api_key="", timeout=0.3, retry=fast) as inner:
                engine = CachedEngine(inner, tmp_path)
                try:
                    outcomes[fault] = engine.complete(ask(fault)).text
                except EngineError as exc:
                    outcomes[fault] = type(exc).__name__
    assert outcomes == {f: permanent.get(f, f) for f in FAULTS}
    assert len(entries(tmp_path)) == len(FAULTS) - len(permanent)
    assert_all_valid(tmp_path)
