"""Figures of the HTML reports, drawn by matplotlib as inline SVG (text kept as text).

- :func:`curve_svg`: the learning curve with every proposal as a point, coloured by
  what the loop decided, and the model calls of each step per phase on a second panel;
- :func:`trace_graph_svg`: one forward trace as a graph laid out by networkx
  (topological generations as rows), nodes coloured by kind, each node an element
  with id ``{prefix}-n{record id}`` linking to ``#{prefix}-r{record id}``.

Every figure is a fresh :class:`matplotlib.figure.Figure` (no pyplot, no global
backend switch); the SVG is deterministic (no date, a fixed id salt).

>>> from funcgrad.core.trace import Record, Trace
>>> svg = trace_graph_svg(Trace((Record(0, "x", "input"), Record(1, "f", "fn", inputs=(0,), input_names=("a",)))), prefix="t")
>>> svg.startswith("<svg"), svg.count('id="t-n')
(True, 2)
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import attrs
import matplotlib
import networkx as nx
from matplotlib.figure import Figure

from funcgrad.core.trace import Trace

# Outcome of a proposal -> (legend label, marker, colour); the order is the legend's.
OUTCOMES = {
    "accepted": ("accepted", "o", "#1a9850"),
    "lost_minibatch": ("rejected by minibatch", "v", "#f46d43"),
    "no_val_gain": ("rejected by validation", "X", "#d73027"),
    "guard": ("stopped by a guard", "s", "#7b3294"),
    "no_update": ("no update", "D", "#999999"),
    "invalid": ("invalid", "P", "#000000"),
}

KIND_COLOURS = {"input": "#e0e0e0", "llm": "#9ecae1", "fn": "#c7e9c0", "retrieve": "#fdd0a2", "loss": "#fcbba1"}

PHASE_COLOURS = {
    "train": "#4292c6", "rerun": "#9ecae1", "minibatch": "#fd8d3c", "strategy-eval": "#fdae6b", "val": "#e6550d",
    "test": "#756bb1", "backward": "#31a354", "optimizer": "#a1d99b",
}


@attrs.frozen
class ProposalPoint:
    """One proposal on the learning curve: step, attempt, outcome (a key of :data:`OUTCOMES`), score shown."""

    step: int
    attempt: int
    outcome: str
    score: float


@attrs.frozen
class Curve:
    """What the learning-curve figure shows.

    ``val``: ``(step, validation score of the kept state)`` from step 0; ``proposals``;
    ``test``: ``(step, test score)`` points; ``calls``: ``{phase: {step: model calls}}``.
    """

    val: tuple[tuple[int, float], ...] = attrs.field(converter=tuple)
    proposals: tuple[ProposalPoint, ...] = attrs.field(default=(), converter=tuple)
    test: tuple[tuple[int, float], ...] = attrs.field(default=(), converter=tuple)
    calls: Mapping[str, Mapping[int, int]] = attrs.field(factory=dict)


def _svg(fig: Figure, salt: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), text as text, ids salted by ``salt``."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def curve_svg(curve: Curve) -> str:
    """The learning curve (top) and the model calls per step and phase (bottom) as one SVG.

    Proposal markers are grouped per outcome in ``<g id="outcome-{key}">`` elements.

    >>> svg = curve_svg(Curve([(0, 0.1), (1, 0.3)], [ProposalPoint(1, 0, "accepted", 0.3)], calls={"train": {1: 3}}))
    >>> 'id="outcome-accepted"' in svg, "rejected by validation" in svg
    (True, False)
    """
    fig = Figure(figsize=(7.5, 5.2))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    steps = [s for s, _ in curve.val]
    top.step(steps, [v for _, v in curve.val], where="post", color="#2171b5", label="validation (kept state)")
    top.plot(steps, [v for _, v in curve.val], "o", color="#2171b5", markersize=3)
    for key, (label, marker, colour) in OUTCOMES.items():
        points = [p for p in curve.proposals if p.outcome == key]
        if not points:
            continue
        coll = top.scatter(
            [p.step + 0.08 * p.attempt for p in points], [p.score for p in points], marker=marker, s=46,
            color=colour, edgecolor="white", linewidth=0.6, zorder=3, label=f"proposal: {label}",
        )
        coll.set_gid(f"outcome-{key}")
    if curve.test:
        top.plot([s for s, _ in curve.test], [v for _, v in curve.test], "s--", color="#54278f", markersize=7, label="test")
    top.set_ylim(-0.04, 1.04)
    top.set_ylabel("accuracy")
    top.grid(alpha=0.3)
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    steps = sorted(set(steps).union(*(per_step for per_step in curve.calls.values())))  # a step still running too
    base = [0] * len(steps)
    for phase, per_step in curve.calls.items():
        heights = [per_step.get(s, 0) for s in steps]
        bars = bottom.bar(steps, heights, bottom=base, width=0.6, color=PHASE_COLOURS.get(phase, "#bbbbbb"), label=phase)
        for n, patch in enumerate(bars.patches):
            patch.set_gid(f"calls-{phase}-{n}")
        base = [b + h for b, h in zip(base, heights)]
    bottom.set_ylabel("model calls")
    bottom.set_xlabel("step (0 = initial evaluation)")
    bottom.set_xticks(steps)
    bottom.grid(axis="y", alpha=0.3)
    if curve.calls:
        bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.subplots_adjust(left=0.09, right=0.72, top=0.97, bottom=0.1, hspace=0.08)
    return _svg(fig, "curve")


def node_label(trace: Trace, record_id: int) -> str:
    """``node`` or, for a node called more than once in ``trace``, ``node#call_index``.

    >>> from funcgrad.core.trace import Record
    >>> t = Trace((Record(0, "x", "input"), Record(1, "q", "llm", 0, (0,), ("a",)), Record(2, "q", "llm", 1, (1,), ("a",))))
    >>> node_label(t, 2), node_label(t, 0)
    ('q#1', 'x')
    """
    r = trace[record_id]
    repeated = sum(1 for other in trace.records if other.node == r.node) > 1
    return f"{r.node}#{r.call_index}" if repeated else r.node


def trace_graph_svg(trace: Trace, *, prefix: str, reached: Mapping[int, int] | None = None) -> str:
    """The trace as a graph: one box per record (rows = topological generations), edges from inputs.

    ``reached`` maps record ids to the number of gradients that reached them (shown
    as ``∇n`` and a thick outline). A record with an error gets a red outline.
    """
    reached = reached or {}
    g = nx.DiGraph()
    g.add_nodes_from(r.id for r in trace.records)
    g.add_edges_from((i, r.id) for r in trace.records for i in r.inputs)
    for layer, ids in enumerate(nx.topological_generations(g)):
        for n in sorted(ids):
            g.nodes[n]["layer"] = layer
    layers = 1 + max((d["layer"] for _, d in g.nodes(data=True)), default=0)
    widest = max((sum(1 for _, d in g.nodes(data=True) if d["layer"] == k) for k in range(layers)), default=1)
    pos = nx.multipartite_layout(g, subset_key="layer", align="horizontal", scale=1.0)
    pos = {n: (x, -y) for n, (x, y) in pos.items()}  # generation 0 on top
    fig = Figure(figsize=(max(2.6, 2.2 * widest), 0.3 + 0.75 * layers))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    nx.draw_networkx_edges(
        g, pos, ax=ax, arrows=True, arrowstyle="-|>", arrowsize=10, node_size=0, edge_color="#777777",
        connectionstyle="arc3,rad=0.25", width=1.0, min_source_margin=10, min_target_margin=9,
    )
    for r in trace.records:
        x, y = pos[r.id]
        label = node_label(trace, r.id) + (f"  ∇{reached[r.id]}" if r.id in reached else "")
        edge = "#d7301f" if r.error else ("#08306b" if r.id in reached else "#555555")
        text = ax.text(
            x, y, label, ha="center", va="center", fontsize=9, family="monospace",
            bbox={"boxstyle": "round,pad=0.35", "fc": KIND_COLOURS.get(r.kind, "#ffffff"), "ec": edge,
                  "lw": 2.2 if (r.error or r.id in reached) else 0.8},
        )
        text.set_gid(f"{prefix}-n{r.id}")
        text.set_url(f"#{prefix}-r{r.id}")
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    pad_x = 0.5 if widest > 1 else 1.0
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    ax.set_ylim(min(ys) - 0.6 / max(layers, 1) - 0.05, max(ys) + 0.6 / max(layers, 1) + 0.05)
    return _svg(fig, prefix)
