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
    python benchmarks/backward_step.py --stub-latency 2  # a latency-bound server (a hosted API)

With ``--stub-latency S`` the calls go over HTTP to the stub server of
:mod:`funcgrad.engines.stub`, which answers every call after S seconds without using
the CPU (as a hosted API or a GPU server with free slots does); its answers are
canned (a critique that names the miscount, and a ``<NEW_VALUE>`` reply), so the
program makes the same 3 backward + 2 optimizer calls and only the driving differs.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import funcgrad as fg
from funcgrad.engines.local import serve
from funcgrad.engines.openai import OpenAIEngine
from funcgrad.engines.stub import StubServer
from funcgrad.strategies import backprop
from funcgrad.tasks import object_counting
from funcgrad.training.driver import drive


def failing_examples(task, engine, n=3):
    results = fg.run_batch(task.pipeline, task.state, task.train, engine=engine, loss=task.loss)
    failing = tuple(r for r in results if r.loss.score < 1.0)[:n]
    if len(failing) < n:
        raise SystemExit(f"only {len(failing)} failing training examples; need {n}")
    return failing


def canned(body: dict) -> str:
    """The stub's answer: an optimizer reply when the prompt asks for a new value, else a critique."""
    prompt = body["messages"][-1]["content"]
    if "<NEW_VALUE>" in prompt:
        return "<NEW_VALUE>Count only the items of the asked category, then add them up.</NEW_VALUE>"
    return "The answer counted items of other categories; count only the asked category."


@contextlib.contextmanager
def engine_for(model: str, stub_latency: float | None, respond=canned):
    """A freshly started local server with 2 slots, or a stub answering ``respond(body)`` after ``stub_latency`` seconds."""
    if stub_latency is None:
        with serve(model, n_ctx=8192, n_parallel=2) as engine:
            yield engine
    else:
        with StubServer(respond, latency=stub_latency) as stub, OpenAIEngine("stub", base_url=stub.base_url, api_key="") as engine:
            yield engine


def one_step(model: str, results, task, concurrency: int | None, stub_latency: float | None) -> tuple[float, fg.StepTrace]:
    strategy = backprop()
    with engine_for(model, stub_latency) as engine:
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
    parser.add_argument("--stub-latency", type=float, default=None, metavar="S",
                        help="drive the step against a stub server answering after S seconds instead of the model")
    args = parser.parse_args()
    task = object_counting(seed=0, n_train=12, n_val=4, n_test=4)
    stub = args.stub_latency is not None
    with engine_for(args.model, 0.0 if stub else None, respond=lambda body: "0") as engine:  # the stub's task model answers 0
        results = failing_examples(task, engine)
    where = f"stub server, {args.stub_latency} s per answer" if stub else f"model {args.model}, 2 slots"
    print(f"{where}; failing examples: {', '.join(r.example.id for r in results)}")
    serial, t_serial = one_step(args.model, results, task, concurrency=1, stub_latency=args.stub_latency)
    batched, t_batched = one_step(args.model, results, task, concurrency=None, stub_latency=args.stub_latency)
    for name, seconds, trace in (("one call at a time", serial, t_serial), ("batches in flight", batched, t_batched)):
        rounds = len({e.round for e in trace.effects})
        roles = [c.request.role for c in trace.calls]
        print(f"{name:>20}: {seconds:6.1f} s  ({len(roles)} calls: {roles.count('backward')} backward, "
              f"{roles.count('optimizer')} optimizer; {rounds} rounds)")
    print(f"ratio batched / serial: {batched / serial:.2f}")


if __name__ == "__main__":
    main()
