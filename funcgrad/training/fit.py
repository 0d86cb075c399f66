"""The training loop: minibatches, strategy updates, two-stage validation, checkpoints.

:func:`fit` optimizes a :class:`~funcgrad.core.task.Task`'s prompts with any
:class:`~funcgrad.core.strategy.Strategy`. Each step draws the next training minibatch
(epochs of seeded shuffles), runs it, asks the strategy for up to
``proposals_per_step`` proposals, and accepts a proposal only if it does not lose on
the minibatch (stage 1) and beats the current validation score (stage 2); rejected
proposals are shown to the next attempt. After every step the whole loop state is
checkpointed atomically, so :func:`fit` with ``resume=True`` continues a killed run
with nothing lost and nothing repeated.

>>> from funcgrad import LLM, Param, PromptState, Example, Strategy, Update, exact_match
>>> from funcgrad.engines.scripted import ScriptedEngine
>>> node = LLM("answer", system=("sys",), user="{input}")
>>> data = tuple(Example(str(i), "q", "4") for i in range(4))
>>> task = Task("demo", lambda p, x: node(p, input=x), PromptState.of(sys=Param("Answer.")), exact_match, data, data, data)
>>> idle = Strategy("idle", lambda s: None, lambda results, state, s, **kw: (Update(), s))
>>> out = fit(task, idle, engine=ScriptedEngine(lambda r: "4"), settings=FitSettings(steps=2, batch_size=2))
>>> out.initial_test, out.final_test, out.step
(1.0, 1.0, 2)
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import orjson

from funcgrad.core.calls import Engine
from funcgrad.core.errors import BudgetExceeded, ConfigError, StateError
from funcgrad.core.run import Example, Result, mean_score, run_batch
from funcgrad.core.serialize import from_data, to_data
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.core.strategy import Attempt, StepContext, Strategy, Update
from funcgrad.core.task import Task
from funcgrad.core.values import freeze


def _positive(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{attribute.name}={value!r} must be a whole number >= 1")


@attrs.frozen
class FitSettings:
    """Knobs of :func:`fit`.

    ``steps``: optimization steps at most; ``epochs``: passes over the training set
    at most (the run stops at whichever comes first); ``batch_size``: training
    minibatch; ``proposals_per_step``: attempts per step before giving up;
    ``val_batch``: size of the validation minibatches strategies may draw through
    ``evaluate``; ``patience``: stop after this many steps without an accepted
    proposal (None = never); ``concurrency``: examples in flight (None = the engine's).
    """

    steps: int = attrs.field(default=8, validator=_positive)
    epochs: int = attrs.field(default=1, validator=_positive)
    batch_size: int = attrs.field(default=3, validator=_positive)
    proposals_per_step: int = attrs.field(default=2, validator=_positive)
    val_batch: int = attrs.field(default=5, validator=_positive)
    patience: int | None = attrs.field(default=None, validator=_positive)
    concurrency: int | None = attrs.field(default=None, validator=_positive)
    seed: int = 0


@attrs.frozen
class StepLog:
    """What happened in one step (a JSON value): the batch, its score, every proposal and the outcome."""

    step: int
    batch: tuple[str, ...]
    train_score: float
    proposals: Any  # tuple of FrozenDict: values, notes, minibatch, val, accepted, reason
    accepted: bool
    val_score: float


@attrs.frozen
class FitState:
    """Everything :func:`fit` needs to continue a run: the checkpoint's content.

    ``step`` counts completed steps. ``attempts`` are accepted values with their
    validation scores (shown to strategies as ``context.history``). ``stopped`` says
    why the run ended ("" while it is running).
    """

    step: int
    state: PromptState
    strategy_state: Any
    val_score: float
    initial_val: float
    initial_test: float | None
    final_test: float | None = None
    attempts: tuple[Attempt, ...] = ()
    steps_since_improvement: int = 0
    log: tuple[StepLog, ...] = ()
    stopped: str = ""


Event = Callable[[str, dict], None]


def _derive(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def batch_ids(train: Sequence[Example], settings: FitSettings, step: int) -> tuple[int, ...]:
    """Indices into ``train`` of the minibatch of ``step``: seeded shuffles per epoch.

    >>> batch_ids([Example(str(i), i) for i in range(4)], FitSettings(batch_size=2, seed=1), 0)
    (1, 2)
    """
    per_epoch = -(-len(train) // settings.batch_size)
    epoch, index = divmod(step, per_epoch)
    order = list(range(len(train)))
    random.Random(_derive(settings.seed, "epoch", epoch)).shuffle(order)
    return tuple(order[index * settings.batch_size : (index + 1) * settings.batch_size])


def total_steps(task: Task, settings: FitSettings) -> int:
    """How many steps a run takes at most: min(steps, epochs x batches per epoch)."""
    return min(settings.steps, settings.epochs * -(-len(task.train) // settings.batch_size))


class _Loop:
    """The effectful part of fit: engines, callbacks and the trace log."""

    def __init__(self, task, strategy, engine, critic, settings, on_event, log_results):
        self.task, self.strategy, self.settings = task, strategy, settings
        self.engine, self.critic = engine, critic
        self.emit = on_event or (lambda kind, data: None)
        self.log_results = log_results or (lambda step, phase, results: None)

    def batch(self, state: PromptState, examples, step: int, phase: str) -> tuple[Result, ...]:
        done = [0]

        def progress(result):
            done[0] += 1
            self.emit("example", {"phase": phase, "done": done[0], "total": len(examples), "score": result.loss.score})

        results = run_batch(
            self.task.pipeline, state, examples, engine=self.engine, loss=self.task.loss,
            concurrency=self.settings.concurrency, on_result=progress,
        )
        self.log_results(step, phase, results)
        return results

    def score(self, state, examples, step, phase) -> float:
        return mean_score(self.batch(state, examples, step, phase))

    def evaluate_fn(self, step: int):
        val = self.task.val or self.task.train

        def evaluate(state: PromptState, seed: int) -> float:
            k = min(self.settings.val_batch, len(val))
            picked = random.Random(_derive("val", seed)).sample(range(len(val)), k)
            return self.score(state, [val[i] for i in sorted(picked)], step, "strategy-eval")

        return evaluate


def start(task: Task, strategy: Strategy, loop: _Loop) -> FitState:
    loop.emit("phase", {"name": "initial evaluation"})
    val = loop.score(task.state, task.val, 0, "val") if task.val else 0.0
    test = loop.score(task.state, task.test, 0, "test") if task.test else None
    loop.emit("eval", {"step": 0, "val": val, "test": test})
    return FitState(0, task.state, freeze(strategy.init(task.state)), val, val, test)


def step_once(fs: FitState, loop: _Loop) -> FitState:
    """One optimization step (see module docs); returns the next FitState."""
    task, settings, step = loop.task, loop.settings, fs.step
    batch = [task.train[i] for i in batch_ids(task.train, settings, step)]
    results = loop.batch(fs.state, batch, step + 1, "train")
    train_score = mean_score(results)
    loop.emit("phase", {"name": f"step {step + 1}: proposing", "train": train_score})
    strategy_state, rejected, proposals = fs.strategy_state, [], []
    accepted_state, val_score = None, fs.val_score
    context_seed = _derive(settings.seed, "step", step)
    for attempt in range(settings.proposals_per_step):
        context = StepContext(
            step=step, seed=_derive(context_seed, attempt), rejected=tuple(rejected),
            history=tuple(sorted(fs.attempts, key=lambda a: -(a.score or 0.0))),
            steps_since_improvement=fs.steps_since_improvement,
            rerun=lambda s: loop.batch(s, batch, step + 1, "rerun"),
        )
        update, strategy_state = loop.strategy.update(
            results, fs.state, strategy_state, engine=loop.critic, evaluate=loop.evaluate_fn(step + 1), context=context
        )
        strategy_state = freeze(strategy_state, where=f"state of strategy {loop.strategy.name!r}")
        outcome = _judge(update, fs, results, batch, loop, step)
        candidate = outcome.pop("_state", None)
        proposals.append(outcome)
        loop.emit("proposal", {"step": step + 1, **outcome})
        if outcome["accepted"]:
            accepted_state, val_score = candidate, outcome["val"]
            break
        if not update.values:
            break
        rejected.append(Attempt(update.values, outcome["val"] if outcome["val"] is not None else outcome["minibatch"], False, outcome["reason"]))
    improved = accepted_state is not None
    log = StepLog(step + 1, tuple(e.id for e in batch), train_score, freeze(proposals), improved, val_score)
    attempts = fs.attempts + ((Attempt(accepted_state.values(), val_score, True, ""),) if improved else ())
    return attrs.evolve(
        fs, step=step + 1, state=accepted_state if improved else fs.state, strategy_state=strategy_state,
        val_score=val_score, attempts=attempts, log=fs.log + (log,),
        steps_since_improvement=0 if improved else fs.steps_since_improvement + 1,
    )


VERDICTS = ("accepted", "lost_minibatch", "no_val_gain", "no_update", "invalid")


def _judge(update: Update, fs: FitState, results, batch, loop: _Loop, step: int) -> dict:
    """Two-stage validation of one proposal; returns a JSON-able outcome dict.

    ``verdict`` is one of :data:`VERDICTS`; ``reason`` says it in words with the scores.
    """
    notes = [[n.param, n.status, n.reason] for n in update.notes]
    outcome = {"values": dict(update.values), "notes": notes, "minibatch": None, "val": None, "accepted": False,
               "verdict": "no_update", "reason": ""}
    if not update.values:
        outcome["reason"] = "no update: " + ("; ".join(n.reason for n in update.notes if n.reason) or "the strategy proposed nothing")
        return outcome
    try:
        candidate = apply_updates(fs.state, update.values)
    except StateError as exc:
        outcome.update(verdict="invalid", reason=f"invalid update: {exc}")
        return outcome
    before = mean_score(results)
    after = loop.score(candidate, batch, step + 1, "minibatch")
    outcome["minibatch"] = after
    if after < before:
        outcome.update(verdict="lost_minibatch", reason=f"lost on the training minibatch ({after:.3f} < {before:.3f})")
        return outcome
    val = loop.score(candidate, loop.task.val, step + 1, "val") if loop.task.val else after
    outcome["val"] = val
    if loop.task.val and val <= fs.val_score:
        outcome.update(verdict="no_val_gain", reason=f"did not beat the validation score ({val:.3f} <= {fs.val_score:.3f})")
        return outcome
    outcome.update(accepted=True, verdict="accepted", reason="accepted", _state=candidate)
    return outcome


def fit(
    task: Task,
    strategy: Strategy,
    *,
    engine: Engine,
    critic: Engine | None = None,
    settings: FitSettings = FitSettings(),
    resume_from: FitState | None = None,
    checkpoint: Callable[[FitState], None] | None = None,
    on_event: Event | None = None,
    log_results: Callable[[int, str, Sequence[Result]], None] | None = None,
) -> FitState:
    """Optimize ``task``'s prompts with ``strategy``; returns the final :class:`FitState`.

    ``engine`` runs the pipeline; ``critic`` (default: ``engine``) serves the
    strategy's backward/optimizer calls. ``checkpoint(fit_state)`` is called after
    the initial evaluation and after every step (write it to disk there);
    ``resume_from`` continues from such a state. ``on_event(kind, data)`` reports
    progress; ``log_results(step, phase, results)`` receives every batch of results
    (the CLI writes their traces to JSONL). A BudgetExceeded stops training with
    ``stopped="budget: ..."``; the final test evaluation is then attempted from what
    the budget (and the cache) still allows.
    """
    loop = _Loop(task, strategy, engine, critic or engine, settings, on_event, log_results)
    save = checkpoint or (lambda fs: None)
    fs = resume_from
    if fs is None:
        fs = start(task, strategy, loop)
        save(fs)
    limit = total_steps(task, settings)
    loop.emit("start", {"step": fs.step, "total": limit})
    while not fs.stopped and fs.step < limit:
        if settings.patience is not None and fs.steps_since_improvement >= settings.patience:
            fs = attrs.evolve(fs, stopped=f"patience: {settings.patience} steps without improvement")
            break
        try:
            fs = step_once(fs, loop)
        except BudgetExceeded as exc:
            fs = attrs.evolve(fs, stopped=f"budget: {exc}")
            break
        loop.emit("step", {"step": fs.step, "total": limit, "val": fs.val_score, "log": fs.log[-1]})
        save(fs)
    if fs.final_test is None and task.test:
        loop.emit("phase", {"name": "final test evaluation"})
        try:
            fs = attrs.evolve(fs, final_test=loop.score(fs.state, task.test, fs.step, "test"))
        except BudgetExceeded as exc:
            fs = attrs.evolve(fs, stopped=(fs.stopped + "; " if fs.stopped else "") + f"final test skipped: {exc}")
    fs = attrs.evolve(fs, stopped=fs.stopped or "done")
    save(fs)
    loop.emit("done", {"step": fs.step, "initial_test": fs.initial_test, "final_test": fs.final_test})
    return fs


def fit_state_to_data(fs: FitState) -> dict:
    """JSON-able data of a FitState (see :func:`fit_state_from_data`)."""
    return {
        "step": fs.step, "state": to_data(fs.state), "strategy_state": to_data(fs.strategy_state),
        "val_score": fs.val_score, "initial_val": fs.initial_val, "initial_test": fs.initial_test,
        "final_test": fs.final_test, "attempts": to_data(fs.attempts),
        "steps_since_improvement": fs.steps_since_improvement,
        "log": [to_data(dict(attrs.asdict(entry, recurse=False))) for entry in fs.log], "stopped": fs.stopped,
    }


def fit_state_from_data(data: dict) -> FitState:
    """Inverse of :func:`fit_state_to_data`."""
    log = tuple(StepLog(**from_data(entry)) for entry in data["log"])
    return FitState(
        step=data["step"], state=from_data(data["state"]), strategy_state=from_data(data["strategy_state"]),
        val_score=data["val_score"], initial_val=data["initial_val"], initial_test=data["initial_test"],
        final_test=data["final_test"], attempts=from_data(data["attempts"]),
        steps_since_improvement=data["steps_since_improvement"], log=log, stopped=data["stopped"],
    )


def settings_hash(settings: FitSettings, extra: Any = None) -> str:
    """A short fingerprint of the settings (and any extra JSON config) a checkpoint belongs to."""
    blob = orjson.dumps([attrs.asdict(settings), extra], option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()[:16]
