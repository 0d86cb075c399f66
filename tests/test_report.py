"""report.md: each proposal's text as a diff against the value it would replace, with its verdict; loss warnings."""

import collections.abc

from hypothesis import given
from hypothesis import strategies as st

import funcgrad as fg
from funcgrad.engines.meter import Budget, MeteredEngine
from funcgrad.training.report import held_out_pairs, loss_warnings, report_markdown
from train_fixtures import hint_strategy, respond, tiny_task


def _fit(task, **kw):
    return fg.fit(task, hint_strategy(first_try_bad=True), engine=fg.ScriptedEngine(respond),
                  settings=fg.FitSettings(steps=2, batch_size=1, proposals_per_step=2), **kw)


def test_the_report_shows_every_proposal_as_a_diff_with_its_verdict():
    task = tiny_task()
    fs = _fit(task)
    report = report_markdown(fs, task.state, title="tiny", usage=None, wall_s=None)
    first, second = report.split("### Step 1, attempt 1: ")[1].split("### Step 1, attempt 2: ")
    assert first.startswith("rejected by validation\n\n- did not beat the validation score (0.000 <= 0.000)\n")
    assert "-Answer the question.\n+Answer.\n" in first
    assert second.startswith("accepted\n\n- beat the validation score (1.000 > 0.000)\n") and "-Answer the question.\n+Answer the question. Think carefully.\n" in second
    # step 2 starts from the accepted text: its (empty) proposal shows the strategy's reason, no diff
    step2 = report.split("### Step 2, attempt 1: ")[1].split("## Calls and tokens")[0]
    assert step2.startswith("no update\n\n- `instruction`: already careful\n") and "```diff" not in step2
    assert "## Warnings" not in report


def test_the_report_opens_with_the_paired_test_difference_and_the_selection_set():
    task = tiny_task()
    seen = []
    fs = _fit(task, log_results=lambda step, phase, results: seen.extend((step, phase, r) for r in results))
    lines = report_markdown(fs, task.state, title="tiny", usage=None, wall_s=None, traces=seen).splitlines()
    assert lines[2] == ("- test (held out, n = 4): 0.000 -> 1.000; Δ +100.0 points [+100.0, +100.0] (95 % bootstrap interval), "
                        "W/T/L 4/0/0, sign test p = 0.12, MDE: none (too few examples for the sign test to reach 5 %) (n = 4)")
    assert lines[3] == ("- validation (the selection set, n = 4): 0.000 -> 1.000; these examples chose the proposals, "
                        "so the gain on them is optimistic")
    # without the traces there is no pairing: the scores alone, never a made-up interval
    assert report_markdown(fs, task.state, title="tiny", usage=None, wall_s=None).splitlines()[2] == "- test: 0.000 -> 1.000"


def test_a_loss_that_never_sees_the_answer_is_warned_about():
    task = tiny_task()

    def broken_loss(output, example):                   # the first-hour mistake: outputs are not dicts
        if not isinstance(output, dict):
            return fg.Loss(0.0, "the pipeline produced no answer")
        return fg.Loss(1.0, "ok")

    def pipeline(prompts, x):
        return fg.fn("wrap")(lambda text: {"answer": text})(task.pipeline(prompts, x))

    broken = fg.Task("tiny", pipeline, task.state, broken_loss, task.train, task.val, task.test)
    seen = []
    fs = _fit(broken, log_results=lambda step, phase, results: seen.extend(results))
    assert all(isinstance(r.output, collections.abc.Mapping) and not isinstance(r.output, dict) for r in seen)
    (warning,) = loss_warnings(seen)
    assert warning.startswith(f"All {len(seen)} scored examples got score 0 and the same feedback 'the pipeline produced no answer'")
    assert "isinstance(x, collections.abc.Mapping)" in warning
    assert "## Warnings\n\n- All " in report_markdown(fs, task.state, title="t", usage=None, wall_s=None, results=seen)
    # the same loss written the recommended way scores the answers and gets no warning
    fixed = fg.Task("tiny", pipeline, task.state, lambda out, ex: fg.exact_match(out["answer"], ex) if isinstance(out, collections.abc.Mapping) else fg.Loss(0.0, "no answer"), task.train, task.val, task.test)
    seen.clear()
    _fit(fixed, log_results=lambda step, phase, results: seen.extend(results))
    assert loss_warnings(seen) == [] and any(r.loss.score == 1.0 for r in seen)


BROKEN_TASK = '''
import funcgrad as fg
from train_fixtures import tiny_task

def make_task():
    t = tiny_task()
    wrap = fg.fn("wrap")(lambda text: {"answer": text})
    loss = lambda out, ex: fg.Loss(1.0, "ok") if isinstance(out, dict) else fg.Loss(0.0, "no answer")
    return fg.Task("tiny", lambda p, x: wrap(t.pipeline(p, x)), t.state, loss, t.train, t.val, t.test)
'''


def test_funcgrad_evaluate_warns_about_a_loss_that_never_sees_the_answer(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from funcgrad.cli.main import main
    from funcgrad.engines.stub import StubServer
    from train_fixtures import respond_body

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    (tmp_path / "broken.py").write_text(BROKEN_TASK)
    with StubServer(respond_body) as stub:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[task]\nname = "broken:make_task"\n[strategy]\nname = "backprop"\n'
                       f'[engine]\nbase_url = "{stub.base_url}"\nmodel = "stub"\n[run]\ncache = "cache"\n')
        assert main(["evaluate", str(cfg), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "test: accuracy 0.0% on 4 examples" in out
    assert "funcgrad: warning: All 4 scored examples got score 0 and the same feedback 'no answer'" in err
    monkeypatch.delitem(__import__("sys").modules, "broken", raising=False)


_entries = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["test", "val", "train"]), st.sampled_from("abcd"),
                              st.sampled_from([0.0, 1.0])), max_size=20)


@given(_entries)
def test_held_out_pairs_are_the_first_and_last_test_result_of_each_example_tested_twice(entries):
    results = [(step, phase, fg.Result(fg.Example(ex, "q", "a"), n, fg.Trace((fg.Record(0, "x", "input"),), output=0), fg.Loss(score, "")))
               for n, (step, phase, ex, score) in enumerate(entries)]
    tests = [(ex, r) for _, phase, r in results for ex in [r.example.id] if phase == "test"]
    twice = list(dict.fromkeys(ex for ex, _ in tests if sum(1 for e, _ in tests if e == ex) > 1))
    pairs = held_out_pairs(results)
    assert [b.example.id for b, _ in pairs] == twice
    for b, a in pairs:
        same = [r for ex, r in tests if ex == b.example.id]
        assert (b.output, a.output) == (same[0].output, same[-1].output)


def test_attempts_of_a_step_the_budget_stopped_are_still_reported():
    # 12 answers: step 1's first attempt is rejected by validation, the second runs out of budget, so the step
    # never reaches the log; its recorded attempt must not vanish from the report ("No proposals were made")
    task, steps = tiny_task(), []
    engine = MeteredEngine(fg.ScriptedEngine(respond), Budget(max_calls=12))
    fs = fg.fit(task, hint_strategy(first_try_bad=True), engine=engine,
                settings=fg.FitSettings(steps=2, batch_size=1, proposals_per_step=2), log_step=steps.append)
    assert fs.step == 0 and fs.stopped.startswith("budget:") and [(s.step, s.attempt) for s in steps] == [(1, 0)]
    report = report_markdown(fs, task.state, title="tiny", usage=None, wall_s=None, steps=steps)
    assert "- rejected by validation: 1\n" in report and "No proposals were made." not in report
    heading, reason = report.split("### Step 1, attempt 1: ")[1].split("\n\n")[:2]
    assert heading == f"rejected by validation (the run stopped inside this step: {fs.stopped}; nothing it proposed was applied)"
    assert reason == f"- {steps[0].reason}" and steps[0].reason
