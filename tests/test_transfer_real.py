"""bootstrap_demos end to end on the embedded 0.5B model: the model's own correct training replies become its demos.

Smoke tier: whichever examples the model gets right, the harvest must be exactly
their replies, and the proposal must be drawn from it.

    python -m pytest tests/test_transfer_real.py -m real_model -q -s
"""

from __future__ import annotations

import itertools

import pytest

import funcgrad
from funcgrad import Param, PromptState
from funcgrad.strategies import bootstrap_demos, render_demos
from funcgrad.tasks import object_counting
from funcgrad.training.fit import FitSettings, fit

pytestmark = [pytest.mark.real_model, pytest.mark.smoke]


def test_bootstrap_demos_on_the_embedded_model(local_engine):
    task = object_counting(seed=3, n_train=6, n_val=4, n_test=4)
    state = PromptState(params=task.state.params + (("count_demos", Param("", kind="demos")),),
                        groups={"count_system": ("count_instruction", "count_format", "count_demos")})
    task = funcgrad.Task(task.name, task.pipeline, state, task.loss, task.train, task.val, task.test)
    steps, train = [], []
    log = lambda step, phase, results: train.extend(results) if phase == "train" else None  # noqa: E731
    fs = fit(task, bootstrap_demos(k=2, n_sets=2), engine=local_engine, log_results=log,
             settings=FitSettings(steps=1, batch_size=6, val_batch=2, proposals_per_step=1), log_step=steps.append)
    pool = fs.strategy_state.demos
    print(f"\n{len(pool)} demonstrations harvested; verdict {steps[0].verdict.value}: {steps[0].reason}")
    # the harvest is the count node's whole reply on every training example scored 1.0, in order; nothing else
    assert len(train) == 6
    expected = [(r.example.id, str(rec.output).strip()) for r in train if r.loss.score >= 1.0
                for rec in r.trace.records if rec.kind == "llm" and "count_demos" in rec.params]
    assert [(d.example_id, d.output) for d in pool] == expected
    proposed = [c.value for c in steps[0].candidates if c.value]
    drawn = [render_demos(list(ds)) for ds in itertools.permutations(pool, min(2, len(pool)))] if pool else []
    assert len(proposed) == (1 if pool else 0)
    assert all(text in drawn for text in proposed)  # k = 2 demos of the pool (fewer if it holds fewer), as rendered
    assert all(not any(e.x in text for e in task.val + task.test) for text in proposed)
    assert pool or "has not scored >= 1.0" in steps[0].reason
    assert funcgrad.check_step_trace(steps[0]) is steps[0]
