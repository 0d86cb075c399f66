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

import hashlib
import random
from collections.abc import Mapping
from typing import Any

import attrs

from funcgrad.core.backward import Candidate
from funcgrad.core.effects import Rerun, Validate
from funcgrad.core.run import mean_score
from funcgrad.core.seeds import derive_seed
from funcgrad.core.state import apply_updates
from funcgrad.core.errors import StrategyError
from funcgrad.core.strategy import Note, Strategy, Update, make_knobs
from funcgrad.core.strategy_state import Demo, DemoPool, Stats, read_state
from funcgrad.strategies.context import rejected_values
from funcgrad.strategies.knobs import AT_MOST_ONE, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, PROMPT_CAP
from funcgrad.strategies.prompts import demos as prompts


SCOPES = ("minibatch", "train")


def _positive_temperature(instance, attribute, value) -> None:
    if value <= 0:
        raise ValueError(f"temperature={value!r} must be > 0: resamples at temperature 0 repeat the greedy answer")


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
    scope: str = attrs.field(default="minibatch", validator=attrs.validators.in_(SCOPES))
    max_train: int = attrs.field(default=30, validator=POSITIVE_INT)
    max_rounds: int = attrs.field(default=0, validator=NON_NEGATIVE_INT)
    temperature: float = attrs.field(default=1.0, validator=[*NON_NEGATIVE, _positive_temperature])
    rationalize: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    max_set_chars: int = attrs.field(default=6000, validator=PROMPT_CAP)


def harvest(results, params, source: str = "plain") -> list[Demo]:
    """Demonstrations in ``results``: one per call of a node reading one of ``params``, on examples scoring >= tau.

    ``results`` are assumed already filtered by score; ``source`` says how they were
    found (see :class:`~funcgrad.core.strategy_state.Demo`).
    """
    out = []
    for res in results:
        for r in res.trace.records:
            if r.kind != "llm" or r.error is not None or r.output is None:
                continue
            for p in params:
                if p in r.params and str(r.output).strip():
                    out.append(Demo(res.example.id, p, r.node, r.call_index, r.user_text, str(r.output).strip(),
                                    res.loss.score, source))
    return out


def render_demos(demos) -> str:
    """The text of a demos param holding ``demos`` (:class:`~funcgrad.core.strategy_state.Demo` values, or
    mappings with ``input`` and ``output``). A demo is never cut: :func:`fit_set` drops whole demos instead.

    >>> print(render_demos([Demo("e1", "demos", "count", 0, "I have a cat. How many animals?", "cat: 1. Answer: 1", 1.0)]))
    Worked examples (an input, then a correct reply):
    <BLANKLINE>
    Input:
    I have a cat. How many animals?
    Reply:
    cat: 1. Answer: 1
    """
    pairs = [(d["input"], d["output"]) if isinstance(d, Mapping) else (d.input, d.output) for d in demos]
    blocks = [prompts.DEMO.format(input=x, output=y) for x, y in pairs]
    return prompts.SEPARATOR.join([prompts.HEADER, *blocks])


def within(demos, max_chars: int) -> list[Demo]:
    """The demos whose input and reply both have at most ``max_chars`` characters (a demo is never cut).

    >>> [d.example_id for d in within([Demo("a", "d", "n", 0, "x", "y", 1.0), Demo("b", "d", "n", 0, "x" * 9, "y", 1.0)], 5)]
    ['a']
    """
    return [d for d in demos if len(d.input) <= max_chars and len(d.output) <= max_chars]


def draw_set(per_param, rng: random.Random, k: int, max_set_chars: int) -> dict[str, list[Demo]]:
    """One demo set: ``k`` random demos of each param (fewer when it has fewer), shrunk by :func:`fit_set`.

    >>> d = Demo("a", "d", "n", 0, "x", "y", 1.0)
    >>> {p: len(ds) for p, ds in draw_set({"d": [d, d, d]}, random.Random(0), 2, 1000).items()}
    {'d': 2}
    """
    return {p: fit_set(rng.sample(have, min(k, len(have))), max_set_chars)[0] for p, have in per_param.items()}


def fit_set(demos, max_set_chars: int) -> tuple[list, int]:
    """The longest prefix of ``demos`` whose rendered text has at most ``max_set_chars``, and how many were dropped.

    Whole demos are dropped from the end, never cut in the middle.

    >>> d = Demo("e1", "demos", "count", 0, "x" * 40, "y" * 40, 1.0)
    >>> [len(kept) for kept, _ in (fit_set([d, d, d], 1000), fit_set([d, d, d], 200))]
    [3, 1]
    """
    kept = list(demos)
    while len(kept) > 1 and len(render_demos(kept)) > max_set_chars:
        kept.pop()
    return kept, len(demos) - len(kept)


# ---------------------------------------------------------------- the update, step by step


def _targets(results, state) -> list[str]:
    """The trainable ``demos`` params a node of the traces reads."""
    read = {p for res in results for r in res.trace.records for p in r.params}
    return [n for n in state.trainable_names if state[n].kind == "demos" and n in read]


def _harvested(pool: DemoPool, found, knobs: DemosKnobs, counts: Stats) -> DemoPool:
    """The pool with the new demonstrations of ``found`` (the newest ``max_pool`` kept) and ``counts`` added."""
    known = {d.key for d in pool.demos}
    fresh = list({d.key: d for d in found if d.key not in known}.values())
    return attrs.evolve(pool, demos=(*pool.demos, *fresh)[-knobs.max_pool:],
                        stats=pool.stats + counts + Stats(events={"harvested": len(fresh)}))


def _signature(state) -> str:
    """A short digest of the state's non-demos text: a training-split scan is done once per prompt."""
    text = "\x00".join(f"{n}={state[n].value}" for n in state.names if state[n].kind != "demos")
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _passed(results, knobs: DemosKnobs) -> list:
    return [r for r in results if r.loss.score >= knobs.tau]


def _hinted(state, targets, feedback: str):
    """``state`` with the rationalization hint (from the loss ``feedback``) added to each target demos param."""
    hint = prompts.HINT.format(feedback=feedback)
    return apply_updates(state, {p: prompts.SEPARATOR.join(v for v in (state[p].value, hint) if v) for p in targets})


def _echoes_hint(demo: Demo) -> bool:
    text = f"{demo.input}\n{demo.output}".lower()
    return any(word in text for word in prompts.HINT_ECHOES)


def _first_runs(results, state, context, knobs: DemosKnobs):
    """A program: the runs to harvest from first — the minibatch's, or the training split's (one Rerun)."""
    if knobs.scope == "minibatch":
        return tuple(results)
    ids = context.train_ids[:knobs.max_train]
    if not ids:
        raise StrategyError("bootstrap_demos(scope='train') needs the training split's ids (StepContext.train_ids); "
                            "the loop running it gave none: use scope='minibatch' with this loop")
    (runs,) = yield (Rerun(state, examples=ids),)
    return runs


def scan_demos(results, state, context, targets, knobs: DemosKnobs):
    """A program: demonstrations from plain runs, then resamples and rationalizations of the examples still failed.

    Returns ``(found, counts)``. Each resample round asks only the examples no run
    has passed yet, with a new sample index; rationalization asks each of those once
    more with a hint made from its loss feedback, and keeps the demo only if the whole
    pipeline then passed and the demo does not speak of the hint.
    """
    runs = yield from _first_runs(results, state, context, knobs)
    found = harvest(_passed(runs, knobs), targets, "plain")
    failed = [r for r in runs if r.loss.score < knobs.tau]
    counts = Stats(events={"scanned": len(runs)})
    for n in range(1, knobs.max_rounds + 1):
        if not failed:
            break
        (again,) = yield (Rerun(state, examples=tuple(r.example.id for r in failed), sample=n,
                                temperature=knobs.temperature),)
        passed = _passed(again, knobs)
        found += harvest(passed, targets, f"resample {n}")
        fixed = {r.example.id for r in passed}
        failed = [r for r in failed if r.example.id not in fixed]
        counts += Stats(events={"resampled": len(again)})
    if knobs.rationalize and failed:
        answers = yield tuple(Rerun(_hinted(state, targets, r.loss.feedback), examples=(r.example.id,)) for r in failed)
        hinted = [d for runs_ in answers for d in harvest(_passed(runs_, knobs), targets, "rationalized")]
        kept = [d for d in hinted if not _echoes_hint(d)]
        found += kept
        counts += Stats(events={"rationalize_asked": len(failed), "hint_echo": len(hinted) - len(kept)})
    return found, counts


def _per_param(pool: DemoPool, results, targets, knobs: DemosKnobs) -> tuple[dict[str, list[Demo]], list[Note]]:
    """The demonstrations of each target (none longer than ``max_chars``), and a note for each target with none
    yet or fewer than ``k``."""
    notes, per_param = [], {}
    for p in targets:
        mine = [d for d in pool.demos if d.param == p]
        have = within(mine, knobs.max_chars)
        if len(have) < len(mine):
            notes.append(Note(p, "proposed", f"{len(mine) - len(have)} demonstration(s) for {p!r} left out: input or "
                                             f"reply longer than max_chars={knobs.max_chars} (a demo is never cut)"))
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
        picked = draw_set(per_param, rng, knobs.k, knobs.max_set_chars)
        sig = tuple((p, tuple(sorted(d.key for d in ds))) for p, ds in picked.items())
        texts = {p: render_demos(ds) for p, ds in picked.items()}
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


def _no_target(state) -> Update:
    """Why there is nothing to fill: a note, or a StrategyError when the state has no demos param at all."""
    if not any(state[n].kind == "demos" for n in state.trainable_names):
        raise StrategyError("bootstrap_demos needs a trainable param of kind 'demos' read by an LLM node, and this "
                            "state has none: add an empty one to the node's system group, e.g. "
                            "funcgrad.add_peer(state, '<group>', '<node>_demos', Param('', kind='demos'))")
    return Update((), [Note("", "no_update", "no trainable param of kind 'demos' is read by a node of these traces")])


def _provenance(chosen_sets) -> str:
    return ", ".join(f"{d.example_id} ({d.source})" for ds in chosen_sets.values() for d in ds)


def _update(knobs: DemosKnobs):
    def update(results, state, s, context):
        pool = read_state(s, DemoPool, "bootstrap_demos")
        pool = attrs.evolve(pool, stats=pool.stats + Stats(steps=1))
        targets = _targets(results, state)
        if not targets:
            return _no_target(state), pool
        sig = _signature(state)
        if knobs.scope == "train" and sig in pool.scanned:
            found, counts = harvest(_passed(results, knobs), targets), Stats()
        else:
            found, counts = yield from scan_demos(results, state, context, targets, knobs)
            if knobs.scope == "train":
                pool = attrs.evolve(pool, scanned=(*pool.scanned, sig))
        pool = _harvested(pool, found, knobs, counts)
        per_param, notes = _per_param(pool, results, targets, knobs)
        if not per_param:
            return Update((), notes), pool
        rng = random.Random(derive_seed("bootstrap_demos", context.seed, context.step, context.attempt))
        sets = _draw_sets(per_param, state, context, rng, knobs)
        if not sets:
            notes.append(Note("", "no_update", "every demo set that can be drawn is the current value or was rejected "
                                               "this step"))
            return Update((), notes), pool
        values = [{p: render_demos(ds) for p, ds in picked.items()} for picked in sets]
        best, why, counts = yield from _choose(sets, values, state, rng)
        chosen = {p: v for p, v in values[best].items() if v != state[p].value}
        notes.append(Note("", "proposed", f"{why}; chose #{best} (demos from training examples "
                                          f"{_provenance(sets[best])})"))
        cands = [Candidate(p, state[p].value, v, "", f"set #{best}: demos from {_provenance({p: sets[best][p]})}")
                 for p, v in chosen.items()]
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
