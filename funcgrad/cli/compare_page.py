"""``compare.html``: a comparison grid as one self-contained page, read from ``results.json``.

Per task: the paired differences against no optimization with their 95 % intervals
(one dot per seed), the learning curves of every cell overlaid, a table of the arms
(the "no optimization" row first; named columns, accuracy in %, differences in
points, ``p < 0.001`` rather than raw floats, ``*`` where the Holm-corrected p is
below 0.05), every pair of strategies, and the cost per arm; then links to the cells'
own reports. Like ``report.html`` it has no script and fetches nothing; every text from
a config (task and strategy labels) is escaped by Jinja2 and isolated for bidi
(``<bdi>``), and every figure carries a title and a text alternative.

``results.json`` is read leniently: a missing key shows as ``n/a`` and an older file
without learning curves just lacks that figure.

>>> import tempfile
>>> "results.json could not be read" in write_compare_report(tempfile.mkdtemp()).read_text()
True
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import orjson
from markupsafe import Markup, escape
from matplotlib.figure import Figure

from funcgrad.engines.files import write_atomic

BASELINE = "no optimization"
MINUS = "\u2212"
STRATEGY_COLOURS = ("#1f77b4", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#666666")


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, null, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def percent(value: Any) -> str:
    """An accuracy (0..1) in %, one decimal; ``n/a`` when missing.

    >>> percent(0.25), percent(None)
    ('25.0', 'n/a')
    """
    v = _number(value)
    return "n/a" if v is None else f"{100 * v:.1f}"


def points(value: Any) -> str:
    """A difference (0..1 scale) in signed points with a true minus sign; ``n/a`` when missing.

    >>> points(0.0333), points(-0.083), points(0)
    ('+3.3', '−8.3', '0.0')
    """
    v = _number(value)
    if v is None:
        return "n/a"
    text = f"{100 * v:.1f}"
    if text in ("0.0", "-0.0"):
        return "0.0"
    return text.replace("-", MINUS) if text.startswith("-") else "+" + text


def p_value(value: Any) -> str:
    """A p-value for people: three decimals, ``< 0.001`` below that; ``n/a`` when missing.

    >>> p_value(2.98e-08), p_value(0.0412), p_value(1.0)
    ('< 0.001', '0.041', '1.000')
    """
    v = _number(value)
    if v is None:
        return "n/a"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def _count(value: Any) -> str:
    v = _number(value)
    if v is None:
        return "n/a"
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def _mean(values: Any) -> float | None:
    present = [v for v in (_number(x) for x in values) if v is not None] if isinstance(values, list) else []
    return sum(present) / len(present) if present else None


def _accuracy(values: Any) -> dict:
    """Mean over seeds and the per-seed values (shown when there are 2 to 5)."""
    values = values if isinstance(values, list) else []
    per_seed = [percent(v) for v in values] if 1 < len(values) <= 5 else []
    missing = sum(_number(v) is None for v in values)
    return {"mean": percent(_mean(values)), "per_seed": per_seed, "missing": missing, "n": len(values)}


def _interval(paired: Mapping) -> str:
    low, high = _number(paired.get("low")), _number(paired.get("high"))
    return "n/a" if low is None or high is None else f"[{points(low)}, {points(high)}]"


def _stats(comparison: Mapping) -> dict:
    """The shown figures of one paired comparison (``paired`` as in results.json, plus ``p_holm``)."""
    paired = comparison.get("paired") if isinstance(comparison.get("paired"), Mapping) else {}
    holm = _number(comparison.get("p_holm"))
    counts = [paired.get(k) for k in ("wins", "ties", "losses")]
    return {
        "diff": points(paired.get("diff")), "interval": _interval(paired), "p": p_value(paired.get("p")),
        "holm": p_value(holm), "significant": holm is not None and holm < 0.05,
        "wtl": " / ".join(str(c) for c in counts) if all(isinstance(c, int) for c in counts) else "n/a",
        "mde": points(paired.get("mde")).lstrip("+"), "n": paired.get("n_examples"),
    }


def _svg(fig: Figure, salt: str, title: str, description: str) -> Markup:
    """The figure as an inline ``<svg role="img">`` with ``title`` and ``description`` as its text alternative."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    head_end = text.index(">") + 1
    alt = f"<title>{escape(title)}</title><desc>{escape(description)}</desc>"
    return Markup(text[: head_end - 1] + ' role="img"' + text[head_end - 1: head_end] + alt + text[head_end:])


def _wrap(label: str) -> str:
    return textwrap.fill(label, 16, break_long_words=True, break_on_hyphens=False)


def delta_svg(task: str, arms: Sequence[dict]) -> Markup:
    """Paired test difference vs no optimization per strategy: the mean with its 95 % interval, one dot per seed.

    ``arms``: ``{"label", "diff", "low", "high", "seed_diffs"}`` on the 0..1 scale (None = missing).

    >>> svg = delta_svg("t", [{"label": "a", "diff": 0.1, "low": 0.0, "high": 0.2, "seed_diffs": [0.1]}])
    >>> "<title>t: paired test difference" in svg, "a: +10.0 points, 95 % interval [0.0, +20.0]" in svg
    (True, True)
    """
    fig = Figure(figsize=(max(5.0, 1.3 * len(arms) + 2.0), 3.9), layout="constrained")
    ax = fig.subplots()
    ax.axhline(0, color="#555555", linewidth=1.2, label=f"{BASELINE} (0)")
    described = []
    for x, arm in enumerate(arms):
        diff, low, high = (_number(arm.get(k)) for k in ("diff", "low", "high"))
        dots = [100 * v for v in (_number(d) for d in arm.get("seed_diffs") or []) if v is not None]
        ax.scatter([x + 0.18] * len(dots), dots, color="#222222", s=18, marker="o", zorder=3,
                   label="one seed" if x == 0 and dots else None)
        if diff is None:
            described.append(f"{arm['label']}: n/a")
            continue
        err = [[100 * (diff - low)], [100 * (high - diff)]] if low is not None and high is not None else None
        ax.errorbar([x], [100 * diff], yerr=err, fmt="D", color="#1f4e8c", markersize=7, capsize=6, linewidth=2,
                    label="mean, 95 % interval" if x == 0 else None)
        described.append(f"{arm['label']}: {points(diff)} points, 95 % interval {_interval(arm)}")
    ax.set_xticks(range(len(arms)), [_wrap(a["label"]) for a in arms], fontsize=10)
    ax.set_xlim(-0.6, len(arms) - 0.4)
    ax.set_ylabel("test Δ vs no optimization (points)", fontsize=10)
    ax.tick_params(labelsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=10, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=3, frameon=False, borderaxespad=0)
    title = f"{task}: paired test difference against no optimization"
    return _svg(fig, f"delta-{task}", title, "; ".join(described) + ".")


def curves_svg(task: str, arms: Sequence[dict]) -> Markup:
    """Validation accuracy of the kept prompts per step, every cell of a task overlaid (one colour per strategy).

    ``arms``: ``{"label", "curves"}``, each curve (one per seed) a list of ``[step, accuracy]`` pairs.

    >>> svg = curves_svg("t", [{"label": "a", "curves": [[[0, 0.2], [1, 0.5]]]}])
    >>> "a: 20.0 → 50.0 after step 1" in svg
    True
    """
    fig = Figure(figsize=(6.5, 3.9), layout="constrained")
    ax = fig.subplots()
    described = []
    for i, arm in enumerate(arms):
        colour = STRATEGY_COLOURS[i % len(STRATEGY_COLOURS)]
        marker = "os^vDP*X"[i % 8]
        ends = []
        for n, curve in enumerate(arm["curves"]):
            pts = [(p[0], _number(p[1])) for p in curve if isinstance(p, list) and len(p) == 2]
            pts = [(s, v) for s, v in pts if v is not None]
            if not pts:
                continue
            offset = 0.04 * (i - (len(arms) - 1) / 2)  # strategies side by side where their lines coincide
            ax.step([s + offset for s, _ in pts], [100 * v for _, v in pts], where="post", color=colour, linewidth=1.6,
                    alpha=0.85, marker=marker, markersize=4.5, label=arm["label"] if n == 0 else None)
            ends.append(f"{percent(pts[0][1])} → {percent(pts[-1][1])} after step {pts[-1][0]}")
        described.append(f"{arm['label']}: " + ("; ".join(ends) if ends else "no curve"))
    ax.set_ylim(-4, 104)
    ax.set_xlabel("step (0 = initial prompts)", fontsize=10)
    ax.set_ylabel("validation accuracy (%)", fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=2, frameon=False, borderaxespad=0)
    title = f"{task}: validation accuracy of the kept prompts per step, every cell (one line per seed)"
    return _svg(fig, f"curves-{task}", title, "Per strategy, each seed from the initial to the last step: " + " | ".join(described) + ".")


def _phases(rows: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for key in ("answers", "tokens") if isinstance(r.get(key), Mapping) for k in r[key]))


def _task_view(task: str, data: Any) -> dict:
    data = {"rows": data} if isinstance(data, list) else data if isinstance(data, Mapping) else {}
    rows = [r for r in data.get("rows", []) if isinstance(r, Mapping) and isinstance(r.get("strategy"), str)]
    comparisons = [c for c in data.get("comparisons", []) if isinstance(c, Mapping)]
    vs_none = {c.get("a"): c for c in comparisons if c.get("b") == BASELINE}
    baseline = [v for r in rows for v in (r.get("before") if isinstance(r.get("before"), list) else [])]
    arms = []
    for r in rows:
        comp = vs_none.get(r["strategy"], {})
        arms.append({
            "label": r["strategy"], "seeds": len(r.get("seeds") or r.get("after") or []),
            "before": _accuracy(r.get("before")), "after": _accuracy(r.get("after")), **_stats(comp),
            "accepted": _number(r.get("accepted")), "steps": _number(r.get("steps")), "wall": _number(r.get("wall_s")),
            "answers": r.get("answers") if isinstance(r.get("answers"), Mapping) else {},
            "tokens": r.get("tokens") if isinstance(r.get("tokens"), Mapping) else {},
        })
    pairs = [{"a": c.get("a"), "b": c.get("b"), **_stats(c)} for c in comparisons if c.get("b") != BASELINE]
    delta = delta_svg(task, [
        {"label": r["strategy"], "seed_diffs": r.get("seed_diffs"),
         **{k: (vs_none.get(r["strategy"], {}).get("paired") or {}).get(k) for k in ("diff", "low", "high")}}
        for r in rows
    ]) if rows else None
    with_curves = [{"label": r["strategy"], "curves": r["val_curves"]} for r in rows if isinstance(r.get("val_curves"), list)]
    curves = curves_svg(task, with_curves) if with_curves else None
    n = next((a["n"] for a in arms if isinstance(a["n"], int) and a["n"]), None)
    return {"task": task, "arms": arms, "pairs": pairs, "baseline": {"before": _accuracy(baseline), "cells": len(baseline)},
            "phases": _phases(rows), "delta": delta, "curves": curves, "n_examples": n}


def compare_page(results: Any, *, cells: Sequence[tuple[str, str]] = (), problem: str = "") -> str:
    """The HTML of a comparison grid from the data ``funcgrad compare`` writes to ``results.json``.

    ``results`` maps each task to ``{"rows": [...], "comparisons": [...]}`` (see
    :func:`funcgrad.cli.compare.analyse`); ``cells`` are ``(label, href)`` links to the
    cells' own reports; ``problem`` is shown at the top.

    >>> page = compare_page({"t": {"rows": [{"strategy": "<b>", "before": [0.5], "after": [1.0]}]}})
    >>> "<bdi>&lt;b&gt;</bdi>" in page, "<th>Test after (%)</th>" in page
    (True, True)
    """
    tasks = [_task_view(task, data) for task, data in (results.items() if isinstance(results, Mapping) else ())]
    return _env().get_template("compare.html.j2").render(
        {"title": "strategy comparison", "tasks": tasks, "cells": cells, "problem": problem, "baseline": BASELINE, "count": _count}
    )


def write_compare_report(root: str | Path) -> Path:
    """Write ``root/compare.html`` from ``root/results.json``, linking every cell's report.html; returns its path."""
    root = Path(root)
    results, problem = None, ""
    try:
        results = orjson.loads((root / "results.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        problem = f"results.json could not be read: {type(exc).__name__}: {exc}"
    cells = [(p.parent.name, p.relative_to(root).as_posix()) for p in sorted(root.glob("**/report.html"))]
    path = root / "compare.html"
    write_atomic(path, compare_page(results, cells=cells, problem=problem).encode(), durable=True)
    return path


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("funcgrad.training", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
