"""funcgrad side of the overhead benchmark: the object-counting pipeline (count LLM -> parse fn)
evaluated with funcgrad.run_batch on an OpenAIEngine pointed at the stub."""

from common import IMPORT_STARTED, Clock, emit, load, overhead_args  # noqa: I001

import time

from funcgrad.engines.openai import OpenAIEngine
from funcgrad.engines.pool import worker_pool
from funcgrad.core.run import Example, run_batch
from funcgrad.tasks.object_counting import initial_state, pipeline
from funcgrad.tasks.parsing import integer_loss

import_s = time.perf_counter() - IMPORT_STARTED


def main() -> None:
    args = overhead_args()
    data = load(args.data)
    state = initial_state()
    assert state.render(state.resolve("count_system")) == data["system_prompt"]

    def examples(rows):
        return [Example(r["id"], r["x"], r["target"]) for r in rows]

    with OpenAIEngine("stub", base_url=args.base_url, api_key="", concurrency=args.concurrency) as engine:
        run_batch(pipeline, state, examples(data["warmup"]), engine=engine, loss=integer_loss)
        batch = examples(data["eval"])
        with Clock() as clock:
            with worker_pool(args.concurrency) as pool:
                results = run_batch(pipeline, state, batch, engine=engine, loss=integer_loss, executor=pool)
    emit({
        "lib": "funcgrad", "wall_s": clock.wall, "cpu_s": clock.cpu, "import_s": import_s, "n": len(batch),
        "outputs": [r.output["raw"] if r.output else None for r in results],
        "facility": "funcgrad.run_batch(executor=worker_pool(c))",
    })


if __name__ == "__main__":
    main()
