"""Prompt parameters and the immutable prompt state.

A :class:`Param` is one trainable (or frozen) piece of prompt text. A
:class:`PromptState` maps names to params, in order, plus *groups*: a group name
stands for several peer params (instruction, demos, output format) that one LLM node
renders together. :func:`apply_updates` is the only way to change text; it returns a
new state and leaves the original unchanged.

>>> s = PromptState.of(system=Param("Answer briefly."))
>>> apply_updates(s, {"system": "Answer in one word."})["system"].value
'Answer in one word.'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import attrs

from funcgrad.core.errors import StateError

PARAM_KINDS = ("instruction", "demos", "format", "other")
PEER_SEPARATOR = "\n\n"


def _kind(instance, attribute, value):
    if value not in PARAM_KINDS:
        raise StateError(f"Param kind {value!r} is not one of {', '.join(PARAM_KINDS)}")


def _str(instance, attribute, value):
    if not isinstance(value, str):
        raise StateError(f"Param {attribute.name} must be str, got {type(value).__name__}: {value!r}")


@attrs.frozen
class Param:
    """One piece of prompt text.

    ``role`` says what the text is for (the optimizer reads it); ``trainable=False``
    freezes it; ``kind`` is instruction, demos, format or other.

    >>> Param("Be brief.", role="system prompt of the answer node").trainable
    True
    """

    value: str = attrs.field(validator=_str)
    role: str = attrs.field(default="", validator=_str)
    trainable: bool = True
    kind: str = attrs.field(default="instruction", validator=_kind)


def _check_name(name) -> str:
    if not isinstance(name, str) or not name or name != name.strip():
        raise StateError(f"parameter name {name!r} must be a non-empty str without surrounding spaces")
    return name


def _params(value) -> tuple[tuple[str, Param], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    out, seen = [], set()
    for name, param in items:
        _check_name(name)
        if name in seen:
            raise StateError(f"parameter {name!r} is defined twice; names must be unique")
        if not isinstance(param, Param):
            raise StateError(f"parameter {name!r} must be a Param, got {type(param).__name__}")
        seen.add(name)
        out.append((name, param))
    return tuple(out)


def _groups(value) -> tuple[tuple[str, tuple[str, ...]], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((_check_name(name), tuple(members)) for name, members in items)


@attrs.frozen
class PromptState:
    """An immutable, ordered mapping of parameter names to :class:`Param`.

    ``groups`` maps a group name to the names of its peer params, in rendering order;
    :meth:`resolve` expands a name used by a node into the params it reads.

    >>> s = PromptState.of(a=Param("x"), b=Param("y", trainable=False))
    >>> s.names, s.trainable_names
    (('a', 'b'), ('a',))
    """

    params: tuple[tuple[str, Param], ...] = attrs.field(default=(), converter=_params)
    groups: tuple[tuple[str, tuple[str, ...]], ...] = attrs.field(default=(), converter=_groups)

    def __attrs_post_init__(self):
        names = {n for n, _ in self.params}
        seen = set()
        for group, members in self.groups:
            if group in names:
                raise StateError(f"group {group!r} has the same name as a parameter; rename one")
            if group in seen:
                raise StateError(f"group {group!r} is defined twice")
            seen.add(group)
            if not members:
                raise StateError(f"group {group!r} has no members")
            for m in members:
                if m not in names:
                    raise StateError(f"group {group!r} names unknown parameter {m!r}")

    @classmethod
    def of(cls, **params: Param) -> PromptState:
        """Build a state from keyword arguments: ``PromptState.of(system=Param("..."))``."""
        return cls(params)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.params)

    @property
    def trainable_names(self) -> tuple[str, ...]:
        return tuple(n for n, p in self.params if p.trainable)

    def as_dict(self) -> dict[str, Param]:
        """A plain dict copy of the params (changing it does not change the state)."""
        return dict(self.params)

    def values(self) -> dict[str, str]:
        """Name -> text of every param."""
        return {n: p.value for n, p in self.params}

    def __getitem__(self, name: str) -> Param:
        for n, p in self.params:
            if n == name:
                return p
        raise StateError(f"unknown parameter {name!r}; known: {', '.join(self.names) or '(none)'}")

    def __contains__(self, name) -> bool:
        return any(n == name for n, _ in self.params)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.params)

    def resolve(self, name: str) -> tuple[str, ...]:
        """The param names that ``name`` stands for: itself, or a group's members.

        >>> PromptState.of(a=Param("x")).resolve("a")
        ('a',)
        """
        for group, members in self.groups:
            if group == name:
                return members
        if name in self:
            return (name,)
        known = list(self.names) + [g for g, _ in self.groups]
        raise StateError(f"unknown parameter or group {name!r}; known: {', '.join(known) or '(none)'}")

    def render(self, names) -> str:
        """The text a node sees for ``names``: resolved param values joined by a blank line.

        An empty param renders as nothing (no extra separator), so an empty ``demos``
        peer leaves a node's prompt exactly as it was without it.

        >>> PromptState.of(a=Param("x"), b=Param("y")).render(("a", "b"))
        'x\\n\\ny'
        >>> PromptState.of(a=Param("x"), d=Param("", kind="demos")).render(("a", "d"))
        'x'
        """
        leaves = [leaf for name in names for leaf in self.resolve(name)]
        return PEER_SEPARATOR.join(self[leaf].value for leaf in leaves if self[leaf].value)

    def _repr_html_(self) -> str:
        """The params as an HTML table, text escaped (Jupyter shows it; :func:`funcgrad.core.html.state_html`)."""
        from funcgrad.core.html import state_html
        return state_html(self)


def apply_updates(state: PromptState, updates: Mapping[str, str]) -> PromptState:
    """Return a new state with the text of some params replaced; the original is unchanged.

    Rejects unknown names, frozen params and non-str values with a StateError naming
    the param. ``apply_updates(state, {})`` returns ``state`` itself.

    >>> s = PromptState.of(a=Param("x"))
    >>> apply_updates(s, {"a": "y"})["a"].value, s["a"].value
    ('y', 'x')
    """
    if not isinstance(updates, Mapping):
        raise StateError(f"updates must be a mapping of param name -> new text, got {type(updates).__name__}")
    if not updates:
        return state
    current = state.as_dict()
    for name, text in updates.items():
        if name not in current:
            raise StateError(
                f"update names unknown parameter {name!r}; known: {', '.join(state.names) or '(none)'}"
            )
        if not current[name].trainable:
            raise StateError(f"parameter {name!r} is frozen; unfreeze it before updating it")
        if not isinstance(text, str):
            raise StateError(f"update for {name!r} must be str, got {type(text).__name__}")
    return attrs.evolve(
        state,
        params=tuple((n, attrs.evolve(p, value=updates[n]) if n in updates else p) for n, p in state.params),
    )
