"""OpenAIEngine against the stub server over real HTTP on 127.0.0.1."""

import asyncio
import concurrent.futures
import logging
import threading
import time

import orjson
import pytest

from funcgrad.engines.cache import CachedEngine
from funcgrad.core.calls import Request
from funcgrad.core.errors import EngineError, EngineUnavailable
from funcgrad.engines.meter import MeteredEngine
from funcgrad.engines.openai import OpenAIEngine, RetryPolicy, sample_seed
from funcgrad.engines.stub import FAULTS, StubServer

SECRET = "sk-test-SECRET123"
FAST = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01)


def ask(text="hello there", **fields):
    return Request(messages=(("system", "be brief"), ("user", text)), **fields)


def engine_for(stub, **options):
    options = {"api_key": SECRET, "retry": FAST, "timeout": 5.0, **options}
    return OpenAIEngine("stub-model", base_url=stub.base_url, **options)


def test_request_fields_are_mapped_and_response_filled():
    schema = '{"type": "object", "properties": {"a": {"type": "integer"}}}'
    with StubServer(lambda body: "hi back") as stub, engine_for(stub) as engine:
        response = engine.complete(ask(temperature=0.5, max_tokens=7, seed=3, stop=("\n",), json_schema=schema))
        engine.complete(ask(model="other", seed=None))
    body = stub.requests[0].body
    assert body["model"] == "stub-model" and body["n"] == 1
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    assert (body["temperature"], body["max_tokens"], body["seed"], body["stop"]) == (0.5, 7, 3, ["\n"])
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == orjson.loads(schema)
    assert response.text == "hi back" and response.model == "stub-model" and response.finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (4, 2)
    assert response.usage.latency_s > 0 and not response.cached
    second = stub.requests[1].body
    assert second["model"] == "other" and "seed" not in second


def test_samples_get_distinct_seeds():
    assert sample_seed(5, 0) == 5
    assert len({sample_seed(5, k) for k in range(50)}) == 50


def test_env_fallback_and_no_key(monkeypatch):
    with StubServer() as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
        with OpenAIEngine("m") as engine:
            engine.complete(ask())
        with OpenAIEngine("m", api_key="") as engine:
            engine.complete(ask())
    assert stub.requests[0].headers["authorization"] == "Bearer sk-from-env"
    assert "authorization" not in stub.requests[1].headers


def test_bad_base_url_and_schema_are_clear_errors():
    with pytest.raises(EngineError, match="must start with http"):
        OpenAIEngine("m", base_url="localhost:8080/v1")
    with OpenAIEngine("m", base_url="http://127.0.0.1:9/v1") as engine:
        with pytest.raises(EngineError, match="json_schema is not valid JSON"):
            engine.complete(ask(json_schema="{nope"))


PERMANENT = ("400", "401", "403", "404", "context")


@pytest.mark.parametrize("fault", [f for f in FAULTS if f not in PERMANENT + ("trickle",)])
def test_each_transient_fault_is_retried(fault):
    sleeps = []
    with StubServer(faults=[fault]) as stub, engine_for(stub, timeout=0.3, sleep=sleeps.append) as engine:
        response = engine.complete(ask())
    assert response.text == "hello there"
    assert len(stub.requests) == 2 and len(sleeps) == 1


@pytest.mark.parametrize("fault", PERMANENT)
def test_client_errors_are_not_retried(fault):
    with StubServer(faults=[fault]) as stub, engine_for(stub) as engine:
        with pytest.raises(EngineError) as info:
            engine.complete(ask())
    assert len(stub.requests) == 1
    message = str(info.value)
    status = "400" if fault == "context" else fault
    assert f"HTTP {status}" in message and "injected" in message and "check" in message
    # auth and routing errors mean no call can succeed; a rejected request is that call's alone
    assert isinstance(info.value, EngineUnavailable) == (fault in ("401", "403", "404"))


def test_retry_after_as_an_http_date_is_honoured():
    sleeps = []
    policy = RetryPolicy(base_delay=0.001, max_delay=30.0, jitter=0.0)
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # the clock below says it is 12 s before that
    with StubServer(faults=["429"], retry_after=date) as stub, engine_for(stub, retry=policy, sleep=sleeps.append) as e:
        e._wall = lambda: 1445412480.0 - 12.0
        assert e.complete(ask()).text == "hello there"
    assert sleeps == [12.0]


def test_a_server_trickling_its_answer_is_cut_by_the_deadline():
    with StubServer(faults=lambda i, body: "trickle", trickle_s=0.05) as stub:
        with engine_for(stub, timeout=5.0, deadline=0.5) as engine:
            started = time.monotonic()
            with pytest.raises(EngineError, match=r"no complete answer within deadline=0.5s") as info:
                engine.complete(ask())
            took = time.monotonic() - started
    assert not isinstance(info.value, EngineUnavailable)
    assert took < 2.0  # the read timeout (5 s) alone would never fire: a byte arrives every 50 ms
    assert len(stub.requests) == 1


def test_a_silently_hung_server_is_cut_by_the_deadline_and_says_so():
    with StubServer(faults=lambda i, body: "hang") as stub:
        with engine_for(stub, timeout=5.0, deadline=0.5) as engine:
            started = time.monotonic()
            with pytest.raises(EngineError, match=r"failed after 1 attempts: no complete answer within deadline=0.5s"):
                engine.complete(ask())
            took = time.monotonic() - started
    assert took < 2.0 and len(stub.requests) == 1  # not the 5 s read timeout, and no retry past the deadline


def test_the_deadline_also_bounds_retries():
    sleeps = []
    clock = [0.0]

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds

    policy = RetryPolicy(max_attempts=50, base_delay=1.0, max_delay=1.0, jitter=0.0)
    with StubServer(faults=lambda i, body: "500") as stub:
        with engine_for(stub, retry=policy, sleep=sleep, clock=lambda: clock[0], deadline=3.5) as engine:
            with pytest.raises(EngineError, match=r"deadline=3.5s leaves no time") as info:
                engine.complete(ask())
    assert sleeps == [1.0, 1.0, 1.0] and len(stub.requests) == 4
    assert "HTTP 500" in str(info.value)


def test_a_trickled_answer_within_the_deadline_is_used():
    with StubServer(lambda body: "ok", faults=["trickle"], trickle_s=0.001) as stub, engine_for(stub, deadline=30.0) as engine:
        assert engine.complete(ask()).text == "ok"


def test_identity_is_the_base_url_without_credentials():
    with OpenAIEngine("m", base_url="http://user:pw@127.0.0.1:9/v1", api_key="") as engine:
        assert engine.identity == "http://127.0.0.1:9/v1"
    with OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", api_key="", identity="sha256:ab") as engine:
        assert engine.identity == "sha256:ab"


def test_retry_after_is_honoured_and_capped():
    sleeps = []
    policy = RetryPolicy(base_delay=0.001, max_delay=7.0)
    with StubServer(faults=["429", "429"], retry_after=5) as stub, engine_for(stub, retry=policy, sleep=sleeps.append) as e:
        e.complete(ask())
    assert sleeps == [5.0, 5.0]
    with StubServer(faults=["429"], retry_after=60) as stub, engine_for(stub, retry=policy, sleep=sleeps.append) as e:
        e.complete(ask())
    assert sleeps[-1] == 7.0


def test_backoff_grows_exponentially_with_jitter():
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0, jitter=0.5)
    assert [policy.delay(k) for k in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]  # rand() = 1: the most jitter
    assert policy.delay(3, rand=lambda: 0.0) == 4.0


def test_persistent_server_error_gives_one_clear_error():
    sleeps = []
    with StubServer(faults=lambda i, body: "500") as stub, engine_for(stub, sleep=sleeps.append) as engine:
        with pytest.raises(EngineError, match=r"failed after 4 attempts: HTTP 500: injected 500"):
            engine.complete(ask())
    assert len(stub.requests) == 4 and len(sleeps) == 3


def test_persistent_garbage_is_retried_a_bounded_number_of_times():
    with StubServer(faults=lambda i, body: "empty_choices") as stub, engine_for(stub, sleep=lambda s: None) as engine:
        with pytest.raises(EngineError, match="no choices; body starts") as info:
            engine.complete(ask())
    assert len(stub.requests) == FAST.malformed_attempts
    assert '"choices":[]' in str(info.value)


def test_unreachable_server_is_a_clear_error():
    with StubServer() as stub:
        url = stub.base_url
    with OpenAIEngine("m", base_url=url, retry=FAST, api_key="") as engine:
        with pytest.raises(EngineUnavailable, match="connection error") as info:
            engine.complete(ask())
    assert "check that the server is up" in str(info.value) and "failed after 4 attempts" in str(info.value)


def test_32_concurrent_calls_are_all_in_flight_together():
    barrier = threading.Barrier(32, timeout=20)

    def respond(body):
        barrier.wait()  # passes only when 32 requests are being answered at once
        return body["messages"][-1]["content"]

    with StubServer(respond) as stub, engine_for(stub, concurrency=32, timeout=30) as engine:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda i: engine.complete(ask(f"q{i}")).text, range(32)))
    assert answers == [f"q{i}" for i in range(32)]
    assert not barrier.broken


def test_concurrency_bounds_calls_in_flight():
    lock, active, peak = threading.Lock(), [0], [0]

    def respond(body):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        threading.Event().wait(0.02)
        with lock:
            active[0] -= 1
        return "ok"

    with StubServer(respond) as stub, engine_for(stub, concurrency=3) as engine:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            list(pool.map(lambda i: engine.complete(ask(f"q{i}")), range(24)))
    assert peak[0] <= 3 and len(stub.requests) == 24


def test_async_calls_run_concurrently_and_retry():
    barrier = threading.Barrier(32, timeout=20)

    def respond(body):
        barrier.wait()
        return body["messages"][-1]["content"]

    async def main(engine, n=32):
        async with engine:
            return await asyncio.gather(*(engine.acomplete(ask(f"q{i}")) for i in range(n)))

    async def no_sleep(seconds):
        return None

    with StubServer(respond) as stub:
        answers = asyncio.run(main(engine_for(stub, concurrency=32, timeout=30)))
    assert [a.text for a in answers] == [f"q{i}" for i in range(32)]
    with StubServer(faults=["500", "reset", "invalid_json"]) as stub:
        (answer,) = asyncio.run(main(engine_for(stub, async_sleep=no_sleep), n=1))
    assert answer.text == "q0" and len(stub.requests) == 4


def test_api_key_only_in_authorization_header(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    errors = []
    faults = ["500", "reset", "invalid_json", None, None, "401"]
    with StubServer(faults=faults) as stub:
        inner = engine_for(stub, api_key=SECRET)
        engine = MeteredEngine(CachedEngine(inner, tmp_path / "cache"))
        for text in ("a", "b"):
            engine.complete(ask(text))
        try:
            engine.complete(ask("c"))
        except EngineError as exc:
            errors.append(str(exc))
        inner.close()
    assert all(seen.headers["authorization"] == f"Bearer {SECRET}" for seen in stub.requests)
    assert len(errors) == 1 and "401" in errors[0]
    places = {"repr": repr(engine) + repr(inner), "errors": " ".join(errors), "logs": caplog.text}
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode()
    assert len(places) > 3  # repr, errors, logs and at least one cache entry were searched
    assert [where for where, text in places.items() if SECRET in text] == []


def test_server_echoing_the_key_in_an_error_is_redacted():
    with StubServer(faults=["401"]) as stub:
        with OpenAIEngine("m", base_url=stub.base_url, api_key="injected") as engine:  # the stub says "injected 401"
            with pytest.raises(EngineError) as info:
                engine.complete(ask())
    assert "<api key> 401" in str(info.value)
