"""Progress display for long work: a rich progress bar on a terminal, plain lines in logs.

``make_reporter(quiet=..., title=...)`` returns a context manager that is also the
callback ``reporter(kind, data, usage)`` fed with :func:`funcgrad.training.fit.fit` events.
On a TTY it shows step, accuracy, calls, tokens and ETA; without a TTY it prints one
line per evaluation and step to stderr; with ``quiet`` it prints nothing.
"""

from __future__ import annotations

import sys
from typing import Any


def _totals(usage) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    return usage.calls(), usage.tokens()


def _score(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


class _Quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self, kind: str, data: dict, usage: Any = None) -> None:
        return None


class _Lines(_Quiet):
    """One line per milestone, on stderr (logs stay readable)."""

    def __init__(self, title: str, stream=None):
        self.title, self.stream = title, stream or sys.stderr

    def _say(self, text: str) -> None:
        print(f"[{self.title}] {text}", file=self.stream, flush=True)

    def __call__(self, kind, data, usage=None):
        calls, tokens = _totals(usage)
        if kind == "eval":
            self._say(f"initial: validation {_score(data['val'])}, test {_score(data['test'])}; {calls} calls")
        elif kind == "start":
            self._say(f"training from step {data['step']} to at most {data['total']}")
        elif kind == "proposal":
            self._say(f"step {data['step']}: proposal {'accepted' if data['accepted'] else 'rejected'}: {data['reason'][:100]}")
        elif kind == "step":
            self._say(f"step {data['step']}/{data['total']}: validation {_score(data['val'])}; {calls} calls, {tokens} tokens")
        elif kind == "done":
            self._say(f"done at step {data['step']}: test {_score(data['initial_test'])} -> {_score(data['final_test'])}")


class _Bar(_Quiet):
    """A rich progress display: one bar for steps, one for the examples of the current batch."""

    def __init__(self, title: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.title = title
        self.steps = self.progress.add_task(title, total=None, info="")
        self.examples = self.progress.add_task("examples", total=None, info="", visible=False)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return False

    def __call__(self, kind, data, usage=None):
        calls, tokens = _totals(usage)
        info = f"calls {calls} tokens {tokens}"
        if kind == "start":
            self.progress.update(self.steps, total=data["total"], completed=data["step"], info=info)
        elif kind == "phase":
            self.progress.update(self.steps, description=f"{self.title}: {data['name']}", info=info)
        elif kind == "example":
            self.progress.update(
                self.examples, visible=True, total=data["total"], completed=data["done"],
                description=f"  {data['phase']}", info=info,
            )
        elif kind == "eval":
            self.progress.console.print(f"initial: validation {_score(data['val'])}, test {_score(data['test'])}")
        elif kind == "proposal":
            verdict = "[green]accepted" if data["accepted"] else "[yellow]rejected"
            self.progress.console.print(f"step {data['step']}: proposal {verdict}[/]: {data['reason'][:100]}")
        elif kind == "step":
            self.progress.update(self.steps, completed=data["step"], info=f"val {_score(data['val'])} {info}")
        elif kind == "done":
            self.progress.update(self.examples, visible=False)


def make_reporter(*, quiet: bool = False, title: str = "funcgrad", stream=None):
    """A progress reporter: quiet, plain lines (no TTY), or a rich bar (TTY).

    >>> with make_reporter(quiet=True) as report:
    ...     report("step", {"step": 1, "total": 2, "val": 0.5})
    """
    if quiet:
        return _Quiet()
    stream = stream or sys.stderr
    if not stream.isatty():
        return _Lines(title, stream)
    return _Bar(title)
