"""GEPA-style reflective prompt evolution with Pareto selection, as an effect program.

The strategy keeps a *pool* of candidate states in ``S`` (their trainable values),
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
   tagged value, docs/results.md §11); the shared guards (:func:`~funcgrad.strategies.proposals.check_value`) apply;
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
from typing import Any

import attrs
import toolz

from funcgrad import Note, PromptState, Request, Strategy, Update, apply_updates, derive_seed, mean_score
from funcgrad.core.backward import Candidate
from funcgrad.core.effects import Rerun, Validate, ask
from funcgrad.core.strategy import make_knobs
from funcgrad.strategies import proposals as P
from funcgrad.strategies.prompts import gepa as T



@attrs.frozen
class GepaKnobs:
    """Knobs of :func:`gepa` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> GepaKnobs(pool_size=4).pool_size
    4
    """

    pool_size: int = attrs.field(default=8, validator=P.POSITIVE_INT)
    max_examples: int = attrs.field(default=4, validator=P.POSITIVE_INT)
    max_chars: int = attrs.field(default=300, validator=P.POSITIVE_INT)
    max_value_chars: int = attrs.field(default=1500, validator=P.POSITIVE_INT)
    max_prompt_chars: int = attrs.field(default=4000, validator=[attrs.validators.instance_of(int), attrs.validators.ge(500)])
    optimizer_max_tokens: int = attrs.field(default=300, validator=P.POSITIVE_INT)
    optimizer_temperature: float = attrs.field(default=0.0, validator=P.NON_NEGATIVE)
    retry_temperature: float = attrs.field(default=0.7, validator=P.NON_NEGATIVE)
    optimizer_model: str = ""
    json_schema: bool = True
    skip_guards: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=P.check_skip_guards)


def _values(state: PromptState) -> dict[str, str]:
    return {n: state[n].value for n in state.trainable_names}


def _state_of(state: PromptState, values: dict[str, str]) -> PromptState:
    return apply_updates(state, {n: v for n, v in values.items() if n in state and state[n].value != v})


def _mean(entry: dict) -> float:
    scores = entry["scores"] or {}
    return sum(scores.values()) / len(scores) if scores else 0.0


def pareto_front(pool: list[dict]) -> dict[int, int]:
    """Entry index -> on how many examples it is best, over the non-dominated scored entries.

    >>> pool = [{"scores": {"a": 1, "b": 0}}, {"scores": {"a": 0, "b": 1}}, {"scores": {"a": 0, "b": 0}}]
    >>> pareto_front(pool)
    {0: 1, 1: 1}
    """
    scored = [i for i, e in enumerate(pool) if e["scores"]]
    ids = sorted({x for i in scored for x in pool[i]["scores"]})

    def at(i, x):
        return pool[i]["scores"].get(x, 0.0)

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


def reflection_prompt(name: str, state: PromptState, results, knobs: GepaKnobs) -> tuple[str, str]:
    """System and user text of the reflection call for component ``name`` on ``results``."""
    param = state[name]
    nodes = ", ".join(f"`{n}`" for n in toolz.unique(r.node for res in results for r in res.trace.records if name in r.params))
    head = [T.TARGET.format(name=name, kind=param.kind, nodes=nodes or "the program")]
    if param.role:
        head.append(T.ROLE.format(role=P.clip(param.role, 300)))
    current = P.clip(param.value, knobs.max_value_chars)
    # a JSON reply quotes the current text as a JSON string; the 1.5B copied a <CURRENT_VALUE> fence as its "text"
    head += [T.CURRENT, json.dumps(current) if knobs.json_schema else P.fence(current, P.CURRENT_TAG)]
    order = sorted(results, key=lambda r: r.loss.score)[: knobs.max_examples]
    head.append(T.RUNS.format(shown=len(order)))
    blocks = []
    for n, res in enumerate(order, 1):
        block = [T.EXAMPLE.format(n=n, score=res.loss.score)]
        for r in res.trace.records:
            if r.kind == "llm" and name in r.params:
                block.append(T.INPUT.format(node=r.node, text=P.one_line(r.user_text, knobs.max_chars)))
                block.append(T.REPLY.format(node=r.node, text=P.one_line(r.output if r.error is None else "ERROR: " + r.error, knobs.max_chars)))
        block.append(T.FEEDBACK.format(text=P.one_line(res.loss.feedback or f"score {res.loss.score:.2f}", knobs.max_chars)))
        blocks.append(block)
    ask = T.ASK_JSON if knobs.json_schema else T.ASK
    tail = [ask.format(name=name, max_chars=knobs.max_value_chars, open=P.OPEN, close=P.CLOSE)]
    return T.SYSTEM, P.fit_prompt(head, blocks, tail, knobs.max_prompt_chars)


def _schema(max_len: int) -> str:
    text = {"type": "string", "maxLength": max_len}
    props = {"diagnosis": {"type": "string", "maxLength": 300}, "text": text}
    return json.dumps(P.closed_object(props))


def reply_value(text: str, finish_reason: str, json_schema: bool) -> tuple[str | None, str, str]:
    """``(value, guard, reason)`` of a reflection reply: the JSON ``text`` field, or the tagged value.

    >>> reply_value('{"diagnosis": "d", "text": "Count."}', "stop", True)
    ('Count.', '', '')
    >>> reply_value('{"diagnosis": "they overcount"', "length", True)[1]
    'truncated'
    """
    if not json_schema:
        value, guard = P.extract_fenced(text, finish_reason=finish_reason)
        return value, guard, "optimizer reply had no value between the tags" if value is None else ""
    data, guard = P.json_object(text, finish_reason, lambda d: isinstance(d.get("text"), str))
    if data is not None:
        return data["text"].strip(), "", ""
    if guard == "truncated":
        return None, guard, "optimizer reply was cut by the token cap"
    return None, guard, "optimizer reply is not JSON with a string 'text'"


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

    def init(state):
        return P.freeze_state({"pool": [{"values": _values(state), "scores": None, "parent": None}],
                               "component": 0, "proposed": [], **P.new_stats()})

    def update(results, state, s, context):
        s = P.thaw_state(s)
        s["steps"] = s.get("steps", 0) + 1
        pool: list[dict] = s["pool"]
        notes: list[Note] = []
        val_seed = derive_seed("gepa-validation", context.seed)
        current = _values(state)
        if not any(e["values"] == current for e in pool):
            pool.append({"values": current, "scores": None, "parent": None})
        unscored = [e for e in pool if e["scores"] is None]
        if unscored:
            answers = yield tuple(Validate(_state_of(state, e["values"]), val_seed) for e in unscored)
            for e, res in zip(unscored, answers):
                e["scores"] = {r.example.id: r.loss.score for r in res}
            s["events"] = P.bump(s["events"], "evaluations", len(unscored))
        rng = random.Random(derive_seed("gepa", context.seed, context.step, context.attempt))
        front = pareto_front(pool)
        ids = sorted(front)
        parent = rng.choices(ids, weights=[front[i] for i in ids])[0] if ids else 0
        parent_state = _state_of(state, pool[parent]["values"])
        if pool[parent]["values"] == current:
            parent_results = results
        else:
            (parent_results,) = yield (Rerun(parent_state),)
            s["events"] = P.bump(s["events"], "reruns")
        names = [n for n in state.trainable_names if state[n].kind != "demos"
                 and any(n in r.params for res in results for r in res.trace.records)]
        before = mean_score(parent_results)
        candidates: list[Candidate] = []
        if not names:
            notes.append(Note("", "no_update", "no trainable text parameter (other than demos) is read by these traces"))
        elif parent_results and all(r.loss.score >= 1.0 for r in parent_results):
            notes.append(Note("", "no_update", f"parent #{parent} is perfect on this minibatch: nothing to reflect on"))
        else:
            name = names[s["component"] % len(names)]
            s["component"] += 1
            system, body = reflection_prompt(name, parent_state, parent_results, k)
            request = Request(
                messages=(("system", system), ("user", body)), model=k.optimizer_model,
                temperature=P.attempt_temperature(context, k.optimizer_temperature, k.retry_temperature),
                max_tokens=k.optimizer_max_tokens, seed=derive_seed(context.seed, context.step),
                sample=context.attempt, role="optimizer", json_schema=_schema(k.max_value_chars) if k.json_schema else None,
            )
            s["calls"] = P.bump(s["calls"], "optimizer")
            log = yield from ask(request)
            response = log.response
            old = parent_state[name].value
            value, guard, reason = reply_value(response.text, response.finish_reason, k.json_schema)
            if value is not None:
                guard, reason = P.check_proposal(
                    value, old, parent_results, names=state.names, role=state[name].role,
                    rejected=[e["values"].get(name, "") for e in pool if e["values"].get(name) != old],
                    max_value_chars=k.max_value_chars, skip=k.skip_guards,
                )
            candidates.append(Candidate(name, old, value, guard, reason, (), log.id))
            if guard:
                s["rejections"] = P.bump(s["rejections"], guard)
                notes.append(Note(name, "no_update", f"{guard}: {reason}"))
            else:
                child_values = dict(pool[parent]["values"], **{name: value})
                child_state = _state_of(state, child_values)
                (child_results,) = yield (Rerun(child_state),)
                after = mean_score(child_results)
                if after <= before:
                    s["events"] = P.bump(s["events"], "child_lost_minibatch")
                    notes.append(Note(name, "no_update", f"child of #{parent} did not improve the minibatch "
                                                         f"({after:.2f} <= {before:.2f})"))
                else:
                    (val_results,) = yield (Validate(child_state, val_seed),)
                    child = {"values": child_values, "scores": {r.example.id: r.loss.score for r in val_results},
                             "parent": parent}
                    pool.append(child)
                    s["events"] = P.bump(s["events"], "children")
                    notes.append(Note(name, "proposed", f"child of #{parent} improved the minibatch ({before:.2f} -> "
                                                        f"{after:.2f}); validation mean {_mean(child):.2f}"))
        if len(pool) > k.pool_size:
            best = max(range(len(pool)), key=lambda i: (_mean(pool[i]), -i))
            worst = min((i for i in range(len(pool)) if i != best), key=lambda i: (_mean(pool[i]), i))
            pool.pop(worst)
        best = max(range(len(pool)), key=lambda i: (_mean(pool[i]), -i))
        values = {n: v for n, v in pool[best]["values"].items() if n in state and state[n].value != v}
        if not values:
            notes.append(Note("", "no_update", f"the pool's best (#{best}, mean {_mean(pool[best]):.2f}) is the current state"))
        elif values in s["proposed"]:
            notes.append(Note("", "no_update", f"the pool's best (#{best}) was proposed before"))
            values = {}
        else:
            s["proposed"].append(values)
            have = {(c.param, c.value) for c in candidates if not c.guard}
            candidates += [Candidate(n, state[n].value, v, "", f"pool entry #{best}") for n, v in values.items() if (n, v) not in have]
            notes.append(Note("", "proposed", f"the pool's best: #{best} (mean {_mean(pool[best]):.2f} on the validation minibatch)"))
        return Update(values, notes, (), candidates), P.freeze_state(s)

    return Strategy("gepa", init, update, k)
