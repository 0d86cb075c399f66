"""Bootstrapped demonstrations: a node's own correct work on training examples, as its demos.

Every step, :func:`bootstrap_demos` harvests from the training minibatch's traces
each call of an LLM node that reads a trainable ``demos``-kind param, on examples
that scored ``>= tau``: the node's rendered input (its user message, exactly as the
trace recorded it) and its *whole* output (listing, reasoning and answer, not only
the final answer). The trace records what every node saw and said, so this works
for inner nodes of a multi-node pipeline as well as the last one. The harvest
accumulates in the strategy state ``S`` (a JSON list, at most ``max_pool``), so
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
from typing import Any

import attrs

from funcgrad import Note, PromptState, Strategy, Update, apply_updates, derive_seed, mean_score
from funcgrad.core.backward import Candidate
from funcgrad.core.effects import Validate
from funcgrad.core.strategy import make_knobs
from funcgrad.strategies import proposals as P
from funcgrad.strategies.prompts import demos as T



@attrs.frozen
class DemosKnobs:
    """Knobs of :func:`bootstrap_demos` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> DemosKnobs(k=2).k
    2
    """

    k: int = attrs.field(default=3, validator=P.POSITIVE_INT)
    n_sets: int = attrs.field(default=4, validator=P.POSITIVE_INT)
    tau: float = attrs.field(default=1.0, validator=[attrs.validators.instance_of((int, float)), attrs.validators.le(1)])
    max_pool: int = attrs.field(default=60, validator=P.POSITIVE_INT)
    max_chars: int = attrs.field(default=700, validator=P.POSITIVE_INT)


def harvest(results, params) -> list[dict]:
    """Demonstrations in ``results``: one per call of a node reading one of ``params``, on examples scoring >= tau.

    Each is ``{"id", "param", "node", "call", "input", "output", "score"}`` (a JSON
    dict); ``results`` are assumed already filtered by score.
    """
    out = []
    for res in results:
        for r in res.trace.records:
            if r.kind != "llm" or r.error is not None or r.output is None:
                continue
            for p in params:
                if p in r.params and str(r.output).strip():
                    out.append({"id": res.example.id, "param": p, "node": r.node, "call": r.call_index,
                                "input": r.user_text, "output": str(r.output).strip(), "score": res.loss.score})
    return out


def render_demos(demos, max_chars: int = 700) -> str:
    """The text of a demos param holding ``demos`` (dicts with ``input`` and ``output``).

    >>> print(render_demos([{"input": "I have a cat. How many animals?", "output": "cat: 1. Answer: 1"}]))
    Worked examples (an input, then a correct reply):
    <BLANKLINE>
    Input:
    I have a cat. How many animals?
    Reply:
    cat: 1. Answer: 1
    """
    blocks = [T.DEMO.format(input=P.clip(d["input"], max_chars), output=P.clip(d["output"], max_chars)) for d in demos]
    return T.SEPARATOR.join([T.HEADER, *blocks])


def _key(d: dict) -> tuple:
    return (d["id"], d["param"], d["node"], d["call"])


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

    def init(state):
        return P.freeze_state({"pool": [], "steps": 0, "events": {}})

    def update(results, state, s, context):
        s = P.thaw_state(s) or {"pool": [], "steps": 0, "events": {}}
        s["steps"] = s.get("steps", 0) + 1
        done = lambda upd: (upd, P.freeze_state(s))  # noqa: E731
        read = {p for res in results for r in res.trace.records for p in r.params}
        targets = [n for n in state.trainable_names if state[n].kind == "demos" and n in read]
        if not targets:
            return done(Update((), [Note("", "no_update", "no trainable param of kind 'demos' is read by a node of "
                                                           "these traces; give the node a demos peer param")]))
        good = [r for r in results if r.loss.score >= kn.tau]
        known = {_key(d) for d in s["pool"]}
        fresh = [d for d in harvest(good, targets) if _key(d) not in known]
        s["pool"] = (s["pool"] + fresh)[-kn.max_pool:]
        s["events"] = P.bump(s["events"], "harvested", len(fresh))
        notes, per_param = [], {}
        for p in targets:
            have = [d for d in s["pool"] if d["param"] == p]
            nodes = ", ".join(sorted({r.node for res in results for r in res.trace.records if p in r.params}))
            if not have:
                notes.append(Note(p, "no_update", f"no demonstration for {p!r} yet: node {nodes} has not scored >= "
                                                  f"{kn.tau} on any training example seen so far (fix its instruction "
                                                  f"first, or lower tau)"))
                continue
            if len(have) < kn.k:
                notes.append(Note(p, "proposed", f"only {len(have)} demonstration(s) for {p!r} so far (k={kn.k}): "
                                                 f"using {len(have)}"))
            per_param[p] = have
        if not per_param:
            return done(Update((), notes))
        rng = random.Random(derive_seed("bootstrap_demos", context.seed, context.step, context.attempt))
        rejected = {p: set(P.rejected_values(context, p)) for p in per_param}
        sets: list[dict[str, list[dict]]] = []
        seen: set[tuple] = set()
        for _ in range(kn.n_sets):
            picked = {p: rng.sample(have, min(kn.k, len(have))) for p, have in per_param.items()}
            sig = tuple((p, tuple(sorted(_key(d) for d in ds))) for p, ds in picked.items())
            texts = {p: render_demos(ds, kn.max_chars) for p, ds in picked.items()}
            if sig in seen or all(texts[p] in rejected[p] or texts[p] == state[p].value for p in texts):
                continue
            seen.add(sig)
            sets.append(picked)
        if not sets:
            notes.append(Note("", "no_update", "every demo set that can be drawn is the current value or was rejected "
                                               "this step"))
            return done(Update((), notes))
        values = [{p: render_demos(ds, kn.max_chars) for p, ds in picked.items()} for picked in sets]
        best, why = 0, "one candidate demo set: no selection needed"
        if len(sets) > 1:
            eval_seed = rng.randrange(2**31)
            answers = yield tuple(Validate(apply_updates(state, v), eval_seed) for v in values)
            scores = [mean_score(a) for a in answers]
            best = max(range(len(sets)), key=lambda i: (scores[i], -i))
            why = "candidate sets on one validation minibatch: " + ", ".join(f"#{i}={x:.2f}" for i, x in enumerate(scores))
            s["events"] = P.bump(s["events"], "validated", len(sets))
        chosen = {p: v for p, v in values[best].items() if v != state[p].value}
        ids = sorted({d["id"] for ds in sets[best].values() for d in ds})
        notes.append(Note("", "proposed", f"{why}; chose #{best} (demos from training examples {', '.join(ids)})"))
        cands = [Candidate(p, state[p].value, v, "", f"set #{best}") for p, v in chosen.items()]
        return done(Update(chosen, notes, (), cands))

    return Strategy("bootstrap_demos", init, update, kn)
