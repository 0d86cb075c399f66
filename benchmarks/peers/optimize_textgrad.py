"""TextGrad (TGD) on object counting with the real embedded model, counted at the server.

Run from the repo root (one run: ~15-30 min on 2 CPU cores)::

    python benchmarks/peers/optimize_textgrad.py
    python benchmarks/peers/optimize_textgrad.py --config examples/compare_counting.toml

One llama.cpp server (funcgrad.engines.local.LocalServer, qwen2.5-coder-1.5b, n_parallel 2) is
started here, with a counting proxy (proxy.py) in front of it; TextGrad runs in its
own venv (worker ``workers/tgd_textgrad.py``) and talks only to the proxy, so every call
and token it spends is counted by the server side, per role (forward / backward /
optimizer / validation / test).

Same task as funcgrad's runs: ``load_task("object_counting", seed, n_train, n_val,
n_test)``; the starting system prompt is the task's instruction + format joined by a
blank line, the user message is the question, the metric is integer exact match (the
worker's parser is re-checked against funcgrad's); the minibatches are funcgrad's own
``batch_ids`` for the training seed. Settings come from ``--config`` (a funcgrad
optimize/compare TOML: [task], [train] steps/batch_size/seed, [budget] max_calls,
[engine] n_ctx) when given or when examples/compare_counting.toml exists, else from
the defaults below. The call budget covers everything, test evaluations included, as
funcgrad's meter does. Result: results/textgrad_counting.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import RESULTS, ROOT, ensure_venv, run_worker, version  # noqa: E402
from proxy import CountingProxy  # noqa: E402

sys.path.insert(0, str(ROOT))
from funcgrad.engines.local import LocalServer  # noqa: E402
from funcgrad.tasks import load_task  # noqa: E402
from funcgrad.tasks.parsing import integer_answer, integer_loss  # noqa: E402
from funcgrad.training.fit import FitSettings, batch_ids  # noqa: E402

DEFAULTS = {"seed": 0, "n_train": 9, "n_val": 8, "n_test": 20, "batch_size": 3, "steps": 3, "train_seed": 0,
            "max_calls": 150, "n_ctx": 8192, "model": "qwen2.5-coder-1.5b", "n_parallel": 2}
COMPARE = ROOT / "examples" / "compare_counting.toml"


def settings_from(config: Path | None) -> dict:
    s = dict(DEFAULTS)
    s["source"] = "defaults (seed 0, 9/8/20, batch 3, 3 steps, 150 calls)"
    if config is None:
        return s
    data = tomllib.loads(config.read_text())
    task = data.get("task", {})
    for key in ("object_counting", ):  # a compare config keeps task options under [tasks.<name>]
        task = {**task, **data.get("tasks", {}).get(key, {})}
    for key in ("seed", "n_train", "n_val", "n_test"):
        s[key] = task.get(key, s[key])
    train = data.get("train", {})
    s["batch_size"], s["steps"] = train.get("batch_size", s["batch_size"]), train.get("steps", s["steps"])
    seeds = data.get("grid", {}).get("seeds")
    s["train_seed"] = seeds[0] if seeds else train.get("seed", s["train_seed"])
    s["max_calls"] = data.get("budget", {}).get("max_calls", s["max_calls"])
    engine = data.get("engine", {})
    s["n_ctx"], s["model"] = engine.get("n_ctx", s["n_ctx"]), engine.get("model", s["model"])
    s["n_parallel"] = engine.get("concurrency", s["n_parallel"])
    s["source"] = str(config)
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--max-calls", type=int, default=None, help="override the budget")
    parser.add_argument("--forward-max-tokens", type=int, default=200)
    parser.add_argument("--backward-max-tokens", type=int, default=300)
    parser.add_argument("--optimizer-max-tokens", type=int, default=400)
    parser.add_argument("--base-url", default=None,
                        help="use this running OpenAI-compatible server (e.g. a stub, for a dry run) instead of starting the local model")
    parser.add_argument("--out", type=Path, default=RESULTS / "textgrad_counting.json")
    args = parser.parse_args()
    config = args.config or (COMPARE if COMPARE.exists() else None)
    s = settings_from(config)
    if args.max_calls:
        s["max_calls"] = args.max_calls
    print(f"settings ({s['source']}): {json.dumps({k: v for k, v in s.items() if k != 'source'})}", flush=True)

    task = load_task("object_counting", seed=s["seed"], n_train=s["n_train"], n_val=s["n_val"], n_test=s["n_test"])
    fit = FitSettings(batch_size=s["batch_size"], steps=s["steps"], seed=s["train_seed"])
    rows = lambda exs: [{"id": e.id, "x": e.x, "target": e.target} for e in exs]  # noqa: E731
    batches = [[rows(task.train)[i] for i in batch_ids(task.train, fit, step)] for step in range(s["steps"])]
    state = task.state
    data = {
        "system_prompt": state.render(state.resolve("count_system")),
        "train": rows(task.train), "val": rows(task.val), "test": rows(task.test), "batches": batches,
        "settings": {"max_calls": s["max_calls"], "steps": s["steps"]},
    }
    python = ensure_venv("textgrad")
    tg_version = version(python, "textgrad")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.json"
        path.write_text(json.dumps(data))
        server = LocalServer(s["model"], n_parallel=s["n_parallel"], n_ctx=s["n_ctx"])
        with server if args.base_url is None else contextlib.nullcontext():
            load_s = time.perf_counter() - started
            upstream = args.base_url or server.engine.base_url
            with CountingProxy(upstream) as proxy:
                try:
                    result = run_worker("textgrad", "tgd_textgrad.py", [
                        "--base-url", proxy.base_url, "--data", str(path), "--model", server.name,
                        "--concurrency", str(s["n_parallel"]),
                        "--forward-max-tokens", str(args.forward_max_tokens),
                        "--backward-max-tokens", str(args.backward_max_tokens),
                        "--optimizer-max-tokens", str(args.optimizer_max_tokens),
                    ], timeout=4 * 3600)
                    error = None
                except Exception as exc:  # report what TextGrad did before it failed
                    result, error = {}, str(exc)
                usage = proxy.stats()
    wall = time.perf_counter() - started
    for when in ("before", "after"):  # the worker's metric must agree with funcgrad's integer_loss
        outputs = result.get(f"test_outputs_{when}")
        if outputs:
            scores = [integer_loss(integer_answer(o), e).score for o, e in zip(outputs, task.test)]
            result[f"test_{when}_funcgrad_metric"] = sum(scores) / len(scores)
    out = {
        "textgrad_version": tg_version, "settings": s, "max_tokens": {
            "forward": args.forward_max_tokens, "backward": args.backward_max_tokens, "optimizer": args.optimizer_max_tokens},
        "usage": usage, "wall_s_total": wall, "model_load_s": load_s, "error": error,
        **{k: v for k, v in result.items() if k != "stderr_tail"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print()
    if error:
        print(f"TextGrad run FAILED: {error[-2000:]}")
    t = usage["total"]
    print(f"| TextGrad {tg_version} TGD | test before | test after | val before -> after | calls | prompt tok | completion tok | wall |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {s['model']} | {result.get('initial_test', float('nan')):.2f} | {result.get('final_test', float('nan')):.2f} | "
          f"{result.get('initial_val', float('nan')):.2f} -> {result.get('final_val', float('nan')):.2f} | {t['calls']} | "
          f"{t['prompt_tokens']} | {t['completion_tokens']} | {result.get('wall_s', 0) / 60:.1f} min |")
    print("\ncalls by role: " + ", ".join(f"{k} {v['calls']} ({v['prompt_tokens']}+{v['completion_tokens']} tok, failed {v['failed']})"
                                          for k, v in sorted(usage["by_role"].items())))
    for step in result.get("steps", []):
        print(f"step {step['step']}: batch acc {step['batch_acc']:.2f}, val {step.get('val_acc', '-')}, accepted {step['accepted']}"
              + (f", optimizer error: {step['optimizer_error'][:200]!r}" if "optimizer_error" in step else ""))
    print(f"test accuracy re-scored with funcgrad's integer_loss: before {result.get('test_before_funcgrad_metric')}, "
          f"after {result.get('test_after_funcgrad_metric')}")
    print(f"stopped: {result.get('stopped')}")
    print(f"final prompt: {result.get('final_prompt')!r}")
    print(f"(results in {args.out})")


if __name__ == "__main__":
    main()
