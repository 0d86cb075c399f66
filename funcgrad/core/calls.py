"""The engine protocol: how funcgrad talks to a language model.

An engine turns a :class:`Request` into a :class:`Response`. It is always passed in
explicitly (never global); everything effectful (HTTP, a local server, the cache on
disk, the clock) lives behind it. Engines may be wrapped (cache, budget, retries)
because every wrapper is itself an engine.

>>> class Four:
...     concurrency = 1
...     def complete(self, request):
...         return Response("4", Usage(prompt_tokens=len(request.messages[-1].content.split())))
>>> Four().complete(Request(messages=(Message("user", "2+2?"),))).text
'4'

The engines of :mod:`funcgrad.engines` (HTTP, the embedded model, the cache, the
meter, ``ScriptedEngine``) all implement this protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
import orjson

from funcgrad.core.errors import EngineError
from funcgrad.core.values import Vocabulary, one_of

class Role(Vocabulary):
    """What a request is for, as usage accounting and budgets see it: ``forward`` (a pipeline
    node on training examples), ``validation`` (the same on validation examples),
    ``evaluation`` (on test examples), ``backward`` (a critic), ``optimizer`` (a proposal
    writer) or ``judge`` (an LLM-as-judge loss). The role never enters the cache key.

    >>> Role("optimizer") == "optimizer", Role.FORWARD
    (True, 'forward')
    """

    FORWARD = "forward"
    VALIDATION = "validation"
    EVALUATION = "evaluation"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"
    JUDGE = "judge"


class MessageRole(Vocabulary):
    """Who speaks in a chat message: ``system``, ``user`` or ``assistant``."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


ROLES = tuple(Role)
MESSAGE_ROLES = tuple(MessageRole)


@attrs.frozen
class Message:
    """One chat message. ``role`` is system, user or assistant.

    >>> Message("user", "hi").role
    'user'
    """

    role: MessageRole = attrs.field(converter=one_of(MessageRole, "Message.role", EngineError))
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
    role: Role = attrs.field(default=Role.FORWARD, converter=one_of(Role, "Request.role", EngineError))

    def key_data(self) -> dict:
        """Every field but ``role``, as plain JSON (messages as ``[role, content]`` pairs): the cache key's layout.

        Traces and step traces write a Request with the one codec of
        :mod:`funcgrad.core.serialize`; this layout belongs to the response cache and
        never changes, so recorded answer caches keep replaying.
        """
        data = {f.name: getattr(self, f.name) for f in attrs.fields(Request) if f.name != "role"}
        return {**data, "messages": [[m.role, m.content] for m in self.messages], "stop": list(self.stop)}

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
