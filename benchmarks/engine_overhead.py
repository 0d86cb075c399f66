"""Engine overhead: calls/s and framework CPU per call against a stub server in another process.

Run from the repo root: ``python benchmarks/engine_overhead.py [--calls 320 --concurrency 32 --latency 0.05]``.
The stub runs in a child process, so ``time.process_time()`` here is funcgrad + httpx only.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import math
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from funcgrad.engines.cache import CachedEngine  # noqa: E402
from funcgrad.core.calls import Request  # noqa: E402
from funcgrad.engines.meter import MeteredEngine  # noqa: E402
from funcgrad.engines.openai import OpenAIEngine  # noqa: E402


@contextmanager
def stub(latency: float):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "funcgrad.engines.stub", "--latency", str(latency)]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        yield orjson.loads(process.stdout.readline())["base_url"]
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def requests(n: int, tag: str) -> list[Request]:
    return [Request(messages=(("system", "be brief"), ("user", f"{tag} question {i}")), max_tokens=16) for i in range(n)]


def measure(label: str, engine, batch: list[Request], workers: int) -> float:
    wall, cpu = time.perf_counter(), time.process_time()
    if workers == 1:
        for r in batch:
            engine.complete(r)
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(engine.complete, batch))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<52} {len(batch) / wall:8.0f} calls/s  {cpu / len(batch) * 1e3:6.2f} ms CPU/call  ({wall:.2f} s)")
    return wall


async def gather(engine, batch):
    async with engine:
        await asyncio.gather(*(engine.acomplete(r) for r in batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=320)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    n, c = args.calls, args.concurrency

    print(f"# zero-latency stub, {n} sequential calls")
    with stub(0.0) as url:
        with OpenAIEngine("stub", base_url=url, api_key="") as engine:
            measure("warm-up", engine, requests(20, "warm"), 1)
            measure("OpenAIEngine", engine, requests(n, "plain"), 1)
            with tempfile.TemporaryDirectory() as cache:
                metered = MeteredEngine(CachedEngine(engine, cache))
                measure("Metered(Cached(OpenAIEngine)), cold cache", metered, requests(n, "cold"), 1)
                measure("Metered(Cached(OpenAIEngine)), warm cache (hits)", metered, requests(n, "cold"), 1)

    ideal = math.ceil(n / c) * args.latency
    print(f"\n# stub with {args.latency * 1e3:.0f} ms latency, {n} calls at concurrency {c}; ideal {ideal:.2f} s")
    with stub(args.latency) as url:
        with OpenAIEngine("stub", base_url=url, api_key="", concurrency=c) as engine:
            measure("warm-up", engine, requests(c, "warm"), c)
            wall = measure(f"OpenAIEngine.complete, {c} threads", engine, requests(n, "threads"), c)
            print(f"{'':<52} {ideal / wall:8.0%} of ideal throughput")
        engine = OpenAIEngine("stub", base_url=url, api_key="", concurrency=c)
        batch = requests(n, "async")
        started, cpu = time.perf_counter(), time.process_time()
        asyncio.run(gather(engine, batch))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"{'OpenAIEngine.acomplete, asyncio.gather':<52} {n / wall:8.0f} calls/s  {cpu / n * 1e3:6.2f} ms CPU/call  ({wall:.2f} s)")
        print(f"{'':<52} {ideal / wall:8.0%} of ideal throughput (includes client start-up)")


if __name__ == "__main__":
    main()
