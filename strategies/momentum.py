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
of values drawn from it lives in S, so a run resumed from a JSON checkpoint draws
the same candidates. Later proposals of the same step (after a rejection) reuse ``p*``.
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

from funcgrad import Note, PromptState, Strategy, Update, apply_updates, derive_seed, mean_score
from funcgrad.core.effects import Rerun, Validate
from funcgrad.core.strategy import make_knobs
from funcgrad.strategies import proposals as P


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


def _find(history: list[dict], values: dict[str, str]) -> int | None:
    for i, h in enumerate(history):
        if h["values"] == values:
            return i
    return None


def _state_of(state: PromptState, values: dict[str, str]) -> PromptState:
    diff = {n: v for n, v in values.items() if n in state and state[n].trainable and state[n].value != v}
    return apply_updates(state, diff)


@attrs.frozen
class SampledMomentumKnobs:
    """Knobs of :func:`sampled_momentum` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> SampledMomentumKnobs(k=3).k
    3
    """

    k: int = attrs.field(default=5, validator=P.POSITIVE_INT)
    temperature: float = attrs.field(default=0.6, validator=[attrs.validators.instance_of((int, float)), attrs.validators.gt(0)])
    c: float = attrs.field(default=0.4, validator=[attrs.validators.instance_of((int, float)), attrs.validators.ge(0)])
    max_history: int = attrs.field(default=30, validator=[attrs.validators.instance_of(int), attrs.validators.ge(2)])
    unscored_score: float = attrs.field(default=1.0, validator=attrs.validators.instance_of((int, float)))


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
        return P.freeze_state({
            "history": [{"values": _trainable_values(state), "mean": None, "n": 0}],
            "rng": {"step": None, "position": 0},
            "pick": None,
            "inner": inner.init(state),
            "events": {},
        })

    def _pick(state, s, context):
        """Sample, score and choose p* for this step (a program; mutates ``s``). Returns (index, note)."""
        history = s["history"]
        current = _trainable_values(state)
        if _find(history, current) is None:
            history.append({"values": current, "mean": None, "n": 0})
        step = context.step
        pick = s.get("pick")
        if pick and pick.get("step") == step:
            idx = _find(history, pick["values"])
            if idx is not None:
                return idx, f"reusing this step's p* (history entry {idx})"
        if s["rng"].get("step") != step:
            s["rng"] = {"step": step, "position": 0}
        rng = stream(context.seed, step, s["rng"]["position"])
        scores = [h["mean"] if h["mean"] is not None else k.unscored_score for h in history]
        chosen = gumbel_top_k(scores, min(k.k, len(history)), k.temperature, k.c, rng)
        eval_seed = rng.randrange(2**31)
        s["rng"]["position"] += len(history) + 1
        s["events"] = P.bump(s["events"], "samples")
        cur = _find(history, current)
        if len(chosen) == 1 and chosen[0] == cur:
            s["pick"] = {"step": step, "values": current, "candidates": [cur], "seed": eval_seed}
            return cur, "one state in history: stepping from the current state"
        answers = yield tuple(Validate(_state_of(state, history[i]["values"]), eval_seed) for i in chosen)
        measured = []
        for i, results in zip(chosen, answers):
            score = mean_score(results)
            h = history[i]
            h["n"] += 1
            h["mean"] = score if h["mean"] is None else h["mean"] + (score - h["mean"]) / h["n"]
            measured.append((i, score))
        s["events"] = P.bump(s["events"], "evaluations", len(chosen))
        best = max(chosen, key=lambda i: (history[i]["mean"], i == cur, -i))
        s["pick"] = {"step": step, "values": history[best]["values"], "candidates": chosen, "seed": eval_seed}
        shown = ", ".join(f"#{i}={sc:.2f}" for i, sc in measured)
        return best, f"candidates {shown}; p* = #{best} (mean {history[best]['mean']:.2f}, n={history[best]['n']})"

    def update(results, state, s, context):
        s = P.thaw_state(s)
        idx, why = yield from _pick(state, s, context)
        history = s["history"]
        current = _trainable_values(state)
        star_values = history[idx]["values"]
        if star_values == current:
            star_state, star_results = state, results
        else:
            star_state = _state_of(state, star_values)
            (star_results,) = yield (Rerun(star_state),)
            s["events"] = P.bump(s["events"], "reruns")
        inner_s = P.freeze_state(s["inner"]) if s["inner"] is not None else None
        inner_update, inner_s = yield from inner.update(star_results, star_state, inner_s, context)
        s["inner"] = P.thaw_state(inner_s) if inner_s is not None else None
        proposal = _trainable_values(apply_updates(star_state, inner_update.values))
        values = {n: v for n, v in proposal.items() if state[n].value != v}
        notes = [Note("", "proposed" if values else "no_update", f"sampled momentum: {why}"), *inner_update.notes]
        if values and _find(history, proposal) is None:
            history.append({"values": proposal, "mean": None, "n": 0})
        if len(history) > k.max_history:
            keep_cur = _find(history, current)
            ranked = sorted(
                (i for i in range(len(history)) if i not in (keep_cur, len(history) - 1)),
                key=lambda i: (history[i]["mean"] if history[i]["mean"] is not None else k.unscored_score, i),
            )
            drop = set(ranked[: len(history) - k.max_history])
            s["history"] = [h for i, h in enumerate(history) if i not in drop]
        return Update(values, notes, inner_update.gradients, inner_update.candidates), P.freeze_state(s)

    return Strategy("sampled_momentum", init, update, config)
