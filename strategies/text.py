"""Bounded prompt text: clipping, the prompt cap, fenced values, and what an LLM record was sent.

A prompt built by a strategy stays within its cap (:func:`fit_prompt`): the evidence
shrinks, the task description, current value and reply instructions survive. Every
cut is visible (a marker from :mod:`funcgrad.strategies.prompts.shared`).

>>> fence("Count the items.")
'<NEW_VALUE>\\nCount the items.\\n</NEW_VALUE>'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from funcgrad.core.nodes import as_text
from funcgrad.strategies.prompts import shared

VALUE_TAG, CURRENT_TAG = shared.VALUE_TAG, shared.CURRENT_TAG
OPEN, CLOSE = f"<{VALUE_TAG}>", f"</{VALUE_TAG}>"


def clip(text: Any, limit: int) -> str:
    """``text`` as prompt text, cut to ``limit`` characters with a visible marker.

    >>> clip("abcdef", 3)
    'abc…[+3 chars cut]'
    """
    text = text if isinstance(text, str) else as_text(text)
    if limit <= 0 or len(text) <= limit:
        return text
    return text[:limit] + shared.CLIP_MARKER.format(n=len(text) - limit)


def one_line(text: Any, limit: int) -> str:
    """Whitespace collapsed to single spaces, then clipped.

    >>> one_line("a\\n  b", 10)
    'a b'
    """
    return clip(" ".join(str(text if isinstance(text, str) else as_text(text)).split()), limit)


def normalized(text: str) -> str:
    """Lower case, whitespace collapsed: the form texts are compared in.

    >>> normalized("  Count\\nTHE items ")
    'count the items'
    """
    return " ".join(text.lower().split())


def fence(value: str, tag: str = VALUE_TAG) -> str:
    """``value`` between ``<tag>`` and ``</tag>`` lines.

    >>> fence("x", "CURRENT_VALUE")
    '<CURRENT_VALUE>\\nx\\n</CURRENT_VALUE>'
    """
    return f"<{tag}>\n{value}\n</{tag}>"


def _shrink(lines: list[str], excess: int) -> list[str]:
    """``lines`` with the longest ones clipped until ``excess`` characters are gone (each cut marked)."""
    lines = list(lines)
    while excess > 0 and lines:
        i = max(range(len(lines)), key=lambda j: len(lines[j]))
        keep = max(0, len(lines[i]) - excess - len(shared.BLOCK_CUT))
        if keep == 0 and len(lines[i]) <= len(shared.BLOCK_CUT):
            break
        excess -= len(lines[i]) - keep - len(shared.BLOCK_CUT)
        lines[i] = lines[i][:keep] + shared.BLOCK_CUT
    return lines


def _fitting_blocks(blocks: Sequence[Sequence[str]], room: int, cap: int) -> list[str]:
    """The evidence blocks (as text) that fit in ``room`` characters, the last one cut, and a note on the rest."""
    kept: list[str] = []
    for i, block in enumerate(blocks):
        note = shared.EVIDENCE_CUT.format(n=len(blocks) - i, cap=cap)
        text = "\n".join(block)
        left = room - sum(len(k) + 1 for k in kept) - len(note) - 1
        if len(text) + 1 <= left:
            kept.append(text)
            continue
        if left > len(shared.BLOCK_CUT) + 40:  # a useful part of this block still fits
            kept.append(text[: left - len(shared.BLOCK_CUT) - 1] + shared.BLOCK_CUT)
            note = shared.EVIDENCE_CUT.format(n=len(blocks) - i - 1, cap=cap) if i + 1 < len(blocks) else ""
        if note and left >= 0:
            kept.append(note)
        break
    return kept


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
    kept = _fitting_blocks(blocks, cap - len(head_text) - len(tail_text) - 2, cap)
    return "\n".join(x for x in (head_text, *kept, tail_text) if x)
