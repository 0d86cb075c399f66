"""Reading a model's reply: the fenced value, a JSON object, and whether a critique says anything.

Small models wrap, announce or label the value they were asked for; the readers here
take it out (:func:`extract_fenced`, :func:`unwrap`) or say which guard drops the
reply (``no_tags``, ``truncated``, ``invalid_json``: :class:`~funcgrad.strategies.guards.Guard`).

>>> extract_fenced("Sure!\\n<NEW_VALUE>\\nCount the items.\\n</NEW_VALUE>")
('Count the items.', '')
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from funcgrad.strategies.guards import Guard
from funcgrad.strategies.text import VALUE_TAG

# "The new instruction should be: "..."" -- a small model announcing the value instead of writing it.
_ANNOUNCED = re.compile(r"[^\"\n]{0,160}?\b(?:should be|should read|would be|is)\s*:?\s*[\"\u201c](.+)[\"\u201d]\.?", re.DOTALL | re.IGNORECASE)
# "count_instruction: "..."" -- the value prefixed with its parameter's name.
_NAMED = re.compile(r"`?[A-Za-z]\w*[_.][\w.]*`?\s*[:=]\s*(.+)", re.DOTALL)
# "format: 'List the items ...'" -- a one-word name, accepted only before a fully quoted value.
_NAMED_QUOTED = re.compile(r"`?[A-Za-z]\w*`?\s*[:=]\s*([\"'\u201c].+[\"'\u201d])", re.DOTALL)

# Advice that names no concrete mistake (observed from small critics).
_GENERIC = re.compile(
    r"\b(clarify the (objective|task|instructions?)|be more (specific|clear|precise)|"
    r"provide (an|more|some) examples?|add (an|more|some) examples?|make (it|the prompt) (clearer|more clear)|"
    r"improve (the )?clarity|more detailed instructions?)\b",
    re.IGNORECASE,
)


def unwrap(value: str) -> str:
    """The value without code fences, surrounding quotes or an announcement ("... should be: "X"").

    >>> unwrap('The improved instruction should be: "Count only the asked category."')
    'Count only the asked category.'
    >>> unwrap('count_instruction: "Count only the asked category."')
    'Count only the asked category.'
    >>> unwrap("format: 'End with Answer: N.'")
    'End with Answer: N.'
    >>> unwrap("Note: count only the asked category.")
    'Note: count only the asked category.'
    """
    value = value.strip()
    m = re.fullmatch(r"```[a-zA-Z]*\n(.*?)\n?```", value, re.DOTALL)
    if m:
        value = m.group(1).strip()
    m = _NAMED.fullmatch(value) or _NAMED_QUOTED.fullmatch(value)
    if m:
        value = m.group(1).strip()
    m = _ANNOUNCED.fullmatch(value)
    if m and '"' not in m.group(1):
        value = m.group(1).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        value = value[1:-1].strip()
    return value


def extract_fenced(reply: str, *, finish_reason: str = "stop", tag: str = VALUE_TAG) -> tuple[str | None, str]:
    """``(value, "")`` from a reply holding ``<tag>value</tag>``, else ``(None, guard)``.

    The value is the text after the first opening tag, up to the next closing tag.
    A missing closing tag is accepted only when the model stopped on its own (not on
    the token cap: that is ``truncated``).

    >>> extract_fenced("no tags here")
    (None, <Guard.NO_TAGS: 'no_tags'>)
    >>> extract_fenced("<NEW_VALUE>half a prom", finish_reason="length")
    (None, <Guard.TRUNCATED: 'truncated'>)
    """
    opener, closer = f"<{tag}>", f"</{tag}>"
    start = reply.find(opener)
    if start < 0:
        return None, Guard.NO_TAGS
    body = reply[start + len(opener):]
    end = body.find(closer)
    if end < 0:
        if finish_reason == "length":
            return None, Guard.TRUNCATED
        body = body.split(opener)[0]
    else:
        body = body[:end]
    return unwrap(body), ""


def parse_json_reply(reply: str) -> Any:
    """The JSON value in a model reply (code fences and chatter around it are ignored).

    Raises ValueError when there is none.

    >>> parse_json_reply('Here: ```json\\n{"a": 1}\\n``` done')
    {'a': 1}
    """
    text = reply.strip()
    m = re.search(r"```(?:json)?\s*\n?(.*?)```", text, re.DOTALL)
    candidates = [m.group(1)] if m else []
    candidates.append(text)
    for open_c, close_c in (("{", "}"), ("[", "]")):
        i, j = text.find(open_c), text.rfind(close_c)
        if 0 <= i < j:
            candidates.append(text[i:j + 1])
    for c in candidates:
        try:
            return json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
    raise ValueError("no JSON value found in the reply")


def json_object(reply: str, finish_reason: str, valid: Callable[[dict], bool] | None = None) -> tuple[dict | None, str]:
    """``(object, "")`` from a reply holding a JSON object (that ``valid`` accepts), else ``(None, guard)``.

    The guard is ``truncated`` when the reply stopped on the token cap, ``invalid_json`` otherwise.

    >>> json_object('{"a": 1}', "stop"), json_object('{"a": 1', "length"), json_object("[1]", "stop")
    (({'a': 1}, ''), (None, <Guard.TRUNCATED: 'truncated'>), (None, <Guard.INVALID_JSON: 'invalid_json'>))
    """
    try:
        data = parse_json_reply(reply)
    except ValueError:
        data = None
    if isinstance(data, dict) and (valid is None or valid(data)):
        return data, ""
    return None, Guard.TRUNCATED if finish_reason == "length" else Guard.INVALID_JSON


def closed_object(props: Mapping[str, Any]) -> dict:
    """The JSON schema of an object that must have every key of ``props`` and no other.

    >>> closed_object({"text": {"type": "string"}})["required"]
    ['text']
    """
    return {"type": "object", "properties": dict(props), "required": list(props), "additionalProperties": False}


def is_generic(critique: str) -> bool:
    """True for short advice that names no concrete mistake ("be more specific").

    >>> is_generic("Clarify the objective."), is_generic("It counted the lamp twice; say to count each item once.")
    (True, False)
    """
    return bool(_GENERIC.search(critique)) and len(critique.split()) < 20 and not re.search(r"\d|'|\"", critique)
