"""attrs validators shared by the knobs classes of the built-in strategies.

>>> import attrs
>>> @attrs.frozen
... class Knobs:
...     n: int = attrs.field(default=1, validator=POSITIVE_INT)
>>> Knobs(0)
Traceback (most recent call last):
...
ValueError: 'n' must be >= 1: 0
"""

from __future__ import annotations

import attrs

from funcgrad.strategies.guards import GUARDS

POSITIVE_INT = [attrs.validators.instance_of(int), attrs.validators.ge(1)]
NON_NEGATIVE_INT = [attrs.validators.instance_of(int), attrs.validators.ge(0)]
NON_NEGATIVE = [attrs.validators.instance_of((int, float)), attrs.validators.ge(0)]
AT_MOST_ONE = [attrs.validators.instance_of((int, float)), attrs.validators.le(1)]  # a score threshold (tau)
PROMPT_CAP = [attrs.validators.instance_of(int), attrs.validators.ge(500)]  # max_prompt_chars


def check_skip_guards(instance, attribute, value) -> None:
    """attrs validator of a ``skip_guards`` knob: every name must be a guard (:class:`~funcgrad.strategies.guards.Guard`).

    >>> check_skip_guards(None, None, ("tag_leak",))
    >>> check_skip_guards(None, None, ("tag_leek",))
    Traceback (most recent call last):
    ...
    ValueError: skip_guards names unknown guard(s) ['tag_leek']; guards are: no_tags, truncated, invalid_json, bad_edit, empty, unchanged, repeats_rejected, too_long, too_short, tag_leak, label_leak, input_copy, critique_paste, chat_reply, role_copy, specifics_copy, unknown_param
    """
    unknown = [g for g in value if g not in GUARDS]
    if unknown:
        raise ValueError(f"skip_guards names unknown guard(s) {unknown}; guards are: {', '.join(GUARDS)}")
