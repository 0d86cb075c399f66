"""The engine protocol: how funcgrad talks to a language model.

An engine turns a :class:`Request` into a :class:`Response`. It is always passed in
explicitly (never global); everything effectful (HTTP, a local server, the cache on
disk, the clock) lives behind it. Engines may be wrapped (cache, budget, retries)
because every wrapper is itself an engine.

>>> from funcgrad.engines.scripted import ScriptedEngine
>>> engine = ScriptedEngine(lambda request: "4")
>>> engine.complete(Request(messages=(Message("user", "2+2?"),))).text
'4'
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
import orjson

from funcgrad.core.errors import EngineError

ROLES = ("forward", "validation", "evaluation", "backward", "optimizer", "judge")
MESSAGE_ROLES = ("system", "user", "assistant")


def _check_in(choices):
    def check(instance, attribute, value):
        if value not in choices:
            raise EngineError(f"{attribute.name}={value!r} is not one of {', '.join(choices)}")

    return check


@attrs.frozen
class Message:
    """One chat message. ``role`` is system, user or assistant.

    >>> Message("user", "hi").role
    'user'
    """

    role: str = attrs.field(validator=_check_in(MESSAGE_ROLES))
    content: str = attrs.field(validator=attrs.validators.instance_of(str))


def _messages(value) -> tuple[Message, ...]:
    out = []
    for m in value:
        if isinstance(m, Message):
            out.append(m)
        elif isinstance(m, (tuple, list)) and len(m) == 2:
            out.append(Message(m[0], m[1]))
        elif isinstance(m, dict):
            out.append(Message(m.get("role"), m.get("content")))
        else:
            raise EngineError(f"message {m!r} is not a Message, (role, content) pair or dict")
    return tuple(out)


def _nonneg(instance, attribute, value):
    if value is not None and value < 0:
        raise EngineError(f"{attribute.name}={value!r} must be >= 0")


@attrs.frozen
class Request:
    """A chat completion request. Every field except ``role`` is part of the cache key.

    ``sample`` is the sample index: asking for samples 0, 1, 2 of the same request
    gives three (possibly different) answers, and a rerun gets the same three.
    ``role`` only labels the call for usage accounting and budgets: the phase it
    belongs to — ``forward`` (training minibatch), ``validation``, ``evaluation``
    (test), ``backward`` (critiques), ``optimizer`` (proposals) or ``judge`` (an LLM
    loss). The training loop sets the phase of pipeline calls.

    >>> r = Request(messages=(("user", "hi"),), max_tokens=8)
    >>> r.messages[0].content, r.key() == Request(messages=(("user", "hi"),), max_tokens=8, role="judge").key()
    ('hi', True)
    """

    messages: tuple[Message, ...] = attrs.field(converter=_messages)
    model: str = ""
    temperature: float = attrs.field(default=0.0, validator=_nonneg)
    max_tokens: int = attrs.field(default=256, validator=_nonneg)
    seed: int | None = 0
    sample: int = attrs.field(default=0, validator=_nonneg)
    stop: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    json_schema: str | None = None
    role: str = attrs.field(default="forward", validator=_check_in(ROLES))

    def key_data(self) -> dict:
        """The JSON-able fields that identify this request (everything but ``role``)."""
        return {
            "messages": [[m.role, m.content] for m in self.messages],
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "sample": self.sample,
            "stop": list(self.stop),
            "json_schema": self.json_schema,
        }

    def key(self) -> bytes:
        """Canonical JSON bytes of :meth:`key_data` (sorted keys): the cache key material."""
        return orjson.dumps(self.key_data(), option=orjson.OPT_SORT_KEYS)


@attrs.frozen
class Usage:
    """Tokens and wall time of one call.

    >>> Usage(prompt_tokens=3, completion_tokens=1).total_tokens
    4
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen
class Response:
    """A model's answer: the text plus what it cost. ``cached`` is True when it came from a cache."""

    text: str = attrs.field(validator=attrs.validators.instance_of(str))
    usage: Usage = Usage()
    model: str = ""
    finish_reason: str = ""
    cached: bool = False


@runtime_checkable
class Engine(Protocol):
    """What funcgrad needs from a model backend.

    ``complete`` answers one request; callers run several at once from threads (the
    driver and the batch helpers), so it must be thread-safe. ``concurrency`` is how
    many calls the engine is happy to have in flight; batch helpers use it as their
    default worker count.
    """

    concurrency: int

    def complete(self, request: Request) -> Response: ...
