"""The exact requests and updates of every built-in strategy on fixed scripted inputs (a golden file).

A refactoring of strategies/ must keep each request byte-identical (prompt text,
JSON schema, sampling settings: the answer cache is keyed on them) and give the same
Update for the same answers. Each case runs a strategy for two steps on a fixed
minibatch, answering its effects by role and call number, and records every effect
and every Update; tests/golden/strategy_requests.json holds the record.
Regenerate it (only for an intended change of behaviour) with
``python tests/test_strategy_golden.py``.
"""

from __future__ import annotations

import json
import pathlib
import re

import orjson
import pytest

from funcgrad import (
    LLM, Attempt, Call, Example, Param, PromptState, Rerun, Response, StepContext, Validate, apply_updates,
    exact_match, fn, run_batch, run_program,
)
from funcgrad.core.serialize import to_data
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.strategies import (
    alternate, backprop, bootstrap_demos, chain_steps, gepa, sampled_momentum, whole_trace,
)

GOLDEN = pathlib.Path(__file__).parent / "golden" / "strategy_requests.json"

plan = LLM("plan", system=("plan_system",), user="Q: {input}")
solve = LLM("solve", system=("solve_instruction",), user="{plan}\n{input}")


@fn("parse")
def parse(text):
    nums = re.findall(r"-?\d+", text)
    return nums[-1] if nums else ""


def pipeline(prompts, x):
    listing = plan(prompts, input=x)
    return parse(solve(prompts, plan=listing, input=x))


STATE = PromptState(
    params={"plan_instruction": Param("List the objects of the question.", role="how plan lists objects"),
            "plan_demos": Param("", kind="demos"),
            "solve_instruction": Param("Count the listed objects. Answer with a number.", role="system prompt of solve")},
    groups={"plan_system": ("plan_instruction", "plan_demos")},
)
EXAMPLES = tuple(Example(f"e{i}", f"I have {i} apples and {i + 1} pears. How many fruits?", str(2 * i + 1))
                 for i in range(1, 5))


def forward(state, examples=EXAMPLES, right=("e1", "e3")):
    """Forward results: plan lists, solve answers right only for the examples in ``right``."""
    def respond(request):
        user = request.messages[-1].content
        if user.startswith("Q: "):
            return f"listing: {user[3:]}"
        ex = next(e for e in EXAMPLES if e.x in user)
        return f"so {ex.target}" if ex.id in right else "so 0"

    return run_batch(pipeline, state, examples, engine=ScriptedEngine(respond), loss=exact_match)


OPTIMIZER = {
    "tagged": lambda n: f"Pattern: miscounts.\n<NEW_VALUE>\nCount every listed object once, version {n}.\n</NEW_VALUE>",
    "json_wt": lambda n: json.dumps({"reasoning": "they miscount", "suggestion": {
        "solve_instruction": f"Count every listed object once, version {n}."}}),
    "json_gepa": lambda n: json.dumps({"diagnosis": "they miscount", "text": f"Count every listed object once, version {n}."}),
    "edit": lambda n: json.dumps({"pattern": "miscounts", "op": "add", "old": "", "new": f"Count each object once ({n})."}),
    "leak": lambda n: "<NEW_VALUE>\nThe answer is 5.\n</NEW_VALUE>",
}


def critique(request, n):
    keys = json.loads(request.json_schema)["properties"]["feedback"]["items"]["properties"]["param"]["enum"] \
        if request.json_schema else ["solve_instruction"]
    return json.dumps({"mistake": f"answered 0 (call {n})",
                       "feedback": [{"param": k, "feedback": f"say to add the counts of every kind ({k}, {n})"} for k in keys]})


def validate(state, seed):
    """Validation results whose scores depend on the state's text (deterministic)."""
    score = (len(state["solve_instruction"].value) + len(state["plan_demos"].value)) % 5 / 4
    return tuple(forward(state, EXAMPLES[:2], right=("e1",) if score < 0.5 else ("e1", "e2")))


class Recorder:
    def __init__(self, optimizer, step):
        self.optimizer, self.step, self.effects = optimizer, step, []

    def __call__(self, effect):
        n = sum(isinstance(e, Call) for e in self.effects)
        self.effects.append(effect)
        if isinstance(effect, Validate):
            return validate(effect.state, effect.seed)
        if isinstance(effect, Rerun):
            return tuple(forward(effect.state, EXAMPLES[:3]))
        if effect.request.role == "backward":
            return Response(critique(effect.request, n))
        return Response(OPTIMIZER[self.optimizer](100 * self.step + n))


def effect_data(effect):
    if isinstance(effect, Call):
        return {"call": to_data(effect.request)}
    values = {n: effect.state[n].value for n in effect.state.names}
    return {type(effect).__name__: values, **({"seed": effect.seed} if isinstance(effect, Validate) else {})}


CONTEXT = dict(rejected=(Attempt({"solve_instruction": "Just count."}, None, False, "too_short: stub"),),
               history=(Attempt({"solve_instruction": "Count the fruit."}, 0.5, True),), steps_since_improvement=2)

CASES = {
    "backprop": (backprop, {}, "tagged", {}),
    "backprop_retry_context": (backprop, {}, "tagged", CONTEXT),
    "backprop_edits": (backprop, {"edits": True}, "edit", {}),
    "backprop_candidates": (backprop, {"n_candidates": 2}, "tagged", {}),
    "backprop_all_inputs": (backprop, {"errors_only": False, "json_schema": False, "time_stamps": False}, "tagged", {}),
    "backprop_leak": (backprop, {}, "leak", {}),
    "whole_trace": (whole_trace, {}, "json_wt", CONTEXT),
    "whole_trace_candidates": (whole_trace, {"n_candidates": 3, "json_schema": False}, "json_wt", {}),
    "gepa": (gepa, {"pool_size": 2}, "json_gepa", {}),
    "gepa_tags": (gepa, {"json_schema": False}, "tagged", {}),
    "bootstrap_demos": (bootstrap_demos, {"k": 1, "n_sets": 3}, "tagged", {}),
    "momentum": (lambda **k: sampled_momentum(backprop(), **k), {"k": 2}, "tagged", {}),
    "chain": (lambda: chain_steps((bootstrap_demos(k=1), 1), whole_trace()), {}, "json_wt", {}),
    "alternate": (lambda: alternate(whole_trace(), gepa()), {}, "json_wt", {}),
}


def run_case(name):
    factory, knobs, optimizer, context = CASES[name]
    strategy = factory(**knobs)
    state, s, out = STATE, strategy.init(STATE), []
    for step in range(2):
        recorder = Recorder(optimizer, step)
        program = strategy.update(forward(state), state, s, StepContext(step=step, seed=3, **context))
        update, s = run_program(program, recorder, strategy=strategy.name)
        out.append({"effects": [effect_data(e) for e in recorder.effects], "update": to_data(update)})
        state = apply_updates(state, update.values)
    return orjson.loads(orjson.dumps(out))


@pytest.mark.parametrize("name", sorted(CASES))
def test_requests_and_updates_match_the_golden_file(name):
    golden = orjson.loads(GOLDEN.read_bytes())
    assert run_case(name) == golden[name]


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_bytes(orjson.dumps({name: run_case(name) for name in sorted(CASES)}, option=orjson.OPT_INDENT_2))
    print("wrote", GOLDEN)
