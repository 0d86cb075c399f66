"""Versioned JSON for every public funcgrad value (orjson; never pickle).

``dumps(value) -> bytes`` and ``loads(bytes) -> value`` round-trip exactly:
``loads(dumps(v)) == v`` for Param, PromptState, Record, Trace, Loss, Example,
Result, Usage, Message, Request, Response, Update, the backward-pass values
(Gradient, Candidate, CallLog, EffectLog, StepTrace) and the typed strategy state
(Stats, Pool, PoolEntry, History, HistoryEntry, Pick, Demo, DemoPool). Documents carry a format tag
and a version; see docs/trace-format.md.

>>> from funcgrad.core.state import Param
>>> loads(dumps(Param("Be brief."))) == Param("Be brief.")
True
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from funcgrad.core.backward import CallLog, Candidate, EffectLog, Gradient, StepTrace
from funcgrad.core.calls import Message, Request, Response, Usage
from funcgrad.core.errors import FuncgradError, SerializationError
from funcgrad.core.run import Example, Failure, Loss, Result
from funcgrad.core.state import Param, PromptState
from funcgrad.core.strategy import Attempt, Note, Update
from funcgrad.core.strategy_state import Demo, DemoPool, History, HistoryEntry, Pick, Pool, PoolEntry, Stats
from funcgrad.core.trace import Record, Trace
from funcgrad.core.values import FrozenDict

FORMAT = "funcgrad"
VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)  # older Records are upgraded on read (_upgrade_record); before 4, control is empty

_TYPES: dict[str, type] = {
    "Param": Param,
    "PromptState": PromptState,
    "Record": Record,
    "Trace": Trace,
    "Loss": Loss,
    "Example": Example,
    "Result": Result,
    "Failure": Failure,
    "Usage": Usage,
    "Message": Message,
    "Request": Request,
    "Response": Response,
    "Update": Update,
    "Note": Note,
    "Attempt": Attempt,
    "Gradient": Gradient,
    "Candidate": Candidate,
    "CallLog": CallLog,
    "EffectLog": EffectLog,
    "StepTrace": StepTrace,
    "Stats": Stats,
    "PoolEntry": PoolEntry,
    "Pool": Pool,
    "HistoryEntry": HistoryEntry,
    "Pick": Pick,
    "History": History,
    "Demo": Demo,
    "DemoPool": DemoPool,
}
_TAGS = {cls: tag for tag, cls in _TYPES.items()}


def to_data(value: Any) -> Any:
    """Plain JSON-able data for ``value``; attrs values become ``{"type": tag, ...fields}``.

    >>> to_data(Param("x"))["type"]
    'Param'
    """
    cls = type(value)
    if cls in _TAGS:
        data = {"type": _TAGS[cls]}
        for field in attrs.fields(cls):
            data[field.name] = to_data(getattr(value, field.name))
        return data
    if isinstance(value, FrozenDict | dict):
        return {"type": "dict", "items": {k: to_data(v) for k, v in value.items()}}
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise SerializationError(f"cannot serialize a {cls.__name__}; only funcgrad values and JSON data can be")


def from_data(data: Any) -> Any:
    """Inverse of :func:`to_data`."""
    if isinstance(data, list):
        return tuple(from_data(v) for v in data)
    if isinstance(data, dict):
        tag = data.get("type")
        if tag == "dict":
            return FrozenDict({k: from_data(v) for k, v in data.get("items", {}).items()})
        cls = _TYPES.get(tag)
        if cls is None:
            raise SerializationError(f"unknown value type {tag!r}; known: {', '.join(sorted(_TYPES))}")
        if tag == "Record":
            data = _upgrade_record(data)
        names = {f.name for f in attrs.fields(cls)}
        extra = set(data) - names - {"type"}
        if extra:
            raise SerializationError(f"{tag} has unknown field(s) {sorted(extra)}; was it written by a newer funcgrad?")
        try:
            return cls(**{k: from_data(v) for k, v in data.items() if k != "type"})
        except (TypeError, FuncgradError) as exc:
            raise SerializationError(f"invalid {tag}: {exc}") from None
    return data


def _upgrade_record(data: dict) -> dict:
    """The encoded Record ``data`` in the newest layout; the layout is told by its shape, so the
    upgrade also applies to records written without an envelope (``traces.jsonl``, checkpoints)."""
    if "consts" not in data:
        data = _upgrade_v1_record(data)
    request = data.get("request")
    if isinstance(request, dict) and request.get("type") == "dict":
        data = _upgrade_v2_record(data, request.get("items", {}))
    return data


def _upgrade_v1_record(data: dict) -> dict:
    """Version 1: fn/retrieve records kept their constant arguments as ``request = {"const": {...}}``."""
    request = data.get("request")
    if isinstance(request, dict) and request.get("type") == "dict" and set(request.get("items", {})) == {"const"}:
        return {**data, "request": None, "consts": request["items"]["const"]}
    return {**data, "consts": {"type": "dict", "items": {}}}


_V2_REQUEST_FIELDS = ("messages", "model", "temperature", "max_tokens", "sample", "role")


def _upgrade_v2_record(data: dict, items: dict) -> dict:
    """Version 2: ``request`` was a JSON object: ``{messages: [[role, content], ...], model, temperature,
    max_tokens, sample, role}`` for a model call, plus ``target`` on a loss record. The call becomes a
    Request (seed, stop and json_schema were not recorded: they take their defaults); the target moves
    to ``consts``."""
    unknown = set(items) - set(_V2_REQUEST_FIELDS) - {"target"}
    if unknown or ("messages" not in items and "target" not in items):
        raise SerializationError(
            f"record {data.get('id')!r} has a version-2 request with fields {sorted(items)}, which is neither a "
            f"model call ({', '.join(_V2_REQUEST_FIELDS)}) nor a loss target"
        )
    consts = data.get("consts") or {"type": "dict", "items": {}}
    if "target" in items:
        consts = {"type": "dict", "items": {**consts.get("items", {}), "target": items["target"]}}
    request = None
    if "messages" in items:
        fields = {k: items[k] for k in _V2_REQUEST_FIELDS if k in items}
        pairs = fields.pop("messages")
        if not isinstance(pairs, list) or not all(isinstance(m, list) and len(m) == 2 for m in pairs):
            raise SerializationError(f"record {data.get('id')!r}: version-2 request messages must be [role, content] pairs")
        messages = [{"type": "Message", "role": role, "content": content} for role, content in pairs]
        request = {"type": "Request", "messages": messages, **fields}
    return {**data, "consts": consts, "request": request}


def dumps(value: Any, *, indent: bool = False) -> bytes:
    """Serialize ``value`` to versioned JSON bytes."""
    doc = {"format": FORMAT, "version": VERSION, "value": to_data(value)}
    try:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)
    except orjson.JSONEncodeError as exc:  # e.g. an int beyond 64 bits, a lone surrogate in a str
        raise SerializationError(f"cannot write {type(value).__name__} as JSON: {exc}") from None


def loads(data: bytes | str) -> Any:
    """Parse bytes written by :func:`dumps`; raise SerializationError saying what is wrong."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SerializationError("not a funcgrad document: expected an object with \"format\": \"funcgrad\"")
    if doc.get("version") not in READABLE_VERSIONS:
        raise SerializationError(
            f"document version {doc.get('version')!r} is not supported; this funcgrad reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    if "value" not in doc:
        raise SerializationError("funcgrad document has no \"value\" field")
    return from_data(doc["value"])
