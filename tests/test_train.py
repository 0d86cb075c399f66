"""The training loop: acceptance, rejection feedback, budgets, checkpoints and resume."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from funcgrad.core.backward import Verdict
from funcgrad.core.stats import one_sided_sign_test, sign_test
from funcgrad.core.errors import CheckpointError
from funcgrad.engines.meter import Budget, MeteredEngine
from funcgrad.training.report import proposal_counts
from funcgrad.training.rundir import RunDir, read_steps, read_traces
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.training.events import (
    ExampleScored, FinalTest, FitDone, InitialEvaluation, InitialScores, ProposalJudged, Proposing, StepDone, TrainingStarted,
)
from funcgrad.training.fit import FitSettings, batch_ids, fit, total_steps
from train_fixtures import hint_strategy, respond, tiny_task


def test_fit_accepts_an_improving_proposal_and_reports_test_before_after():
    engine = ScriptedEngine(respond)
    out = fit(tiny_task(), hint_strategy(), engine=engine, settings=FitSettings(steps=3, batch_size=2))
    assert (out.initial_test, out.final_test) == (0.0, 1.0)
    assert out.state["instruction"].value == "Answer the question. Think carefully."
    assert [e.accepted for e in out.log] == [True, False]  # 4 train examples, batch 2: one epoch = 2 steps
    assert out.stopped == "done"
    assert engine.calls("optimizer") == 1


def test_rejected_proposals_are_fed_back_and_the_next_attempt_is_accepted():
    out = fit(tiny_task(), hint_strategy(first_try_bad=True), engine=ScriptedEngine(respond),
              settings=FitSettings(steps=1, batch_size=2, proposals_per_step=2))
    first, second = out.log[0].proposals
    assert first.accepted is False and first.reason.startswith("did not beat the validation score")
    assert second.accepted is True
    assert out.val_score == 1.0
    assert (first.verdict, second.verdict) == (Verdict.NO_VAL_GAIN, Verdict.ACCEPTED)
    assert proposal_counts(out) == {
        "accepted": 1, "rejected by minibatch": 0, "rejected by validation": 1, "stopped by a guard": 0, "no update": 0,
        "invalid": 0,
    }


def test_patience_stops_the_run():
    out = fit(tiny_task(), hint_strategy(), engine=ScriptedEngine(lambda r: "wrong"),
              settings=FitSettings(steps=10, epochs=5, batch_size=2, patience=2))
    assert out.step == 2 and out.stopped.startswith("patience")


def test_budget_stops_training_and_keeps_what_was_done():
    engine = MeteredEngine(ScriptedEngine(respond), Budget(max_calls=10))
    out = fit(tiny_task(), hint_strategy(), engine=engine, settings=FitSettings(steps=3, batch_size=2))
    assert out.stopped.startswith("budget")
    assert out.initial_test == 0.0
    report = engine.report()
    # the test evaluation (4 examples before, 4 after) is outside the budget; optimization spent exactly 10
    assert report.calls("evaluation") == 8 and out.final_test is not None
    assert report.calls() - report.calls("evaluation") == 10
    assert {row.role for row in report.rows} <= {"forward", "validation", "evaluation", "optimizer"}


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    train = tiny_task(30).train
    settings = FitSettings(batch_size=3, seed=7)
    first_epoch = [i for step in range(4) for i in batch_ids(train, settings, step)]
    assert sorted(first_epoch) == list(range(10))
    assert batch_ids(train, settings, 2) == batch_ids(train, settings, 2)
    assert total_steps(tiny_task(30), FitSettings(steps=100, epochs=2, batch_size=3)) == 8


def _fit_with_interrupt(tmp_path, interrupt_at):
    """Run, raising right after the checkpoint of step ``interrupt_at``; then resume from disk."""
    rd = RunDir(tmp_path)

    class Interrupt(Exception):
        pass

    def save(fs):
        rd.save_checkpoint(fs, fingerprint="fp")
        if interrupt_at is not None and fs.step == interrupt_at and not fs.stopped:
            raise Interrupt

    settings = FitSettings(steps=4, batch_size=1, proposals_per_step=2)
    kwargs = dict(engine=ScriptedEngine(respond), settings=settings, log_results=rd.log_results, log_step=rd.log_step)
    try:
        return fit(tiny_task(), hint_strategy(first_try_bad=True), checkpoint=save, **kwargs), rd
    except Interrupt:
        pass
    resumed, _ = rd.load_checkpoint(fingerprint="fp")
    out = fit(tiny_task(), hint_strategy(first_try_bad=True), resume_from=resumed,
              checkpoint=lambda fs: rd.save_checkpoint(fs, fingerprint="fp"), **kwargs)
    return out, rd


@pytest.mark.parametrize("interrupt_at", [0, 1, 2, 3])
def test_resume_after_interruption_at_every_step_boundary_matches_uninterrupted(tmp_path, interrupt_at):
    baseline, base_rd = _fit_with_interrupt(tmp_path / "base", None)
    resumed, rd = _fit_with_interrupt(tmp_path / "cut", interrupt_at)
    assert resumed.state == baseline.state
    assert resumed.strategy_state == baseline.strategy_state
    assert resumed.log == baseline.log
    assert (resumed.initial_test, resumed.final_test, resumed.step) == (baseline.initial_test, baseline.final_test, 4)
    phases = lambda r: [(t["step"], t["phase"], t["result"].example.id) for t in read_traces(r.traces_path)]
    assert phases(rd) == phases(base_rd)  # nothing lost, nothing repeated
    steps = read_steps(rd.path)
    assert steps == read_steps(base_rd.path)  # the recorded backward passes too
    assert [(s.step, s.attempt) for s in steps] == [(1, 0), (1, 1), (2, 0), (3, 0), (4, 0)]
    assert [s.verdict for s in steps][:2] == [Verdict.NO_VAL_GAIN, Verdict.ACCEPTED]
    assert [c.request.role for c in steps[1].calls] == ["optimizer"] and steps[0].calls == ()


def test_checkpoint_round_trips_a_fit_state(tmp_path):
    out = fit(tiny_task(), hint_strategy(), engine=ScriptedEngine(respond), settings=FitSettings(steps=2, batch_size=2))
    rd = RunDir(tmp_path)
    rd.save_checkpoint(out, fingerprint="abc", usage={"rows": []})
    back, usage = rd.load_checkpoint(fingerprint="abc")
    assert back == out and usage == {"rows": []}


def test_missing_corrupt_and_foreign_checkpoints_give_clear_errors(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        rd.load_checkpoint(fingerprint="x")
    rd.checkpoint_path.write_bytes(b'{"format": "funcgrad-checkpoint", "vers')
    with pytest.raises(CheckpointError, match="is corrupt"):
        rd.load_checkpoint(fingerprint="x")
    out = fit(tiny_task(), hint_strategy(), engine=ScriptedEngine(respond), settings=FitSettings(steps=1, batch_size=2))
    rd.save_checkpoint(out, fingerprint="x")
    with pytest.raises(CheckpointError, match="different configuration"):
        rd.load_checkpoint(fingerprint="y")
    text = rd.checkpoint_path.read_text().replace('"step"', '"stp"', 1)
    rd.checkpoint_path.write_text(text)
    with pytest.raises(CheckpointError, match="corrupt"):
        rd.load_checkpoint(fingerprint="x")


def test_same_seed_and_answers_give_the_same_run():
    run = lambda: fit(tiny_task(), hint_strategy(first_try_bad=True), engine=ScriptedEngine(respond),
                      settings=FitSettings(steps=3, batch_size=2, seed=3))
    assert run() == run()


def test_events_come_typed_and_in_order_and_agree_with_the_log():
    events = []
    out = fit(tiny_task(), hint_strategy(first_try_bad=True), engine=ScriptedEngine(respond),
              settings=FitSettings(steps=2, batch_size=2, proposals_per_step=2), on_event=events.append)
    steps = [e for e in events if not isinstance(e, ExampleScored)]
    assert [type(e) for e in steps] == [
        InitialEvaluation, InitialScores, TrainingStarted,
        Proposing, ProposalJudged, ProposalJudged, StepDone,   # step 1: the first try is rejected, the second accepted
        Proposing, ProposalJudged, StepDone,                   # step 2: no update (already careful)
        FinalTest, FitDone,
    ]
    assert steps[1] == InitialScores(out.initial_val, out.initial_test) and steps[2] == TrainingStarted(0, 2)
    assert [e.proposal for e in steps if isinstance(e, ProposalJudged)] == [p for log in out.log for p in log.proposals]
    assert [e.log for e in steps if isinstance(e, StepDone)] == list(out.log)
    assert [e.label for e in steps if isinstance(e, (InitialEvaluation, Proposing, FinalTest))] == [
        "initial evaluation", "step 1: proposing", "step 2: proposing", "final test evaluation"]
    assert steps[-1] == FitDone(2, out.initial_test, out.final_test)
    batches = [(e.batch, e.total) for e in events if isinstance(e, ExampleScored) and e.done == e.total]
    assert batches == [("val", 4), ("test", 4),                               # initial evaluation (4 val, 4 test)
                       ("train", 2), ("minibatch", 2), ("val", 4), ("minibatch", 2), ("val", 4),  # step 1, two attempts
                       ("train", 2), ("test", 4)]                             # step 2 (no update), final test
    assert sum(isinstance(e, ExampleScored) for e in events) == 4 + 4 + 2 + 2 * (2 + 4) + 2 + 4


@given(st.integers(0, 80), st.integers(0, 80))
def test_the_gates_one_sided_sign_test_is_the_binomial_tail(wins, losses):
    p = one_sided_sign_test(wins, losses)
    n = wins + losses
    assert p == (pytest.approx(scipy_stats.binomtest(wins, n, 0.5, alternative="greater").pvalue, rel=1e-9) if n else 1.0)
    assert sign_test(wins, losses) == pytest.approx(min(1.0, 2 * min(p, one_sided_sign_test(losses, wins))), rel=1e-9)
