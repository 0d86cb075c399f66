"""The empty demos peer every built-in task gives each LLM node.

An empty param renders as nothing, so the prompts stay exactly as written until a
strategy fills the peer with worked examples (:func:`funcgrad.strategies.bootstrap_demos`,
:func:`funcgrad.strategies.search`); text-writing strategies leave it alone.

>>> from funcgrad.core.state import Param, PromptState
>>> s = with_demos(PromptState(params={"i": Param("Count.")}, groups={"sys": ("i",)}), {"sys": "count"})
>>> s.resolve("sys"), s["count_demos"].kind, s.render(["sys"])
(('i', 'count_demos'), 'demos', 'Count.')
"""

from __future__ import annotations

from collections.abc import Mapping

from funcgrad.core.state import Param, PromptState
from funcgrad.core.transforms import add_peer


def with_demos(state: PromptState, groups: Mapping[str, str]) -> PromptState:
    """``state`` with an empty trainable ``<node>_demos`` peer at the end of each ``{group: node}``."""
    for group, node in groups.items():
        param = Param("", role=f"worked examples shown to the '{node}' node: inputs and correct replies", kind="demos")
        state = add_peer(state, group, f"{node}_demos", param)
    return state
