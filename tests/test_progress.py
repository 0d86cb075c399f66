"""Progress display: step and phase from fit events and watched engine calls; heartbeat lines for logs; a rich bar on a terminal."""

import io
import time

from funcgrad import Request
from funcgrad.cli.main import main
from funcgrad.cli.progress import make_reporter
from funcgrad.engines.meter import UsageRow, UsageTable
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.engines.stub import StubServer
from funcgrad.training.events import (
    ExampleScored, FinalTest, FitDone, InitialScores, ProposalJudged, Proposing, StepDone, TrainingStarted,
)
from funcgrad.training.records import Proposal, StepLog
from train_fixtures import respond_body

USAGE = UsageTable((UsageRow("forward", "m", calls=7, prompt_tokens=100, completion_tokens=20),))


class Tty(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _log(step, val):
    return StepLog(step, ("e0",), 0.0, (), False, val)


def _req(role):
    return Request(messages=(("user", "q"),), role=role)


def test_non_tty_output_is_one_line_per_milestone_and_phase_change():
    out = io.StringIO()
    with make_reporter(title="t", stream=out, interval=None) as report:
        report(InitialScores(0.25, 0.5), USAGE)
        report(ExampleScored("val", 1, 4, 1.0), USAGE)
        report(ExampleScored("val", 2, 4, 1.0), USAGE)
        report(StepDone(1, 3, _log(1, 0.5)), USAGE)
        report(FitDone(3, 0.5, None), USAGE)
    assert out.getvalue().splitlines() == [
        "[t] initial: validation 25.0%, test 50.0%; 7 calls",
        "[t] initial evaluation validation: 0 calls done, examples 1/4; phase 0 s, total 0 s",
        "[t] step 1/3: validation 50.0%; 7 calls, 120 tokens",
        "[t] done at step 3: test 50.0% -> n/a",
    ]


def test_a_step_shows_each_phase_once_and_a_slow_call_as_a_steady_heartbeat():
    out, clock = io.StringIO(), Clock()
    reporter = make_reporter(title="t", stream=out, interval=30, clock=clock)
    task = reporter.watch(ScriptedEngine(lambda r: "x"))
    seen = []

    def critic_answer(request):                              # the backward call takes 95 s
        seen.append(request.role)
        for _ in range(3 if request.role == "backward" else 0):
            clock.now += 31.7
            reporter.tick()
        return "y"

    critic = reporter.watch(ScriptedEngine(critic_answer))
    with reporter as report:
        report(TrainingStarted(1, 4))
        for i in range(3):                                   # the training minibatch
            task.complete(_req("forward"))
            clock.now += 2
            report(ExampleScored("train", i + 1, 3, 0.0))
        report(Proposing(2, 0.0))
        critic.complete(_req("backward"))
        reporter.tick()                                      # nothing new within the interval: no line
        critic.complete(_req("optimizer"))
        task.complete(_req("validation"))                    # scoring the proposal
        critic.complete(_req("judge"))                       # an LLM loss: counted, not a phase of its own
        report(ExampleScored("minibatch", 1, 3, 1.0))
        clock.now += 30
        reporter.tick()                                      # 30 s later: a heartbeat
        report(ProposalJudged(2, 0, Proposal({"sys": "x"}, verdict="lost_minibatch", reason="lost on the training minibatch (0.3 < 0.5)")))
        report(StepDone(2, 4, _log(2, 0.5)))
        assert reporter.status.step_label == "step 3/4"
        report(StepDone(4, 4, _log(4, 0.5)))
        assert reporter.status.step_label == "after step 4/4"
        report(FinalTest())
    assert seen == ["backward", "optimizer", "judge"]
    assert out.getvalue().splitlines() == [
        "[t] training from step 1 to at most 4",
        "[t] step 2/4 forward: 0 calls done, 1 running (longest 0 s); phase 0 s, total 0 s",
        "[t] step 2/4 backward: 0 calls done, 1 running (longest 0 s); phase 0 s, total 6 s",
        "[t] step 2/4 backward: 0 calls done, 1 running (longest 31 s); phase 31 s, total 37 s",
        "[t] step 2/4 backward: 0 calls done, 1 running (longest 1m03s); phase 1m03s, total 1m09s",
        "[t] step 2/4 backward: 0 calls done, 1 running (longest 1m35s); phase 1m35s, total 1m41s",
        "[t] step 2/4 optimizer: 0 calls done, 1 running (longest 0 s); phase 0 s, total 1m41s",
        "[t] step 2/4 validation: 0 calls done, 1 running (longest 0 s); phase 0 s, total 1m41s",
        "[t] step 2/4 validation: 2 calls done, examples 1/3; phase 30 s, total 2m11s",
        "[t] step 2: proposal rejected: lost on the training minibatch (0.3 < 0.5)",
        "[t] step 2/4: validation 50.0%; 0 calls, 0 tokens",
        "[t] step 4/4: validation 50.0%; 0 calls, 0 tokens",
        "[t] final test test: 0 calls done; phase 0 s, total 2m11s",
    ]


def test_the_heartbeat_thread_speaks_during_a_slow_call_and_stops_with_the_block():
    out = io.StringIO()
    reporter = make_reporter(title="t", stream=out, interval=0.05)
    slow = reporter.watch(ScriptedEngine(lambda r: time.sleep(0.6) or "late"))
    with reporter:
        assert slow.complete(_req("backward")).text == "late"
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[t] initial evaluation backward: 0 calls done, 1 running")
    assert len(lines) >= 3 and all("backward" in line for line in lines)
    assert not reporter._thread.is_alive()


def test_quiet_prints_nothing_and_watches_nothing(capsys):
    engine = ScriptedEngine(lambda r: "x")
    with make_reporter(quiet=True, stream=Tty()) as report:
        report(StepDone(1, 3, _log(1, 0.5)), USAGE)
        assert report.watch(engine) is engine
    assert capsys.readouterr() == ("", "")


def test_a_terminal_gets_the_rich_bar_with_step_phase_and_counts():
    reporter = make_reporter(title="demo", stream=Tty())
    critic = reporter.watch(ScriptedEngine(lambda r: "x"))
    with reporter as report:
        report(TrainingStarted(0, 3), USAGE)
        report(StepDone(2, 3, _log(2, 0.5)), USAGE)
        task = reporter.progress.tasks[reporter.steps]
        assert (task.completed, task.total) == (2, 3)
        assert task.fields["info"] == "val 50.0% calls 7 tokens 120"
        critic.complete(_req("backward"))
        assert task.description == "demo: step 3/3 backward"
        assert reporter.progress.tasks[reporter.examples].fields["info"] == "1 done"


def test_funcgrad_optimize_in_a_log_names_every_phase(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    cfg = tmp_path / "config.toml"
    with StubServer(respond_body) as stub:
        cfg.write_text(
            '[task]\nname = "train_fixtures:tiny_task"\nn = 6\n[strategy]\nname = "train_fixtures:hint_strategy"\n'
            f'[engine]\nbase_url = "{stub.base_url}"\nmodel = "stub"\n[train]\nsteps = 1\nbatch_size = 1\n'
            '[run]\ndir = "run"\ncache = "cache"\n'
        )
        assert main(["optimize", str(cfg)]) == 0
    phases = [line.split(":")[0] for line in capsys.readouterr().err.splitlines() if " calls done" in line]
    assert phases == [
        "[tiny / hint] initial evaluation validation", "[tiny / hint] initial evaluation test",
        "[tiny / hint] step 1/1 forward", "[tiny / hint] step 1/1 optimizer", "[tiny / hint] step 1/1 validation",
        "[tiny / hint] final test test",
    ]
