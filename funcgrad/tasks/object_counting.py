"""Object counting in the BIG-bench format, generated offline from a seed.

"I have a chair, two tables, and a lamp. How many objects do I have?" — items come
from five categories; a question about one category mixes in distractor items from
the others, and number words ("two", "three") multiply an item. The answer is an int.

Pipeline: LLM node ``count`` (system = instruction + output-format peers) → fn node
``parse`` returning ``{"answer": int | None, "raw": text}``.

>>> task = object_counting(n_train=2, n_val=1, n_test=1)
>>> task.train[0].x.startswith("I have ") and isinstance(task.train[0].target, int)
True
"""

from __future__ import annotations

import random

from funcgrad.core.nodes import LLM, Var, fn
from funcgrad.core.state import Param, PromptState
from funcgrad.core.task import Task
from funcgrad.tasks.demos import with_demos
from funcgrad.tasks.parsing import WORD_OF, integer_answer, integer_loss, make_splits

# category -> (singular, plural) item names. No name appears in two categories.
CATEGORIES: dict[str, tuple[tuple[str, str], ...]] = {
    "fruits": (
        ("apple", "apples"), ("banana", "bananas"), ("peach", "peaches"), ("plum", "plums"),
        ("grape", "grapes"), ("nectarine", "nectarines"), ("orange", "oranges"),
        ("strawberry", "strawberries"), ("raspberry", "raspberries"), ("blackberry", "blackberries"),
    ),
    "vegetables": (
        ("carrot", "carrots"), ("onion", "onions"), ("potato", "potatoes"), ("cabbage", "cabbages"),
        ("head of broccoli", "heads of broccoli"), ("stalk of celery", "stalks of celery"),
        ("yam", "yams"), ("cucumber", "cucumbers"), ("head of lettuce", "heads of lettuce"), ("cauliflower", "cauliflowers"),
    ),
    "musical instruments": (
        ("piano", "pianos"), ("flute", "flutes"), ("trombone", "trombones"), ("violin", "violins"),
        ("drum", "drums"), ("clarinet", "clarinets"), ("trumpet", "trumpets"), ("accordion", "accordions"),
    ),
    "animals": (
        ("cat", "cats"), ("dog", "dogs"), ("rabbit", "rabbits"), ("goat", "goats"), ("cow", "cows"),
        ("pig", "pigs"), ("frog", "frogs"), ("snake", "snakes"), ("donkey", "donkeys"),
        ("mouse", "mice"), ("fish", "fish"), ("duck", "ducks"), ("snail", "snails"),
    ),
    "objects": (
        ("chair", "chairs"), ("table", "tables"), ("lamp", "lamps"), ("bed", "beds"), ("couch", "couches"),
        ("microwave", "microwaves"), ("oven", "ovens"), ("stove", "stoves"), ("toaster", "toasters"),
        ("fridge", "fridges"), ("car", "cars"), ("television", "televisions"),
    ),
}

INSTRUCTION = "Answer the question."
FORMAT = "Reply with the number only."


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(count: int, singular: str, plural: str) -> str:
    return f"{_article(singular)} {singular}" if count == 1 else f"{WORD_OF[count]} {plural}"


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return f"{parts[0]} and {parts[1]}"
    return ", ".join(parts[:-1]) + f", and {parts[-1]}"


def counting_problem(rng: random.Random) -> tuple[str, int]:
    """One question and its answer: 1–5 item kinds of the asked category, 0–4 distractor kinds.

    >>> q, n = counting_problem(random.Random(1))
    >>> q.endswith("do I have?"), n > 0
    (True, True)
    """
    category = rng.choice(sorted(CATEGORIES))
    others = [c for c in sorted(CATEGORIES) if c != category]
    n_target = rng.randint(1, 5)
    # "objects" would be ambiguous with distractors (is a piano an object?): ask it only about pure lists
    n_distract = 0 if category == "objects" else rng.choice((0, 1, 2, 2, 3, 4))
    target_items = rng.sample(CATEGORIES[category], n_target)
    distractors = [rng.choice(CATEGORIES[rng.choice(others)]) for _ in range(n_distract)]
    distractors = list(dict.fromkeys(distractors))
    items = [(item, True) for item in target_items] + [(item, False) for item in distractors]
    rng.shuffle(items)
    parts, answer = [], 0
    for (singular, plural), counted in items:
        count = rng.choices((1, 2, 3, 4), weights=(6, 3, 2, 1))[0]
        parts.append(_phrase(count, singular, plural))
        if counted:
            answer += count
    return f"I have {_join(parts)}. How many {category} do I have?", answer


count_node = LLM(
    "count",
    system=("count_system",),
    user="{question}",
    max_tokens=200,
)


@fn("parse")
def parse(text):
    """The final integer in the model's answer (``None`` if there is none) plus the raw text."""
    return integer_answer(text)


def pipeline(prompts: PromptState, x: Var) -> Var:
    """count (LLM) → parse (fn)."""
    return parse(count_node(prompts, question=x))


def initial_state() -> PromptState:
    """The deliberately plain starting prompts: an instruction and a separate output-format peer."""
    return with_demos(PromptState(
        params={
            "count_instruction": Param(
                INSTRUCTION,
                role=(
                    "system instruction of the 'count' LLM node. Its input is one sentence listing things the "
                    "speaker has (some multiplied by number words such as 'two' or 'three', some from other "
                    "categories than the one asked about) followed by a question 'How many <category> do I have?'. "
                    "The instruction should make the model count exactly the items of the asked category"
                ),
                kind="instruction",
            ),
            "count_format": Param(
                FORMAT,
                role=(
                    "output-format rule of the 'count' node; a parser takes the integer after 'Answer:' if "
                    "present, otherwise the last integer in the reply, so the reply must end with the final count; "
                    "the reply is cut at 200 tokens"
                ),
                kind="format",
            ),
        },
        groups={"count_system": ("count_instruction", "count_format")},
    ), {"count_system": "count"})


def object_counting(*, seed: int = 0, n_train: int = 30, n_val: int = 20, n_test: int = 50) -> Task:
    """The object-counting task: seeded disjoint splits, integer exact-match loss with feedback."""
    train, val, test = make_splits("object_counting", seed, counting_problem, n_train, n_val, n_test)
    return Task(
        name="object_counting",
        pipeline=pipeline,
        state=initial_state(),
        loss=integer_loss,
        train=train,
        val=val,
        test=test,
        description=(
            "BIG-bench style object counting: count the items of one asked category (fruits, vegetables, "
            "musical instruments, animals or objects) in a sentence with number words and distractors; "
            "the answer is an integer."
        ),
    )
