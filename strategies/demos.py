"""Bootstrapped demonstrations: a node's own correct work on training examples, as its demos.

Every step, :func:`bootstrap_demos` harvests from the training minibatch's traces
each call of an LLM node that reads a trainable ``demos``-kind param, on examples
that scored ``>= tau``: the node's rendered input (its user message, exactly as the
trace recorded it) and its *whole* output (listing, reasoning and answer, not only
the final answer). The trace records what every node saw and said, so this works
for inner nodes of a multi-node pipeline as well as the last one. The harvest
accumulates in the strategy state ``S`` (a :class:`~funcgrad.core.strategy_state.DemoPool`,
at most ``max_pool`` demonstrations), so
later steps draw from every training minibatch seen so far.

Then it draws ``n_sets`` candidate demo sets of ``k`` from that pool with a seeded
stream (the run's seed, the step and the attempt), renders each as the text of the
demos param (:mod:`funcgrad.strategies.prompts.demos`), scores all of them on ONE
validation minibatch (``Validate`` effects with a shared seed, in one batch: paired)
and proposes the best; the training loop's acceptance rule decides as for any
proposal. Only the results passed to ``update`` (the training minibatch) are ever
harvested: validation answers are used for their scores only.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import attrs

from funcgrad.core.backward import Candidate
from funcgrad.core.effects import Validate
from funcgrad.core.run import mean_score
from funcgrad.core.seeds import derive_seed
from funcgrad.core.state import apply_updates
from funcgrad.core.strategy import Note, Strategy, Update, make_knobs
from funcgrad.core.strategy_state import Demo, DemoPool, Stats, read_state
from funcgrad.strategies.context import rejected_values
from funcgrad.strategies.knobs import AT_MOST_ONE, POSITIVE_INT
from funcgrad.strategies.prompts import demos as prompts
from funcgrad.strategies.text import clip


@attrs.frozen
class DemosKnobs:
    """Knobs of :func:`bootstrap_demos` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> DemosKnobs(k=2).k
    2
    """

    k: int = attrs.field(default=3, validator=POSITIVE_INT)
    n_sets: int = attrs.field(default=4, validator=POSITIVE_INT)
    tau: float = attrs.field(default=1.0, validator=AT_MOST_ONE)
    max_pool: int = attrs.field(default=60, validator=POSITIVE_INT)
    max_chars: int = attrs.field(default=700, validator=POSITIVE_INT)


def harvest(results, params) -> list[Demo]:
    """Demonstrations in ``results``: one per call of a node reading one of ``params``, on examples scoring >= tau.

    ``results`` are assumed already filtered by score.
    """
    out = []
    for res in results:
        for r in res.trace.records:
            if r.kind != "llm" or r.error is not None or r.output is None:
                continue
            for p in params:
                if p in r.params and str(r.output).strip():
                    out.append(Demo(res.example.id, p, r.node, r.call_index, r.user_text, str(r.output).strip(), res.loss.score))
    return out


def render_demos(demos, max_chars: int = 700) -> str:
    """The text of a demos param holding ``demos`` (:class:`~funcgrad.core.strategy_state.Demo` values, or
    mappings with ``input`` and ``output``).

    >>> print(render_demos([Demo("e1", "demos", "count", 0, "I have a cat. How many animals?", "cat: 1. Answer: 1", 1.0)]))
    Worked examples (an input, then a correct reply):
    <BLANKLINE>
    Input:
    I have a cat. How many animals?
    Reply:
    cat: 1. Answer: 1
    """
    pairs = [(d["input"], d["output"]) if isinstance(d, Mapping) else (d.input, d.output) for d in demos]
    blocks = [prompts.DEMO.format(input=clip(x, max_chars), output=clip(y, max_chars)) for x, y in pairs]
    return prompts.SEPARATOR.join([prompts.HEADER, *blocks])


# ---------------------------------------------------------------- the update, step by step


def _targets(results, state) -> list[str]:
    """The trainable ``demos`` params a node of the traces reads."""
    read = {p for res in results for r in res.trace.records for p in r.params}
    return [n for n in state.trainable_names if state[n].kind == "demos" and n in read]


def _harvested(pool: DemoPool, results, targets, knobs: DemosKnobs) -> DemoPool:
    """The pool with the new demonstrations of the examples scoring >= tau (the newest ``max_pool`` kept)."""
    known = {d.key for d in pool.demos}
    fresh = [d for d in harvest([r for r in results if r.loss.score >= knobs.tau], targets) if d.key not in known]
    return DemoPool((*pool.demos, *fresh)[-knobs.max_pool:], pool.stats + Stats(events={"harvested": len(fresh)}))


def _per_param(pool: DemoPool, results, targets, knobs: DemosKnobs) -> tuple[dict[str, list[Demo]], list[Note]]:
    """The demonstrations of each target, and a note for each target with none yet or fewer than ``k``."""
    notes, per_param = [], {}
    for p in targets:
        have = [d for d in pool.demos if d.param == p]
        nodes = ", ".join(sorted({r.node for res in results for r in res.trace.records if p in r.params}))
        if not have:
            notes.append(Note(p, "no_update", f"no demonstration for {p!r} yet: node {nodes} has not scored >= "
                                              f"{knobs.tau} on any training example seen so far (fix its instruction "
                                              f"first, or lower tau)"))
            continue
        if len(have) < knobs.k:
            notes.append(Note(p, "proposed", f"only {len(have)} demonstration(s) for {p!r} so far (k={knobs.k}): "
                                             f"using {len(have)}"))
        per_param[p] = have
    return per_param, notes


def _draw_sets(per_param, state, context, rng: random.Random, knobs: DemosKnobs) -> list[dict[str, list[Demo]]]:
    """Up to ``n_sets`` distinct demo sets, each new for at least one param (not its value, not rejected)."""
    rejected = {p: set(rejected_values(context, p)) for p in per_param}
    sets, seen = [], set()
    for _ in range(knobs.n_sets):
        picked = {p: rng.sample(have, min(knobs.k, len(have))) for p, have in per_param.items()}
        sig = tuple((p, tuple(sorted(d.key for d in ds))) for p, ds in picked.items())
        texts = {p: render_demos(ds, knobs.max_chars) for p, ds in picked.items()}
        if sig in seen or all(texts[p] in rejected[p] or texts[p] == state[p].value for p in texts):
            continue
        seen.add(sig)
        sets.append(picked)
    return sets


def _choose(sets, values, state, rng: random.Random):
    """A program: the best set's index on one validation minibatch (no effect for a single set), why, and counts."""
    if len(sets) == 1:
        return 0, "one candidate demo set: no selection needed", Stats()
    eval_seed = rng.randrange(2**31)
    answers = yield tuple(Validate(apply_updates(state, v), eval_seed) for v in values)
    scores = [mean_score(a) for a in answers]
    best = max(range(len(sets)), key=lambda i: (scores[i], -i))
    why = "candidate sets on one validation minibatch: " + ", ".join(f"#{i}={x:.2f}" for i, x in enumerate(scores))
    return best, why, Stats(events={"validated": len(sets)})


def _update(knobs: DemosKnobs):
    def update(results, state, s, context):
        pool = read_state(s, DemoPool, "bootstrap_demos")
        pool = attrs.evolve(pool, stats=pool.stats + Stats(steps=1))
        targets = _targets(results, state)
        if not targets:
            return Update((), [Note("", "no_update", "no trainable param of kind 'demos' is read by a node of "
                                                     "these traces; give the node a demos peer param")]), pool
        pool = _harvested(pool, results, targets, knobs)
        per_param, notes = _per_param(pool, results, targets, knobs)
        if not per_param:
            return Update((), notes), pool
        rng = random.Random(derive_seed("bootstrap_demos", context.seed, context.step, context.attempt))
        sets = _draw_sets(per_param, state, context, rng, knobs)
        if not sets:
            notes.append(Note("", "no_update", "every demo set that can be drawn is the current value or was rejected "
                                               "this step"))
            return Update((), notes), pool
        values = [{p: render_demos(ds, knobs.max_chars) for p, ds in picked.items()} for picked in sets]
        best, why, counts = yield from _choose(sets, values, state, rng)
        chosen = {p: v for p, v in values[best].items() if v != state[p].value}
        ids = sorted({d.example_id for ds in sets[best].values() for d in ds})
        notes.append(Note("", "proposed", f"{why}; chose #{best} (demos from training examples {', '.join(ids)})"))
        cands = [Candidate(p, state[p].value, v, "", f"set #{best}") for p, v in chosen.items()]
        return Update(chosen, notes, (), cands), attrs.evolve(pool, stats=pool.stats + counts)

    return update


def bootstrap_demos(**knobs: Any) -> Strategy:
    """Demonstrations bootstrapped from the model's own correct training traces, selected on validation.

    Knobs (:class:`DemosKnobs`; an unknown or invalid one, e.g. ``n_sets=0``, is a
    ConfigError): ``k`` demos per set; ``n_sets`` candidate sets drawn per step (the
    pool of candidates scored on validation); ``tau``: an example is a demonstration
    when it scored ``>= tau``; ``max_pool``: harvested demonstrations kept in ``S``
    (the newest); ``max_chars``: each demo's input and output are cut to this.

    Targets: every trainable param of kind ``demos`` read by a node of the traces.
    When a target has no demonstration yet (its node never succeeded on the training
    examples seen), or fewer than ``k``, a Note says so; the strategy then proposes
    what it has (never an empty demos text). Effects per step: one batch of
    ``Validate`` effects (one per distinct candidate set, one shared seed), none when
    only one set can be drawn.

    >>> bootstrap_demos(k=2).config["k"]
    2
    """
    kn = make_knobs(DemosKnobs, "bootstrap_demos", knobs)
    return Strategy("bootstrap_demos", lambda state: DemoPool(), _update(kn), kn)
