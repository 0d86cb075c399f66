"""Per-node textual backpropagation (LLM-AutoDiff style), as an effect program.

Backward pass, for each training result: walk the trace from the loss record to the
inputs. Every record collects the feedback of the records that consumed its output,
in call order. Then, by kind:

- ``fn`` / ``retrieve``: pass the feedback on to its inputs unchanged (no LLM call);
- ``llm``: if ``errors_only`` and the example scored ``>= tau``, a fixed
  ``"score s: no noticeable error"`` gradient (no LLM call); otherwise ONE backward
  call covering all trainable params the record read (its peers) plus, when an
  upstream record can still reach a trainable param, feedback for its inputs;
- nodes named in ``trace.skips`` also get the loss feedback directly;
- with ``control_credit``, every record the pipeline read to decide what to run next
  (``trace.control``) also gets control feedback: which calls followed the decision,
  whether the final output changed after it, and how the run ended. It flows like the
  rest (a fn record passes it upstream); a gradient written from control feedback alone
  is marked ``Gradient.via == "control"``.

The examples of a minibatch are independent, so their backward walks run in
lockstep (:func:`funcgrad.core.effects.gather`): each round's critic calls are one
batch, in flight together. Each gradient is a :class:`~funcgrad.core.backward.Gradient`
(param, node, example, record, call index, score, text, source, the call that wrote
it); a param's gradients are an ordered tuple sorted by (example, call order).

Optimizer: one call per trainable param that got at least one real gradient, all in
one batch; the new value comes back between ``<NEW_VALUE>`` tags and passes the
guards of :mod:`funcgrad.strategies.guards` before it is proposed. Every prompt
text lives in :mod:`funcgrad.strategies.prompts.backprop`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs
import toolz

from funcgrad.core.backward import Candidate, EdgeKind, Gradient
from funcgrad.core.calls import Request
from funcgrad.core.effects import Call, ask, gather, numbered
from funcgrad.core.state import PromptState
from funcgrad.core.strategy import Note, Strategy, Update, make_knobs
from funcgrad.core.strategy_state import Stats, read_state
from funcgrad.core.trace import reverse_topological
from funcgrad.strategies import edits, optimizer, sampling
from funcgrad.strategies.context import past_lines, rejected_values, since_improvement_lines, writable
from funcgrad.strategies.guards import Guard, check_proposal
from funcgrad.strategies.knobs import AT_MOST_ONE, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, PROMPT_CAP, check_skip_guards
from funcgrad.strategies.prompts import backprop as prompts
from funcgrad.strategies.prompts import control as control_prompts
from funcgrad.strategies.prompts import edits as edit_prompts
from funcgrad.strategies.replies import closed_object, extract_fenced, is_generic, json_object, parse_json_reply
from funcgrad.strategies.text import CLOSE, CURRENT_TAG, OPEN, clip, fence, fit_prompt, one_line

FIXED = prompts.FIXED
INPUTS_KEY = "(inputs)"
BACKWARD = "backward"  # the request role of critiques (docs/strategies.md, "Cost per phase")
# Counted in S's rejections when a critique is unusable (the critique falls back to the feedback it was given).
CRITIQUE_TRUNCATED, CRITIQUE_UNPARSED = "critique_truncated", "critique_unparsed"
CRITIQUE_GENERIC, CRITIQUE_MISSING_ENTRY = "critique_generic", "critique_missing_entry"


@attrs.frozen
class BackpropKnobs:
    """Knobs of :func:`backprop` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> BackpropKnobs(tau=0.5).tau
    0.5
    """

    errors_only: bool = True
    tau: float = attrs.field(default=0.99, validator=AT_MOST_ONE)
    max_examples: int = attrs.field(default=4, validator=POSITIVE_INT)
    max_chars: int = attrs.field(default=400, validator=POSITIVE_INT)
    max_feedback: int = attrs.field(default=6, validator=POSITIVE_INT)
    max_calls_listed: int = attrs.field(default=6, validator=POSITIVE_INT)
    max_history: int = attrs.field(default=2, validator=NON_NEGATIVE_INT)
    max_value_chars: int = attrs.field(default=1500, validator=POSITIVE_INT)
    max_prompt_chars: int = attrs.field(default=4000, validator=PROMPT_CAP)
    critique_chars: int = attrs.field(default=300, validator=POSITIVE_INT)
    critique_words: int = attrs.field(default=40, validator=POSITIVE_INT)
    backward_max_tokens: int = attrs.field(default=150, validator=POSITIVE_INT)
    optimizer_max_tokens: int = attrs.field(default=250, validator=POSITIVE_INT)
    backward_temperature: float = attrs.field(default=0.0, validator=NON_NEGATIVE)
    optimizer_temperature: float = attrs.field(default=0.0, validator=NON_NEGATIVE)
    retry_temperature: float = attrs.field(default=0.7, validator=NON_NEGATIVE)
    backward_model: str = ""
    optimizer_model: str = ""
    json_schema: bool = True
    time_stamps: bool = True
    n_candidates: int = attrs.field(default=1, validator=POSITIVE_INT)
    edits: bool = False
    sample_temperature: float = attrs.field(default=0.7, validator=NON_NEGATIVE)
    skip_guards: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=check_skip_guards)
    control_credit: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


@attrs.frozen
class _Feedback:
    source: int  # id of the record (or loss record) that sent it; orders feedback by call
    text: str
    kind: str = "passthrough"  # how it reached the record: passthrough, skip, critique (from a downstream call), control
    via: EdgeKind = EdgeKind.DATA  # control: it, or all the feedback behind the critique that wrote it, came along control edges


def _via(feedback) -> EdgeKind:
    """``control`` if all of ``feedback`` came along control edges (none would exist without control credit), else ``data``."""
    return EdgeKind.CONTROL if feedback and all(f.via == EdgeKind.CONTROL for f in feedback) else EdgeKind.DATA


@attrs.frozen
class _Walked:
    """A gradient found by an example's walk (numbered later), its order key (example, record) and the id of the
    critic call behind it (None: no call)."""

    order: tuple[int, int]
    gradient: Gradient
    call: int | None = None


# ---------------------------------------------------------------- the backward (critic) call


def _reaches_trainable(trace, state: PromptState) -> dict[int, bool]:
    reach: dict[int, bool] = {}
    for r in trace.records:
        own = any(writable(state, p) for p in r.params)
        reach[r.id] = own or any(reach.get(i, False) for i in r.inputs)
    return reach


def _calls_of(trace, node: str):
    return [r for r in trace.records if r.node == node]


def _call_listing(record, trace, knobs) -> list[str]:
    """The calls of the record's node in order (this one marked), or the single call's header, then its input."""
    calls = _calls_of(trace, record.node) if knobs.time_stamps else [record]
    if len(calls) <= 1:
        return [prompts.ONE_CALL_INPUT.format(node=record.node), clip(record.user_text, knobs.max_chars)]
    listing = [prompts.CALLS_HEADER.format(node=record.node, n=len(calls), index=record.call_index)]
    for c in calls[: knobs.max_calls_listed]:
        mark = prompts.THIS_CALL if c.id == record.id else ""
        listing.append(prompts.CALL_LINE.format(index=c.call_index, given=repr(one_line(c.user_text, 80)),
                                                answer=repr(one_line(c.output, 60)), mark=mark))
    if len(calls) > knobs.max_calls_listed:
        listing.append(prompts.MORE_CALLS.format(n=len(calls) - knobs.max_calls_listed))
    return [*listing, prompts.CALL_INPUT.format(index=record.call_index), clip(record.user_text, knobs.max_chars)]


def _feedback_lines(feedback, knobs) -> list[str]:
    notes = [prompts.FEEDBACK_HEADER]
    for i, fb in enumerate(feedback[: knobs.max_feedback], 1):
        notes.append(f"{i}. {clip(fb.text, knobs.max_chars)}")
    if len(feedback) > knobs.max_feedback:
        notes.append(prompts.MORE_FEEDBACK.format(n=len(feedback) - knobs.max_feedback))
    return notes


def _param_lines(record, state, trainable, knobs) -> list[str]:
    params = [prompts.PARAMS_HEADER]
    for p in record.params:
        if p in state:
            flag = prompts.TO_IMPROVE if p in trainable else prompts.FIXED_PARAM
            params.append(prompts.PARAM_LINE.format(name=p, kind=state[p].kind, flag=flag,
                                                    value=repr(clip(state[p].value, knobs.max_value_chars))))
    return params


def backward_prompt(record, trace, state, feedback, trainable, upstream, score, target, knobs) -> tuple[str, str, list[str]]:
    """System text, user text and the expected feedback keys of one backward call.

    The critic first names the mistake, then gives one feedback entry per trainable
    peer: small critics advise better when asked to diagnose first. The evidence
    (calls, input, answer, feedback) shrinks to fit ``max_prompt_chars``; the params
    and the reply format always survive.
    """
    keys = list(trainable) + ([INPUTS_KEY] if upstream else [])
    system = prompts.CRITIC_SYSTEM.format(words=knobs.critique_words)
    answer = [prompts.ANSWERED, clip(record.output, knobs.max_chars)]
    answer.append(prompts.EXPECTED_SCORED.format(target=clip(target, 200), score=score) if target is not None
                  else prompts.SCORED.format(score=score))
    example = ", ".join(f'{{"param": "{k}", "feedback": "..."}}' for k in keys)
    what = prompts.ENTRY_WHAT + (prompts.ENTRY_INPUTS.format(key=INPUTS_KEY) if upstream else "")
    reply = prompts.CRITIC_REPLY.format(what=what, example=example)
    blocks = [_call_listing(record, trace, knobs), answer, _feedback_lines(feedback, knobs)]
    body = fit_prompt([], blocks, [*_param_lines(record, state, trainable, knobs), reply], knobs.max_prompt_chars)
    return system, body, keys


def _schema(keys: list[str], max_len: int) -> str:
    item = closed_object({"param": {"type": "string", "enum": keys}, "feedback": {"type": "string", "maxLength": max_len}})
    props = {
        "mistake": {"type": "string", "maxLength": max_len},
        "feedback": {"type": "array", "items": item, "minItems": len(keys), "maxItems": len(keys)},
    }
    return json.dumps(closed_object(props))


def backward_request(record, trace, state, feedback, trainable, upstream, score, target, knobs) -> tuple[Request, list[str]]:
    """The critic call for ``record`` and the feedback keys it asks for."""
    system, body, keys = backward_prompt(record, trace, state, feedback, trainable, upstream, score, target, knobs)
    request = Request(
        messages=(("system", system), ("user", body)), model=knobs.backward_model,
        temperature=knobs.backward_temperature, max_tokens=knobs.backward_max_tokens,
        json_schema=_schema(keys, knobs.critique_chars) if knobs.json_schema else None, role=BACKWARD,
    )
    return request, keys


def parse_critique(text: str, keys: Sequence[str]) -> tuple[dict[str, str], str]:
    """``(param -> feedback, mistake)`` from a backward reply.

    Accepts the requested object ``{"mistake": ..., "feedback": [{"param", "feedback"}, ...]}``
    and, from models that ignore the format, a bare list of such entries, a
    ``{param: text}`` dict, or a list of strings in key order. Raises ValueError
    when the reply holds no JSON.

    >>> parse_critique('{"mistake": "counted the carrots", "feedback": [{"param": "a", "feedback": "count only the asked category"}]}', ["a"])
    ({'a': 'count only the asked category'}, 'counted the carrots')
    """
    data = parse_json_reply(text)
    mistake = ""
    if isinstance(data, dict) and isinstance(data.get("feedback"), list):
        mistake = data.get("mistake") if isinstance(data.get("mistake"), str) else ""
        data = data["feedback"]
    out: dict[str, str] = {}
    if isinstance(data, dict) and "param" not in data:
        for k, v in data.items():
            if k in keys and isinstance(v, str):
                out[k] = v
    else:
        items = data if isinstance(data, list) else [data]
        for pos, item in enumerate(items):
            if isinstance(item, dict):
                k = item.get("param")
                v = item.get("feedback")
                if isinstance(k, str) and k in keys and isinstance(v, str):
                    out[k] = v
            elif isinstance(item, str) and pos < len(keys):
                out[keys[pos]] = item
    return out, mistake.strip()


def read_critique(response, keys: Sequence[str], feedback, knobs) -> tuple[dict[str, tuple[str, str]], Stats]:
    """``(key -> (text, source), counts)`` from a critic ``response``.

    An unusable entry (unparsed reply, missing or generic entry) falls back to the
    feedback the record received (source ``passthrough``, or ``skip`` / ``control`` when
    all of it is skip-connection / control feedback); each such fallback is counted in
    ``rejections``.
    """
    entries, mistake, problem, counts = {}, "", "", Stats()
    try:
        entries, mistake = parse_critique(response.text, keys)
    except ValueError:
        problem = CRITIQUE_TRUNCATED if response.finish_reason == "length" else CRITIQUE_UNPARSED
        counts += Stats(rejections={problem: 1})
    passed = " | ".join(one_line(f.text, knobs.max_chars) for f in feedback)
    kinds = {f.kind for f in feedback}
    passed_kind = kinds.pop() if len(kinds) == 1 and kinds <= {"skip", "control"} else "passthrough"
    out = {}
    for k in keys:
        text, source = entries.get(k, "").strip(), "critique"
        if text and is_generic(text):
            counts += Stats(rejections={CRITIQUE_GENERIC: 1})
            text = ""
        if not text:
            if not problem and k not in entries:
                counts += Stats(rejections={CRITIQUE_MISSING_ENTRY: 1})
            text, source = passed, passed_kind
        if source == "critique" and mistake and not is_generic(mistake):
            text = prompts.MISTAKE_FIX.format(mistake=one_line(mistake, knobs.critique_chars), fix=text)
        out[k] = (clip(text, 2 * knobs.critique_chars), source)
    return out, counts


# ---------------------------------------------------------------- control credit


def control_feedback(trace, record_id: int, end: int, score: float, loss_text: str, max_calls: int) -> tuple[int, str]:
    """``(sender, text)``: the control feedback of record ``record_id``, which the pipeline read for control.

    The text says which model calls followed the decision (``node#call_index``, at most
    ``max_calls``), or that only function steps did, or that the run stopped right after it, whether the final output
    changed after it (the output record against the record of the output's node current
    at the decision), and how the run ended. ``sender`` is the first record created after
    the read (``end``, the loss record's id, when there is none): it orders the feedback
    among the record's other feedback by call.

    >>> from funcgrad.core import Record, Trace
    >>> t = Trace((Record(0, "input", "input"), Record(1, "classify", "llm", inputs=(0,), output="bug"),
    ...            Record(2, "review", "llm", inputs=(0, 1), output="confirm")), output=1, control=(2,))
    >>> print(control_feedback(t, 2, 3, 0.0, "wrong: expected 'billing'", 6)[1])  # doctest: +NORMALIZE_WHITESPACE
    (control) The pipeline read this answer to decide what to run next. The run stopped right after this
    decision: no further step was called. The final output did not change after it: 'bug'. The run ended
    with score 0.00: wrong: expected 'billing'
    """
    first = next((r.id for r in trace.records if record_id in r.control), None)
    followed = [r for r in trace.records if first is not None and r.id >= first and r.kind != "loss"]
    models = [r for r in followed if r.kind == "llm"]
    if models:
        after = control_prompts.FOLLOWED.format(n=len(models), calls=_call_names(models, max_calls))
    elif followed:
        after = control_prompts.NO_MODEL_AFTER.format(calls=_call_names(followed, max_calls))
    else:
        after = control_prompts.STOPPED
    parts = [after, _output_change(trace, len(trace.records) if first is None else first),
             control_prompts.END.format(score=score, loss=one_line(loss_text, 200))]
    text = control_prompts.CONTROL_FEEDBACK.format(parts=" ".join(p for p in parts if p))
    return (end if first is None else first), text


def _call_names(records, max_calls: int) -> str:
    """``node#call_index`` of each record, at most ``max_calls`` of them, then how many more."""
    names = ", ".join(f"{r.node}#{r.call_index}" for r in records[:max_calls])
    return names + (control_prompts.MORE_CALLS.format(n=len(records) - max_calls) if len(records) > max_calls else "")


def _output_change(trace, decided: int) -> str:
    """Whether the output changed after a decision taken before record ``decided`` was created ("" without output)."""
    if trace.output is None:
        return ""
    out = trace[trace.output]
    value = repr(one_line(out.output, 60))
    current = [r for r in trace.records if r.node == out.node and r.id < decided]
    if not current:
        return control_prompts.OUTPUT_NEW.format(value=value)
    if current[-1].id == out.id or current[-1].output == out.output:
        return control_prompts.OUTPUT_SAME.format(value=value)
    return control_prompts.OUTPUT_CHANGED.format(before=repr(one_line(current[-1].output, 60)), after=value)


# ---------------------------------------------------------------- the walk of one example


def _walked(ex_pos: int, res, r, param: str, text: str, source: str, call: int | None = None,
            via: EdgeKind = EdgeKind.DATA) -> _Walked:
    gradient = Gradient(0, param, r.node, res.example.id, r.id, r.call_index, res.loss.score, text, source, via=via)
    return _Walked((ex_pos, r.id), gradient, call)


def _passthrough_record(feedback) -> tuple[list[_Walked], list[_Feedback], Stats]:
    """A fn or retrieve record: its feedback goes upstream unchanged, no call."""
    return [], list(feedback), Stats(events={"passthrough": 1})


def _fixed_record(ex_pos, res, r, feedback, trainable) -> tuple[list[_Walked], list[_Feedback], Stats]:
    """An example scoring >= tau: the fixed "no noticeable error" gradient, also sent upstream, no call."""
    fixed, via = prompts.FIXED_GRADIENT.format(score=res.loss.score), _via(feedback)
    found = [_walked(ex_pos, res, r, p, fixed, "fixed", via=via) for p in trainable]
    return found, [_Feedback(r.id, fixed, via=via)], Stats(events={"errors_only_skip": 1})


def _critic_record(ex_pos, res, r, state, feedback, trainable, upstream, knobs):
    """A program: the critic call for record ``r``; its entries become gradients and the feedback sent upstream."""
    request, keys = backward_request(r, res.trace, state, feedback, trainable, upstream, res.loss.score,
                                     res.example.target, knobs)
    log = yield from ask(request)
    entries, counts = read_critique(log.response, keys, feedback, knobs)
    found, sent, via = [], [], _via(feedback)
    for k in keys:
        text, source = entries[k]
        if k == INPUTS_KEY:
            upstream_text = prompts.UPSTREAM_FEEDBACK.format(node=r.node, index=r.call_index, text=text)
            sent.append(_Feedback(r.id, upstream_text, "critique", via))
        else:
            found.append(_walked(ex_pos, res, r, k, text, source, log.id, via))  # a dropped critique keeps its call
    return found, sent, counts + Stats(calls={BACKWARD: 1})


def _example_backward(ex_pos: int, res, state: PromptState, knobs: BackpropKnobs):
    """The backward walk of one result, as a program; returns its gradients and counts.

    Records are visited in reverse topological order; a critic call for one record
    must come back before its upstream records can be judged, so each example asks
    one call per round.
    """
    trace, loss, out, counts = res.trace, res.trace.loss, [], Stats()
    if loss is None:
        return out, counts
    loss_text = res.loss.feedback or f"score {res.loss.score:.2f}"
    reach = _reaches_trainable(trace, state)
    inbox: dict[int, list[_Feedback]] = defaultdict(list)
    if trace.output is not None:
        inbox[trace.output].append(_Feedback(loss.id, loss_text, "loss"))
    if knobs.control_credit:
        for i in trace.control:
            sender, text = control_feedback(trace, i, loss.id, res.loss.score, loss_text, knobs.max_calls_listed)
            inbox[i].append(_Feedback(sender, text, "control", EdgeKind.CONTROL))
        counts += Stats(events={"control_feedback": len(trace.control)}) if trace.control else Stats()
    for r in reverse_topological(trace):
        if r.kind in ("loss", "input"):
            continue
        if r.node in trace.skips:
            inbox[r.id].append(_Feedback(loss.id, prompts.SKIP_FEEDBACK.format(text=loss_text), "skip"))
            counts += Stats(events={"skip_feedback": 1})
        feedback = sorted(inbox.pop(r.id, []), key=lambda f: f.source)
        if not feedback or not reach[r.id]:
            continue
        upstream = [i for i in r.inputs if reach.get(i, False)]
        trainable = [p for p in r.params if writable(state, p)]
        if r.kind in ("fn", "retrieve"):
            found, sent, more = _passthrough_record(feedback)
        elif knobs.errors_only and res.loss.score >= knobs.tau:
            found, sent, more = _fixed_record(ex_pos, res, r, feedback, trainable)
        else:
            found, sent, more = yield from _critic_record(ex_pos, res, r, state, feedback, trainable, upstream, knobs)
        for i in upstream:
            inbox[i].extend(sent)
        out += found
        counts += more
    return out, counts


def backward(results: Sequence[Any], state: PromptState, knobs: BackpropKnobs):
    """The backward pass over a minibatch, as a program: returns ``(gradients, requests, counts)``.

    ``gradients`` is a tuple of :class:`~funcgrad.core.backward.Gradient` sorted by
    (example, call order), numbered from 0; each critique's ``call`` is the id the
    driver gave its call, also when the critique was dropped and the downstream
    feedback passed on instead; ``requests`` are the calls' requests in id order.
    ``counts`` (:class:`~funcgrad.core.strategy_state.Stats`) holds the call and event counts.
    """
    per_example, calls = yield from numbered(gather(_example_backward(i, res, state, knobs)
                                                    for i, res in enumerate(results)))
    walked = sorted((w for found, _ in per_example for w in found), key=lambda w: w.order)
    grads = tuple(attrs.evolve(w.gradient, id=n, call=w.call) for n, w in enumerate(walked))
    return grads, tuple(c.request for c in calls), sum((counts for _, counts in per_example), Stats())


# ---------------------------------------------------------------- the optimizer call


def _peers(results, name: str, state: PromptState) -> list[str]:
    out: dict[str, None] = {}
    for res in results:
        for r in res.trace.records:
            if name in r.params:
                for p in r.params:
                    if p != name and p in state:
                        out[p] = None
    return list(out)


def _evidence(results, example_id: str, record_id: int):
    """(input, output, target) of the record a gradient came from."""
    for res in results:
        if res.example.id == example_id:
            try:
                record = res.trace[record_id]
            except Exception:  # a gradient from another batch: show what we have
                return "", "", res.example.target
            return record.user_text, record.output, res.example.target
    return "", "", None


def _optimizer_head(name, state, grads, results, knobs) -> list[str]:
    """What the param is: the node(s) reading it, its role, current text and peers."""
    param = state[name]
    nodes = ", ".join(f"`{n}`" for n in toolz.unique(g.node for g in grads))
    head = [prompts.TARGET_LINE.format(nodes=nodes, name=name, kind=param.kind)]
    if param.role:
        head.append(prompts.ROLE_LINE.format(role=clip(param.role, 300)))
    head += [prompts.CURRENT_HEADER, fence(clip(param.value, knobs.max_value_chars), CURRENT_TAG)]
    peers = _peers(results, name, state)
    if peers:
        head.append(prompts.PEERS_HEADER)
        head += [prompts.PEER_LINE.format(name=p, value=repr(one_line(state[p].value, 120))) for p in peers[:4]]
    return head


def _evidence_block(n: int, example_id: str, gs, results, knobs) -> list[str]:
    """One example's evidence: its input, answer and critique per gradient (stamped by call), then its target."""
    chars = knobs.max_chars
    block = [prompts.EXAMPLE_LINE.format(n=n, example=example_id, score=min(g.score for g in gs))]
    multi = knobs.time_stamps and len({g.node for g in gs}) < len(gs)
    target = None
    for g in gs[: knobs.max_feedback]:
        given, answer, target = _evidence(results, g.example_id, g.record_id)
        stamp = prompts.STAMP.format(index=g.call_index) if multi else ""
        if given:
            block.append(prompts.INPUT_LINE.format(stamp=stamp, text=one_line(given, chars)))
            block.append(prompts.ANSWER_LINE.format(stamp=stamp, text=one_line(answer, chars)))
        block.append(prompts.CRITIQUE_LINE.format(stamp=stamp, text=one_line(g.text, chars)))
    if target is not None:
        block.append(prompts.EXPECTED_LINE.format(text=one_line(target, 100)))
    return block


def _optimizer_tail(name, state, context, knobs) -> list[str]:
    """Past and rejected values, steps since improvement, the rules and the reply format (rewrite or edit)."""
    tail = past_lines(context, name, state[name].value, limit=knobs.max_history)
    tail += since_improvement_lines(context)
    tail.append(prompts.RULES.format(max_chars=knobs.max_value_chars))
    if knobs.edits:
        tail += [edit_prompts.SENTENCES, *(edit_prompts.SENTENCE_LINE.format(text=s) for s in edits.sentences(state[name].value))]
        tail.append(edit_prompts.REPLY.format(name=name))
    else:
        tail.append(prompts.OPTIMIZER_REPLY.format(name=name, open=OPEN, close=CLOSE))
    return tail


def optimizer_prompt(name, state, grads, results, context, knobs) -> tuple[str, str]:
    """System and user text of the optimizer call for param ``name``.

    The optimizer sees the evidence (input, answer, expected answer) next to each
    gradient, names the pattern of the errors on one line, then writes the value.
    Evidence shrinks to fit ``max_prompt_chars``; the description of the param, its
    current value and the reply instructions always survive.
    """
    system = edit_prompts.SYSTEM if knobs.edits else prompts.OPTIMIZER_SYSTEM.format(open=OPEN, close=CLOSE)
    by_example = toolz.groupby(lambda g: g.example_id, grads)
    order = sorted(by_example, key=lambda e: min(g.score for g in by_example[e]))
    shown = order[: knobs.max_examples]
    head = _optimizer_head(name, state, grads, results, knobs)
    head.append(prompts.EVIDENCE_HEADER.format(shown=len(shown), total=len(order), chars=knobs.max_chars))
    blocks = [_evidence_block(n, e, by_example[e], results, knobs) for n, e in enumerate(shown, 1)]
    return system, fit_prompt(head, blocks, _optimizer_tail(name, state, context, knobs), knobs.max_prompt_chars)


def optimizer_request(name, state, grads, results, context, knobs) -> Request:
    """The optimizer call for ``name``; retries (after a rejection) sample at ``retry_temperature``."""
    system, body = optimizer_prompt(name, state, grads, results, context, knobs)
    schema = edits.schema(knobs.critique_chars, state[name].value) if knobs.edits else None
    return optimizer.optimizer_request(system, body, context, knobs, schema)


def _read_edit(response, old: str) -> tuple[str | None, str, str]:
    """``(new value, guard, reason)`` from an edit reply (:mod:`funcgrad.strategies.edits`)."""
    data, guard = json_object(response.text, response.finish_reason,
                              lambda d: all(isinstance(d.get(f, ""), str) for f in ("op", "old", "new")))
    if data is None:
        return None, guard, f"the edit reply is not a JSON edit object: {one_line(response.text, 80)!r}"
    value, why = edits.apply_edit(old, data.get("op", ""), data.get("old", ""), data.get("new", ""))
    return value, (Guard.BAD_EDIT if value is None else ""), why


def _read_rewrite(response) -> tuple[str | None, str, str]:
    """``(new value, guard, reason)`` from a rewrite reply (the value between the tags)."""
    value, guard = extract_fenced(response.text, finish_reason=response.finish_reason)
    if value is not None:
        return value, guard, ""
    return None, guard, {Guard.NO_TAGS: f"optimizer reply had no {OPEN} tag",
                         Guard.TRUNCATED: "optimizer reply was cut by the token cap before the closing tag"}[guard]


def read_proposal(name, state, grads, results, context, knobs, response, call: int) -> tuple[Candidate, Note, Stats]:
    """The candidate (value or the guard that dropped it) in an optimizer ``response`` for ``name``, and counts."""
    old = state[name].value
    used = tuple(g.id for g in grads)
    value, guard, reason = _read_edit(response, old) if knobs.edits else _read_rewrite(response)
    if value is not None:
        guard, reason = check_proposal(
            value, old, results, tau=knobs.tau, critiques=[g.text for g in grads], labels=context.labels,
            names=state.names, role=state[name].role, rejected=rejected_values(context, name),
            max_value_chars=knobs.max_value_chars, skip=knobs.skip_guards,
        )
    if guard:
        note = Note(name, "no_update", f"{guard}: {reason}")
        return Candidate(name, old, value, guard, reason, used, call), note, Stats(rejections={guard: 1})
    n_ex = len({g.example_id for g in grads})
    note = Note(name, "proposed", f"from {len(grads)} gradients on {n_ex} examples")
    return Candidate(name, old, value, "", "", used, call), note, Stats()


# ---------------------------------------------------------------- the update, step by step


def _optimizer_asks(results, state, grads, context, knobs) -> tuple[list[tuple[str, tuple, Request]], list[Note]]:
    """``(param, its real gradients, optimizer request)`` for every param with a real gradient, n samples each."""
    by_param = toolz.groupby(lambda g: g.param, grads)
    notes, asks = [], []
    for name in state.trainable_names:
        gs = by_param.get(name, ())
        if not gs:
            continue
        real = tuple(g for g in gs if g.source != "fixed")
        if not real:
            notes.append(Note(name, "no_update", f"all {len({g.example_id for g in gs})} examples scored >= tau ({knobs.tau}): {FIXED}"))
            continue
        asks.append((name, real, optimizer_request(name, state, real, results, context, knobs)))
    if not grads:
        notes.append(Note("", "no_update", "no trainable parameter received feedback (is any param read by an LLM node upstream of the output?)"))
    n = knobs.n_candidates
    return [(name, real, r) for name, real, req in asks for r in sampling.samples(req, n, context.attempt, knobs.sample_temperature)], notes


def _proposals(asks, logs, results, state, context, knobs):
    """Candidates and notes of the optimizer replies (the driver's call logs), and one option (param -> value) per
    sample index."""
    n = knobs.n_candidates
    options: list[dict[str, str]] = [{} for _ in range(n)]
    candidates, notes, counts = [], [], Stats(calls={optimizer.OPTIMIZER: len(asks)})
    for pos, ((name, real, _), log) in enumerate(zip(asks, logs)):
        candidate, note, more = read_proposal(name, state, real, results, context, knobs, log.response, log.id)
        candidates.append(candidate)
        notes.append(note)
        counts += more
        if not candidate.guard and candidate.value is not None:
            options[pos % n][name] = candidate.value
    return options, candidates, notes, counts


def _update(knobs: BackpropKnobs):
    def update(results, state, s, context):
        stats = read_state(s, Stats, "backprop") + Stats(steps=1)
        grads, _, walked = yield from backward(results, state, knobs)
        asks, notes = _optimizer_asks(results, state, grads, context, knobs)
        logs = (yield tuple(Call(req) for _, _, req in asks)) if asks else ()
        options, candidates, more_notes, counts = _proposals(asks, logs, results, state, context, knobs)
        values, chosen = yield from sampling.best_option(state, options, results)
        return Update(values, [*notes, *more_notes, *chosen], grads, candidates), stats + walked + counts

    return update


def backprop(**knobs: Any) -> Strategy:
    """LLM-AutoDiff: per-node textual gradients, then one optimizer call per trainable param.

    Knobs (:class:`BackpropKnobs`; an unknown or invalid one is a ConfigError):
    ``errors_only``/``tau``: examples scoring ``>= tau`` get a fixed "no noticeable
    error" gradient without an LLM call. ``max_examples`` (examples shown to the
    optimizer), ``max_chars`` (per text field), ``max_feedback`` (feedback items per
    call), ``max_calls_listed`` (repeated calls listed), ``max_history`` (past / failed
    values shown), ``max_prompt_chars`` (cap per prompt; the evidence shrinks to fit):
    the prompt bounds. ``max_value_chars``: longest value accepted.
    ``critique_chars``/``critique_words``: critique size (also the JSON schema's
    maxLength when ``json_schema``). ``backward_max_tokens``, ``optimizer_max_tokens``,
    ``backward_temperature``, ``optimizer_temperature``, ``backward_model``,
    ``optimizer_model``: per-role request settings; ``retry_temperature``: optimizer
    temperature once a proposal of this step was rejected (a greedy retry would
    repeat it). ``time_stamps=False`` is the ablation without time-stamped gradients:
    prompts no longer say a node ran several times, list its calls in order, or mark
    which call a critique is about. ``skip_guards``: guards switched off (ablation).
    ``n_candidates``: optimizer samples per param (at ``sample_temperature`` or more,
    distinct sample indices, one batch); the guarded survivors are checked on the
    minibatch in one batch of ``Rerun`` effects and only the best is proposed
    (:mod:`funcgrad.strategies.sampling`). ``edits=True``: the optimizer proposes an
    edit (add, replace or delete ONE sentence, schema-constrained JSON) instead of a
    whole rewrite; the edited text passes the same guards (:mod:`funcgrad.strategies.edits`).

    Calls per step: backward = LLM records that reach a trainable param, over the
    examples scoring < tau (all examples if not ``errors_only``), one round per
    trace depth with the examples' calls in flight together; optimizer = trainable
    params with at least one real (not "no noticeable error") gradient, in one round.

    >>> backprop(tau=0.5).config["tau"]
    0.5
    """
    k = make_knobs(BackpropKnobs, "backprop", knobs)
    return Strategy("backprop", lambda state: Stats(calls={BACKWARD: 0, optimizer.OPTIMIZER: 0}), _update(k), k)
