"""LLM-as-judge vs exact match on arithmetic outputs, and what the judge costs per example.

Run from the repo root (about 40 minutes on 2 idle CPU cores with the 1.5B model)::

    python benchmarks/judge_agreement.py [--model qwen2.5-coder-1.5b --n 100]

The task model answers ``--n`` arithmetic test problems with the task's own pipeline
and starting prompts (reasoning allowed, 256-token cap: a mix of right and wrong
answers); the judge (same model) grades each raw reply against the reference with
the rubric below. It prints how
often the judge's verdict (score >= the scale midpoint) agrees with exact match,
the confusion counts, judge failures, and the judge's tokens and seconds per example
(call latency as measured when the answer was made; answers are cached, so a rerun
continues where an interrupted one stopped).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funcgrad import Judge, run_batch  # noqa: E402
from funcgrad.engines.cache import CachedEngine  # noqa: E402
from funcgrad.engines.local import cache_root, serve  # noqa: E402
from funcgrad.engines.meter import MeteredEngine  # noqa: E402
from funcgrad.engines.pool import worker_pool  # noqa: E402
from funcgrad.tasks import load_task  # noqa: E402
from funcgrad.tasks.parsing import integer_loss  # noqa: E402

RUBRIC = (
    "Compare the final number in the answer with the reference number. "
    "If they are equal, the score is 5. If they differ, the score is 1."
)


def _progress(r) -> None:
    """One line per finished example (flushed), so a partial run still gives figures."""
    exact = integer_loss(r.output, r.example).score == 1.0 if r.output is not None else None
    record = r.trace.records[-1]
    judged = None if r.failed else r.loss.score >= 0.5
    print(f"example {r.example.id} exact={exact} judge={judged} judge_tokens={record.usage.prompt_tokens}+"
          f"{record.usage.completion_tokens} judge_s={record.usage.latency_s:.2f} target={r.example.target} "
          f"raw={(r.output or {}).get('raw')!r} reply={record.output.get('reply')!r}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    task = load_task("arithmetic", seed=args.seed, n_train=0, n_val=0, n_test=args.n)
    judge = Judge(RUBRIC, scale=(1, 5), output_key="raw")
    with serve(args.model, n_ctx=4096, n_parallel=2) as local:
        engine = MeteredEngine(CachedEngine(local, cache_root() / "llm"))  # a rerun continues where it stopped
        started = time.monotonic()
        with worker_pool(engine.concurrency) as pool:
            results = run_batch(task.pipeline, task.state, task.test, engine=engine, loss=judge, executor=pool,
                                on_result=_progress, max_failure_rate=1.0)
        wall = time.monotonic() - started
    report = engine.meter.report()
    judged = [r for r in results if not r.failed]
    agree = sum((r.loss.score >= 0.5) == (integer_loss(r.output, r.example).score == 1.0) for r in judged)
    table = {(j, e): 0 for j in (True, False) for e in (True, False)}
    for r in judged:
        table[r.loss.score >= 0.5, integer_loss(r.output, r.example).score == 1.0] += 1
    records = [r.trace.records[-1] for r in results]
    prompt = sum(rec.usage.prompt_tokens for rec in records) / len(records)
    completion = sum(rec.usage.completion_tokens for rec in records) / len(records)
    seconds = sum(rec.usage.latency_s for rec in records) / len(records)
    print(f"model {args.model}, {len(results)} arithmetic test examples (seed {args.seed}), the task's starting prompts")
    print(f"exact match accuracy {(table[True, True] + table[False, True]) / max(1, len(judged)):.2f}")
    print(f"judge failures (unreadable reply or failed call): {len(results) - len(judged)}")
    print(f"agreement judge vs exact match: {agree}/{len(judged)} = {agree / max(1, len(judged)):.2f}")
    print(f"  judge pass & exact right {table[True, True]}, judge pass & exact wrong {table[True, False]}, "
          f"judge fail & exact right {table[False, True]}, judge fail & exact wrong {table[False, False]}")
    print(f"judge cost per example: {prompt:.0f} prompt + {completion:.1f} completion tokens, {seconds:.2f} s (call latency)")
    print(f"calls by role: {report.by_role()}; tokens by role: {report.by_role('tokens')}; wall {wall:.0f} s")
    for r in judged:
        if (r.loss.score >= 0.5) != (integer_loss(r.output, r.example).score == 1.0):
            print(f"  disagree {r.example.id}: target {r.example.target}, raw {r.output['raw']!r}, "
                  f"judge {r.trace.records[-1].output['reply']!r}")


if __name__ == "__main__":
    main()
