"""Usage accounting and budgets: count every answer per (role, model) and stop at a limit.

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
cache hits are then counted (``cached_calls``) and **charged like model answers**, so
a run spends the same budget whatever the cache already held (a comparison grid's
table does not depend on the order of its cells, and a run resumed after a kill
counts every answer it used exactly once); the cache still saves the time. The
budget bounds every role except those in ``Budget.exempt`` (by default the test
``evaluation``, which is always run and counted separately).
"""

from __future__ import annotations

import threading

import attrs

from funcgrad.core.calls import ROLES, Engine, Request, Response
from funcgrad.core.errors import BudgetExceeded, EngineError, SerializationError

FORMAT = "funcgrad.usage/1"


def _limit(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise EngineError(f"Budget.{attribute.name}={value!r} must be None (no limit) or an int >= 0")


def _roles(instance, attribute, value):
    unknown = [r for r in value if r not in ROLES]
    if unknown:
        raise EngineError(f"Budget.exempt names unknown role {unknown[0]!r}; roles are: {', '.join(ROLES)}")


@attrs.frozen
class Budget:
    """Limits on answers (model calls) and tokens; None means no limit.

    Every answer of a bounded role is charged, cached or not (a cached answer at the
    tokens it cost when it was first made). Roles in ``exempt`` (default: the test
    ``evaluation``) are never refused and spend nothing, but are still counted. The
    token limit is checked before each call, so calls already in flight may overshoot
    it; the call limit is exact (in-flight calls are reserved).

    >>> Budget(max_calls=100).max_calls, Budget().bounds("evaluation"), Budget().bounds("backward")
    (100, False, True)
    """

    max_calls: int | None = attrs.field(default=None, validator=_limit)
    max_tokens: int | None = attrs.field(default=None, validator=_limit)
    exempt: tuple[str, ...] = attrs.field(default=("evaluation",), converter=tuple, validator=_roles)

    def bounds(self, role: str) -> bool:
        """Whether calls of ``role`` spend (and are limited by) this budget."""
        return role not in self.exempt


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
        """Tokens of the calls answered by a model."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def answers(self) -> int:
        """Every answer, from a model or the cache: what a budget charges."""
        return self.calls + self.cached_calls

    @property
    def answer_tokens(self) -> int:
        """Tokens of every answer (cached ones at what they cost when first made)."""
        return self.tokens + self.cached_tokens

    def to_data(self) -> dict:
        return attrs.asdict(self)


_COUNTS = tuple(f.name for f in attrs.fields(UsageRow))[2:]


@attrs.frozen
class UsageTable:
    """A frozen usage report: one :class:`UsageRow` per (role, model), sorted.

    >>> table = UsageTable((UsageRow("forward", "m", calls=2, prompt_tokens=5, cached_calls=1, cached_tokens=3),))
    >>> UsageTable.from_data(table.to_data()) == table, table.calls(), table.answers(), table.tokens(), table.answer_tokens()
    (True, 2, 3, 5, 8)
    """

    rows: tuple[UsageRow, ...] = ()

    def _sum(self, count: str, role: str | None) -> int:
        return sum(getattr(r, count) for r in self.rows if role is None or r.role == role)

    def calls(self, role: str | None = None) -> int:
        """Calls answered by a model, optionally of one role."""
        return self._sum("calls", role)

    def cached_calls(self, role: str | None = None) -> int:
        """Calls answered from the cache, optionally of one role."""
        return self._sum("cached_calls", role)

    def answers(self, role: str | None = None) -> int:
        """Every answer (model or cache), optionally of one role: what budgets charge."""
        return self._sum("answers", role)

    def tokens(self, role: str | None = None) -> int:
        """Tokens of the calls answered by a model, optionally of one role."""
        return self._sum("tokens", role)

    def answer_tokens(self, role: str | None = None) -> int:
        """Tokens of every answer (cached ones at their first cost), optionally of one role."""
        return self._sum("answer_tokens", role)

    def spent(self, budget: Budget) -> tuple[int, int]:
        """``(answers, answer_tokens)`` of the roles ``budget`` bounds: what it has charged."""
        bounded = [r for r in self.rows if budget.bounds(r.role)]
        return sum(r.answers for r in bounded), sum(r.answer_tokens for r in bounded)

    def by_role(self, count: str = "calls") -> dict[str, int]:
        """``count`` (a UsageRow field or ``answers``/``answer_tokens``) summed per role, in
        pipeline order, e.g. ``{"forward": 12, "backward": 3}``."""
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
    answers and tokens count against the budget. A run killed after its last
    checkpoint loses the counts of the answers it got since, and redoes exactly those
    requests when resumed (answered from the cache, and charged then), so each answer
    the finished run used is charged once, however often it was killed.
    """

    def __init__(self, budget: Budget = Budget(), start: UsageTable | None = None):
        self.budget = budget
        self._lock = threading.Lock()
        self._rows = {(r.role, r.model): r for r in (start.rows if start else ())}
        self._reserved: dict[str, int] = {}  # answers in flight, per role

    def report(self) -> UsageTable:
        """A frozen snapshot of the counts so far."""
        with self._lock:
            return UsageTable(tuple(self._rows[k] for k in sorted(self._rows)))

    def reserve(self, role: str = "forward") -> bool:
        """Claim budget for one answer of ``role``; raise BudgetExceeded when it is spent.

        Returns whether a reservation was made (False for a role the budget does not
        bound); pass it to :meth:`record` / :meth:`release`.
        """
        if not self.budget.bounds(role):
            return False
        with self._lock:
            table = UsageTable(tuple(self._rows.values()))
            answers, tokens = table.spent(self.budget)
            bounded = UsageTable(tuple(r for r in table.rows if self.budget.bounds(r.role)))
            if self.budget.max_calls is not None and answers + sum(self._reserved.values()) >= self.budget.max_calls:
                charged = bounded.by_role("answers")
                for r, n in self._reserved.items():
                    charged[r] = charged.get(r, 0) + n
                charged = {r: n for r, n in charged.items() if n}
                raise BudgetExceeded(
                    f"budget of {self.budget.max_calls} calls exhausted ({_summary(charged)}; "
                    "cached answers count too); raise max_calls or resume with a larger budget"
                )
            if self.budget.max_tokens is not None and tokens >= self.budget.max_tokens:  # checked before each call
                raise BudgetExceeded(
                    f"budget of {self.budget.max_tokens} tokens exhausted ({tokens} used: "
                    f"{_summary(bounded.by_role('answer_tokens'))}); raise max_tokens or resume with a larger budget"
                )
            self._reserved[role] = self._reserved.get(role, 0) + 1
            return True

    def record(self, role: str, model: str, response: Response | None, *, reserved: bool) -> None:
        """Count one finished call (``response`` None = it failed) and release its reservation."""
        with self._lock:
            self._reserved[role] = self._reserved.get(role, 0) - reserved
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

    def release(self, role: str, reserved: bool = True) -> None:
        """Give back the reservation of a ``role`` call that was interrupted before it finished."""
        with self._lock:
            self._reserved[role] = self._reserved.get(role, 0) - reserved


class MeteredEngine:
    """Counts the answers through ``inner`` per (request.role, model) and enforces a budget.

    Pass ``budget``/``start`` for a meter of its own, or ``meter=`` to share one. When
    the budget is spent, every further request of a bounded role raises
    BudgetExceeded, cache hits included (see :class:`Budget`).
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

    def _end(self, request: Request, response: Response | None, reserved: bool) -> None:
        self.meter.record(request.role, request.model or self.model, response, reserved=reserved)

    def complete(self, request: Request) -> Response:
        """Check the budget, call ``inner``, count the outcome."""
        reserved = self.meter.reserve(request.role)
        try:
            response = self.inner.complete(request)
        except Exception:
            self._end(request, None, reserved)
            raise
        except BaseException:
            self.meter.release(request.role, reserved)
            raise
        self._end(request, response, reserved)
        return response
