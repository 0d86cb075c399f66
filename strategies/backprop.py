"""Per-node textual backpropagation (LLM-AutoDiff style).

Backward pass, for each training result: walk the trace from the loss record to the
inputs. Every record collects the feedback of the records that consumed its output,
in call order. Then, by kind:

- ``fn`` / ``retrieve``: pass the feedback on to its inputs unchanged (no LLM call);
- ``llm``: if ``errors_only`` and the example scored ``>= tau``, a fixed
  ``"score s: no noticeable error"`` gradient (no LLM call); otherwise ONE backward
  call covering all trainable params the record read (its peers) plus, when an
  upstream record can still reach a trainable param, feedback for its inputs;
- nodes named in ``trace.skips`` also get the loss feedback directly.

Each gradient is a :class:`Gradient` (example id, record id, call index, score,
text); a param's gradients are an ordered tuple sorted by (example, call order).

Optimizer: one call per trainable param that got at least one real gradient; the
new value comes back between ``<NEW_VALUE>`` tags and passes the guards of
:mod:`funcgrad.strategies.proposals` before it is proposed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs

from funcgrad import Note, PromptState, Request, Strategy, Update, reverse_topological
from funcgrad.strategies import proposals as P

FIXED = "no noticeable error"
INPUTS_KEY = "(inputs)"


@attrs.frozen
class Gradient:
    """Feedback for one param from one LLM call: who, when, how well it scored, what to change.

    ``source`` is ``critique`` (a backward call), ``fixed`` (errors-only skip) or
    ``passthrough`` (the downstream feedback itself, when the critic's reply was unusable).
    """

    example_id: str
    record_id: int
    node: str
    call_index: int
    score: float
    text: str
    source: str = "critique"


@attrs.frozen
class _Feedback:
    source: int  # id of the record (or loss record) that sent it; orders feedback by call
    text: str


def _reaches_trainable(trace, state: PromptState) -> dict[int, bool]:
    reach: dict[int, bool] = {}
    for r in trace.records:
        own = any(p in state and state[p].trainable for p in r.params)
        reach[r.id] = own or any(reach.get(i, False) for i in r.inputs)
    return reach


def _user_text(record) -> str:
    req = record.request or {}
    msgs = req.get("messages", ()) if hasattr(req, "get") else ()
    return "\n".join(content for role, content in msgs if role == "user")


def _calls_of(trace, node: str):
    return [r for r in trace.records if r.node == node]


def backward_prompt(record, trace, state, feedback, trainable, upstream, score, target, cfg) -> tuple[str, str, list[str]]:
    """System text, user text and the expected feedback keys of one backward call.

    The critic first names the mistake, then gives one feedback entry per trainable
    peer: small critics advise better when asked to diagnose first.
    """
    chars = cfg["max_chars"]
    keys = list(trainable) + ([INPUTS_KEY] if upstream else [])
    system = (
        "You are a critic of one step of an LLM pipeline. Compare the step's answer with what was expected, "
        "find the concrete mistake, and say what the step's prompt should tell the model so it avoids this "
        f"kind of mistake. No generic advice. At most {cfg['critique_words']} words per field. Reply with JSON only."
    )
    lines = []
    calls = _calls_of(trace, record.node) if cfg["time_stamps"] else [record]
    if len(calls) > 1:
        lines.append(f"The step `{record.node}` was called {len(calls)} times in this run, in this order; "
                     f"you judge call #{record.call_index}:")
        for c in calls[: cfg["max_calls_listed"]]:
            mark = "  <- this call" if c.id == record.id else ""
            lines.append(f"  #{c.call_index}: input {P.one_line(_user_text(c), 80)!r} -> answer {P.one_line(c.output, 60)!r}{mark}")
        if len(calls) > cfg["max_calls_listed"]:
            lines.append(f"  (+{len(calls) - cfg['max_calls_listed']} later calls not shown)")
        lines.append(f"Call #{record.call_index} received this input:")
    else:
        lines.append(f"The step `{record.node}` (one call in this run) received this input:")
    lines.append(P.clip(_user_text(record), chars))
    lines.append("It answered:")
    lines.append(P.clip(record.output, chars))
    if target is not None:
        lines.append(f"The expected final answer of the pipeline is {P.clip(target, 200)}; this run scored {score:.2f}.")
    else:
        lines.append(f"This run scored {score:.2f}.")
    lines.append("Feedback on this answer, in call order:")
    for i, fb in enumerate(feedback[: cfg["max_feedback"]], 1):
        lines.append(f"{i}. {P.clip(fb.text, chars)}")
    if len(feedback) > cfg["max_feedback"]:
        lines.append(f"(+{len(feedback) - cfg['max_feedback']} more not shown)")
    lines.append("The step's prompt is made of these parameters:")
    for p in record.params:
        if p in state:
            flag = "to be improved" if p in trainable else "fixed"
            lines.append(f"- {p} ({state[p].kind}, {flag}): {P.clip(state[p].value, chars)!r}")
    example = ", ".join(f'{{"param": "{k}", "feedback": "..."}}' for k in keys)
    what = "one entry per parameter to be improved, with a general rule that text should add"
    if upstream:
        what += f', and one entry "{INPUTS_KEY}" saying what was wrong with the step\'s inputs'
    fields = ['"mistake": what the answer got wrong compared with the expected answer, i.e. the error to prevent;',
              f'"feedback": a list with {what}: [{example}]']
    lines.append("Reply with JSON with these fields:\n" + "\n".join(fields))
    body = P.cap_prompt("\n".join(lines), cfg["max_prompt_chars"])
    return system, body, keys


def _schema(keys: list[str], max_len: int) -> str:
    item = {
        "type": "object",
        "properties": {"param": {"type": "string", "enum": keys}, "feedback": {"type": "string", "maxLength": max_len}},
        "required": ["param", "feedback"],
        "additionalProperties": False,
    }
    props = {
        "mistake": {"type": "string", "maxLength": max_len},
        "feedback": {"type": "array", "items": item, "minItems": len(keys), "maxItems": len(keys)},
    }
    return json.dumps({"type": "object", "properties": props, "required": list(props), "additionalProperties": False})


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


def backward(results: Sequence[Any], state: PromptState, engine, cfg: dict, stats: dict) -> dict[str, tuple[Gradient, ...]]:
    """The backward pass over a minibatch: param -> ordered tuple of :class:`Gradient`.

    ``stats`` (a mutable dict, see :func:`proposals.new_stats`) receives call and
    event counts. Budget exhaustion propagates; other engine errors fall back to
    passing the downstream feedback through.
    """
    grads: dict[str, list[tuple[int, Gradient]]] = defaultdict(list)
    for ex_pos, res in enumerate(results):
        trace, score = res.trace, res.loss.score
        loss = trace.loss
        if loss is None:
            continue
        loss_text = res.loss.feedback or f"score {score:.2f}"
        target = res.example.target
        reach = _reaches_trainable(trace, state)
        inbox: dict[int, list[_Feedback]] = defaultdict(list)
        if trace.output is not None:
            inbox[trace.output].append(_Feedback(loss.id, loss_text))
        skips = set(trace.skips)
        for r in reverse_topological(trace):
            if r.kind in ("loss", "input"):
                continue
            if r.node in skips:
                inbox[r.id].append(_Feedback(loss.id, f"(skip connection from the loss) {loss_text}"))
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

            def emit(param, text, source):
                grads[param].append(((ex_pos, r.id), Gradient(res.example.id, r.id, r.node, r.call_index, score, text, source)))

            if cfg["errors_only"] and score >= cfg["tau"]:
                fixed = f"score {score:.2f}: {FIXED}"
                for p in trainable:
                    emit(p, fixed, "fixed")
                for i in upstream:
                    inbox[i].append(_Feedback(r.id, fixed))
                stats["events"] = P.bump(stats["events"], "errors_only_skip")
                continue
            system, body, keys = backward_prompt(r, trace, state, feedback, trainable, upstream, score, target, cfg)
            request = Request(
                messages=(("system", system), ("user", body)), model=cfg["backward_model"],
                temperature=cfg["backward_temperature"], max_tokens=cfg["backward_max_tokens"],
                json_schema=_schema(keys, cfg["critique_chars"]) if cfg["json_schema"] else None,
                role="backward",
            )
            stats["calls"] = P.bump(stats["calls"], "backward")
            response, error = P.call_engine(engine, request)
            entries: dict[str, str] = {}
            mistake, problem = "", ""
            if response is None:
                problem = "critique_failed"
            else:
                try:
                    entries, mistake = parse_critique(response.text, keys)
                except ValueError:
                    problem = "critique_truncated" if response.finish_reason == "length" else "critique_unparsed"
            if problem:
                stats["rejections"] = P.bump(stats["rejections"], problem)
            passed = " | ".join(P.one_line(f.text, cfg["max_chars"]) for f in feedback)
            for k in keys:
                text = entries.get(k, "").strip()
                source = "critique"
                if text and P.is_generic(text):
                    stats["rejections"] = P.bump(stats["rejections"], "critique_generic")
                    text = ""
                if not text:
                    if not problem and k not in entries:
                        stats["rejections"] = P.bump(stats["rejections"], "critique_missing_entry")
                    text, source = passed, "passthrough"
                if source == "critique" and mistake and not P.is_generic(mistake):
                    text = f"Mistake: {P.one_line(mistake, cfg['critique_chars'])} Fix: {text}"
                text = P.clip(text, 2 * cfg["critique_chars"])
                if k == INPUTS_KEY:
                    for i in upstream:
                        inbox[i].append(_Feedback(r.id, f"(from `{r.node}` call #{r.call_index}) {text}"))
                else:
                    emit(k, text, source)
    return {p: tuple(g for _, g in sorted(items, key=lambda t: t[0])) for p, items in grads.items()}


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
            return _user_text(record), record.output, res.example.target
    return "", "", None


def optimizer_prompt(name, state, grads, results, context, cfg) -> tuple[str, str]:
    """System and user text of the optimizer call for param ``name``.

    The optimizer sees the evidence (input, answer, expected answer) next to each
    gradient, names the pattern of the errors on one line, then writes the value.
    """
    chars, param = cfg["max_chars"], state[name]
    system = (
        "You are an expert prompt engineer. You improve one part of the prompt of an AI assistant step so it "
        "makes fewer mistakes: find the pattern in its errors and write a general rule that prevents it. Never "
        "copy the input or the answer of a specific example into the text. "
        f"Write the new text between {P.OPEN} and {P.CLOSE}."
    )
    by_example: dict[str, list[Gradient]] = {}
    for g in grads:
        by_example.setdefault(g.example_id, []).append(g)
    order = sorted(by_example, key=lambda e: min(g.score for g in by_example[e]))
    shown = order[: cfg["max_examples"]]
    nodes = ", ".join(f"`{n}`" for n in dict.fromkeys(g.node for g in grads))
    lines = [f"The step {nodes} of a pipeline reads the prompt part `{name}` ({param.kind})."]
    if param.role:
        lines.append(f"What it is for: {P.clip(param.role, chars)}")
    lines += ["Its current text:", P.fence(P.clip(param.value, cfg["max_value_chars"]), P.CURRENT_TAG)]
    peers = _peers(results, name, state)
    if peers:
        lines.append("The step also reads (not changed now):")
        for p in peers[:4]:
            lines.append(f"- {p}: {P.one_line(state[p].value, 200)!r}")
    lines.append(f"Evidence, lowest score first ({len(shown)} of {len(order)} examples; texts cut at {chars} chars):")
    for n, e in enumerate(shown, 1):
        gs = by_example[e]
        lines.append(f"{n}. Example {e} (score {min(g.score for g in gs):.2f})")
        multi = cfg["time_stamps"] and len({g.node for g in gs}) < len(gs)
        for g in gs[: cfg["max_feedback"]]:
            given, answer, target = _evidence(results, g.example_id, g.record_id)
            stamp = f" (call #{g.call_index})" if multi else ""
            if given:
                lines.append(f"   Input{stamp}: {P.one_line(given, chars)}")
                lines.append(f"   Answer{stamp}: {P.one_line(answer, chars)}")
            lines.append(f"   Critique{stamp}: {P.one_line(g.text, chars)}")
        if target is not None:
            lines.append(f"   Expected final answer: {P.one_line(target, 100)}")
    hist = P.history_lines(context, name, param.value, limit=cfg["max_history"], chars=200)
    if hist:
        lines.append("Best past values (validation score):")
        lines.extend(hist)
    rej = P.rejected_lines(context, name, limit=cfg["max_history"], chars=200)
    if rej:
        lines.append("Failed proposals this step (write something different):")
        lines.extend(rej)
    since = getattr(context, "steps_since_improvement", 0) or 0
    if since:
        lines.append(f"Steps since last improvement: {since}" + (" (make a bolder change)" if since >= 2 else ""))
    lines.append(
        f"Rules for the new text: at most {cfg['max_value_chars']} characters; complete text the assistant reads, "
        "not a critique and not advice about the prompt; general, with no example's input or answer."
    )
    lines.append(
        f"First write one line starting with \"Pattern:\" naming what the errors have in common. Then write the "
        f"complete new text of `{name}` between {P.OPEN} and {P.CLOSE}."
    )
    return system, P.cap_prompt("\n".join(lines), cfg["max_prompt_chars"])


def propose(name, state, grads, results, context, engine, cfg, stats) -> tuple[str | None, Note]:
    """One optimizer call for ``name``; returns (new value or None, note)."""
    system, body = optimizer_prompt(name, state, grads, results, context, cfg)
    request = Request(
        messages=(("system", system), ("user", body)), model=cfg["optimizer_model"],
        temperature=P.attempt_temperature(context, cfg["optimizer_temperature"], cfg["retry_temperature"]),
        max_tokens=cfg["optimizer_max_tokens"],
        seed=getattr(context, "seed", 0), sample=len(getattr(context, "rejected", ()) or ()), role="optimizer",
    )
    stats["calls"] = P.bump(stats["calls"], "optimizer")
    response, error = P.call_engine(engine, request)
    if response is None:
        stats["rejections"] = P.bump(stats["rejections"], "engine_error")
        return None, Note(name, "no_update", f"engine_error: optimizer call failed ({error})")
    value, guard = P.extract_fenced(response.text, finish_reason=response.finish_reason)
    reason = ""
    if value is None:
        reason = {"no_tags": f"optimizer reply had no {P.OPEN} tag",
                  "truncated": "optimizer reply was cut by the token cap before the closing tag"}[guard]
    else:
        guard, reason = P.check_value(
            value, state[name].value,
            targets=P.failing_targets(results, cfg["tau"]),
            critiques=[g.text for g in grads] + [r.loss.feedback for r in results],
            inputs=P.example_inputs(results),
            names=state.names,
            rejected=P.rejected_values(context, name),
            max_value_chars=cfg["max_value_chars"],
        )
    if guard:
        stats["rejections"] = P.bump(stats["rejections"], guard)
        return None, Note(name, "no_update", f"{guard}: {reason}")
    n_ex = len({g.example_id for g in grads})
    return value, Note(name, "proposed", f"from {len(grads)} gradients on {n_ex} examples")


def backprop(
    *, errors_only: bool = True, tau: float = 0.99, max_examples: int = 4, max_chars: int = 400,
    max_feedback: int = 6, max_calls_listed: int = 6, max_history: int = 2, max_prompt_chars: int = 4000,
    max_value_chars: int = 1500, critique_chars: int = 300, critique_words: int = 40,
    backward_max_tokens: int = 150, optimizer_max_tokens: int = 250, backward_temperature: float = 0.0,
    optimizer_temperature: float = 0.0, retry_temperature: float = 0.7, backward_model: str = "", optimizer_model: str = "", json_schema: bool = True,
    time_stamps: bool = True,
) -> Strategy:
    """LLM-AutoDiff: per-node textual gradients, then one optimizer call per trainable param.

    ``errors_only``/``tau``: examples scoring ``>= tau`` get a fixed "no noticeable
    error" gradient without an LLM call. ``max_examples`` (examples shown to the
    optimizer), ``max_chars`` (per text field), ``max_feedback`` (feedback items per
    call), ``max_calls_listed`` (repeated calls listed), ``max_history`` (past / failed
    values shown), ``max_prompt_chars`` (hard cap per prompt): the prompt bounds.
    ``max_value_chars``: longest value accepted. ``critique_chars``/``critique_words``:
    critique size (also the JSON schema's maxLength when ``json_schema``).
    ``*_max_tokens``, ``*_temperature``, ``*_model``: per-role request settings;
    ``retry_temperature``: optimizer temperature once a proposal of this step was
    rejected (a greedy retry would repeat the rejected text). ``time_stamps=False``
    is the ablation without time-stamped gradients: prompts no longer say a node ran
    several times, list its calls in order, or mark which call a critique is about.

    Calls per step: backward = LLM records that reach a trainable param, over the
    examples scoring < tau (all examples if not ``errors_only``); optimizer = trainable
    params with at least one real (not "no noticeable error") gradient.
    """
    cfg = dict(locals())

    def init(state):
        return P.freeze_state(P.new_stats())

    def update(results, state, s, *, engine, evaluate=None, context=None):
        stats = P.thaw_state(s) or P.new_stats()
        stats["steps"] = stats.get("steps", 0) + 1
        grads = backward(results, state, engine, cfg, stats)
        values, notes = {}, []
        for name in state.trainable_names:
            gs = grads.get(name, ())
            if not gs:
                continue
            real = tuple(g for g in gs if g.source != "fixed")
            if not real:
                notes.append(Note(name, "no_update", f"all {len({g.example_id for g in gs})} examples scored >= tau ({cfg['tau']}): {FIXED}"))
                continue
            value, note = propose(name, state, real, results, context, engine, cfg, stats)
            notes.append(note)
            if value is not None:
                values[name] = value
        if not grads:
            notes.append(Note("", "no_update", "no trainable parameter received feedback (is any param read by an LLM node upstream of the output?)"))
        return Update(values, notes), P.freeze_state(stats)

    return Strategy("backprop", init, update, cfg)
