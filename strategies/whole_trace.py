"""Whole-trace propagation (OptoPrime style): one optimizer call per step, no per-node calls.

The minibatch's traces become one problem written like a small program::

    #Code            y2 = answer(sys, question=y0)      one line per record, in order;
                     # read y2                          control reads (Trace.control) before the
                                                        record that ran after them
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

from funcgrad.core.backward import Candidate, Gradient
from funcgrad.core.effects import Call
from funcgrad.core.state import PromptState
from funcgrad.core.strategy import Note, Strategy, Update, make_knobs
from funcgrad.core.strategy_state import Stats, read_state
from funcgrad.core.trace import trailing_reads
from funcgrad.strategies import sampling
from funcgrad.strategies.context import past_lines, rejected_values, since_improvement_lines, writable
from funcgrad.strategies.guards import Guard, check_proposal
from funcgrad.strategies.knobs import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, PROMPT_CAP, check_skip_guards
from funcgrad.strategies.optimizer import OPTIMIZER, optimizer_request
from funcgrad.strategies.prompts import whole_trace as prompts
from funcgrad.strategies.replies import json_object, unwrap
from funcgrad.strategies.text import CURRENT_TAG, clip, fence, fit_prompt, one_line


@attrs.frozen
class WholeTraceKnobs:
    """Knobs of :func:`whole_trace` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> WholeTraceKnobs(max_examples=2).max_examples
    2
    """

    max_examples: int = attrs.field(default=4, validator=POSITIVE_INT)
    max_chars: int = attrs.field(default=300, validator=POSITIVE_INT)
    max_records: int = attrs.field(default=12, validator=POSITIVE_INT)
    max_history: int = attrs.field(default=2, validator=NON_NEGATIVE_INT)
    max_value_chars: int = attrs.field(default=1500, validator=POSITIVE_INT)
    max_prompt_chars: int = attrs.field(default=4000, validator=PROMPT_CAP)
    optimizer_max_tokens: int = attrs.field(default=250, validator=POSITIVE_INT)
    optimizer_temperature: float = attrs.field(default=0.0, validator=NON_NEGATIVE)
    retry_temperature: float = attrs.field(default=0.7, validator=NON_NEGATIVE)
    optimizer_model: str = ""
    json_schema: bool = True
    n_candidates: int = attrs.field(default=1, validator=POSITIVE_INT)
    sample_temperature: float = attrs.field(default=0.7, validator=NON_NEGATIVE)
    skip_if_perfect: bool = True
    skip_guards: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=check_skip_guards)


def _name(rid: int) -> str:
    return f"y{rid}"


def code_line(record) -> str:
    """``y3 = answer(sys, question=y0, context=y2)``: params first, then named inputs, then constants.

    >>> from funcgrad.core.trace import Record
    >>> code_line(Record(3, "answer", "llm", inputs=(0, 2), input_names=("question", "context"), params=("sys",)))
    'y3 = answer(sys, question=y0, context=y2)'
    """
    args = list(record.params) + [f"{n}={_name(i)}" for n, i in zip(record.input_names, record.inputs)]
    args += [f"{n}={one_line(v, 60)!r}" for n, v in record.consts.items()]
    return f"{_name(record.id)} = {record.node}({', '.join(args)})"


def control_lines(trace, records) -> list[str]:
    """The code lines of ``records`` with a ``# read y..`` line before each record that ran after control reads.

    Reads after the last record end the code with ``..., then no further step was called``
    (when every record of the trace is in ``records``).

    >>> from funcgrad.core.trace import Record, Trace
    >>> t = Trace((Record(0, "x", "input"), Record(1, "review", "llm", inputs=(0,), input_names=("input",)),
    ...            Record(2, "fix", "llm", inputs=(0,), input_names=("input",), control=(1,)),
    ...            Record(3, "review", "llm", inputs=(2,), input_names=("input",))), output=2, control=(1, 3))
    >>> print("\\n".join(control_lines(t, t.records[1:])))
    y1 = review(input=y0)
    # read y1
    y2 = fix(input=y0)
    y3 = review(input=y2)
    # read y3, then no further step was called
    """
    lines = []
    for r in records:
        if r.control:
            lines.append(prompts.CONTROL_READ.format(names=", ".join(map(_name, r.control))))
        lines.append(code_line(r))
    last = trailing_reads(trace)
    if last and records and records[-1].id == max(r.id for r in trace.records if r.kind != "loss"):
        lines.append(prompts.CONTROL_STOP.format(names=", ".join(map(_name, last))))
    return lines


def _doc(record) -> str:
    if record.kind == "llm":
        return prompts.DOC_LLM.format(node=record.node, params=", ".join(record.params) or prompts.DOC_NO_PARAMS)
    if record.kind == "retrieve":
        return prompts.DOC_RETRIEVE.format(node=record.node)
    return prompts.DOC_FN.format(node=record.node)


def _variables(results, state: PromptState) -> tuple[dict[str, str], list[str], list[str]]:
    """The documentation line of every node, and the trainable and fixed params the traces read (in order)."""
    trainable: dict[str, None] = {}
    fixed: dict[str, None] = {}
    docs: dict[str, str] = {}
    for res in results:
        for r in res.trace.records:
            if r.kind in ("llm", "fn", "retrieve"):
                docs.setdefault(r.node, _doc(r))
            for p in r.params:
                if p in state:
                    (trainable if writable(state, p) else fixed)[p] = None
    return docs, list(trainable), list(fixed)


def _example_block(res, knobs: WholeTraceKnobs) -> list[str]:
    """One example as a small program: #Code, #Inputs, #Others, #Outputs and #Feedback."""
    chars, trace = knobs.max_chars, res.trace
    calls = [r for r in trace.records if r.kind in ("llm", "fn", "retrieve")]
    recs = calls[: knobs.max_records]
    block = [prompts.EXAMPLE.format(example=res.example.id, score=res.loss.score), prompts.CODE, *control_lines(trace, recs)]
    if len(recs) < len(calls):
        block.append(prompts.MORE_RECORDS)
    block.append(prompts.INPUTS)
    block += [f"{_name(r.id)} = {clip(r.output, chars)!r}" for r in trace.records if r.kind == "input"]
    others = [r for r in recs if r.id != trace.output]
    if others:
        block.append(prompts.OTHERS)
        block += [f"{_name(r.id)} = {clip(r.output if r.error is None else 'ERROR: ' + r.error, chars)!r}" for r in others]
    block.append(prompts.OUTPUTS)
    block.append(f"{_name(trace.output)} = {clip(trace[trace.output].output, chars)!r}" if trace.output is not None
                 else prompts.NO_OUTPUT)
    return [*block, prompts.FEEDBACK, clip(res.loss.feedback, chars)]


def problem_text(results, state: PromptState, knobs: WholeTraceKnobs, context) -> tuple[str, list[str], int]:
    """The user message of the optimizer call, the trainable params it shows, and how many examples."""
    order = sorted(range(len(results)), key=lambda i: results[i].loss.score)
    shown = order[: knobs.max_examples]
    docs, trainable, fixed = _variables(results, state)
    head = [prompts.DOCUMENTATION, *(f"- {d}" for d in docs.values())]
    if any(res.trace.control for res in results):
        head.append(f"- {prompts.DOC_CONTROL}")
    head.append(prompts.VARIABLES)
    for p in trainable:
        role = f" ({clip(state[p].role, 300)})" if state[p].role else ""
        head.append(f"{p}{role} =\n{fence(clip(state[p].value, knobs.max_value_chars), CURRENT_TAG)}")
    if fixed:
        head.append(prompts.FIXED_PARAMS.format(params="; ".join(f"{p} = {one_line(state[p].value, 150)!r}" for p in fixed)))
    head.append(prompts.RUNS.format(shown=len(shown), total=len(results), chars=knobs.max_chars))
    blocks = [_example_block(results[i], knobs) for i in shown]
    tail = [line for p in trainable for line in past_lines(context, p, state[p].value, limit=knobs.max_history, of_param=True)]
    tail += since_improvement_lines(context)
    names = ", ".join(prompts.SUGGESTION_ITEM.format(name=p) for p in trainable)
    tail += [prompts.INSTRUCTION, prompts.REPLY.format(names=names)]
    return fit_prompt(head, blocks, tail, knobs.max_prompt_chars), trainable, len(shown)


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


def _suggestion(response, names) -> tuple[dict | None, str, list[Note], Stats]:
    """``(suggestion, reasoning, notes, counts)`` of the optimizer's JSON reply; None when it has no usable one."""
    data, guard = json_object(response.text, response.finish_reason)
    if data is None:
        why = "cut by the token cap" if guard == Guard.TRUNCATED else "not a JSON object"
        note = Note("", "no_update", f"{guard}: optimizer reply was {why}: {one_line(response.text, 80)!r}")
        return None, "", [note], Stats(rejections={guard: 1})
    suggestion = data.get("suggestion")
    reasoning = one_line(data.get("reasoning", ""), 200)
    if suggestion is None:  # tolerate a bare {param: value} object
        suggestion = {k: v for k, v in data.items() if k in names}
    if not isinstance(suggestion, dict):
        note = Note("", "no_update", "invalid_json: 'suggestion' is not an object")
        return None, reasoning, [note], Stats(rejections={Guard.INVALID_JSON: 1})
    if not suggestion:
        note = Note("", "no_update", f"the optimizer suggested no change ({reasoning or 'no reasoning given'})")
        return suggestion, reasoning, [note], Stats(events={"no_change": 1})
    return suggestion, reasoning, [], Stats()


def _read_value(key, value, reasoning, state, results, context, knobs, grads, call: int):
    """``(candidate, note, counts)`` of the value suggested for the trainable variable ``key``."""
    used = tuple(g.id for g in grads if g.param == key)
    old = state[key].value
    if not isinstance(value, str):
        reason = "the suggested value is not a string"
        note = Note(key, "no_update", f"invalid_json: {reason}")
        return Candidate(key, old, None, Guard.INVALID_JSON, reason, used, call), note, Stats(rejections={Guard.INVALID_JSON: 1})
    value = unwrap(value)
    guard, reason = check_proposal(value, old, results, critiques=[reasoning] if reasoning else [], labels=context.labels,
                                   names=state.names, role=state[key].role, rejected=rejected_values(context, key),
                                   max_value_chars=knobs.max_value_chars, skip=knobs.skip_guards)
    candidate = Candidate(key, old, value, guard, reason, used, call)
    if guard:
        return candidate, Note(key, "no_update", f"{guard}: {reason}"), Stats(rejections={guard: 1})
    return candidate, Note(key, "proposed", reasoning or "suggested by the optimizer"), Stats()


def read_suggestion(response, state, names, results, context, knobs, grads, call: int = 0) -> tuple[dict, list, list, Stats]:
    """``(values, candidates, notes, counts)`` from the optimizer's JSON reply (every guard applied).

    ``call`` is the number of the optimizer call that gave ``response``.
    """
    suggestion, reasoning, notes, counts = _suggestion(response, names)
    values, candidates, per_key = {}, [], []
    for key, value in (suggestion or {}).items():
        if key not in names:
            counts += Stats(rejections={Guard.UNKNOWN_PARAM: 1})
            per_key.append(Note("", "no_update", f"unknown_param: suggestion for {clip(key, 40)!r}, not a trainable variable here"))
            continue
        candidate, note, more = _read_value(key, value, reasoning, state, results, context, knobs, grads, call)
        candidates.append(candidate)
        per_key.append(note)
        counts += more
        if not candidate.guard:
            values[key] = candidate.value
    return values, candidates, per_key + notes, counts


def _no_call(results, knobs) -> str:
    """Why this step needs no optimizer call ("" when it does)."""
    if not results:
        return "empty minibatch"
    if knobs.skip_if_perfect and all(r.loss.score >= 1.0 for r in results):
        return "every example scored 1.0: nothing to fix"
    return ""


def _update(knobs: WholeTraceKnobs):
    def update(results, state, s, context):
        stats = read_state(s, Stats, "whole_trace") + Stats(steps=1)
        why = _no_call(results, knobs)
        if why:
            perfect = Stats(events={"all_perfect": 1}) if results else Stats()
            return Update((), [Note("", "no_update", why)]), stats + perfect
        body, names, _ = problem_text(results, state, knobs, context)
        if not names:
            return Update((), [Note("", "no_update", "no trainable parameter is read by these traces")]), stats
        request = optimizer_request(prompts.SYSTEM, body, context, knobs,
                                    _schema(names, knobs.max_value_chars) if knobs.json_schema else None)
        requests = sampling.samples(request, knobs.n_candidates, context.attempt, knobs.sample_temperature)
        logs = yield tuple(Call(r) for r in requests)
        grads = _loss_gradients(results, names)
        options, candidates, notes, counts = [], [], [], Stats(calls={OPTIMIZER: len(requests)})
        for log in logs:
            values, cands, ns, more = read_suggestion(log.response, state, names, results, context, knobs, grads, log.id)
            options.append(values)
            candidates += cands
            notes += ns
            counts += more
        values, chosen = yield from sampling.best_option(state, options, results)
        return Update(values, [*notes, *chosen], grads, candidates), stats + counts

    return update


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
    return Strategy("whole_trace", lambda state: Stats(calls={OPTIMIZER: 0}), _update(k), k)
