"""Search over discrete candidates: instruction × reply format × demo set, chosen by successive halving.

What works when the optimizer model is small (docs/strategies.md, "search"): the
model *produces* candidates and demonstrations, and a search over them on
validation chooses. One :func:`search` step:

1. **slots**: the answer node (the last LLM call of the traces) and its trainable
   instruction and format params, plus every trainable ``demos`` param a node reads;
2. **formats**: the current format and the task-agnostic patterns of
   :mod:`funcgrad.strategies.prompts.patterns` (answer directly; step by step with
   an ``Answer:`` line; list what the question is about first);
3. **instructions**: the current one and ``proposals`` written by the optimizer
   model, each asked with a seeded random tip, kept only if every guard passes;
4. **demos**: for each format, the training split is run under it and its
   demonstrations harvested (plain runs, ``max_rounds`` resamples, rationalization:
   the harvest of :func:`~funcgrad.strategies.bootstrap_demos`); the demo sets of a
   format are "no demos" and ``demo_sets`` random draws of ``k`` from its harvest
   (demos harvested under one format are only combined with that format);
5. **halving**: up to ``max_candidates`` combinations (the current prompts always
   among them) are scored on ``minibatch`` validation examples, the best ``1/eta``
   go on to ``eta`` times as many (nested, so every comparison is paired), for
   ``rungs`` rungs; ties keep the earlier candidate (the current prompts first).

The best combination is the proposal; the training loop's acceptance rule makes the
final decision, as for any strategy. Every combination tried and its scores per rung
are in the step's notes, the winner's origin in its candidates.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from typing import Any

import attrs

from funcgrad.core.backward import Candidate
from funcgrad.core.calls import Request
from funcgrad.core.effects import Call, Validate
from funcgrad.core.errors import StrategyError
from funcgrad.core.run import mean_score
from funcgrad.core.seeds import derive_seed
from funcgrad.core.state import apply_updates
from funcgrad.core.strategy import Note, Strategy, Update, make_knobs
from funcgrad.core.strategy_state import Stats, read_state
from funcgrad.strategies.demos import DemosKnobs, draw_set, render_demos, scan_demos, within
from funcgrad.strategies.guards import check_proposal
from funcgrad.strategies.knobs import AT_MOST_ONE, NON_NEGATIVE_INT, POSITIVE_INT, PROMPT_CAP
from funcgrad.strategies.optimizer import OPTIMIZER
from funcgrad.strategies.prompts import patterns as pattern_texts
from funcgrad.strategies.prompts import search as prompts
from funcgrad.strategies.replies import closed_object, json_object
from funcgrad.strategies.text import clip

SCHEMA = json.dumps(closed_object({"instruction": {"type": "string"}}))


def _known_patterns(instance, attribute, value) -> None:
    unknown = [p for p in value if p not in pattern_texts.PATTERNS]
    if unknown:
        raise ValueError(f"patterns names unknown pattern(s) {unknown}; patterns are: "
                         f"{', '.join(pattern_texts.PATTERNS)}")


@attrs.frozen
class SearchKnobs:
    """Knobs of :func:`search` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> SearchKnobs(proposals=0).patterns
    ('direct', 'step_by_step', 'list_first')
    """

    patterns: tuple[str, ...] = attrs.field(default=tuple(pattern_texts.PATTERNS), converter=tuple,
                                            validator=_known_patterns)
    proposals: int = attrs.field(default=2, validator=NON_NEGATIVE_INT)
    demo_sets: int = attrs.field(default=2, validator=NON_NEGATIVE_INT)
    k: int = attrs.field(default=3, validator=POSITIVE_INT)
    max_train: int = attrs.field(default=16, validator=POSITIVE_INT)
    max_rounds: int = attrs.field(default=1, validator=NON_NEGATIVE_INT)
    rationalize: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    tau: float = attrs.field(default=1.0, validator=AT_MOST_ONE)
    max_candidates: int = attrs.field(default=12, validator=POSITIVE_INT)
    minibatch: int = attrs.field(default=4, validator=POSITIVE_INT)
    eta: int = attrs.field(default=2, validator=[attrs.validators.instance_of(int), attrs.validators.ge(2)])
    rungs: int = attrs.field(default=3, validator=POSITIVE_INT)
    max_chars: int = attrs.field(default=1200, validator=POSITIVE_INT)
    max_set_chars: int = attrs.field(default=6000, validator=PROMPT_CAP)
    optimizer_model: str = ""
    optimizer_max_tokens: int = attrs.field(default=200, validator=POSITIVE_INT)

    def harvest(self) -> DemosKnobs:
        """The harvest settings, as :func:`~funcgrad.strategies.bootstrap_demos` knobs."""
        return DemosKnobs(k=self.k, tau=self.tau, max_chars=self.max_chars, scope="train", max_train=self.max_train,
                          max_rounds=self.max_rounds, rationalize=self.rationalize, max_set_chars=self.max_set_chars)


@attrs.frozen
class Slots:
    """The params a search fills: the answer node's ``instruction`` and ``format`` (None: none) and ``demos``."""

    node: str
    instruction: str | None
    format: str | None
    demos: tuple[str, ...]


@attrs.frozen
class Combination:
    """One candidate: the values it sets, and where each came from (for notes and reports)."""

    values: tuple[tuple[str, str], ...]
    origin: str


# ---------------------------------------------------------------- the steps


def find_slots(results, state) -> Slots:
    """The answer node (the last LLM call of the first trace) and the trainable params the search may fill."""
    llm = [r for res in results for r in res.trace.records if r.kind == "llm"]
    if not llm:
        raise StrategyError("search found no LLM call in the minibatch's traces: there is no prompt to search")
    node = [r for r in results[0].trace.records if r.kind == "llm"][-1].node
    read = [p for r in llm if r.node == node for p in r.params]
    trainable = set(state.trainable_names)

    def first(kind):
        return next((p for p in read if p in trainable and state[p].kind == kind), None)

    demos = tuple(dict.fromkeys(p for r in llm for p in r.params if p in trainable and state[p].kind == "demos"))
    return Slots(node, first("instruction"), first("format"), demos)


def format_options(state, slots: Slots, knobs: SearchKnobs) -> list[tuple[str, str]]:
    """``(name, text)`` of each format to try: the current one first, then the patterns that differ from it."""
    if slots.format is None:
        return [("current", "")]
    current = state[slots.format].value
    return [("current", current)] + [(n, pattern_texts.PATTERNS[n]) for n in knobs.patterns
                                     if pattern_texts.PATTERNS[n] != current]


def _proposal_request(state, slots: Slots, pool, tip: str, index: int, context, knobs: SearchKnobs) -> Request:
    shown = [d for d in pool if d.param in slots.demos][:2]
    demos = "\n\n".join(prompts.DEMO.format(input=clip(d.input, 400), output=clip(d.output, 400)) for d in shown)
    param = state[slots.instruction]
    body = prompts.BODY.format(role=param.role or slots.instruction, current=param.value,
                               demos=demos or prompts.NO_DEMOS, tip=prompts.TIP.format(tip=tip) if tip else "")
    return Request(messages=(("system", prompts.SYSTEM), ("user", body)), model=knobs.optimizer_model,
                   temperature=1.0, max_tokens=knobs.optimizer_max_tokens, seed=derive_seed(context.seed, context.step),
                   sample=index, role=OPTIMIZER, json_schema=SCHEMA)


def instruction_options(results, state, slots: Slots, pool, context, knobs: SearchKnobs, rng: random.Random):
    """A program: ``(name, text)`` of each instruction to try (current first) and the counts of its guards."""
    if slots.instruction is None:
        return [("current", "")], Stats()
    current = state[slots.instruction].value
    if not knobs.proposals:
        return [("current", current)], Stats()
    tips = [rng.choice(sorted(pattern_texts.TIPS)) for _ in range(knobs.proposals)]
    requests = [_proposal_request(state, slots, pool, pattern_texts.TIPS[t], i, context, knobs) for i, t in enumerate(tips)]
    logs = yield tuple(Call(r) for r in requests)
    options, counts = [("current", current)], Stats(calls={OPTIMIZER: len(requests)})
    for tip, log in zip(tips, logs):
        reply = log.response
        data, guard = json_object(reply.text, reply.finish_reason, lambda d: isinstance(d.get("instruction"), str))
        text = (data or {}).get("instruction", "").strip()
        if not guard:
            guard, _ = check_proposal(text, current, results, tau=knobs.tau, rejected=tuple(t for _, t in options),
                                      labels=context.labels, names=state.names, role=state[slots.instruction].role)
        if guard:
            counts += Stats(rejections={str(guard): 1})
            continue
        options.append((f"written by call {log.id} ({tip} tip)", text))
    return options, counts


def harvest_by_format(results, state, slots: Slots, formats, context, knobs: SearchKnobs):
    """A program: for each format, the demonstrations harvested with it (none when there is no demos param)."""
    pools, counts = [], Stats()
    for _, text in formats:
        if not slots.demos:
            pools.append([])
            continue
        values = {p: "" for p in slots.demos} | ({slots.format: text} if slots.format else {})
        found, n = yield from scan_demos(results, apply_updates(state, values), context, slots.demos, knobs.harvest())
        pools.append(list({d.key: d for d in found}.values()))
        counts += n
    return pools, counts


def combinations(state, slots: Slots, instructions, formats, pools, knobs: SearchKnobs, rng: random.Random):
    """Every (instruction, format, demo set) candidate, the current prompts first, at most ``max_candidates``."""
    out = []
    for f, (fname, ftext) in enumerate(formats):
        usable = within(pools[f], knobs.max_chars)
        per_param = {p: have for p in slots.demos if (have := [d for d in usable if d.param == p])}
        sets = [("no demos", {p: "" for p in slots.demos})]
        for j in range(knobs.demo_sets if usable else 0):
            picked = draw_set(per_param, rng, knobs.k, knobs.max_set_chars)
            texts = {p: render_demos(ds) for p, ds in picked.items()}
            ids = " / ".join((f"{p}: " if len(picked) > 1 else "") + ", ".join(f"{d.example_id} ({d.source})" for d in ds)
                             for p, ds in picked.items())
            if texts and all(texts != t for _, t in sets):
                sets.append((f"demo set {j + 1}: {ids}", texts))
        for iname, itext in instructions:
            for dname, dtexts in sets:
                values = dict(dtexts)
                if slots.instruction:
                    values[slots.instruction] = itext
                if slots.format:
                    values[slots.format] = ftext
                out.append(Combination(tuple(sorted(values.items())), f"instruction {iname}; format {fname}; {dname}"))
    current = Combination(tuple(sorted((p, state[p].value) for p, _ in out[0].values)), "the current prompts")
    rest = [c for c in out if c.values != current.values]
    rest = list({c.values: c for c in rest}.values())
    picked = rng.sample(rest, min(len(rest), knobs.max_candidates - 1))
    return [current] + picked


def halving(state, candidates: Sequence[Combination], knobs: SearchKnobs, rng: random.Random):
    """A program: successive halving on nested validation minibatches; returns (best index, notes, counts)."""
    seed = rng.randrange(2**31)
    alive, size, history = list(range(len(candidates))), knobs.minibatch, {i: [] for i in range(len(candidates))}
    evaluations = 0
    for rung in range(knobs.rungs):
        answers = yield tuple(Validate(apply_updates(state, dict(candidates[i].values)), seed, size=size) for i in alive)
        evaluations += len(alive)
        scores = {i: mean_score(a) for i, a in zip(alive, answers)}
        for i, a in zip(alive, answers):
            history[i].append(f"{scores[i]:.2f} on {len(a)}")
        if len(alive) == 1 or rung == knobs.rungs - 1:
            break
        alive = sorted(alive, key=lambda i: (-scores[i], i))[: max(1, math.ceil(len(alive) / knobs.eta))]
        size *= knobs.eta
    best = max(alive, key=lambda i: (scores[i], -i))
    notes = [Note("", "proposed" if i == best else "no_update",
                  f"candidate {i}: {candidates[i].origin}: {' -> '.join(history[i])}") for i in range(len(candidates))]
    return best, notes, Stats(events={"evaluated": evaluations})


def _update(knobs: SearchKnobs):
    def update(results, state, s, context):
        stats = read_state(s, Stats, "search") + Stats(steps=1)
        rng = random.Random(derive_seed("search", context.seed, context.step, context.attempt))
        slots = find_slots(results, state)
        formats = format_options(state, slots, knobs)
        pools, harvested = yield from harvest_by_format(results, state, slots, formats, context, knobs)
        instructions, written = yield from instruction_options(results, state, slots, pools[0], context, knobs, rng)
        candidates = combinations(state, slots, instructions, formats, pools, knobs, rng)
        stats += harvested + written
        if len(candidates) == 1:
            return Update((), [Note("", "no_update", "no candidate besides the current prompts")]), stats
        best, notes, counted = yield from halving(state, candidates, knobs, rng)
        stats += counted
        chosen = {p: v for p, v in candidates[best].values if v != state[p].value}
        cands = [Candidate(p, state[p].value, v, "", f"candidate {best}: {candidates[best].origin}") for p, v in chosen.items()]
        return Update(chosen, notes, (), cands), stats

    return update


def search(**knobs: Any) -> Strategy:
    """Successive halving over instruction × format × demo-set candidates (see the module docstring).

    Knobs (:class:`SearchKnobs`; an unknown or invalid one is a ConfigError):
    ``patterns`` (names in :data:`~funcgrad.strategies.prompts.patterns.PATTERNS`; ``()``:
    only the current format), ``proposals`` (instructions written by the optimizer,
    0: none), ``demo_sets`` and ``k`` (demo sets per format and demos per set),
    ``max_train``, ``max_rounds``, ``rationalize``, ``tau`` (the harvest, as in
    :func:`~funcgrad.strategies.bootstrap_demos`), ``max_candidates``, ``minibatch``,
    ``eta``, ``rungs`` (the halving), ``max_chars`` / ``max_set_chars`` (a demo
    longer than ``max_chars`` is left out, a set is shrunk whole demo by whole demo),
    ``optimizer_model`` and ``optimizer_max_tokens``.

    >>> search(proposals=0, rungs=2).config["rungs"]
    2
    """
    kn = make_knobs(SearchKnobs, "search", knobs)
    return Strategy("search", lambda state: Stats(), _update(kn), kn)
