"""``report.html``: one self-contained page per run directory, and ``compare.html`` per grid.

The page is built only from the files of the run directory (so ``funcgrad report RUN``
rebuilds it at any time), read leniently: a missing or corrupt file is named at the
top of the page with what is wrong, and the rest of the page shows what the other
files hold. It has no script and fetches nothing: CSS and the SVG figures
(:mod:`funcgrad.training.html_figures`) are inline. Every text that comes from a
prompt, a model or a config is escaped by the template engine (Jinja2 with
autoescaping), so a model reply holding ``<script>`` shows as text.

Sections: summary and file status; the learning curve with every proposal as a point
and the calls per phase; the initial vs final prompts as a diff; per step the
minibatch, the critiques per node in call order and each proposal as a diff with its
guard and validation verdict (from ``steps.jsonl`` when recorded, else from the
checkpoint's step log); a trace viewer (each training example's forward trace as a
graph, with the gradients that reached each node beside it); calls and tokens per
role; the config.

>>> import tempfile
>>> path = write_run_report(tempfile.mkdtemp())
>>> "checkpoint.json is missing" in path.read_text()
True
"""

from __future__ import annotations

import difflib
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import jinja2
import orjson
from markupsafe import Markup

from funcgrad.core.backward import StepTrace
from funcgrad.core.errors import FuncgradError
from funcgrad.core.run import Result
from funcgrad.core.serialize import from_data, loads
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.core.values import thaw
from funcgrad.engines.files import write_atomic
from funcgrad.training.records import FitState, fit_state_from_data
from funcgrad.training.html_figures import OUTCOMES, Curve, ProposalPoint, compare_svg, curve_svg, node_label, trace_graph_svg
from funcgrad.training.rundir import read_steps

# The files a run directory may hold, in the order the page lists them, and what each is.
RUN_FILES = {
    "config.json": "the config the run was started with",
    "checkpoint.json": "the loop state: scores, step log with every proposal, usage",
    "steps.jsonl": "the recorded backward pass (one line per attempt)",
    "traces.jsonl": "every forward trace",
    "history.tsv": "one row per step",
    "final_state.json": "the final prompts",
}

MAX_TEXT = 6000  # characters of one prompt, output or critique shown before it is cut


@attrs.frozen
class FileStatus:
    """One file of a run directory: ``status`` is ``ok``, ``missing`` or ``corrupt``; ``message`` says why."""

    name: str
    status: str
    size: int = 0
    message: str = ""


@attrs.frozen
class RunView:
    """What a run directory holds, each file read on its own (see :func:`read_run`).

    ``traces`` are ``(step, phase, Result)`` in file order; ``steps`` the recorded
    backward passes; ``fit``/``usage`` come from the checkpoint; anything unreadable
    is None or empty, and ``files`` says why.
    """

    path: str
    files: tuple[FileStatus, ...] = attrs.field(converter=tuple)
    config: Any = None
    fit: FitState | None = None
    usage: Any = None
    traces: tuple[tuple[int, str, Result], ...] = attrs.field(default=(), converter=tuple)
    steps: tuple[StepTrace, ...] = attrs.field(default=(), converter=tuple)
    history: tuple[tuple[str, ...], ...] = attrs.field(default=(), converter=tuple)
    final_state: PromptState | None = None

    def status(self, name: str) -> FileStatus:
        """The status of file ``name`` (a key of :data:`RUN_FILES`)."""
        return next(f for f in self.files if f.name == name)


def _short(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _read_traces(path: Path) -> tuple[list[tuple[int, str, Result]], str]:
    """Every readable line of traces.jsonl, and a note on the unreadable ones ("" if none)."""
    out, bad = [], []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
            result = from_data(doc["result"])
            if not isinstance(result, Result):
                raise TypeError(f"a {type(result).__name__}, not a Result")
            out.append((int(doc["step"]), str(doc["phase"]), result))
        except Exception as exc:  # any malformed line: count it, keep the others
            bad.append(f"line {n}: {_short(exc)}")
    note = f"{len(bad)} unreadable line(s) skipped ({bad[0]}{', ...' if len(bad) > 1 else ''})" if bad else ""
    return out, note


def read_run(run_dir: str | Path) -> RunView:
    """Read every file of ``run_dir`` that the report shows; never raises for a bad file.

    >>> import tempfile
    >>> view = read_run(tempfile.mkdtemp())
    >>> view.fit is None, view.status("traces.jsonl").status
    (True, 'missing')
    """
    root = Path(run_dir)
    found: dict[str, Any] = {}
    files = []
    for name in RUN_FILES:
        path = root / name
        if not path.is_file():
            files.append(FileStatus(name, "missing"))
            continue
        size, message = path.stat().st_size, ""
        try:
            if name == "config.json":
                found["config"] = orjson.loads(path.read_bytes())
            elif name == "checkpoint.json":
                doc = orjson.loads(path.read_bytes())
                found["usage"] = doc.get("usage") if isinstance(doc, dict) else None
                found["fit"] = fit_state_from_data(doc["fit"])
            elif name == "steps.jsonl":
                found["steps"] = read_steps(path)
            elif name == "traces.jsonl":
                found["traces"], message = _read_traces(path)
            elif name == "history.tsv":
                found["history"] = tuple(tuple(line.split("\t")) for line in path.read_text().splitlines() if line)
            else:
                state = loads(path.read_bytes())
                if not isinstance(state, PromptState):
                    raise TypeError(f"a {type(state).__name__}, not a PromptState")
                found["final_state"] = state
        except Exception as exc:  # a corrupt file is reported on the page, never raised
            files.append(FileStatus(name, "corrupt", size, _short(exc)))
            continue
        files.append(FileStatus(name, "ok", size, message))
    return RunView(str(root), files, **found)


# ---------------------------------------------------------------- diffs


@attrs.frozen
class DiffLine:
    """One line of a diff: ``op`` is ``" "``, ``"-"`` or ``"+"``; ``parts`` are ``(changed, text)`` runs."""

    op: str
    parts: tuple[tuple[bool, str], ...] = attrs.field(converter=tuple)


def _words(a: str, b: str) -> tuple[list[tuple[bool, str]], list[tuple[bool, str]]]:
    """Word runs of two changed lines, each marked changed or not."""
    wa, wb = re.split(r"(\s+)", a), re.split(r"(\s+)", b)
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if i2 > i1:
            left.append((op != "equal", "".join(wa[i1:i2])))
        if j2 > j1:
            right.append((op != "equal", "".join(wb[j1:j2])))
    return left, right


def text_diff(old: str, new: str) -> tuple[DiffLine, ...]:
    """A full line diff of ``old`` -> ``new`` with the changed words of changed lines marked.

    >>> [(d.op, "".join(t for _, t in d.parts)) for d in text_diff("a\\nb c", "a\\nb d")]
    [(' ', 'a'), ('-', 'b c'), ('+', 'b d')]
    """
    a, b = old.splitlines() or [""], new.splitlines() or [""]
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out += [DiffLine(" ", [(False, line)]) for line in a[i1:i2]]
            continue
        removed, added = a[i1:i2], b[j1:j2]
        pairs = min(len(removed), len(added)) if op == "replace" else 0
        marked = [_words(removed[k], added[k]) for k in range(pairs)]
        out += [DiffLine("-", marked[k][0] if k < pairs else [(True, line)]) for k, line in enumerate(removed)]
        out += [DiffLine("+", marked[k][1] if k < pairs else [(True, line)]) for k, line in enumerate(added)]
    return tuple(out)


# ---------------------------------------------------------------- page context


def _clip(text: Any) -> str:
    s = text if isinstance(text, str) else orjson.dumps(thaw(text), default=str).decode()
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + f"\n... ({len(s) - MAX_TEXT} more characters not shown)"


def _outcome(verdict: str, attempt: StepTrace | None) -> str:
    if verdict == "no_update" and attempt is not None and any(c.guard for c in attempt.candidates):
        return "guard"
    return verdict if verdict in OUTCOMES else "no_update"


def _title(view: RunView) -> str:
    config = (view.config or {}).get("config") if isinstance(view.config, dict) else None
    try:
        return f"{config['task']['name']} / {config['strategy']['name']}"
    except (TypeError, KeyError):
        return Path(view.path).name or "run"


def _calls_per_phase(view: RunView) -> dict[str, dict[int, int]]:
    """Model calls per phase and step: pipeline calls from the traces, critic calls from the steps."""
    calls: dict[str, dict[int, int]] = {}
    for step, phase, result in view.traces:
        n = sum(1 for r in result.trace.records if r.kind == "llm" or (r.kind == "loss" and r.request and "messages" in r.request))
        per = calls.setdefault(phase, {})
        per[step] = per.get(step, 0) + n
    for st in view.steps:
        for c in st.calls:
            per = calls.setdefault(c.request.role, {})
            per[st.step] = per.get(st.step, 0) + 1
    return calls


def _curve(view: RunView, attempts: Mapping[tuple[int, int], StepTrace]) -> Curve | None:
    fs = view.fit
    if fs is None:
        return None
    val, points, current = [(0, fs.initial_val)], [], fs.initial_val
    for e in fs.log:
        for k, p in enumerate(e.proposals):
            score = p.val if p.val is not None else p.minibatch if p.minibatch is not None else current
            points.append(ProposalPoint(e.step, k, _outcome(p.verdict.value, attempts.get((e.step, k))), score))
        current = e.val_score
        val.append((e.step, e.val_score))
    test = [(0, fs.initial_test)] if fs.initial_test is not None else []
    if fs.final_test is not None:
        test.append((fs.step, fs.final_test))
    return Curve(val, points, test, _calls_per_phase(view))


def _record_view(trace, r, gradients) -> dict:
    messages = []
    if isinstance(r.request, Mapping) and "messages" in r.request:
        messages = [(m[0], _clip(m[1])) for m in r.request["messages"]]
    return {
        "id": r.id, "label": node_label(trace, r.id), "kind": r.kind, "params": r.params,
        "inputs": [(name, node_label(trace, i), i) for name, i in zip(r.input_names, r.inputs)],
        "consts": [(k, _clip(v)) for k, v in r.consts.items()],
        "messages": messages, "output": _clip(r.output), "error": r.error, "gradients": gradients,
        "tokens": (r.usage.prompt_tokens, r.usage.completion_tokens),
    }


def _trace_view(step: int, phase: str, result: Result, n: int, gradients: Sequence[Any]) -> dict:
    trace = result.trace
    prefix = f"t{n}"
    by_record: dict[int, list] = {}
    for g in gradients:
        by_record.setdefault(g["record_id"], []).append(g)
    ids = {r.id for r in trace.records}
    reached = {rid: len(gs) for rid, gs in by_record.items() if rid in ids}
    return {
        "prefix": prefix, "step": step, "phase": phase, "example": result.example.id,
        "score": None if result.loss is None else result.loss.score,
        "feedback": "" if result.loss is None else _clip(result.loss.feedback),
        "failure": None if result.failure is None else f"{result.failure.kind}: {result.failure.message}",
        "records": [_record_view(trace, r, by_record.get(r.id, [])) for r in trace.records],
        "svg": Markup(trace_graph_svg(trace, prefix=prefix, reached=reached)),
        "n_records": len(trace.records),
    }


def _gradient_view(st: StepTrace, g, rounds: Mapping[int, int]) -> dict:
    return {
        "id": g.id, "attempt": st.attempt, "param": g.param, "node": g.node, "label": f"{g.node}#{g.call_index}",
        "example": g.example_id, "record_id": g.record_id, "score": g.score, "source": g.source,
        "text": _clip(g.text), "call": g.call, "round": rounds.get(g.call) if g.call is not None else None,
    }


def _attempt_view(number: int, st: StepTrace | None, proposal: Any, current: PromptState | None) -> dict:
    """Attempt ``number`` of a step: verdict, critiques per node, candidates as diffs, calls."""
    verdict = proposal.verdict.value if proposal is not None else st.verdict.value
    view = {
        "attempt": number, "verdict": verdict, "outcome": _outcome(verdict, st),
        "reason": (proposal.reason if proposal is not None else st.reason),
        "minibatch": proposal.minibatch if proposal is not None else st.minibatch,
        "val": proposal.val if proposal is not None else st.val,
        "notes": [(n.param, n.status, n.reason) for n in proposal.notes] if proposal is not None else [],
        "nodes": [], "candidates": [], "calls": [], "recorded": st is not None,
    }
    view["label"] = OUTCOMES[view["outcome"]][0]
    if st is None:
        for param, value in (proposal.values.items() if proposal is not None else ()):
            old = current[param].value if current is not None and param in current else None
            view["candidates"].append({"param": param, "guard": "", "reason": "", "value": value, "gradients": (), "call": None,
                                       "diff": text_diff(old, value) if old is not None else None})
        return view
    rounds = {e.call: e.round for e in st.effects if e.kind == "call"}
    nodes: dict[str, list] = {}
    for g in sorted(st.gradients, key=lambda g: (g.call_index, g.id)):
        nodes.setdefault(g.node, []).append(_gradient_view(st, g, rounds))
    view["nodes"] = list(nodes.items())
    for c in st.candidates:
        view["candidates"].append({
            "param": c.param, "guard": c.guard, "reason": c.reason, "value": c.value, "gradients": c.gradients, "call": c.call,
            "diff": text_diff(c.old, c.value) if c.value is not None else None,
        })
    for c in st.calls:
        view["calls"].append({
            "id": c.id, "role": c.request.role, "round": rounds.get(c.id), "cached": c.response.cached,
            "messages": [(m.role, _clip(m.content)) for m in c.request.messages], "response": _clip(c.response.text),
            "finish": c.response.finish_reason, "tokens": (c.response.usage.prompt_tokens, c.response.usage.completion_tokens),
        })
    return view


def _apply(state: PromptState | None, values: Mapping[str, str]) -> PromptState | None:
    if state is None:
        return None
    try:
        return apply_updates(state, dict(values))
    except FuncgradError:
        return None


def _steps_view(view: RunView, attempts: Mapping[tuple[int, int], StepTrace], initial: PromptState | None) -> list[dict]:
    scores: dict[tuple[int, str], float] = {}
    for step, phase, result in view.traces:
        if phase == "train" and result.loss is not None:
            scores[(step, result.example.id)] = result.loss.score
    log = {e.step: e for e in view.fit.log} if view.fit is not None else {}
    numbers = sorted(set(log) | {s for s, _ in attempts})
    out, current = [], initial
    for number in numbers:
        e = log.get(number)
        recorded = sorted(k for s, k in attempts if s == number)
        count = max(len(e.proposals) if e else 0, (recorded[-1] + 1) if recorded else 0)
        batch = e.batch if e else attempts[(number, recorded[0])].batch
        shown = [_attempt_view(k, attempts.get((number, k)), e.proposals[k] if e and k < len(e.proposals) else None, current)
                 for k in range(count)]
        out.append({
            "step": number, "train": e.train_score if e else None, "val": e.val_score if e else None,
            "accepted": e.accepted if e else any(a["verdict"] == "accepted" for a in shown),
            "batch": [(x, scores.get((number, x))) for x in batch], "attempts": shown,
        })
        if e and e.accepted:
            current = _apply(current, next(p.values for p in e.proposals if p.verdict.value == "accepted"))
    return out


# Files a run writes only when it ends.
END_FILES = ("history.tsv", "final_state.json")


def _problems(view: RunView) -> list[str]:
    notes = []
    running = view.fit is not None and not view.fit.stopped
    for f in view.files:
        if f.status == "missing" and running and (f.name in END_FILES or (f.name == "steps.jsonl" and view.fit.step == 0)):
            continue  # not written yet: the summary says the run is still going
        if f.status == "missing" and f.name == "steps.jsonl":
            notes.append("steps.jsonl is missing: the backward pass was not recorded; the steps below come from the "
                         "checkpoint's step log (proposals and verdicts, no critiques).")
        elif f.status == "missing":
            notes.append(f"{f.name} is missing ({RUN_FILES[f.name]} is not shown).")
        elif f.status == "corrupt":
            notes.append(f"{f.name} is corrupt and was not read: {f.message}")
        elif f.message:
            notes.append(f"{f.name}: {f.message}")
    return notes


def _usage_rows(usage: Any) -> list[dict]:
    rows = usage.get("rows", []) if isinstance(usage, Mapping) else []
    return [r for r in rows if isinstance(r, Mapping)]


def run_page(view: RunView, *, initial: PromptState | None = None, title: str = "") -> str:
    """The HTML text of a run's report (see module docs); ``initial`` enables the prompt diffs."""
    attempts = {(st.step, st.attempt): st for st in view.steps}
    fs = view.fit
    final = fs.state if fs is not None else view.final_state
    prompts = []
    if initial is not None and final is not None:
        for name in initial.names:
            after = final[name].value if name in final else ""
            prompts.append({"name": name, "role": initial[name].role, "changed": initial[name].value != after,
                            "diff": text_diff(initial[name].value, after)})
    grads: dict[tuple[int, str], list] = {}
    for st in view.steps:
        rounds = {e.call: e.round for e in st.effects if e.kind == "call"}
        for g in st.gradients:
            grads.setdefault((st.step, g.example_id), []).append(_gradient_view(st, g, rounds))
    traces = [_trace_view(step, phase, r, n, grads.get((step, r.example.id), []))
              for n, (step, phase, r) in enumerate(t for t in view.traces if t[1] == "train")]
    others: dict[str, list] = {}
    for step, phase, r in view.traces:
        if phase != "train":
            others.setdefault(f"{phase} (step {step})", []).append(
                (r.example.id, None if r.loss is None else r.loss.score, _clip(r.output), "" if r.loss is None else _clip(r.loss.feedback)))
    curve = _curve(view, attempts)
    context = {
        "title": title or _title(view), "path": view.path, "files": view.files, "descriptions": RUN_FILES,
        "problems": _problems(view), "fit": fs, "final": final, "initial": initial, "prompts": prompts,
        "curve": Markup(curve_svg(curve)) if curve is not None else None,
        "n_proposals": len(curve.proposals) if curve else 0,
        "outcome_counts": {OUTCOMES[k][0]: sum(1 for p in curve.proposals if p.outcome == k) for k in OUTCOMES} if curve else {},
        "steps": _steps_view(view, attempts, initial), "traces": traces, "others": others,
        "usage": _usage_rows(view.usage), "history": view.history,
        "config": orjson.dumps(view.config, option=orjson.OPT_INDENT_2).decode() if view.config is not None else None,
    }
    return _env().get_template("run.html.j2").render(context)


def write_run_report(run_dir: str | Path, *, initial: PromptState | None = None, title: str = "") -> Path:
    """Write ``run_dir/report.html`` from the files in ``run_dir`` (atomically); returns its path.

    ``initial`` is the task's initial prompt state (the run directory does not hold
    it); without it the page shows the final prompts but no diffs against the start.
    """
    path = Path(run_dir) / "report.html"
    write_atomic(path, run_page(read_run(run_dir), initial=initial, title=title).encode(), durable=True)
    return path


# ---------------------------------------------------------------- compare.html


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return "n/a" if value is None else str(value)


def _mean(values: Any) -> float | None:
    present = [v for v in values if isinstance(v, int | float)] if isinstance(values, list) else []
    return statistics.fmean(present) if present else None


def _table(records: Sequence[Mapping[str, Any]], first: Sequence[str]) -> dict:
    """Columns ``first`` then every other key in order of appearance; cells as text."""
    keys = list(first) + list(dict.fromkeys(k for r in records for k in r if k not in first))
    return {"keys": keys, "rows": [[_cell(r.get(k)) for k in keys] for r in records]}


def compare_page(results: Any, *, cells: Sequence[tuple[str, str]] = (), problem: str = "") -> str:
    """The HTML of a comparison grid from the data ``funcgrad compare`` writes to results.json.

    ``results`` maps each task to ``{"rows": [...], "comparisons": [...]}`` (or to the rows); a row needs
    ``strategy`` and per-seed ``before``/``after`` test scores for the plot, and every
    key is shown as a column as it is (so new figures appear without a change here).
    ``cells`` are ``(label, href)`` links to the cells' own reports.
    """
    tasks = []
    for task, data in (results.items() if isinstance(results, Mapping) else ()):
        data = {"rows": data} if isinstance(data, list) else data  # the older results.json: a list of rows per task
        rows = [r for r in (data.get("rows", []) if isinstance(data, Mapping) else []) if isinstance(r, Mapping)]
        comparisons = [
            {"a": c.get("a"), "b": c.get("b"), **(c["paired"] if isinstance(c.get("paired"), Mapping) else {}),
             **{k: v for k, v in c.items() if k not in ("a", "b", "paired")}}
            for c in (data.get("comparisons", []) if isinstance(data, Mapping) else []) if isinstance(c, Mapping)
        ]
        summary = [{"strategy": r.get("strategy"), "test before": _mean(r.get("before")), "test after": _mean(r.get("after"))}
                   for r in rows]
        svg = compare_svg([str(r.get("strategy")) for r in rows], [x["test before"] or 0.0 for x in summary],
                          [x["test after"] or 0.0 for x in summary],
                          [[v for v in r.get("after", []) if isinstance(v, int | float)] for r in rows])
        tasks.append({"task": task, "svg": Markup(svg), "summary": _table(summary, ["strategy"]),
                      "rows": _table(rows, ["strategy"]), "comparisons": _table(comparisons, ["a", "b"])})
    return _env().get_template("compare.html.j2").render(
        {"title": "strategy comparison", "tasks": tasks, "cells": cells, "problem": problem}
    )


def write_compare_report(root: str | Path) -> Path:
    """Write ``root/compare.html`` from ``root/results.json``, linking every cell's report.html; returns its path."""
    root = Path(root)
    results, problem = None, ""
    try:
        results = orjson.loads((root / "results.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        problem = f"results.json could not be read: {_short(exc)}"
    cells = [(p.parent.name, p.relative_to(root).as_posix()) for p in sorted(root.glob("**/report.html"))]
    path = root / "compare.html"
    write_atomic(path, compare_page(results, cells=cells, problem=problem).encode(), durable=True)
    return path


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("funcgrad.training", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
