"""A funcgrad StubServer in its own process, for the peer overhead benchmark.

Prints ``{"base_url": ...}``; then each line ``take`` on stdin prints
``{"requests": n, "request_bytes": b, "paths": {...}, "last_body": {...}}`` for the requests seen since the
previous ``take``; it stops when stdin closes.

Answers: a request whose system message carries DSPy's field markers gets DSPy's
chat-adapter format (``[[ ## answer ## ]]``), so DSPy parses it at the first try and
makes no fallback call; every other request gets ``Answer: 4``. The work per answer
is the same and tiny either way.
"""

from __future__ import annotations

import json
import sys
import threading

import orjson

from funcgrad.engines.stub import StubServer


def respond(body: dict) -> str:
    text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    if "[[ ## answer ## ]]" in text:
        return "[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"
    return "Answer: 4"


def main(argv: list[str]) -> None:
    latency = float(argv[argv.index("--latency") + 1]) if "--latency" in argv else 0.0
    with StubServer(respond, latency=latency) as server:
        lock, taken = threading.Lock(), 0
        sys.stdout.write(json.dumps({"base_url": server.base_url}) + "\n")
        sys.stdout.flush()
        for line in sys.stdin:
            if line.strip() != "take":
                continue
            with lock:
                seen = list(server.requests)
                new, taken = seen[taken:], len(seen)
            paths: dict[str, int] = {}
            for s in new:
                paths[s.path] = paths.get(s.path, 0) + 1
            size = sum(len(orjson.dumps(s.body)) if isinstance(s.body, dict) else len(s.body) for s in new)
            sample = new[-1].body if new and isinstance(new[-1].body, dict) else None
            report = {"requests": len(new), "request_bytes": size, "paths": paths, "last_body": sample}
            sys.stdout.write(json.dumps(report) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
