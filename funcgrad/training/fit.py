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

The loop lives here; the acceptance gate in :mod:`~funcgrad.training.gate`, the
records it keeps (:class:`FitState`, the checkpoint) in
:mod:`~funcgrad.training.records`, the knobs (:class:`FitSettings`) in
:mod:`~funcgrad.training.settings` and its progress events in
:mod:`~funcgrad.training.events`; ``fit``, ``FitSettings`` and ``FitState`` are
importable from here.

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

import random
from collections.abc import Callable, Sequence

import attrs

from funcgrad.core.backward import Candidate, StepTrace
from funcgrad.core.calls import Engine, Request, Response
from funcgrad.core.effects import Rerun, Validate
from funcgrad.core.errors import BudgetExceeded, StrategyError
from funcgrad.core.run import Example, Result, mean_score, raise_on_failures, run_batch
from funcgrad.core.seeds import derive_seed
from funcgrad.core.state import PromptState
from funcgrad.core.strategy import Attempt, StepContext, Strategy, Update, check_result
from funcgrad.core.strategy_state import freeze_state
from funcgrad.core.task import Task
from funcgrad.training.counts import Counts, validation_counts
from funcgrad.engines.pool import worker_pool
from funcgrad.training.driver import drive
from funcgrad.training.events import (
    ExampleScored, FinalTest, FitDone, InitialEvaluation, InitialScores, OnEvent, ProposalJudged, Proposing, StepDone,
    TrainingStarted,
)
from funcgrad.training.gate import judge, scores_by_example
from funcgrad.training.records import FitState, StepLog
from funcgrad.training.settings import FitSettings

__all__ = ["FitSettings", "FitState", "PHASE_ROLES", "batch_ids", "fit", "total_steps"]


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


# Which engine role (usage phase) the pipeline calls of each batch are counted under.
PHASE_ROLES = {"train": "forward", "rerun": "forward", "minibatch": "validation", "val": "validation",
               "strategy-eval": "validation", "test": "evaluation"}


class _Phase:
    """The task engine with pipeline (``forward``) calls relabelled as ``role``; other roles pass.

    With ``sample`` > 0 every pipeline call asks for that sample at ``temperature``
    with ``seed`` (a :class:`~funcgrad.core.effects.Rerun` that resamples).
    """

    def __init__(self, engine: Engine, role: str, sample: int = 0, temperature: float = 0.0, seed: int | None = None):
        self.engine, self.role = engine, role
        self.sampling = {"sample": sample, "temperature": temperature, "seed": seed} if sample else {}
        self.concurrency = getattr(engine, "concurrency", 1)

    def complete(self, request: Request) -> Response:
        if request.role != "forward":
            return self.engine.complete(request)
        return self.engine.complete(attrs.evolve(request, role=self.role, **self.sampling))


class _Loop:
    """The effectful part of fit: engines, callbacks and the logs."""

    def __init__(self, task, strategy, engine, critic, settings, on_event, log_results, log_step):
        self.task, self.strategy, self.settings = task, strategy, settings
        self.engine, self.critic = engine, critic
        self.emit = on_event or (lambda event: None)
        self.log_results = log_results or (lambda step, phase, results: None)
        self.log_step = log_step or (lambda step_trace: None)

    def batch(self, state: PromptState, examples, step: int, phase: str, engine: Engine | None = None) -> tuple[Result, ...]:
        done = [0]

        def progress(result):
            done[0] += 1
            self.emit(ExampleScored(phase, done[0], len(examples), None if result.failed else result.loss.score))

        rate = self.settings.max_failure_rate
        with worker_pool(self.settings.concurrency or getattr(self.engine, "concurrency", 1)) as pool:
            results = run_batch(
                self.task.pipeline, state, examples, engine=engine or _Phase(self.engine, PHASE_ROLES[phase]),
                loss=self.task.loss, executor=pool, on_result=progress, max_failure_rate=rate,
            )
        self.log_results(step, phase, results)
        return raise_on_failures(results, max_failure_rate=rate)  # only answers are scored or optimized

    def score(self, state, examples, step, phase) -> float:
        return mean_score(self.batch(state, examples, step, phase))

    def validate_fn(self, step: int):
        """``validate(effect)``: the Results of ``effect.state`` on the validation minibatch its seed draws.

        Without a size, ``val_batch`` examples drawn with the seed; with a size, the
        first ``size`` of the seed's permutation of the split (nested for one seed).
        """
        val = self.task.val or self.task.train

        def validate(effect: Validate) -> tuple[Result, ...]:
            rng = random.Random(derive_seed("val", self.settings.seed, effect.seed))
            if effect.size is None:
                picked = rng.sample(range(len(val)), min(self.settings.val_batch, len(val)))
            else:
                picked = rng.sample(range(len(val)), len(val))[: effect.size]
            return self.batch(effect.state, [val[i] for i in sorted(picked)], step, "strategy-eval")

        return validate

    def rerun_fn(self, step: int, batch: Sequence[Example]):
        """``rerun(effect)``: the Results of ``effect.state`` on the step's minibatch or the named training examples."""
        by_id = {e.id: e for e in self.task.train}

        def rerun(effect: Rerun) -> tuple[Result, ...]:
            unknown = [i for i in effect.examples if i not in by_id]
            if unknown:
                raise StrategyError(f"strategy {self.strategy.name!r} asked to rerun {unknown[:3]!r}, which are not "
                                    "training examples; a Rerun names ids from StepContext.train_ids")
            examples = [by_id[i] for i in effect.examples] if effect.examples else list(batch)
            seed = derive_seed("sample", self.settings.seed, effect.sample)
            engine = _Phase(self.engine, PHASE_ROLES["rerun"], effect.sample, effect.temperature, seed)
            return self.batch(effect.state, examples, step, "rerun", engine=engine)

        return rerun


def start(task: Task, strategy: Strategy, loop: _Loop) -> FitState:
    """The initial evaluation: the FitState of step 0."""
    loop.emit(InitialEvaluation())
    val_results = loop.batch(task.state, task.val, 0, "val") if task.val else ()
    val = mean_score(val_results) if task.val else 0.0
    test = loop.score(task.state, task.test, 0, "test") if task.test else None
    loop.emit(InitialScores(val, test))
    return FitState(0, task.state, freeze_state(strategy.init(task.state)), val, val, test, val_scores=scores_by_example(val_results))


def step_once(fs: FitState, loop: _Loop) -> FitState:
    """One optimization step (see module docs); returns the next FitState."""
    task, settings, step = loop.task, loop.settings, fs.step
    batch = [task.train[i] for i in batch_ids(task.train, settings, step)]
    results = loop.batch(fs.state, batch, step + 1, "train")
    train_score = mean_score(results)
    loop.emit(Proposing(step + 1, train_score))
    strategy_state, rejected, proposals = fs.strategy_state, [], []
    accepted_state, val_score, val_scores = None, fs.val_score, fs.val_scores
    name = loop.strategy.name
    for attempt in range(settings.proposals_per_step):
        context = StepContext(
            step=step, seed=settings.seed, rejected=tuple(rejected),
            history=tuple(sorted(fs.attempts, key=lambda a: -(a.score or 0.0))),
            steps_since_improvement=fs.steps_since_improvement, labels=task.labels,
            train_ids=tuple(e.id for e in task.train),
        )
        driven = drive(
            loop.strategy.update(results, fs.state, strategy_state, context), strategy=name, critic=loop.critic,
            validate=loop.validate_fn(step + 1), rerun=loop.rerun_fn(step + 1, batch),
            concurrency=settings.concurrency,
        )
        update, strategy_state = check_result(driven.value, name)
        proposal, candidate, scores = judge(
            update, fs, results, batch, val=task.val, settings=settings,
            run=lambda s, examples, phase: loop.batch(s, examples, step + 1, phase),
        )
        proposals.append(proposal)
        loop.log_step(StepTrace(
            step + 1, attempt, name, tuple(e.id for e in batch), driven.calls, driven.effects, update.gradients,
            _candidates(update, fs.state), proposal.verdict, proposal.reason, proposal.minibatch, proposal.val,
        ))
        loop.emit(ProposalJudged(step + 1, attempt, proposal))
        if proposal.accepted:
            accepted_state, val_score, val_scores = candidate, proposal.val, scores
            break
        if not update.values and not driven.calls:  # nothing was asked: a retry would repeat it
            break
        rejected.append(Attempt(update.values, proposal.val if proposal.val is not None else proposal.minibatch, False, proposal.reason))
    improved = accepted_state is not None
    log = StepLog(step + 1, tuple(e.id for e in batch), train_score, tuple(proposals), improved, val_score,
                  Counts(len(batch), len(batch) - len(results)), validation_counts(task.val, val_scores))
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


def fit(
    task: Task,
    strategy: Strategy,
    *,
    engine: Engine,
    critic: Engine | None = None,
    settings: FitSettings = FitSettings(),
    resume_from: FitState | None = None,
    checkpoint: Callable[[FitState], None] | None = None,
    on_event: OnEvent | None = None,
    log_results: Callable[[int, str, Sequence[Result]], None] | None = None,
    log_step: Callable[[StepTrace], None] | None = None,
) -> FitState:
    """Optimize ``task``'s prompts with ``strategy``; returns the final :class:`FitState`.

    ``engine`` runs the pipeline; ``critic`` (default: ``engine``) serves the
    strategy's backward/optimizer calls. ``checkpoint(fit_state)`` is called after
    the initial evaluation and after every step (write it to disk there);
    ``resume_from`` continues from such a state. ``on_event(event)`` reports
    progress with the values of :mod:`funcgrad.training.events`;
    ``log_results(step, phase, results)`` receives every batch of results
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
    loop.emit(TrainingStarted(fs.step, limit))
    while not fs.stopped and fs.step < limit:
        if settings.patience is not None and fs.steps_since_improvement >= settings.patience:
            fs = attrs.evolve(fs, stopped=f"patience: {settings.patience} steps without improvement")
            break
        try:
            fs = step_once(fs, loop)
        except BudgetExceeded as exc:
            fs = attrs.evolve(fs, stopped=f"budget: {exc}")
            break
        loop.emit(StepDone(fs.step, limit, fs.log[-1]))
        save(fs)
    if fs.final_test is None and task.test:
        loop.emit(FinalTest())
        try:
            fs = attrs.evolve(fs, final_test=loop.score(fs.state, task.test, fs.step, "test"))
        except BudgetExceeded as exc:
            fs = attrs.evolve(fs, stopped=(fs.stopped + "; " if fs.stopped else "") + f"final test skipped: {exc}")
    fs = attrs.evolve(fs, stopped=fs.stopped or "done")
    save(fs)
    loop.emit(FitDone(fs.step, fs.initial_test, fs.final_test))
    return fs
