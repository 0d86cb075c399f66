"""Sampled momentum (TSGD-M): step from a good past state instead of always the current one.

The wrapper keeps a history ``H`` of past prompt states (their trainable values) with
the running mean of their validation-minibatch scores and how often each was scored.
Once per training step it

1. draws ``k`` candidates from ``H`` without replacement by Gumbel-top-k on the keys
   ``s_i / T + c * G_i`` (``G_i ~ Gumbel(0, 1)``; a never-scored state counts as
   ``s_i = 1``, so every new proposal gets scored at least once);
2. scores them on one validation minibatch (``Validate`` effects with one shared
   seed per step, all in one batch: paired and concurrent) and updates their
   running means;
3. picks the best ``p*`` (ties: the current state);
4. re-runs the training minibatch under ``p*`` (a ``Rerun`` effect; skipped when
   ``p*`` is the current state) and runs the inner strategy's program from ``p*``
   through the same mechanism (its effects pass straight to the driver);
5. returns the proposal relative to the ``state`` it was given and appends it to ``H``.

The random stream is ``random.Random(sha256(f"{seed}:{step}"))`` with ``seed`` the
run's seed (``context.seed``: a comparison grid's seed reaches it), and the number
of values drawn from it lives in S (a :class:`~funcgrad.core.strategy_state.History`), so a run
resumed from a JSON checkpoint draws
the same candidates. Later proposals of the same step (after a rejection) reuse ``p*``.
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

from funcgrad.core.effects import Rerun, Validate
from funcgrad.core.run import mean_score
from funcgrad.core.seeds import derive_seed
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.core.strategy import Note, Strategy, Update, make_knobs
from funcgrad.core.strategy_state import History, HistoryEntry, Pick, Stats, freeze_state, read_state
from funcgrad.strategies.knobs import POSITIVE_INT


def stream(seed: int, step: int, position: int = 0) -> random.Random:
    """The random stream of ``step``, advanced by ``position`` draws (hash-seed free).

    >>> a = stream(0, 3); [a.random() for _ in range(2)][1] == stream(0, 3, 1).random()
    True
    """
    rng = random.Random(derive_seed("funcgrad.sampled_momentum", seed, step))
    for _ in range(position):
        rng.random()
    return rng


def gumbel_top_k(scores: list[float], k: int, temperature: float, c: float, rng: random.Random) -> list[int]:
    """Indices of the ``k`` largest keys ``s_i / T + c * G_i``; draws one uniform per entry.

    >>> gumbel_top_k([0.1, 0.9, 0.5], 2, 0.6, 0.0, random.Random(0))
    [1, 2]
    """
    keys = []
    for i, s in enumerate(scores):
        u = min(max(rng.random(), 1e-12), 1 - 1e-12)
        g = -math.log(-math.log(u))
        keys.append((s / temperature + c * g, -i))
    ranked = sorted(range(len(scores)), key=lambda i: keys[i], reverse=True)
    return ranked[:k]


def _trainable_values(state: PromptState) -> dict[str, str]:
    return {n: state[n].value for n in state.trainable_names}


def _find(entries, values) -> int | None:
    for i, h in enumerate(entries):
        if h.values == values:
            return i
    return None


def _state_of(state: PromptState, values) -> PromptState:
    diff = {n: v for n, v in values.items() if n in state and state[n].trainable and state[n].value != v}
    return apply_updates(state, diff)


@attrs.frozen
class SampledMomentumKnobs:
    """Knobs of :func:`sampled_momentum` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> SampledMomentumKnobs(k=3).k
    3
    """

    k: int = attrs.field(default=5, validator=POSITIVE_INT)
    temperature: float = attrs.field(default=0.6, validator=[attrs.validators.instance_of((int, float)), attrs.validators.gt(0)])
    c: float = attrs.field(default=0.4, validator=[attrs.validators.instance_of((int, float)), attrs.validators.ge(0)])
    max_history: int = attrs.field(default=30, validator=[attrs.validators.instance_of(int), attrs.validators.ge(2)])
    unscored_score: float = attrs.field(default=1.0, validator=attrs.validators.instance_of((int, float)))


# ---------------------------------------------------------------- the update, step by step


def _with_current(history: History, current) -> History:
    if _find(history.entries, current) is None:
        return attrs.evolve(history, entries=(*history.entries, HistoryEntry(current)))
    return history


def _scored(entries, chosen, answers) -> tuple[tuple[HistoryEntry, ...], list[tuple[int, float]]]:
    """The entries with the running means of the ``chosen`` ones updated by their scores, and those scores."""
    entries, measured = list(entries), []
    for i, results in zip(chosen, answers):
        score = mean_score(results)
        h = entries[i]
        n = h.n + 1
        entries[i] = HistoryEntry(h.values, score if h.mean is None else h.mean + (score - h.mean) / n, n)
        measured.append((i, score))
    return tuple(entries), measured


def _pick(history: History, state, context, knobs):
    """A program: sample, score and choose p* for this step. Returns ``(history, index, why)``."""
    current, step = _trainable_values(state), context.step
    history = _with_current(history, current)
    if history.pick and history.pick.step == step:
        idx = _find(history.entries, history.pick.values)
        if idx is not None:
            return history, idx, f"reusing this step's p* (history entry {idx})"
    position = history.stream_position if history.stream_step == step else 0
    rng = stream(context.seed, step, position)
    entries = history.entries
    scores = [h.mean if h.mean is not None else knobs.unscored_score for h in entries]
    chosen = gumbel_top_k(scores, min(knobs.k, len(entries)), knobs.temperature, knobs.c, rng)
    eval_seed = rng.randrange(2**31)
    history = attrs.evolve(history, stream_step=step, stream_position=position + len(entries) + 1,
                           stats=history.stats + Stats(events={"samples": 1}))
    cur = _find(entries, current)
    if len(chosen) == 1 and chosen[0] == cur:
        return attrs.evolve(history, pick=Pick(step, current, [cur], eval_seed)), cur, "one state in history: stepping from the current state"
    answers = yield tuple(Validate(_state_of(state, entries[i].values), eval_seed) for i in chosen)
    entries, measured = _scored(entries, chosen, answers)
    best = max(chosen, key=lambda i: (entries[i].mean, i == cur, -i))
    history = attrs.evolve(history, entries=entries, pick=Pick(step, entries[best].values, chosen, eval_seed),
                           stats=history.stats + Stats(events={"evaluations": len(chosen)}))
    shown = ", ".join(f"#{i}={sc:.2f}" for i, sc in measured)
    return history, best, f"candidates {shown}; p* = #{best} (mean {entries[best].mean:.2f}, n={entries[best].n})"


def _star(history: History, idx: int, state, results):
    """A program: p*'s state and the minibatch under it (rerun unless p* is the current state)."""
    star_values = history.entries[idx].values
    if star_values == _trainable_values(state):
        return state, results, history
    star_state = _state_of(state, star_values)
    (star_results,) = yield (Rerun(star_state),)
    return star_state, star_results, attrs.evolve(history, stats=history.stats + Stats(events={"reruns": 1}))


def _trimmed(entries, current, knobs) -> tuple[HistoryEntry, ...]:
    """At most ``max_history`` entries: the worst-scored go first, never the current state nor the newest."""
    if len(entries) <= knobs.max_history:
        return entries
    keep_cur = _find(entries, current)
    ranked = sorted(
        (i for i in range(len(entries)) if i not in (keep_cur, len(entries) - 1)),
        key=lambda i: (entries[i].mean if entries[i].mean is not None else knobs.unscored_score, i),
    )
    drop = set(ranked[: len(entries) - knobs.max_history])
    return tuple(h for i, h in enumerate(entries) if i not in drop)


def _update(inner: Strategy, knobs: SampledMomentumKnobs):
    def update(results, state, s, context):
        history = read_state(s, History, "sampled_momentum")
        history, idx, why = yield from _pick(history, state, context, knobs)
        star_state, star_results, history = yield from _star(history, idx, state, results)
        inner_update, inner_s = yield from inner.update(star_results, star_state, history.inner, context)
        proposal = _trainable_values(apply_updates(star_state, inner_update.values))
        values = {n: v for n, v in proposal.items() if state[n].value != v}
        notes = [Note("", "proposed" if values else "no_update", f"sampled momentum: {why}"), *inner_update.notes]
        entries = history.entries
        if values and _find(entries, proposal) is None:
            entries = (*entries, HistoryEntry(proposal))
        history = attrs.evolve(history, entries=_trimmed(entries, _trainable_values(state), knobs),
                               inner=freeze_state(inner_s, where=f"state of strategy {inner.name!r}"))
        return Update(values, notes, inner_update.gradients, inner_update.candidates), history

    return update


def sampled_momentum(inner: Strategy, **knobs: Any) -> Strategy:
    """Wrap ``inner`` (any Strategy) with TSGD-M sampled momentum.

    Effects per step: ``min(k, len(H))`` Validate effects in one batch (none while H
    holds one state), one Rerun when ``p*`` is not the current state, then the inner
    strategy's own effects. Knobs (:class:`SampledMomentumKnobs`): ``k`` candidates,
    ``temperature`` T, ``c`` (Gumbel weight), ``max_history`` (oldest worst-scored
    entries are dropped), ``unscored_score`` (the score a never-evaluated state is
    assumed to have). The random stream derives from the run's seed and the step.

    >>> from funcgrad.strategies import backprop
    >>> sampled_momentum(backprop(), k=3).config["k"]
    3
    """
    k = make_knobs(SampledMomentumKnobs, "sampled_momentum", knobs)
    config = {"inner": inner.name, "inner_config": inner.config, **attrs.asdict(k)}

    def init(state):
        return History((HistoryEntry(_trainable_values(state)),), inner=inner.init(state))

    return Strategy("sampled_momentum", init, _update(inner, k), config)
