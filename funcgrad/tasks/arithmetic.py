"""GSM-style arithmetic word problems (1–3 steps, small numbers, integer answers), generated offline.

Pipeline: LLM node ``solve`` (instruction + output-format peers; chain of thought is
allowed) → fn node ``parse`` returning ``{"answer": int | None, "raw": text}``.

Each problem comes from a template; :func:`arithmetic_problem` returns the template
name and the numbers in the order they appear in the text, so the answer can be
recomputed independently.

>>> p = arithmetic_problem(random.Random(0))
>>> isinstance(p.answer, int) and p.answer >= 0
True
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from funcgrad.core.nodes import LLM, Var, fn
from funcgrad.core.state import Param, PromptState
from funcgrad.core.task import Task
from funcgrad.tasks.demos import with_demos
from funcgrad.tasks.parsing import integer_answer, integer_loss, make_splits

NAMES = ("Maya", "Omar", "Lena", "Tariq", "Iris", "Jonas", "Priya", "Felix", "Nora", "Kofi", "Sofia", "Hugo")
THINGS = ("stickers", "marbles", "pencils", "cookies", "stamps", "shells", "cards", "beads")


@attrs.frozen
class ArithmeticProblem:
    """A generated problem: template name, numbers in order of appearance, question text, answer."""

    template: str
    numbers: tuple[int, ...]
    question: str
    answer: int
    steps: int


# Each template: (name, steps, sampler(rng) -> numbers, text(names, thing, numbers) -> str, answer(numbers) -> int)
Template = tuple[str, int, Callable, Callable, Callable]


def _add(r):
    return (r.randint(3, 40), r.randint(2, 30))


def _sub(r):
    a = r.randint(10, 60)
    return (a, r.randint(1, a - 1))


def _mul(r):
    return (r.randint(2, 12), r.randint(2, 9))


def _div(r):
    b, k = r.randint(2, 8), r.randint(2, 9)
    return (b * k, b)


def _packs_eat(r):
    a, b = r.randint(2, 6), r.randint(3, 10)
    return (a, b, r.randint(1, a * b - 1))


def _shop(r):
    b, c = r.randint(2, 6), r.randint(2, 9)
    return (b * c + r.randint(1, 30), b, c)


def _share_more(r):
    b, k = r.randint(2, 6), r.randint(2, 8)
    return (b * k, b, r.randint(1, 5))


def _legs(r):
    return (r.randint(1, 12), r.randint(1, 15))


def _wage(r):
    a, b, c = r.randint(5, 15), r.randint(1, 6), r.randint(1, 6)
    return (a, b, c, r.randint(1, a * (b + c) - 1))


def _bake(r):
    a, b = r.randint(2, 5), r.randint(6, 12)
    d = r.randint(2, 5)
    c = r.randint(1, max(1, (a * b - 1) // d))
    return (a, b, c, d)


def _collect(r):
    a, b = r.randint(5, 30), r.randint(2, 4)
    return (a, b, r.randint(1, 10))


TEMPLATES: tuple[Template, ...] = (
    ("add", 1, _add,
     lambda n, t, v: f"{n[0]} has {v[0]} {t}. {n[1]} gives {n[0]} {v[1]} more {t}. How many {t} does {n[0]} have now?",
     lambda v: v[0] + v[1]),
    ("sub", 1, _sub,
     lambda n, t, v: f"{n[0]} had {v[0]} {t} and gave {v[1]} of them to {n[1]}. How many {t} does {n[0]} have left?",
     lambda v: v[0] - v[1]),
    ("mul", 1, _mul,
     lambda n, t, v: f"Each box holds {v[0]} {t}. {n[0]} has {v[1]} full boxes. How many {t} does {n[0]} have?",
     lambda v: v[0] * v[1]),
    ("div", 1, _div,
     lambda n, t, v: f"{n[0]} shares {v[0]} {t} equally among {v[1]} friends. How many {t} does each friend get?",
     lambda v: v[0] // v[1]),
    ("packs_eat", 2, _packs_eat,
     lambda n, t, v: f"{n[0]} buys {v[0]} packs of {t} with {v[1]} {t} in each pack, then loses {v[2]} {t}. "
                     f"How many {t} does {n[0]} have now?",
     lambda v: v[0] * v[1] - v[2]),
    ("shop", 2, _shop,
     lambda n, t, v: f"{n[0]} has {v[0]} dollars and buys {v[1]} notebooks that cost {v[2]} dollars each. "
                     f"How many dollars does {n[0]} have left?",
     lambda v: v[0] - v[1] * v[2]),
    ("share_more", 2, _share_more,
     lambda n, t, v: f"{v[0]} {t} are shared equally among {v[1]} children, and then each child finds {v[2]} more. "
                     f"How many {t} does each child have?",
     lambda v: v[0] // v[1] + v[2]),
    ("legs", 2, _legs,
     lambda n, t, v: f"A farm has {v[0]} cows and {v[1]} chickens. A cow has 4 legs and a chicken has 2 legs. "
                     f"How many legs do the animals have in total?",
     lambda v: 4 * v[0] + 2 * v[1]),
    ("wage", 3, _wage,
     lambda n, t, v: f"{n[0]} earns {v[0]} dollars per hour. {n[0]} works {v[1]} hours on Monday and {v[2]} hours on "
                     f"Tuesday, then spends {v[3]} dollars. How many dollars does {n[0]} have left from the pay?",
     lambda v: v[0] * (v[1] + v[2]) - v[3]),
    ("bake", 3, _bake,
     lambda n, t, v: f"{n[0]} bakes {v[0]} trays of muffins with {v[1]} muffins on each tray. {n[0]} gives {v[2]} "
                     f"muffins to each of {v[3]} neighbours. How many muffins are left?",
     lambda v: v[0] * v[1] - v[2] * v[3]),
    ("collect", 3, _collect,
     lambda n, t, v: f"{n[0]} has {v[0]} {t}. {n[1]} has {v[1]} times as many {t} as {n[0]}. {n[1]} then gives away "
                     f"{v[2]} {t}. How many {t} do {n[0]} and {n[1]} have together now?",
     lambda v: v[0] + v[0] * v[1] - v[2]),
)


def arithmetic_problem(rng: random.Random) -> ArithmeticProblem:
    """One problem from a random template (numbers chosen so the answer is a non-negative int)."""
    name, steps, sample, text, answer = rng.choice(TEMPLATES)
    names = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    numbers = sample(rng)
    return ArithmeticProblem(name, tuple(numbers), text(names, thing, numbers), int(answer(numbers)), steps)


def _generate(rng: random.Random) -> tuple[str, int]:
    p = arithmetic_problem(rng)
    return p.question, p.answer


INSTRUCTION = "Solve the math word problem."
FORMAT = "End your reply with the final answer as an integer."

solve_node = LLM("solve", system=("solve_system",), user="{question}", max_tokens=256)


@fn("parse")
def parse(text):
    """The final integer in the model's answer (``None`` if there is none) plus the raw text."""
    return integer_answer(text)


def pipeline(prompts: PromptState, x: Var) -> Var:
    """solve (LLM) → parse (fn)."""
    return parse(solve_node(prompts, question=x))


def initial_state() -> PromptState:
    """Plain starting prompts: an instruction and a separate output-format peer."""
    return with_demos(PromptState(
        params={
            "solve_instruction": Param(
                INSTRUCTION,
                role=(
                    "system instruction of the 'solve' LLM node, which gets a short grade-school word problem "
                    "(one to three steps of +, -, *, / on small whole numbers) and must compute the exact "
                    "integer answer; reasoning steps are allowed before the answer"
                ),
                kind="instruction",
            ),
            "solve_format": Param(
                FORMAT,
                role=(
                    "output-format rule of the 'solve' node; a parser takes the integer after 'Answer:' if "
                    "present, otherwise the last integer in the reply; the reply is cut at 256 tokens, so "
                    "long reasoning may lose the answer"
                ),
                kind="format",
            ),
        },
        groups={"solve_system": ("solve_instruction", "solve_format")},
    ), {"solve_system": "solve"})


def arithmetic(*, seed: int = 0, n_train: int = 30, n_val: int = 20, n_test: int = 50) -> Task:
    """The arithmetic word-problem task: seeded disjoint splits, integer exact-match loss with feedback."""
    train, val, test = make_splits("arithmetic", seed, _generate, n_train, n_val, n_test)
    return Task(
        name="arithmetic",
        pipeline=pipeline,
        state=initial_state(),
        loss=integer_loss,
        train=train,
        val=val,
        test=test,
        description=(
            "GSM-style arithmetic word problems with one to three steps and small whole numbers; "
            "the answer is an integer; reasoning before the answer is allowed."
        ),
    )
