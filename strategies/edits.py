"""Proposals as edits: add, replace or delete one sentence of a param (``backprop(edits=True)``).

A small optimizer model often diagnoses right and rewrites badly; an edit keeps the
rest of the text as it is. The reply is schema-constrained JSON
``{"pattern", "op", "old", "new"}``; :func:`apply_edit` turns it into the param's new
text, which then passes the same guards as a rewrite. Prompt texts live in
:mod:`funcgrad.strategies.prompts.edits`.
"""

from __future__ import annotations

import json
import re

from funcgrad.strategies.replies import closed_object

OPS = ("add", "replace", "delete")
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (split after . ! ? and at line breaks).

    >>> sentences("Count the items. Reply with a number.\\nBe brief")
    ['Count the items.', 'Reply with a number.', 'Be brief']
    """
    return [s.strip() for s in _SPLIT.split(text) if s.strip()]


def _norm(s: str) -> str:
    return " ".join(s.split()).strip().lower()


def apply_edit(value: str, op: str, old: str = "", new: str = "") -> tuple[str | None, str]:
    """``(new text, "")`` after the edit, or ``(None, why)`` when it cannot be applied.

    >>> apply_edit("Count the items. Reply with a number.", "replace", "Reply with a number.", "End with 'Answer: N'.")
    ("Count the items. End with 'Answer: N'.", '')
    >>> apply_edit("Count.", "delete", "Be brief.")
    (None, "the edit's old sentence 'Be brief.' is not a sentence of the current text")
    """
    if op not in OPS:
        return None, f"the edit's op {op!r} is not one of {', '.join(OPS)}"
    new = " ".join(new.split())
    if op == "add":
        if not new:
            return None, "an 'add' edit needs the new sentence"
        return (value.rstrip() + (" " if value.strip() else "") + new), ""
    parts = sentences(value)
    hit = [i for i, s in enumerate(parts) if _norm(s) == _norm(old)]
    if not old.strip() or not hit:
        return None, f"the edit's old sentence {old!r} is not a sentence of the current text"
    if op == "replace" and not new:
        return None, "a 'replace' edit needs the new sentence"
    parts[hit[0]:hit[0] + 1] = [new] if op == "replace" else []
    return " ".join(parts), ""


def schema(max_len: int, value: str) -> str:
    """The JSON schema of an edit reply to ``value`` (for schema-constrained decoding).

    ``old`` can only be one of the value's sentences or empty (for ``add``): unconstrained,
    the 1.5B model named a sentence the text does not have in 29 of 54 edits
    (docs/results.md §11).

    >>> json.loads(schema(80, "Count. Be brief."))["properties"]["old"]["enum"]
    ['Count.', 'Be brief.', '']
    """
    text = {"type": "string", "maxLength": max_len}
    old = {"type": "string", "enum": [*dict.fromkeys(sentences(value)), ""]}
    props = {"pattern": text, "op": {"type": "string", "enum": list(OPS)}, "old": old, "new": text}
    return json.dumps(closed_object(props))
