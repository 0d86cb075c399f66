"""The guards: the predictable mistakes of a small optimizer model, caught before validation is spent.

Each :class:`Guard` drops a proposed value for one reason (the table in
docs/strategies.md, "Guards"). :func:`check_value` runs them, cheapest first, on a
value and the :class:`Evidence` it must not copy; :func:`check_proposal` collects that
evidence from a minibatch's results. Every guard can be switched off by name (the
``skip_guards`` knob of each built-in strategy: an ablation). A failed optimizer call
is not a guard: it is a failure and stops the run (docs/engines.md).

The tag-leak phrases are derived from the prompt texts themselves
(:func:`funcgrad.strategies.prompts.guarded_phrases`), so they cannot drift.

>>> check_value("Count items. <NEW_VALUE>", "Count items.")[0]
<Guard.TAG_LEAK: 'tag_leak'>
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from funcgrad.core.nodes import as_text
from funcgrad.strategies.prompts import guarded_phrases
from funcgrad.strategies.text import clip, normalized


class Guard(enum.StrEnum):
    """Why a proposed value is dropped; the value is the name used in knobs, notes and counters.

    >>> Guard("label_leak") is Guard.LABEL_LEAK, f"{Guard.EMPTY}"
    (True, 'empty')
    """

    NO_TAGS = "no_tags"  #: the reply has no ``<NEW_VALUE>`` opening tag
    TRUNCATED = "truncated"  #: the reply was cut by the token cap before the closing tag
    INVALID_JSON = "invalid_json"  #: a JSON reply does not parse (or lacks its fields)
    BAD_EDIT = "bad_edit"  #: an edit cannot be applied (unknown op, unknown old sentence, no new sentence)
    EMPTY = "empty"  #: the value is empty after stripping
    UNCHANGED = "unchanged"  #: the value equals the current one
    REPEATS_REJECTED = "repeats_rejected"  #: the value repeats a proposal rejected earlier in the step
    TOO_LONG = "too_long"  #: the value exceeds ``max_value_chars``
    TOO_SHORT = "too_short"  #: a stub (under 12 chars while the current value is longer)
    TAG_LEAK = "tag_leak"  #: our own tags, section headers or a parameter's name in the value
    LABEL_LEAK = "label_leak"  #: a failing example's expected answer (or, for a declared label, that example) copied
    INPUT_COPY = "input_copy"  #: a training example's input copied into the value
    CRITIQUE_PASTE = "critique_paste"  #: a critique pasted, or the value reads like a diagnosis
    CHAT_REPLY = "chat_reply"  #: the value opens like a chat reply ("I will …", "Sure, …"), not an instruction
    ROLE_COPY = "role_copy"  #: a sentence of the param's ``role`` copied
    SPECIFICS_COPY = "specifics_copy"  #: a name, number or six-word run from a training input or reply
    UNKNOWN_PARAM = "unknown_param"  #: a suggestion names a param that is not trainable here


GUARDS = tuple(g.value for g in Guard)

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
# A value that opens in the first person or with an acknowledgement is the optimizer talking
# to a user ("I will count the items … Please provide the sentence"), not a prompt for the model.
_CHAT_OPENER = re.compile(
    r"^\s*[\"']?(i\s|i['’](ll|m|ve|d)\b|sure\b|certainly\b|of course\b|okay\b|ok[,.!]|"
    r"here\s+is\b|here['’]s\b|understood\b|got it\b|thanks?\b|thank you\b)",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z\u00C0-\u024F][\w'\u00C0-\u024F-]*")
_NUMBER = re.compile(r"(?<![\w.])\d{2,}(?:\.\d+)?(?![\w])")  # 2+ digits: "step 1" is not specific
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*|[\"'(]\s*)$")
SHINGLE = 6  # words in a run that counts as copied from an input or reply
ROLE_RUN = 10  # words in a run that counts as copied from the role (a whole sentence always does)
LABEL_RUN = 4  # words of a failing example's input that, next to its declared label, count as copying the example


@attrs.frozen
class Evidence:
    """What a proposed value is checked against.

    ``targets``: expected answers of failing examples; ``failing``: their ``(input,
    target)`` pairs; ``labels``: the task's declared label set (a label is a class
    name, not a leak); ``critiques``: feedback texts; ``inputs``/``replies``: training
    inputs and the model's replies; ``names``: param names; ``role``: the param's role
    text; ``rejected``: values rejected earlier in the step; ``skip``: guards switched off.
    """

    targets: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    failing: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)
    labels: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    critiques: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    inputs: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    replies: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    names: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    role: str = ""
    rejected: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    max_value_chars: int = 2000
    skip: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)


def check_value(new: str, old: str, *, skip: Iterable[str] = (), **evidence: Any) -> tuple[str, str]:
    """``("", "")`` if ``new`` may be proposed in place of ``old``, else ``(guard, reason)``.

    The keyword arguments are the fields of :class:`Evidence` (``targets``,
    ``failing``, ``labels``, ``critiques``, ``inputs``, ``replies``, ``names``,
    ``role``, ``rejected``, ``max_value_chars``); ``skip``: guards switched off.

    >>> check_value("Count items. The answer is 12.", "Count items.", targets=["12"])[0]
    <Guard.LABEL_LEAK: 'label_leak'>
    >>> check_value("List the items, then count them.", "Count items.", targets=["12"])
    ('', '')
    >>> check_value("A missing parcel is shipping.", "Sort the ticket.", targets=["shipping"], labels=["shipping", "billing"])
    ('', '')
    >>> check_value("Name the city. Ulvira was born in Mirelund.", "Name the city.",
    ...             inputs=["In which country was Ulvira born in Mirelund?"])
    (<Guard.SPECIFICS_COPY: 'specifics_copy'>, "the proposed value carries the name 'Mirelund' from a training input or reply")
    """
    return first_failure(new, old, Evidence(skip=skip, **evidence))


def first_failure(new: str, old: str, evidence: Evidence) -> tuple[str, str]:
    """``(guard, reason)`` of the first guard (cheapest first, skipped ones left out) ``new`` fails, else ``("", "")``."""
    for guard, check in CHECKS:
        if guard not in evidence.skip:
            reason = check(new, old, evidence)
            if reason:
                return guard, reason
    return "", ""


def evidence_of(results: Sequence[Any], *, tau: float = 1.0, critiques: Iterable[str] = (), **fields: Any) -> Evidence:
    """The :class:`Evidence` of a minibatch's ``results``: what a proposal must not copy.

    The expected answers (and inputs) of the examples scoring below ``tau``, the
    training inputs, the model's replies and the loss feedback (besides the
    ``critiques`` given); ``fields`` are the other fields of Evidence.

    >>> evidence_of(()).targets
    ()
    """
    return Evidence(
        targets=failing_targets(results, tau), failing=_failing_pairs(results, tau),
        critiques=[*critiques, *(r.loss.feedback for r in results)],
        inputs=example_inputs(results, min_chars=1), replies=model_replies(results), **fields,
    )


def check_proposal(new: str, old: str, results: Sequence[Any], *, tau: float = 1.0, critiques: Iterable[str] = (),
                   skip: Iterable[str] = (), **fields: Any) -> tuple[str, str]:
    """:func:`check_value` against the evidence of a minibatch's ``results`` (:func:`evidence_of`).

    >>> check_proposal("List the items, then count them.", "Count items.", ())
    ('', '')
    """
    return first_failure(new, old, evidence_of(results, tau=tau, critiques=critiques, skip=skip, **fields))


# ---------------------------------------------------------------- evidence of a minibatch


def failing_targets(results: Sequence[Any], threshold: float = 1.0) -> tuple[str, ...]:
    """Expected answers (as text) of the examples scoring below ``threshold``, each once."""
    return tuple(dict.fromkeys(t for _, t in _failing_pairs(results, threshold)))


def _failing_pairs(results: Sequence[Any], threshold: float) -> tuple[tuple[str, str], ...]:
    out = []
    for r in results:
        if r.loss.score < threshold and r.example.target is not None:
            t = as_text(r.example.target).strip()
            if t:
                out.append((as_text(r.example.x).strip(), t))
    return tuple(out)


def example_inputs(results: Sequence[Any], min_chars: int = 20) -> tuple[str, ...]:
    """The inputs (as text) of the examples, when long enough to be recognisable."""
    out = []
    for r in results:
        t = as_text(r.example.x).strip()
        if len(t) >= min_chars:
            out.append(t)
    return tuple(dict.fromkeys(out))


def model_replies(results: Sequence[Any]) -> tuple[str, ...]:
    """The LLM outputs (as text) in the traces of ``results``: what the task model said."""
    out: dict[str, None] = {}
    for r in results:
        for rec in r.trace.records:
            if rec.kind == "llm" and rec.output is not None:
                out[as_text(rec.output)] = None
    return tuple(out)


# ---------------------------------------------------------------- one check per guard


def _contains_word(haystack: str, needle: str) -> bool:
    pattern = r"(?<![\w])" + re.escape(normalized(needle)) + r"(?![\w])"
    return re.search(pattern, normalized(haystack)) is not None


def _shingles(text: str, n: int) -> set[tuple[str, ...]]:
    words = normalized(text).split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _empty(new: str, old: str, ev: Evidence) -> str:
    return "the proposed value is empty" if not new.strip() else ""


def _unchanged(new: str, old: str, ev: Evidence) -> str:
    return "the proposed value equals the current value" if new.strip() == old.strip() else ""


def _repeats_rejected(new: str, old: str, ev: Evidence) -> str:
    if any(new.strip() == r.strip() for r in ev.rejected):
        return "the proposed value repeats a proposal already rejected in this step"
    return ""


def _too_long(new: str, old: str, ev: Evidence) -> str:
    return f"the proposed value has {len(new)} chars (limit {ev.max_value_chars})" if len(new) > ev.max_value_chars else ""


def _too_short(new: str, old: str, ev: Evidence) -> str:
    if len(new.strip()) < 12 and len(old.strip()) >= 12:
        return f"the proposed value {new.strip()!r} is a stub, not a prompt"
    return ""


def _tag_leak(new: str, old: str, ev: Evidence) -> str:
    low_new, low_old = new.lower(), old.lower()
    for phrase in META_PHRASES:
        if phrase.lower() in low_new and phrase.lower() not in low_old:
            return f"the proposed value contains our prompt's own text {phrase!r}"
    for name in ev.names:
        if len(name) >= 3 and _contains_word(new, name) and not _contains_word(old, name) and ("_" in name or "." in name or "`" + name in new):
            return f"the proposed value talks about the parameter {name!r} instead of being its text"
    old_tags = set(_TAG_LIKE.findall(old))
    for tag in _TAG_LIKE.findall(new):
        if tag not in old_tags:
            return f"the proposed value contains the tag {tag!r}"
    return ""


def _label_leak(new: str, old: str, ev: Evidence) -> str:
    """A failing example's answer new in the value; for a declared label, only next to words of that example."""
    labels = {normalized(x) for x in ev.labels}
    for t in ev.targets:
        if not _contains_word(new, t) or _contains_word(old, t):
            continue
        if normalized(t) not in labels:
            return f"the proposed value contains {clip(t, 40)!r}, the expected answer of a failing example"
        copied = (set().union(*(_shingles(x, LABEL_RUN) for x, y in ev.failing if y == t))
                  & _shingles(new, LABEL_RUN)) - _shingles(old, LABEL_RUN)
        if copied:
            return (f"the proposed value pairs the label {clip(t, 40)!r} with {' '.join(sorted(copied)[0])!r} "
                    f"from the input of a failing example")
    return ""


def _input_copy(new: str, old: str, ev: Evidence) -> str:
    n_new, n_old = normalized(new), normalized(old)
    for x in ev.inputs:
        probe = normalized(x)[:60]
        if len(probe) >= 20 and probe in n_new and probe not in n_old:
            return f"the proposed value copies a training input ({clip(x, 40)!r})"
    return ""


def _critique_paste(new: str, old: str, ev: Evidence) -> str:
    if _CRITIQUE_OPENER.match(new) and not _CRITIQUE_OPENER.match(old):
        return "the proposed value reads like a critique of the prompt, not a prompt"
    n_new, n_old = normalized(new), normalized(old)
    for c in ev.critiques:
        n_c = normalized(c)
        if len(n_c) >= 40 and (n_c in n_new or (len(n_new) >= 40 and n_new in n_c)) and n_c not in n_old:
            return "the proposed value copies a feedback text"
    return ""


def _chat_reply(new: str, old: str, ev: Evidence) -> str:
    """``new`` opens like a reply in a chat (first person, "Sure", "Here is") and ``old`` did not.

    >>> print(_chat_reply("I will count the items once you provide the list.", "Count.", Evidence()))
    the proposed value opens like a chat reply ('I will count the…'), not an instruction to the model
    >>> _chat_reply("If the question names a category, count only its items.", "Count.", Evidence())
    ''
    """
    if _CHAT_OPENER.match(new) and not _CHAT_OPENER.match(old):
        return f"the proposed value opens like a chat reply ({' '.join(new.split()[:4]) + '…'!r}), not an instruction to the model"
    return ""


def _role_copy(new: str, old: str, ev: Evidence) -> str:
    """A sentence or a quoted phrase of the role (4+ words), or a run of ROLE_RUN of its words, copied into ``new``.

    A quoted phrase is what a role uses to describe the node's input (e.g. its question
    template "How many <category> do I have?"): copied into the value, it is an echo.
    """
    if not ev.role:
        return ""
    n_new, n_old = normalized(new), normalized(old)
    quoted = re.findall(r"'([^']+)'|\"([^\"]+)\"", ev.role)
    for sentence in [*re.split(r"(?<=[.!?;:])\s+", ev.role), *(a or b for a, b in quoted)]:
        s = normalized(sentence).strip(" .!?;:")
        if len(s.split()) >= 4 and s in n_new and s not in n_old:
            return _role_reason(s)
    common = _shingles(new, ROLE_RUN) & _shingles(ev.role, ROLE_RUN) - _shingles(old, ROLE_RUN)
    return _role_reason(" ".join(sorted(common)[0])) if common else ""


def _role_reason(copied: str) -> str:
    return f"the proposed value copies the param's role ({clip(copied, 60)!r}), which is meant for the optimizer"


def _names(text: str) -> set[str]:
    """Capitalized words of ``text`` that do not start a sentence: names ("Ulvira", "Mirelund")."""
    out = set()
    for m in _WORD.finditer(text):
        w = m.group(0)
        if len(w) >= 3 and w[0].isupper() and not w.isupper() and not _SENTENCE_START.search(text[: m.start()]):
            out.add(w)
    return out


def _has(text: str, word: str) -> bool:
    return re.search(r"(?<![\w])" + re.escape(word) + r"(?![\w])", text) is not None


def _specifics_copy(new: str, old: str, ev: Evidence) -> str:
    """The first example-specific item of ``new`` found in an input or reply but not in the old value or role.

    Items: a name of a source (a capitalized word that does not start a sentence there),
    a number of 2+ digits, or a run of SHINGLE words.
    """
    known = old + "\n" + ev.role
    new_numbers = {n for n in _NUMBER.findall(new) if not _has(known, n)}
    new_shingles = _shingles(new, SHINGLE) - _shingles(known, SHINGLE)
    what = ""
    for src in [*ev.inputs, *ev.replies]:
        names = [name for name in sorted(_names(src)) if _has(new, name) and not _has(known, name)]
        numbers = [num for num in sorted(new_numbers) if _has(src, num)]
        common = new_shingles & _shingles(src, SHINGLE)
        if names or numbers or common:
            what = (f"the name {names[0]!r}" if names else f"the number {numbers[0]}" if numbers
                    else f"the phrase {' '.join(sorted(common)[0])!r}")
            break
    return f"the proposed value carries {what} from a training input or reply" if what else ""


# Cheapest first; the first guard that fails names the rejection.
CHECKS: tuple[tuple[Guard, Callable[[str, str, Evidence], str]], ...] = (
    (Guard.EMPTY, _empty), (Guard.UNCHANGED, _unchanged), (Guard.REPEATS_REJECTED, _repeats_rejected),
    (Guard.TOO_LONG, _too_long), (Guard.TOO_SHORT, _too_short), (Guard.TAG_LEAK, _tag_leak),
    (Guard.LABEL_LEAK, _label_leak), (Guard.INPUT_COPY, _input_copy), (Guard.CRITIQUE_PASTE, _critique_paste),
    (Guard.CHAT_REPLY, _chat_reply), (Guard.ROLE_COPY, _role_copy), (Guard.SPECIFICS_COPY, _specifics_copy),
)

