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
from pathlib import Path
from typing import Any

from funcgrad.core.state import PromptState
from funcgrad.training.fit import FitState


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
            counts[_VERDICT_LABELS[p["verdict"]]] += 1
    return counts


def prompt_diff(initial: PromptState, final: PromptState) -> str:
    """Markdown with a unified diff per param whose text changed (or a note that none did)."""
    parts = []
    for name in initial.names:
        before = initial[name].value
        after = final[name].value if name in final else ""
        if before == after:
            continue
        diff = difflib.unified_diff(before.splitlines(), after.splitlines(), "initial", "final", lineterm="")
        parts.append(f"### {name}\n```diff\n" + "\n".join(diff) + "\n```")
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


def report_markdown(fs: FitState, initial: PromptState, *, title: str, usage: Any, wall_s: float | None) -> str:
    """The whole report.md text."""
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
    lines += ["", "![learning curve](learning_curve.png)", "", "## Proposals", ""]
    lines += [f"- {k}: {v}" for k, v in counts.items()]
    lines += ["", "## Calls and tokens", "", usage_markdown(usage), "", "## Prompts: initial vs final", "", prompt_diff(initial, fs.state)]
    lines += ["", "## Steps", "", "| step | train | proposals | accepted | val | reasons |", "|---|---|---|---|---|---|"]
    for e in fs.log:
        reasons = "; ".join(p["reason"][:80] for p in e.proposals) or "-"
        lines.append(f"| {e.step} | {e.train_score:.2f} | {len(e.proposals)} | {'yes' if e.accepted else 'no'} | {e.val_score:.3f} | {reasons} |")
    return "\n".join(lines) + "\n"
