"""An engine for any OpenAI-compatible ``/v1/chat/completions`` server.

Hosted APIs, vLLM, Ollama and llama.cpp all speak this protocol. The engine keeps a
pooled HTTP client, bounds the calls in flight to ``concurrency`` and retries
transient failures (429, 5xx, timeouts, dropped connections, garbled bodies) with
exponential backoff and jitter, within a total ``deadline`` per call.

Failures retries cannot fix raise at once: a rejected key or an unknown model/URL
(401, 403, 404) and a server still unreachable after the retries raise
:class:`~funcgrad.core.errors.EngineUnavailable` (no call can succeed: the run stops);
a rejected request (400, e.g. a prompt over the context window) raises
:class:`~funcgrad.core.errors.EngineError` for that call alone.

>>> engine = OpenAIEngine("gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="sk-x")
>>> engine
OpenAIEngine(model='gpt-4o-mini', base_url='http://127.0.0.1:9/v1', api_key=<set>, concurrency=8)
>>> engine.close()

The API key is only ever put in the ``Authorization`` header: it is not in the
repr, not in error messages (a server echoing it back is redacted), and never part
of a cache key.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable

import attrs
import httpx
import orjson

from funcgrad.core.calls import Request, Response, Usage
from funcgrad.core.errors import EngineError, EngineUnavailable
from funcgrad.core.seeds import derive_seed

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 429})
UNAVAILABLE_STATUSES = frozenset({401, 403, 404})
SNIPPET = 300


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry a failed call.

    Attempt ``k`` (1-based) that failed transiently waits
    ``min(max_delay, base_delay * 2**(k-1))``, scaled by a random factor in
    ``[1 - jitter, 1]``; a ``Retry-After`` header (seconds or an HTTP date) is
    honoured when longer (capped at ``max_delay``). A garbled 200 answer (not JSON, no choices, no
    content) is retried at most ``malformed_attempts`` times in total, because a
    server that keeps answering garbage is misconfigured rather than glitching.

    >>> RetryPolicy(base_delay=1.0, jitter=0.0).delay(3)
    4.0
    >>> RetryPolicy(max_delay=5.0, jitter=0.0).delay(1, retry_after=60)
    5.0
    """

    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    base_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0), attrs.validators.le(1)])
    malformed_attempts: int = attrs.field(default=2, validator=attrs.validators.ge(1))

    def delay(self, attempt: int, retry_after: float | None = None, rand: Callable[[], float] = lambda: 1.0) -> float:
        """Seconds to wait after failed attempt ``attempt``; ``rand()`` is a uniform draw in [0, 1)."""
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        backoff *= 1.0 - self.jitter * rand()
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.max_delay))
        return backoff


def sample_seed(seed: int | None, sample: int) -> int | None:
    """The seed sent for sample ``sample``: sample 0 keeps ``seed``, later samples derive a new one.

    >>> sample_seed(7, 0), sample_seed(7, 1) != sample_seed(7, 2), sample_seed(None, 3)
    (7, True, None)
    """
    if seed is None or sample == 0:
        return seed
    return derive_seed(seed, sample)


def request_body(request: Request, model: str) -> bytes:
    """The JSON body of ``/chat/completions`` for ``request`` (``model`` when the request names none).

    >>> orjson.loads(request_body(Request(messages=(("user", "hi"),), max_tokens=4), "m"))["max_tokens"]
    4
    """
    body: dict = {
        "model": request.model or model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "n": 1,
    }
    seed = sample_seed(request.seed, request.sample)
    if seed is not None:
        body["seed"] = seed
    if request.stop:
        body["stop"] = list(request.stop)
    if request.json_schema is not None:
        try:
            schema = orjson.loads(request.json_schema)
        except orjson.JSONDecodeError as exc:
            raise EngineError(f"Request.json_schema is not valid JSON ({exc}); pass a JSON Schema document as a str") from None
        # strict=False: hosted OpenAI's strict mode rejects schemas with optional keys or
        # maxLength (ours use both); llama.cpp and vLLM enforce the schema either way.
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": False}}
    return orjson.dumps(body)


class _Malformed(Exception):
    """A 200 answer whose body is not a usable chat completion."""


def parse_completion(content: bytes, model: str) -> tuple[str, Usage, str, str]:
    """(text, usage, model, finish_reason) from a chat completion body; raises _Malformed."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise _Malformed("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _Malformed("the body is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _Malformed("the body has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, str):
        raise _Malformed("choices[0].message.content is missing or not a string")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    prompt_tokens, completion_tokens = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
        raise _Malformed("usage token counts are not integers")
    finish = choice.get("finish_reason")
    answered_model = body.get("model")
    return (
        text,
        Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        answered_model if isinstance(answered_model, str) and answered_model else model,
        finish if isinstance(finish, str) else "",
    )


def _server_message(content: bytes) -> str:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    return content.decode("utf-8", "replace")


def _hint(status: int) -> str:
    if status in (401, 403):
        return "check the API key (api_key=, or the variable it came from: [engine] api_key_env or OPENAI_API_KEY) and its permissions"
    if status == 404:
        return "check the model name and base_url (it usually ends in /v1)"
    return "check the request parameters against what this server supports"


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: a number of seconds or an HTTP date (``now``: Unix time).

    >>> retry_after("3", 0.0), retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4.0), retry_after("soon", 0.0)
    (3.0, 6.0, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now) if when.tzinfo is not None else None


def _without_credentials(url: str) -> str:
    """``url`` without any ``user:password@`` part (identities go into cache entries).

    >>> _without_credentials("https://u:secret@host/v1")
    'https://host/v1'
    """
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class _Deadline(Exception):
    """Private: an attempt ran into the call's total deadline."""


class _Call:
    """The retry state of one request: turns each attempt's outcome into a Response, a delay, or an error."""

    def __init__(self, engine: OpenAIEngine, request: Request):
        self.engine = engine
        self.model = request.model or engine.model
        self.attempt = 0
        self.malformed = 0
        self.started = engine._clock()

    def _where(self) -> str:
        return f"{self.engine.base_url} (model {self.model!r})"

    def remaining(self) -> float:
        """Seconds left before the call's total deadline (inf without one)."""
        deadline = self.engine.deadline
        return float("inf") if deadline is None else deadline - (self.engine._clock() - self.started)

    def _retry_or_raise(
        self, problem: str, retry_after: float | None = None, give_up: bool = False, error: type[EngineError] = EngineError
    ) -> float:
        policy = self.engine.retry
        delay = 0.0 if give_up else policy.delay(self.attempt, retry_after, self.engine._random)
        out_of_time = delay >= self.remaining()
        if give_up or out_of_time or self.attempt >= policy.max_attempts:
            limit = f" (the call's deadline={self.engine.deadline}s leaves no time for another)" if out_of_time and not give_up else ""
            raise error(
                f"{self._where()} failed after {self.attempt} attempts{limit}: {self.engine._redact(problem)}; "
                "check that the server is up and not overloaded, or raise [engine] retries / timeout / deadline"
            )
        return delay

    def failed(self, exc: Exception) -> float:
        """Delay before the next attempt after a transport error (timeout, deadline, reset, refused)."""
        self.attempt += 1
        if isinstance(exc, _Deadline):
            return self._retry_or_raise(f"no complete answer within deadline={self.engine.deadline}s", give_up=True)
        if isinstance(exc, httpx.TimeoutException) and self.remaining() <= 0:  # the read was cut to the call's deadline
            return self._retry_or_raise(f"no complete answer within deadline={self.engine.deadline}s", give_up=True)
        if isinstance(exc, httpx.TimeoutException):
            return self._retry_or_raise(f"no answer within timeout={self.engine.timeout}s ({type(exc).__name__})")
        if isinstance(exc, httpx.TransportError):
            # still unreachable after the retries: the server is gone, no later call will fare better
            return self._retry_or_raise(f"connection error ({type(exc).__name__}: {exc})", error=EngineUnavailable)
        raise EngineError(f"{self._where()}: HTTP client error {type(exc).__name__}: {self.engine._redact(str(exc))}")

    def answered(self, response: httpx.Response) -> Response | float:
        """The Response of a usable answer, else the delay before the next attempt (or EngineError)."""
        self.attempt += 1
        status = response.status_code
        if status == 200:
            try:
                text, usage, model, finish = parse_completion(response.content, self.model)
            except _Malformed as exc:
                self.malformed += 1
                snippet = response.content[:SNIPPET].decode("utf-8", "replace")
                problem = f"unusable answer: {exc}; body starts {snippet!r}"
                return self._retry_or_raise(problem, give_up=self.malformed >= self.engine.retry.malformed_attempts)
            latency = self.engine._clock() - self.started
            usage = attrs.evolve(usage, latency_s=latency)
            return Response(text=text, usage=usage, model=model, finish_reason=finish)
        message = _server_message(response.content)[:SNIPPET]
        problem = f"HTTP {status}: {message}"
        if status in RETRY_STATUSES or status >= 500:
            return self._retry_or_raise(problem, retry_after(response.headers.get("retry-after"), self.engine._wall()))
        error = EngineUnavailable if status in UNAVAILABLE_STATUSES else EngineError
        raise error(f"{self._where()} answered {self.engine._redact(problem)}; {_hint(status)}")


class OpenAIEngine:
    """An engine calling ``{base_url}/chat/completions`` of an OpenAI-compatible server.

    ``base_url`` and ``api_key`` default to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``
    (pass ``api_key=""`` to send no key at all). ``concurrency`` bounds the calls in
    flight, for ``complete`` across threads and for ``acomplete`` within an event loop.
    ``timeout`` bounds each read; ``deadline`` (seconds, None = none) bounds the whole
    call, retries and a server trickling its answer included. ``identity`` names the
    server in cache keys (default: ``base_url``), so two servers serving the same model
    name never share answers.
    ``sleep``/``async_sleep``/``clock``/``rand`` are injectable for fast tests.
    Usage.latency_s is the wall time of the whole call, retries included.
    Use it as a context manager, or call :meth:`close` (and :meth:`aclose` after async use).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        deadline: float | None = None,
        concurrency: int = 8,
        retry: RetryPolicy = RetryPolicy(),
        identity: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], object] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
    ):
        base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise EngineError(f"base_url {base_url!r} must start with http:// or https://, e.g. http://127.0.0.1:8080/v1")
        if concurrency < 1:
            raise EngineError(f"concurrency={concurrency} must be >= 1")
        if deadline is not None and not deadline > 0:
            raise EngineError(f"deadline={deadline!r} must be > 0 seconds (or None for no deadline)")
        self.model = model
        self.base_url = base_url
        self.identity = _without_credentials(base_url) if identity is None else identity
        self.timeout = timeout
        self.deadline = deadline
        self.concurrency = concurrency
        self.retry = retry
        self._api_key = os.environ.get("OPENAI_API_KEY", "") if api_key is None else api_key
        self._sleep, self._async_sleep, self._clock = sleep, async_sleep, clock
        self._wall = time.time
        self._random = rand or random.Random().random
        self._url = f"{base_url}/chat/completions"
        self._limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.Client(timeout=timeout, limits=self._limits, headers=self._headers())
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._async: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient, asyncio.Semaphore] | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return headers

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "<api key>") if self._api_key else text

    def __repr__(self) -> str:
        key = "<set>" if self._api_key else "None"
        return f"OpenAIEngine(model={self.model!r}, base_url={self.base_url!r}, api_key={key}, concurrency={self.concurrency})"

    def complete(self, request: Request) -> Response:
        """Send ``request`` and return the answer, retrying transient failures (thread-safe)."""
        body = request_body(request, self.model)
        call = _Call(self, request)
        while True:
            try:
                with self._slots:
                    answer = self._post(body, call)
            except (httpx.HTTPError, _Deadline) as exc:
                outcome = call.failed(exc)
            else:
                outcome = call.answered(answer)
            if isinstance(outcome, Response):
                return outcome
            self._sleep(outcome)

    def _post(self, body: bytes, call: _Call) -> httpx.Response:
        """One attempt, read as a stream so the call's deadline also cuts a server trickling bytes."""
        remaining = call.remaining()
        timeout = httpx.Timeout(self.timeout if remaining == float("inf") else max(0.001, min(self.timeout, remaining)))
        with self._client.stream("POST", self._url, content=body, timeout=timeout) as response:
            chunks = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if call.remaining() <= 0:
                    raise _Deadline()
        headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-encoding", "content-length")]
        return httpx.Response(response.status_code, headers=headers, content=b"".join(chunks))

    def _async_state(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._async is None or self._async[0] is not loop:
                client = httpx.AsyncClient(timeout=self.timeout, limits=self._limits, headers=self._headers())
                self._async = (loop, client, asyncio.Semaphore(self.concurrency))
            return self._async[1], self._async[2]

    async def acomplete(self, request: Request) -> Response:
        """Async :meth:`complete`. The async client belongs to the event loop that first used it."""
        body = request_body(request, self.model)
        client, slots = self._async_state()
        call = _Call(self, request)
        while True:
            try:
                async with slots:
                    remaining = call.remaining()
                    if remaining == float("inf"):
                        answer = await client.post(self._url, content=body)
                    else:
                        answer = await asyncio.wait_for(client.post(self._url, content=body), max(0.001, remaining))
            except asyncio.TimeoutError:
                outcome = call.failed(_Deadline())
            except httpx.HTTPError as exc:
                outcome = call.failed(exc)
            else:
                outcome = call.answered(answer)
            if isinstance(outcome, Response):
                return outcome
            await self._async_sleep(outcome)

    def close(self) -> None:
        """Close the pooled connections (the sync client; see :meth:`aclose` for the async one)."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the sync client and the async client of the running event loop."""
        self.close()
        with self._lock:
            state, self._async = self._async, None
        if state is not None:
            await state[1].aclose()

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    async def __aenter__(self) -> OpenAIEngine:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()
