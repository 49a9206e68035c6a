"""A terminal drawing: the layered layout top to bottom, one box per node, ≤ 100 columns.

Boxes of one layer sit side by side (wrapping when the terminal is too narrow); each box
lists where its inputs come from (``◂ prompt ← story.text``), its outputs (``▸``) and its
error routes (``⇢`` fallback/continue, ``⟲`` censor-and-retry), its switch branches (``⑂``)
and, for a mapped node, the list it runs over (``⧉``), so every edge of the graph is written on
the box it leaves or enters. A subflow's box holds the child flow's drawing, indented.
"""

from __future__ import annotations

from typing import Any

from calliope_graph.viz._graph import edge_list, node_flags, node_subtitle, walk, walk_edges
from calliope_graph.viz._layout import Layout
from calliope_graph.viz._style import EDGE_STYLES, edge_style

__all__ = ["to_ascii"]

MAX_WIDTH = 100
BOX_MAX = 48
GAP = 2


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _local(node: str) -> str:
    """A node's name inside its own flow (``scenes/illustration/image`` → ``image``)."""
    return node.rsplit("/", 1)[-1]


def _ref(node: str, port: str | None, graph: Any) -> str:
    if graph.nodes[node]["role"] == "input":
        return _local(node)
    return f"{_local(node)}.{port}" if port else _local(node)


def _edge_line(
    template: str | None, u: str, v: str, attrs: dict[str, Any], graph: Any
) -> str | None:
    """The line an edge writes on a box, from its style's template (None: it writes none)."""
    if template is None:
        return None
    source_port, target_port = attrs["ports"][0]
    condition = attrs.get("label") or "?"
    bound = attrs.get("bound")
    return template.format(
        source=_local(u),
        target=_local(v),
        target_label=graph.nodes[v].get("label", v),
        label=attrs.get("label", ""),
        source_port=source_port or "?",
        target_port=target_port or "?",
        bound=bound,
        at_once=f" (≤{bound} at once)" if bound else "",
        over=attrs.get("source_ref") or _ref(u, source_port, graph),
        condition="otherwise" if condition == "default" else f"when {condition}",
    )


def _box_lines(node: str, layout: Layout, limit: int = MAX_WIDTH) -> list[str]:
    graph = layout.graph
    attrs = graph.nodes[node]
    role = attrs["role"]
    body: list[str] = []
    if role == "continue":
        return ["( continue )"]
    sub = node_subtitle(attrs)
    if sub:
        body.append(sub)
    incoming = [(u, v, a) for u, v, a in edge_list(graph) if v == node]
    outgoing = [(u, v, a) for u, v, a in edge_list(graph) if u == node]
    for u, v, a in incoming:
        if a["kind"] == "data":
            for sp, tp in a["ports"]:
                body.append(f"◂ {tp or '?'} ← {_ref(u, sp, graph)}")
        elif (line := _edge_line(EDGE_STYLES[edge_style(a)].ascii_in, u, v, a, graph)) is not None:
            body.append(line)
    if role == "node":
        for p in attrs["outputs"]:
            body.append(f"▸ {p['name']}: {p['type']}")
    for u, v, a in outgoing:
        if (line := _edge_line(EDGE_STYLES[edge_style(a)].ascii_out, u, v, a, graph)) is not None:
            body.append(line)
    flags = node_flags(attrs)
    if flags:
        body.append(" · ".join(flags))
    title = str(attrs.get("label", node))
    if role == "input":
        title = f"input {title}"
    elif role == "output":
        title = f"output {title}"
    child: list[str] = []
    box = layout.boxes.get(node)
    if box is not None and box.inner is not None:
        child = _layers_text(box.inner, limit - 4)
    inner = min(max([len(title) + 4, *(len(b) + 2 for b in body)]), BOX_MAX - 2)
    if child:
        inner = min(max(inner, *(len(c) + 2 for c in child)), limit - 2)
    edge = "┄" if attrs.get("fallback_only") else "─"
    side = "┆" if attrs.get("fallback_only") else "│"
    top_title = _clip(title, inner - 4)
    lines = [f"┌{edge} {top_title} {edge * (inner - len(top_title) - 3)}┐"]
    for text in body:
        lines.append(f"{side} {_clip(text, inner - 2).ljust(inner - 2)} {side}")
    for text in child:
        lines.append(f"{side} {text.ljust(inner - 2)} {side}")
    lines.append(f"└{edge * inner}┘")
    return lines


def _layers_text(layout: Layout, limit: int) -> list[str]:
    """The layers of ``layout`` as lines at most ``limit`` columns wide."""
    graph = layout.graph
    out: list[str] = []
    for index, layer in enumerate(layout.layers):
        boxes = [(n, _box_lines(n, layout, limit)) for n in layer]
        rows: list[list[tuple[str, list[str]]]] = [[]]
        used = 0
        for name, lines in boxes:
            w = len(lines[0])
            if rows[-1] and used + GAP + w > limit:
                rows.append([])
                used = 0
            rows[-1].append((name, lines))
            used += w + (GAP if used else 0)
        for row in rows:
            # Arrowheads over every box that is fed from above.
            if index > 0:
                marks = []
                for name, lines in row:
                    w = len(lines[0])
                    fed = graph.in_degree(name) > 0
                    marks.append((" " * (w // 2) + ("▼" if fed else " ")).ljust(w))
                out.append((" " * GAP).join(marks).rstrip())
            height = max(len(lines) for _, lines in row)
            for i in range(height):
                cells = []
                for _, lines in row:
                    w = len(lines[0])
                    cells.append(lines[i] if i < len(lines) else " " * w)
                out.append((" " * GAP).join(cells).rstrip())
    return out


def to_ascii(layout: Layout) -> str:
    """The drawing as text (box-drawing characters, at most 100 columns wide)."""
    graph = layout.graph
    out: list[str] = [f"flow {graph.graph.get('name', '')}".rstrip()]
    desc = graph.graph.get("description")
    if desc:
        out.append(_clip(str(desc), MAX_WIDTH))
    out.append("")
    out += _layers_text(layout, MAX_WIDTH)
    legend = (
        "◂ input from  ▸ output  ⇢ error route (fallback/continue)  "
        "⟲ censor-and-retry  ┆ runs only on error"
    )
    out += ["", legend]
    shapes = {s for _, a in walk(graph) for s in a.get("shape", ())}
    kinds = {a["kind"] for _, _, a in walk_edges(graph)}
    if shapes & {"stack", "branch", "cluster"} or kinds & {"map", "switch"}:
        out.append("⧉ runs once per item (map)  ⑂ switch branch  boxes inside a box: a subflow")
    return "\n".join(out) + "\n"
