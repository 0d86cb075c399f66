"""Per-node textual backpropagation (LLM-AutoDiff style), as an effect program.

Backward pass, for each training result: walk the trace from the loss record to the
inputs. Every record collects the feedback of the records that consumed its output,
in call order. Then, by kind:

- ``fn`` / ``retrieve``: pass the feedback on to its inputs unchanged (no LLM call);
- ``llm``: if ``errors_only`` and the example scored ``>= tau``, a fixed
  ``"score s: no noticeable error"`` gradient (no LLM call); otherwise ONE backward
  call covering all trainable params the record read (its peers) plus, when an
  upstream record can still reach a trainable param, feedback for its inputs;
- nodes named in ``trace.skips`` also get the loss feedback directly.

The examples of a minibatch are independent, so their backward walks run in
lockstep (:func:`funcgrad.core.effects.gather`): each round's critic calls are one
batch, in flight together. Each gradient is a :class:`~funcgrad.core.backward.Gradient`
(param, node, example, record, call index, score, text, source, the call that wrote
it); a param's gradients are an ordered tuple sorted by (example, call order).

Optimizer: one call per trainable param that got at least one real gradient, all in
one batch; the new value comes back between ``<NEW_VALUE>`` tags and passes the
guards of :mod:`funcgrad.strategies.proposals` before it is proposed. Every prompt
text lives in :mod:`funcgrad.strategies.prompts.backprop`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs
import toolz

from funcgrad import Note, PromptState, Request, Strategy, Update, derive_seed, reverse_topological
from funcgrad.core.backward import Candidate, Gradient
from funcgrad.core.effects import Call, ask, gather, numbered
from funcgrad.core.strategy import make_knobs
from funcgrad.core.run import mean_score
from funcgrad.strategies import proposals as P
from funcgrad.strategies import edits as E
from funcgrad.strategies import sampling
from funcgrad.strategies.prompts import backprop as T
from funcgrad.strategies.prompts import edits as ET
from funcgrad.strategies.prompts import shared as S

FIXED = T.FIXED
INPUTS_KEY = "(inputs)"



@attrs.frozen
class BackpropKnobs:
    """Knobs of :func:`backprop` (see its docstring); validated, JSON via ``attrs.asdict``.

    >>> BackpropKnobs(tau=0.5).tau
    0.5
    """

    errors_only: bool = True
    tau: float = attrs.field(default=0.99, validator=[attrs.validators.instance_of((int, float)), attrs.validators.le(1)])
    max_examples: int = attrs.field(default=4, validator=P.POSITIVE_INT)
    max_chars: int = attrs.field(default=400, validator=P.POSITIVE_INT)
    max_feedback: int = attrs.field(default=6, validator=P.POSITIVE_INT)
    max_calls_listed: int = attrs.field(default=6, validator=P.POSITIVE_INT)
    max_history: int = attrs.field(default=2, validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)])
    max_value_chars: int = attrs.field(default=1500, validator=P.POSITIVE_INT)
    max_prompt_chars: int = attrs.field(default=4000, validator=[attrs.validators.instance_of(int), attrs.validators.ge(500)])
    critique_chars: int = attrs.field(default=300, validator=P.POSITIVE_INT)
    critique_words: int = attrs.field(default=40, validator=P.POSITIVE_INT)
    backward_max_tokens: int = attrs.field(default=150, validator=P.POSITIVE_INT)
    optimizer_max_tokens: int = attrs.field(default=250, validator=P.POSITIVE_INT)
    backward_temperature: float = attrs.field(default=0.0, validator=P.NON_NEGATIVE)
    optimizer_temperature: float = attrs.field(default=0.0, validator=P.NON_NEGATIVE)
    retry_temperature: float = attrs.field(default=0.7, validator=P.NON_NEGATIVE)
    backward_model: str = ""
    optimizer_model: str = ""
    json_schema: bool = True
    time_stamps: bool = True
    n_candidates: int = attrs.field(default=1, validator=P.POSITIVE_INT)
    edits: bool = False
    sample_temperature: float = attrs.field(default=0.7, validator=P.NON_NEGATIVE)
    skip_guards: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=P.check_skip_guards)


@attrs.frozen
class _Feedback:
    source: int  # id of the record (or loss record) that sent it; orders feedback by call
    text: str
    kind: str = "passthrough"  # how it reached the record: passthrough, skip, critique (from a downstream call)


def _reaches_trainable(trace, state: PromptState) -> dict[int, bool]:
    reach: dict[int, bool] = {}
    for r in trace.records:
        own = any(p in state and state[p].trainable for p in r.params)
        reach[r.id] = own or any(reach.get(i, False) for i in r.inputs)
    return reach


def _calls_of(trace, node: str):
    return [r for r in trace.records if r.node == node]


def backward_prompt(record, trace, state, feedback, trainable, upstream, score, target, knobs) -> tuple[str, str, list[str]]:
    """System text, user text and the expected feedback keys of one backward call.

    The critic first names the mistake, then gives one feedback entry per trainable
    peer: small critics advise better when asked to diagnose first. The evidence
    (calls, input, answer, feedback) shrinks to fit ``max_prompt_chars``; the params
    and the reply format always survive.
    """
    chars = knobs.max_chars
    keys = list(trainable) + ([INPUTS_KEY] if upstream else [])
    system = T.CRITIC_SYSTEM.format(words=knobs.critique_words)
    calls = _calls_of(trace, record.node) if knobs.time_stamps else [record]
    listing: list[str] = []
    if len(calls) > 1:
        listing.append(T.CALLS_HEADER.format(node=record.node, n=len(calls), index=record.call_index))
        for c in calls[: knobs.max_calls_listed]:
            mark = T.THIS_CALL if c.id == record.id else ""
            listing.append(T.CALL_LINE.format(index=c.call_index, given=repr(P.one_line(c.user_text, 80)),
                                              answer=repr(P.one_line(c.output, 60)), mark=mark))
        if len(calls) > knobs.max_calls_listed:
            listing.append(T.MORE_CALLS.format(n=len(calls) - knobs.max_calls_listed))
        listing.append(T.CALL_INPUT.format(index=record.call_index))
    else:
        listing.append(T.ONE_CALL_INPUT.format(node=record.node))
    listing.append(P.clip(record.user_text, chars))
    answer = [T.ANSWERED, P.clip(record.output, chars)]
    answer.append(T.EXPECTED_SCORED.format(target=P.clip(target, 200), score=score) if target is not None
                  else T.SCORED.format(score=score))
    notes = [T.FEEDBACK_HEADER]
    for i, fb in enumerate(feedback[: knobs.max_feedback], 1):
        notes.append(f"{i}. {P.clip(fb.text, chars)}")
    if len(feedback) > knobs.max_feedback:
        notes.append(T.MORE_FEEDBACK.format(n=len(feedback) - knobs.max_feedback))
    params = [T.PARAMS_HEADER]
    for p in record.params:
        if p in state:
            flag = T.TO_IMPROVE if p in trainable else T.FIXED_PARAM
            params.append(T.PARAM_LINE.format(name=p, kind=state[p].kind, flag=flag,
                                              value=repr(P.clip(state[p].value, knobs.max_value_chars))))
    example = ", ".join(f'{{"param": "{k}", "feedback": "..."}}' for k in keys)
    what = T.ENTRY_WHAT + (T.ENTRY_INPUTS.format(key=INPUTS_KEY) if upstream else "")
    reply = T.CRITIC_REPLY.format(what=what, example=example)
    body = P.fit_prompt([], [listing, answer, notes], [*params, reply], knobs.max_prompt_chars)
    return system, body, keys


def _schema(keys: list[str], max_len: int) -> str:
    item = P.closed_object({"param": {"type": "string", "enum": keys}, "feedback": {"type": "string", "maxLength": max_len}})
    props = {
        "mistake": {"type": "string", "maxLength": max_len},
        "feedback": {"type": "array", "items": item, "minItems": len(keys), "maxItems": len(keys)},
    }
    return json.dumps(P.closed_object(props))


def parse_critique(text: str, keys: Sequence[str]) -> tuple[dict[str, str], str]:
    """``(param -> feedback, mistake)`` from a backward reply.

    Accepts the requested object ``{"mistake": ..., "feedback": [{"param", "feedback"}, ...]}``
    and, from models that ignore the format, a bare list of such entries, a
    ``{param: text}`` dict, or a list of strings in key order. Raises ValueError
    when the reply holds no JSON.

    >>> parse_critique('{"mistake": "counted the carrots", "feedback": [{"param": "a", "feedback": "count only the asked category"}]}', ["a"])
    ({'a': 'count only the asked category'}, 'counted the carrots')
    """
    data = P.parse_json_reply(text)
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


def _example_backward(ex_pos: int, res, state: PromptState, knobs: BackpropKnobs, stats: dict):
    """The backward walk of one result, as a program; returns its gradients ``(order key, fields)``.

    Records are visited in reverse topological order; a critic call for one record
    must come back before its upstream records can be judged, so each example asks
    one call per round.
    """
    trace, score = res.trace, res.loss.score
    loss = trace.loss
    out: list[tuple[tuple[int, int], dict]] = []
    if loss is None:
        return out
    loss_text = res.loss.feedback or f"score {score:.2f}"
    target = res.example.target
    reach = _reaches_trainable(trace, state)
    inbox: dict[int, list[_Feedback]] = defaultdict(list)
    if trace.output is not None:
        inbox[trace.output].append(_Feedback(loss.id, loss_text, "loss"))
    skips = set(trace.skips)
    for r in reverse_topological(trace):
        if r.kind in ("loss", "input"):
            continue
        if r.node in skips:
            inbox[r.id].append(_Feedback(loss.id, T.SKIP_FEEDBACK.format(text=loss_text), "skip"))
            stats["events"] = P.bump(stats["events"], "skip_feedback")
        feedback = sorted(inbox.pop(r.id, []), key=lambda f: f.source)
        if not feedback or not reach[r.id]:
            continue
        upstream = [i for i in r.inputs if reach.get(i, False)]
        if r.kind in ("fn", "retrieve"):
            for i in upstream:
                inbox[i].extend(feedback)
            stats["events"] = P.bump(stats["events"], "passthrough")
            continue
        trainable = [p for p in r.params if p in state and state[p].trainable]

        def emit(param, text, source, call=None):
            out.append(((ex_pos, r.id), {"param": param, "node": r.node, "example_id": res.example.id, "record_id": r.id,
                                         "call_index": r.call_index, "score": score, "text": text, "source": source,
                                         "call": call}))

        if knobs.errors_only and score >= knobs.tau:
            fixed = T.FIXED_GRADIENT.format(score=score)
            for p in trainable:
                emit(p, fixed, "fixed")
            for i in upstream:
                inbox[i].append(_Feedback(r.id, fixed))
            stats["events"] = P.bump(stats["events"], "errors_only_skip")
            continue
        system, body, keys = backward_prompt(r, trace, state, feedback, trainable, upstream, score, target, knobs)
        request = Request(
            messages=(("system", system), ("user", body)), model=knobs.backward_model,
            temperature=knobs.backward_temperature, max_tokens=knobs.backward_max_tokens,
            json_schema=_schema(keys, knobs.critique_chars) if knobs.json_schema else None, role="backward",
        )
        stats["calls"] = P.bump(stats["calls"], "backward")
        log = yield from ask(request)
        response = log.response
        entries: dict[str, str] = {}
        mistake, problem = "", ""
        try:
            entries, mistake = parse_critique(response.text, keys)
        except ValueError:
            problem = "critique_truncated" if response.finish_reason == "length" else "critique_unparsed"
        if problem:
            stats["rejections"] = P.bump(stats["rejections"], problem)
        passed = " | ".join(P.one_line(f.text, knobs.max_chars) for f in feedback)
        passed_kind = "skip" if all(f.kind == "skip" for f in feedback) else "passthrough"
        for k in keys:
            text = entries.get(k, "").strip()
            source = "critique"
            if text and P.is_generic(text):
                stats["rejections"] = P.bump(stats["rejections"], "critique_generic")
                text = ""
            if not text:
                if not problem and k not in entries:
                    stats["rejections"] = P.bump(stats["rejections"], "critique_missing_entry")
                text, source = passed, passed_kind
            if source == "critique" and mistake and not P.is_generic(mistake):
                text = T.MISTAKE_FIX.format(mistake=P.one_line(mistake, knobs.critique_chars), fix=text)
            text = P.clip(text, 2 * knobs.critique_chars)
            if k == INPUTS_KEY:
                for i in upstream:
                    inbox[i].append(_Feedback(r.id, T.UPSTREAM_FEEDBACK.format(node=r.node, index=r.call_index, text=text), "critique"))
            else:
                emit(k, text, source, log.id if source == "critique" else None)
    return out


def backward(results: Sequence[Any], state: PromptState, knobs: BackpropKnobs, stats: dict):
    """The backward pass over a minibatch, as a program: returns ``(gradients, requests)``.

    ``gradients`` is a tuple of :class:`~funcgrad.core.backward.Gradient` sorted by
    (example, call order), numbered from 0; each critique's ``call`` is the id the
    driver gave its call; ``requests`` are the calls' requests in id order. ``stats``
    (a mutable dict, see :func:`proposals.new_stats`) receives call and event counts.
    """
    per_example, calls = yield from numbered(gather(_example_backward(i, res, state, knobs, stats)
                                                    for i, res in enumerate(results)))
    items = sorted((item for ex in per_example for item in ex), key=lambda t: t[0])
    grads = tuple(Gradient(n, **fields) for n, (_, fields) in enumerate(items))
    return grads, tuple(c.request for c in calls)


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


def optimizer_prompt(name, state, grads, results, context, knobs) -> tuple[str, str]:
    """System and user text of the optimizer call for param ``name``.

    The optimizer sees the evidence (input, answer, expected answer) next to each
    gradient, names the pattern of the errors on one line, then writes the value.
    Evidence shrinks to fit ``max_prompt_chars``; the description of the param, its
    current value and the reply instructions always survive.
    """
    chars, param = knobs.max_chars, state[name]
    system = ET.SYSTEM if knobs.edits else T.OPTIMIZER_SYSTEM.format(open=P.OPEN, close=P.CLOSE)
    by_example = toolz.groupby(lambda g: g.example_id, grads)
    order = sorted(by_example, key=lambda e: min(g.score for g in by_example[e]))
    shown = order[: knobs.max_examples]
    nodes = ", ".join(f"`{n}`" for n in toolz.unique(g.node for g in grads))
    head = [T.TARGET_LINE.format(nodes=nodes, name=name, kind=param.kind)]
    if param.role:
        head.append(T.ROLE_LINE.format(role=P.clip(param.role, 300)))
    head += [T.CURRENT_HEADER, P.fence(P.clip(param.value, knobs.max_value_chars), P.CURRENT_TAG)]
    peers = _peers(results, name, state)
    if peers:
        head.append(T.PEERS_HEADER)
        head += [T.PEER_LINE.format(name=p, value=repr(P.one_line(state[p].value, 120))) for p in peers[:4]]
    head.append(T.EVIDENCE_HEADER.format(shown=len(shown), total=len(order), chars=chars))
    blocks = []
    for n, e in enumerate(shown, 1):
        gs = by_example[e]
        block = [T.EXAMPLE_LINE.format(n=n, example=e, score=min(g.score for g in gs))]
        multi = knobs.time_stamps and len({g.node for g in gs}) < len(gs)
        for g in gs[: knobs.max_feedback]:
            given, answer, target = _evidence(results, g.example_id, g.record_id)
            stamp = T.STAMP.format(index=g.call_index) if multi else ""
            if given:
                block.append(T.INPUT_LINE.format(stamp=stamp, text=P.one_line(given, chars)))
                block.append(T.ANSWER_LINE.format(stamp=stamp, text=P.one_line(answer, chars)))
            block.append(T.CRITIQUE_LINE.format(stamp=stamp, text=P.one_line(g.text, chars)))
        if target is not None:
            block.append(T.EXPECTED_LINE.format(text=P.one_line(target, 100)))
        blocks.append(block)
    tail = []
    hist = P.history_lines(context, name, param.value, limit=knobs.max_history, chars=200)
    if hist:
        tail += [S.HISTORY_HEADER, *hist]
    rej = P.rejected_lines(context, name, limit=knobs.max_history, chars=200)
    if rej:
        tail += [S.REJECTED_HEADER, *rej]
    since = context.steps_since_improvement
    if since:
        tail.append(S.SINCE_IMPROVEMENT.format(n=since) + (S.BOLDER if since >= 2 else ""))
    tail.append(T.RULES.format(max_chars=knobs.max_value_chars))
    if knobs.edits:
        tail += [ET.SENTENCES, *(ET.SENTENCE_LINE.format(text=s) for s in E.sentences(param.value))]
        tail.append(ET.REPLY.format(name=name))
    else:
        tail.append(T.OPTIMIZER_REPLY.format(name=name, open=P.OPEN, close=P.CLOSE))
    return system, P.fit_prompt(head, blocks, tail, knobs.max_prompt_chars)


def optimizer_request(name, state, grads, results, context, knobs) -> Request:
    """The optimizer call for ``name``; retries (after a rejection) sample at ``retry_temperature``."""
    system, body = optimizer_prompt(name, state, grads, results, context, knobs)
    return Request(
        messages=(("system", system), ("user", body)), model=knobs.optimizer_model,
        temperature=P.attempt_temperature(context, knobs.optimizer_temperature, knobs.retry_temperature),
        max_tokens=knobs.optimizer_max_tokens, seed=derive_seed(context.seed, context.step),
        sample=context.attempt, role="optimizer", json_schema=E.schema(knobs.critique_chars, state[name].value) if knobs.edits else None,
    )


def read_proposal(name, state, grads, results, context, knobs, response, call: int, stats) -> tuple[Candidate, Note]:
    """The candidate (value or the guard that dropped it) in an optimizer ``response`` for ``name``."""
    old = state[name].value
    used = tuple(g.id for g in grads)
    if knobs.edits:
        value, guard, reason = _read_edit(response, old)
    else:
        value, guard = P.extract_fenced(response.text, finish_reason=response.finish_reason)
        reason = ""
    if value is None:
        reason = reason or {"no_tags": f"optimizer reply had no {P.OPEN} tag",
                            "truncated": "optimizer reply was cut by the token cap before the closing tag"}[guard]
    else:
        guard, reason = P.check_proposal(
            value, old, results, tau=knobs.tau, critiques=[g.text for g in grads],
            names=state.names, role=state[name].role, rejected=P.rejected_values(context, name),
            max_value_chars=knobs.max_value_chars, skip=knobs.skip_guards,
        )
    if guard:
        stats["rejections"] = P.bump(stats["rejections"], guard)
        return Candidate(name, old, value, guard, reason, used, call), Note(name, "no_update", f"{guard}: {reason}")
    n_ex = len({g.example_id for g in grads})
    return Candidate(name, old, value, "", "", used, call), Note(name, "proposed", f"from {len(grads)} gradients on {n_ex} examples")


def _read_edit(response, old: str) -> tuple[str | None, str, str]:
    """``(new value, guard, reason)`` from an edit reply (:mod:`funcgrad.strategies.edits`)."""
    data, guard = P.json_object(response.text, response.finish_reason,
                                lambda d: all(isinstance(d.get(f, ""), str) for f in ("op", "old", "new")))
    if data is None:
        return None, guard, f"the edit reply is not a JSON edit object: {P.one_line(response.text, 80)!r}"
    value, why = E.apply_edit(old, data.get("op", ""), data.get("old", ""), data.get("new", ""))
    return value, ("bad_edit" if value is None else ""), why


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

    def init(state):
        return P.freeze_state(P.new_stats())

    def update(results, state, s, context):
        stats = P.thaw_state(s) or P.new_stats()
        stats["steps"] = stats.get("steps", 0) + 1
        grads, _ = yield from backward(results, state, k, stats)
        by_param = toolz.groupby(lambda g: g.param, grads)
        notes, asks = [], []
        for name in state.trainable_names:
            gs = by_param.get(name, ())
            if not gs:
                continue
            real = tuple(g for g in gs if g.source != "fixed")
            if not real:
                notes.append(Note(name, "no_update", f"all {len({g.example_id for g in gs})} examples scored >= tau ({k.tau}): {FIXED}"))
                continue
            asks.append((name, real, optimizer_request(name, state, real, results, context, k)))
        if not grads:
            notes.append(Note("", "no_update", "no trainable parameter received feedback (is any param read by an LLM node upstream of the output?)"))
        n = k.n_candidates
        asks = [(name, real, r) for name, real, req in asks for r in sampling.samples(req, n, context.attempt, k.sample_temperature)]
        stats["calls"] = P.bump(stats["calls"], "optimizer", len(asks))
        logs = (yield tuple(Call(req) for _, _, req in asks)) if asks else ()
        options: list[dict[str, str]] = [{} for _ in range(n)]
        candidates = []
        for pos, ((name, real, _), log) in enumerate(zip(asks, logs)):
            candidate, note = read_proposal(name, state, real, results, context, k, log.response, log.id, stats)
            candidates.append(candidate)
            notes.append(note)
            if not candidate.guard and candidate.value is not None:
                options[pos % n][name] = candidate.value
        options = [o for i, o in enumerate(options) if o and o not in options[:i]]
        values = options[0] if options else {}
        if len(options) > 1:
            best, _, why = yield from sampling.best_on_minibatch(state, options, mean_score(results))
            values = options[best]
            notes.append(Note("", "proposed", why))
        return Update(values, notes, grads, candidates), P.freeze_state(stats)

    return Strategy("backprop", init, update, k)
