"""Sampled candidates: n optimizer samples per step, checked on the minibatch in one batch.

A strategy with ``n_candidates > 1`` asks the optimizer for n samples at once (all
Calls in one batch, temperature > 0, distinct ``sample`` indices, so a cache keeps
them apart), guards each, and passes the survivors to :func:`best_on_minibatch`:
one batch of ``Rerun`` effects scores every candidate on the step's training
minibatch, and only the best goes on to the training loop's validation
(:func:`best_option`: the tail every sampling strategy shares).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from funcgrad.core.calls import Request
from funcgrad.core.effects import Rerun
from funcgrad.core.run import mean_score
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.core.strategy import Note


def samples(request: Request, n: int, attempt: int, temperature: float) -> tuple[Request, ...]:
    """``n`` copies of ``request`` with distinct sample indices (``attempt * n + i``); n > 1 samples at ``temperature``.

    >>> [(r.sample, r.temperature) for r in samples(Request(messages=(("user", "x"),)), 2, 1, 0.7)]
    [(2, 0.7), (3, 0.7)]
    """
    if n == 1:
        return (request,)
    temp = max(request.temperature, temperature)
    return tuple(attrs.evolve(request, sample=attempt * n + i, temperature=temp) for i in range(n))


def best_on_minibatch(state: PromptState, candidates: Sequence[Mapping[str, str]], before: float):
    """A program: Rerun every candidate (one batch) and return ``(index of the best, scores, note)``.

    Ties go to the earlier candidate. ``before`` is the minibatch score of ``state``
    (shown in the note).
    """
    answers = yield tuple(Rerun(apply_updates(state, dict(c))) for c in candidates)
    scores = [mean_score(a) for a in answers]
    best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
    shown = ", ".join(f"#{i}={s:.2f}" for i, s in enumerate(scores))
    return best, scores, f"{len(candidates)} sampled candidates on the minibatch (current {before:.2f}): {shown}; best #{best}"


def best_option(state: PromptState, options: Sequence[Mapping[str, str]], results: Sequence[Any]):
    """A program: the best of the distinct non-empty ``options`` (param -> value) and the notes saying why.

    One option needs no selection (and no effect); several are scored on the
    minibatch by :func:`best_on_minibatch` (``results``: the minibatch under ``state``).
    Returns ``(values, notes)``.

    >>> from funcgrad.core.effects import run_program
    >>> run_program(best_option(None, [{}, {"sys": "A."}, {"sys": "A."}], ()), respond=None)
    ({'sys': 'A.'}, ())
    """
    distinct = [o for i, o in enumerate(options) if o and o not in options[:i]]
    if len(distinct) <= 1:
        return (distinct[0] if distinct else {}), ()
    best, _, why = yield from best_on_minibatch(state, distinct, mean_score(results))
    return distinct[best], (Note("", "proposed", why),)
