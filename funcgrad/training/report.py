"""Reports of a finished (or stopped) run: history table, learning curve, prompt diff, usage.

>>> from funcgrad.core.state import Param, PromptState
>>> print(prompt_diff(PromptState.of(a=Param("Count.")), PromptState.of(a=Param("Count items."))))
### a
```diff
--- initial
+++ final
@@ -1 +1 @@
-Count.
+Count items.
```
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from funcgrad.core.backward import OUTCOME_LABELS, StepTrace, outcome
from funcgrad.core.errors import StateError
from funcgrad.core.run import Result
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.core.stats import Paired, paired
from funcgrad.core.values import thaw
from funcgrad.training.records import FitState, Proposal
from funcgrad.training.counts import Counts, RunCounts


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.3f}"


def history_tsv(fs: FitState) -> str:
    """One row per step: step, batch, train score, proposals, accepted, validation score, then the counts
    behind the two scores (examples run, of them failed; empty when not recorded). A score over no
    answered example is ``n/a``.

    >>> from funcgrad.core.state import Param
    >>> from funcgrad.training.fit import StepLog
    >>> log = (StepLog(1, ("e0", "e1"), 1.0, (), False, 0.5, Counts(2, 1), Counts(4, 0)),)
    >>> history_tsv(FitState(1, PromptState.of(a=Param("x")), {}, 0.5, 0.5, None, log=log)).splitlines()[1].split()
    ['1', 'e0,e1', '1.000', '0', '0', '0.500', '2', '1', '4', '0']
    """
    rows = ["step\tbatch\ttrain_score\tproposals\taccepted\tval_score\ttrain_n\ttrain_failed\tval_n\tval_failed"]
    for e in fs.log:
        train, val = _tsv_score(e.train_score, e.train_counts), _tsv_score(e.val_score, e.val_counts)
        rows.append(f"{e.step}\t{','.join(e.batch)}\t{train}\t{len(e.proposals)}\t{int(e.accepted)}\t{val}"
                    f"\t{_tsv_counts(e.train_counts)}\t{_tsv_counts(e.val_counts)}")
    return "\n".join(rows) + "\n"


def proposal_outcome(proposal: Proposal, attempt: StepTrace | None = None) -> str:
    """The key of :data:`~funcgrad.core.backward.OUTCOME_LABELS` for a proposal (its recorded attempt tells a guard stop).

    >>> proposal_outcome(Proposal({"a": "x"}, verdict="no_val_gain"))
    'no_val_gain'
    """
    return outcome(proposal.verdict, attempt.candidates if attempt is not None else ())


def _tsv_score(score: float, counts: Counts | None) -> str:
    return "n/a" if counts is not None and counts.answered == 0 else f"{score:.3f}"


def _tsv_counts(counts: Counts | None) -> str:
    return "\t" if counts is None else f"{counts.n}\t{counts.failed}"


def _accuracy(score: float | None, counts: Counts | None) -> str:
    """A report line's figure: ``0.250 (over 60 examples, none failed)``; ``n/a`` over no answered example."""
    if score is None or (counts is not None and counts.answered == 0):
        return "n/a" + (f" (0 of {counts.n} examples answered)" if counts is not None and score is not None else "")
    return f"{score:.3f}" + (f" ({counts.describe()})" if counts is not None else "")


def unfinished_attempts(fs: FitState, steps: Sequence[StepTrace]) -> list[StepTrace]:
    """The recorded attempts of steps the run's log does not hold: the run stopped inside them (budget, failure,
    kill), so nothing they proposed was applied, but their verdicts and reasons are still the run's record.

    >>> from funcgrad.core.backward import StepTrace
    >>> fs = FitState(0, PromptState.of(), {}, 0.0, 0.0, None)
    >>> [(st.step, st.attempt) for st in unfinished_attempts(fs, [StepTrace(1, 1, "search", ()), StepTrace(1, 0, "search", ())])]
    [(1, 0), (1, 1)]
    """
    logged = {e.step for e in fs.log}
    return sorted((st for st in steps if st.step not in logged), key=lambda st: (st.step, st.attempt))


def proposal_counts(fs: FitState, steps: Sequence[StepTrace] = ()) -> dict[str, int]:
    """Proposals over the run per outcome label (``steps``, the recorded attempts, tell guard stops from other
    no-updates); the attempts of a step the run stopped inside count too (:func:`unfinished_attempts`)."""
    attempts = {(st.step, st.attempt): st for st in steps}
    counts = dict.fromkeys(OUTCOME_LABELS.values(), 0)
    for e in fs.log:
        for k, p in enumerate(e.proposals):
            counts[OUTCOME_LABELS[proposal_outcome(p, attempts.get((e.step, k)))]] += 1
    for st in unfinished_attempts(fs, steps):
        counts[OUTCOME_LABELS[outcome(st.verdict, st.candidates)]] += 1
    return counts


def proposal_reasons(proposal: Proposal) -> list[tuple[str, str]]:
    """``(param, reason)`` pairs saying once why a proposal ended as it did ("" = the whole step).

    A proposal with no value has the strategy's notes as its reasons (the loop's own
    reason only joins them); otherwise the loop's reason comes first, then the
    notes that say something else.

    >>> from funcgrad.core.strategy import Note
    >>> p = Proposal({}, [Note("a", "no_update", "too_short: a stub")], verdict="no_update", reason="no update: too_short: a stub")
    >>> proposal_reasons(p)
    [('a', 'too_short: a stub')]
    """
    notes = [(n.param, n.reason) for n in proposal.notes if n.reason]
    if proposal.verdict.value == "no_update" and notes:
        out = notes
    else:
        out = ([("", proposal.reason)] if proposal.reason else []) + notes
    return list(dict.fromkeys(out))


def held_out_pairs(traces: Iterable[tuple[int, str, Result]]) -> tuple[tuple[Result, Result], ...]:
    """``(before, after)`` per test example, in test order, from a run's ``(step, phase, result)`` entries.

    The first test result of an example is its score with the initial prompts, the
    last one its score with the final prompts; an example tested once is left out.

    >>> from funcgrad.core.run import Example, Loss
    >>> from funcgrad.core.trace import Record, Trace
    >>> r = lambda s: Result(Example("e", "q", "a"), "a", Trace((Record(0, "x", "input"),), output=0), Loss(s, ""))
    >>> [(b.loss.score, a.loss.score) for b, a in held_out_pairs([(0, "test", r(0.0)), (0, "val", r(0.0)), (3, "test", r(1.0))])]
    [(0.0, 1.0)]
    """
    first: dict[str, Result] = {}
    last: dict[str, Result] = {}
    for _, phase, result in traces:
        if phase != "test":
            continue
        if result.example.id in first:
            last[result.example.id] = result
        else:
            first[result.example.id] = result
    return tuple((first[k], last[k]) for k in first if k in last)


def _score(result: Result) -> float | None:
    return None if result.loss is None else result.loss.score


def held_out_difference(pairs: Sequence[tuple[Result, Result]]) -> Paired | None:
    """The paired test difference after - before (:func:`funcgrad.core.stats.paired`); None without pairs.

    A failed example (no score) on either side is left out, and ``n_examples`` says what remained.
    """
    if not pairs:
        return None
    return paired([[_score(a) for _, a in pairs]], [[_score(b) for b, _ in pairs]])


def _points(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "\u2212")


def difference_text(d: Paired) -> str:
    """The paired difference in one line, as the report page and report.md print it.

    >>> from funcgrad.core.stats import Paired
    >>> difference_text(Paired(0.033, -0.083, 0.15, 8, 46, 6, 0.79, 0.15, 60, 1))
    'Δ +3.3 points [−8.3, +15.0] (95 % bootstrap interval), W/T/L 8/46/6, sign test p = 0.79, MDE 15.0 points (n = 60)'
    """
    if d.n_examples == 0:
        return "no test example was scored both before and after"
    mde = f"MDE {100 * d.mde:.1f} points" if math.isfinite(d.mde) else "MDE: none (too few examples for the sign test to reach 5 %)"
    return (f"Δ {_points(d.diff)} points [{_points(d.low)}, {_points(d.high)}] ({100 * d.level:.0f} % bootstrap interval), "
            f"W/T/L {d.wins}/{d.ties}/{d.losses}, sign test p = {d.p:.2g}, {mde} (n = {d.n_examples})")


def selection_text(fs: FitState) -> str:
    """The validation scores, named as what they are: the set that selected the proposals.

    >>> from funcgrad.core.state import Param
    >>> fs = FitState(2, PromptState.of(a=Param("x")), {}, 0.45, 0.1, None, val_scores={f"v{i}": 0.0 for i in range(20)})
    >>> selection_text(fs)
    'validation (the selection set, n = 20): 0.100 -> 0.450; these examples chose the proposals, so the gain on them is optimistic'
    """
    n = f", n = {len(fs.val_scores)}" if fs.val_scores else ""
    return (f"validation (the selection set{n}): {_fmt(fs.initial_val)} -> {_fmt(fs.val_score)}; "
            "these examples chose the proposals, so the gain on them is optimistic")


def output_text(value: Any) -> str:
    """A pipeline output as plain text: strings as they are, mappings as ``key: value`` lines, sequences one item a line.

    >>> print(output_text({"answer": 3, "raw": "three lines"}))
    answer: 3
    raw: three lines
    >>> print(output_text(("a", 2)))
    a
    2
    """
    value = thaw(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "\n".join(f"{k}: {output_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "\n".join(output_text(v) for v in value)
    return "" if value is None else str(value)


def _diff(before: str, after: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), old, new, lineterm="")
    return "```diff\n" + "\n".join(lines) + "\n```"


def proposals_markdown(fs: FitState, initial: PromptState, steps: Sequence[StepTrace] = ()) -> str:
    """Every proposal of the run with its outcome, its reasons (each naming its param) and, per param, a diff.

    Attempts are numbered from 1 and outcomes named as on the report page
    (:data:`~funcgrad.core.backward.OUTCOME_LABELS`; ``steps``, the recorded attempts,
    tell a guard stop). The "current" value is the one the step started from: the
    initial prompts with every earlier accepted proposal applied.

    >>> from funcgrad.core.state import Param
    >>> from funcgrad.training.records import Proposal, StepLog
    >>> p = Proposal({"a": "Count items."}, verdict="no_val_gain", reason="did not beat the validation score")
    >>> fs = FitState(1, PromptState.of(a=Param("Count.")), {}, 0.0, 0.0, None, log=(StepLog(1, ("e0",), 0.0, (p,), False, 0.0),))
    >>> print(proposals_markdown(fs, PromptState.of(a=Param("Count."))))
    ### Step 1, attempt 1: rejected by validation
    <BLANKLINE>
    - did not beat the validation score
    <BLANKLINE>
    `a`:
    ```diff
    --- current
    +++ proposed
    @@ -1 +1 @@
    -Count.
    +Count items.
    ```
    """
    attempts = {(st.step, st.attempt): st for st in steps}
    current, parts = initial, []
    for e in fs.log:
        for i, p in enumerate(e.proposals, 1):
            verdict = p.verdict.value
            parts.append(f"### Step {e.step}, attempt {i}: {OUTCOME_LABELS[proposal_outcome(p, attempts.get((e.step, i - 1)))]}")
            reasons = proposal_reasons(p)
            if reasons:
                parts.append("\n".join(f"- `{param}`: {why}" if param else f"- {why}" for param, why in reasons))
            for name, text in p.values.items():
                before = current[name].value if name in current else ""
                parts.append(f"`{name}`:\n" + _diff(before, str(text), "current", "proposed"))
            if verdict == "accepted":
                try:
                    current = apply_updates(current, p.values)
                except StateError:
                    pass  # the verdict would have been "invalid"; keep showing diffs against the last good state
    for st in unfinished_attempts(fs, steps):
        parts.append(f"### Step {st.step}, attempt {st.attempt + 1}: {OUTCOME_LABELS[outcome(st.verdict, st.candidates)]} "
                     f"(the run stopped inside this step: {fs.stopped or 'running'}; nothing it proposed was applied)")
        if st.reason:
            parts.append(f"- {st.reason}")
    return "\n\n".join(parts) if parts else "No proposals were made."


def loss_warnings(results: Sequence[Result]) -> list[str]:
    """Warnings about the loss, from the scored examples of a run.

    One rule today: when at least 3 examples were scored, all got score 0 and all
    got the very same feedback, the loss probably never looked at the output, e.g.
    it reads a key that is never there, or tests ``isinstance(x, dict)`` on a
    read-only mapping (values arrive as ``collections.abc.Mapping``, not ``dict``).

    >>> from funcgrad.core.run import Example, Loss
    >>> from funcgrad.core.trace import Record, Trace
    >>> r = Result(Example("e", "q"), None, Trace((Record(0, "x", "input"),), output=0), Loss(0.0, "no answer"))
    >>> loss_warnings([r, r, r])[0][:40]
    'All 3 scored examples got score 0 and th'
    """
    scored = [r for r in results if not r.failed]
    feedback = {r.loss.feedback for r in scored}
    if len(scored) < 3 or len(feedback) != 1 or any(r.loss.score != 0 for r in scored):
        return []
    return [
        f"All {len(scored)} scored examples got score 0 and the same feedback {next(iter(feedback))[:120]!r}. "
        "The loss may be reading a key the output never has, or testing isinstance(x, dict): outputs arrive as "
        "read-only mappings and tuples, so test isinstance(x, collections.abc.Mapping) / collections.abc.Sequence. "
        "Check the loss on one traced output (funcgrad show RUN_DIR --limit 1)."
    ]


def prompt_diff(initial: PromptState, final: PromptState) -> str:
    """Markdown with a unified diff per param whose text changed (or a note that none did)."""
    parts = []
    for name in initial.names:
        before = initial[name].value
        after = final[name].value if name in final else ""
        if before == after:
            continue
        parts.append(f"### {name}\n" + _diff(before, after, "initial", "final"))
    return "\n\n".join(parts) if parts else "No prompt changed: every proposal was rejected or none was made."


def usage_markdown(usage: Any) -> str:
    """A markdown table of calls and tokens per (role, model) from a usage report's data."""
    rows = (usage or {}).get("rows", [])
    if not rows:
        return "No usage recorded."
    out = ["| role | model | calls | cached | failed | prompt tokens | completion tokens | tokens of cached answers |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['role']} | {r['model']} | {r['calls']} | {r.get('cached_calls', 0)} | {r.get('failed_calls', 0)} "
            f"| {r.get('prompt_tokens', 0)} | {r.get('completion_tokens', 0)} | {r.get('cached_tokens', 0)} |"
        )
    return "\n".join(out)


def plot_learning_curve(fs: FitState, path: Path, title: str = "") -> Path:
    """Save a PNG: validation score per step, test score at the start and the end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [0] + [e.step for e in fs.log]
    vals = [fs.initial_val] + [e.val_score for e in fs.log]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, vals, marker="o", label="validation (accepted state)")
    for e in fs.log:
        if e.accepted:
            ax.axvline(e.step, color="tab:green", alpha=0.15)
    if fs.initial_test is not None:
        ax.scatter([0], [fs.initial_test], color="tab:red", marker="s", zorder=3, label="test")
    if fs.final_test is not None:
        ax.scatter([fs.step], [fs.final_test], color="tab:red", marker="s", zorder=3)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "learning curve")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_markdown(fs: FitState, traces: Sequence[tuple[int, str, Result]] = (), run_counts: RunCounts = RunCounts()) -> list[str]:
    """The lines report.md opens with: the paired test difference, then validation named as the selection set,
    each accuracy saying over how many examples it was computed and how many failed (``run_counts``)."""
    pairs = held_out_pairs(traces)
    d = held_out_difference(pairs)
    n = f" (held out, n = {len(pairs)})" if pairs else ""
    rc = run_counts
    test = f"- test{n}: {_accuracy(fs.initial_test, rc.initial_test)} -> {_accuracy(fs.final_test, rc.final_test)}"
    val = f"- validation accuracy: {_accuracy(fs.initial_val, rc.initial_val)} -> {_accuracy(fs.val_score, rc.val)}"
    return [test + (f"; {difference_text(d)}" if d is not None else ""), f"- {selection_text(fs)}", val]


def report_markdown(
    fs: FitState, initial: PromptState, *, title: str, usage: Any, wall_s: float | None, results: Sequence[Result] = (),
    traces: Sequence[tuple[int, str, Result]] = (), steps: Sequence[StepTrace] = (), run_counts: RunCounts = RunCounts(),
) -> str:
    """The whole report.md text; ``results`` (the run's scored examples) feed :func:`loss_warnings`.

    ``traces`` (the run's ``(step, phase, result)`` entries) give the paired test
    difference; ``steps`` (its recorded attempts) name guard stops as the page does;
    ``run_counts`` say over how many examples each accuracy was computed and how many failed.
    """
    counts = proposal_counts(fs, steps)
    lines = [f"# {title}", "", *summary_markdown(fs, traces, run_counts),
             f"- stopped: {fs.stopped or 'running'} after {fs.step} steps"]
    if wall_s is not None:
        lines.append(f"- wall time of this invocation: {wall_s:.0f} s")
    warnings = loss_warnings(results)
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    lines += ["", "![learning curve](learning_curve.png)", "", "## Proposals", ""]
    lines += [f"- {k}: {v}" for k, v in counts.items()]
    lines += ["", proposals_markdown(fs, initial, steps)]
    lines += ["", "## Calls and tokens", "", usage_markdown(usage), "", "## Prompts: initial vs final", "", prompt_diff(initial, fs.state)]
    attempts = {(st.step, st.attempt): st for st in steps}
    lines += ["", "## Steps", "", "| step | train | attempts | accepted | val | outcomes |", "|---|---|---|---|---|---|"]
    for e in fs.log:
        outcomes = ", ".join(OUTCOME_LABELS[proposal_outcome(p, attempts.get((e.step, k)))] for k, p in enumerate(e.proposals)) or "-"
        train, val = _accuracy(e.train_score, e.train_counts), _accuracy(e.val_score, e.val_counts)
        lines.append(f"| {e.step} | {train} | {len(e.proposals)} | {'yes' if e.accepted else 'no'} | {val} | {outcomes} |")
    return "\n".join(lines) + "\n"
