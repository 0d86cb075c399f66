"""Progress display: plain lines for logs, nothing when quiet, a rich bar on a terminal."""

import io

from funcgrad.engines.meter import UsageRow, UsageTable
from funcgrad.cli.progress import make_reporter

USAGE = UsageTable((UsageRow("forward", "m", calls=7, prompt_tokens=100, completion_tokens=20),))


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_non_tty_output_is_one_line_per_milestone():
    out = io.StringIO()
    with make_reporter(title="t", stream=out) as report:
        report("eval", {"step": 0, "val": 0.25, "test": 0.5}, USAGE)
        report("example", {"phase": "val", "done": 1, "total": 4, "score": 1.0}, USAGE)
        report("step", {"step": 1, "total": 3, "val": 0.5}, USAGE)
        report("done", {"step": 3, "initial_test": 0.5, "final_test": None}, USAGE)
    assert out.getvalue().splitlines() == [
        "[t] initial: validation 25.0%, test 50.0%; 7 calls",
        "[t] step 1/3: validation 50.0%; 7 calls, 120 tokens",
        "[t] done at step 3: test 50.0% -> n/a",
    ]


def test_quiet_prints_nothing(capsys):
    with make_reporter(quiet=True, stream=Tty()) as report:
        report("step", {"step": 1, "total": 3, "val": 0.5}, USAGE)
    assert capsys.readouterr() == ("", "")


def test_a_terminal_gets_the_rich_bar_with_step_and_counts():
    reporter = make_reporter(title="demo", stream=Tty())
    with reporter as report:
        report("start", {"step": 0, "total": 3}, USAGE)
        report("step", {"step": 2, "total": 3, "val": 0.5}, USAGE)
        task = reporter.progress.tasks[reporter.steps]
        assert (task.completed, task.total) == (2, 3)
        assert task.fields["info"] == "val 50.0% calls 7 tokens 120"
