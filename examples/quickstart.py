"""funcgrad in one page: a pipeline, its trace, and one optimization run on the local model.

    python examples/quickstart.py            # about a minute with the 0.5B model
"""

import re

import funcgrad as fg
from funcgrad.engines.local import serve
from funcgrad.strategies import backprop, sampled_momentum, whole_trace  # noqa: F401  (swap below)
from funcgrad.training.fit import FitSettings, fit

# A pipeline is a plain function (prompts, x) -> Var. Nodes record themselves.
count = fg.LLM("count", system=("instruction",), user="{question}", max_tokens=16)


@fg.fn("parse")
def parse(text):
    numbers = re.findall(r"\d+", text)
    return int(numbers[-1]) if numbers else None


def pipeline(prompts, x):
    return parse(count(prompts, question=x))


state = fg.PromptState.of(instruction=fg.Param("Answer the question.", role="instruction of the counting step"))


def example(i, text, n):
    return fg.Example(f"ex{i}", f"I have {text}. How many fruits do I have?", n)


data = [
    example(0, "an apple, two bananas, and a chair", 3), example(1, "a plum, a cat, and three peaches", 4),
    example(2, "two grapes and a drum", 2), example(3, "a banana, two oranges, and a lamp", 3),
    example(4, "three apples, a dog, and a pear", 4), example(5, "a peach and two carrots", 1),
    example(6, "a mango, a spoon, and two plums", 3), example(7, "four cherries and a kiwi", 5),
]
# Disjoint splits: validation decides which proposals are kept, so the test examples must be unseen.
task = fg.Task("fruit_count", pipeline, state, fg.exact_match, train=data[:3], val=data[3:5], test=data[5:])


def main():
    with serve("qwen2.5-coder-0.5b") as engine:           # or funcgrad.engines.openai.OpenAIEngine(model, base_url=...)
        y, trace = fg.run(pipeline, state, data[0].x, engine=engine)
        print(fg.format_trace(trace))                      # one line per record; repeated calls show #0, #1, ...
        strategy = whole_trace()                           # the one-line swap: backprop() / sampled_momentum(backprop())
        out = fit(task, strategy, engine=engine, settings=FitSettings(steps=1, batch_size=3, proposals_per_step=1))
        print(f"test accuracy {out.initial_test:.2f} -> {out.final_test:.2f}; {out.log[0].proposals[0].reason}")
        print(fg.format_state(out.state))


if __name__ == "__main__":
    main()
