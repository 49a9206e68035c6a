"""Colours, line styles and words shared by every drawing, so Mermaid, DOT, SVG, PNG and
ASCII agree.

Edges are drawn from this table, keyed by style (an edge kind of
:meth:`~calliope_graph.flow.spec.FlowSpec.edges`, or ``parallel``/``merge`` for data edges):
a construct that adds an edge kind adds one row here, and no renderer changes. How the edge
runs (down, or back up as a ``loop``) comes from the construct registry
(:func:`calliope_graph.flow.construct.edge_shape`), as does every node's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["EDGE_STYLES", "STATUS_STYLES", "EdgeStyle", "StatusStyle", "edge_style"]


@dataclass(frozen=True)
class EdgeStyle:
    name: str
    """What the legend calls it."""
    color: str
    width: float
    dash: tuple[float, ...] = ()
    """SVG dash pattern (empty: solid)."""
    priority: int = 9
    """When two edges of different kinds join the same two nodes, the lower one is drawn
    (the other is kept in the edge's ``extra``)."""
    mermaid: Literal["solid", "dotted", "thick"] = "solid"
    dot: tuple[str, ...] = ()
    """Extra Graphviz attributes."""
    label_format: str = "{}"
    """How the edge's label reads (``on {}`` for error routes)."""
    empty_label: str = ""
    """What it reads when the edge has no label."""
    ascii_in: str | None = None
    """The line the ASCII drawing writes on the box the edge enters (``str.format`` fields:
    ``source``, ``target``, ``target_label``, ``label``, ``source_port``, ``target_port``,
    ``bound``, ``at_once``, ``over``, ``condition``)."""
    ascii_out: str | None = None
    """The line the ASCII drawing writes on the box the edge leaves (same fields)."""


#: Keyed by :attr:`~calliope_graph.viz._layout.Route.style`.
EDGE_STYLES: dict[str, EdgeStyle] = {
    "data": EdgeStyle("data", "#5f6b7a", 1.4, priority=6),
    "parallel": EdgeStyle("parallel fan-out", "#2f6fde", 1.6, priority=6),
    "merge": EdgeStyle(
        "merge (many input)",
        "#2f6fde",
        1.6,
        (5.0, 2.0, 1.5, 2.0),
        priority=6,
        dot=('arrowhead="normal"',),
    ),
    "fallback": EdgeStyle(
        "fallback on error",
        "#e67e22",
        1.8,
        (7.0, 4.0),
        priority=2,
        mermaid="dotted",
        dot=("style=dashed",),
        label_format="on {}",
        empty_label="on error",
        ascii_in="⇠ stands in for {source} (on {label})",
        ascii_out="⇢ on {label} → fallback {target}",
    ),
    "continue": EdgeStyle(
        "continue without",
        "#8a8f98",
        1.4,
        (2.0, 3.5),
        priority=5,
        mermaid="dotted",
        dot=("style=dotted",),
        label_format="on {}",
        empty_label="on error",
        ascii_out="⇢ on {label} → continue without it",
    ),
    "rewrite": EdgeStyle(
        "censor-and-retry",
        "#c0392b",
        3.0,
        priority=0,
        mermaid="thick",
        dot=("style=bold",),
        ascii_in="⟲ rewrites {source}.{target_port} (≤{bound})",
        ascii_out="⟲ on {label}: rewrite {target_port} via {target}",
    ),
    "rewrite_back": EdgeStyle(
        "retry with rewrite",
        "#c0392b",
        3.0,
        (10.0, 3.0),
        priority=1,
        mermaid="thick",
        dot=('style="bold,dashed"', "constraint=false"),
        ascii_out="⟲ back into {target}.{target_port}, then {target} runs again",
    ),
    "map": EdgeStyle(
        "for each item (map)",
        "#7b3fbf",
        2.4,
        (1.0, 2.5),
        priority=4,
        dot=('style="bold,dotted"', 'arrowhead="normal"'),
        ascii_in="⧉ once per item of {over}{at_once}",
    ),
    "switch": EdgeStyle(
        "switch branch (condition)",
        "#0f8a6c",
        1.8,
        (9.0, 3.0, 2.0, 3.0),
        priority=3,
        mermaid="dotted",
        dot=('style="dashed"', 'arrowhead="vee"'),
        ascii_out="⑂ {condition} → {target_label}",
    ),
}


def edge_style(attrs: dict[str, object]) -> str:
    """The style key of an edge (its attributes in :func:`~calliope_graph.viz.to_networkx`'s
    graph): a data edge is ``merge`` or ``parallel`` when marked so, else its kind."""
    if attrs["kind"] == "data":
        if attrs.get("merge"):
            return "merge"
        if attrs.get("parallel"):
            return "parallel"
    return str(attrs["kind"])


@dataclass(frozen=True)
class StatusStyle:
    name: str
    fill: str
    stroke: str
    dash: tuple[float, ...] = ()
    opacity: float = 1.0


#: Outcome of a node in a run (report colouring).
STATUS_STYLES: dict[str, StatusStyle] = {
    "ok": StatusStyle("ok", "#dcf5e4", "#1a7f37"),
    "cache_hit": StatusStyle("cache hit", "#dbf1fa", "#0a7ea4"),
    "fallback": StatusStyle("failed, fallback taken", "#fff0d6", "#d97706"),
    "skipped": StatusStyle("skipped (continue)", "#f0f0f0", "#8c959f", (4.0, 3.0)),
    "failed": StatusStyle("failed", "#fde2e1", "#cf222e"),
    "running": StatusStyle("running", "#e8f0fe", "#3b6fd8", (6.0, 3.0)),
    "not_run": StatusStyle("not run", "#ffffff", "#c3c8cf", (3.0, 3.0), 0.6),
    "interrupted": StatusStyle("stopped before it finished", "#f3e8ff", "#7b3fbf", (6.0, 3.0)),
    "waiting": StatusStyle("waiting for a choice", "#fdf2fa", "#bf3989", (6.0, 3.0)),
    "not_taken": StatusStyle("branch not taken", "#f4f4f4", "#afb5bd", (2.0, 3.0), 0.5),
}
