"""What every built-in strategy shares: bounded prompts, fenced values and the guards.

A small critic model makes predictable mistakes (see docs/strategies.md). Each is
caught here, *before* the training loop spends validation calls on the proposal:

=================  ==========================================================
guard              rejects a proposed value when ...
=================  ==========================================================
``no_tags``        the reply has no ``<NEW_VALUE>`` opening tag
``truncated``      the reply was cut by the token cap before the closing tag
``invalid_json``   a JSON reply (whole_trace) does not parse
``bad_edit``       an edit (``backprop(edits=True)``) cannot be applied: an
                   unknown op, an old sentence the text does not have, or no
                   new sentence for add or replace
``empty``          the value is empty after stripping
``unchanged``      the value equals the current one
``repeats_rejected`` the value repeats a proposal rejected earlier in the step
``too_long``       the value exceeds ``max_value_chars``
``too_short``      the value is a stub (under 12 chars while the current
                   value is longer), e.g. a lone number
``tag_leak``       one of our own tags / section headers, or a parameter's
                   name, appears in the value
``label_leak``     a failing example's expected answer appears in the value
                   (and did not appear in the current value)
``input_copy``     a training example's input is copied into the value
``critique_paste`` the value is a critique (a feedback text pasted, or it
                   reads like a diagnosis of the prompt instead of a prompt)
``role_copy``      the value copies a sentence of the param's ``role`` (meta-
                   information for the optimizer, never meant for the model)
``specifics_copy`` the value carries example-specific content: a name or a
                   number from a training input or a model reply, or a run of
                   six words copied from one, absent from the old value and role
``unknown_param``  a suggestion names a param that is not trainable here
=================  ==========================================================

Every guard can be switched off by name (the ``skip_guards`` knob of each built-in
strategy: an ablation); by default all are on. A failed optimizer call is not a
guard: it is a failure and stops the run (docs/engines.md).

The tag-leak phrases are derived from the prompt texts themselves
(:func:`funcgrad.strategies.prompts.guarded_phrases`), so they cannot drift.
Prompts are bounded by :func:`fit_prompt`: when a prompt would exceed its cap, the
evidence shrinks and the task description, current value and reply instructions
always survive. All helpers are pure functions; counters live in the strategy state ``S``.

>>> fence("Count the items.")
'<NEW_VALUE>\\nCount the items.\\n</NEW_VALUE>'
>>> extract_fenced("Sure!\\n<NEW_VALUE>\\nCount the items.\\n</NEW_VALUE>")
('Count the items.', '')
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from funcgrad import as_text
from funcgrad.core.values import freeze, thaw
from funcgrad.strategies.prompts import guarded_phrases
from funcgrad.strategies.prompts import shared as T

VALUE_TAG, CURRENT_TAG = T.VALUE_TAG, T.CURRENT_TAG
OPEN, CLOSE = f"<{VALUE_TAG}>", f"</{VALUE_TAG}>"

GUARDS = (
    "no_tags", "truncated", "invalid_json", "bad_edit", "empty", "unchanged", "repeats_rejected", "too_long", "too_short",
    "tag_leak", "label_leak", "input_copy", "critique_paste", "role_copy", "specifics_copy", "unknown_param",
)

# Tags, headers and sentences that only our own prompts contain. If one shows up in a
# proposed value (and was not in the current value), our meta-prompt leaked into it.
META_PHRASES = guarded_phrases()
_TAG_LIKE = re.compile(r"</?[A-Z][A-Z0-9_]{2,}>")

# A value that opens like a diagnosis is a critique pasted in place of a prompt.
_CRITIQUE_OPENER = re.compile(
    r"^\s*(feedback\s*:|critique\s*:|diagnosis\s*:|"
    r"the\s+(current\s+)?(prompt|instruction|parameter|value|system prompt|output|model)\s+"
    r"(should|is|was|does|did|lacks|fails|failed|needs|could|must)\b|"
    r"(this|the)\s+(prompt|parameter|instruction)\s+(should|needs|could)\b)",
    re.IGNORECASE,
)

# Advice that names no concrete mistake (observed from small critics).
_GENERIC = re.compile(
    r"\b(clarify the (objective|task|instructions?)|be more (specific|clear|precise)|"
    r"provide (an|more|some) examples?|add (an|more|some) examples?|make (it|the prompt) (clearer|more clear)|"
    r"improve (the )?clarity|more detailed instructions?)\b",
    re.IGNORECASE,
)


# ---------------------------------------------------------------- bounded text


def clip(text: Any, limit: int) -> str:
    """``text`` as prompt text, cut to ``limit`` characters with a visible marker.

    >>> clip("abcdef", 3)
    'abc…[+3 chars cut]'
    """
    text = text if isinstance(text, str) else as_text(text)
    if limit <= 0 or len(text) <= limit:
        return text
    return text[:limit] + T.CLIP_MARKER.format(n=len(text) - limit)


def _shrink(lines: list[str], excess: int) -> list[str]:
    """``lines`` with the longest ones clipped until ``excess`` characters are gone (each cut marked)."""
    lines = list(lines)
    while excess > 0 and lines:
        i = max(range(len(lines)), key=lambda j: len(lines[j]))
        keep = max(0, len(lines[i]) - excess - len(T.BLOCK_CUT))
        if keep == 0 and len(lines[i]) <= len(T.BLOCK_CUT):
            break
        excess -= len(lines[i]) - keep - len(T.BLOCK_CUT)
        lines[i] = lines[i][:keep] + T.BLOCK_CUT
    return lines


def fit_prompt(head: Sequence[str], blocks: Sequence[Sequence[str]], tail: Sequence[str], cap: int) -> str:
    """``head``, as many evidence ``blocks`` as fit, then ``tail``, within ``cap`` characters.

    The last tail line (the reply instruction) always survives whole. Evidence blocks
    are dropped from the end (with a line saying how many), and the last block that
    fits only in part is cut with a visible marker. Only when head and tail alone
    exceed the cap are their longest lines cut (marked), so the prompt still ends
    with the reply instructions.

    >>> text = fit_prompt(["Task."], [["ex 1 " * 10], ["ex 2 " * 10]], ["Reply with X."], 80)
    >>> len(text) <= 80, text.endswith("Reply with X."), "ex 2" in text
    (True, True, False)
    """
    head, tail = list(head), list(tail)
    overflow = len("\n".join(head + tail)) + 1 - cap
    if overflow > 0:  # every line but the reply instruction (the last) may be cut
        shrunk = _shrink(head + tail[:-1], overflow)
        head, tail = shrunk[: len(head)], shrunk[len(head):] + tail[-1:]
    head_text, tail_text = "\n".join(head), "\n".join(tail)
    full = "\n".join([*head, *(line for b in blocks for line in b), *tail])
    if len(full) <= cap:
        return full
    fixed = len(head_text) + len(tail_text) + 2
    kept: list[str] = []
    for i, block in enumerate(blocks):
        note = T.EVIDENCE_CUT.format(n=len(blocks) - i, cap=cap)
        text = "\n".join(block)
        room = cap - fixed - sum(len(k) + 1 for k in kept) - len(note) - 1
        if len(text) + 1 <= room:
            kept.append(text)
            continue
        if room > len(T.BLOCK_CUT) + 40:  # a useful part of this block still fits
            kept.append(text[: room - len(T.BLOCK_CUT) - 1] + T.BLOCK_CUT)
            note = T.EVIDENCE_CUT.format(n=len(blocks) - i - 1, cap=cap) if i + 1 < len(blocks) else ""
        if note and room >= 0:
            kept.append(note)
        break
    return "\n".join(x for x in (head_text, *kept, tail_text) if x)


def one_line(text: Any, limit: int) -> str:
    """Whitespace collapsed to single spaces, then clipped."""
    return clip(" ".join(str(text if isinstance(text, str) else as_text(text)).split()), limit)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# ---------------------------------------------------------------- fenced values


def fence(value: str, tag: str = VALUE_TAG) -> str:
    """``value`` between ``<tag>`` and ``</tag>`` lines."""
    return f"<{tag}>\n{value}\n</{tag}>"


# "The new instruction should be: "..."" -- a small model announcing the value instead of writing it.
_ANNOUNCED = re.compile(r"[^\"\n]{0,160}?\b(?:should be|should read|would be|is)\s*:?\s*[\"\u201c](.+)[\"\u201d]\.?", re.DOTALL | re.IGNORECASE)


# "count_instruction: "..."" -- the value prefixed with its parameter's name.
_NAMED = re.compile(r"`?[A-Za-z]\w*[_.][\w.]*`?\s*[:=]\s*(.+)", re.DOTALL)
# "format: 'List the items ...'" -- a one-word name, accepted only before a fully quoted value.
_NAMED_QUOTED = re.compile(r"`?[A-Za-z]\w*`?\s*[:=]\s*([\"'\u201c].+[\"'\u201d])", re.DOTALL)


def _unwrap(value: str) -> str:
    """The value without code fences, surrounding quotes or an announcement ("... should be: "X"").

    >>> _unwrap('The improved instruction should be: "Count only the asked category."')
    'Count only the asked category.'
    >>> _unwrap('count_instruction: "Count only the asked category."')
    'Count only the asked category.'
    >>> _unwrap("format: 'End with Answer: N.'")
    'End with Answer: N.'
    >>> _unwrap("Note: count only the asked category.")
    'Note: count only the asked category.'
    """
    value = value.strip()
    m = re.fullmatch(r"```[a-zA-Z]*\n(.*?)\n?```", value, re.DOTALL)
    if m:
        value = m.group(1).strip()
    m = _NAMED.fullmatch(value) or _NAMED_QUOTED.fullmatch(value)
    if m:
        value = m.group(1).strip()
    m = _ANNOUNCED.fullmatch(value)
    if m and '"' not in m.group(1):
        value = m.group(1).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        value = value[1:-1].strip()
    return value


def extract_fenced(reply: str, *, finish_reason: str = "stop", tag: str = VALUE_TAG) -> tuple[str | None, str]:
    """``(value, "")`` from a reply holding ``<tag>value</tag>``, else ``(None, guard)``.

    The value is the text after the first opening tag, up to the next closing tag.
    A missing closing tag is accepted only when the model stopped on its own (not on
    the token cap: that is ``truncated``).

    >>> extract_fenced("no tags here")
    (None, 'no_tags')
    >>> extract_fenced("<NEW_VALUE>half a prom", finish_reason="length")
    (None, 'truncated')
    """
    opener, closer = f"<{tag}>", f"</{tag}>"
    start = reply.find(opener)
    if start < 0:
        return None, "no_tags"
    body = reply[start + len(opener):]
    end = body.find(closer)
    if end < 0:
        if finish_reason == "length":
            return None, "truncated"
        body = body.split(opener)[0]
    else:
        body = body[:end]
    return _unwrap(body), ""


def json_object(reply: str, finish_reason: str, valid: Callable[[dict], bool] | None = None) -> tuple[dict | None, str]:
    """``(object, "")`` from a reply holding a JSON object (that ``valid`` accepts), else ``(None, guard)``.

    The guard is ``truncated`` when the reply stopped on the token cap, ``invalid_json`` otherwise.

    >>> json_object('{"a": 1}', "stop"), json_object('{"a": 1', "length"), json_object("[1]", "stop")
    (({'a': 1}, ''), (None, 'truncated'), (None, 'invalid_json'))
    """
    try:
        data = parse_json_reply(reply)
    except ValueError:
        data = None
    if isinstance(data, dict) and (valid is None or valid(data)):
        return data, ""
    return None, "truncated" if finish_reason == "length" else "invalid_json"


def closed_object(props: Mapping[str, Any]) -> dict:
    """The JSON schema of an object that must have every key of ``props`` and no other.

    >>> closed_object({"text": {"type": "string"}})["required"]
    ['text']
    """
    return {"type": "object", "properties": dict(props), "required": list(props), "additionalProperties": False}


def parse_json_reply(reply: str) -> Any:
    """The JSON value in a model reply (code fences and chatter around it are ignored).

    Raises ValueError when there is none.

    >>> parse_json_reply('Here: ```json\\n{"a": 1}\\n``` done')
    {'a': 1}
    """
    text = reply.strip()
    m = re.search(r"```(?:json)?\s*\n?(.*?)```", text, re.DOTALL)
    candidates = [m.group(1)] if m else []
    candidates.append(text)
    for open_c, close_c in (("{", "}"), ("[", "]")):
        i, j = text.find(open_c), text.rfind(close_c)
        if 0 <= i < j:
            candidates.append(text[i:j + 1])
    for c in candidates:
        try:
            return json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
    raise ValueError("no JSON value found in the reply")


# ---------------------------------------------------------------- guards


def failing_targets(results: Sequence[Any], threshold: float = 1.0) -> tuple[str, ...]:
    """Expected answers (as text) of the examples scoring below ``threshold``."""
    out = []
    for r in results:
        if r.loss.score < threshold and r.example.target is not None:
            t = as_text(r.example.target).strip()
            if t:
                out.append(t)
    return tuple(dict.fromkeys(out))


def example_inputs(results: Sequence[Any], min_chars: int = 20) -> tuple[str, ...]:
    """The inputs (as text) of the examples, when long enough to be recognisable."""
    out = []
    for r in results:
        t = as_text(r.example.x).strip()
        if len(t) >= min_chars:
            out.append(t)
    return tuple(dict.fromkeys(out))


def _contains_word(haystack: str, needle: str) -> bool:
    pattern = r"(?<![\w])" + re.escape(_norm(needle)) + r"(?![\w])"
    return re.search(pattern, _norm(haystack)) is not None


_WORD = re.compile(r"[A-Za-z\u00C0-\u024F][\w'\u00C0-\u024F-]*")
_NUMBER = re.compile(r"(?<![\w.])\d{2,}(?:\.\d+)?(?![\w])")  # 2+ digits: "step 1" is not specific
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*|[\"'(]\s*)$")
SHINGLE = 6  # words in a run that counts as copied from an input or reply
ROLE_RUN = 10  # words in a run that counts as copied from the role (a whole sentence always does)


def _shingles(text: str, n: int) -> set[tuple[str, ...]]:
    words = _norm(text).split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _names(text: str) -> set[str]:
    """Capitalized words of ``text`` that do not start a sentence: names ("Ulvira", "Mirelund")."""
    out = set()
    for m in _WORD.finditer(text):
        w = m.group(0)
        if len(w) >= 3 and w[0].isupper() and not w.isupper() and not _SENTENCE_START.search(text[: m.start()]):
            out.add(w)
    return out


def _specifics(new: str, known: str, sources: Iterable[str]) -> str:
    """The first example-specific item of ``new`` found in ``sources`` but not in ``known``, or "".

    Items: a name of a source (a capitalized word that does not start a sentence there),
    a number of 2+ digits, or a run of SHINGLE words.
    """
    def has(text, word):
        return re.search(r"(?<![\w])" + re.escape(word) + r"(?![\w])", text) is not None

    new_numbers = {n for n in _NUMBER.findall(new) if not has(known, n)}
    new_shingles = _shingles(new, SHINGLE) - _shingles(known, SHINGLE)
    for src in sources:
        for name in sorted(_names(src)):
            if has(new, name) and not has(known, name):
                return f"the name {name!r}"
        for num in sorted(new_numbers):
            if has(src, num):
                return f"the number {num}"
        common = new_shingles & _shingles(src, SHINGLE)
        if common:
            return f"the phrase {' '.join(sorted(common)[0])!r}"
    return ""


def _role_copy(new: str, old: str, role: str) -> str:
    """A sentence or a quoted phrase of the role (4+ words), or a run of ROLE_RUN of its words, copied into ``new``, or "".

    A quoted phrase is what a role uses to describe the node's input (e.g. its question
    template "How many <category> do I have?"): copied into the value, it is an echo.
    """
    n_new, n_old = _norm(new), _norm(old)
    quoted = re.findall(r"'([^']+)'|\"([^\"]+)\"", role)
    for sentence in [*re.split(r"(?<=[.!?;:])\s+", role), *(a or b for a, b in quoted)]:
        s = _norm(sentence).strip(" .!?;:")
        if len(s.split()) >= 4 and s in n_new and s not in n_old:
            return s
    common = _shingles(new, ROLE_RUN) & _shingles(role, ROLE_RUN) - _shingles(old, ROLE_RUN)
    return " ".join(sorted(common)[0]) if common else ""


def check_value(
    new: str,
    old: str,
    *,
    targets: Iterable[str] = (),
    critiques: Iterable[str] = (),
    inputs: Iterable[str] = (),
    replies: Iterable[str] = (),
    names: Iterable[str] = (),
    role: str = "",
    rejected: Iterable[str] = (),
    max_value_chars: int = 2000,
    skip: Iterable[str] = (),
) -> tuple[str, str]:
    """``("", "")`` if ``new`` may be proposed in place of ``old``, else ``(guard, reason)``.

    ``targets``: expected answers of failing examples; ``critiques``: feedback texts;
    ``inputs``/``replies``: training inputs and the model's replies; ``names``: param
    names; ``role``: the param's role text; ``rejected``: values rejected earlier in
    the step; ``skip``: guards switched off.

    >>> check_value("Count items. The answer is 12.", "Count items.", targets=["12"])[0]
    'label_leak'
    >>> check_value("Count items. <NEW_VALUE>", "Count items.")[0]
    'tag_leak'
    >>> check_value("List the items, then count them.", "Count items.", targets=["12"])
    ('', '')
    >>> check_value("Name the city. Ulvira was born in Mirelund.", "Name the city.",
    ...             inputs=["In which country was Ulvira born in Mirelund?"])
    ('specifics_copy', "the proposed value carries the name 'Mirelund' from a training input or reply")
    """
    skip = set(skip)
    for guard, reason in _checks(new, old, list(targets), list(critiques), list(inputs), list(replies), list(names),
                                 role, list(rejected), max_value_chars, skip):
        if guard not in skip:
            return guard, reason
    return "", ""


def check_proposal(
    new: str, old: str, results: Sequence[Any], *, tau: float = 1.0, critiques: Iterable[str] = (),
    names: Iterable[str] = (), role: str = "", rejected: Iterable[str] = (), max_value_chars: int = 2000,
    skip: Iterable[str] = (),
) -> tuple[str, str]:
    """:func:`check_value` against the evidence of a minibatch's ``results``.

    The expected answers of the examples scoring below ``tau``, the training inputs,
    the model's replies and the loss feedback (besides the ``critiques`` given) are
    what a proposal must not copy.

    >>> check_proposal("List the items, then count them.", "Count items.", ())
    ('', '')
    """
    return check_value(
        new, old, targets=failing_targets(results, tau),
        critiques=[*critiques, *(r.loss.feedback for r in results)],
        inputs=example_inputs(results, min_chars=1), replies=model_replies(results),
        names=names, role=role, rejected=rejected, max_value_chars=max_value_chars, skip=skip,
    )


def _checks(new, old, targets, critiques, inputs, replies, names, role, rejected, max_value_chars, skip):
    """Yield ``(guard, reason)`` for every guard ``new`` fails, cheapest first (lazily)."""
    if not new.strip():
        yield "empty", "the proposed value is empty"
    if new.strip() == old.strip():
        yield "unchanged", "the proposed value equals the current value"
    if any(new.strip() == r.strip() for r in rejected):
        yield "repeats_rejected", "the proposed value repeats a proposal already rejected in this step"
    if len(new) > max_value_chars:
        yield "too_long", f"the proposed value has {len(new)} chars (limit {max_value_chars})"
    if len(new.strip()) < 12 and len(old.strip()) >= 12:
        yield "too_short", f"the proposed value {new.strip()!r} is a stub, not a prompt"
    low_new, low_old = new.lower(), old.lower()
    for phrase in META_PHRASES:
        if phrase.lower() in low_new and phrase.lower() not in low_old:
            yield "tag_leak", f"the proposed value contains our prompt's own text {phrase!r}"
            break
    for name in names:
        if len(name) >= 3 and _contains_word(new, name) and not _contains_word(old, name) and ("_" in name or "." in name or "`" + name in new):
            yield "tag_leak", f"the proposed value talks about the parameter {name!r} instead of being its text"
            break
    old_tags = set(_TAG_LIKE.findall(old))
    for tag in _TAG_LIKE.findall(new):
        if tag not in old_tags:
            yield "tag_leak", f"the proposed value contains the tag {tag!r}"
            break
    for t in targets:
        if _contains_word(new, t) and not _contains_word(old, t):
            yield "label_leak", f"the proposed value contains {clip(t, 40)!r}, the expected answer of a failing example"
            break
    n_new, n_old = _norm(new), _norm(old)
    for x in inputs:
        probe = _norm(x)[:60]
        if len(probe) >= 20 and probe in n_new and probe not in n_old:
            yield "input_copy", f"the proposed value copies a training input ({clip(x, 40)!r})"
            break
    if _CRITIQUE_OPENER.match(new) and not _CRITIQUE_OPENER.match(old):
        yield "critique_paste", "the proposed value reads like a critique of the prompt, not a prompt"
    for c in critiques:
        n_c = _norm(c)
        if len(n_c) >= 40 and (n_c in n_new or (len(n_new) >= 40 and n_new in n_c)) and n_c not in n_old:
            yield "critique_paste", "the proposed value copies a feedback text"
            break
    if role and "role_copy" not in skip:
        copied = _role_copy(new, old, role)
        if copied:
            yield "role_copy", f"the proposed value copies the param's role ({clip(copied, 60)!r}), which is meant for the optimizer"
    if "specifics_copy" not in skip:
        what = _specifics(new, old + "\n" + role, [*inputs, *replies])
        if what:
            yield "specifics_copy", f"the proposed value carries {what} from a training input or reply"


def is_generic(critique: str) -> bool:
    """True for short advice that names no concrete mistake ("be more specific").

    >>> is_generic("Clarify the objective."), is_generic("It counted the lamp twice; say to count each item once.")
    (True, False)
    """
    return bool(_GENERIC.search(critique)) and len(critique.split()) < 20 and not re.search(r"\d|'|\"", critique)


# ---------------------------------------------------------------- counters in S


def bump(counts: Mapping[str, int], key: str, by: int = 1) -> dict:
    """A copy of ``counts`` with ``key`` increased by ``by``."""
    out = dict(counts)
    out[key] = out.get(key, 0) + by
    return out


def new_stats() -> dict:
    """The counters every strategy keeps in its state S."""
    return {"steps": 0, "calls": {"backward": 0, "optimizer": 0}, "rejections": {}, "events": {}}


def thaw_state(s: Any) -> dict:
    """A mutable copy of a strategy state (JSON value) for building the next one."""
    return thaw(s) if s is not None else {}


def freeze_state(s: Mapping) -> Any:
    return freeze(s, where="strategy state")


def rejected_values(context, name: str) -> tuple[str, ...]:
    """Values of ``name`` proposed and rejected earlier in this step."""
    return tuple(a.values[name] for a in getattr(context, "rejected", ()) or () if name in a.values)


def model_replies(results: Sequence[Any]) -> tuple[str, ...]:
    """The LLM outputs (as text) in the traces of ``results``: what the task model said."""
    out: dict[str, None] = {}
    for r in results:
        for rec in r.trace.records:
            if rec.kind == "llm" and rec.output is not None:
                out[as_text(rec.output)] = None
    return tuple(out)


# attrs validators shared by the knobs classes of the built-in strategies
POSITIVE_INT = [attrs.validators.instance_of(int), attrs.validators.ge(1)]
NON_NEGATIVE = [attrs.validators.instance_of((int, float)), attrs.validators.ge(0)]


def check_skip_guards(instance, attribute, value) -> None:
    """attrs validator of a ``skip_guards`` knob: every name must be a guard."""
    unknown = [g for g in value if g not in GUARDS]
    if unknown:
        raise ValueError(f"skip_guards names unknown guard(s) {unknown}; guards are: {', '.join(GUARDS)}")


def attempt_temperature(context, first: float, retry: float) -> float:
    """``first`` for a step's first proposal, ``retry`` once one was rejected (greedy would repeat it).

    >>> attempt_temperature(None, 0.0, 0.7)
    0.0
    """
    return retry if getattr(context, "rejected", ()) else first


# ---------------------------------------------------------------- shared prompt parts


def history_lines(context, name: str, current: str, *, limit: int, chars: int) -> list[str]:
    """Best past values of ``name`` (with validation scores), best first, excluding the current."""
    lines, seen = [], {current.strip()}
    for a in getattr(context, "history", ()) or ():
        v = a.values.get(name)
        if v is None or v.strip() in seen:
            continue
        seen.add(v.strip())
        score = "?" if a.score is None else f"{a.score:.2f}"
        lines.append(T.HISTORY_LINE.format(score=score, value=one_line(v, chars)))
        if len(lines) >= limit:
            break
    return lines


def rejected_lines(context, name: str, *, limit: int, chars: int) -> list[str]:
    """Proposals for ``name`` rejected earlier in this step, with the reason."""
    lines = []
    for a in getattr(context, "rejected", ()) or ():
        v = a.values.get(name)
        if v is None:
            continue
        why = a.reason or ("score %.2f" % a.score if a.score is not None else "rejected")
        lines.append(T.REJECTED_LINE.format(value=one_line(v, chars), why=one_line(why, 120)))
        if len(lines) >= limit:
            break
    return lines


def rejection_counts(strategy_state: Any) -> dict[str, int]:
    """Rejections per guard found anywhere in a strategy state (wrappers included).

    >>> rejection_counts({"rejections": {"tag_leak": 2}, "inner": {"rejections": {"tag_leak": 1}}})
    {'tag_leak': 3}
    """
    total: dict[str, int] = {}

    def walk(s):
        if isinstance(s, Mapping):
            for k, v in s.items():
                if k == "rejections" and isinstance(v, Mapping):
                    for g, n in v.items():
                        total[g] = total.get(g, 0) + int(n)
                else:
                    walk(v)

    walk(strategy_state)
    return total
