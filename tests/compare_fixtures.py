"""A comparison grid's results.json without running any cell: seeded summaries through analyse()."""

import random
from pathlib import Path

import orjson

from funcgrad.cli.compare import _json, analyse

RLO_LABEL = "\u202eevil\u202c_whole_trace"  # a right-to-left override in a strategy label
SCRIPT_LABEL = "<script>document.title='pwned'</script>gepa"


def summary(task: str, strategy: str, seed: int, gain: float, n: int = 40) -> dict:
    """One cell's run_cell output: ``n`` test examples, each won with probability ``gain`` over a 30 % start."""
    rng = random.Random(f"{task}/{strategy}/{seed}")
    ids = [f"t{i}" for i in range(n)]
    before = {i: float(rng.random() < 0.3) for i in ids}
    after = {i: 1.0 if before[i] or rng.random() < gain else 0.0 for i in ids}
    curve = [[0, 0.3]]
    for step in range(1, 5):
        curve.append([step, min(1.0, curve[-1][1] + (0.1 if rng.random() < gain * 2 else 0.0))])
    usage = {"format": "funcgrad.usage/1", "rows": [
        {"role": "forward", "model": "m", "calls": 60 + seed, "prompt_tokens": 9000, "completion_tokens": 800},
        {"role": "backward", "model": "m", "calls": 12, "prompt_tokens": 4000, "completion_tokens": 1200},
        {"role": "evaluation", "model": "m", "calls": 2 * n, "prompt_tokens": 6000, "completion_tokens": 500}]}
    return {
        "task": task, "strategy": strategy, "seed": seed, "test_ids": ids,
        "initial_test": sum(before.values()) / n, "final_test": sum(after.values()) / n, "stopped": "done", "steps": 4,
        "accepted": 2, "usage": usage, "wall_s": 12.5 + seed, "before": before, "after": after, "val_curve": curve,
    }


def write_grid(root: Path, strategies=(("backprop", 0.25), (RLO_LABEL, 0.02), (SCRIPT_LABEL, 0.1)), seeds=(0, 1, 2),
               tasks=("object_counting",)) -> Path:
    """``root/results.json`` of a grid with the given ``(strategy, gain)`` arms; returns ``root``."""
    summaries = [summary(t, s, seed, gain) for t in tasks for s, gain in strategies for seed in seeds]
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_bytes(_json(analyse(summaries)))
    return root


def load(root: Path) -> dict:
    return orjson.loads((root / "results.json").read_bytes())
