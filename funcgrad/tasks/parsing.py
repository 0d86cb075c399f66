"""Shared answer parsing and metric-to-feedback losses for the built-in tasks.

Parsers never raise on model output: garbage becomes ``None`` plus the raw text,
and the losses turn that into a score of 0 with feedback saying what was wrong.

>>> parse_integer("Let me count: 2 + 1 = 3. Answer: 3")
3
>>> parse_integer("There are five of them.")
5
>>> parse_integer("no idea") is None
True
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from typing import Any

import attrs
import orjson

from funcgrad.core.errors import ConfigError
from funcgrad.core.run import Example, Loss

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
}
WORD_OF = {v: k for k, v in NUMBER_WORDS.items()}

_INT = r"-?\d{1,3}(?:,\d{3})+(?!\d)|-?\d+"
_MARKED = re.compile(
    r"(?:answer|result|total)\s*(?:is|=|:)?\s*[:=]?\s*\**\s*\$?\s*(" + _INT + r")(?![\d.]*\d)", re.IGNORECASE
)
_TAGGED = re.compile(r"<answer>\s*\$?\s*(" + _INT + r")\s*</answer>", re.IGNORECASE)
_ANY_INT = re.compile(r"(?<![\w.])(" + _INT + r")(?:\.0+)?(?![\w]|\.\d)")
_WORD = re.compile(r"(?<![-\w])(" + "|".join(NUMBER_WORDS) + r")(?![-\w])", re.IGNORECASE)
SNIPPET = 160


def _to_int(text: str) -> int:
    return int(text.replace(",", ""))


def parse_integer(text: Any) -> int | None:
    """The final integer answer in ``text``, or None when there is none.

    Preference order: ``<answer>N</answer>``; the last "answer/result/total (is|:|=) N";
    the last integer anywhere; the last number word (zero to twenty).

    >>> parse_integer("<answer>12</answer>"), parse_integer("1,200 apples"), parse_integer("x=4.")
    (12, 1200, 4)
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    for pattern in (_TAGGED, _MARKED, _ANY_INT):
        found = pattern.findall(text)
        if found:
            return _to_int(found[-1])
    words = _WORD.findall(text)
    if words:
        return NUMBER_WORDS[words[-1].lower()]
    return None


def snippet(text: Any, limit: int = SNIPPET) -> str:
    """``text`` on one line, cut to ``limit`` characters (with an ellipsis).

    >>> snippet("a\\n b" + "c" * 300, 10)
    'a bcccccc…'
    """
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def integer_answer(text: Any) -> dict:
    """The output of a parse node: ``{"answer": int | None, "raw": text}`` (raw cut to 400 chars)."""
    raw = "" if text is None else str(text)
    return {"answer": parse_integer(raw), "raw": raw[:400]}


def integer_loss(output: Any, example: Example) -> Loss:
    """Exact integer match of a parse node's output against ``example.target``, with feedback.

    >>> integer_loss({"answer": 9, "raw": "I see 9"}, Example("e", "q", 7)).feedback
    "wrong: expected 7, the pipeline answered 9 (2 too many); its raw answer was: 'I see 9'"
    >>> integer_loss({"answer": None, "raw": "hmm"}, Example("e", "q", 7)).feedback
    "wrong: expected 7, but no integer found in the answer: 'hmm'"
    """
    want = example.target
    if isinstance(output, dict) or hasattr(output, "get"):
        got, raw = output.get("answer"), output.get("raw", "")
    else:
        raw = "" if output is None else str(output)
        got = output if isinstance(output, int) and not isinstance(output, bool) else parse_integer(raw)
    if got is None:
        shown = snippet(raw) if str(raw).strip() else "(empty)"
        return Loss(0.0, f"wrong: expected {want}, but no integer found in the answer: {shown!r}")
    if got == want:
        return Loss(1.0, f"correct: expected {want} and the pipeline answered {got}")
    diff = got - want
    how = f"{diff} too many" if diff > 0 else f"{-diff} too few"
    return Loss(0.0, f"wrong: expected {want}, the pipeline answered {got} ({how}); its raw answer was: {snippet(raw)!r}")


_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ANSWER_LINE = re.compile(r"answer\s*(?:is)?\s*[:=]\s*(.+)", re.IGNORECASE)


def extract_answer_text(text: Any) -> str:
    """The answer part of a free-text reply: after the last "Answer:", else the first non-empty line.

    >>> extract_answer_text("Reasoning...\\nAnswer: Port Ellin.")
    'Port Ellin.'
    """
    raw = "" if text is None else str(text)
    tagged = re.findall(r"<answer>(.*?)</answer>", raw, re.IGNORECASE | re.DOTALL)
    if tagged:
        return tagged[-1].strip()
    marked = _ANSWER_LINE.findall(raw)
    if marked:
        return marked[-1].strip()
    for line in raw.splitlines():
        if line.strip():
            return line.strip()
    return ""


def normalize(text: Any) -> str:
    """Lower-case, drop punctuation and articles, collapse spaces (SQuAD-style).

    >>> normalize("  The Port-Ellin! ")
    'port ellin'
    """
    s = str(text or "").lower()
    s = "".join(" " if ch in _PUNCT else ch for ch in s)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def text_match_loss(output: Any, example: Example) -> Loss:
    """Normalized exact match of the extracted answer against ``example.target``, with feedback.

    >>> text_match_loss("Answer: the Norvale.", Example("e", "q", "Norvale")).score
    1.0
    """
    raw = "" if output is None else str(output)
    got = extract_answer_text(raw)
    want = str(example.target)
    if not got:
        return Loss(0.0, f"wrong: expected {want!r}, but the answer was empty (raw output: {snippet(raw)!r})")
    if normalize(got) == normalize(want):
        return Loss(1.0, f"correct: expected {want!r} and the pipeline answered {snippet(got)!r}")
    extra = ""
    if normalize(want) and normalize(want) in normalize(got):
        extra = " (the right name appears, but the answer must be only the name, with no extra words)"
    return Loss(0.0, f"wrong: expected {want!r}, the pipeline answered {snippet(got)!r}{extra}")


def make_splits(
    task: str,
    seed: int,
    generate: Callable[[random.Random], tuple[Any, Any]],
    n_train: int,
    n_val: int,
    n_test: int,
) -> tuple[tuple[Example, ...], tuple[Example, ...], tuple[Example, ...]]:
    """Seeded, disjoint train/val/test splits from ``generate(rng) -> (x, target)``.

    Examples are unique by ``x`` across all splits; ids look like ``task-s0-train-003``.
    The same ``(task, seed)`` always gives the same examples.

    >>> tr, va, te = make_splits("t", 0, lambda r: (str(r.randrange(1000)), 0), 2, 1, 1)
    >>> len({e.x for e in tr + va + te}), tr[0].id
    (4, 't-s0-train-000')
    """
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{task}: {name} must be a non-negative int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{task}: seed must be an int, got {seed!r}")
    rng = random.Random(f"funcgrad.tasks.{task}:{seed}")
    total = n_train + n_val + n_test
    seen: set = set()
    items: list[tuple[Any, Any]] = []
    attempts = 0
    while len(items) < total:
        attempts += 1
        if attempts > 50 * total + 1000:
            raise ConfigError(f"{task}: could only generate {len(items)} distinct examples of the {total} asked for")
        x, target = generate(rng)
        key = orjson.dumps(x, option=orjson.OPT_SORT_KEYS)
        if key in seen:
            continue
        seen.add(key)
        items.append((x, target))
    out = []
    start = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        out.append(tuple(Example(f"{task}-s{seed}-{split}-{i:03d}", x, t) for i, (x, t) in enumerate(items[start:start + n])))
        start += n
    return out[0], out[1], out[2]


def label_set(labels: Any, *, where: str = "labels") -> tuple[str, ...]:
    """``labels`` as a tuple of at least two distinct, non-empty words; ConfigError naming the problem.

    Labels are compared case-insensitively, so ``("HUMAN", "human")`` is a duplicate.

    >>> label_set(["HUMAN", "LOCATION"])
    ('HUMAN', 'LOCATION')
    """
    if isinstance(labels, str) or not isinstance(labels, tuple | list):
        raise ConfigError(f"{where} = {labels!r}: must be a list of label names, e.g. ['HUMAN', 'LOCATION']")
    seen: dict[str, str] = {}
    for label in labels:
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z][A-Za-z_-]*", label):
            raise ConfigError(f"{where}: label {label!r} must be one word of letters (with - or _ allowed)")
        if label.upper() in seen:
            raise ConfigError(f"{where} has a duplicate label {label!r} (same as {seen[label.upper()]!r}); list each label once")
        seen[label.upper()] = label
    if len(seen) < 2:
        raise ConfigError(f"{where} = {list(labels)!r}: a classification needs at least two labels")
    return tuple(labels)


_WORDS = re.compile(r"[A-Za-z][A-Za-z_-]*")
_LABEL_MARK = re.compile(r"(?:label|answer|category|class|type)\s*(?:is)?\s*[:=]\s*([^\n.,;]+)", re.IGNORECASE)


def _region_labels(text: str, labels: tuple[str, ...]) -> tuple[str, ...]:
    """Distinct labels named in ``text`` (whole words, any case, or a prefix of 3+ letters of one label), in order."""
    found = []
    for word in _WORDS.findall(text.upper()):
        word = word.strip("-_")
        hits = [lab for lab in labels if lab.upper() == word or lab.upper().rstrip("S") == word.rstrip("S")]
        if not hits and len(word) >= 3:
            hits = [lab for lab in labels if lab.upper().startswith(word)]
        if len(hits) == 1 and hits[0] not in found:
            found.append(hits[0])
    return tuple(found)


def labels_named(text: Any, labels: tuple[str, ...]) -> tuple[str, ...]:
    """The labels a reply names where it answers: inside ``<answer>`` tags, else after the last
    "label/answer/category/class/type:" (up to the end of that clause), else on its first
    non-empty line, else anywhere.

    >>> labels_named("Category: LOC. It asks for a place, not a person.", ("HUMAN", "LOCATION"))
    ('LOCATION',)
    >>> labels_named("HUMAN or LOCATION", ("HUMAN", "LOCATION"))
    ('HUMAN', 'LOCATION')
    """
    raw = "" if text is None else str(text)
    regions = re.findall(r"<answer>(.*?)</answer>", raw, re.IGNORECASE | re.DOTALL)[-1:]
    regions += _LABEL_MARK.findall(raw)[-1:]
    regions += [line for line in raw.splitlines() if line.strip()][:1]
    regions.append(raw)
    for region in regions:
        found = _region_labels(region, labels)
        if found:
            return found
    return ()


def parse_label(text: Any, labels: tuple[str, ...]) -> str | None:
    """The one label of ``labels`` the reply answers with; None if it names none or several.

    >>> parse_label("The answer type is: numeric", ("HUMAN", "NUMERIC"))
    'NUMERIC'
    >>> parse_label("no idea", ("HUMAN", "NUMERIC")) is None
    True
    """
    found = labels_named(text, labels)
    return found[0] if len(found) == 1 else None


@attrs.frozen
class LabelLoss:
    """Exact label match of a parse node's ``{"label", "raw"}`` output, with feedback naming the confusion.

    >>> loss = LabelLoss(("HUMAN", "LOCATION"))
    >>> loss({"label": "LOCATION", "raw": "LOCATION"}, Example("e", "Who wrote Hamlet?", "HUMAN")).feedback
    "wrong: answered LOCATION, expected HUMAN; its raw answer was: 'LOCATION'"
    """

    labels: tuple[str, ...] = attrs.field(converter=label_set)

    def __call__(self, output: Any, example: Example) -> Loss:
        want = example.target
        if hasattr(output, "get"):
            got, raw = output.get("label"), output.get("raw", "")
        else:
            raw = "" if output is None else str(output)
            got = parse_label(raw, self.labels)
        if got == want:
            return Loss(1.0, f"correct: expected {want} and the pipeline answered {got}")
        if got is not None:
            return Loss(0.0, f"wrong: answered {got}, expected {want}; its raw answer was: {snippet(raw)!r}")
        named = labels_named(raw, self.labels)
        shown = snippet(raw) if str(raw).strip() else "(empty)"
        if len(named) > 1:
            return Loss(0.0, f"wrong: expected {want}, but the answer names several labels ({', '.join(named)}) "
                             f"where exactly one was asked for: {shown!r}")
        return Loss(0.0, f"wrong: expected {want}, but the answer names none of the labels {', '.join(self.labels)}: {shown!r}")
