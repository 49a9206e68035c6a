"""The flow drawing, coloured by outcome, with the path the run took in bold."""

from __future__ import annotations

from typing import Any

from calliope_graph.flow.spec import FlowSpec
from calliope_graph.viz._graph import to_networkx
from calliope_graph.viz._layout import Layout, layout
from calliope_graph.viz._report._data import aggregate, by_base, drawing_state, lane_key
from calliope_graph.viz._report._format import txt
from calliope_graph.viz._report._values import Page
from calliope_graph.viz._svg import render_svg

__all__ = ["drawing"]

#: Laid-out drawings by flow description. The layout depends on the flow alone, not on what
#: the run did, and is the costliest part of a report of a large flow (superlinear in its
#: nodes), so a live report rewritten during a run lays the flow out once.
_LAYOUTS: dict[str, tuple[Any, Layout]] = {}
_LAYOUTS_KEPT = 8


def _laid_out(spec: FlowSpec) -> tuple[Any, Layout]:
    """(graph, layout) of ``spec``, computed once per distinct flow description."""
    key = spec.model_dump_json()
    known = _LAYOUTS.get(key)
    if known is None:
        graph = to_networkx(spec)
        known = (graph, layout(graph))
        while len(_LAYOUTS) >= _LAYOUTS_KEPT:
            _LAYOUTS.pop(next(iter(_LAYOUTS)), None)
        _LAYOUTS[key] = known
    return known


def drawing(page: Page) -> str:
    """The flow drawn from its spec, nodes coloured by outcome, taken edges in bold."""
    spec = page.trace.spec
    if spec is None:
        return (
            '<section id="drawing" class="card"><h2>Flow</h2><p class="none">This trace '
            "carries no flow description, so there is no drawing.</p></section>"
        )
    try:
        graph, laid_out = _laid_out(spec)
        status, taken = drawing_state(page.trace, graph)
        svg = render_svg(
            laid_out,
            status=status,
            taken=taken,
            id_prefix="report",
            title=f"flow {spec.name}: the path this run took",
            notes=_notes(page),
            collapsible=True,
        )
    except Exception as exc:  # never lose the rest of the report to a drawing problem
        return (
            '<section id="drawing" class="card"><h2>Flow</h2>'
            f'<p class="error">The flow could not be drawn: {txt(exc)}</p></section>'
        )
    svg = svg.replace(' xmlns="http://www.w3.org/2000/svg"', "", 1)
    return f"""
<section id="drawing" class="card">
  <h2>Flow and the path taken</h2>
  <p class="hint">Nodes are coloured by outcome; edges the run followed are bold, the rest faded
  (a switch's branch not taken is greyed). Click a node for its inputs, outputs and errors;
  fold a subflow with its − button.</p>
  <div class="drawing">{svg}</div>
</section>"""


def _notes(page: Page) -> dict[str, str]:
    """``ran ×2 · 3 retries`` tags for nodes that ran more than once or retried; ``3 items ·
    1 failed`` on a mapped node; ``×3`` on a node inside a map (once per item)."""
    notes: dict[str, str] = {}
    for name, executions in by_base(page.trace).items():
        parts = []
        items = {e.item for e in executions if e.item is not None and e.node == name}
        instances = {lane_key(e) for e in executions}
        if items:
            parts.append(f"{len(items)} item{'s' if len(items) != 1 else ''}")
            bad = sum(
                1
                for k in instances
                if aggregate([e for e in executions if lane_key(e) == k])
                in ("failed", "fallback", "skipped", "interrupted")
            )
            if bad:
                parts.append(f"{bad} not ok")
        elif len(instances) > 1:
            parts.append(f"×{len(instances)}")
            if len(executions) > len(instances):
                parts.append(f"ran ×{len(executions)}")
        elif len(executions) > 1:
            parts.append(f"ran ×{len(executions)}")
        retries = sum(e.retries for e in executions)
        if retries:
            parts.append(f"{retries} retr{'ies' if retries != 1 else 'y'}")
        if any(e.status == "cache_hit" for e in executions):
            parts.append("cached")
        if parts:
            notes[name] = " · ".join(parts)
    return notes
