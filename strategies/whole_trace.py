"""Whole-trace propagation (OptoPrime style): one optimizer call per step, no per-node calls.

The minibatch's traces become one problem written like a small program::

    #Code            y2 = answer(sys, question=y0)      one line per record, in order
    #Documentation   what each node does
    #Variables       trainable params and their current values
    #Inputs          pipeline inputs and fixed params
    #Others          intermediate values
    #Outputs         the final output
    #Feedback        the loss feedback

(one #Code/#Inputs/#Others/#Outputs/#Feedback block per example, lowest score first,
capped: examples are dropped to fit the prompt cap, the #Variables and #Instruction
always survive). The optimizer answers ``{"reasoning": ..., "suggestion": {param: new
text}}``; an empty suggestion is a legal "no change". Every prompt text lives in
:mod:`funcgrad.strategies.prompts.whole_trace`.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from funcgrad import Note, PromptState, Request, Strategy, Update, derive_seed
from funcgrad.core.backward import Candidate, Gradient
from funcgrad.core.effects import Call
from funcgrad.core.strategy import make_knobs
from funcgrad.core.run import mean_score
from funcgrad.strategies import proposals as P
from funcgrad.strategies import sampling
from funcgrad.strategies.prompts import shared as S
from funcgrad.strategies.prompts import whole_trace as T



@attrs.frozen
class WholeTraceKnobs:
    """Knobs of :func:`whole_trace` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> WholeTraceKnobs(max_examples=2).max_examples
    2
    """

    max_examples: int = attrs.field(default=4, validator=P.POSITIVE_INT)
    max_chars: int = attrs.field(default=300, validator=P.POSITIVE_INT)
    max_records: int = attrs.field(default=12, validator=P.POSITIVE_INT)
    max_history: int = attrs.field(default=2, validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)])
    max_value_chars: int = attrs.field(default=1500, validator=P.POSITIVE_INT)
    max_prompt_chars: int = attrs.field(default=4000, validator=[attrs.validators.instance_of(int), attrs.validators.ge(500)])
    optimizer_max_tokens: int = attrs.field(default=250, validator=P.POSITIVE_INT)
    optimizer_temperature: float = attrs.field(default=0.0, validator=P.NON_NEGATIVE)
    retry_temperature: float = attrs.field(default=0.7, validator=P.NON_NEGATIVE)
    optimizer_model: str = ""
    json_schema: bool = True
    n_candidates: int = attrs.field(default=1, validator=P.POSITIVE_INT)
    sample_temperature: float = attrs.field(default=0.7, validator=P.NON_NEGATIVE)
    skip_if_perfect: bool = True
    skip_guards: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=P.check_skip_guards)


def _name(rid: int) -> str:
    return f"y{rid}"


def code_line(record) -> str:
    """``y3 = answer(sys, question=y0, context=y2)``: params first, then named inputs, then constants.

    >>> from funcgrad import Record
    >>> code_line(Record(3, "answer", "llm", inputs=(0, 2), input_names=("question", "context"), params=("sys",)))
    'y3 = answer(sys, question=y0, context=y2)'
    """
    args = list(record.params) + [f"{n}={_name(i)}" for n, i in zip(record.input_names, record.inputs)]
    args += [f"{n}={P.one_line(v, 60)!r}" for n, v in record.consts.items()]
    return f"{_name(record.id)} = {record.node}({', '.join(args)})"


def _doc(record) -> str:
    if record.kind == "llm":
        return T.DOC_LLM.format(node=record.node, params=", ".join(record.params) or T.DOC_NO_PARAMS)
    if record.kind == "retrieve":
        return T.DOC_RETRIEVE.format(node=record.node)
    return T.DOC_FN.format(node=record.node)


def problem_text(results, state: PromptState, knobs: WholeTraceKnobs, context) -> tuple[str, list[str], int]:
    """The user message of the optimizer call, the trainable params it shows, and how many examples."""
    chars = knobs.max_chars
    order = sorted(range(len(results)), key=lambda i: results[i].loss.score)
    shown = order[: knobs.max_examples]
    trainable: dict[str, None] = {}
    fixed: dict[str, None] = {}
    docs: dict[str, str] = {}
    for res in results:
        for r in res.trace.records:
            if r.kind in ("llm", "fn", "retrieve"):
                docs.setdefault(r.node, _doc(r))
            for p in r.params:
                if p in state:
                    (trainable if state[p].trainable else fixed)[p] = None
    head = [T.DOCUMENTATION, *(f"- {d}" for d in docs.values()), T.VARIABLES]
    for p in trainable:
        role = f" ({P.clip(state[p].role, 300)})" if state[p].role else ""
        head.append(f"{p}{role} =\n{P.fence(P.clip(state[p].value, knobs.max_value_chars), P.CURRENT_TAG)}")
    if fixed:
        head.append(T.FIXED_PARAMS.format(params="; ".join(f"{p} = {P.one_line(state[p].value, 150)!r}" for p in fixed)))
    head.append(T.RUNS.format(shown=len(shown), total=len(results), chars=chars))
    blocks = []
    for i in shown:
        res = results[i]
        trace = res.trace
        calls = [r for r in trace.records if r.kind in ("llm", "fn", "retrieve")]
        recs = calls[: knobs.max_records]
        block = [T.EXAMPLE.format(example=res.example.id, score=res.loss.score), T.CODE, *(code_line(r) for r in recs)]
        if len(recs) < len(calls):
            block.append(T.MORE_RECORDS)
        block.append(T.INPUTS)
        block += [f"{_name(r.id)} = {P.clip(r.output, chars)!r}" for r in trace.records if r.kind == "input"]
        others = [r for r in recs if r.id != trace.output]
        if others:
            block.append(T.OTHERS)
            block += [f"{_name(r.id)} = {P.clip(r.output if r.error is None else 'ERROR: ' + r.error, chars)!r}" for r in others]
        block.append(T.OUTPUTS)
        block.append(f"{_name(trace.output)} = {P.clip(trace[trace.output].output, chars)!r}" if trace.output is not None
                     else T.NO_OUTPUT)
        block += [T.FEEDBACK, P.clip(res.loss.feedback, chars)]
        blocks.append(block)
    tail = []
    for p in trainable:
        hist = P.history_lines(context, p, state[p].value, limit=knobs.max_history, chars=200)
        if hist:
            tail += [S.HISTORY_HEADER_OF.format(param=p), *hist]
        rej = P.rejected_lines(context, p, limit=knobs.max_history, chars=200)
        if rej:
            tail += [S.REJECTED_HEADER_OF.format(param=p), *rej]
    since = context.steps_since_improvement
    if since:
        tail.append(S.SINCE_IMPROVEMENT.format(n=since) + (S.BOLDER if since >= 2 else ""))
    names = ", ".join(T.SUGGESTION_ITEM.format(name=p) for p in trainable)
    tail += [T.INSTRUCTION, T.REPLY.format(names=names)]
    return P.fit_prompt(head, blocks, tail, knobs.max_prompt_chars), list(trainable), len(shown)


def _schema(names: list[str], max_len: int) -> str:
    return json.dumps({
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": 400},
            "suggestion": {
                "type": "object",
                "properties": {n: {"type": "string", "maxLength": max_len} for n in names},
                "additionalProperties": False,
            },
        },
        "required": ["reasoning", "suggestion"],
        "additionalProperties": False,
    })


def _loss_gradients(results, names) -> tuple[Gradient, ...]:
    """The loss feedback of every example, as the (only) gradient each shown variable gets."""
    out = []
    for res in results:
        rid = res.trace.output if res.trace.output is not None else 0
        for p in names:
            out.append(Gradient(len(out), p, "(loss)", res.example.id, rid, 0, res.loss.score, res.loss.feedback, "loss"))
    return tuple(out)


def read_suggestion(log, state, names, results, context, knobs, grads, stats) -> tuple[dict, list, list]:
    """``(values, candidates, notes)`` from the optimizer call ``log`` (a CallLog): its JSON reply, every guard applied."""
    response = log.response
    values, candidates, notes = {}, [], []
    data, guard = P.json_object(response.text, response.finish_reason)
    if data is None:
        stats["rejections"] = P.bump(stats["rejections"], guard)
        why = "cut by the token cap" if guard == "truncated" else "not a JSON object"
        return values, candidates, [Note("", "no_update", f"{guard}: optimizer reply was {why}: {P.one_line(response.text, 80)!r}")]
    suggestion = data.get("suggestion")
    reasoning = P.one_line(data.get("reasoning", ""), 200)
    if suggestion is None:  # tolerate a bare {param: value} object
        suggestion = {k: v for k, v in data.items() if k in names}
    if not isinstance(suggestion, dict):
        stats["rejections"] = P.bump(stats["rejections"], "invalid_json")
        return values, candidates, [Note("", "no_update", "invalid_json: 'suggestion' is not an object")]
    critiques = [reasoning] if reasoning else []
    for key, value in suggestion.items():
        if key not in names:
            stats["rejections"] = P.bump(stats["rejections"], "unknown_param")
            notes.append(Note("", "no_update", f"unknown_param: suggestion for {P.clip(key, 40)!r}, not a trainable variable here"))
            continue
        used = tuple(g.id for g in grads if g.param == key)
        old = state[key].value
        if not isinstance(value, str):
            stats["rejections"] = P.bump(stats["rejections"], "invalid_json")
            candidates.append(Candidate(key, old, None, "invalid_json", "the suggested value is not a string", used, log.id))
            notes.append(Note(key, "no_update", "invalid_json: the suggested value is not a string"))
            continue
        value = P._unwrap(value)
        guard, reason = P.check_proposal(value, old, results, critiques=critiques, names=state.names, role=state[key].role,
                                         rejected=P.rejected_values(context, key), max_value_chars=knobs.max_value_chars,
                                         skip=knobs.skip_guards)
        candidates.append(Candidate(key, old, value, guard, reason, used, log.id))
        if guard:
            stats["rejections"] = P.bump(stats["rejections"], guard)
            notes.append(Note(key, "no_update", f"{guard}: {reason}"))
            continue
        values[key] = value
        notes.append(Note(key, "proposed", reasoning or "suggested by the optimizer"))
    if not suggestion:
        stats["events"] = P.bump(stats["events"], "no_change")
        notes.append(Note("", "no_update", f"the optimizer suggested no change ({reasoning or 'no reasoning given'})"))
    return values, candidates, notes


def whole_trace(**knobs: Any) -> Strategy:
    """OptoPrime-style strategy: ONE optimizer call per step over the whole minibatch's traces.

    Knobs (:class:`WholeTraceKnobs`; an unknown or invalid one is a ConfigError):
    ``max_examples`` (examples shown, lowest score first), ``max_chars`` (per value),
    ``max_records`` (code lines per example), ``max_history`` (past / failed values
    shown), ``max_prompt_chars`` (cap; examples are dropped to fit): the prompt
    bounds. ``max_value_chars``: longest value accepted. ``optimizer_max_tokens``,
    ``optimizer_temperature``, ``optimizer_model``: request settings;
    ``retry_temperature``: temperature once a proposal of this step was rejected (a
    greedy retry would repeat it). ``json_schema``: ask the server for
    schema-constrained JSON (the reply is parsed robustly either way).
    ``skip_if_perfect``: no call when every example scored 1.0. ``skip_guards``:
    guards switched off (ablation). ``n_candidates``: optimizer samples asked at once
    (at ``sample_temperature`` or more, distinct sample indices), each guarded; the
    survivors are checked on the minibatch in one batch of ``Rerun`` effects and only
    the best is proposed (:mod:`funcgrad.strategies.sampling`).

    Calls per step: ``n_candidates`` optimizer calls in one batch (0 when all examples are perfect and
    ``skip_if_perfect``); no backward calls. Its gradients are the loss feedback
    of each example (source ``loss``).

    >>> whole_trace(max_examples=2).config["max_examples"]
    2
    """
    k = make_knobs(WholeTraceKnobs, "whole_trace", knobs)

    def init(state):
        return P.freeze_state(P.new_stats())

    def update(results, state, s, context):
        stats = P.thaw_state(s) or P.new_stats()
        stats["steps"] = stats.get("steps", 0) + 1
        done = lambda upd: (upd, P.freeze_state(stats))  # noqa: E731
        if not results:
            return done(Update((), [Note("", "no_update", "empty minibatch")]))
        if k.skip_if_perfect and all(r.loss.score >= 1.0 for r in results):
            stats["events"] = P.bump(stats["events"], "all_perfect")
            return done(Update((), [Note("", "no_update", "every example scored 1.0: nothing to fix")]))
        body, names, _ = problem_text(results, state, k, context)
        if not names:
            return done(Update((), [Note("", "no_update", "no trainable parameter is read by these traces")]))
        request = Request(
            messages=(("system", T.SYSTEM), ("user", body)), model=k.optimizer_model,
            temperature=P.attempt_temperature(context, k.optimizer_temperature, k.retry_temperature),
            max_tokens=k.optimizer_max_tokens, seed=derive_seed(context.seed, context.step), sample=context.attempt,
            json_schema=_schema(names, k.max_value_chars) if k.json_schema else None, role="optimizer",
        )
        requests = sampling.samples(request, k.n_candidates, context.attempt, k.sample_temperature)
        stats["calls"] = P.bump(stats["calls"], "optimizer", len(requests))
        logs = yield tuple(Call(r) for r in requests)
        grads = _loss_gradients(results, names)
        options, candidates, notes = [], [], []
        for log in logs:
            values, cands, ns = read_suggestion(log, state, names, results, context, k, grads, stats)
            candidates += cands
            notes += ns
            if values and values not in options:
                options.append(values)
        values = options[0] if options else {}
        if len(options) > 1:
            best, _, why = yield from sampling.best_on_minibatch(state, options, mean_score(results))
            values = options[best]
            notes.append(Note("", "proposed", why))
        return done(Update(values, notes, grads, candidates))

    return Strategy("whole_trace", init, update, k)
