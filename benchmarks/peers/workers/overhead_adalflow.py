"""AdalFlow side of the overhead benchmark: an adal.Generator whose system prompt is a
trainable adal.Parameter holding the task's prompt, evaluated with AdalFlow's own batch
evaluator AdalComponent.validation_step(num_workers=c) (a thread pool inside AdalFlow).
Generator cache off (use_cache=False).

Client: AdalFlow 1.1's OpenAIClient speaks only OpenAI's *Responses* API
(client.responses.create -> POST /v1/responses), which local OpenAI-compatible servers
(llama.cpp, the funcgrad stub) do not serve. The AdalFlow client that speaks
/v1/chat/completions with a configurable base_url is AnthropicAPIClient (the OpenAI SDK
pointed at base_url), so it is used here unchanged."""

from common import IMPORT_STARTED, Clock, correct, emit, load, overhead_args  # noqa: I001

import dataclasses
import time

import adalflow as adal
from adalflow.components.model_client.anthropic_client import AnthropicAPIClient

import_s = time.perf_counter() - IMPORT_STARTED

TEMPLATE = r"""<START_OF_SYSTEM_PROMPT>
{{system_prompt}}
<END_OF_SYSTEM_PROMPT>
<START_OF_USER>
{{input_str}}
<END_OF_USER>"""


@dataclasses.dataclass
class Sample:
    id: str
    question: str
    answer: int


class Counter(adal.Component):
    def __init__(self, client, system_prompt: str, max_tokens: int):
        super().__init__()
        self.system_prompt = adal.Parameter(
            data=system_prompt, role_desc="system prompt of the counting task", requires_opt=True,
            param_type=adal.ParameterType.PROMPT,
        )
        self.llm = adal.Generator(
            model_client=client, model_kwargs={"model": "stub", "temperature": 0.0, "max_tokens": max_tokens},
            template=TEMPLATE, prompt_kwargs={"system_prompt": self.system_prompt}, use_cache=False,
        )

    def call(self, question: str, id: str | None = None):
        return self.llm(prompt_kwargs={"input_str": question}, id=id)


class Eval(adal.AdalComponent):
    def prepare_task(self, sample: Sample):
        return self.task.call, {"question": sample.question, "id": sample.id}

    outputs: dict

    def prepare_eval(self, sample: Sample, y_pred):
        self.outputs[sample.id] = y_pred.raw_response  # kept for re-scoring by the driver
        return self.eval_fn, {"y": y_pred.raw_response, "y_gt": sample.answer}


def main() -> None:
    args = overhead_args()
    data = load(args.data)
    client = AnthropicAPIClient(api_key="sk-local-unused", base_url=args.base_url)
    task = Counter(client, data["system_prompt"], args.max_tokens)
    component = Eval(task=task, eval_fn=lambda y, y_gt: float(correct(y, y_gt)))
    component.outputs = {}

    def samples(rows):
        return [Sample(r["id"], r["x"], r["target"]) for r in rows]

    component.validation_step(samples(data["warmup"]), 0, num_workers=1)
    batch = samples(data["eval"])
    with Clock() as clock:
        result = component.validation_step(batch, 1, num_workers=args.concurrency)
    emit({
        "lib": "adalflow", "wall_s": clock.wall, "cpu_s": clock.cpu, "import_s": import_s, "n": len(batch),
        "outputs": [component.outputs.get(s.id) for s in batch], "score": result.avg_score,
        "facility": "AdalComponent.validation_step(num_workers=c)",
    })


if __name__ == "__main__":
    main()
