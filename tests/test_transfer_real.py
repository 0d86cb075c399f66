"""bootstrap_demos and search end to end on the embedded 0.5B model: the model's own correct training replies
become its demos; a search scores every candidate on paired, nested minibatches.

Smoke tier: whichever examples the model gets right, the harvest must be exactly
their replies, and the proposal must be drawn from it.

    python -m pytest tests/test_transfer_real.py -m real_model -q -s
"""

from __future__ import annotations

import itertools

import pytest

import funcgrad
from funcgrad.strategies import bootstrap_demos, render_demos, search
from funcgrad.strategies.prompts import demos as demo_prompts
from funcgrad.tasks import object_counting
from funcgrad.tasks.parsing import integer_answer
from funcgrad.training.fit import FitSettings, fit

pytestmark = [pytest.mark.real_model, pytest.mark.smoke]


def test_bootstrap_demos_on_the_embedded_model(local_engine):
    task = object_counting(seed=3, n_train=6, n_val=4, n_test=4)  # the built-in task has an empty count_demos peer
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


def _correct(demo, task) -> bool:
    """Whether a demo's reply, parsed as the pipeline parses it, is the right count of its training example."""
    example = next(e for e in task.train if e.id == demo.example_id)
    return task.loss(integer_answer(demo.output), example).score >= 1.0


def test_a_training_split_scan_keeps_only_correct_replies_and_never_the_hint(local_engine):
    """Plain runs, one resample round and rationalization over 8 training examples on the 0.5B model."""
    task = object_counting(seed=4, n_train=8, n_val=4, n_test=2)
    steps = []
    strategy = bootstrap_demos(k=2, n_sets=2, scope="train", max_rounds=1, rationalize=True)
    fs = fit(task, strategy, engine=local_engine, log_step=steps.append,
             settings=FitSettings(steps=1, batch_size=2, val_batch=2, proposals_per_step=1))
    pool, events = fs.strategy_state.demos, fs.strategy_state.stats.events
    print(f"\n{len(pool)} demos: {[(d.example_id, d.source) for d in pool]}; events {dict(events)}")
    train_ids = {e.id for e in task.train}
    assert {d.example_id for d in pool} <= train_ids
    assert all(d.source in ("plain", "resample 1", "rationalized") for d in pool)
    assert all(_correct(d, task) for d in pool)  # every demo is a reply that reached its example's answer
    assert not any(word in (d.input + d.output).lower() for d in pool for word in demo_prompts.HINT_ECHOES)
    reruns = [e for e in steps[0].effects if e.kind == "rerun"]
    assert reruns[0].examples == tuple(e.id for e in task.train)  # the whole split, once
    assert all(set(e.examples) <= train_ids for e in reruns)
    failed_first = len(task.train) - sum(d.source == "plain" for d in pool)
    assert events["scanned"] == len(task.train) and events["resampled"] == failed_first


def test_search_on_the_embedded_model_scores_every_candidate_on_nested_minibatches(local_engine):
    task = object_counting(seed=5, n_train=4, n_val=8, n_test=2)
    steps = []
    strategy = search(patterns=("step_by_step",), proposals=1, max_train=4, max_rounds=0, rationalize=False,
                      max_candidates=4, minibatch=2, rungs=2)
    fs = fit(task, strategy, engine=local_engine, log_step=steps.append,
             settings=FitSettings(steps=1, batch_size=2, proposals_per_step=1, accept="sign", alpha=0.5))
    (proposal,) = fs.log[0].proposals
    table = [n.reason for n in proposal.notes if n.reason.startswith("candidate ")]
    print("\n" + "\n".join(table) + f"\n{proposal.verdict.value}: {proposal.reason}")
    assert table and table[0].startswith("candidate 0: the current prompts: ")
    assert all(" on 2" in line for line in table)  # every candidate was scored on the first rung
    rounds = {}
    for e in steps[0].effects:
        if e.kind == "validate":
            rounds.setdefault(e.round, set()).add(e.examples)
    shared = [next(iter(x)) for _, x in sorted(rounds.items())]
    assert all(len(x) == 1 for x in rounds.values()) and set(shared[0]) < set(shared[-1])  # paired and nested
    if proposal.values:  # the winner is one of the combinations the table lists, and the sign rule judged it
        assert proposal.verdict.value in ("accepted", "no_val_gain", "lost_minibatch")
        assert set(proposal.values) <= {"count_instruction", "count_format", "count_demos"}
