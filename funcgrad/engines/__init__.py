"""Engines: every effect funcgrad has lives here.

HTTP to an OpenAI-compatible server (:mod:`~funcgrad.engines.openai`), the embedded
llama.cpp model (:mod:`~funcgrad.engines.local`), the content-addressed answer cache
(:mod:`~funcgrad.engines.cache`), usage metering and budgets
(:mod:`~funcgrad.engines.meter`), a scripted engine for tests
(:mod:`~funcgrad.engines.scripted`), a fault-injecting stub server
(:mod:`~funcgrad.engines.stub`) and atomic file writes (:mod:`~funcgrad.engines.files`).
Engines import only the core.
"""
