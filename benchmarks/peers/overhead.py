"""Framework overhead of funcgrad vs TextGrad, DSPy and AdalFlow against one stub server.

Run from the repo root::

    python benchmarks/peers/overhead.py            # ~5 min; first run also builds the peer venvs
    python benchmarks/peers/overhead.py --repeat 1 --libs funcgrad,dspy

Every library evaluates the same trivial one-LLM-call pipeline (system prompt = the
object-counting task's starting prompt, user message = the question, integer parse,
exact match) on the same 200 questions, against the same OpenAI-compatible
``StubServer`` running in its own process (so the stub's CPU is not counted).
Each measurement is a fresh worker process (funcgrad: this Python; peers: their own
venvs under $FUNCGRAD_BENCH_DIR, default /tmp/funcgrad-peers) with an empty HOME, so no
cache is warm; a few warm-up examples (different questions) run before the clock starts.

(a) zero latency, concurrency 1: framework CPU per call = process CPU time of the
    client process (all threads) during the evaluation / calls, and the wall time;
(b) 50 ms latency: wall time at concurrency 1, 8, 32, using each library's own batch
    facility (funcgrad run_batch, dspy Evaluate(num_threads), AdalFlow
    AdalComponent.validation_step(num_workers); TextGrad has none: a thread pool).

The stub counts the requests it receives; a run whose count is not exactly
warm-up + 200 is flagged (a cache hit or a retry/fallback call). Figures are the
minimum over --repeat runs (the machine is shared). Results: results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import RESULTS, ROOT, ensure_venv, run_worker, stub, version  # noqa: E402

sys.path.insert(0, str(ROOT))
from funcgrad.core.run import Example  # noqa: E402
from funcgrad.tasks import load_task  # noqa: E402
from funcgrad.tasks.parsing import integer_loss  # noqa: E402

LIBS = ("funcgrad", "dspy", "adalflow", "textgrad")
DIST = {"funcgrad": "funcgrad", "dspy": "dspy", "adalflow": "adalflow", "textgrad": "textgrad"}


def task_data(n: int, warmup: int, path: Path) -> list:
    task = load_task("object_counting", seed=0, n_train=warmup, n_val=0, n_test=n)
    state = task.state
    rows = lambda exs: [{"id": e.id, "x": e.x, "target": e.target} for e in exs]  # noqa: E731
    data = {"system_prompt": state.render(state.resolve("count_system")), "warmup": rows(task.train), "eval": rows(task.test)}
    path.write_text(json.dumps(data))
    return list(task.test)


def rescore(outputs, examples: list[Example]) -> float | None:
    if outputs is None or len(outputs) != len(examples):
        return None
    return statistics.fmean(integer_loss({"answer": None, "raw": o} if o is None else _parsed(o), e).score for o, e in zip(outputs, examples))


def _parsed(text):
    from funcgrad.tasks.parsing import integer_answer

    return integer_answer(text)


def measure(lib: str, server, data: Path, concurrency: int, expected: int, examples) -> dict:
    server.take()  # reset the request counter
    result = run_worker(f"{lib}", f"overhead_{lib}.py", ["--base-url", server.base_url, "--data", str(data), "--concurrency", str(concurrency)])
    seen = server.take()
    result["server_requests"] = seen["requests"]
    result["request_bytes_per_call"] = seen["request_bytes"] / max(1, seen["requests"])
    result["calls_ok"] = seen["requests"] == expected
    result["paths"] = seen["paths"]
    result["last_request_body"] = seen["last_body"]
    result["accuracy_funcgrad_metric"] = rescore(result.get("outputs"), examples)
    result.pop("outputs", None)
    return result


def best(runs: list[dict]) -> dict:
    out = dict(min(runs, key=lambda r: r["wall_s"]))
    out["cpu_s"] = min(r["cpu_s"] for r in runs)
    out["walls"] = [round(r["wall_s"], 3) for r in runs]
    out["calls_ok"] = all(r["calls_ok"] for r in runs)
    return out


def fmt_ratio(fg: float, peer: float) -> str:
    return f"{fg / peer:.2f}" if peer else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--libs", default=",".join(LIBS))
    parser.add_argument("--out", default=str(RESULTS / "overhead.json"))
    args = parser.parse_args()
    libs = [lib for lib in args.libs.split(",") if lib]
    levels = [int(c) for c in args.concurrency.split(",")]
    expected = args.n + args.warmup

    versions = {}
    for lib in libs:
        python = Path(sys.executable) if lib == "funcgrad" else ensure_venv(lib)
        versions[lib] = version(python, DIST[lib])
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)

    zero: dict[str, list] = {lib: [] for lib in libs}
    lat: dict[tuple[str, int], list] = {(lib, c): [] for lib in libs for c in levels}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.json"
        examples = task_data(args.n, args.warmup, data)
        with stub(0.0) as server:
            for r in range(args.repeat):
                for lib in libs:  # interleaved, so drifting machine load hits every library alike
                    zero[lib].append(measure(lib, server, data, 1, expected, examples))
                    print(f"  zero latency  {lib:<9} run {r + 1}: {zero[lib][-1]['wall_s']:.2f} s wall, "
                          f"{zero[lib][-1]['cpu_s'] / args.n * 1e3:.2f} ms CPU/call, {zero[lib][-1]['server_requests']} requests", flush=True)
        with stub(args.latency) as server:
            for r in range(args.repeat):
                for c in levels:
                    for lib in libs:
                        lat[lib, c].append(measure(lib, server, data, c, expected, examples))
                        print(f"  {args.latency * 1e3:.0f} ms c={c:<3} {lib:<9} run {r + 1}: {lat[lib, c][-1]['wall_s']:.2f} s wall, "
                              f"{lat[lib, c][-1]['server_requests']} requests", flush=True)

    zero_b = {lib: best(zero[lib]) for lib in libs}
    lat_b = {(lib, c): best(lat[lib, c]) for lib in libs for c in levels}
    ms = args.latency * 1e3
    cols = ["CPU ms/call (0 ms)", f"wall {args.n} ex (0 ms)"] + [f"wall {ms:.0f} ms c={c}" for c in levels]

    def row(lib):
        z = zero_b[lib]
        return [z["cpu_s"] / args.n * 1e3, z["wall_s"]] + [lat_b[lib, c]["wall_s"] for c in levels]

    lines = [
        f"framework overhead, {args.n} examples, one LLM call each; min of {args.repeat} runs; stub in its own process",
        "",
        "| library | " + " | ".join(cols) + " | requests seen ok | bytes/request | import s |",
        "|---|" + "---|" * (len(cols) + 3),
    ]
    for lib in libs:
        ok = zero_b[lib]["calls_ok"] and all(lat_b[lib, c]["calls_ok"] for c in levels)
        values = row(lib)
        cells = [f"{values[0]:.2f}"] + [f"{v:.2f} s" for v in values[1:]]
        lines.append(f"| {lib} {versions[lib]} | " + " | ".join(cells) + f" | {'yes' if ok else 'NO'} | "
                     f"{zero_b[lib]['request_bytes_per_call']:.0f} | {zero_b[lib]['import_s']:.2f} |")
    if "funcgrad" in libs:
        fg = row("funcgrad")
        for lib in libs:
            if lib != "funcgrad":
                lines.append(f"| funcgrad / {lib} | " + " | ".join(fmt_ratio(a, b) for a, b in zip(fg, row(lib))) + " | | | |")
    ideal = [f"c={c}: {-(-args.n // c) * args.latency:.2f} s" for c in levels]
    lines += ["", f"ideal wall at {ms:.0f} ms (latency x ceil(n/c)): " + ", ".join(ideal)]
    lines.append("facilities: " + "; ".join(f"{lib}: {zero_b[lib]['facility']}" for lib in libs))
    acc = {lib: zero_b[lib].get("accuracy_funcgrad_metric") for lib in libs}
    lines.append("stub-answer accuracy re-scored with funcgrad's integer_loss (must be equal): " + ", ".join(f"{k} {v}" for k, v in acc.items()))
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "versions": versions, "n": args.n, "warmup": args.warmup, "latency_s": args.latency, "repeat": args.repeat,
        "zero_latency": zero_b, "latency": {f"{lib}@{c}": v for (lib, c), v in lat_b.items()},
        "table": table, "python": sys.version.split()[0],
    }, indent=1, default=str))


if __name__ == "__main__":
    main()
