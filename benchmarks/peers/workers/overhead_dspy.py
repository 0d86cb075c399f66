"""DSPy side of the overhead benchmark: dspy.Predict("question -> answer") with the task's
prompt as its instructions, evaluated with dspy.Evaluate(num_threads=c); caches disabled."""

from common import IMPORT_STARTED, Clock, correct, emit, load, overhead_args  # noqa: I001

import time

import dspy

import_s = time.perf_counter() - IMPORT_STARTED


def main() -> None:
    args = overhead_args()
    data = load(args.data)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM(
        "openai/stub", api_base=args.base_url, api_key="sk-local-unused",
        temperature=0.0, max_tokens=args.max_tokens, cache=False, num_retries=0,
    )
    dspy.configure(lm=lm)

    class Count(dspy.Signature):
        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    program = dspy.Predict(Count.with_instructions(data["system_prompt"]))

    def devset(rows):
        return [dspy.Example(question=r["x"], answer=r["target"]).with_inputs("question") for r in rows]

    def metric(example, prediction, trace=None):
        return correct(prediction.answer, example.answer)

    dspy.Evaluate(devset=devset(data["warmup"]), metric=metric, num_threads=1, display_progress=False)(program)
    batch = devset(data["eval"])
    evaluate = dspy.Evaluate(devset=batch, metric=metric, num_threads=args.concurrency, display_progress=False)
    with Clock() as clock:
        result = evaluate(program)
    outputs = [getattr(pred, "answer", None) for _, pred, _ in result.results]
    emit({
        "lib": "dspy", "wall_s": clock.wall, "cpu_s": clock.cpu, "import_s": import_s, "n": len(batch),
        "outputs": outputs, "score": result.score, "lm_history": len(lm.history),
        "facility": "dspy.Evaluate(num_threads=c)",
    })


if __name__ == "__main__":
    main()
