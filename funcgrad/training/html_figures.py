"""Figures of the HTML reports, drawn by matplotlib as inline SVG (text kept as text).

- :func:`curve_svg`: the learning curve with every proposal as a point, coloured by
  what the loop decided, and the model calls of each step per phase on a second panel;
- :func:`trace_graph_svg`: one forward trace as a graph laid out by networkx
  (topological generations as rows), nodes coloured by kind, each node an element
  with id ``{prefix}-n{record id}`` linking to ``#{prefix}-r{record id}``; data edges
  solid grey, control edges (:func:`control_edges`) dashed orange, each an element with
  id ``{prefix}-c{from}-{to}``, with a legend and the list in the text alternative.

Every figure is a fresh :class:`matplotlib.figure.Figure` (no pyplot, no global
backend switch); the SVG is deterministic (no date, a fixed id salt).

>>> from funcgrad.core.trace import Record, Trace
>>> svg = trace_graph_svg(Trace((Record(0, "x", "input"), Record(1, "f", "fn", inputs=(0,), input_names=("a",)))), prefix="t")
>>> svg.startswith("<svg"), svg.count('id="t-n'), 'target="_blank"' in svg
(True, 2, False)
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping

import attrs
import matplotlib
import networkx as nx
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from funcgrad.core.backward import OUTCOME_LABELS
from funcgrad.core.trace import Trace, trailing_reads

# Outcome of a proposal -> (legend label, marker, colour); the order is the legend's. Labels are the ones every
# report uses (core.backward.OUTCOME_LABELS); markers differ in shape, colours are the Okabe-Ito palette.
_MARKS = {
    "accepted": ("o", "#009E73"), "lost_minibatch": ("v", "#E69F00"), "no_val_gain": ("X", "#D55E00"),
    "guard": ("^", "#CC79A7"), "no_update": ("D", "#999999"), "invalid": ("P", "#000000"),
}
OUTCOMES = {key: (label, *_MARKS[key]) for key, label in OUTCOME_LABELS.items()}
# Outcomes whose proposals were never scored: drawn in a strip under the score axis, not at a made-up score.
UNSCORED_Y = -0.14
BODY_PT = 10.5  # 14 px, the page's body text, at the figure's natural size

KIND_COLOURS = {"input": "#e0e0e0", "llm": "#9ecae1", "fn": "#c7e9c0", "retrieve": "#fdd0a2", "loss": "#fcbba1"}
DATA_EDGE, CONTROL_EDGE = "#777777", "#E69F00"  # trace graph edges: solid grey, dashed orange (Okabe-Ito)

PHASE_COLOURS = {
    "train": "#4292c6", "rerun": "#9ecae1", "minibatch": "#fd8d3c", "strategy-eval": "#fdae6b", "val": "#e6550d",
    "test": "#756bb1", "backward": "#31a354", "optimizer": "#a1d99b",
}


@attrs.frozen
class ProposalPoint:
    """One proposal on the learning curve: step, attempt, outcome (a key of :data:`OUTCOMES`), its measured score.

    ``score`` is None for a proposal that was never scored (stopped by a guard, no update, invalid).
    """

    step: int
    attempt: int
    outcome: str
    score: float | None


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


def _svg(fig: Figure, salt: str, title: str, desc: str = "") -> str:
    """The figure as an ``<svg>`` element (no XML prolog, no metadata), text as text, ids salted by ``salt``.

    ``title``/``desc`` become the SVG's ``<title>``/``<desc>`` (its name and text
    alternative). Links stay in the page: matplotlib's ``target="_blank"`` is removed.
    """
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    text = text.replace(' target="_blank"', "")
    head = text.index(">") + 1
    alt = f"<title>{html.escape(title)}</title>" + (f"<desc>{html.escape(desc)}</desc>" if desc else "")
    return text[:head].replace("<svg ", '<svg role="img" ' if "<a " not in text else '<svg role="group" ', 1) + alt + text[head:]


def curve_svg(curve: Curve) -> str:
    """The learning curve (top) and the model calls per step and phase (bottom) as one SVG.

    Only measured scores are drawn at a score: a proposal never scored sits in the
    strip under the axis ("not scored"); test scores are separate stars (no line
    joins them). Proposal markers are grouped per outcome in ``<g id="outcome-{key}">``
    elements; legend and ticks are at body text size.

    >>> svg = curve_svg(Curve([(0, 0.1), (1, 0.3)], [ProposalPoint(1, 0, "accepted", 0.3)], calls={"train": {1: 3}}))
    >>> 'id="outcome-accepted"' in svg, "rejected by validation" in svg, "<title>" in svg
    (True, False, True)
    """
    with matplotlib.rc_context({"font.size": BODY_PT, "legend.fontsize": BODY_PT, "xtick.labelsize": BODY_PT,
                                "ytick.labelsize": BODY_PT, "axes.labelsize": BODY_PT}):
        fig = Figure(figsize=(5.6, 7.0))
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.6]})
        steps = [s for s, _ in curve.val]
        top.step(steps, [v for _, v in curve.val], where="post", color="#0072B2", linewidth=1.6)
        top.plot(steps, [v for _, v in curve.val], "o", color="#0072B2", markersize=4, label="validation of the kept state")
        for key, (label, marker, colour) in OUTCOMES.items():
            points = [p for p in curve.proposals if p.outcome == key]
            if not points:
                continue
            coll = top.scatter(
                [p.step + 0.1 * (p.attempt + 1) for p in points], [UNSCORED_Y if p.score is None else p.score for p in points],
                marker=marker, s=70, color=colour, edgecolor="#222222", linewidth=0.6, zorder=3, label=f"proposal: {label}",
            )
            coll.set_gid(f"outcome-{key}")
        if curve.test:
            top.plot([s for s, _ in curve.test], [v for _, v in curve.test], "*", linestyle="none", color="#000000",
                     markersize=13, label="test (start and end)")
        if any(p.score is None for p in curve.proposals):
            top.axhline((UNSCORED_Y + 0) / 2 - 0.02, color="#bbbbbb", linewidth=0.8)
        top.set_ylim(UNSCORED_Y - 0.06, 1.04)
        top.set_yticks([UNSCORED_Y, 0, 0.25, 0.5, 0.75, 1.0], ["not scored", "0", "0.25", "0.5", "0.75", "1"])
        top.set_ylabel("accuracy")
        top.grid(alpha=0.3)
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
        handles, labels = top.get_legend_handles_labels()
        extra = bottom.get_legend_handles_labels() if curve.calls else ([], [])
        fig.legend(handles + extra[0], labels + [f"calls: {x}" for x in extra[1]], loc="lower center", ncol=2,
                   frameon=False, bbox_to_anchor=(0.5, 0.0))
        rows = -(-(len(labels) + len(extra[1])) // 2)
        legend_h = (0.22 * rows + 0.1) / 7.0  # legend rows in inches, as a fraction of the height
        fig.subplots_adjust(left=0.19, right=0.97, top=0.98, bottom=0.08 + legend_h, hspace=0.08)
        desc = (f"Validation score of the kept state over {len(curve.val)} evaluations; {len(curve.proposals)} proposals "
                f"({', '.join(f'{sum(1 for p in curve.proposals if p.outcome == k)} {OUTCOMES[k][0]}' for k in OUTCOMES if any(p.outcome == k for p in curve.proposals)) or 'none'})"
                + (f"; test {' then '.join(f'{v:.3f}' for _, v in curve.test)}" if curve.test else "") + ".")
        return _svg(fig, "curve", "Learning curve and model calls per step", desc)


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


def control_edges(trace: Trace) -> tuple[tuple[int, int], ...]:
    """``(read record, dependent record)`` pairs: the pipeline read the first record's value for control flow,
    and the second is the first record created after the read (``Record.control``), or the loss record when the
    run called nothing after it.

    >>> from funcgrad.core.trace import Record
    >>> t = Trace((Record(0, "x", "input"), Record(1, "review", "llm", inputs=(0,), input_names=("a",)),
    ...            Record(2, "fix", "llm", inputs=(0,), input_names=("a",), control=(1,)),
    ...            Record(3, "review", "llm", inputs=(2,), input_names=("a",)), Record(4, "loss", "loss", inputs=(2,))),
    ...           output=2, control=(1, 3))
    >>> control_edges(t)
    ((1, 2), (3, 4))
    """
    edges = [(i, r.id) for r in trace.records for i in r.control]
    if trace.loss is not None:
        edges += [(i, trace.loss.id) for i in trailing_reads(trace)]
    return tuple(edges)


def trace_graph_svg(trace: Trace, *, prefix: str, reached: Mapping[int, int] | None = None) -> str:
    """The trace as a graph: one box per record (rows = topological generations), edges from inputs.

    ``reached`` maps record ids to the number of gradients that reached them (shown
    as ``∇n`` and a thick outline). A record with an error gets a red outline. Control
    edges (:func:`control_edges`) are dashed and orange, each in ``<g id="{prefix}-c{from}-{to}">``;
    a trace with any gets a legend and lists them in the SVG's ``<desc>``.
    """
    reached = reached or {}
    controls = control_edges(trace)
    g = nx.DiGraph()
    g.add_nodes_from(r.id for r in trace.records)
    data = [(i, r.id) for r in trace.records for i in r.inputs]
    g.add_edges_from(data)
    g.add_edges_from(controls)  # edges go forward in the trace: still a DAG, rows follow the run's order
    for layer, ids in enumerate(nx.topological_generations(g)):
        for n in sorted(ids):
            g.nodes[n]["layer"] = layer
    layers = 1 + max((d["layer"] for _, d in g.nodes(data=True)), default=0)
    widest = max((sum(1 for _, d in g.nodes(data=True) if d["layer"] == k) for k in range(layers)), default=1)
    pos = nx.multipartite_layout(g, subset_key="layer", align="horizontal", scale=1.0)
    pos = {n: (x, -y) for n, (x, y) in pos.items()}  # generation 0 on top
    legend_h = 0.3 if controls else 0.0  # inches under the graph for the edge legend
    height = 0.3 + 0.75 * layers + legend_h
    fig = Figure(figsize=(max(2.6, 2.2 * widest), height))
    ax = fig.add_axes((0, legend_h / height, 1, 1 - legend_h / height))
    ax.set_axis_off()
    nx.draw_networkx_edges(
        g, pos, ax=ax, edgelist=data, arrows=True, arrowstyle="-|>", arrowsize=10, node_size=0, edge_color=DATA_EDGE,
        connectionstyle="arc3,rad=0.25", width=1.0, min_source_margin=10, min_target_margin=9,
    )
    if controls:
        drawn = nx.draw_networkx_edges(
            g, pos, ax=ax, edgelist=list(controls), arrows=True, arrowstyle="-|>", arrowsize=10, node_size=0,
            edge_color=CONTROL_EDGE, style="dashed", connectionstyle="arc3,rad=-0.25", width=1.4,
            min_source_margin=10, min_target_margin=9,
        )
        for (a, b), patch in zip(controls, drawn):
            patch.set_gid(f"{prefix}-c{a}-{b}")
        handles = [Line2D([], [], color=DATA_EDGE, lw=1.0, label="data edge"),
                   Line2D([], [], color=CONTROL_EDGE, lw=1.4, ls="--", label="control edge")]
        fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False, borderaxespad=0.2)
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
    names = ", ".join(node_label(trace, r.id) for r in trace.records)
    desc = f"Records in order: {names}. Each node links to its record."
    if controls:
        listed = ", ".join(f"{node_label(trace, a)} -> {node_label(trace, b)}" for a, b in controls)
        desc += f" Control edges (dashed; the run read the first value to decide what ran next): {listed}."
    return _svg(fig, prefix, f"Trace graph: {len(trace.records)} records", desc)
