"""Tasks with a bug planted in the user's code, for the fault-injection tests (public API only).

Each is :func:`train_fixtures.tiny_task` with one thing broken, so a run must stop
with a failure that names it instead of scoring the examples 0.
"""

import attrs

import funcgrad as fg
from train_fixtures import ANSWER, parse, tiny_task


@fg.fn("parse")
def broken_parse(text):
    raise ValueError(f"cannot parse {text!r}")


WRONG_TEMPLATE = fg.LLM("answer", system=("instruction",), user="{question}", max_tokens=8)
WRONG_PARAM = fg.LLM("answer", system=("instructions",), user="{input}", max_tokens=8)


def _raising_loss(output, example):
    raise ZeroDivisionError("division by zero in the user's loss")


def buggy_task(bug: str, n: int = 12) -> fg.Task:
    """``tiny_task`` with ``bug``: fn (a node raises), template (missing key), param (unknown name), loss (raises)."""
    task = tiny_task(n)
    if bug == "fn":
        return attrs.evolve(task, pipeline=lambda p, x: broken_parse(ANSWER(p, input=x)))
    if bug == "template":
        return attrs.evolve(task, pipeline=lambda p, x: parse(WRONG_TEMPLATE(p, input=x)))
    if bug == "param":
        return attrs.evolve(task, pipeline=lambda p, x: parse(WRONG_PARAM(p, input=x)))
    if bug == "loss":
        return attrs.evolve(task, loss=_raising_loss)
    raise ValueError(f"unknown bug {bug!r}")


def surrogate_task(where: str = "input", n: int = 12) -> fg.Task:
    """``tiny_task`` whose data (``where="input"``) or prompt (``"prompt"``) holds a lone surrogate."""
    task = tiny_task(n)
    if where == "input":
        bad = fg.Example("e-bad", "q\udc80", "x")  # raises: a lone surrogate cannot reach a model or a trace
        return attrs.evolve(task, test=task.test + (bad,))
    return attrs.evolve(task, state=fg.PromptState.of(instruction=fg.Param("Answer the \udc80 question.")))
