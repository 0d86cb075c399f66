"""The training loop end to end on the embedded local model (qwen2.5-coder-0.5b): one step (smoke tier).

Whatever the model answers, the loop's account of the step must agree with what it
recorded: every score it reports is the mean of the results it logged, the verdict
is the one the acceptance rule gives for those scores, the calls the meter counted
are the calls the pipeline and the step trace made, and the events come in order.
"""

from collections import Counter

import pytest

from funcgrad import apply_updates, mean_score
from funcgrad.core.backward import Verdict
from funcgrad.engines.meter import MeteredEngine
from funcgrad.strategies import backprop
from funcgrad.tasks import load_task
from funcgrad.training.events import (
    ExampleScored, FinalTest, FitDone, InitialEvaluation, InitialScores, ProposalJudged, Proposing, StepDone, TrainingStarted,
)
from funcgrad.training.fit import FitSettings, fit

pytestmark = [pytest.mark.real_model, pytest.mark.smoke]


def expected_verdict(proposal, train_score, initial_val, minibatch, val):
    """The verdict FitSettings(accept="mean") gives for these scores (no halving)."""
    if not proposal.values:
        return Verdict.NO_UPDATE
    if minibatch < train_score:
        return Verdict.LOST_MINIBATCH
    return Verdict.ACCEPTED if val > initial_val else Verdict.NO_VAL_GAIN


def test_one_real_step_of_fit_with_backprop(local_engine):
    task = load_task("object_counting", seed=3, n_train=3, n_val=2, n_test=3)
    engine = MeteredEngine(local_engine)
    events, logged, steps = [], [], []
    out = fit(
        task, backprop(max_chars=200, max_prompt_chars=2500, optimizer_max_tokens=160), engine=engine,
        settings=FitSettings(steps=1, batch_size=3, proposals_per_step=1), on_event=events.append,
        log_results=lambda step, phase, results: logged.append((step, phase, results)), log_step=steps.append,
    )
    calls = engine.report().by_role()
    (step,) = out.log
    (proposal,) = step.proposals
    print(f"\ntest {out.initial_test} -> {out.final_test}; calls {calls}; proposal: {proposal.reason}")
    batches = {(s, phase): results for s, phase, results in logged}
    assert out.step == 1 and out.stopped == "done"
    assert out.initial_val == mean_score(batches[0, "val"]) and out.initial_test == mean_score(batches[0, "test"])
    assert step.train_score == mean_score(batches[1, "train"])
    assert out.final_test == mean_score(batches[1, "test"])
    assert [r.example.id for r in batches[1, "train"]] == list(step.batch)
    minibatch = mean_score(batches[1, "minibatch"]) if (1, "minibatch") in batches else None
    val = mean_score(batches[1, "val"]) if (1, "val") in batches else None
    assert (proposal.minibatch, proposal.val) == (minibatch, val)
    assert proposal.verdict == expected_verdict(proposal, step.train_score, out.initial_val, minibatch, val)
    assert out.state == (apply_updates(task.state, proposal.values) if proposal.accepted else task.state)
    assert out.val_score == (val if proposal.accepted else out.initial_val)
    # the meter counts exactly the calls made: one backward call per failing example, the optimizer calls
    # the step trace recorded, and one pipeline call per example of every batch, under its phase's role
    failing = sum(r.loss.score < 1.0 for r in batches[1, "train"])
    (trace,) = steps
    assert calls.get("backward", 0) == failing
    assert Counter(c.request.role for c in trace.calls) == Counter({k: v for k, v in calls.items() if k in ("backward", "optimizer")})
    roles = {"train": "forward", "minibatch": "validation", "val": "validation", "test": "evaluation"}
    per_role = Counter()
    for (_, phase), results in batches.items():
        per_role[roles[phase]] += len(results)
    assert {role: calls[role] for role in per_role} == dict(per_role)
    kinds = [type(e) for e in events if not isinstance(e, ExampleScored)]
    assert kinds == [InitialEvaluation, InitialScores, TrainingStarted, Proposing, ProposalJudged, StepDone, FinalTest, FitDone]
    assert sum(isinstance(e, ExampleScored) for e in events) == sum(len(r) for r in batches.values())
    assert next(e for e in events if isinstance(e, ProposalJudged)).proposal == proposal
