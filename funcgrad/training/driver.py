"""The driver: performs a strategy's effect program and records every effect.

:func:`drive` runs the generator returned by ``strategy.update``: it performs each
yielded batch concurrently — critic/optimizer :class:`~funcgrad.core.effects.Call`
effects through the (metered, cached) critic engine, ``Validate``/``Rerun`` through
the callbacks the training loop provides — and sends the answers back in order.
Every request, response and effect is recorded, numbered in the order the
strategy asked (the numbering of :func:`funcgrad.core.effects.trampoline`: the
program reads each call's id off the CallLog it is answered with), with the round
(batch) it was in, so the backward pass becomes a
:class:`~funcgrad.core.backward.StepTrace` as inspectable as a forward trace.

Failures are not answers: a call that fails for good (an ``EngineError`` after the
engine's retries, a budget, a replay miss) is raised to the caller, never turned
into "no update" (docs/engines.md, failure policy).

Users with their own loop call :func:`drive` directly:

>>> from funcgrad.core.effects import Call, Validate
>>> from funcgrad.core.calls import Request
>>> from funcgrad.engines.scripted import ScriptedEngine
>>> def program():
...     a, b = yield (Call(Request(messages=(("user", "1"),), role="backward")),
...                   Call(Request(messages=(("user", "2"),), role="backward")))
...     return a.response.text + b.response.text
>>> done = drive(program(), strategy="demo", critic=ScriptedEngine(lambda r: r.messages[0].content))
>>> done.value, [c.request.messages[0].content for c in done.calls], [e.round for e in done.effects]
('12', ['1', '2'], [0, 0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from funcgrad.core.backward import CallLog, EffectLog
from funcgrad.core.calls import Engine
from funcgrad.core.effects import Call, Program, Validate, trampoline
from funcgrad.core.errors import StrategyError
from funcgrad.core.run import Result, mean_score
from funcgrad.engines.pool import in_order, worker_pool


@attrs.frozen
class Driven:
    """What :func:`drive` returns: the program's ``value`` and the record of its effects."""

    value: Any
    calls: tuple[CallLog, ...] = ()
    effects: tuple[EffectLog, ...] = ()


def _no_runs(what: str):
    def refuse(*args):
        raise StrategyError(f"this driver was given no {what} callback, but the strategy asked for one")

    return refuse


def drive(
    program: Program[Any],
    *,
    strategy: str,
    critic: Engine,
    validate: Callable[[Validate], Sequence[Result]] | None = None,
    rerun: Callable[[Rerun], Sequence[Result]] | None = None,
    concurrency: int | None = None,
) -> Driven:
    """Run ``program`` to its end, performing each batch of effects concurrently.

    ``critic`` answers Call effects; ``validate(effect)`` and ``rerun(effect)``
    answer Validate and Rerun effects with Results (each callback receives the
    effect, whose fields say which examples to run and how). ``concurrency`` bounds the
    effects of one batch in flight (default: the critic engine's ``concurrency``).
    Raises StrategyError (naming ``strategy``) when the program yields something
    that is not a batch of effects, and re-raises the first failure of a batch.
    """
    validate = validate or _no_runs("validate")
    rerun = rerun or _no_runs("rerun")

    def perform(effect):
        if isinstance(effect, Call):
            return critic.complete(effect.request)
        if isinstance(effect, Validate):
            return tuple(validate(effect))
        return tuple(rerun(effect))

    workers = max(1, concurrency or getattr(critic, "concurrency", 1))
    with worker_pool(workers) as pool:
        ran = trampoline(program, lambda batch: in_order(pool, perform, batch), strategy=strategy)
    effects: list[EffectLog] = []
    for round_no, pairs in enumerate(ran.rounds):
        for effect, answer in pairs:
            if isinstance(effect, Call):
                effects.append(EffectLog(len(effects), "call", round_no, call=answer.id))
            else:
                kind = "validate" if isinstance(effect, Validate) else "rerun"
                seed = effect.seed if isinstance(effect, Validate) else None
                effects.append(EffectLog(len(effects), kind, round_no, seed=seed,
                                         examples=tuple(r.example.id for r in answer), score=mean_score(answer)))
    return Driven(ran.value, ran.calls, tuple(effects))
