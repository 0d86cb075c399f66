"""Progress display for long work: a rich display on a terminal, plain lines in logs.

``make_reporter(quiet=..., title=...)`` returns a context manager that is also the
callback ``reporter(kind, data, usage)`` fed with :func:`funcgrad.training.fit.fit`
events. ``reporter.watch(engine)`` wraps an engine so the reporter also sees every
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

CRITIC_ROLES = ("backward", "optimizer")
# Request.role -> phase: fit relabels the pipeline calls of each phase (funcgrad.training.fit.PHASE_ROLES).
ROLE_PHASES = {"validation": "validation", "evaluation": "test", "backward": "backward", "optimizer": "optimizer"}
# fit's batch names (the "phase" of an "example" event) -> the phase shown
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

    async def acomplete(self, request: Request) -> Response:
        call_id = next(self._ids)
        self.on_call("start", request, call_id)
        try:
            return await self.inner.acomplete(request)
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

    def event(self, kind: str, data: dict) -> bool:
        with self.lock:
            if kind == "phase" and data.get("name") == "initial evaluation":
                self.step_label = "initial evaluation"
            elif kind == "phase" and "final test" in str(data.get("name", "")):
                self.step_label, self.expect = "final test", "test"
                return self._enter("test")
            elif kind in ("start", "step"):
                self.total = data.get("total", self.total)
                done = self.total is not None and data["step"] >= self.total
                self.step_label = f"after step {data['step']}/{self.total}" if done else f"step {data['step'] + 1}/{self.total}"
                self.expect = "forward"
            elif kind == "example":
                changed = self._enter(BATCH_PHASES.get(data["phase"], data["phase"]))
                self.examples = (data["done"], data["total"])
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

    def __call__(self, kind: str, data: dict, usage: Any = None) -> None:
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

    def __call__(self, kind, data, usage=None):
        if self.status.event(kind, data):
            self.changed()
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

    def __call__(self, kind, data, usage=None):
        if self.status.event(kind, data):
            self.changed()
        calls, tokens = _totals(usage)
        self.info = f"calls {calls} tokens {tokens}"
        if kind == "start":
            self.progress.update(self.steps, total=data["total"], completed=data["step"], info=self.info)
            self.changed()
        elif kind == "example":
            self.progress.update(
                self.examples, visible=True, total=data["total"], completed=data["done"],
                description=f"  {self.status.phase} ({data['phase']})", info=self.info,
            )
        elif kind == "eval":
            self.progress.console.print(f"initial: validation {_score(data['val'])}, test {_score(data['test'])}")
        elif kind == "proposal":
            verdict = "[green]accepted" if data["accepted"] else "[yellow]rejected"
            self.progress.console.print(f"step {data['step']}: proposal {verdict}[/]: {data['reason'][:100]}")
        elif kind == "step":
            self.info = f"val {_score(data['val'])} {self.info}"
            self.progress.update(self.steps, completed=data["step"], info=self.info)
            self.changed()
        elif kind == "done":
            self.progress.update(self.examples, visible=False)


def make_reporter(*, quiet: bool = False, title: str = "funcgrad", stream=None, interval: float | None = 30.0, clock=time.monotonic):
    """A progress reporter: quiet, plain lines (no TTY), or a rich display (TTY).

    ``interval`` is the heartbeat period of the plain lines in seconds (None: no
    heartbeat); ``clock`` is for tests.

    >>> with make_reporter(quiet=True) as report:
    ...     report("step", {"step": 1, "total": 2, "val": 0.5})
    """
    if quiet:
        return _Quiet()
    stream = stream or sys.stderr
    if not stream.isatty():
        return _Lines(title, stream, interval=interval, clock=clock)
    return _Bar(title, clock=clock)
