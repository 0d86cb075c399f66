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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from funcgrad.core.errors import StateError
from funcgrad.core.run import Result
from funcgrad.core.state import PromptState, apply_updates
from funcgrad.training.records import FitState


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.3f}"


def history_tsv(fs: FitState) -> str:
    """One row per step: step, batch, train score, proposals, accepted, validation score."""
    rows = ["step\tbatch\ttrain_score\tproposals\taccepted\tval_score"]
    for e in fs.log:
        rows.append(f"{e.step}\t{','.join(e.batch)}\t{e.train_score:.3f}\t{len(e.proposals)}\t{int(e.accepted)}\t{e.val_score:.3f}")
    return "\n".join(rows) + "\n"


_VERDICT_LABELS = {
    "accepted": "accepted", "lost_minibatch": "rejected: lost on minibatch",
    "no_val_gain": "rejected: no validation gain", "no_update": "no update", "invalid": "invalid",
}


def proposal_counts(fs: FitState) -> dict[str, int]:
    """Accepted, rejected (by stage) and empty proposals over the run, from each proposal's verdict."""
    counts = dict.fromkeys(_VERDICT_LABELS.values(), 0)
    for e in fs.log:
        for p in e.proposals:
            counts[_VERDICT_LABELS[p.verdict.value]] += 1
    return counts


def _diff(before: str, after: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), old, new, lineterm="")
    return "```diff\n" + "\n".join(lines) + "\n```"


def proposals_markdown(fs: FitState, initial: PromptState) -> str:
    """Every proposal of the run with its verdict and, per param, a diff of its text against the value it would replace.

    The "current" value is the one the step started from: the initial prompts with
    every earlier accepted proposal applied.

    >>> from funcgrad.core.state import Param
    >>> from funcgrad.training.records import Proposal, StepLog
    >>> p = Proposal({"a": "Count items."}, verdict="no_val_gain", reason="did not beat the validation score")
    >>> fs = FitState(1, PromptState.of(a=Param("Count.")), {}, 0.0, 0.0, None, log=(StepLog(1, ("e0",), 0.0, (p,), False, 0.0),))
    >>> print(proposals_markdown(fs, PromptState.of(a=Param("Count."))))
    ### Step 1, proposal 1: rejected: no validation gain
    <BLANKLINE>
    did not beat the validation score
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
    current, parts = initial, []
    for e in fs.log:
        for i, p in enumerate(e.proposals, 1):
            verdict = p.verdict.value
            parts.append(f"### Step {e.step}, proposal {i}: {_VERDICT_LABELS.get(verdict, verdict)}")
            if p.reason:
                parts.append(p.reason)
            for name, text in p.values.items():
                before = current[name].value if name in current else ""
                parts.append(f"`{name}`:\n" + _diff(before, str(text), "current", "proposed"))
            if verdict == "accepted":
                try:
                    current = apply_updates(current, p.values)
                except StateError:
                    pass  # the verdict would have been "invalid"; keep showing diffs against the last good state
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


def report_markdown(
    fs: FitState, initial: PromptState, *, title: str, usage: Any, wall_s: float | None, results: Sequence[Result] = (),
) -> str:
    """The whole report.md text; ``results`` (the run's scored examples) feed :func:`loss_warnings`."""
    counts = proposal_counts(fs)
    lines = [
        f"# {title}",
        "",
        f"- stopped: {fs.stopped or 'running'} after {fs.step} steps",
        f"- test accuracy: {_fmt(fs.initial_test)} -> {_fmt(fs.final_test)}",
        f"- validation accuracy: {_fmt(fs.initial_val)} -> {_fmt(fs.val_score)}",
    ]
    if wall_s is not None:
        lines.append(f"- wall time of this invocation: {wall_s:.0f} s")
    warnings = loss_warnings(results)
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    lines += ["", "![learning curve](learning_curve.png)", "", "## Proposals", ""]
    lines += [f"- {k}: {v}" for k, v in counts.items()]
    lines += ["", proposals_markdown(fs, initial)]
    lines += ["", "## Calls and tokens", "", usage_markdown(usage), "", "## Prompts: initial vs final", "", prompt_diff(initial, fs.state)]
    lines += ["", "## Steps", "", "| step | train | proposals | accepted | val | reasons |", "|---|---|---|---|---|---|"]
    for e in fs.log:
        reasons = "; ".join(p.reason[:80] for p in e.proposals) or "-"
        lines.append(f"| {e.step} | {e.train_score:.2f} | {len(e.proposals)} | {'yes' if e.accepted else 'no'} | {e.val_score:.3f} | {reasons} |")
    return "\n".join(lines) + "\n"
