"""Run directories for the report tests, trained by the real loop on scripted answers (fast).

:func:`counting_run` is a one-node pipeline whose model reply holds ``<script>``; its
optimizer answers, in order: a prompt that loses on the minibatch, one the length
guard stops, and one that is accepted. With ``hostile=True`` an example id holds a
right-to-left override and Hebrew, the wrong replies end in a 5000-character word, and
every critique is too generic (so it is dropped). :func:`multihop_run` is the
built-in two-hop task (the ``query`` node is called twice per example) for one step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import funcgrad as fg
from funcgrad.strategies import backprop
from funcgrad.tasks.multihop import multihop
from funcgrad.training.report import history_tsv
from funcgrad.training.rundir import RunDir, write_initial_state

SCRIPT_REPLY = "<script>document.title='pwned'</script> I count 7"
RTL_ID = "ex1\u202eשלום"  # a right-to-left override, never closed, then Hebrew
LONG_WORD = "x" * 5000
GENERIC = "Be more specific."
COUNT = fg.LLM("count", system=("instruction",), user="{question}", max_tokens=16)

OPTIMIZER_REPLIES = (
    "Answer badly and fast.",  # loses every minibatch example -> rejected by minibatch
    "No.",  # shorter than 12 characters where the old text is longer -> stopped by a guard
    "Answer the question. Think carefully and count each item once.",  # right answers -> accepted
)


@fg.fn("parse")
def parse(text):
    numbers = re.findall(r"\d+", text)
    return numbers[-1] if numbers else ""


def counting_pipeline(prompts, x):
    return parse(COUNT(prompts, question=x))


def _critique(request: fg.Request, generic: bool = False) -> str:
    keys = json.loads(request.json_schema)["properties"]["feedback"]["items"]["properties"]["param"]["enum"] if request.json_schema else []
    text = (lambda k: GENERIC) if generic else (lambda k: f"critique for {k}: count each item once")
    return json.dumps({"mistake": "counted the wrong things", "feedback": [{"param": k, "feedback": text(k)} for k in keys]})


def counting_responder(hostile: bool = False):
    """Scripted answers of :func:`counting_run` (a fresh optimizer-reply sequence per call)."""
    replies = iter(OPTIMIZER_REPLIES)
    wrong = SCRIPT_REPLY + (" " + LONG_WORD if hostile else "")

    def respond(request: fg.Request) -> str:
        if request.role == "backward":
            return _critique(request, generic=hostile)
        if request.role == "optimizer":
            return f"<NEW_VALUE>\n{next(replies, OPTIMIZER_REPLIES[-1])}\n</NEW_VALUE>"
        system = request.messages[0].content
        question = request.messages[-1].content
        if "carefully" in system:
            return f"I count {question.split('#')[1]}"
        if "badly" in system:
            return "I count 99"
        return wrong if question.endswith("#5") else f"I count {question.split('#')[1]}"

    return respond


def counting_task(hostile: bool = False) -> fg.Task:
    # questions ending in #5 get the <script> reply (wrong); the others are right at the start
    ids = [RTL_ID if hostile and i == 1 else f"ex{i}" for i in range(10)]
    data = [fg.Example(ids[i], f"How many items in box #{n}", str(n)) for i, n in enumerate([5, 2, 5, 3, 5, 4, 5, 1, 5, 2])]
    state = fg.PromptState.of(instruction=fg.Param("Answer the question.", role="instruction of the counting step"))
    return fg.Task("counting", counting_pipeline, state, fg.exact_match, data[:6], data[6:8], data[8:])


def train_into(path: Path, task: fg.Task, strategy: fg.Strategy, engine, settings: fg.FitSettings, config: dict) -> Path:
    """Run ``fit`` writing a run directory like ``funcgrad optimize`` does; returns the path."""
    rd = RunDir(path)
    rd.write_json("config.json", {"config_file": None, "config": config})
    write_initial_state(rd, task.state)
    fs = fg.fit(
        task, strategy, engine=engine, settings=settings, log_results=rd.log_results, log_step=rd.log_step,
        checkpoint=lambda fs: rd.save_checkpoint(fs, fingerprint="test", usage=None),
    )
    rd.write_text("final_state.json", fg.dumps(fs.state, indent=True).decode())
    rd.write_text("history.tsv", history_tsv(fs))
    rd.write_json("wall.json", {"wall_s": 1.5})
    return rd.path


def counting_run(path: Path, hostile: bool = False) -> Path:
    settings = fg.FitSettings(steps=3, batch_size=2, proposals_per_step=2, val_batch=2, seed=1)
    config = {"task": {"name": "counting"}, "strategy": {"name": "backprop"}}
    engine = fg.ScriptedEngine(counting_responder(hostile))
    return train_into(path, counting_task(hostile), backprop(), engine, settings, config)


def multihop_responder(request: fg.Request) -> str:
    if request.role == "backward":
        return _critique(request)
    if request.role == "optimizer":
        return "<NEW_VALUE>\nWrite a search query naming the person and the relation.\n</NEW_VALUE>"
    if "Search query" in request.messages[-1].content:
        return "works for"
    return "Paris"


def multihop_run(path: Path) -> Path:
    settings = fg.FitSettings(steps=1, batch_size=2, proposals_per_step=1, val_batch=2, seed=0)
    config = {"task": {"name": "multihop"}, "strategy": {"name": "backprop"}}
    task = multihop(seed=0, n_train=4, n_val=3, n_test=3)
    return train_into(path, task, backprop(), fg.ScriptedEngine(multihop_responder), settings, config)
