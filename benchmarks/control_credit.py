"""How often the node that decided a loop's stop receives a gradient, per cell of a compare run.

Reads a finished (or partly finished) ``funcgrad compare`` run directory, e.g. the one of
``examples/compare_control.toml`` (backprop with and without control credit), and prints
one row per task and strategy, summed over seeds::

    python benchmarks/control_credit.py runs/compare_control

For every training example a step's backward pass walked (the ``train`` phase of
``traces.jsonl`` of a step with a step trace, answered examples only), the **stop decision** is the last record the
pipeline read for control (``Trace.control[-1]``: the review verdict that ended the review
rounds, the agent action that ended the turns); its **stop node** is the LLM record that
wrote it (the record itself, or the nearest LLM record up its data inputs). Columns:

- ``walked``: examples walked; ``failed``: those with a score below 1;
- ``stop node got a gradient``: failed examples in which the stop node's record received
  a gradient (``Gradient.record_id``) in that step's step trace;
- ``control-only stops``: failed examples whose stop decision reaches the output by no data
  edge (a review that confirmed: nothing consumed its verdict), and in how many of those the
  stop node got a gradient (only control credit can give it one);
- ``gradients``: all gradients of the cell's steps; ``critic calls``: their backward calls.
"""

from __future__ import annotations

import argparse
import collections
import pathlib

import orjson

from funcgrad.core.serialize import from_data
from funcgrad.core.trace import ancestors


def stop_node(trace) -> int | None:
    """The id of the LLM record that wrote the last value the pipeline read for control (None without reads)."""
    if not trace.control:
        return None
    record = trace[trace.control[-1]]
    while record.kind != "llm" and record.inputs:
        record = trace[record.inputs[0]]
    return record.id if record.kind == "llm" else None


def cell_counts(cell: pathlib.Path) -> collections.Counter:
    """The counts of one cell directory (an empty Counter before its first step)."""
    counts: collections.Counter = collections.Counter()
    steps = cell / "steps.jsonl"
    if not steps.exists():
        return counts
    grads: dict[int, list] = collections.defaultdict(list)
    calls: collections.Counter = collections.Counter()
    for line in steps.read_bytes().splitlines():
        st = from_data(orjson.loads(line))
        grads[st.step].extend(st.gradients)
        calls[st.step] += sum(c.request.role == "backward" for c in st.calls)
    counts["grads"] = sum(len(gs) for gs in grads.values())
    counts["critic calls"] = sum(calls.values())
    for line in (cell / "traces.jsonl").read_bytes().splitlines():
        row = orjson.loads(line)
        if row["phase"] != "train" or row["step"] not in grads:  # a step the budget stopped before its backward pass
            continue
        result = from_data(row["result"])
        if result.failed:
            continue
        counts["walked"] += 1
        if result.loss.score >= 1.0:
            continue
        counts["failed"] += 1
        stop = stop_node(result.trace)
        got = [g for g in grads[row["step"]] if g.example_id == result.example.id and g.record_id == stop]
        counts["stop got grad"] += bool(got)
        last = result.trace.control[-1] if result.trace.control else None
        if last is not None and result.trace.output is not None and last != result.trace.output \
                and last not in ancestors(result.trace, result.trace.output):
            counts["control-only"] += 1
            counts["control-only got grad"] += bool(got)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    args = parser.parse_args()
    rows: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    seeds: dict[tuple[str, str], int] = collections.Counter()
    for cell in sorted((args.run_dir / "cells").iterdir()):
        task, strategy, _ = cell.name.split("--")
        rows[task, strategy] += cell_counts(cell)
        seeds[task, strategy] += 1
    print("| task | strategy | seeds | walked | failed | stop node got a gradient | control-only stops (got a gradient) "
          "| gradients | critic calls |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (task, strategy), c in sorted(rows.items()):
        print(f"| {task} | {strategy} | {seeds[task, strategy]} | {c['walked']} | {c['failed']} | "
              f"{c['stop got grad']} | {c['control-only']} ({c['control-only got grad']}) | {c['grads']} | {c['critic calls']} |")


if __name__ == "__main__":
    main()
