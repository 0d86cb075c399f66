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
capped). The optimizer answers ``{"reasoning": ..., "suggestion": {param: new text}}``;
an empty suggestion is a legal "no change".
"""

from __future__ import annotations

import json

from funcgrad import Note, PromptState, Request, Strategy, Update
from funcgrad.strategies import proposals as P


def _name(rid: int) -> str:
    return f"y{rid}"


def code_line(record) -> str:
    """``y3 = answer(sys, question=y0, context=y2)``: params first, then named inputs.

    >>> from funcgrad import Record
    >>> code_line(Record(3, "answer", "llm", inputs=(0, 2), input_names=("question", "context"), params=("sys",)))
    'y3 = answer(sys, question=y0, context=y2)'
    """
    args = list(record.params) + [f"{n}={_name(i)}" for n, i in zip(record.input_names, record.inputs)]
    return f"{_name(record.id)} = {record.node}({', '.join(args)})"


def _doc(record, state: PromptState) -> str:
    if record.kind == "llm":
        ps = ", ".join(record.params) or "no parameters"
        return f"{record.node}: an LLM call; its system prompt is the text of [{ps}], its user message is built from its inputs."
    if record.kind == "retrieve":
        return f"{record.node}: a retriever (fixed code); returns documents for its inputs."
    return f"{record.node}: a Python function (fixed code)."


def problem_text(results, state: PromptState, cfg: dict, context=None) -> tuple[str, list[str], int]:
    """The user message of the optimizer call, the trainable params it shows, and how many examples."""
    chars = cfg["max_chars"]
    order = sorted(range(len(results)), key=lambda i: results[i].loss.score)
    shown = order[: cfg["max_examples"]]
    trainable: dict[str, None] = {}
    fixed: dict[str, None] = {}
    docs: dict[str, str] = {}
    for res in results:
        for r in res.trace.records:
            if r.kind in ("llm", "fn", "retrieve"):
                docs.setdefault(r.node, _doc(r, state))
            for p in r.params:
                if p in state:
                    (trainable if state[p].trainable else fixed)[p] = None
    lines = ["#Documentation"]
    lines += [f"- {d}" for d in docs.values()]
    lines.append("#Variables (you may change these)")
    for p in trainable:
        role = f" ({state[p].role})" if state[p].role else ""
        lines.append(f"{p}{role} =\n{P.fence(P.clip(state[p].value, cfg['max_value_chars']), P.CURRENT_TAG)}")
    if fixed:
        lines.append("Fixed parameters: " + "; ".join(f"{p} = {P.one_line(state[p].value, 150)!r}" for p in fixed))
    lines.append(f"Runs: showing {len(shown)} of {len(results)} examples, lowest score first; values cut at {chars} chars.")
    for i in shown:
        res = results[i]
        trace = res.trace
        recs = [r for r in trace.records if r.kind in ("llm", "fn", "retrieve")][: cfg["max_records"]]
        lines.append(f"## Example {res.example.id} (score {res.loss.score:.2f})")
        lines.append("#Code")
        lines += [code_line(r) for r in recs]
        if len(recs) < sum(1 for r in trace.records if r.kind in ("llm", "fn", "retrieve")):
            lines.append("# (+more records not shown)")
        inputs = [r for r in trace.records if r.kind == "input"]
        lines.append("#Inputs")
        lines += [f"{_name(r.id)} = {P.clip(r.output, chars)!r}" for r in inputs]
        others = [r for r in recs if r.id != trace.output]
        if others:
            lines.append("#Others")
            lines += [f"{_name(r.id)} = {P.clip(r.output if r.error is None else 'ERROR: ' + r.error, chars)!r}" for r in others]
        lines.append("#Outputs")
        if trace.output is not None:
            lines.append(f"{_name(trace.output)} = {P.clip(trace[trace.output].output, chars)!r}")
        else:
            lines.append("(the pipeline failed before producing an output)")
        lines.append("#Feedback")
        lines.append(P.clip(res.loss.feedback, chars))
    for p in trainable:
        hist = P.history_lines(context, p, state[p].value, limit=cfg["max_history"], chars=200)
        if hist:
            lines.append(f"Best past values of {p} (validation score):")
            lines += hist
        rej = P.rejected_lines(context, p, limit=cfg["max_history"], chars=200)
        if rej:
            lines.append(f"Failed proposals this step for {p} (write something different):")
            lines += rej
    since = getattr(context, "steps_since_improvement", 0) or 0
    if since:
        lines.append(f"Steps since last improvement: {since}" + (" (make a bolder change)" if since >= 2 else ""))
    names = ", ".join(f'"{p}": "<new text>"' for p in trainable)
    lines.append("#Instruction")
    lines.append(
        "Change the #Variables so the #Feedback improves. Reply with JSON only: "
        f'{{"reasoning": "<one or two sentences>", "suggestion": {{{names}}}}}. '
        "Leave out a variable to keep it; an empty suggestion {} means no change."
    )
    return P.cap_prompt("\n".join(lines), cfg["max_prompt_chars"]), list(trainable), len(shown)


SYSTEM = (
    "You optimize the trainable text variables of a program that calls LLMs. Read the code, "
    "the values and the feedback, find which variable caused the errors, and rewrite it as a general "
    "rule. Never copy the answer of a specific example into a variable. Answer with JSON only."
)


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


def whole_trace(
    *, max_examples: int = 4, max_chars: int = 300, max_records: int = 12, max_history: int = 2,
    max_prompt_chars: int = 4000, max_value_chars: int = 1500, optimizer_max_tokens: int = 250,
    optimizer_temperature: float = 0.0, retry_temperature: float = 0.7, optimizer_model: str = "", json_schema: bool = True,
    skip_if_perfect: bool = True,
) -> Strategy:
    """OptoPrime-style strategy: ONE optimizer call per step over the whole minibatch's traces.

    ``max_examples`` (examples shown, lowest score first), ``max_chars`` (per value),
    ``max_records`` (code lines per example), ``max_history`` (past / failed values
    shown), ``max_prompt_chars`` (hard cap): the prompt bounds. ``max_value_chars``:
    longest value accepted. ``retry_temperature``: temperature once a proposal of
    this step was rejected (a greedy retry would repeat it). ``json_schema``: ask the server for schema-constrained
    JSON (the reply is parsed robustly either way). ``skip_if_perfect``: no call when
    every example scored 1.0.

    Calls per step: 1 optimizer call (0 when all examples are perfect and
    ``skip_if_perfect``); no backward calls.
    """
    cfg = dict(locals())

    def init(state):
        return P.freeze_state(P.new_stats())

    def update(results, state, s, *, engine, evaluate=None, context=None):
        stats = P.thaw_state(s) or P.new_stats()
        stats["steps"] = stats.get("steps", 0) + 1
        done = lambda upd: (upd, P.freeze_state(stats))  # noqa: E731
        if not results:
            return done(Update((), [Note("", "no_update", "empty minibatch")]))
        if cfg["skip_if_perfect"] and all(r.loss.score >= 1.0 for r in results):
            stats["events"] = P.bump(stats["events"], "all_perfect")
            return done(Update((), [Note("", "no_update", "every example scored 1.0: nothing to fix")]))
        body, names, _ = problem_text(results, state, cfg, context)
        if not names:
            return done(Update((), [Note("", "no_update", "no trainable parameter is read by these traces")]))
        request = Request(
            messages=(("system", SYSTEM), ("user", body)), model=cfg["optimizer_model"],
            temperature=P.attempt_temperature(context, cfg["optimizer_temperature"], cfg["retry_temperature"]),
            max_tokens=cfg["optimizer_max_tokens"],
            seed=getattr(context, "seed", 0), sample=len(getattr(context, "rejected", ()) or ()),
            json_schema=_schema(names, cfg["max_value_chars"]) if cfg["json_schema"] else None, role="optimizer",
        )
        stats["calls"] = P.bump(stats["calls"], "optimizer")
        response, error = P.call_engine(engine, request)
        if response is None:
            stats["rejections"] = P.bump(stats["rejections"], "engine_error")
            return done(Update((), [Note("", "no_update", f"engine_error: optimizer call failed ({error})")]))
        try:
            data = P.parse_json_reply(response.text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            guard = "truncated" if response.finish_reason == "length" else "invalid_json"
            stats["rejections"] = P.bump(stats["rejections"], guard)
            why = "cut by the token cap" if guard == "truncated" else "not a JSON object"
            return done(Update((), [Note("", "no_update", f"{guard}: optimizer reply was {why}: {P.one_line(response.text, 80)!r}")]))
        suggestion = data.get("suggestion")
        reasoning = P.one_line(data.get("reasoning", ""), 200)
        if suggestion is None:
            # Tolerate a bare {param: value} object.
            suggestion = {k: v for k, v in data.items() if k in names}
        if not isinstance(suggestion, dict):
            stats["rejections"] = P.bump(stats["rejections"], "invalid_json")
            return done(Update((), [Note("", "no_update", "invalid_json: 'suggestion' is not an object")]))
        values, notes = {}, []
        targets = P.failing_targets(results)
        inputs = P.example_inputs(results)
        critiques = [r.loss.feedback for r in results] + ([reasoning] if reasoning else [])
        for key, value in suggestion.items():
            if key not in names:
                stats["rejections"] = P.bump(stats["rejections"], "unknown_param")
                notes.append(Note("", "no_update", f"unknown_param: suggestion for {P.clip(key, 40)!r}, not a trainable variable here"))
                continue
            if not isinstance(value, str):
                stats["rejections"] = P.bump(stats["rejections"], "invalid_json")
                notes.append(Note(key, "no_update", "invalid_json: the suggested value is not a string"))
                continue
            value = P._unwrap(value)
            guard, reason = P.check_value(value, state[key].value, targets=targets, critiques=critiques, inputs=inputs,
                                          names=state.names, rejected=P.rejected_values(context, key),
                                          max_value_chars=cfg["max_value_chars"])
            if guard:
                stats["rejections"] = P.bump(stats["rejections"], guard)
                notes.append(Note(key, "no_update", f"{guard}: {reason}"))
                continue
            values[key] = value
            notes.append(Note(key, "proposed", reasoning or "suggested by the optimizer"))
        if not suggestion:
            stats["events"] = P.bump(stats["events"], "no_change")
            notes.append(Note("", "no_update", f"the optimizer suggested no change ({reasoning or 'no reasoning given'})"))
        return done(Update(values, notes))

    return Strategy("whole_trace", init, update, cfg)
