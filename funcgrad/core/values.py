"""Immutable JSON values: the only data a trace, a cache entry or a checkpoint holds.

A JSON value is ``None``, ``bool``, ``int``, ``float``, ``str``, a ``tuple`` of JSON
values or a :class:`FrozenDict` with ``str`` keys. :func:`freeze` converts lists and
dicts into that form, so values parsed back from JSON compare equal to the originals.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from funcgrad.core.errors import FuncgradError, SerializationError

E = TypeVar("E", bound="Vocabulary")


class FrozenDict(Mapping):
    """A hashable, read-only dict that keeps insertion order.

    It is a :class:`collections.abc.Mapping` (``d[k]``, ``d.get(k)``, ``k in d``,
    ``d.items()``...) and compares equal to the dict it froze, but it is *not* a
    ``dict``: test values handed to a loss or fn node with
    ``isinstance(x, collections.abc.Mapping)``, never ``isinstance(x, dict)``.
    Lists inside count as equal to the tuples they became (``freeze({"a": [1]}) ==
    {"a": [1]}``). ``dict(d)`` (shallow) or :func:`thaw` (deep) gives a plain, mutable copy.

    >>> import collections.abc
    >>> d = FrozenDict({"a": 1})
    >>> d["a"], d == {"a": 1}, isinstance(d, collections.abc.Mapping), isinstance(d, dict)
    (1, True, True, False)
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "_data", dict(*args, **kwargs))
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __hash__(self):
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(tuple(self._data.items())))
        return self._hash

    def __eq__(self, other):
        # Equal to the dict it froze, lists inside included (found by tests/test_values.py).
        if isinstance(other, Mapping) and not isinstance(other, FrozenDict):
            try:
                other = freeze(other)
            except SerializationError:
                return self._data == dict(other)
        if isinstance(other, FrozenDict):
            return self._data == other._data
        return NotImplemented

    def __setattr__(self, name, value):
        raise AttributeError("FrozenDict is immutable; build a new one instead")

    def __repr__(self):
        return f"FrozenDict({self._data!r})"


def freeze(value: Any, *, where: str = "value") -> Any:
    """Return ``value`` as an immutable JSON value (lists -> tuples, dicts -> FrozenDict).

    Raises SerializationError naming the offending path for anything that is not JSON.

    >>> freeze({"a": [1, 2]})
    FrozenDict({'a': (1, 2)})
    """
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return check_text(value, where=where)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise SerializationError(f"{where} is {value!r}; JSON has no NaN/Infinity, use None")
        return value
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v, where=f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SerializationError(f"{where} has key {k!r}; JSON object keys must be str")
            out[k] = freeze(v, where=f"{where}[{k!r}]")
        return FrozenDict(out)
    raise SerializationError(
        f"{where} is a {type(value).__name__}, which is not JSON; "
        "convert it to str, number, bool, None, list or dict first"
    )


def check_text(text: str, *, where: str = "text") -> str:
    """Return ``text`` if it is valid Unicode, else raise SerializationError naming the bad character.

    A lone surrogate (e.g. from ``surrogateescape`` decoding) cannot be sent to a model or written as JSON.

    >>> check_text("ok")
    'ok'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationError(
            f"{where} contains {text[exc.start]!r} at position {exc.start} (after {text[max(0, exc.start - 40):exc.start]!r}), "
            "which is not valid Unicode (a lone surrogate); fix the text or decode its source as UTF-8"
        ) from None
    return text


def thaw(value: Any) -> Any:
    """Return a plain-Python copy of a frozen JSON value (tuples -> lists, FrozenDict -> dict).

    >>> thaw(freeze({"a": [1]}))
    {'a': [1]}
    """
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    return value


class Vocabulary(enum.StrEnum):
    """A closed set of names (record kinds, gradient sources, ...): each member equals,
    prints, reprs and is written to JSON as its string, so values stay plain JSON.

    >>> class Colour(Vocabulary):
    ...     RED = "red"
    >>> Colour.RED == "red", repr(Colour.RED), list(Colour)
    (True, "'red'", ['red'])
    """

    __repr__ = str.__repr__


def one_of(vocabulary: type[E], what: str, error: type[FuncgradError]) -> Callable[[Any], E]:
    """A converter to a member of ``vocabulary`` that raises ``error`` naming ``what`` and the allowed values.

    >>> class Colour(Vocabulary):
    ...     RED = "red"
    >>> one_of(Colour, "colour", SerializationError)("red") is Colour.RED
    True
    >>> one_of(Colour, "colour", SerializationError)("blue")
    Traceback (most recent call last):
    ...
    funcgrad.core.errors.SerializationError: colour 'blue' is not one of: red
    """

    def convert(value: Any) -> E:
        try:
            return vocabulary(value)
        except ValueError:
            raise error(f"{what} {value!r} is not one of: {', '.join(vocabulary)}") from None

    return convert
