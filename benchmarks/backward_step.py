"""Wall time of one backprop step on 3 failing examples: calls one at a time vs. each batch in flight.

The same effect program (backprop's update on the same 3 failing object-counting
examples of the built-in task, seed 0) is driven twice against the embedded model
with 2 slots, each time on a freshly started server (cold: no answer cache, no KV
cache): once with ``concurrency=1`` — every call waits for the one before, as the
strategies did before they became effect programs — and once with the driver's
default, where each batch of the program (the examples' critiques, then the
params' optimizer calls) is in flight together. Prints both times and the ratio::

    python benchmarks/backward_step.py                 # qwen2.5-coder-1.5b, ~3 min on 2 cores
    python benchmarks/backward_step.py --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import time

import funcgrad as fg
from funcgrad.engines.local import serve
from funcgrad.strategies import backprop
from funcgrad.tasks import object_counting
from funcgrad.training.driver import drive


def failing_examples(task, engine, n=3):
    results = fg.run_batch(task.pipeline, task.state, task.train, engine=engine, loss=task.loss)
    failing = tuple(r for r in results if r.loss.score < 1.0)[:n]
    if len(failing) < n:
        raise SystemExit(f"only {len(failing)} failing training examples; need {n}")
    return failing


def one_step(model: str, results, task, concurrency: int | None) -> tuple[float, fg.StepTrace]:
    strategy = backprop()
    with serve(model, n_ctx=8192, n_parallel=2) as engine:
        t0 = time.perf_counter()
        done = drive(strategy.update(results, task.state, strategy.init(task.state), fg.StepContext()),
                     strategy="backprop", critic=engine, concurrency=concurrency)
        seconds = time.perf_counter() - t0
    update, _ = done.value
    trace = fg.StepTrace(1, 0, "backprop", tuple(r.example.id for r in results), done.calls, done.effects,
                         update.gradients, update.candidates)
    return seconds, fg.check_step_trace(trace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    args = parser.parse_args()
    task = object_counting(seed=0, n_train=12, n_val=4, n_test=4)
    with serve(args.model, n_ctx=8192, n_parallel=2) as engine:
        results = failing_examples(task, engine)
    print(f"model {args.model}, 2 slots; failing examples: {', '.join(r.example.id for r in results)}")
    serial, t_serial = one_step(args.model, results, task, concurrency=1)
    batched, t_batched = one_step(args.model, results, task, concurrency=None)
    for name, seconds, trace in (("one call at a time", serial, t_serial), ("batches in flight", batched, t_batched)):
        rounds = len({e.round for e in trace.effects})
        roles = [c.request.role for c in trace.calls]
        print(f"{name:>20}: {seconds:6.1f} s  ({len(roles)} calls: {roles.count('backward')} backward, "
              f"{roles.count('optimizer')} optimizer; {rounds} rounds)")
    print(f"ratio batched / serial: {batched / serial:.2f}")


if __name__ == "__main__":
    main()
