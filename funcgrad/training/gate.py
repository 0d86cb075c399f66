"""The acceptance gate of the training loop: whether a proposal is kept, and why.

A proposal passes two stages (:func:`judge`): it must not lose on the step's
training minibatch, then it must beat the current state on the validation split
under the rule ``FitSettings.accept`` — the mean (``mean``), or paired per-example
wins and losses (``sign``: a one-sided exact sign test from
:func:`funcgrad.core.stats.one_sided_sign_test`; ``margin``), see
:func:`paired_gain`. With ``FitSettings.halving`` a fixed seeded subset of the
validation split is scored first (:func:`halving_subset`).

>>> paired_gain({"a": 1, "b": 0}, {"a": 0, "b": 0}, FitSettings(accept="margin", margin=1))
(True, '1 wins, 0 losses on 2 paired validation examples (margin 1)')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from funcgrad.core.backward import Verdict
from funcgrad.core.errors import StateError
from funcgrad.core.run import Example, Result, mean_score
from funcgrad.core.seeds import derive_seed
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.core.stats import one_sided_sign_test
from funcgrad.core.strategy import Update
from funcgrad.training.records import FitState, Proposal
from funcgrad.training.settings import FitSettings

# run(state, examples, batch name) -> the scored Results of the examples that did not fail
Runner = Callable[[PromptState, Sequence[Example], str], Sequence[Result]]


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
    p = one_sided_sign_test(wins, losses)
    return wins > losses and p <= settings.alpha, f"{head} (one-sided sign test p={p:.3f}, alpha {settings.alpha})"


def halving_subset(val: Sequence[Example], settings: FitSettings) -> list[Example]:
    """The validation examples successive halving scores first (a seeded subset, in split order); [] when off.

    >>> val = [Example(str(i), i) for i in range(4)]
    >>> [e.id for e in halving_subset(val, FitSettings(halving=2, seed=0))], halving_subset(val, FitSettings())
    (['1', '2'], [])
    """
    if not settings.halving or len(val) <= settings.halving:
        return []
    keep = set(sorted(range(len(val)), key=lambda i: derive_seed(settings.seed, "halving", i))[: settings.halving])
    return [e for i, e in enumerate(val) if i in keep]


def scores_by_example(results: Sequence[Result]) -> dict[str, float]:
    """Each result's score by example id (what :class:`FitState` keeps as ``val_scores``)."""
    return {r.example.id: r.loss.score for r in results}


def judge(
    update: Update, fs: FitState, results: Sequence[Result], batch: Sequence[Example], *,
    val: Sequence[Example], settings: FitSettings, run: Runner,
) -> tuple[Proposal, PromptState | None, dict[str, float]]:
    """Two-stage validation of one proposal: ``(Proposal, candidate state if accepted, its per-example val scores)``.

    ``results`` are the current state's on the training minibatch ``batch``; ``val`` is
    the validation split (empty: the minibatch stage decides); ``run`` scores a state
    on examples, labelled with the batch name (``minibatch``, ``val``).
    """
    base = Proposal(update.values, update.notes)
    if not update.values:
        why = "; ".join(n.reason for n in update.notes if n.reason) or "the strategy proposed nothing"
        return attrs.evolve(base, verdict=Verdict.NO_UPDATE, reason=f"no update: {why}"), None, {}
    try:
        candidate = apply_updates(fs.state, update.values)
    except StateError as exc:
        return attrs.evolve(base, verdict=Verdict.INVALID, reason=f"invalid update: {exc}"), None, {}
    before = mean_score(results)
    after = mean_score(run(candidate, batch, "minibatch"))
    if after < before:
        return attrs.evolve(base, minibatch=after, verdict=Verdict.LOST_MINIBATCH,
                            reason=f"lost on the training minibatch ({after:.3f} < {before:.3f})"), None, {}
    why = "accepted"
    first = halving_subset(val, settings)
    val_results = run(candidate, first, "val") if first else ()
    if first:
        current = fs.val_scores or scores_by_example(run(fs.state, val, "val"))
        sub, base_sub = mean_score(val_results), sum(current.get(e.id, 0.0) for e in first) / len(first)
        if sub <= base_sub:
            return attrs.evolve(base, minibatch=after, val=sub, verdict=Verdict.NO_VAL_GAIN,
                                reason=f"successive halving: no gain on the first {len(first)} validation examples "
                                       f"({sub:.3f} <= {base_sub:.3f})"), None, {}
    if val:
        done = {r.example.id for r in val_results}
        rest = run(candidate, [e for e in val if e.id not in done], "val")
        by_id = {r.example.id: r for r in (*val_results, *rest)}
        val_results = tuple(by_id[e.id] for e in val if e.id in by_id)  # failed examples were left out
    score, scores = (mean_score(val_results) if val else after), scores_by_example(val_results)
    if val and settings.accept == "mean" and score <= fs.val_score:
        return attrs.evolve(base, minibatch=after, val=score, verdict=Verdict.NO_VAL_GAIN,
                            reason=f"did not beat the validation score ({score:.3f} <= {fs.val_score:.3f})"), None, {}
    if val and settings.accept != "mean":
        current = fs.val_scores or scores_by_example(run(fs.state, val, "val"))
        gained, why = paired_gain(scores, current, settings)
        if not gained:
            return attrs.evolve(base, minibatch=after, val=score, verdict=Verdict.NO_VAL_GAIN,
                                reason=f"no paired validation gain: {why}"), None, {}
        why = f"accepted: {why}"
    elif val:
        why = f"beat the validation score ({score:.3f} > {fs.val_score:.3f})"
    return attrs.evolve(base, minibatch=after, val=score, verdict=Verdict.ACCEPTED, reason=why), candidate, scores
