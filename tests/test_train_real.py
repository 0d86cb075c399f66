"""The training loop end to end on the embedded local model (qwen2.5-coder-0.5b): one step."""

import pytest

from funcgrad.engines.meter import MeteredEngine
from funcgrad.strategies import backprop
from funcgrad.tasks import load_task
from funcgrad.training.fit import FitSettings, fit

pytestmark = pytest.mark.real_model


def test_one_real_step_of_fit_with_backprop(local_engine):
    task = load_task("object_counting", seed=3, n_train=3, n_val=2, n_test=3)
    engine = MeteredEngine(local_engine)
    events = []
    out = fit(
        task, backprop(max_chars=200, max_prompt_chars=2500, optimizer_max_tokens=160), engine=engine,
        settings=FitSettings(steps=1, batch_size=3, proposals_per_step=1), on_event=lambda k, d: events.append(k),
    )
    report = engine.report().by_role()
    step = out.log[0]
    failing = round(3 * (1 - step.train_score))
    print(f"\ntest {out.initial_test} -> {out.final_test}; calls {report}; proposal: {step.proposals[0].reason}")
    assert out.step == 1 and out.stopped == "done"
    assert 0.0 <= out.initial_test <= 1.0 and 0.0 <= out.final_test <= 1.0
    assert report.get("backward", 0) == failing  # one critique per failing example, none for correct ones
    assert report.get("optimizer", 0) <= 2  # at most one per trainable peer (instruction, format)
    # pipeline calls by phase: the training minibatch (3) is "forward"; the initial val (2) and, for
    # a proposal, its minibatch check (3) and possibly its validation (2) are "validation"; the
    # initial and final test (3 + 3) are "evaluation"
    assert report["forward"] == 3
    assert report["validation"] in range(2, 2 + 3 + 2 + 1)
    assert report["evaluation"] == 3 + 3
    proposal = step.proposals[0]
    if proposal.accepted:
        assert out.val_score > out.initial_val and out.state != task.state
    else:
        assert proposal.reason and out.state == task.state
    assert events[0] == "phase" and events[-1] == "done" and "step" in events
