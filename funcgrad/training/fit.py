"""The training loop: minibatches, strategy updates, two-stage validation, checkpoints.

:func:`fit` optimizes a :class:`~funcgrad.core.task.Task`'s prompts with any
:class:`~funcgrad.core.strategy.Strategy`. Each step draws the next training minibatch
(epochs of seeded shuffles), runs it, asks the strategy for up to
``proposals_per_step`` proposals, and accepts a proposal only if it does not lose on
the minibatch (stage 1) and beats the current validation score (stage 2); rejected
proposals are shown to the next attempt. The strategy's effect program is performed
by :func:`funcgrad.training.driver.drive` (each batch of effects concurrently), and
every attempt is recorded as a :class:`~funcgrad.core.backward.StepTrace` (passed to
``log_step``). Every pipeline call is labelled with its phase (``forward`` for the
training minibatch and reruns, ``validation``, ``evaluation`` for the test split),
so usage is counted per phase. After every step the whole loop state is
checkpointed atomically, so :func:`fit` with ``resume=True`` continues a killed run
with nothing lost and nothing repeated.

>>> from funcgrad import LLM, Param, PromptState, Example, Strategy, Update, exact_match
>>> from funcgrad.engines.scripted import ScriptedEngine
>>> node = LLM("answer", system=("sys",), user="{input}")
>>> data = tuple(Example(str(i), "q", "4") for i in range(4))
>>> task = Task("demo", lambda p, x: node(p, input=x), PromptState.of(sys=Param("Answer.")), exact_match, data, data, data)
>>> def idle_update(results, state, s, context):
...     return Update(), s
...     yield
>>> idle = Strategy("idle", lambda s: None, idle_update)
>>> out = fit(task, idle, engine=ScriptedEngine(lambda r: "4"), settings=FitSettings(steps=2, batch_size=2))
>>> out.initial_test, out.final_test, out.step
(1.0, 1.0, 2)
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import orjson

from funcgrad.core.calls import Engine
from funcgrad.core.errors import BudgetExceeded, ConfigError, StateError
from funcgrad.core.seeds import derive_seed
from funcgrad.core.run import Example, Result, mean_score, raise_on_failures, run_batch
from funcgrad.core.serialize import from_data, to_data
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.core.backward import Candidate, StepTrace, Verdict
from funcgrad.core.calls import Request, Response
from funcgrad.core.strategy import Attempt, Note, StepContext, Strategy, Update, check_result
from funcgrad.core.task import Task
from funcgrad.core.values import FrozenDict, freeze
from funcgrad.engines.pool import worker_pool
from funcgrad.training.driver import drive


def _positive(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{attribute.name}={value!r} must be a whole number >= 1")


@attrs.frozen
class FitSettings:
    """Knobs of :func:`fit`.

    ``steps``: optimization steps at most; ``epochs``: passes over the training set
    at most (the run stops at whichever comes first); ``batch_size``: training
    minibatch; ``proposals_per_step``: attempts per step before giving up;
    ``val_batch``: size of the validation minibatches strategies ask for with a
    ``Validate`` effect; ``patience``: stop after this many steps without an accepted
    proposal (None = never); ``concurrency``: examples (and effects of one batch) in
    flight (None = the engine's); ``seed``: the run's seed, from which every random
    stream derives (minibatch order, validation minibatches, strategy sampling and
    the sample index of non-greedy calls). ``accept``: the validation rule of stage 2
    (:data:`ACCEPT_RULES`): ``mean`` — the mean must beat the current one; ``sign``
    — paired per-example wins and losses against the current state, accepted when
    wins > losses and a one-sided exact sign test gives p <= ``alpha``; ``margin`` —
    wins - losses >= ``margin`` (docs/cli.md, the trade-off). ``halving``: successive
    halving — score a proposal on this many validation examples first (a fixed seeded
    subset) and on the rest only when it beats the current state there (None = off).
    ``max_failure_rate``: the
    share of a batch's examples that may fail (a model call, the pipeline or the loss
    did not work) before the run stops with RunFailed (default 0: the first failure);
    failed examples within it are logged but left out of every score and update.
    """

    steps: int = attrs.field(default=8, validator=_positive)
    epochs: int = attrs.field(default=1, validator=_positive)
    batch_size: int = attrs.field(default=3, validator=_positive)
    proposals_per_step: int = attrs.field(default=2, validator=_positive)
    val_batch: int = attrs.field(default=5, validator=_positive)
    patience: int | None = attrs.field(default=None, validator=_positive)
    concurrency: int | None = attrs.field(default=None, validator=_positive)
    seed: int = 0
    accept: str = attrs.field(default="mean", validator=lambda i, a, v: _accept_rule(v))
    alpha: float = attrs.field(default=0.1, validator=lambda i, a, v: _alpha(v))
    margin: int = attrs.field(default=2, validator=_positive)
    halving: int | None = attrs.field(default=None, validator=_positive)
    max_failure_rate: float = attrs.field(default=0.0, validator=lambda i, a, v: _failure_rate(v))


def _failure_rate(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"max_failure_rate={value!r} must be a number in [0, 1] (0: the first failed example stops the run)")


ACCEPT_RULES = ("mean", "sign", "margin")


def _accept_rule(value) -> None:
    if value not in ACCEPT_RULES:
        raise ConfigError(f"accept={value!r} must be one of {', '.join(ACCEPT_RULES)}")


def _alpha(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"alpha={value!r} must be a number strictly between 0 and 1")


def paired_gain(new: dict[str, float], old: dict[str, float], settings: FitSettings) -> tuple[bool, str]:
    """Whether per-example validation scores ``new`` beat ``old`` under ``settings.accept`` (paired rules), and why.

    >>> paired_gain({"a": 1, "b": 1, "c": 0}, {"a": 0, "b": 0, "c": 0}, FitSettings(accept="margin", margin=2))
    (True, '2 wins, 0 losses on 3 paired validation examples (margin 2)')
    >>> paired_gain({"a": 1, "b": 1, "c": 0}, {"a": 0, "b": 0, "c": 0}, FitSettings(accept="sign", alpha=0.1))[0]
    False
    """
    common = [k for k in new if k in old]
    wins = sum(new[k] > old[k] + 1e-12 for k in common)
    losses = sum(new[k] < old[k] - 1e-12 for k in common)
    head = f"{wins} wins, {losses} losses on {len(common)} paired validation examples"
    if settings.accept == "margin":
        return wins - losses >= settings.margin, f"{head} (margin {settings.margin})"
    p = 0.5 ** (wins + losses) * sum(math.comb(wins + losses, j) for j in range(wins, wins + losses + 1))
    return wins > losses and p <= settings.alpha, f"{head} (one-sided sign test p={p:.3f}, alpha {settings.alpha})"


@attrs.frozen
class Proposal:
    """One attempt of a step as the loop judged it (a JSON value).

    ``values``: proposed text per param; ``notes``: the strategy's notes;
    ``minibatch``/``val``: scores of the two validation stages (None = not reached);
    ``verdict``: a :class:`~funcgrad.core.backward.Verdict`; ``reason`` says it in words.

    >>> Proposal({"sys": "x"}, verdict="accepted").accepted
    True
    """

    values: FrozenDict = attrs.field(factory=FrozenDict, converter=lambda v: FrozenDict({str(k): str(x) for k, x in dict(v).items()}))
    notes: tuple[Note, ...] = attrs.field(default=(), converter=tuple)
    minibatch: float | None = None
    val: float | None = None
    verdict: Verdict = attrs.field(default=Verdict.NO_UPDATE, converter=Verdict)
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED


@attrs.frozen
class StepLog:
    """What happened in one step (a JSON value): the batch, its score, every proposal and the outcome."""

    step: int
    batch: tuple[str, ...] = attrs.field(converter=tuple)
    train_score: float
    proposals: tuple[Proposal, ...] = attrs.field(converter=tuple)
    accepted: bool
    val_score: float


@attrs.frozen
class FitState:
    """Everything :func:`fit` needs to continue a run: the checkpoint's content.

    ``step`` counts completed steps. ``attempts`` are accepted values with their
    validation scores (shown to strategies as ``context.history``). ``stopped`` says
    why the run ended ("" while it is running). ``val_scores``: the current state's
    score on each validation example (by id), for the paired acceptance rules.
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
    val_scores: FrozenDict = attrs.field(factory=FrozenDict, converter=lambda v: FrozenDict({str(k): float(x) for k, x in dict(v).items()}))


Event = Callable[[str, dict], None]


def batch_ids(train: Sequence[Example], settings: FitSettings, step: int) -> tuple[int, ...]:
    """Indices into ``train`` of the minibatch of ``step``: seeded shuffles per epoch.

    >>> batch_ids([Example(str(i), i) for i in range(4)], FitSettings(batch_size=2, seed=1), 0)
    (0, 2)
    """
    per_epoch = -(-len(train) // settings.batch_size)
    epoch, index = divmod(step, per_epoch)
    order = list(range(len(train)))
    random.Random(derive_seed(settings.seed, "epoch", epoch)).shuffle(order)
    return tuple(order[index * settings.batch_size : (index + 1) * settings.batch_size])


def total_steps(task: Task, settings: FitSettings) -> int:
    """How many steps a run takes at most: min(steps, epochs x batches per epoch)."""
    return min(settings.steps, settings.epochs * -(-len(task.train) // settings.batch_size))


# Which engine role (usage phase) the pipeline calls of each loop phase are counted under.
PHASE_ROLES = {"train": "forward", "rerun": "forward", "minibatch": "validation", "val": "validation",
               "strategy-eval": "validation", "test": "evaluation"}


class _Phase:
    """The task engine with pipeline (``forward``) calls relabelled as ``role``; other roles pass."""

    def __init__(self, engine: Engine, role: str):
        self.engine, self.role = engine, role
        self.concurrency = getattr(engine, "concurrency", 1)

    def _relabel(self, request: Request) -> Request:
        return attrs.evolve(request, role=self.role) if request.role == "forward" else request

    def complete(self, request: Request) -> Response:
        return self.engine.complete(self._relabel(request))

    async def acomplete(self, request: Request) -> Response:
        return await self.engine.acomplete(self._relabel(request))


class _Loop:
    """The effectful part of fit: engines, callbacks and the logs."""

    def __init__(self, task, strategy, engine, critic, settings, on_event, log_results, log_step):
        self.task, self.strategy, self.settings = task, strategy, settings
        self.engine, self.critic = engine, critic
        self.emit = on_event or (lambda kind, data: None)
        self.log_results = log_results or (lambda step, phase, results: None)
        self.log_step = log_step or (lambda step_trace: None)

    def batch(self, state: PromptState, examples, step: int, phase: str) -> tuple[Result, ...]:
        done = [0]

        def progress(result):
            done[0] += 1
            score = None if result.failed else result.loss.score
            self.emit("example", {"phase": phase, "done": done[0], "total": len(examples), "score": score})

        rate = self.settings.max_failure_rate
        with worker_pool(self.settings.concurrency or getattr(self.engine, "concurrency", 1)) as pool:
            results = run_batch(
                self.task.pipeline, state, examples, engine=_Phase(self.engine, PHASE_ROLES[phase]), loss=self.task.loss,
                executor=pool, on_result=progress, max_failure_rate=rate,
            )
        self.log_results(step, phase, results)
        return raise_on_failures(results, max_failure_rate=rate)  # only answers are scored or optimized

    def score(self, state, examples, step, phase) -> float:
        return mean_score(self.batch(state, examples, step, phase))

    def validate_fn(self, step: int):
        """``validate(state, seed)``: the Results of ``state`` on the validation minibatch ``seed`` draws."""
        val = self.task.val or self.task.train

        def validate(state: PromptState, seed: int) -> tuple[Result, ...]:
            k = min(self.settings.val_batch, len(val))
            picked = random.Random(derive_seed("val", self.settings.seed, seed)).sample(range(len(val)), k)
            return self.batch(state, [val[i] for i in sorted(picked)], step, "strategy-eval")

        return validate


def start(task: Task, strategy: Strategy, loop: _Loop) -> FitState:
    loop.emit("phase", {"name": "initial evaluation"})
    val_results = loop.batch(task.state, task.val, 0, "val") if task.val else ()
    val = mean_score(val_results) if task.val else 0.0
    test = loop.score(task.state, task.test, 0, "test") if task.test else None
    loop.emit("eval", {"step": 0, "val": val, "test": test})
    return FitState(0, task.state, freeze(strategy.init(task.state)), val, val, test, val_scores=_per_example(val_results))


def _halving_subset(val: Sequence[Example], settings: FitSettings) -> list[Example]:
    """The validation examples successive halving scores first (a seeded subset, in split order); [] when off."""
    if not settings.halving or len(val) <= settings.halving:
        return []
    keep = set(sorted(range(len(val)), key=lambda i: derive_seed(settings.seed, "halving", i))[: settings.halving])
    return [e for i, e in enumerate(val) if i in keep]


def _per_example(results) -> dict[str, float]:
    return {r.example.id: r.loss.score for r in results}


def step_once(fs: FitState, loop: _Loop) -> FitState:
    """One optimization step (see module docs); returns the next FitState."""
    task, settings, step = loop.task, loop.settings, fs.step
    batch = [task.train[i] for i in batch_ids(task.train, settings, step)]
    results = loop.batch(fs.state, batch, step + 1, "train")
    train_score = mean_score(results)
    loop.emit("phase", {"name": f"step {step + 1}: proposing", "train": train_score})
    strategy_state, rejected, proposals = fs.strategy_state, [], []
    accepted_state, val_score, val_scores = None, fs.val_score, fs.val_scores
    name = loop.strategy.name
    for attempt in range(settings.proposals_per_step):
        context = StepContext(
            step=step, seed=settings.seed, rejected=tuple(rejected),
            history=tuple(sorted(fs.attempts, key=lambda a: -(a.score or 0.0))),
            steps_since_improvement=fs.steps_since_improvement,
        )
        driven = drive(
            loop.strategy.update(results, fs.state, strategy_state, context), strategy=name, critic=loop.critic,
            validate=loop.validate_fn(step + 1), rerun=lambda s: loop.batch(s, batch, step + 1, "rerun"),
            concurrency=settings.concurrency,
        )
        update, strategy_state = check_result(driven.value, name)
        proposal, candidate, scores = _judge(update, fs, results, batch, loop, step)
        proposals.append(proposal)
        loop.log_step(StepTrace(
            step + 1, attempt, name, tuple(e.id for e in batch), driven.calls, driven.effects, update.gradients,
            _candidates(update, fs.state), proposal.verdict, proposal.reason, proposal.minibatch, proposal.val,
        ))
        loop.emit("proposal", {"step": step + 1, "attempt": attempt, "accepted": proposal.accepted,
                               "verdict": proposal.verdict.value, "reason": proposal.reason,
                               "values": dict(proposal.values), "minibatch": proposal.minibatch, "val": proposal.val})
        if proposal.accepted:
            accepted_state, val_score, val_scores = candidate, proposal.val, scores
            break
        if not update.values and not driven.calls:  # nothing was asked: a retry would repeat it
            break
        rejected.append(Attempt(update.values, proposal.val if proposal.val is not None else proposal.minibatch, False, proposal.reason))
    improved = accepted_state is not None
    log = StepLog(step + 1, tuple(e.id for e in batch), train_score, tuple(proposals), improved, val_score)
    attempts = fs.attempts + ((Attempt(accepted_state.values(), val_score, True, ""),) if improved else ())
    return attrs.evolve(
        fs, step=step + 1, state=accepted_state if improved else fs.state, strategy_state=strategy_state,
        val_score=val_score, val_scores=val_scores, attempts=attempts, log=fs.log + (log,),
        steps_since_improvement=0 if improved else fs.steps_since_improvement + 1,
    )


def _candidates(update: Update, state: PromptState) -> tuple[Candidate, ...]:
    """The strategy's candidates; for a strategy that reports none, one per proposed value."""
    if update.candidates:
        return update.candidates
    return tuple(Candidate(n, state[n].value if n in state else "", v) for n, v in update.values.items())


def _judge(update: Update, fs: FitState, results, batch, loop: _Loop, step: int) -> tuple[Proposal, PromptState | None, dict]:
    """Two-stage validation of one proposal: ``(Proposal, candidate state if accepted, its per-example val scores)``."""
    base = Proposal(update.values, update.notes)
    if not update.values:
        why = "; ".join(n.reason for n in update.notes if n.reason) or "the strategy proposed nothing"
        return attrs.evolve(base, verdict=Verdict.NO_UPDATE, reason=f"no update: {why}"), None, {}
    try:
        candidate = apply_updates(fs.state, update.values)
    except StateError as exc:
        return attrs.evolve(base, verdict=Verdict.INVALID, reason=f"invalid update: {exc}"), None, {}
    before = mean_score(results)
    after = loop.score(candidate, batch, step + 1, "minibatch")
    if after < before:
        return attrs.evolve(base, minibatch=after, verdict=Verdict.LOST_MINIBATCH,
                            reason=f"lost on the training minibatch ({after:.3f} < {before:.3f})"), None, {}
    settings, why = loop.settings, "accepted"
    val_set = loop.task.val
    first = _halving_subset(val_set, settings)
    val_results = loop.batch(candidate, first, step + 1, "val") if first else ()
    if first:
        current = fs.val_scores or _per_example(loop.batch(fs.state, val_set, step + 1, "val"))
        sub, base_sub = mean_score(val_results), sum(current.get(e.id, 0.0) for e in first) / len(first)
        if sub <= base_sub:
            return attrs.evolve(base, minibatch=after, val=sub, verdict=Verdict.NO_VAL_GAIN,
                                reason=f"successive halving: no gain on the first {len(first)} validation examples "
                                       f"({sub:.3f} <= {base_sub:.3f})"), None, {}
    if val_set:
        done = {r.example.id for r in val_results}
        rest = loop.batch(candidate, [e for e in val_set if e.id not in done], step + 1, "val")
        by_id = {r.example.id: r for r in (*val_results, *rest)}
        val_results = tuple(by_id[e.id] for e in val_set if e.id in by_id)  # failed examples were left out
    val, scores = (mean_score(val_results) if val_set else after), _per_example(val_results)
    if loop.task.val and settings.accept == "mean" and val <= fs.val_score:
        return attrs.evolve(base, minibatch=after, val=val, verdict=Verdict.NO_VAL_GAIN,
                            reason=f"did not beat the validation score ({val:.3f} <= {fs.val_score:.3f})"), None, {}
    if loop.task.val and settings.accept != "mean":
        current = fs.val_scores or _per_example(loop.batch(fs.state, loop.task.val, step + 1, "val"))
        gained, why = paired_gain(scores, current, settings)
        if not gained:
            return attrs.evolve(base, minibatch=after, val=val, verdict=Verdict.NO_VAL_GAIN,
                                reason=f"no paired validation gain: {why}"), None, {}
        why = f"accepted: {why}"
    elif loop.task.val:
        why = f"beat the validation score ({val:.3f} > {fs.val_score:.3f})"
    return attrs.evolve(base, minibatch=after, val=val, verdict=Verdict.ACCEPTED, reason=why), candidate, scores


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
    log_step: Callable[[StepTrace], None] | None = None,
) -> FitState:
    """Optimize ``task``'s prompts with ``strategy``; returns the final :class:`FitState`.

    ``engine`` runs the pipeline; ``critic`` (default: ``engine``) serves the
    strategy's backward/optimizer calls. ``checkpoint(fit_state)`` is called after
    the initial evaluation and after every step (write it to disk there);
    ``resume_from`` continues from such a state. ``on_event(kind, data)`` reports
    progress; ``log_results(step, phase, results)`` receives every batch of results
    (the CLI writes their traces to JSONL); ``log_step(step_trace)`` receives the
    recorded backward pass of every attempt (the CLI writes steps.jsonl). A BudgetExceeded stops training with
    ``stopped="budget: ..."``; the final test evaluation is then attempted from what
    the budget (and the cache) still allows.
    """
    loop = _Loop(task, strategy, engine, critic or engine, settings, on_event, log_results, log_step)
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
        "log": [_step_log_data(entry) for entry in fs.log], "stopped": fs.stopped, "val_scores": dict(fs.val_scores),
    }


def _step_log_data(entry: StepLog) -> dict:
    proposals = [{"values": dict(p.values), "notes": to_data(p.notes), "minibatch": p.minibatch, "val": p.val,
                  "verdict": p.verdict.value, "reason": p.reason} for p in entry.proposals]
    return {"step": entry.step, "batch": list(entry.batch), "train_score": entry.train_score, "proposals": proposals,
            "accepted": entry.accepted, "val_score": entry.val_score}


def _step_log_from(data: dict) -> StepLog:
    proposals = tuple(Proposal(p["values"], from_data(p["notes"]), p["minibatch"], p["val"], p["verdict"], p["reason"])
                      for p in data["proposals"])
    return StepLog(data["step"], data["batch"], data["train_score"], proposals, data["accepted"], data["val_score"])


def fit_state_from_data(data: dict) -> FitState:
    """Inverse of :func:`fit_state_to_data`."""
    log = tuple(_step_log_from(entry) for entry in data["log"])
    return FitState(
        step=data["step"], state=from_data(data["state"]), strategy_state=from_data(data["strategy_state"]),
        val_score=data["val_score"], initial_val=data["initial_val"], initial_test=data["initial_test"],
        final_test=data["final_test"], attempts=from_data(data["attempts"]),
        steps_since_improvement=data["steps_since_improvement"], log=log, stopped=data["stopped"],
        val_scores=data.get("val_scores", {}),
    )


def settings_hash(settings: FitSettings, extra: Any = None) -> str:
    """A short fingerprint of the settings (and any extra JSON config) a checkpoint belongs to."""
    blob = orjson.dumps([attrs.asdict(settings), extra], option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()[:16]
