"""A tiny counting HTTP proxy for an OpenAI-compatible server (runs in the driver's process).

Every POST is forwarded unchanged to ``upstream``; the proxy records, per request, the
role named by the ``x-fg-role`` header (``-`` if absent), the HTTP status, the usage
(prompt/completion tokens) the server reported and the latency. ``GET /_stats`` answers
the totals as JSON, so a worker can check a call budget at the server side, where no
framework can hide a call.

    with CountingProxy("http://127.0.0.1:8080/v1") as proxy:
        ... point clients at proxy.base_url ...
        proxy.stats()
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format, *args):
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/_stats"):
            return self._reply(200, json.dumps(self.server.proxy.stats()).encode())
        answer = self.server.proxy.client.get(self.server.proxy.upstream_root + self.path)
        return self._reply(answer.status_code, answer.content, answer.headers.get("content-type", "application/json"))

    def do_POST(self):
        proxy = self.server.proxy
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        role = self.headers.get("x-fg-role", "-")
        started = time.monotonic()
        try:
            answer = proxy.client.post(
                proxy.upstream_root + self.path, content=raw, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            proxy._record(role, 599, {}, time.monotonic() - started)
            return self._reply(502, json.dumps({"error": {"message": f"proxy: upstream failed: {exc}"}}).encode())
        usage = {}
        try:
            usage = json.loads(answer.content).get("usage") or {}
        except (ValueError, AttributeError):
            pass
        proxy._record(role, answer.status_code, usage, time.monotonic() - started)
        return self._reply(answer.status_code, answer.content, answer.headers.get("content-type", "application/json"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: CountingProxy


class CountingProxy:
    """Forward to ``upstream`` (a base URL ending in /v1); count calls and tokens per role."""

    def __init__(self, upstream: str, timeout: float = 900.0):
        upstream = upstream.rstrip("/")
        self.upstream_root = upstream[: -len("/v1")] if upstream.endswith("/v1") else upstream
        self.client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=64))
        self._lock = threading.Lock()
        self._rows: dict[str, dict] = {}
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _record(self, role: str, status: int, usage: dict, latency: float) -> None:
        with self._lock:
            row = self._rows.setdefault(role, {"calls": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0})
            if status == 200:
                row["calls"] += 1
                row["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
                row["completion_tokens"] += int(usage.get("completion_tokens") or 0)
            else:
                row["failed"] += 1
            row["latency_s"] += latency

    def stats(self) -> dict:
        with self._lock:
            rows = {k: dict(v) for k, v in self._rows.items()}
        total = {key: sum(r[key] for r in rows.values()) for key in ("calls", "failed", "prompt_tokens", "completion_tokens", "latency_s")}
        return {"by_role": rows, "total": total}

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.client.close()
