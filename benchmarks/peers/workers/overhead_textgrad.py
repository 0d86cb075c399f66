"""TextGrad side of the overhead benchmark: tg.BlackboxLLM with the task's prompt as its
system-prompt Variable, on ChatExternalClient (TextGrad's documented route to any
OpenAI-compatible server). TextGrad has no batch evaluator, so a ThreadPoolExecutor
with c workers maps the examples (as TextGrad's own example scripts do). Its diskcache
starts empty (fresh HOME per run) and each example is asked once, so every call reaches
the server; the cache lookups and writes are part of the measured overhead."""

from common import IMPORT_STARTED, Clock, emit, load, overhead_args  # noqa: I001

import concurrent.futures
import time

import textgrad as tg
from openai import OpenAI
from textgrad.engine.local_model_openai_api import ChatExternalClient

import_s = time.perf_counter() - IMPORT_STARTED


def main() -> None:
    args = overhead_args()
    data = load(args.data)
    client = OpenAI(base_url=args.base_url, api_key="sk-local-unused", max_retries=0)
    engine = ChatExternalClient(client=client, model_string="stub")
    system_prompt = tg.Variable(data["system_prompt"], requires_grad=True, role_description="system prompt to the language model")
    model = tg.BlackboxLLM(engine, system_prompt=system_prompt)

    def one(row):
        question = tg.Variable(row["x"], requires_grad=False, role_description="question to the language model")
        return model(question).value

    for row in data["warmup"]:
        one(row)
    batch = data["eval"]
    with Clock() as clock:
        if args.concurrency == 1:
            outputs = [one(r) for r in batch]
        else:
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                outputs = list(pool.map(one, batch))
    emit({
        "lib": "textgrad", "wall_s": clock.wall, "cpu_s": clock.cpu, "import_s": import_s, "n": len(batch),
        "outputs": outputs, "facility": "concurrent.futures.ThreadPoolExecutor(c) over BlackboxLLM (no batch API)",
    })


if __name__ == "__main__":
    main()
