"""Progress display for long work: a rich display on a terminal, plain lines in logs.

``make_reporter(quiet=..., title=...)`` returns a context manager that is also the
callback ``reporter(event, usage)`` fed with :func:`funcgrad.training.fit.fit`'s
progress events (:mod:`funcgrad.training.events`). ``reporter.watch(engine)`` wraps an engine so the reporter also sees every
model call start and end; from both it knows the current *step* and *phase*:

* ``forward`` — the training minibatch runs on the current prompts,
* ``backward`` / ``optimizer`` — the strategy's critic calls,
* ``validation`` — a proposal is scored (minibatch, validation set, strategy checks),
* ``test`` — the initial or final test evaluation.

The phase of a call is its ``Request.role`` (fit labels the pipeline calls of each
phase: ``validation``, ``evaluation`` for the test set); a plain ``forward`` call is
the training minibatch, or a rerun of it after the critic. Judge calls (an LLM
loss) belong to the phase they score in.

Without a terminal (logs, CI, ``nohup``) it prints to stderr one line per phase
change and, while a phase lasts, one line every ``interval`` seconds (30 by default)
that names the slowest call in flight, so a 10-minute backward call shows as a
steady heartbeat, not as silence::

    [t] step 2/4 backward: 1 call done, 1 running (longest 95 s); phase 2m05s, total 14m10s

On a terminal the live display shows the same step, phase and counts; ``quiet``
prints nothing.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from funcgrad.core.calls import Request, Response
from funcgrad.training.events import (
    ExampleScored, FinalTest, FitDone, FitEvent, InitialEvaluation, InitialScores, ProposalJudged, StepDone, TrainingStarted,
)

CRITIC_ROLES = ("backward", "optimizer")
# Request.role -> phase: fit relabels the pipeline calls of each phase (funcgrad.training.fit.PHASE_ROLES).
ROLE_PHASES = {"validation": "validation", "evaluation": "test", "backward": "backward", "optimizer": "optimizer"}
# fit's batch names (ExampleScored.batch) -> the phase shown
BATCH_PHASES = {
    "train": "forward", "rerun": "forward", "minibatch": "validation", "val": "validation",
    "strategy-eval": "validation", "test": "test",
}


def _totals(usage) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    return usage.calls(), usage.tokens()


def _score(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _dur(seconds: float) -> str:
    """``42 s``, ``2m05s``, ``1h03m``.

    >>> _dur(42.4), _dur(125), _dur(3790)
    ('42 s', '2m05s', '1h03m')
    """
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class WatchedEngine:
    """An engine that tells ``on_call(event, request, call_id)`` when each call starts and ends.

    ``event`` is ``"start"`` or ``"end"`` (also after a failure). Everything else
    (``model``, ``concurrency``, ``report``...) is the inner engine's.

    >>> from funcgrad.engines.scripted import ScriptedEngine
    >>> seen = []
    >>> engine = WatchedEngine(ScriptedEngine(lambda r: "4"), lambda e, r, i: seen.append((e, r.role)))
    >>> engine.complete(Request(messages=(("user", "2+2?"),))).text, seen
    ('4', [('start', 'forward'), ('end', 'forward')])
    """

    def __init__(self, inner: Any, on_call: Callable[[str, Request, int], None]):
        self.inner, self.on_call = inner, on_call
        self._ids = itertools.count()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"WatchedEngine({self.inner!r})"

    def complete(self, request: Request) -> Response:
        call_id = next(self._ids)
        self.on_call("start", request, call_id)
        try:
            return self.inner.complete(request)
        finally:
            self.on_call("end", request, call_id)


class Status:
    """Where a run is: step, phase, calls done and in flight, examples done, times.

    Fed by :meth:`event` (fit's events) and :meth:`call` (engine calls); both return
    True when the phase changed. Thread-safe; ``clock`` is injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.started = clock()
        self.step_label = "initial evaluation"
        self.total: int | None = None
        self.phase = ""
        self.expect = "forward"  # the phase a plain (forward-role) pipeline call starts
        self.phase_started = self.started
        self.calls_done = 0
        self.running: dict[tuple[int, int], float] = {}
        self.examples: tuple[int, int] | None = None

    def _enter(self, phase: str) -> bool:
        if phase == self.phase:
            return False
        self.phase, self.phase_started, self.calls_done, self.examples = phase, self.clock(), 0, None
        return True

    def event(self, event: FitEvent) -> bool:
        with self.lock:
            match event:
                case InitialEvaluation():
                    self.step_label = "initial evaluation"
                case FinalTest():
                    self.step_label, self.expect = "final test", "test"
                    return self._enter("test")
                case TrainingStarted(step, total) | StepDone(step, total):
                    self.total = total
                    self.step_label = f"after step {step}/{total}" if step >= total else f"step {step + 1}/{total}"
                    self.expect = "forward"
                case ExampleScored(batch, done, total):
                    changed = self._enter(BATCH_PHASES[batch])
                    self.examples = (done, total)
                    return changed
            return False

    def call(self, event: str, request: Request, call_id: int, source: int = 0) -> bool:
        with self.lock:
            key = (source, call_id)
            if event == "end":
                if self.running.pop(key, None) is not None:
                    self.calls_done += 1
                return False
            self.running[key] = self.clock()
            if request.role in ROLE_PHASES:
                return self._enter(ROLE_PHASES[request.role])
            if request.role == "forward" and (self.phase in CRITIC_ROLES or not self.phase):
                return self._enter(self.expect)
            return False

    def line(self) -> str:
        """``step 2/4 backward: 1 call done, 1 running (longest 95 s); phase 2m05s, total 14m10s``."""
        with self.lock:
            now = self.clock()
            parts = [f"{self.calls_done} call{'' if self.calls_done == 1 else 's'} done"]
            if self.running:
                parts[-1] += f", {len(self.running)} running (longest {_dur(now - min(self.running.values()))})"
            if self.examples:
                parts.append(f"examples {self.examples[0]}/{self.examples[1]}")
            timing = f"phase {_dur(now - self.phase_started)}, total {_dur(now - self.started)}"
            return f"{self.step_label} {self.phase or 'starting'}: {', '.join(parts)}; {timing}"


class _Quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self, event: FitEvent, usage: Any = None) -> None:
        return None

    def watch(self, engine: Any) -> Any:
        """``engine`` itself: a quiet reporter watches nothing."""
        return engine


class _Watching(_Quiet):
    """Shared by both displays: a Status fed by events and by the calls of watched engines."""

    def __init__(self, clock: Callable[[], float]):
        self.status = Status(clock)
        self._sources = itertools.count()

    def watch(self, engine: Any) -> WatchedEngine:
        """``engine`` wrapped so this reporter sees each of its calls start and end."""
        source = next(self._sources)
        return WatchedEngine(engine, lambda event, request, call_id: self._call(event, request, call_id, source))

    def _call(self, event, request, call_id, source) -> None:
        if self.status.call(event, request, call_id, source):
            self.changed()

    def changed(self) -> None:
        """The phase changed (or a heartbeat is due): show it."""


class _Lines(_Watching):
    """Plain lines on stderr: milestones, each phase change, and a heartbeat every ``interval`` s."""

    def __init__(self, title: str, stream=None, *, interval: float | None = 30.0, clock=time.monotonic):
        super().__init__(clock)
        self.title, self.stream, self.interval = title, stream or sys.stderr, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said = clock()

    def __enter__(self):
        if self.interval:
            self._thread = threading.Thread(target=self._beat, name="funcgrad-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return False

    def _beat(self) -> None:
        while not self._stop.wait(min(self.interval, 5.0)):
            self.tick()

    def tick(self) -> None:
        """Print the status line if nothing was printed for ``interval`` seconds and a phase is under way."""
        if self.status.phase and self.status.clock() - self._said >= self.interval:
            self.changed()

    def _say(self, text: str) -> None:
        self._said = self.status.clock()
        print(f"[{self.title}] {text}", file=self.stream, flush=True)

    def changed(self) -> None:
        self._say(self.status.line())

    def __call__(self, event: FitEvent, usage=None):
        if self.status.event(event):
            self.changed()
        calls, tokens = _totals(usage)
        match event:
            case InitialScores(val, test):
                self._say(f"initial: validation {_score(val)}, test {_score(test)}; {calls} calls")
            case TrainingStarted(step, total):
                self._say(f"training from step {step} to at most {total}")
            case ProposalJudged(step, _, proposal):
                self._say(f"step {step}: proposal {'accepted' if proposal.accepted else 'rejected'}: {proposal.reason[:100]}")
            case StepDone(step, total, log):
                self._say(f"step {step}/{total}: validation {_score(log.val_score)}; {calls} calls, {tokens} tokens")
            case FitDone(step, initial_test, final_test):
                self._say(f"done at step {step}: test {_score(initial_test)} -> {_score(final_test)}")


class _Bar(_Watching):
    """A rich live display: a bar for steps (with the current phase), one for the examples of the current batch."""

    def __init__(self, title: str, *, clock=time.monotonic):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        super().__init__(clock)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.title = title
        self.info = ""
        self.steps = self.progress.add_task(title, total=None, info="")
        self.examples = self.progress.add_task("examples", total=None, info="", visible=False)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return False

    def changed(self) -> None:
        s = self.status
        self.progress.update(self.steps, description=f"{self.title}: {s.step_label} {s.phase}", info=self.info)

    def _call(self, event, request, call_id, source) -> None:
        super()._call(event, request, call_id, source)
        s = self.status
        running = f", {len(s.running)} running" if s.running else ""
        self.progress.update(self.examples, visible=True, description=f"  {s.phase} calls", info=f"{s.calls_done} done{running}")

    def __call__(self, event: FitEvent, usage=None):
        if self.status.event(event):
            self.changed()
        calls, tokens = _totals(usage)
        self.info = f"calls {calls} tokens {tokens}"
        match event:
            case TrainingStarted(step, total):
                self.progress.update(self.steps, total=total, completed=step, info=self.info)
                self.changed()
            case ExampleScored(batch, done, total):
                self.progress.update(
                    self.examples, visible=True, total=total, completed=done,
                    description=f"  {self.status.phase} ({batch})", info=self.info,
                )
            case InitialScores(val, test):
                self.progress.console.print(f"initial: validation {_score(val)}, test {_score(test)}")
            case ProposalJudged(step, _, proposal):
                verdict = "[green]accepted" if proposal.accepted else "[yellow]rejected"
                self.progress.console.print(f"step {step}: proposal {verdict}[/]: {proposal.reason[:100]}")
            case StepDone(step, _, log):
                self.info = f"val {_score(log.val_score)} {self.info}"
                self.progress.update(self.steps, completed=step, info=self.info)
                self.changed()
            case FitDone():
                self.progress.update(self.examples, visible=False)


def make_reporter(*, quiet: bool = False, title: str = "funcgrad", stream=None, interval: float | None = 30.0, clock=time.monotonic):
    """A progress reporter: quiet, plain lines (no TTY), or a rich display (TTY).

    ``interval`` is the heartbeat period of the plain lines in seconds (None: no
    heartbeat); ``clock`` is for tests.

    >>> with make_reporter(quiet=True) as report:
    ...     report(TrainingStarted(0, 2))
    """
    if quiet:
        return _Quiet()
    stream = stream or sys.stderr
    if not stream.isatty():
        return _Lines(title, stream, interval=interval, clock=clock)
    return _Bar(title, clock=clock)
