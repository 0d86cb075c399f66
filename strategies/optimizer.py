"""The optimizer request every built-in strategy makes: one builder for backprop, whole_trace and gepa.

The request is seeded by the run's seed and the step, numbered by the attempt
(``sample``: a retry is a distinct cache entry), and sampled at ``retry_temperature``
once a proposal of this step was rejected (a greedy retry would repeat it).

>>> from funcgrad.core.strategy import StepContext
>>> from funcgrad.strategies.whole_trace import WholeTraceKnobs
>>> r = optimizer_request("S", "U", StepContext(step=1, seed=3), WholeTraceKnobs())
>>> r.role, r.temperature, r.sample, r.max_tokens
('optimizer', 0.0, 0, 250)
"""

from __future__ import annotations

from typing import Any

from funcgrad.core.calls import Request
from funcgrad.core.seeds import derive_seed

OPTIMIZER = "optimizer"  # the request role of proposals (docs/strategies.md, "Cost per phase")


def attempt_temperature(context, first: float, retry: float) -> float:
    """``first`` for a step's first proposal, ``retry`` once one was rejected (greedy would repeat it).

    >>> attempt_temperature(None, 0.0, 0.7)
    0.0
    """
    return retry if getattr(context, "rejected", ()) else first


def optimizer_request(system: str, body: str, context, knobs: Any, json_schema: str | None = None) -> Request:
    """The optimizer call with ``system`` and user ``body``, set by the ``optimizer_*`` and ``retry_temperature`` knobs."""
    return Request(
        messages=(("system", system), ("user", body)), model=knobs.optimizer_model,
        temperature=attempt_temperature(context, knobs.optimizer_temperature, knobs.retry_temperature),
        max_tokens=knobs.optimizer_max_tokens, seed=derive_seed(context.seed, context.step),
        sample=context.attempt, role=OPTIMIZER, json_schema=json_schema,
    )
