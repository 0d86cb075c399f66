"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

Answers come from ``respond(request_json) -> str``; faults can be injected per call.

>>> from funcgrad.engines.openai import OpenAIEngine
>>> from funcgrad.core.calls import Request
>>> with StubServer(lambda body: "pong") as stub, OpenAIEngine("m", base_url=stub.base_url, api_key="") as engine:
...     engine.complete(Request(messages=(("user", "ping"),))).text
'pong'

Fault names (``FAULTS``): ``429`` (with ``Retry-After``: ``retry_after`` seconds, or
any string such as an HTTP date), ``500``, ``400``, ``401``, ``403``, ``404``,
``context`` (400 "maximum context length exceeded", what servers answer to a prompt
over the window), ``reset`` (connection dropped with no answer), ``hang`` (no answer
until the server closes: use a short client timeout), ``trickle`` (a correct answer
sent one byte every ``trickle_s`` seconds: only a total deadline stops it),
``truncated`` (body shorter than its Content-Length), ``invalid_json``,
``empty_choices``, ``wrong_schema`` (JSON, but not a chat completion). Run ``python -m funcgrad.engines.stub --latency 0.05`` to serve from
another process: it prints ``{"base_url": ...}`` and stops when its stdin closes.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs
import orjson

from funcgrad.core.errors import EngineError

FAULTS = (
    "429", "500", "400", "401", "403", "404", "context", "reset", "hang", "trickle",
    "truncated", "invalid_json", "empty_choices", "wrong_schema",
)


@attrs.frozen
class Seen:
    """One request the stub received: path, headers (lower-case names) and parsed JSON body."""

    path: str
    headers: dict
    body: object


def echo(body: dict) -> str:
    """The default responder: the content of the last message.

    >>> echo({"messages": [{"role": "user", "content": "hi"}]})
    'hi'
    """
    return body["messages"][-1]["content"] if body.get("messages") else ""


def _words(text: str) -> int:
    return len(text.split())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _send(self, status: int, payload: bytes, headers: Sequence[tuple[str, str]] = (), length: int | None = None):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload) if length is None else length))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        stub = self.server.stub
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        index, fault = stub._record(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if not self.path.endswith("/chat/completions") or not isinstance(body, dict):
            return self._send(404, orjson.dumps({"error": {"message": f"no route {self.path}"}}))
        if stub.latency:
            stub._closing.wait(stub.latency)
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        if fault == "hang":
            stub._closing.wait()
            self.close_connection = True
            return None
        if fault in ("429", "500", "400", "401", "403", "404"):
            status = int(fault)
            headers = [("retry-after", str(stub.retry_after))] if status == 429 else []
            return self._send(status, orjson.dumps({"error": {"message": f"injected {status}", "type": "stub"}}), headers)
        if fault == "context":
            message = "This model's maximum context length is 4096 tokens; your request has 9000 (injected)"
            return self._send(400, orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}}))
        text = stub.respond(body)
        prompt = sum(_words(m.get("content", "")) for m in body.get("messages", []))
        completion = {
            "id": f"stub-{index}",
            "object": "chat.completion",
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": _words(text), "total_tokens": prompt + _words(text)},
        }
        if fault == "empty_choices":
            completion["choices"] = []
        elif fault == "wrong_schema":
            completion["choices"] = [{"index": 0, "text": 42}]
        payload = orjson.dumps(completion)
        if fault is None:
            with stub._lock:
                stub.answered += 1
        if fault == "invalid_json":
            payload = payload[: len(payload) // 2]
        if fault == "truncated":
            self.close_connection = True
            return self._send(200, payload[: len(payload) // 2], length=len(payload))
        if fault == "trickle":
            return self._trickle(payload, stub)
        return self._send(200, payload)

    def _trickle(self, payload: bytes, stub: StubServer) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.flush()
        for i in range(len(payload)):
            if stub._closing.wait(stub.trickle_s):
                break
            try:
                self.wfile.write(payload[i : i + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                break
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    stub: StubServer

    def handle_error(self, request, client_address):  # a client that hung up is not an error here
        pass


class StubServer:
    """A chat-completions server on 127.0.0.1 (a thread per connection); a context manager giving ``base_url``.

    ``faults`` is a sequence (call ``i`` gets ``faults[i]``, None or past the end = a
    normal answer) or a function ``(call_index, body) -> fault or None``. ``latency``
    seconds are waited before each answer. ``requests`` holds every request seen;
    ``answered`` counts the normal answers sent.
    """

    def __init__(
        self,
        respond: Callable[[dict], str] = echo,
        *,
        latency: float = 0.0,
        faults: Sequence[str | None] | Callable[[int, object], str | None] = (),
        retry_after: float | str = 0,
        trickle_s: float = 0.05,
    ):
        unknown = [] if callable(faults) else [f for f in faults if f is not None and f not in FAULTS]
        if unknown:
            raise EngineError(f"unknown stub faults {unknown}; use some of {', '.join(FAULTS)}")
        self.respond = respond
        self.latency = latency
        self.retry_after = retry_after
        self.trickle_s = trickle_s
        self.answered = 0
        self._faults = faults
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _record(self, seen: Seen) -> tuple[int, str | None]:
        with self._lock:
            index = len(self._seen)
            self._seen.append(seen)
        if callable(self._faults):
            return index, self._faults(index, seen.body)
        return index, self._faults[index] if index < len(self._faults) else None

    @property
    def requests(self) -> tuple[Seen, ...]:
        with self._lock:
            return tuple(self._seen)

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise EngineError("StubServer is not running; use it as a context manager or call start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self, port: int = 0) -> StubServer:
        """Listen on 127.0.0.1:``port`` (0 = a free port) in a background thread."""
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging answers are released."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def main(argv: Sequence[str]) -> None:
    """Serve echo answers with ``--latency S`` until stdin closes; print ``{"base_url": ...}`` first."""
    latency = float(argv[argv.index("--latency") + 1]) if "--latency" in argv else 0.0
    with StubServer(latency=latency) as stub:
        sys.stdout.write(orjson.dumps({"base_url": stub.base_url}).decode() + "\n")
        sys.stdout.flush()
        sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1:])
