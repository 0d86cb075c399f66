"""``report.html``: one self-contained page per run directory (a grid's ``compare.html``: :mod:`funcgrad.cli.compare_page`).

The page is built only from the files of the run directory (so ``funcgrad report RUN``
rebuilds it at any time), read leniently: a missing or corrupt file is named at the
top of the page with what is wrong, and the rest of the page shows what the other
files hold. It has no script and fetches nothing: CSS and the SVG figures
(:mod:`funcgrad.training.html_figures`) are inline. Every text that comes from a
prompt, a model or a config is escaped by the template engine (Jinja2 with
autoescaping), so a model reply holding ``<script>`` shows as text.

Sections: the answer first (the paired test difference with its interval, W/T/L,
p and MDE; validation named as the selection set that chose the proposals); the
learning curve (only measured scores) and the calls per phase; every test example
before and after (changed rows first); the lineage of each prompt (step, attempt,
optimizer call and gradients, each a link); the initial vs final prompts as a diff;
per step the minibatch with its forward traces (each a graph whose nodes jump to
their records, with the gradients that reached each node), the critiques per node
in call order (a dropped critique says why), and each attempt (numbered from 1,
outcome named as in report.md and ``funcgrad show``, each reason once) with its
proposals as diffs; the other evaluations, one table per evaluation; model time per
phase and per call; calls and tokens per role; the config. Text from prompts,
models and data is isolated for bidirectional text (``dir="auto"``, ``<bdi>``).

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

from funcgrad.core.backward import OUTCOME_LABELS, CallLog, StepTrace, outcome
from funcgrad.core.errors import FuncgradError
from funcgrad.core.run import Result
from funcgrad.core.serialize import from_data, loads
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.core.values import thaw
from funcgrad.engines.files import write_atomic
from funcgrad.training.records import FitState, fit_state_from_data
from funcgrad.training.html_figures import Curve, ProposalPoint, curve_svg, node_label, trace_graph_svg
from funcgrad.training.report import (
    difference_text, held_out_difference, held_out_pairs, output_text, proposal_reasons, selection_text,
)
from funcgrad.training.rundir import INITIAL_STATE, read_steps

# The files a run directory may hold, in the order the page lists them, and what each is.
RUN_FILES = {
    "config.json": "the config the run was started with",
    INITIAL_STATE: "the prompts the run started from",
    "checkpoint.json": "the loop state: scores, step log with every proposal, usage",
    "steps.jsonl": "the recorded backward pass (one line per attempt)",
    "traces.jsonl": "every forward trace",
    "history.tsv": "one row per step",
    "final_state.json": "the final prompts",
    "wall.json": "the run's wall time",
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
    backward passes; ``fit``/``usage`` come from the checkpoint; ``initial_state``
    from initial_state.json; ``wall_s`` from wall.json; anything unreadable is None
    or empty, and ``files`` says why.
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
    initial_state: PromptState | None = None
    wall_s: float | None = None

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
            elif name == "wall.json":
                found["wall_s"] = float(orjson.loads(path.read_bytes())["wall_s"])
            else:
                state = loads(path.read_bytes())
                if not isinstance(state, PromptState):
                    raise TypeError(f"a {type(state).__name__}, not a PromptState")
                found["initial_state" if name == INITIAL_STATE else "final_state"] = state
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


def _title(view: RunView) -> str:
    config = (view.config or {}).get("config") if isinstance(view.config, dict) else None
    try:
        return f"{config['task']['name']} / {config['strategy']['name']}"
    except (TypeError, KeyError):
        return Path(view.path).name or "run"


def _is_model_call(r) -> bool:
    return r.kind == "llm" or (r.kind == "loss" and r.request is not None)  # a judged loss asked a model


def _calls_per_phase(view: RunView) -> dict[str, dict[int, int]]:
    """Model calls per phase and step: pipeline calls from the traces, critic calls from the steps."""
    calls: dict[str, dict[int, int]] = {}
    for step, phase, result in view.traces:
        n = sum(1 for r in result.trace.records if _is_model_call(r))
        per = calls.setdefault(phase, {})
        per[step] = per.get(step, 0) + n
    for st in view.steps:
        for c in st.calls:
            per = calls.setdefault(c.request.role, {})
            per[st.step] = per.get(st.step, 0) + 1
    return calls


def _timing(view: RunView) -> list[dict]:
    """Per phase (and critic role): model calls, their summed latency, mean and slowest call, in seconds."""
    times: dict[str, list[float]] = {}
    for _, phase, result in view.traces:
        times.setdefault(phase, []).extend(r.usage.latency_s for r in result.trace.records if _is_model_call(r))
    for st in view.steps:
        for c in st.calls:
            times.setdefault(c.request.role, []).append(c.response.usage.latency_s)
    return [{"phase": phase, "calls": len(ts), "total": sum(ts), "mean": statistics.fmean(ts), "max": max(ts)}
            for phase, ts in times.items() if ts]


def _curve(view: RunView, attempts: Mapping[tuple[int, int], StepTrace]) -> Curve | None:
    fs = view.fit
    if fs is None:
        return None
    val, points = [(0, fs.initial_val)], []
    for e in fs.log:
        for k, p in enumerate(e.proposals):
            score = p.val if p.val is not None else p.minibatch  # measured scores only
            points.append(ProposalPoint(e.step, k, outcome(p.verdict, _candidates_of(attempts.get((e.step, k)))), score))
        val.append((e.step, e.val_score))
    test = [(0, fs.initial_test)] if fs.initial_test is not None else []
    if fs.final_test is not None:
        test.append((fs.step, fs.final_test))
    return Curve(val, points, test, _calls_per_phase(view))


def _candidates_of(st: StepTrace | None) -> tuple:
    return st.candidates if st is not None else ()


def _anchor(step: int, attempt: int, suffix: str = "") -> str:
    """The id of attempt ``attempt`` (numbered from 0 in the data, shown from 1) of ``step``, plus ``suffix``."""
    return f"step-{step}-attempt-{attempt + 1}{suffix}"


def _record_view(trace, r, gradients) -> dict:
    messages = [(m.role, _clip(m.content)) for m in r.request.messages] if r.request is not None else []
    return {
        "id": r.id, "label": node_label(trace, r.id), "kind": r.kind, "params": r.params,
        "inputs": [(name, node_label(trace, i), i) for name, i in zip(r.input_names, r.inputs)],
        "consts": [(k, _clip(v)) for k, v in r.consts.items()],
        "messages": messages, "output": _clip(output_text(r.output)), "error": r.error, "gradients": gradients,
        "tokens": (r.usage.prompt_tokens, r.usage.completion_tokens), "latency": r.usage.latency_s if _is_model_call(r) else None,
    }


def _trace_view(step: int, phase: str, result: Result, prefix: str, gradients: Sequence[Any]) -> dict:
    trace = result.trace
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


def _critique_entry(text: str, param: str) -> str | None:
    """The feedback a backward reply holds for ``param`` (the requested JSON form), None if it holds none."""
    start, end = text.find("{"), text.rfind("}")
    try:
        data = orjson.loads(text[start:end + 1]) if start >= 0 else None
    except orjson.JSONDecodeError:
        return None
    items = data.get("feedback") if isinstance(data, dict) else None
    if isinstance(items, list):
        return next((i["feedback"] for i in items if isinstance(i, dict) and i.get("param") == param and isinstance(i.get("feedback"), str)), None)
    return data.get(param) if isinstance(data, dict) and isinstance(data.get(param), str) else None


def dropped_reason(call: CallLog, param: str) -> str:
    """Why the critique ``call`` asked for was not used for ``param`` (its gradient passed the downstream feedback on).

    >>> from funcgrad.core.calls import Request, Response
    >>> c = CallLog(0, Request(messages=(("user", "x"),), role="backward"), Response('{"feedback": [{"param": "a", "feedback": "Be clearer."}]}'))
    >>> dropped_reason(c, "a"), dropped_reason(c, "b")
    ("too generic (it names no concrete mistake): 'Be clearer.'", 'the reply has no usable entry for b')
    """
    if call.response.finish_reason == "length":
        return "the reply was cut off by the token cap"
    entry = _critique_entry(call.response.text, param)
    if entry is None or not entry.strip():
        return f"the reply has no usable entry for {param}"
    return f"too generic (it names no concrete mistake): {entry.strip()[:200]!r}"


def _gradient_view(st: StepTrace, g, rounds: Mapping[int, int], traces: Mapping[tuple[int, str], str]) -> dict:
    prefix = traces.get((st.step, g.example_id))
    dropped = ""
    if g.source in ("passthrough", "skip", "control") and g.call is not None and g.call < len(st.calls):
        dropped = dropped_reason(st.calls[g.call], g.param)
    return {
        "id": g.id, "attempt": st.attempt + 1, "param": g.param, "node": g.node, "label": f"{g.node}#{g.call_index}",
        "call_index": g.call_index,
        "example": g.example_id, "record_id": g.record_id, "score": g.score,
        "source": g.source + (" via control" if g.via == "control" else ""),
        "text": _clip(g.text), "call": g.call, "round": rounds.get(g.call) if g.call is not None else None,
        "href": "#" + _anchor(st.step, st.attempt, f"-g{g.id}"),
        "call_href": "#" + _anchor(st.step, st.attempt, f"-call-{g.call}") if g.call is not None else "",
        "trace_href": f"#{prefix}-r{g.record_id}" if prefix else "", "dropped": dropped,
    }


def _attempt_view(step: int, k: int, st: StepTrace | None, proposal: Any, current: PromptState | None,
                  traces: Mapping[tuple[int, str], str]) -> dict:
    """Attempt ``k`` (from 0) of ``step``: outcome, reasons once, critiques per node, candidates as diffs, calls."""
    verdict = proposal.verdict.value if proposal is not None else st.verdict.value
    key = outcome(verdict, _candidates_of(st))
    view = {
        "attempt": k + 1, "id": _anchor(step, k), "verdict": verdict, "outcome": key, "label": OUTCOME_LABELS[key],
        "minibatch": proposal.minibatch if proposal is not None else st.minibatch,
        "val": proposal.val if proposal is not None else st.val,
        "nodes": [], "candidates": [], "calls": [], "recorded": st is not None,
    }
    reasons = proposal_reasons(proposal) if proposal is not None else ([("", st.reason)] if st.reason else [])
    if st is None:
        for param, value in (proposal.values.items() if proposal is not None else ()):
            old = current[param].value if current is not None and param in current else None
            view["candidates"].append({"param": param, "guard": "", "reason": "", "value": value, "gradients": (), "call": None,
                                       "call_href": "", "diff": text_diff(old, value) if old is not None else None})
        view["reasons"] = reasons
        return view
    rounds = {e.call: e.round for e in st.effects if e.kind == "call"}
    grads = [_gradient_view(st, g, rounds, traces) for g in st.gradients]
    nodes: dict[str, list] = {}
    for g in sorted(grads, key=lambda g: (g["call_index"], g["id"])):
        nodes.setdefault(g["node"], []).append(g)
    view["nodes"] = list(nodes.items())
    shown = set()
    for c in st.candidates:
        if c.guard:
            shown.add((c.param, f"{c.guard}: {c.reason}"))
        elif c.value is None and c.reason:
            shown.add((c.param, c.reason))
        view["candidates"].append({
            "param": c.param, "guard": c.guard, "reason": c.reason, "value": c.value, "call": c.call,
            "call_href": "#" + _anchor(step, k, f"-call-{c.call}") if c.call is not None else "",
            "gradients": [(i, "#" + _anchor(step, k, f"-g{i}")) for i in c.gradients],
            "diff": text_diff(c.old, c.value) if c.value is not None else None,
        })
    view["reasons"] = [r for r in reasons if r not in shown and (r[0], r[1].split(": ", 1)[-1]) not in shown]
    for c in st.calls:
        view["calls"].append({
            "id": c.id, "anchor": _anchor(step, k, f"-call-{c.id}"), "role": c.request.role, "round": rounds.get(c.id),
            "cached": c.response.cached, "latency": c.response.usage.latency_s,
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


def _steps_view(view: RunView, attempts: Mapping[tuple[int, int], StepTrace], initial: PromptState | None,
                prefixes: Mapping[tuple[int, str], str], traces: Sequence[dict]) -> list[dict]:
    scores: dict[tuple[int, str], float] = {}
    for step, phase, result in view.traces:
        if phase == "train" and result.loss is not None:
            scores[(step, result.example.id)] = result.loss.score
    log = {e.step: e for e in view.fit.log} if view.fit is not None else {}
    numbers = sorted(set(log) | {s for s, _ in attempts} | {t["step"] for t in traces})
    out, current = [], initial
    for number in numbers:
        e = log.get(number)
        recorded = sorted(k for s, k in attempts if s == number)
        count = max(len(e.proposals) if e else 0, (recorded[-1] + 1) if recorded else 0)
        batch = e.batch if e else attempts[(number, recorded[0])].batch if recorded else ()
        shown = [_attempt_view(number, k, attempts.get((number, k)), e.proposals[k] if e and k < len(e.proposals) else None,
                               current, prefixes) for k in range(count)]
        out.append({
            "step": number, "train": e.train_score if e else None, "val": e.val_score if e else None,
            "accepted": e.accepted if e else any(a["verdict"] == "accepted" for a in shown),
            "batch": [(x, scores.get((number, x)), prefixes.get((number, x))) for x in batch], "attempts": shown,
            "traces": [t for t in traces if t["step"] == number],
        })
        if e and e.accepted:
            current = _apply(current, next(p.values for p in e.proposals if p.verdict.value == "accepted"))
    return out


def _lineage(view: RunView, attempts: Mapping[tuple[int, int], StepTrace], prefixes: Mapping[tuple[int, str], str]) -> list[dict]:
    """Per param, each accepted value: the step and attempt that made it, the optimizer call and the gradients used."""
    fs = view.fit
    if fs is None:
        return []
    out: dict[str, list] = {}
    for e in fs.log:
        k = next((k for k, p in enumerate(e.proposals) if p.verdict.value == "accepted"), None)
        if k is None:
            continue
        st = attempts.get((e.step, k))
        for param in e.proposals[k].values:
            c = next((c for c in _candidates_of(st) if c.param == param and c.value is not None and not c.guard), None)
            grads = []
            for i in (c.gradients if c is not None else ()):
                g = st.gradients[i] if i < len(st.gradients) else None
                if g is not None:
                    prefix = prefixes.get((e.step, g.example_id))
                    grads.append({"id": i, "href": "#" + _anchor(e.step, k, f"-g{i}"), "example": g.example_id,
                                  "trace_href": f"#{prefix}-r{g.record_id}" if prefix else "", "label": f"{g.node}#{g.call_index}"})
            out.setdefault(param, []).append({
                "step": e.step, "attempt": k + 1, "href": "#" + _anchor(e.step, k), "step_href": f"#step-{e.step}",
                "call": c.call if c is not None else None,
                "call_href": "#" + _anchor(e.step, k, f"-call-{c.call}") if c is not None and c.call is not None else "",
                "gradients": grads, "recorded": st is not None,
            })
    names = list(fs.state.names)
    return [{"param": name, "versions": out.get(name, [])} for name in names]


def _examples_view(pairs: Sequence[tuple[Result, Result]]) -> dict:
    """Each test example before and after, the changed ones first (wins and losses, then other changed outputs)."""
    rows = []
    for n, (b, a) in enumerate(pairs):
        sb = None if b.loss is None else b.loss.score
        sa = None if a.loss is None else a.loss.score
        before = f"failed: {b.failure.message}" if b.failure is not None else output_text(b.output)
        after = f"failed: {a.failure.message}" if a.failure is not None else output_text(a.output)
        change = "n/a" if sa is None or sb is None else "win" if sa > sb else "loss" if sa < sb else "tie"
        rank = 0 if change in ("win", "loss") else 1 if before != after else 2
        rows.append({"n": n, "id": b.example.id, "question": _clip(output_text(b.example.x)),
                     "target": _clip(output_text(b.example.target)), "before": _clip(before), "after": _clip(after),
                     "sb": sb, "sa": sa, "change": change, "rank": rank})
    rows.sort(key=lambda r: (r["rank"], r["n"]))
    return {"changed": [r for r in rows if r["rank"] < 2], "same": [r for r in rows if r["rank"] == 2]}


def _evaluations(view: RunView) -> list[dict]:
    """The validation-type evaluations, one per candidate scored: a (step, phase) group is split where an example repeats."""
    groups: dict[tuple[int, str], list[list]] = {}
    for step, phase, r in view.traces:
        if phase in ("train", "test"):
            continue
        runs = groups.setdefault((step, phase), [[]])
        if any(x[0] == r.example.id for x in runs[-1]):
            runs.append([])
        runs[-1].append((r.example.id, None if r.loss is None else r.loss.score, _clip(output_text(r.output)),
                         "" if r.loss is None else _clip(r.loss.feedback)))
    out = []
    for (step, phase), runs in groups.items():
        for j, rows in enumerate(runs, 1):
            scored = [sc for _, sc, _, _ in rows if sc is not None]
            name = f"{phase}, step {step}" + (f", evaluation {j} of {len(runs)}" if len(runs) > 1 else "")
            out.append({"name": name, "rows": rows, "mean": statistics.fmean(scored) if scored else None})
    return out


def _reading(d) -> str:
    if d is None or d.n_examples == 0:
        return ""
    if d.low > 0:
        return "The interval lies above 0: the final prompts score higher on the held-out test set."
    if d.high < 0:
        return "The interval lies below 0: the final prompts score lower on the held-out test set."
    return "The interval includes 0: no difference is shown at this test-set size."


# Files a run writes only when it ends.
END_FILES = ("history.tsv", "final_state.json")


def _problems(view: RunView, *, initial_given: bool) -> list[str]:
    notes = []
    running = view.fit is not None and not view.fit.stopped
    for f in view.files:
        if f.status == "missing" and running and (f.name in END_FILES or (f.name == "steps.jsonl" and view.fit.step == 0)):
            continue  # not written yet: the summary says the run is still going
        if f.status == "missing" and f.name == INITIAL_STATE and initial_given:
            continue
        if f.status == "missing" and f.name == "steps.jsonl":
            notes.append("steps.jsonl is missing: the backward pass was not recorded; the steps below come from the "
                         "checkpoint's step log (proposals and verdicts, no critiques).")
        elif f.status == "missing" and f.name == INITIAL_STATE:
            notes.append(f"{INITIAL_STATE} is missing (the run was started by a funcgrad that did not write it): "
                         "the prompts are not compared with the ones the run started from.")
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
    """The HTML text of a run's report (see module docs); ``initial`` (else the run's initial_state.json) enables the prompt diffs."""
    initial_given = initial is not None
    initial = initial if initial is not None else view.initial_state
    attempts = {(st.step, st.attempt): st for st in view.steps}
    fs = view.fit
    final = fs.state if fs is not None else view.final_state
    prompts = []
    if initial is not None and final is not None:
        for name in initial.names:
            after = final[name].value if name in final else ""
            prompts.append({"name": name, "role": initial[name].role, "changed": initial[name].value != after,
                            "diff": text_diff(initial[name].value, after)})
    train = [(step, phase, r) for step, phase, r in view.traces if phase == "train"]
    prefixes: dict[tuple[int, str], str] = {}
    for n, (step, _, r) in enumerate(train):
        prefixes.setdefault((step, r.example.id), f"t{n}")
    grads: dict[tuple[int, str], list] = {}
    for st in view.steps:
        rounds = {e.call: e.round for e in st.effects if e.kind == "call"}
        for g in st.gradients:
            grads.setdefault((st.step, g.example_id), []).append(_gradient_view(st, g, rounds, prefixes))
    traces = [_trace_view(step, phase, r, f"t{n}", grads.get((step, r.example.id), [])) for n, (step, phase, r) in enumerate(train)]
    pairs = held_out_pairs(view.traces)
    difference = held_out_difference(pairs)
    curve = _curve(view, attempts)
    context = {
        "title": title or _title(view), "path": view.path, "files": view.files, "descriptions": RUN_FILES,
        "problems": _problems(view, initial_given=initial_given), "fit": fs, "final": final, "initial": initial, "prompts": prompts,
        "n_test": len(pairs), "difference": difference_text(difference) if difference is not None else "",
        "reading": _reading(difference), "selection": selection_text(fs) if fs is not None else "",
        "curve": Markup(curve_svg(curve)) if curve is not None else None,
        "n_proposals": len(curve.proposals) if curve else 0,
        "outcome_counts": {OUTCOME_LABELS[k]: sum(1 for p in curve.proposals if p.outcome == k) for k in OUTCOME_LABELS} if curve else {},
        "examples": _examples_view(pairs), "lineage": _lineage(view, attempts, prefixes),
        "steps": _steps_view(view, attempts, initial, prefixes, traces), "evaluations": _evaluations(view),
        "timing": _timing(view), "wall_s": view.wall_s,
        "usage": _usage_rows(view.usage), "history": view.history,
        "config": orjson.dumps(view.config, option=orjson.OPT_INDENT_2).decode() if view.config is not None else None,
    }
    return _env().get_template("run.html.j2").render(context)


def write_run_report(run_dir: str | Path, *, initial: PromptState | None = None, title: str = "") -> Path:
    """Write ``run_dir/report.html`` from the files in ``run_dir`` (atomically); returns its path.

    The prompts are compared with ``initial`` when given, else with initial_state.json
    (written when the run started); without either the page shows the final prompts
    and says why there is no diff.
    """
    path = Path(run_dir) / "report.html"
    write_atomic(path, run_page(read_run(run_dir), initial=initial, title=title).encode(), durable=True)
    return path


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("funcgrad.training", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
