"""GEPA-style reflective prompt evolution with Pareto selection, as an effect program.

The strategy keeps a *pool* of candidate states in ``S`` (a
:class:`~funcgrad.core.strategy_state.Pool` of their trainable values),
each with its score on every example of one fixed validation minibatch (a
``Validate`` effect with a seed derived from the run's seed only, so all candidates
are scored on the same examples: paired). Each step:

1. put the current state into the pool if it is not there, and score every
   unscored entry (one batch of ``Validate`` effects);
2. pick a parent from the per-example Pareto front: the entries best on at least
   one validation example, dominated ones removed, drawn with probability
   proportional to how many examples each is best on (a seeded stream: the run's
   seed, the step and the attempt);
3. run the training minibatch under the parent (``Rerun``; the given results when
   the parent is the current state); skip the step when it is perfect there;
4. reflect: ONE optimizer call (role ``optimizer``) shows the parent's text of one
   component (round robin over the trainable params the traces read, except those of
   kind ``demos``: worked examples are :func:`~funcgrad.strategies.bootstrap_demos`'s
   to build; the 1.5B's reflections on them described the param or copied a training
   example in 4 of 4, docs/results.md §11), the node's
   inputs and replies and the feedback, and asks for the improved text as
   schema-constrained JSON ``{"diagnosis", "text"}`` (``json_schema=False``: between
   ``<NEW_VALUE>`` tags; the 1.5B model often stops after its diagnosis and writes no
   tagged value, docs/results.md §11); the shared guards (:func:`~funcgrad.strategies.guards.check_value`) apply;
5. keep the child only if it strictly improves the parent's minibatch score (``Rerun``),
   then score it on the validation minibatch and add it to the pool (at most
   ``pool_size`` entries: the lowest mean goes, never the best);
6. propose the pool's best entry by mean validation score (relative to the given
   state) when it was not proposed before; the training loop's acceptance rule decides.

Every prompt text lives in :mod:`funcgrad.strategies.prompts.gepa`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import attrs
import toolz

from funcgrad.core.backward import Candidate
from funcgrad.core.effects import Rerun, Validate, ask
from funcgrad.core.run import mean_score
from funcgrad.core.seeds import derive_seed
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.core.strategy import Note, Strategy, Update, make_knobs
from funcgrad.core.strategy_state import Pool, PoolEntry, Stats, read_state
from funcgrad.strategies.guards import Guard, check_proposal
from funcgrad.strategies.knobs import NON_NEGATIVE, POSITIVE_INT, PROMPT_CAP, check_skip_guards
from funcgrad.strategies.optimizer import OPTIMIZER, optimizer_request
from funcgrad.strategies.prompts import gepa as prompts
from funcgrad.strategies.replies import closed_object, extract_fenced, json_object
from funcgrad.strategies.text import CLOSE, CURRENT_TAG, OPEN, clip, fence, fit_prompt, one_line


@attrs.frozen
class GepaKnobs:
    """Knobs of :func:`gepa` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> GepaKnobs(pool_size=4).pool_size
    4
    """

    pool_size: int = attrs.field(default=8, validator=POSITIVE_INT)
    max_examples: int = attrs.field(default=4, validator=POSITIVE_INT)
    max_chars: int = attrs.field(default=300, validator=POSITIVE_INT)
    max_value_chars: int = attrs.field(default=1500, validator=POSITIVE_INT)
    max_prompt_chars: int = attrs.field(default=4000, validator=PROMPT_CAP)
    optimizer_max_tokens: int = attrs.field(default=300, validator=POSITIVE_INT)
    optimizer_temperature: float = attrs.field(default=0.0, validator=NON_NEGATIVE)
    retry_temperature: float = attrs.field(default=0.7, validator=NON_NEGATIVE)
    optimizer_model: str = ""
    json_schema: bool = True
    skip_guards: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=check_skip_guards)


def _values(state: PromptState) -> dict[str, str]:
    return {n: state[n].value for n in state.trainable_names}


def _state_of(state: PromptState, values) -> PromptState:
    return apply_updates(state, {n: v for n, v in values.items() if n in state and state[n].value != v})


def pareto_front(pool: Sequence[PoolEntry]) -> dict[int, int]:
    """Entry index -> on how many examples it is best, over the non-dominated scored entries.

    >>> pool = [PoolEntry({}, {"a": 1, "b": 0}), PoolEntry({}, {"a": 0, "b": 1}), PoolEntry({}, {"a": 0, "b": 0})]
    >>> pareto_front(pool)
    {0: 1, 1: 1}
    """
    scored = [i for i, e in enumerate(pool) if e.scores]
    ids = sorted({x for i in scored for x in pool[i].scores})

    def at(i, x):
        return pool[i].scores.get(x, 0.0)

    counts: dict[int, int] = {}
    for x in ids:
        top = max(at(i, x) for i in scored)
        for i in scored:
            if at(i, x) == top:
                counts[i] = counts.get(i, 0) + 1

    def dominated(i):
        return any(all(at(j, x) >= at(i, x) for x in ids) and any(at(j, x) > at(i, x) for x in ids)
                   for j in counts if j != i)

    return {i: n for i, n in counts.items() if not dominated(i)}


def _run_block(n: int, res, name: str, knobs: GepaKnobs) -> list[str]:
    """One reflection example: the inputs and replies of the nodes reading ``name``, then the feedback."""
    block = [prompts.EXAMPLE.format(n=n, score=res.loss.score)]
    for r in res.trace.records:
        if r.kind == "llm" and name in r.params:
            block.append(prompts.INPUT.format(node=r.node, text=one_line(r.user_text, knobs.max_chars)))
            block.append(prompts.REPLY.format(node=r.node, text=one_line(r.output if r.error is None else "ERROR: " + r.error, knobs.max_chars)))
    block.append(prompts.FEEDBACK.format(text=one_line(res.loss.feedback or f"score {res.loss.score:.2f}", knobs.max_chars)))
    return block


def reflection_prompt(name: str, state: PromptState, results, knobs: GepaKnobs) -> tuple[str, str]:
    """System and user text of the reflection call for component ``name`` on ``results``."""
    param = state[name]
    nodes = ", ".join(f"`{n}`" for n in toolz.unique(r.node for res in results for r in res.trace.records if name in r.params))
    head = [prompts.TARGET.format(name=name, kind=param.kind, nodes=nodes or "the program")]
    if param.role:
        head.append(prompts.ROLE.format(role=clip(param.role, 300)))
    current = clip(param.value, knobs.max_value_chars)
    # a JSON reply quotes the current text as a JSON string; the 1.5B copied a <CURRENT_VALUE> fence as its "text"
    head += [prompts.CURRENT, json.dumps(current) if knobs.json_schema else fence(current, CURRENT_TAG)]
    order = sorted(results, key=lambda r: r.loss.score)[: knobs.max_examples]
    head.append(prompts.RUNS.format(shown=len(order)))
    blocks = [_run_block(n, res, name, knobs) for n, res in enumerate(order, 1)]
    ask_text = prompts.ASK_JSON if knobs.json_schema else prompts.ASK
    tail = [ask_text.format(name=name, max_chars=knobs.max_value_chars, open=OPEN, close=CLOSE)]
    return prompts.SYSTEM, fit_prompt(head, blocks, tail, knobs.max_prompt_chars)


def _schema(max_len: int) -> str:
    text = {"type": "string", "maxLength": max_len}
    props = {"diagnosis": {"type": "string", "maxLength": 300}, "text": text}
    return json.dumps(closed_object(props))


def reply_value(text: str, finish_reason: str, json_schema: bool) -> tuple[str | None, str, str]:
    """``(value, guard, reason)`` of a reflection reply: the JSON ``text`` field, or the tagged value.

    >>> reply_value('{"diagnosis": "d", "text": "Count."}', "stop", True)
    ('Count.', '', '')
    >>> reply_value('{"diagnosis": "they overcount"', "length", True)[1]
    <Guard.TRUNCATED: 'truncated'>
    """
    if not json_schema:
        value, guard = extract_fenced(text, finish_reason=finish_reason)
        return value, guard, "optimizer reply had no value between the tags" if value is None else ""
    data, guard = json_object(text, finish_reason, lambda d: isinstance(d.get("text"), str))
    if data is not None:
        return data["text"].strip(), "", ""
    if guard == Guard.TRUNCATED:
        return None, guard, "optimizer reply was cut by the token cap"
    return None, guard, "optimizer reply is not JSON with a string 'text'"


# ---------------------------------------------------------------- the update, step by step


def _scores(results) -> dict[str, float]:
    return {r.example.id: r.loss.score for r in results}


def _scored_pool(pool: Pool, state: PromptState, val_seed: int):
    """A program: the pool with the current state added (if new) and every unscored entry scored (one batch)."""
    entries = list(pool.entries)
    if not any(e.values == _values(state) for e in entries):
        entries.append(PoolEntry(_values(state)))
    unscored = [i for i, e in enumerate(entries) if e.scores is None]
    counts = Stats()
    if unscored:
        answers = yield tuple(Validate(_state_of(state, entries[i].values), val_seed) for i in unscored)
        for i, res in zip(unscored, answers):
            entries[i] = attrs.evolve(entries[i], scores=_scores(res))
        counts = Stats(events={"evaluations": len(unscored)})
    return attrs.evolve(pool, entries=entries), counts


def _pick_parent(pool: Pool, context) -> int:
    """A parent drawn from the Pareto front, weighted by how many examples each is best on (seeded stream)."""
    rng = random.Random(derive_seed("gepa", context.seed, context.step, context.attempt))
    front = pareto_front(pool.entries)
    ids = sorted(front)
    return rng.choices(ids, weights=[front[i] for i in ids])[0] if ids else 0


def _parent_results(parent_state, is_current: bool, results):
    """A program: the minibatch under the parent (the given results when the parent is the current state)."""
    if is_current:
        return results, Stats()
    (parent_results,) = yield (Rerun(parent_state),)
    return parent_results, Stats(events={"reruns": 1})


def _components(state: PromptState, results) -> list[str]:
    """The trainable text params (not demos) the traces read: the components reflected on, round robin."""
    return [n for n in state.trainable_names if state[n].kind != "demos"
            and any(n in r.params for res in results for r in res.trace.records)]


def _reflection_call(name, parent_state, parent_results, context, knobs):
    """A program: the reflection call for ``name``; returns its value, guard, reason and the call's id."""
    system, body = reflection_prompt(name, parent_state, parent_results, knobs)
    request = optimizer_request(system, body, context, knobs, _schema(knobs.max_value_chars) if knobs.json_schema else None)
    log = yield from ask(request)
    return (*reply_value(log.response.text, log.response.finish_reason, knobs.json_schema), log.id)


def _child(pool: Pool, parent: int, name: str, value: str, before: float, state, val_seed):
    """A program: rerun the child on the minibatch; a child that improves is validated and joins the pool."""
    child_values = dict(pool.entries[parent].values, **{name: value})
    child_state = _state_of(state, child_values)
    (child_results,) = yield (Rerun(child_state),)
    after = mean_score(child_results)
    if after <= before:
        note = Note(name, "no_update", f"child of #{parent} did not improve the minibatch ({after:.2f} <= {before:.2f})")
        return pool, note, Stats(events={"child_lost_minibatch": 1})
    (val_results,) = yield (Validate(child_state, val_seed),)
    child = PoolEntry(child_values, _scores(val_results), parent)
    note = Note(name, "proposed", f"child of #{parent} improved the minibatch ({before:.2f} -> "
                                  f"{after:.2f}); validation mean {child.mean:.2f}")
    return attrs.evolve(pool, entries=(*pool.entries, child)), note, Stats(events={"children": 1})


def _reflect(pool: Pool, parent: int, parent_state, parent_results, state, results, context, knobs, val_seed):
    """A program: reflect on one component of the parent and try the child; returns pool, candidates, notes, counts."""
    names = _components(state, results)
    if not names:
        return pool, [], [Note("", "no_update", "no trainable text parameter (other than demos) is read by these traces")], Stats()
    if parent_results and all(r.loss.score >= 1.0 for r in parent_results):
        return pool, [], [Note("", "no_update", f"parent #{parent} is perfect on this minibatch: nothing to reflect on")], Stats()
    name = names[pool.cursor % len(names)]
    pool = attrs.evolve(pool, cursor=pool.cursor + 1)
    value, guard, reason, call = yield from _reflection_call(name, parent_state, parent_results, context, knobs)
    old = parent_state[name].value
    if value is not None:
        guard, reason = check_proposal(
            value, old, parent_results, names=state.names, role=state[name].role, labels=context.labels,
            rejected=[e.values.get(name, "") for e in pool.entries if e.values.get(name) != old],
            max_value_chars=knobs.max_value_chars, skip=knobs.skip_guards,
        )
    candidates = [Candidate(name, old, value, guard, reason, (), call)]
    counts = Stats(calls={OPTIMIZER: 1})
    if guard:
        return pool, candidates, [Note(name, "no_update", f"{guard}: {reason}")], counts + Stats(rejections={guard: 1})
    pool, note, more = yield from _child(pool, parent, name, value, mean_score(parent_results), state, val_seed)
    return pool, candidates, [note], counts + more


def _best(entries) -> int:
    return max(range(len(entries)), key=lambda i: (entries[i].mean, -i))


def _trimmed(pool: Pool, size: int) -> Pool:
    """The pool without its lowest-mean entry when it holds more than ``size`` (never the best)."""
    if len(pool.entries) <= size:
        return pool
    best = _best(pool.entries)
    worst = min((i for i in range(len(pool.entries)) if i != best), key=lambda i: (pool.entries[i].mean, i))
    return attrs.evolve(pool, entries=pool.entries[:worst] + pool.entries[worst + 1:])


def _proposal(pool: Pool, state: PromptState, candidates) -> tuple[dict, Note, list, Pool]:
    """The pool's best entry as a proposal relative to ``state``, unless it is the current state or was proposed."""
    best = _best(pool.entries)
    entry = pool.entries[best]
    values = {n: v for n, v in entry.values.items() if n in state and state[n].value != v}
    if not values:
        return {}, Note("", "no_update", f"the pool's best (#{best}, mean {entry.mean:.2f}) is the current state"), candidates, pool
    if values in pool.proposed:
        return {}, Note("", "no_update", f"the pool's best (#{best}) was proposed before"), candidates, pool
    have = {(c.param, c.value) for c in candidates if not c.guard}
    candidates = [*candidates, *(Candidate(n, state[n].value, v, "", f"pool entry #{best}") for n, v in values.items() if (n, v) not in have)]
    note = Note("", "proposed", f"the pool's best: #{best} (mean {entry.mean:.2f} on the validation minibatch)")
    return values, note, candidates, attrs.evolve(pool, proposed=(*pool.proposed, values))


def _update(knobs: GepaKnobs):
    def update(results, state, s, context):
        pool = read_state(s, Pool, "gepa")
        val_seed = derive_seed("gepa-validation", context.seed)
        pool, counts = yield from _scored_pool(pool, state, val_seed)
        parent = _pick_parent(pool, context)
        parent_state = _state_of(state, pool.entries[parent].values)
        parent_results, more = yield from _parent_results(parent_state, pool.entries[parent].values == _values(state), results)
        pool, candidates, notes, reflected = yield from _reflect(pool, parent, parent_state, parent_results, state,
                                                                 results, context, knobs, val_seed)
        values, note, candidates, pool = _proposal(_trimmed(pool, knobs.pool_size), state, candidates)
        stats = pool.stats + Stats(steps=1) + counts + more + reflected
        return Update(values, [*notes, note], (), candidates), attrs.evolve(pool, stats=stats)

    return update


def gepa(**knobs: Any) -> Strategy:
    """Reflective prompt evolution with Pareto selection over a pool of candidate states (see module docs).

    Knobs (:class:`GepaKnobs`; an unknown or invalid one, e.g. ``pool_size=0``, is a
    ConfigError): ``pool_size`` (candidates kept); ``max_examples``, ``max_chars``,
    ``max_prompt_chars``: the reflection prompt's bounds; ``max_value_chars``: the
    longest text accepted; ``optimizer_max_tokens``, ``optimizer_temperature``,
    ``retry_temperature`` (once a proposal of the step was rejected),
    ``optimizer_model``: the reflection call; ``json_schema``: ask for
    schema-constrained JSON (default) instead of tags; ``skip_guards``: guards
    switched off.

    Effects per step: Validate for each unscored pool entry (first step: the initial
    state), a Rerun of the parent when it is not the current state, 1 reflection
    call, a Rerun of the child, and a Validate of a child that improved the
    minibatch. Set ``[train] val_batch`` to the validation set's size to score the
    pool on all of it.

    >>> gepa(pool_size=4).config["pool_size"]
    4
    """
    k = make_knobs(GepaKnobs, "gepa", knobs)
    return Strategy("gepa", lambda state: Pool((PoolEntry(_values(state)),)), _update(k), k)
