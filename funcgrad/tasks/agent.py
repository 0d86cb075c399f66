"""A small tool-using agent: one LLM node called repeatedly, a calculator and a table lookup.

Questions about a seeded shop inventory ("How much do 7 lanterns cost in total?")
need a LOOKUP of a table entry, a CALC, then an ANSWER. Each turn::

    act#t(question, history) → parse_action → calc | lookup → history   (at most ``max_turns`` turns)

then ``finish`` turns the last action into ``{"answer": int | None, "raw": text}``.
The pipeline declares ``skip_connection("act")`` so the loss feedback also reaches the
acting node directly; its repeated calls carry increasing call indices (time stamps).

>>> safe_eval("12*7 - 4")
80
>>> parse_action("Thought: need the price.\\nLOOKUP: lantern price")["tool"]
'LOOKUP'
"""

from __future__ import annotations

import ast
import operator
import random
import re

from funcgrad.core.errors import ConfigError
from funcgrad.core.nodes import LLM, Fn, Var, fn, skip_connection
from funcgrad.core.state import Param, PromptState
from funcgrad.core.task import Task
from funcgrad.tasks.demos import with_demos
from funcgrad.tasks.parsing import make_splits, integer_loss, parse_integer, snippet

ITEMS = (
    ("lantern", "lanterns"), ("kettle", "kettles"), ("compass", "compasses"), ("hammock", "hammocks"),
    ("backpack", "backpacks"), ("tent", "tents"), ("flashlight", "flashlights"), ("canteen", "canteens"),
    ("blanket", "blankets"), ("rope", "ropes"), ("stove", "stoves"), ("whistle", "whistles"),
)
NO_HISTORY = "(no actions yet)"
TOOLS = ("CALC", "LOOKUP", "ANSWER")

# ---------------------------------------------------------------- calculator

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_MAGNITUDE = 10**12


def _eval(node: ast.AST):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 12 or abs(left) > 10**4):
            raise ValueError("exponent too large")
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise ValueError("division by zero")
        value = _BINOPS[type(node.op)](left, right)
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise ValueError("result out of range")
        return value
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


def safe_eval(expression: str) -> int | float:
    """Evaluate plain arithmetic (+ - * / // % ** and parentheses) without eval(); ints stay ints.

    Accepts 'x' or '×' for multiplication, '÷' for division, thousands commas and a trailing '='.
    Raises ValueError for anything else.

    >>> safe_eval("(3 + 4) x 2"), safe_eval("10 / 4"), safe_eval("1,200 / 3")
    (14, 2.5, 400)
    """
    text = str(expression).strip().strip("`").strip()
    text = text.rstrip("=").strip().rstrip(".")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = text.replace("×", "*").replace("÷", "/").replace("$", "")
    text = re.sub(r"(?<=[\d)\s])[xX](?=[\s\d(])", "*", text)
    if not text or len(text) > 200:
        raise ValueError("empty or too long expression")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {text!r}") from None
    value = _eval(tree)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return round(value, 6) if isinstance(value, float) else value


# ---------------------------------------------------------------- action parsing

_ACTION = re.compile(r"\b(CALC|LOOKUP|ANSWER)\b\s*(?:\*\*)?\s*[:=-]\s*(.*)", re.IGNORECASE)


def parse_action(text) -> dict:
    """The first ``CALC: ...``, ``LOOKUP: ...`` or ``ANSWER: ...`` in ``text``, else tool ``INVALID``.

    >>> parse_action("ANSWER: 84")
    {'tool': 'ANSWER', 'arg': '84'}
    >>> parse_action("I think so")["tool"]
    'INVALID'
    """
    raw = "" if text is None else str(text)
    match = _ACTION.search(raw)
    if not match:
        return {"tool": "INVALID", "arg": snippet(raw, 200)}
    arg = match.group(2).strip().strip("`*\"'").strip()
    return {"tool": match.group(1).upper(), "arg": arg[:200]}


# ---------------------------------------------------------------- the world


def build_table(seed: int, n_items: int = 8) -> dict[str, int]:
    """The seeded inventory: keys '<item> price' (dollars) and '<item> stock' (units)."""
    rng = random.Random(f"funcgrad.tasks.agent.table:{seed}")
    table = {}
    for singular, _ in rng.sample(ITEMS, n_items):
        table[f"{singular} price"] = rng.randint(3, 29)
        table[f"{singular} stock"] = rng.randint(6, 95)
    return table


def _words(text: str) -> list[str]:
    out = []
    for w in re.findall(r"[a-z]+", str(text).lower()):
        if w in ("the", "of", "a", "an", "for", "in", "one", "each", "per", "unit", "item"):
            continue
        if w in ("cost", "costs", "prices"):
            w = "price"
        if w in ("stocks", "inventory", "quantity", "count"):
            w = "stock"
        if w.endswith("es") and w[:-2] in _SINGULARS:
            w = w[:-2]
        elif w.endswith("s") and w[:-1] in _SINGULARS:
            w = w[:-1]
        out.append(w)
    return out


_SINGULARS = frozenset(s for s, _ in ITEMS)


def table_lookup(table: dict[str, int], key: str) -> str:
    """The observation for ``LOOKUP: key``: ``'lantern price = 12'`` or a 'no entry' message.

    >>> table_lookup({"lantern price": 12}, "price of the lanterns")
    'lantern price = 12'
    """
    wanted = set(_words(key))
    for entry, value in table.items():
        if set(entry.split()) <= wanted:
            return f"{entry} = {value}"
    return f"no entry for {snippet(key, 60)!r}; keys look like '<item> price' or '<item> stock'"


def agent_problem(rng: random.Random, table: dict[str, int]) -> tuple[str, int]:
    """One question about ``table`` and its integer answer."""
    items = sorted({k.rsplit(" ", 1)[0] for k in table})
    plural = dict(ITEMS)
    kind = rng.choice(("cost", "cost", "difference", "budget", "value"))
    if kind == "cost":
        item, q = rng.choice(items), rng.randint(2, 19)
        return f"How many dollars do {q} {plural[item]} cost in total?", table[f"{item} price"] * q
    if kind == "budget":
        item, k = rng.choice(items), rng.randint(2, 12)
        money = table[f"{item} price"] * k
        return f"How many {plural[item]} can be bought with exactly {money} dollars?", k
    if kind == "value":
        item = rng.choice(items)
        return (f"What is the total value in dollars of all {plural[item]} in stock?",
                table[f"{item} price"] * table[f"{item} stock"])
    a, b = rng.sample(items, 2)
    if table[f"{a} stock"] < table[f"{b} stock"]:
        a, b = b, a
    return (f"How many more {plural[a]} than {plural[b]} are in stock?",
            table[f"{a} stock"] - table[f"{b} stock"])


# ---------------------------------------------------------------- nodes and pipeline

act_node = LLM(
    "act",
    system=("act_system",),
    user="Question: {question}\n\nHistory:\n{history}\n\nNext action:",
    max_tokens=64,
    stop=("\nObservation", "Observation:"),
)


@fn("parse_action")
def parse_action_node(reply):
    """The tool call in the model's reply: ``{"tool": CALC|LOOKUP|ANSWER|INVALID, "arg": text}``."""
    return parse_action(reply)


@fn("calc")
def calc(action):
    """Evaluate ``action['arg']`` with the safe calculator; errors become an observation, not an exception."""
    try:
        return str(safe_eval(action["arg"]))
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        return f"error: {exc}"


@fn("history")
def remember(history, action, observation):
    """The history with one more (action, observation) turn appended."""
    prev = "" if history == NO_HISTORY else str(history)
    turn = len(re.findall(r"^Action \d+:", prev, re.MULTILINE)) + 1
    line = f"Action {turn}: {action['tool']}: {action['arg']}\nObservation {turn}: {observation}"
    return f"{prev}\n{line}".strip()


@fn("finish")
def finish(action, max_turns):
    """The final answer: the integer of the ANSWER action, or None with the reason."""
    if action["tool"] == "ANSWER":
        return {"answer": parse_integer(action["arg"]), "raw": action["arg"]}
    return {"answer": None, "raw": f"no ANSWER action within {max_turns} turns; last action: {action['tool']}: {action['arg']}"}


def make_lookup(table: dict[str, int]) -> Fn:
    """A traced lookup node over ``table``: ``lookup(action) -> observation text``."""

    @fn("lookup")
    def lookup(action):
        return table_lookup(table, action["arg"])

    return lookup


def make_pipeline(lookup: Fn, max_turns: int = 4):
    """The agent loop: up to ``max_turns`` calls of ``act``, tools in between, then ``finish``."""

    def pipeline(prompts: PromptState, x: Var) -> Var:
        skip_connection("act")
        history: Var | str = NO_HISTORY
        action = None
        for _ in range(max_turns):
            action = parse_action_node(act_node(prompts, question=x, history=history))
            tool = action.value["tool"]
            if tool == "ANSWER":
                break
            if tool == "CALC":
                observation = calc(action)
            elif tool == "LOOKUP":
                observation = lookup(action)
            else:
                observation = "invalid action: reply with exactly one line 'CALC: ...', 'LOOKUP: ...' or 'ANSWER: ...'"
            history = remember(history, action, observation)
        return finish(action, max_turns)

    return pipeline


TOOLS_TEXT = (
    "Tools:\n"
    "CALC: <arithmetic expression>  (returns the value, e.g. CALC: 12*7)\n"
    "LOOKUP: <key>  (reads the shop table; keys look like '<item> price' (dollars) or '<item> stock' (units), e.g. 'tent price')\n"
    "ANSWER: <integer>  (ends the task)"
)


def initial_state(max_turns: int = 4) -> PromptState:
    """Plain starting prompts: a trainable instruction and format, and a frozen tool description."""
    return with_demos(PromptState(
        params={
            "act_instruction": Param(
                "Answer the question about the shop. You can use tools.",
                role=(
                    f"system instruction of the 'act' LLM node of a tool-using agent, called once per turn (at most "
                    f"{max_turns} turns) with the question and the history of earlier actions and observations; "
                    "the numbers it needs are only in the shop table, so it should look them up, compute with "
                    "CALC, and give ANSWER before the turns run out"
                ),
                kind="instruction",
            ),
            "act_tools": Param(TOOLS_TEXT, role="the fixed description of the agent's tools", trainable=False, kind="other"),
            "act_format": Param(
                "Reply with one action.",
                role=(
                    "output-format rule of the 'act' node; a parser takes the first 'CALC:', 'LOOKUP:' or 'ANSWER:' "
                    "in the reply (anything else wastes the turn), and the reply is cut at 64 tokens"
                ),
                kind="format",
            ),
        },
        groups={"act_system": ("act_instruction", "act_tools", "act_format")},
    ), {"act_system": "act"})


def agent(*, seed: int = 0, n_train: int = 30, n_val: int = 20, n_test: int = 50, max_turns: int = 4) -> Task:
    """The tool-using agent task over the shop table of ``seed``; integer exact-match loss."""
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or not 1 <= max_turns <= 20:
        raise ConfigError(f"agent: max_turns must be an int from 1 to 20, got {max_turns!r}")
    table = build_table(seed)
    train, val, test = make_splits("agent", seed, lambda rng: agent_problem(rng, table), n_train, n_val, n_test)
    return Task(
        name="agent",
        pipeline=make_pipeline(make_lookup(table), max_turns),
        state=initial_state(max_turns),
        loss=integer_loss,
        train=train,
        val=val,
        test=test,
        description=(
            f"A tool-using agent answers questions about a shop's prices and stock in at most {max_turns} turns, "
            "with LOOKUP (table), CALC (calculator) and ANSWER actions; the answer is an integer."
        ),
    )
