"""Prompt lines from the step's context: best past values, proposals rejected this step, steps since improvement.

Every built-in optimizer prompt shows the same context (``context`` is the
:class:`~funcgrad.core.strategy.StepContext` the training loop passes to ``update``);
the texts live in :mod:`funcgrad.strategies.prompts.shared`.

>>> from funcgrad.core.strategy import Attempt, StepContext
>>> ctx = StepContext(rejected=[Attempt({"sys": "Count."}, reason="too_short: stub")])
>>> rejected_values(ctx, "sys"), rejected_lines(ctx, "sys", limit=2, chars=50)
(('Count.',), ['- Count.  -> too_short: stub'])
"""

from __future__ import annotations

from funcgrad.strategies.prompts import shared
from funcgrad.strategies.text import one_line


def rejected_values(context, name: str) -> tuple[str, ...]:
    """Values of ``name`` proposed and rejected earlier in this step."""
    return tuple(a.values[name] for a in getattr(context, "rejected", ()) or () if name in a.values)


def history_lines(context, name: str, current: str, *, limit: int, chars: int) -> list[str]:
    """Best past values of ``name`` (with validation scores), best first, excluding the current."""
    lines, seen = [], {current.strip()}
    for a in getattr(context, "history", ()) or ():
        v = a.values.get(name)
        if v is None or v.strip() in seen:
            continue
        seen.add(v.strip())
        score = "?" if a.score is None else f"{a.score:.2f}"
        lines.append(shared.HISTORY_LINE.format(score=score, value=one_line(v, chars)))
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
        lines.append(shared.REJECTED_LINE.format(value=one_line(v, chars), why=one_line(why, 120)))
        if len(lines) >= limit:
            break
    return lines


def past_lines(context, name: str, current: str, *, limit: int, of_param: bool = False) -> list[str]:
    """The history and rejected lines of ``name``, each under its header (``of_param``: headers naming it)."""
    lines = []
    hist = history_lines(context, name, current, limit=limit, chars=200)
    if hist:
        lines += [shared.HISTORY_HEADER_OF.format(param=name) if of_param else shared.HISTORY_HEADER, *hist]
    rej = rejected_lines(context, name, limit=limit, chars=200)
    if rej:
        lines += [shared.REJECTED_HEADER_OF.format(param=name) if of_param else shared.REJECTED_HEADER, *rej]
    return lines


def since_improvement_lines(context) -> list[str]:
    """One line saying how many steps passed without improvement (bolder from 2 on), or none.

    >>> from funcgrad.core.strategy import StepContext
    >>> since_improvement_lines(StepContext(steps_since_improvement=2))
    ['Steps since last improvement: 2 (make a bolder change)']
    """
    since = context.steps_since_improvement
    return [shared.SINCE_IMPROVEMENT.format(n=since) + (shared.BOLDER if since >= 2 else "")] if since else []


def writable(state, name: str) -> bool:
    """Whether a text-writing strategy may rewrite param ``name``: trainable, and not of kind ``demos``.

    Worked examples are harvested from the model's own correct runs
    (:func:`~funcgrad.strategies.bootstrap_demos`, :func:`~funcgrad.strategies.search`),
    never written by an optimizer model; a writer shows a demos param as fixed context.

    >>> from funcgrad.core.state import Param, PromptState
    >>> s = PromptState.of(ins=Param("Count."), demos=Param("", kind="demos"))
    >>> writable(s, "ins"), writable(s, "demos")
    (True, False)
    """
    return name in state and state[name].trainable and state[name].kind != "demos"
