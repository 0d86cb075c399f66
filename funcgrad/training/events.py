"""Progress events of the training loop: one frozen value per kind, passed to ``fit(..., on_event=)``.

In the order a run sends them: :class:`InitialEvaluation`, :class:`InitialScores`
(skipped on resume), :class:`TrainingStarted`; per step, :class:`ExampleScored` for
every example of every batch, :class:`Proposing`, :class:`ProposalJudged` per
attempt, :class:`StepDone`; then :class:`FinalTest` and :class:`FitDone`. The three
events that begin a phase of the loop (:data:`PhaseEvent`) carry its ``label``.
``on_event`` may be called from worker threads (:class:`ExampleScored`).

>>> def on_event(event: FitEvent) -> None:
...     match event:
...         case Proposing(step, train):
...             print(f"{event.label} after a training score of {train}")
>>> on_event(Proposing(2, 0.5))
step 2: proposing after a training score of 0.5
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from funcgrad.training.records import Proposal, StepLog


@attrs.frozen
class InitialEvaluation:
    """The starting prompts are being scored on the validation and test splits."""

    @property
    def label(self) -> str:
        return "initial evaluation"


@attrs.frozen
class InitialScores:
    """The starting prompts' validation score and test score (None: no test split)."""

    val: float
    test: float | None


@attrs.frozen
class TrainingStarted:
    """The steps begin: ``step`` are done already (0, or the checkpoint's on resume), ``total`` at most."""

    step: int
    total: int


@attrs.frozen
class ExampleScored:
    """Example ``done`` of ``total`` in a batch finished; ``score`` is None when it failed.

    ``batch`` names the batch: ``train`` (the step's minibatch), ``rerun`` (it again,
    for a strategy), ``minibatch`` (a proposal on it), ``val`` (the validation split),
    ``strategy-eval`` (a strategy's validation minibatch) or ``test``.
    """

    batch: str
    done: int
    total: int
    score: float | None


@attrs.frozen
class Proposing:
    """Step ``step`` (from 1) scored ``train`` on its minibatch; the strategy is asked for proposals."""

    step: int
    train: float

    @property
    def label(self) -> str:
        return f"step {self.step}: proposing"


@attrs.frozen
class ProposalJudged:
    """Attempt ``attempt`` (from 0) of step ``step`` was judged: ``proposal`` holds the verdict and its reason."""

    step: int
    attempt: int
    proposal: Proposal


@attrs.frozen
class StepDone:
    """Step ``step`` of at most ``total`` ended (and was checkpointed); ``log`` is its record."""

    step: int
    total: int
    log: StepLog


@attrs.frozen
class FinalTest:
    """The final prompts are being scored on the test split."""

    @property
    def label(self) -> str:
        return "final test evaluation"


@attrs.frozen
class FitDone:
    """The run ended after ``step`` steps, with its test scores before and after (None: not scored)."""

    step: int
    initial_test: float | None
    final_test: float | None


FitEvent = InitialEvaluation | InitialScores | TrainingStarted | ExampleScored | Proposing | ProposalJudged | StepDone | FinalTest | FitDone
PhaseEvent = InitialEvaluation | Proposing | FinalTest
OnEvent = Callable[[FitEvent], None]
