"""A tiny task and a deterministic strategy for trainer tests (public API only).

The "model" answers correctly only when the system prompt contains the word
"carefully"; the strategy proposes appending " Think carefully." once. `grid_config`
writes a `funcgrad compare` grid over them.
"""

import orjson

import funcgrad as fg

ANSWER = fg.LLM("answer", system=("instruction",), user="{input}", max_tokens=8)


@fg.fn("parse")
def parse(text):
    return text.strip()


def pipeline(prompts, x):
    return parse(ANSWER(prompts, input=x))


def respond_text(system: str, user: str) -> str:
    """Correct (the target is the question reversed) only with "carefully" in the system prompt."""
    if "[optimizer]" in user:
        return "<NEW>Answer the question. Think carefully.</NEW>"
    return user[::-1] if "carefully" in system else "wrong"


def respond(request) -> str:
    system = next((m.content for m in request.messages if m.role == "system"), "")
    return respond_text(system, request.messages[-1].content)


def respond_body(body) -> str:
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    return respond_text(system, body["messages"][-1]["content"])


def tiny_task(n: int = 12) -> fg.Task:
    data = [fg.Example(f"e{i}", f"q{i}", f"q{i}"[::-1]) for i in range(n)]
    state = fg.PromptState.of(instruction=fg.Param("Answer the question.", role="instruction of the answer node"))
    third = n // 3
    return fg.Task("tiny", pipeline, state, fg.exact_match, data[:third], data[third:2 * third], data[2 * third:])


def hint_strategy(first_try_bad: bool = False) -> fg.Strategy:
    """Asks the critic once per attempt (a Call effect); proposes the text between <NEW> tags.

    With ``first_try_bad`` the first attempt of each step proposes a useless text
    (so the loop's rejection path and the rejected-proposal feedback are exercised).
    """

    def init(state):
        return {"calls": 0}

    def update(results, state, s, context):
        if "carefully" in state["instruction"].value:
            return fg.Update(notes=[fg.Note("instruction", "no_update", "already careful")]), s
        if first_try_bad and not context.rejected:
            return fg.Update({"instruction": "Answer."}), {"calls": s["calls"]}
        reply = (yield from fg.ask(fg.Request(messages=[("user", "[optimizer] improve")], role="optimizer"))).response.text
        if "<NEW>" not in reply:
            return fg.Update(notes=[fg.Note("instruction", "no_update", "no <NEW> tags")]), {"calls": s["calls"] + 1}
        value = reply.split("<NEW>")[1].split("</NEW>")[0]
        return fg.Update({"instruction": value}), {"calls": s["calls"] + 1}

    return fg.Strategy("hint", init, update)


def grid_config(tmp_path, base_url, *, strategies=("hint", "hint_bad_first"), seeds=(0, 1), run_dir="grid",
                cache="cache", extra="", name="compare.toml"):
    """Write a `funcgrad compare` grid over :func:`tiny_task` and :func:`hint_strategy` against ``base_url``."""
    path = tmp_path / name
    path.write_text(
        f"""
[grid]
tasks = ["tiny"]
strategies = {list(strategies)!r}
seeds = {list(seeds)!r}
[tasks.tiny]
name = "train_fixtures:tiny_task"
[strategies.hint]
name = "train_fixtures:hint_strategy"
[strategies.hint_bad_first]
name = "train_fixtures:hint_strategy"
first_try_bad = true
[engine]
base_url = "{base_url}"
model = "stub"
timeout = 10
[train]
steps = 2
batch_size = 2
[run]
dir = "{run_dir}"
cache = "{cache}"
{extra}
"""
    )
    return path


def results_without_wall(path):
    """results.json without wall times (the only figures that may differ between equivalent runs)."""
    data = orjson.loads(path.read_bytes())
    for task in data.values():
        for row in task["rows"]:
            row.pop("wall_s")
    return data
