"""What a training run keeps: each proposal as judged, each step, the whole loop state, and their JSON form.

:class:`FitState` is the checkpoint's content; :func:`fit_state_to_data` and
:func:`fit_state_from_data` are its JSON codec (the run directory writes it with
orjson).

>>> from funcgrad.core.state import Param, PromptState
>>> p = Proposal({"sys": "Count."}, verdict="accepted", reason="beat the validation score (1.000 > 0.500)")
>>> fs = FitState(1, PromptState.of(sys=Param("Count.")), None, 1.0, 0.5, None, log=(StepLog(1, ("e0",), 0.0, (p,), True, 1.0),))
>>> fit_state_from_data(fit_state_to_data(fs)) == fs
True
"""

from __future__ import annotations

from typing import Any

import attrs

from funcgrad.core.backward import Verdict
from funcgrad.core.serialize import from_data, to_data
from funcgrad.core.state import PromptState
from funcgrad.core.strategy import Attempt, Note
from funcgrad.core.values import FrozenDict


@attrs.frozen
class Proposal:
    """One attempt of a step as the loop judged it (a JSON value).

    ``values``: proposed text per param; ``notes``: the strategy's notes;
    ``minibatch``/``val``: scores of the two validation stages (None = not reached);
    ``verdict``: a :class:`~funcgrad.core.backward.Verdict`; ``reason`` says it in words.

    >>> Proposal({"sys": "x"}, verdict="accepted").accepted
    True
    """

    values: FrozenDict = attrs.field(factory=FrozenDict, converter=lambda v: FrozenDict({str(k): str(x) for k, x in dict(v).items()}))
    notes: tuple[Note, ...] = attrs.field(default=(), converter=tuple)
    minibatch: float | None = None
    val: float | None = None
    verdict: Verdict = attrs.field(default=Verdict.NO_UPDATE, converter=Verdict)
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED


@attrs.frozen
class StepLog:
    """What happened in one step (a JSON value): the batch, its score, every proposal and the outcome."""

    step: int
    batch: tuple[str, ...] = attrs.field(converter=tuple)
    train_score: float
    proposals: tuple[Proposal, ...] = attrs.field(converter=tuple)
    accepted: bool
    val_score: float


@attrs.frozen
class FitState:
    """Everything :func:`~funcgrad.training.fit.fit` needs to continue a run: the checkpoint's content.

    ``step`` counts completed steps. ``attempts`` are accepted values with their
    validation scores (shown to strategies as ``context.history``). ``stopped`` says
    why the run ended ("" while it is running). ``val_scores``: the current state's
    score on each validation example (by id), for the paired acceptance rules.
    """

    step: int
    state: PromptState
    strategy_state: Any
    val_score: float
    initial_val: float
    initial_test: float | None
    final_test: float | None = None
    attempts: tuple[Attempt, ...] = ()
    steps_since_improvement: int = 0
    log: tuple[StepLog, ...] = ()
    stopped: str = ""
    val_scores: FrozenDict = attrs.field(factory=FrozenDict, converter=lambda v: FrozenDict({str(k): float(x) for k, x in dict(v).items()}))


def fit_state_to_data(fs: FitState) -> dict:
    """JSON-able data of a FitState (see :func:`fit_state_from_data`)."""
    return {
        "step": fs.step, "state": to_data(fs.state), "strategy_state": to_data(fs.strategy_state),
        "val_score": fs.val_score, "initial_val": fs.initial_val, "initial_test": fs.initial_test,
        "final_test": fs.final_test, "attempts": to_data(fs.attempts),
        "steps_since_improvement": fs.steps_since_improvement,
        "log": [_step_log_data(entry) for entry in fs.log], "stopped": fs.stopped, "val_scores": dict(fs.val_scores),
    }


def _step_log_data(entry: StepLog) -> dict:
    proposals = [{"values": dict(p.values), "notes": to_data(p.notes), "minibatch": p.minibatch, "val": p.val,
                  "verdict": p.verdict.value, "reason": p.reason} for p in entry.proposals]
    return {"step": entry.step, "batch": list(entry.batch), "train_score": entry.train_score, "proposals": proposals,
            "accepted": entry.accepted, "val_score": entry.val_score}


def _step_log_from(data: dict) -> StepLog:
    proposals = tuple(Proposal(p["values"], from_data(p["notes"]), p["minibatch"], p["val"], p["verdict"], p["reason"])
                      for p in data["proposals"])
    return StepLog(data["step"], data["batch"], data["train_score"], proposals, data["accepted"], data["val_score"])


def fit_state_from_data(data: dict) -> FitState:
    """Inverse of :func:`fit_state_to_data`."""
    log = tuple(_step_log_from(entry) for entry in data["log"])
    return FitState(
        step=data["step"], state=from_data(data["state"]), strategy_state=from_data(data["strategy_state"]),
        val_score=data["val_score"], initial_val=data["initial_val"], initial_test=data["initial_test"],
        final_test=data["final_test"], attempts=from_data(data["attempts"]),
        steps_since_improvement=data["steps_since_improvement"], log=log, stopped=data["stopped"],
        val_scores=data.get("val_scores", {}),
    )
