"""TextGrad's textual gradient descent (TGD) on the object-counting system prompt (runs in the TextGrad venv).

Follows TextGrad's own prompt-optimization recipe (examples/scripts/prompt_optimization.py
in its repository): BlackboxLLM(system_prompt Variable) -> StringBasedFunction metric ->
tg.sum(losses).backward() -> TextualGradientDescent.step() -> validate and revert if the
validation accuracy dropped. Differences, all to match funcgrad's runs: the starting
prompt, questions, metric (integer exact match, same parsing rules) and minibatch order
come from the driver's JSON; the test set is scored only before and after (not after
every step); the engines cap max_tokens per role; a call budget, read from the counting
proxy, stops training while the final test still fits. An optimizer answer without the
<IMPROVED_VARIABLE> tags (TGD raises IndexError) is recorded and the step keeps the old
prompt instead of crashing the run.
"""

from common import correct, emit, load  # noqa: I001

import argparse
import concurrent.futures
import json
import time
import urllib.request

import textgrad as tg
from openai import OpenAI
from textgrad.autograd import StringBasedFunction
from textgrad.engine.local_model_openai_api import ChatExternalClient


class CappedClient(ChatExternalClient):
    """ChatExternalClient with a max_tokens cap (TextGrad's default is 2000 for every call)."""

    def __init__(self, client, model_string, cap):
        super().__init__(client=client, model_string=model_string)
        self.cap = cap

    def _generate_from_single_prompt(self, prompt, system_prompt=None, temperature=0, max_tokens=2000, top_p=0.99):
        return super()._generate_from_single_prompt(prompt, system_prompt, temperature, min(max_tokens, self.cap), top_p)


def engine(base_url, model, role, cap):
    # one OpenAI client per role: the header lets the counting proxy attribute calls and tokens
    client = OpenAI(base_url=base_url, api_key="sk-local-unused", default_headers={"x-fg-role": role}, timeout=900, max_retries=0)
    return CappedClient(client, model, cap)


def calls_so_far(base_url) -> int:
    with urllib.request.urlopen(base_url.rstrip("/") + "/_stats", timeout=30) as r:
        return json.load(r)["total"]["calls"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--forward-max-tokens", type=int, default=200)
    p.add_argument("--backward-max-tokens", type=int, default=300)
    p.add_argument("--optimizer-max-tokens", type=int, default=400)
    args = p.parse_args()
    data = load(args.data)
    settings = data["settings"]

    forward = engine(args.base_url, args.model, "forward", args.forward_max_tokens)
    val_engine = engine(args.base_url, args.model, "validation", args.forward_max_tokens)
    test_engine = engine(args.base_url, args.model, "test", args.forward_max_tokens)
    backward = engine(args.base_url, args.model, "backward", args.backward_max_tokens)
    optimizer_engine = engine(args.base_url, args.model, "optimizer", args.optimizer_max_tokens)
    tg.set_backward_engine(backward, override=True)

    system_prompt = tg.Variable(
        data["system_prompt"], requires_grad=True,
        role_description="system prompt to a somewhat capable language model that specifies the behavior and strategies for the counting task",
    )
    model = tg.BlackboxLLM(forward, system_prompt)
    model_val = tg.BlackboxLLM(val_engine, system_prompt)
    model_test = tg.BlackboxLLM(test_engine, system_prompt)
    optimizer = tg.TextualGradientDescent(engine=optimizer_engine, parameters=[system_prompt])

    def equality(prediction, ground_truth_answer):
        return int(correct(str(prediction.value), int(ground_truth_answer.value)))

    eval_fn = StringBasedFunction(equality, function_purpose="The runtime of string-based function that checks if the prediction is correct.")

    def accuracy(rows, llm, keep=None):
        def one(row):
            x = tg.Variable(row["x"], requires_grad=False, role_description="query to the language model")
            return llm(x).value
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            outputs = list(pool.map(one, rows))
        if keep is not None:
            log[keep] = outputs  # raw answers, re-scored by the driver with funcgrad's metric
        return sum(correct(o, r["target"]) for o, r in zip(outputs, rows)) / len(rows)

    budget, n_test = settings["max_calls"], len(data["test"])
    started = time.perf_counter()
    log = {"steps": [], "initial_prompt": system_prompt.value}
    log["initial_test"] = accuracy(data["test"], model_test, "test_outputs_before")
    val_acc = log["initial_val"] = accuracy(data["val"], model_val)
    print(f"initial test {log['initial_test']:.3f} val {val_acc:.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    stopped = "done"
    for step, batch in enumerate(data["batches"][: settings["steps"]]):
        if calls_so_far(args.base_url) + n_test >= budget:
            stopped = f"budget: stopped before step {step + 1} to keep {n_test} calls for the final test"
            break
        optimizer.zero_grad()
        losses = []
        for row in batch:
            x = tg.Variable(row["x"], requires_grad=False, role_description="query to the language model")
            y = tg.Variable(str(row["target"]), requires_grad=False, role_description="correct answer for the query")
            response = model(x)
            losses.append(eval_fn(inputs=dict(prediction=response, ground_truth_answer=y)))
        batch_acc = sum(int(loss.value) for loss in losses) / len(losses)
        tg.sum(losses).backward()
        before = system_prompt.value
        entry = {"step": step + 1, "batch_acc": batch_acc}
        try:
            optimizer.step()
            entry["proposal"] = system_prompt.value
        except IndexError as exc:  # the optimizer answer lacked <IMPROVED_VARIABLE> tags
            entry["optimizer_error"] = str(exc)[:600]
            system_prompt.set_value(before)
        if system_prompt.value != before:  # run_validation_revert of TextGrad's recipe
            new_val = accuracy(data["val"], model_val)
            entry["val_acc"] = new_val
            if new_val < val_acc:
                system_prompt.set_value(before)
                entry["accepted"] = False
            else:
                val_acc, entry["accepted"] = new_val, True
        else:
            entry["accepted"] = False
        entry["calls_so_far"] = calls_so_far(args.base_url)
        entry["elapsed_s"] = round(time.perf_counter() - started, 1)
        log["steps"].append(entry)
        print(json.dumps({k: (v[:160] if isinstance(v, str) else v) for k, v in entry.items()}), flush=True)
    log["final_val"] = val_acc
    log["final_prompt"] = system_prompt.value
    log["final_test"] = accuracy(data["test"], model_test, "test_outputs_after")
    log["stopped"] = stopped
    log["wall_s"] = time.perf_counter() - started
    emit(log)


if __name__ == "__main__":
    main()
