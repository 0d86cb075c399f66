"""How many examples each figure of a run was computed over, and how many of them failed.

A failed example (a model call, the pipeline or the loss did not work) is left out
of every score, so a mean is over the *answered* examples only. Every accuracy a
run reports therefore comes with its :class:`Counts`, and a figure over zero
answered examples is never printed (it reads ``n/a``).

>>> Counts(8, 2).describe()
'over 6 of 8 examples, 2 failed'
>>> figure(0.5, Counts(4, 0)), figure(0.0, Counts(3, 3)), figure(None, None)
('50.0% over 4 examples, none failed', 'n/a (0 of 3 examples answered, 3 failed)', 'n/a')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from funcgrad.core.run import Example, Result


@attrs.frozen
class Counts:
    """``n`` examples were run for a figure; ``failed`` of them failed (so ``n - failed`` were scored)."""

    n: int = attrs.field(validator=attrs.validators.ge(0))
    failed: int = attrs.field(default=0, validator=attrs.validators.ge(0))

    @property
    def answered(self) -> int:
        return self.n - self.failed

    def describe(self) -> str:
        """``over 6 of 8 examples, 2 failed`` (or ``over 8 examples, none failed``)."""
        if not self.failed:
            return f"over {self.n} example{'s' if self.n != 1 else ''}, none failed"
        return f"over {self.answered} of {self.n} examples, {self.failed} failed"

    def to_data(self) -> list[int]:
        return [self.n, self.failed]

    @classmethod
    def from_data(cls, data: Any) -> Counts | None:
        """The inverse of :meth:`to_data`; None for a missing (older) record.

        >>> Counts.from_data([8, 2]), Counts.from_data(None)
        (Counts(n=8, failed=2), None)
        """
        return None if data is None else cls(int(data[0]), int(data[1]))


def counts_of(results: Iterable[Result]) -> Counts:
    """The counts of a batch of results, failures included.

    >>> from funcgrad.core.run import Failure, Loss
    >>> from funcgrad.core.trace import Trace
    >>> ok = Result(Example("a", "q"), 1, Trace(), Loss(1.0))
    >>> bad = Result(Example("b", "q"), None, Trace(), None, Failure("engine", "500"))
    >>> counts_of([ok, bad, bad])
    Counts(n=3, failed=2)
    """
    results = list(results)
    return Counts(len(results), sum(r.failed for r in results))


def validation_counts(val: Sequence[Example], val_scores: Mapping[str, float]) -> Counts | None:
    """Counts behind the current validation score: every validation example, of which those without a
    per-example score (``val_scores`` holds the answered ones) failed. None without a validation split,
    or without per-example scores (a checkpoint older than them: at least one example of a batch is
    always answered, since ``max_failure_rate`` < 1).

    >>> validation_counts([Example("a", 1), Example("b", 2)], {"a": 1.0}), validation_counts([], {})
    (Counts(n=2, failed=1), None)
    """
    if not val or not val_scores:
        return None
    return Counts(len(val), sum(e.id not in val_scores for e in val))


def paired_means(new: Mapping[str, float], old: Mapping[str, float]) -> tuple[float, float, int]:
    """Means of per-example scores ``new`` and ``old`` over the examples both answered, and how many.

    A gate compares two states on the same examples: an example one of them failed on
    is left out of both means (it is never a score of 0). Without failures this is the
    plain means of both.

    >>> paired_means({"a": 1.0, "b": 0.0}, {"a": 0.0, "c": 1.0})
    (1.0, 0.0, 1)
    >>> paired_means({"a": 1.0}, {"b": 1.0})
    (0.0, 0.0, 0)
    """
    common = [k for k in new if k in old]
    if not common:
        return 0.0, 0.0, 0
    return sum(new[k] for k in common) / len(common), sum(old[k] for k in common) / len(common), len(common)


def figure(score: float | None, counts: Counts | None) -> str:
    """A score as a percentage with what it was computed over; ``n/a`` when nothing was answered."""
    if score is None:
        return "n/a"
    if counts is None:
        return f"{100 * score:.1f}%"
    if counts.answered == 0:
        return f"n/a (0 of {counts.n} examples answered, {counts.failed} failed)"
    return f"{100 * score:.1f}% {counts.describe()}"


def change(before: float | None, before_counts: Counts | None, after: float | None, after_counts: Counts | None) -> str:
    """``before -> after`` with what each was computed over (said once when both are over the same examples).

    >>> change(0.0, Counts(4), 1.0, Counts(4))
    '0.0% -> 100.0% (both over 4 examples, none failed)'
    >>> change(0.25, Counts(8, 2), 0.5, Counts(8))
    '25.0% over 6 of 8 examples, 2 failed -> 50.0% over 8 examples, none failed'
    """
    both = before_counts is not None and before_counts == after_counts and before_counts.answered > 0
    if both and before is not None and after is not None:
        return f"{100 * before:.1f}% -> {100 * after:.1f}% (both {before_counts.describe()})"
    return f"{figure(before, before_counts)} -> {figure(after, after_counts)}"


@attrs.frozen
class RunCounts:
    """The counts behind a run's headline figures (None: not run, or not recorded)."""

    initial_val: Counts | None = None
    val: Counts | None = None
    initial_test: Counts | None = None
    final_test: Counts | None = None


def run_counts(entries: Sequence[Mapping[str, Any]], fit_state: Any) -> RunCounts:
    """The :class:`RunCounts` of a run from its trace log (``read_traces`` entries) and final FitState.

    The initial evaluation is logged at step 0 (phases ``val`` and ``test``) and the
    final test at the last step; when that is step 0 too (a budget spent in step 1),
    the second run of the test examples is the final one. The current validation
    counts are those of the last step (or of the initial evaluation).

    >>> from funcgrad.core.run import Failure, Loss
    >>> from funcgrad.core.state import Param, PromptState
    >>> from funcgrad.core.trace import Trace
    >>> from funcgrad.training.fit import FitState
    >>> ok = Result(Example("a", "q"), 1, Trace(), Loss(1.0))
    >>> bad = Result(Example("b", "q"), None, Trace(), None, Failure("engine", "HTTP 500"))
    >>> entries = [{"step": 0, "phase": "val", "result": r} for r in (ok, bad)]
    >>> run_counts(entries, FitState(0, PromptState.of(a=Param("x")), {}, 1.0, 1.0, None)).val
    Counts(n=2, failed=1)
    """
    def runs(step: int, phase: str) -> list[list[Result]]:
        found = [e["result"] for e in entries if e["step"] == step and e["phase"] == phase]
        size = len({r.example.id for r in found})
        return [found[i : i + size] for i in range(0, len(found), size)] if size else []

    initial_val = runs(0, "val")
    initial_test = runs(0, "test")
    final_test = runs(fit_state.step, "test") if fit_state.final_test is not None else []
    if fit_state.step == 0:
        final_test = final_test[1:]
    last = fit_state.log[-1].val_counts if fit_state.log else None
    first_val = counts_of(initial_val[0]) if initial_val else None
    return RunCounts(
        initial_val=first_val,
        val=last if fit_state.log else first_val,
        initial_test=counts_of(initial_test[0]) if initial_test else None,
        final_test=counts_of(final_test[-1]) if final_test else None,
    )
