"""Every meta-prompt text of the built-in strategies, in one place per strategy family.

:mod:`~funcgrad.strategies.prompts.shared` (fenced values, history and rejected
proposals, cut markers), :mod:`~funcgrad.strategies.prompts.backprop` (critic and
optimizer of per-node backpropagation), :mod:`~funcgrad.strategies.prompts.whole_trace`
(the OptoPrime-style problem), :mod:`~funcgrad.strategies.prompts.gepa` (the
reflection call of the GEPA-style strategy), :mod:`~funcgrad.strategies.prompts.edits`
(proposals as one-sentence edits), :mod:`~funcgrad.strategies.prompts.control` (backprop's
feedback for a record read for control flow). Strategy code only fills in these templates.

The tag-leak guard's phrase list is derived from these same texts
(:func:`guarded_phrases`): a proposed value that contains one of them, and whose
current value did not, has our prompt leaking into it.

>>> "Evidence, lowest score first" in guarded_phrases()
True
"""

from __future__ import annotations

import re
import string

from funcgrad.strategies.prompts import backprop, control, edits, gepa, shared, whole_trace

FAMILIES = (shared, backprop, whole_trace, gepa, edits, control)

_SENTENCE = re.compile(r"[.:;!?()\n]|\s-\s")
MIN_WORDS = 4


def _phrases(template: str) -> list[str]:
    """Literal sentences of ``template`` with at least MIN_WORDS words (fields cut out)."""
    out = []
    for chunk, *_ in string.Formatter().parse(template):
        for part in _SENTENCE.split(chunk):
            words = part.strip(" ,\"'`*-[]{}<>").split()
            if len(words) >= MIN_WORDS:
                out.append(" ".join(words))
    return out


def guarded_phrases() -> tuple[str, ...]:
    """The tags, section headers and sentences of every family's prompts (see module docs).

    >>> "#Feedback" in guarded_phrases() and "<NEW_VALUE>" in guarded_phrases()
    True
    """
    out: dict[str, None] = {}
    for family in FAMILIES:
        for marker in family.MARKERS:
            out[marker] = None
        for template in family.TEMPLATES:
            for phrase in _phrases(template):
                out[phrase] = None
    return tuple(out)
