"""Drawings of flows and HTML reports of runs, all made offline.

- :func:`draw` — a flow's structure as Mermaid, Graphviz DOT, ASCII, SVG or PNG (SVG and PNG
  are laid out in Python: no Graphviz binary, no browser, no web service).
- :func:`to_networkx` — the one graph the drawings are derived from, with its attributes.
- :func:`render_report` — one self-contained HTML page of a run's trace.
"""

from typing import TYPE_CHECKING

from calliope_graph._lazy import exports

# Loaded on first use (calliope_graph/_lazy.py): drawing a flow does not load the report's code.
if TYPE_CHECKING:
    from calliope_graph.viz._draw import FORMATS, draw
    from calliope_graph.viz._graph import to_networkx
    from calliope_graph.viz._report import render_report
else:
    __getattr__, __dir__ = exports(
        __name__,
        {
            "calliope_graph.viz._draw": ["FORMATS", "draw"],
            "calliope_graph.viz._graph": ["to_networkx"],
            "calliope_graph.viz._report": ["render_report"],
        },
    )

__all__ = ["FORMATS", "draw", "render_report", "to_networkx"]
