"""Strategies combined under one trainer and one budget: phases by step number, or turns.

:func:`chain_steps` runs strategy ``a`` for its first ``n`` steps, then ``b`` (e.g.
instruction steps, then bootstrapped demos); :func:`alternate` takes turns. The
combined ``update`` delegates to the part whose turn it is with ``yield from``, so
the part's effects go straight to the driver; the combined state ``S`` is the tuple
of every part's state, so runs checkpoint and resume.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from funcgrad.core.errors import ConfigError, StrategyError
from funcgrad.core.strategy import Note, Strategy, Update, check_result
from funcgrad.strategies.demos import bootstrap_demos


def _part_states(s: Any, parts: tuple[Strategy, ...], name: str) -> tuple:
    """The parts' states: ``s`` itself, or the previous checkpoint format ``{"parts": [...]}``."""
    states = s["parts"] if isinstance(s, Mapping) and "parts" in s else s
    if not isinstance(states, tuple | list) or len(states) != len(parts):
        raise StrategyError(f"strategy {name!r}: its state is not one state per part ({len(parts)}); "
                            "start the run afresh instead of resuming")
    return tuple(states)


def _combined(name: str, parts: tuple[Strategy, ...], pick: Callable[[int], int], config: dict) -> Strategy:
    def init(state):
        return tuple(p.init(state) for p in parts)

    def update(results, state, s, context):
        states = _part_states(s, parts, name)
        i = pick(context.step)
        part = parts[i]
        value = yield from part.update(results, state, states[i], context)
        upd, inner_s = check_result(value, part.name)
        notes = (Note("", "proposed" if upd.values else "no_update", f"step {context.step + 1}: {part.name}'s turn"), *upd.notes)
        return Update(upd.values, notes, upd.gradients, upd.candidates), (*states[:i], inner_s, *states[i + 1:])

    return Strategy(name, init, update, config)


def _check_parts(parts, what: str) -> tuple[Strategy, ...]:
    bad = [p for p in parts if not isinstance(p, Strategy)]
    if bad or not parts:
        raise ConfigError(f"{what} needs funcgrad.Strategy values, got {[type(p).__name__ for p in parts] or 'none'}")
    return tuple(parts)


def chain_steps(*phases: tuple[Strategy, int] | Strategy) -> Strategy:
    """``(strategy, steps)`` phases run one after the other; the last runs for the remaining steps.

    A bare strategy counts as a phase of one step when it is not the last.

    >>> from funcgrad.strategies import whole_trace
    >>> chain_steps((bootstrap_demos(), 2), whole_trace()).name
    'chain(bootstrap_demos,whole_trace)'
    """
    pairs = [p if isinstance(p, tuple) else (p, 1) for p in phases]
    parts = _check_parts([p for p, _ in pairs], "chain_steps")
    for strategy, n in pairs:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"chain_steps: phase {strategy.name!r} has steps={n!r}; it must be a whole number >= 1")
    ends, total = [], 0
    for _, n in pairs:
        total += n
        ends.append(total)

    def pick(step: int) -> int:
        return next((i for i, end in enumerate(ends[:-1]) if step < end), len(parts) - 1)

    config = {"phases": [{"name": p.name, "steps": n, "config": p.config} for p, n in pairs]}
    return _combined(f"chain({','.join(p.name for p in parts)})", parts, pick, config)


def alternate(*strategies: Strategy, every: int = 1) -> Strategy:
    """Take turns: ``every`` steps of each strategy, in order, round robin.

    >>> from funcgrad.strategies import whole_trace
    >>> alternate(bootstrap_demos(), whole_trace()).name
    'alternate(bootstrap_demos,whole_trace)'
    """
    parts = _check_parts(strategies, "alternate")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"alternate: every={every!r} must be a whole number >= 1")
    config = {"every": every, "parts": [{"name": p.name, "config": p.config} for p in parts]}
    return _combined(f"alternate({','.join(p.name for p in parts)})", parts, lambda step: (step // every) % len(parts), config)


def demos_then(inner: Strategy, *, demo_steps: int = 1, after: bool = False, turns: bool = False, **demo_knobs: Any) -> Strategy:
    """The config form of a combination: :func:`bootstrap_demos` and ``inner`` (an ``[strategy.inner]`` table).

    ``demo_steps`` steps of demos first (``after=True``: ``inner`` for ``demo_steps``
    steps first, then demos); ``turns=True`` alternates one step each instead. The
    other knobs are bootstrap_demos knobs.

    >>> from funcgrad.strategies import whole_trace
    >>> demos_then(whole_trace(), demo_steps=2, after=True, k=2).name
    'chain(whole_trace,bootstrap_demos)'
    """
    demos = bootstrap_demos(**demo_knobs)
    if turns:
        return alternate(inner, demos) if after else alternate(demos, inner)
    return chain_steps((inner, demo_steps), demos) if after else chain_steps((demos, demo_steps), inner)
