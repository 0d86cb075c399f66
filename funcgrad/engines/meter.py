"""Usage accounting and budgets: count every call per (role, model) and stop at a limit.

A :class:`Meter` is the thread-safe counter; :class:`MeteredEngine` wraps an engine
and reports each call to a meter. Two engines in one run (a task model and a stronger
critic) share one meter, so a single report and a single budget cover both:

>>> from funcgrad.engines.scripted import ScriptedEngine
>>> from funcgrad.core.calls import Request
>>> meter = Meter(Budget(max_calls=10))
>>> task = MeteredEngine(ScriptedEngine(lambda r: "4", model="small"), meter=meter)
>>> critic = MeteredEngine(ScriptedEngine(lambda r: "ok", model="big"), meter=meter)
>>> _ = task.complete(Request(messages=(("user", "2+2?"),)))
>>> _ = critic.complete(Request(messages=(("user", "why?"),), role="backward"))
>>> [(row.role, row.model, row.calls) for row in meter.report().rows]
[('backward', 'big', 1), ('forward', 'small', 1)]

Wrap the cache inside the meter, ``MeteredEngine(CachedEngine(OpenAIEngine(...)))``:
cache hits are then counted (``cached_calls``) but spend no budget.
"""

from __future__ import annotations

import threading

import attrs

from funcgrad.core.calls import ROLES, Engine, Request, Response
from funcgrad.core.errors import BudgetExceeded, EngineError, SerializationError

FORMAT = "funcgrad.usage/1"


def _limit(instance, attribute, value):
    if value is not None and (not isinstance(value, int) or value < 0):
        raise EngineError(f"Budget.{attribute.name}={value!r} must be None (no limit) or an int >= 0")


@attrs.frozen
class Budget:
    """Limits on model calls and tokens; None means no limit. Cache hits spend nothing.

    The token limit is checked before each call, so calls already in flight may
    overshoot it; the call limit is exact (in-flight calls are reserved).

    >>> Budget(max_calls=100).max_calls
    100
    """

    max_calls: int | None = attrs.field(default=None, validator=_limit)
    max_tokens: int | None = attrs.field(default=None, validator=_limit)


@attrs.frozen
class UsageRow:
    """Counts of one (role, model): ``calls`` answered by a model, ``cached_calls``
    answered from a cache, ``failed_calls`` that raised; tokens and latency (seconds)
    of the calls answered by a model; ``cached_tokens``: tokens the cached answers
    cost when they were first made (so a run's full work can be compared with
    another's, whatever the cache held).
    """

    role: str
    model: str
    calls: int = 0
    cached_calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_data(self) -> dict:
        return attrs.asdict(self)


_COUNTS = tuple(f.name for f in attrs.fields(UsageRow))[2:]


@attrs.frozen
class UsageTable:
    """A frozen usage report: one :class:`UsageRow` per (role, model), sorted.

    >>> table = UsageTable((UsageRow("forward", "m", calls=2, prompt_tokens=5),))
    >>> UsageTable.from_data(table.to_data()) == table, table.calls(), table.tokens()
    (True, 2, 5)
    """

    rows: tuple[UsageRow, ...] = ()

    def calls(self, role: str | None = None) -> int:
        """Calls answered by a model (the ones that spend budget), optionally of one role."""
        return sum(r.calls for r in self.rows if role is None or r.role == role)

    def cached_calls(self, role: str | None = None) -> int:
        return sum(r.cached_calls for r in self.rows if role is None or r.role == role)

    def tokens(self, role: str | None = None) -> int:
        return sum(r.tokens for r in self.rows if role is None or r.role == role)

    def by_role(self, count: str = "calls") -> dict[str, int]:
        """``count`` summed per role, in pipeline order, e.g. ``{"forward": 12, "backward": 3}``."""
        out: dict[str, int] = {}
        for r in sorted(self.rows, key=lambda r: (ROLES.index(r.role) if r.role in ROLES else len(ROLES), r.role)):
            out[r.role] = out.get(r.role, 0) + getattr(r, count)
        return out

    def to_data(self) -> dict:
        """A plain dict for checkpoints (see :meth:`from_data`)."""
        return {"format": FORMAT, "rows": [r.to_data() for r in self.rows]}

    @classmethod
    def from_data(cls, data: dict) -> UsageTable:
        """Parse :meth:`to_data` output; raises SerializationError naming what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("rows"), list):
            raise SerializationError(f"usage report must be a dict with format {FORMAT!r} and a list of rows")
        rows = []
        for i, row in enumerate(data["rows"]):
            try:
                rows.append(UsageRow(**row))
            except TypeError as exc:
                raise SerializationError(f"usage report row {i} is malformed ({exc}); expected fields {_COUNTS}") from None
        return cls(tuple(sorted(rows, key=lambda r: (r.role, r.model))))


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{role} {n}" for role, n in counts.items()) or "none"


class Meter:
    """A thread-safe usage counter with a budget, shared by any number of MeteredEngines.

    ``start`` is a previous report to continue from (e.g. from a checkpoint): its
    calls and tokens count against the budget.
    """

    def __init__(self, budget: Budget = Budget(), start: UsageTable | None = None):
        self.budget = budget
        self._lock = threading.Lock()
        self._rows = {(r.role, r.model): r for r in (start.rows if start else ())}
        self._reserved = 0

    def report(self) -> UsageTable:
        """A frozen snapshot of the counts so far."""
        with self._lock:
            return UsageTable(tuple(self._rows[k] for k in sorted(self._rows)))

    def reserve(self) -> None:
        """Claim budget for one model call; raise BudgetExceeded when it is spent."""
        with self._lock:
            table = UsageTable(tuple(self._rows.values()))
            calls, tokens = table.calls(), table.tokens()
            if self.budget.max_calls is not None and calls + self._reserved >= self.budget.max_calls:
                raise BudgetExceeded(
                    f"budget of {self.budget.max_calls} calls exhausted ({_summary(table.by_role('calls'))}); "
                    "raise max_calls or resume with a larger budget"
                )
            if self.budget.max_tokens is not None and tokens >= self.budget.max_tokens:
                raise BudgetExceeded(
                    f"budget of {self.budget.max_tokens} tokens exhausted ({tokens} used: {_summary(table.by_role('tokens'))}); "
                    "raise max_tokens or resume with a larger budget"
                )
            self._reserved += 1

    def record(self, role: str, model: str, response: Response | None, *, reserved: bool) -> None:
        """Count one finished call (``response`` None = it failed) and release its reservation."""
        with self._lock:
            self._reserved -= reserved
            row = self._rows.get((role, model), UsageRow(role, model))
            if response is None:
                row = attrs.evolve(row, failed_calls=row.failed_calls + 1)
            elif response.cached:
                row = attrs.evolve(
                    row, cached_calls=row.cached_calls + 1, cached_tokens=row.cached_tokens + response.usage.total_tokens
                )
            else:
                usage = response.usage
                row = attrs.evolve(
                    row,
                    calls=row.calls + 1,
                    prompt_tokens=row.prompt_tokens + usage.prompt_tokens,
                    completion_tokens=row.completion_tokens + usage.completion_tokens,
                    latency_s=row.latency_s + usage.latency_s,
                )
            self._rows[(role, model)] = row

    def release(self) -> None:
        """Give back a reservation whose call was interrupted before it finished."""
        with self._lock:
            self._reserved -= 1


class MeteredEngine:
    """Counts the calls through ``inner`` per (request.role, model) and enforces a budget.

    Pass ``budget``/``start`` for a meter of its own, or ``meter=`` to share one. When
    the budget is spent, a request the inner engine can answer without a model call
    (``inner.recall``: a cache hit, or an identical call in flight) is still answered;
    any other raises BudgetExceeded.
    """

    def __init__(self, inner: Engine, budget: Budget = Budget(), start: UsageTable | None = None, *, meter: Meter | None = None):
        if meter is not None and (budget != Budget() or start is not None):
            raise EngineError("pass either meter= (shared) or budget=/start= (own meter), not both")
        self.inner = inner
        self.meter = meter if meter is not None else Meter(budget, start)
        self.model = getattr(inner, "model", "")
        self.concurrency = inner.concurrency

    def __repr__(self) -> str:
        return f"MeteredEngine({self.inner!r}, {self.meter.budget!r})"

    def report(self) -> UsageTable:
        """The meter's frozen usage report."""
        return self.meter.report()

    def _recalled(self, request: Request, hit: Response | None, exhausted: BudgetExceeded) -> Response:
        if hit is None:
            raise exhausted
        self.meter.record(request.role, request.model or self.model, hit, reserved=False)
        return hit

    def _end(self, request: Request, response: Response | None) -> None:
        self.meter.record(request.role, request.model or self.model, response, reserved=True)

    def complete(self, request: Request) -> Response:
        """Check the budget, call ``inner``, count the outcome."""
        try:
            self.meter.reserve()
        except BudgetExceeded as exhausted:
            recall = getattr(self.inner, "recall", None)
            return self._recalled(request, recall(request) if recall else None, exhausted)
        try:
            response = self.inner.complete(request)
        except Exception:
            self._end(request, None)
            raise
        except BaseException:
            self.meter.release()
            raise
        self._end(request, response)
        return response

    async def acomplete(self, request: Request) -> Response:
        """Async :meth:`complete`."""
        try:
            self.meter.reserve()
        except BudgetExceeded as exhausted:
            arecall = getattr(self.inner, "arecall", None)
            return self._recalled(request, await arecall(request) if arecall else None, exhausted)
        try:
            response = await self.inner.acomplete(request)
        except Exception:
            self._end(request, None)
            raise
        except BaseException:
            self.meter.release()
            raise
        self._end(request, response)
        return response
