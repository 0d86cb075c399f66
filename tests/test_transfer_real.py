"""bootstrap_demos end to end on the embedded 0.5B model: the model's own correct training replies become its demos.

    python -m pytest tests/test_transfer_real.py -m real_model -q -s
"""

from __future__ import annotations

import pytest

import funcgrad
from funcgrad import Param, PromptState
from funcgrad.strategies import bootstrap_demos
from funcgrad.tasks import object_counting
from funcgrad.training.fit import FitSettings, fit

pytestmark = pytest.mark.real_model


def test_bootstrap_demos_on_the_embedded_model(local_engine):
    task = object_counting(seed=3, n_train=6, n_val=4, n_test=4)
    state = PromptState(params=task.state.params + (("count_demos", Param("", kind="demos")),),
                        groups={"count_system": ("count_instruction", "count_format", "count_demos")})
    task = funcgrad.Task(task.name, task.pipeline, state, task.loss, task.train, task.val, task.test)
    steps = []
    fs = fit(task, bootstrap_demos(k=2, n_sets=2), engine=local_engine,
             settings=FitSettings(steps=1, batch_size=6, val_batch=2, proposals_per_step=1), log_step=steps.append)
    pool = fs.strategy_state.demos
    print(f"\n{len(pool)} demonstrations harvested; verdict {steps[0].verdict.value}: {steps[0].reason}")
    train_ids = {e.id for e in task.train}
    assert {d.example_id for d in pool} <= train_ids
    proposed = [c.value for c in steps[0].candidates if c.value]
    if pool:  # the model got some training examples right: they are the demos, whole replies included
        (text,) = proposed
        print(text)
        assert text.startswith("Worked examples") and any(d.output in text for d in pool)
        assert not any(e.x in text for e in task.val + task.test)
    else:  # it got none right: a note, no empty demos text
        assert proposed == [] and "has not scored >= 1.0" in steps[0].reason
    assert funcgrad.check_step_trace(steps[0]) is steps[0]
