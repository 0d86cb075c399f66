"""Find tasks and strategies by name, so configs can say ``name = "backprop"``.

Strategies are found through the ``funcgrad.strategies`` entry-point group (the
built-in ones register there exactly like a third-party package would; the core
never imports them), or as ``"package.module:factory"``. Tasks come from
:mod:`funcgrad.tasks` or ``"package.module:factory"``.

>>> sorted(strategy_names())[:1]
['backprop']
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from funcgrad.core.errors import ConfigError
from funcgrad.core.strategy import Strategy
from funcgrad.core.task import Task
from funcgrad.core.values import thaw

GROUP = "funcgrad.strategies"


def strategy_names() -> tuple[str, ...]:
    """Names registered in the ``funcgrad.strategies`` entry-point group."""
    return tuple(sorted({ep.name for ep in entry_points(group=GROUP)}))


def _import(spec: str, what: str) -> Callable:
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what} {spec!r} cannot be imported: {exc}") from None


def _call(factory: Callable, args: Mapping[str, Any], what: str) -> Any:
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for key in args:
            if key not in allowed:
                raise ConfigError(f"{what} has no option {key!r}; its options are: {', '.join(allowed) or '(none)'}")
    try:
        return factory(**args)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None


def build_strategy(name: str, args: Mapping[str, Any] = {}) -> Strategy:
    """The strategy ``name`` built with ``args``; an ``inner`` table builds a wrapped strategy.

    >>> build_strategy("whole_trace").name
    'whole_trace'
    """
    args = thaw(dict(args))
    if isinstance(args.get("inner"), dict):
        inner = dict(args["inner"])
        inner_name = inner.pop("name", None)
        if not isinstance(inner_name, str):
            raise ConfigError(f"[strategy.inner] of {name!r} needs name = \"...\"")
        args["inner"] = build_strategy(inner_name, inner)
    if ":" in name:
        factory = _import(name, "strategy")
    else:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            raise ConfigError(f"unknown strategy {name!r}; known: {', '.join(strategy_names()) or '(none installed)'}")
        factory = found[0].load()
    strategy = _call(factory, args, f"strategy {name!r}")
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy factory {name!r} returned {type(strategy).__name__}, not funcgrad.Strategy")
    return strategy


def build_task(name: str, args: Mapping[str, Any] = {}) -> Task:
    """The task ``name`` (built-in or ``module:factory``) built with ``args``."""
    args = thaw(dict(args))
    if ":" in name:
        task = _call(_import(name, "task"), args, f"task {name!r}")
    else:
        from funcgrad.tasks import task_factory

        task = _call(task_factory(name), args, f"task {name!r}")
    if not isinstance(task, Task):
        raise ConfigError(f"task factory {name!r} returned {type(task).__name__}, not funcgrad.Task")
    return task
