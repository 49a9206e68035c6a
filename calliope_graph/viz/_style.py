"""Colours and line styles shared by every drawing, so Mermaid, DOT, SVG and PNG agree."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EDGE_STYLES", "STATUS_STYLES", "EdgeStyle", "StatusStyle"]


@dataclass(frozen=True)
class EdgeStyle:
    name: str
    """What the legend calls it."""
    color: str
    width: float
    dash: tuple[float, ...] = ()
    """SVG dash pattern (empty: solid)."""


#: Keyed by :attr:`~calliope_graph.viz._layout.Route.style`.
EDGE_STYLES: dict[str, EdgeStyle] = {
    "data": EdgeStyle("data", "#5f6b7a", 1.4),
    "parallel": EdgeStyle("parallel fan-out", "#2f6fde", 1.6),
    "merge": EdgeStyle("merge (many input)", "#2f6fde", 1.6, (5.0, 2.0, 1.5, 2.0)),
    "fallback": EdgeStyle("fallback on error", "#e67e22", 1.8, (7.0, 4.0)),
    "continue": EdgeStyle("continue without", "#8a8f98", 1.4, (2.0, 3.5)),
    "rewrite": EdgeStyle("censor-and-retry", "#c0392b", 3.0),
    "rewrite_back": EdgeStyle("retry with rewrite", "#c0392b", 3.0, (10.0, 3.0)),
    "map": EdgeStyle("for each item (map)", "#7b3fbf", 2.4, (1.0, 2.5)),
    "switch": EdgeStyle("switch branch (condition)", "#0f8a6c", 1.8, (9.0, 3.0, 2.0, 3.0)),
}


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
    "not_taken": StatusStyle("branch not taken", "#f4f4f4", "#afb5bd", (2.0, 3.0), 0.5),
}
