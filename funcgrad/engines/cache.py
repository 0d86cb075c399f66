"""A content-addressed on-disk cache of model answers, and replay from it.

The key of a request is the sha256 of ``request.key()`` (messages, sampling
parameters, sample index; never the role or any credential), the resolved model
id (``request.model`` or the inner engine's ``model``) and the server's identity
(the inner engine's ``identity``: an HTTP server's base URL, or ``sha256:<hex>`` of
the verified model file for the embedded model), so two servers that serve the same
model name never share answers. Each entry is one JSON file
``<directory>/<key[:2]>/<key>.json``, written to a temporary file in the same
directory and renamed into place, so concurrent writers (threads or processes) and
a crash mid-write never leave a half-written entry under a real name; an entry that
is corrupt anyway (e.g. a power loss) is treated as a miss and rewritten.

>>> import tempfile
>>> from funcgrad.engines.scripted import ScriptedEngine
>>> from funcgrad.core.calls import Request
>>> engine = CachedEngine(ScriptedEngine(lambda r: "4"), tempfile.mkdtemp())
>>> request = Request(messages=(("user", "2+2?"),))
>>> engine.complete(request).cached, engine.complete(request).cached
(False, True)
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import threading
from pathlib import Path

import attrs
import orjson

from funcgrad.core.calls import Engine, Request, Response, Usage
from funcgrad.core.errors import CacheMiss, EngineError
from funcgrad.engines.files import write_atomic

FORMAT = "funcgrad.engines.cache/1"
log = logging.getLogger(__name__)


def response_to_data(response: Response) -> dict:
    """A plain JSON dict of ``response`` (without the ``cached`` flag).

    >>> response_to_data(Response("hi"))["text"]
    'hi'
    """
    usage = response.usage
    return {
        "text": response.text,
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "latency_s": usage.latency_s},
        "model": response.model,
        "finish_reason": response.finish_reason,
    }


def response_from_data(data: dict, *, cached: bool = False) -> Response:
    """The inverse of :func:`response_to_data`; raises EngineError on a malformed dict.

    >>> response_from_data(response_to_data(Response("hi")), cached=True).cached
    True
    """
    try:
        usage = data["usage"]
        fields = (data["text"], data["model"], data["finish_reason"])
        numbers = (usage["prompt_tokens"], usage["completion_tokens"], usage["latency_s"])
    except (KeyError, TypeError) as exc:
        raise EngineError(f"cached response lacks field {exc}") from None
    if not all(isinstance(f, str) for f in fields) or not all(isinstance(n, (int, float)) for n in numbers):
        raise EngineError("cached response has a field of the wrong type")
    return Response(
        text=fields[0],
        usage=Usage(prompt_tokens=numbers[0], completion_tokens=numbers[1], latency_s=float(numbers[2])),
        model=fields[1],
        finish_reason=fields[2],
        cached=cached,
    )


def describe(request: Request, model: str, key: str) -> str:
    """A one-line description of a request for error messages.

    >>> describe(Request(messages=(("user", "hello"),)), "m", "ab" * 32)
    "forward request to model 'm' (last user message 'hello', key abababababab…)"
    """
    last = request.messages[-1] if request.messages else None
    text = "no messages" if last is None else f"last {last.role} message {last.content[:60]!r}"
    return f"{request.role} request to model {model!r} ({text}, key {key[:12]}…)"


class CachedEngine:
    """Answers from ``directory`` when it can, else from ``inner`` (and stores the answer).

    Hits come back with ``cached=True``. ``replay=True`` never calls a model (``inner``
    may be None): a miss raises CacheMiss naming the request. ``model`` is the model id
    used in keys when a request names none; it defaults to ``inner.model`` and is
    required when ``inner`` is None. ``identity`` names the server (see the module
    docs); it defaults to ``inner.identity`` ("" for engines without one, e.g. scripted
    ones) and must be given to replay a server's answers. Identical requests in flight
    at the same time are sent once; the others wait and get the answer as a cache hit.
    """

    def __init__(
        self, inner: Engine | None, directory: str | os.PathLike, *, replay: bool = False, model: str | None = None,
        identity: str | None = None,
    ):
        if inner is None and not replay:
            raise EngineError("CachedEngine(inner=None) can only replay; pass replay=True or an engine to call on misses")
        model = model if model is not None else getattr(inner, "model", None)
        if model is None:
            raise EngineError(
                "CachedEngine needs model=, the model id the cache was recorded with (e.g. the name given to serve() "
                "or OpenAIEngine), because the inner engine has no .model"
            )
        self.inner = inner
        self.model = model
        self.identity = identity if identity is not None else getattr(inner, "identity", "")
        self.replay = replay
        self.directory = Path(directory)
        self.concurrency = inner.concurrency if inner is not None else 64
        self._lock = threading.Lock()
        self._inflight: dict[str, concurrent.futures.Future] = {}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineError(f"cannot create cache directory {self.directory}: {exc.strerror}; pass a writable directory") from None

    def __repr__(self) -> str:
        return f"CachedEngine({self.inner!r}, {str(self.directory)!r}, replay={self.replay})"

    def key(self, request: Request) -> str:
        """The hex sha256 naming ``request``'s entry."""
        model = request.model or self.model
        server = b"\0" + self.identity.encode() if self.identity else b""
        return hashlib.sha256(request.key() + b"\0" + model.encode() + server).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def lookup(self, request: Request) -> Response | None:
        """The cached answer to ``request`` (``cached=True``), or None; never calls a model."""
        key = self.key(request)
        path = self.path(key)
        try:
            data = orjson.loads(path.read_bytes())
            if data.get("format") != FORMAT or data.get("key") != key:
                raise EngineError("wrong format or key")
            return response_from_data(data["response"], cached=True)
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError, EngineError, AttributeError, KeyError) as exc:
            log.warning("cache entry %s is unreadable (%s); treating it as a miss", path, exc)
            return None

    def store(self, request: Request, response: Response) -> None:
        """Write ``response`` as the entry of ``request`` (atomically: temp file + rename)."""
        key = self.key(request)
        entry = {
            "format": FORMAT,
            "key": key,
            "model": request.model or self.model,
            "server": self.identity,
            "request": request.key_data(),
            "response": response_to_data(response),
        }
        try:
            payload = orjson.dumps(entry)
        except orjson.JSONEncodeError as exc:
            log.warning("answer to %s is not storable as JSON (%s); not cached", describe(request, self.model, key), exc)
            return
        path = self.path(key)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, payload)

    def _miss(self, request: Request) -> CacheMiss:
        key = self.key(request)
        return CacheMiss(
            f"replay found no cached answer for {describe(request, request.model or self.model, key)} in {self.directory}; "
            "record it by running once without replay=True, or check that prompts, sampling and model match the recorded run"
        )

    def _lead(self, request: Request) -> tuple[concurrent.futures.Future, bool]:
        key = self.key(request)
        with self._lock:
            future = self._inflight.get(key)
            if future is not None:
                return future, False
            future = self._inflight[key] = concurrent.futures.Future()
            return future, True

    def _finish(self, request: Request, future: concurrent.futures.Future, response: Response | None, error: BaseException | None):
        with self._lock:
            del self._inflight[self.key(request)]
        if error is None:
            future.set_result(response)
        elif isinstance(error, Exception):
            future.set_exception(error)
        else:
            future.set_exception(EngineError(f"the identical in-flight request was interrupted ({type(error).__name__}); retry it"))

    def complete(self, request: Request) -> Response:
        """The cached answer, else the inner engine's (stored on the way out)."""
        hit = self.lookup(request)
        if hit is not None:
            return hit
        if self.replay:
            raise self._miss(request)
        future, leader = self._lead(request)
        if not leader:
            return attrs.evolve(future.result(), cached=True)
        response, error = None, None
        try:
            response = self.lookup(request) or self.inner.complete(request)
            if not response.cached:
                self.store(request, response)
            return response
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(request, future, response, error)
