"""Find tasks and strategies by name, so configs can say ``name = "backprop"``.

Strategies are found through the ``funcgrad.strategies`` entry-point group (the
built-in ones register there exactly like a third-party package would; the core
never imports them), or as ``"package.module:factory"``. Tasks come from
:mod:`funcgrad.tasks` or ``"package.module:factory"``.

A ``module:factory`` name is imported from the config file's folder first, then
the working directory, then the installed packages; so ``name = "kbqa:make_task"``
finds ``kbqa.py`` next to the config. The factory is called with exactly the
table's other keys as keyword arguments (nothing is added); a key it does not
accept is one ConfigError naming the key and the arguments it does accept.

>>> sorted(strategy_names())[:1]
['backprop']
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from funcgrad.core.errors import ConfigError
from funcgrad.core.strategy import Strategy
from funcgrad.core.task import Task
from funcgrad.core.values import thaw

GROUP = "funcgrad.strategies"


def strategy_names() -> tuple[str, ...]:
    """Names registered in the ``funcgrad.strategies`` entry-point group."""
    return tuple(sorted({ep.name for ep in entry_points(group=GROUP)}))


def search_dirs(config_dir: str | Path | None = None) -> tuple[Path, ...]:
    """Folders a ``module:factory`` name is imported from before the installed packages.

    >>> search_dirs("/cfg") == (Path("/cfg"), Path.cwd())
    True
    """
    dirs = ([Path(config_dir)] if config_dir is not None else []) + [Path.cwd()]
    return tuple(dict.fromkeys(d.resolve() for d in dirs))


@contextlib.contextmanager
def _import_path(dirs: Sequence[Path]) -> Iterator[None]:
    """Put ``dirs`` first on ``sys.path`` while importing (so a module may import its neighbours), then restore it."""
    saved = list(sys.path)
    sys.path[:0] = [str(d) for d in dirs]
    try:
        yield
    finally:
        sys.path[:] = saved


def _import(spec: str, what: str, dirs: Sequence[Path]) -> Callable:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"{what} {spec!r} must look like \"module:factory\" (e.g. \"kbqa:make_task\")")
    where = ", ".join(map(str, dirs)) + " and the installed packages"
    try:
        with _import_path(dirs):
            loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{what} {spec!r}: no module named {exc.name!r} in {where}") from None
    except ImportError as exc:
        raise ConfigError(f"{what} {spec!r} cannot be imported: {exc}") from None
    except Exception as exc:  # the module itself raised while being imported (a bug in it, a syntax error)
        raise ConfigError(f"{what} {spec!r}: importing module {module!r} raised {_raised(exc)}; fix the module") from None
    factory = getattr(loaded, attr, None)
    if not callable(factory):
        raise ConfigError(f"{what} {spec!r}: module {module!r} ({loaded.__file__}) has no function {attr!r}")
    return factory


def accepted_arguments(factory: Callable) -> tuple[str, ...] | None:
    """The keyword arguments ``factory`` accepts, or None if it takes ``**kwargs``.

    >>> accepted_arguments(lambda *, seed=0, n_train=30: None)
    ('seed', 'n_train')
    """
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return tuple(n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def _call(factory: Callable, args: Mapping[str, Any], what: str, section: str) -> Any:
    accepted = accepted_arguments(factory)
    if accepted is not None:
        unknown = [key for key in args if key not in accepted]
        if unknown:
            raise ConfigError(
                f"[{section}] {unknown[0]} = {args[unknown[0]]!r}: {what} does not accept an argument {unknown[0]!r}; "
                f"it accepts: {', '.join(accepted) or '(no arguments)'} "
                f"(every [{section}] key except name is passed to it as a keyword argument)"
            )
    try:
        inspect.signature(factory).bind(**args)
    except TypeError as exc:
        raise ConfigError(f"[{section}] {what} cannot be called with {sorted(args) or 'no arguments'}: {exc}") from None
    try:
        return factory(**args)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}] {what}: {exc}") from None
    except Exception as exc:  # any other bug in the user's factory: one line naming it, not a traceback
        raise ConfigError(f"[{section}] {what} raised {_raised(exc)}; fix the factory (it runs before any model call)") from None


def _raised(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` and the file and line of the user's code that raised it
    (none for code without a file, such as this doctest, nor for a SyntaxError, which names its own).

    >>> try:
    ...     {}["k"]
    ... except KeyError as exc:
    ...     _raised(exc)
    "KeyError: 'k'"
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]  # not importlib's
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames and not isinstance(exc, SyntaxError) else ""
    return f"{type(exc).__name__}: {exc}{where}"


def build_strategy(name: str, args: Mapping[str, Any] = {}, *, config_dir: str | Path | None = None, section: str = "strategy") -> Strategy:
    """The strategy ``name`` built with ``args``; an ``inner`` table builds a wrapped strategy.

    ``config_dir`` is the config file's folder, searched first for a ``module:factory`` name.

    >>> build_strategy("whole_trace").name
    'whole_trace'
    """
    args = thaw(dict(args))
    if isinstance(args.get("inner"), dict):
        inner = dict(args["inner"])
        inner_name = inner.pop("name", None)
        if not isinstance(inner_name, str):
            raise ConfigError(f"[{section}.inner] of {name!r} needs name = \"...\"")
        args["inner"] = build_strategy(inner_name, inner, config_dir=config_dir, section=f"{section}.inner")
    if ":" in name:
        factory = _import(name, "strategy", search_dirs(config_dir))
    else:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            raise ConfigError(f"unknown strategy {name!r}; known: {', '.join(strategy_names()) or '(none installed)'}")
        factory = found[0].load()
    strategy = _call(factory, args, f"strategy {name!r}", section)
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy factory {name!r} returned {type(strategy).__name__}, not funcgrad.Strategy")
    return strategy


def build_task(name: str, args: Mapping[str, Any] = {}, *, config_dir: str | Path | None = None) -> Task:
    """The task ``name`` (built-in or ``module:factory``) built with ``args`` (the [task] keys but name).

    >>> build_task("object_counting", {"n_train": 2, "n_val": 1, "n_test": 1}).name
    'object_counting'
    """
    args = thaw(dict(args))
    if ":" in name:
        task = _call(_import(name, "task", search_dirs(config_dir)), args, f"task factory {name!r}", "task")
    else:
        from funcgrad.tasks import task_factory

        task = _call(task_factory(name), args, f"task factory {name!r}", "task")
    if not isinstance(task, Task):
        raise ConfigError(f"task factory {name!r} returned {type(task).__name__}, not funcgrad.Task")
    return task
