"""A scripted engine for fast, deterministic tests: answers come from a Python function.

>>> engine = ScriptedEngine(lambda r: r.messages[-1].content.upper())
>>> engine.complete(Request(messages=(("user", "abc"),))).text
'ABC'
>>> len(engine.requests)
1
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from funcgrad.core.calls import Request, Response, Usage
from funcgrad.core.errors import EngineError


class ScriptedEngine:
    """An engine whose answers come from ``respond(request) -> str``.

    It keeps the requests it saw, in order, in ``requests`` (a tuple snapshot), so
    tests can count calls per role. Token usage is a whitespace word count, so
    usage figures stay deterministic. The function may raise EngineError to
    simulate a failed call.
    """

    def __init__(self, respond: Callable[[Request], str], *, concurrency: int = 4, model: str = "scripted"):
        self._respond = respond
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self.concurrency = concurrency
        self.model = model

    @property
    def requests(self) -> tuple[Request, ...]:
        with self._lock:
            return tuple(self._requests)

    def calls(self, role: str | None = None) -> int:
        """How many requests were made (with ``role``, only those of that role)."""
        return sum(1 for r in self.requests if role is None or r.role == role)

    def complete(self, request: Request) -> Response:
        with self._lock:
            self._requests.append(request)
        text = self._respond(request)
        if not isinstance(text, str):
            raise EngineError(f"scripted responder returned {type(text).__name__}, expected str")
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        return Response(
            text=text,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text.split())),
            model=request.model or self.model,
            finish_reason="stop",
        )


def replies(*texts: str) -> Callable[[Request], str]:
    """A responder that returns ``texts`` in order, then raises EngineError.

    >>> r = replies("a", "b")
    >>> r(None), r(None)
    ('a', 'b')
    """
    queue = list(texts)
    lock = threading.Lock()

    def respond(request):
        with lock:
            if not queue:
                raise EngineError("scripted engine ran out of replies")
            return queue.pop(0)

    return respond


def by_role(table: Mapping[str, Callable[[Request], str] | str], default: str | None = None) -> Callable[[Request], str]:
    """A responder that dispatches on ``request.role``; a str value is a fixed answer.

    >>> r = by_role({"forward": "42"}, default="ok")
    >>> r(Request(messages=(("user", "x"),))), r(Request(messages=(("user", "x"),), role="judge"))
    ('42', 'ok')
    """

    def respond(request):
        handler = table.get(request.role, default)
        if handler is None:
            raise EngineError(f"scripted engine has no answer for role {request.role!r}")
        return handler if isinstance(handler, str) else handler(request)

    return respond


def keyword(rules: Sequence[tuple[str, str]], default: str = "") -> Callable[[Request], str]:
    """A responder answering the first rule whose keyword occurs in the last message.

    >>> keyword([("capital", "Paris")], default="?")(Request(messages=(("user", "capital of France"),)))
    'Paris'
    """

    def respond(request):
        last = request.messages[-1].content if request.messages else ""
        for word, answer in rules:
            if word in last:
                return answer
        return default

    return respond
