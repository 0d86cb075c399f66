"""Soak: an evaluation through a server that fails a fifth of all calls transiently.

Run from the repo root::

    python benchmarks/soak.py                                   # 200 arithmetic problems, scripted answers
    python benchmarks/soak.py --model qwen2.5-coder-0.5b --examples 200   # the embedded model behind the faults

The same evaluation runs twice through :class:`~funcgrad.engines.openai.OpenAIEngine`
over real HTTP on 127.0.0.1: once against a clean server, once against one that
answers ``--fault-rate`` of all calls with a transient fault (500, 429, a reset
connection, a truncated body; drawn from a seeded hash of the request and its attempt
number, so the schedule does not depend on thread timing). With ``--model`` the
server is a fault-injecting proxy in front of the embedded llama.cpp model; without
it a script answers (correctly for two problems in three). No cache: every answer is
asked for. It prints calls, retries, failures, accuracy and wall time of both runs, and
exits non-zero unless the faulty run answered every example with the clean run's
accuracy.

With the default retry policy (5 attempts) a call fails for good only when all five
attempts draw a fault: p = rate**5 (0.00032 at 20 %), so about 6 % of 200-example runs
would meet one such call, and the run then stops with RunFailed instead of scoring it.
``--retries`` raises the attempts ([engine] retries in a config).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funcgrad.core.errors import RunFailed  # noqa: E402
from funcgrad.core.run import mean_score, run_batch  # noqa: E402
from funcgrad.engines.openai import OpenAIEngine, RetryPolicy  # noqa: E402
from funcgrad.engines.pool import worker_pool  # noqa: E402
from funcgrad.engines.stub import StubServer  # noqa: E402
from funcgrad.tasks.arithmetic import arithmetic  # noqa: E402

TRANSIENT = ("500", "429", "reset", "truncated")


class Faults:
    """A seeded fault schedule: attempt k of a request draws a fault with probability ``rate``."""

    def __init__(self, rate: float, seed: int):
        self.rate, self.seed = rate, seed
        self.attempts: Counter = Counter()
        self.injected: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, index: int, body) -> str | None:
        key = repr(body.get("messages")) if isinstance(body, dict) else repr(body)
        with self._lock:
            attempt = self.attempts[key]
            self.attempts[key] += 1
        digest = hashlib.sha256(f"{self.seed}:{attempt}:{key}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 >= self.rate:
            return None
        fault = TRANSIENT[digest[8] % len(TRANSIENT)]
        with self._lock:
            self.injected[fault] += 1
        return fault


def scripted(examples):
    """A responder that answers each problem right two times in three (by a hash of the problem), else off by one."""
    answers = {str(ex.x): int(ex.target) for ex in examples}

    def respond(body) -> str:
        user = body["messages"][-1]["content"]
        question = next(q for q in answers if q in user)
        wrong = hashlib.sha256(question.encode()).digest()[0] % 3 == 0
        return str(answers[question] + (1 if wrong else 0))

    return respond


def model_proxy(engine):
    """A responder asking the embedded model, once per distinct request.

    llama.cpp's parallel slots are not bit-reproducible, so the faulty run reuses the
    clean run's answers: any accuracy difference is then the fault handling's alone.
    """
    from funcgrad.core.calls import Request

    answers: dict[str, concurrent.futures.Future] = {}
    lock = threading.Lock()

    def respond(body) -> str:
        key = repr(body["messages"])
        with lock:  # a retried request waits for the model's first answer instead of asking again
            future, first = answers.get(key), key not in answers
            if first:
                future = answers[key] = concurrent.futures.Future()
        if first:
            request = Request(messages=[(m["role"], m["content"]) for m in body["messages"]],
                              max_tokens=body.get("max_tokens", 256), temperature=body.get("temperature", 0.0))
            future.set_result(engine.complete(request).text)
        return future.result()

    return respond


def evaluate(task, examples, server: StubServer, concurrency: int, retries: int, timeout: float) -> dict:
    engine = OpenAIEngine(
        "soak", base_url=server.base_url, api_key="", timeout=timeout, concurrency=concurrency,
        retry=RetryPolicy(max_attempts=retries + 1),
    )
    started = time.monotonic()
    try:
        with worker_pool(concurrency) as pool:
            results = run_batch(task.pipeline, task.state, examples, engine=engine, loss=task.loss, executor=pool)
        outcome = {"answered": sum(not r.failed for r in results), "accuracy": mean_score(results), "error": ""}
    except RunFailed as exc:
        outcome = {"answered": sum(not r.failed for r in exc.results), "accuracy": None, "error": str(exc)[:300]}
    finally:
        engine.close()
    outcome.update(wall_s=time.monotonic() - started, requests=len(server.requests), answers=server.answered)
    return outcome


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--fault-rate", type=float, default=0.2)
    ap.add_argument("--model", default="", help="an embedded model (e.g. qwen2.5-coder-0.5b) behind the faults; default: scripted answers")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--retries", type=int, default=4, help="retries after the first attempt (default policy: 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per read (CPU generation under load is slow)")
    args = ap.parse_args(argv)

    task = arithmetic(seed=args.seed, n_train=1, n_val=1, n_test=args.examples)
    examples = task.test
    with contextlib.ExitStack() as stack:
        if args.model:
            from funcgrad.engines.local import LocalServer

            local = stack.enter_context(LocalServer(args.model, n_parallel=min(args.concurrency, 4), threads=2)).engine
            respond = model_proxy(local)
        else:
            respond = scripted(examples)
        clean_server = stack.enter_context(StubServer(respond))
        clean = evaluate(task, examples, clean_server, args.concurrency, args.retries, args.timeout)
        faults = Faults(args.fault_rate, args.seed)
        faulty_server = stack.enter_context(StubServer(respond, faults=faults))
        faulty = evaluate(task, examples, faulty_server, args.concurrency, args.retries, args.timeout)

    source = f"embedded {args.model}" if args.model else "scripted answers"
    print(f"soak: {len(examples)} arithmetic problems, {source}, concurrency {args.concurrency}, "
          f"{args.retries + 1} attempts per call, fault rate {args.fault_rate:.0%} ({', '.join(TRANSIENT)})")
    print(f"{'run':8} {'answered':>9} {'accuracy':>9} {'HTTP requests':>14} {'retries':>8} {'wall s':>7}")
    for name, r in (("clean", clean), ("faulty", faulty)):
        acc = "failed" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        print(f"{name:8} {r['answered']:>9} {acc:>9} {r['requests']:>14} {r['requests'] - r['answers']:>8} {r['wall_s']:>7.1f}")
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.injected.items())))
    print(f"wall time faulty / clean: {faulty['wall_s'] / clean['wall_s']:.2f}x")
    held = faulty["answered"] == clean["answered"] == len(examples) and faulty["accuracy"] == clean["accuracy"]
    print("held: every example answered, same accuracy" if held else f"NOT held: {faulty['error'] or clean['error']}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
