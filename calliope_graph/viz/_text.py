"""Mermaid and Graphviz DOT source for a flow graph (both read :func:`to_networkx`'s graph).

Mermaid (``flowchart TB``, renders on GitHub): data edges ``-->`` with port labels, fan-out
and merge edges coloured blue, fallbacks ``-. "on …" .->`` dotted orange labelled with the
error classes, censor-and-retry loops ``== "… ≤N" ==>`` thick red with their bound and the way
back, ``continue`` routes to a small terminal node. Quotes, backticks and angle brackets in
user text become look-alikes, so they can neither break the diagram nor inject markup.

DOT: HTML-like table labels with one ``PORT`` per typed input/output, so data edges join the
exact ports; the same colours and dash styles as the SVG.
"""

from __future__ import annotations

import re
from typing import Any

import networkx as nx

from calliope_graph.viz._graph import (
    CATEGORIES,
    edge_list,
    node_flags,
    node_subtitle,
    walk,
    walk_edges,
)
from calliope_graph.viz._style import EDGE_STYLES, edge_style

__all__ = ["to_dot", "to_mermaid"]


def _route_label(attrs: dict[str, Any]) -> str:
    style = EDGE_STYLES[edge_style(attrs)]
    label = str(attrs.get("label") or "")
    return style.label_format.format(label) if label else style.empty_label


# -- Mermaid -------------------------------------------------------------------------------
# Inside a quoted Mermaid label every character is literal except these: a double quote ends
# the string, a backtick starts a Markdown string, and angle brackets would be read as HTML.
# Entity codes (``#34;``) are not decoded by every renderer (``mermaid.render`` leaves them
# as placeholders), so look-alike characters stand in instead.
_MERMAID_SUBSTITUTES = str.maketrans({'"': "'", "`": "'", "<": "‹", ">": "›"})


def mermaid_escape(text: str) -> str:
    """``text`` safe inside a quoted Mermaid label (one line; no quote, backtick or markup)."""
    return " ".join(str(text).split()).translate(_MERMAID_SUBSTITUTES)


def _mermaid_label(attrs: dict[str, Any]) -> str:
    lines = [f"<b>{mermaid_escape(attrs.get('label', ''))}</b>"]
    sub = node_subtitle(attrs)
    if sub:
        lines.append(mermaid_escape(sub))
    if attrs["role"] == "node":
        ins = [f"{p['name']}: {p['type']}{'[]' if p['many'] else ''}" for p in attrs["inputs"]]
        outs = [
            f"{p['name']}: {p['type']}{'[]' if p.get('many') else ''}" for p in attrs["outputs"]
        ]
        if ins:
            lines.append("<i>in</i> " + mermaid_escape(", ".join(ins)))
        if outs:
            lines.append("<i>out</i> " + mermaid_escape(", ".join(outs)))
        flags = node_flags(attrs)
        if flags:
            lines.append("<i>" + mermaid_escape(" · ".join(flags)) + "</i>")
    return "<br/>".join(lines)


def _mermaid_arrow(style: str, label: str) -> str:
    """The link between two ids as the edge's style says: solid, dotted (error routes,
    switch branches) or thick (censor-and-retry)."""
    line = EDGE_STYLES[style].mermaid
    if line == "dotted":
        return f'-. "{label}" .->' if label else "-.->"
    if line == "thick":
        return f'== "{label}" ==>' if label else "==>"
    return f'-->|"{label}"|' if label else "-->"


def _mermaid_title(attrs: dict[str, Any]) -> str:
    """A subflow cluster's title: name, child flow, map note (one line)."""
    parts = [
        f"<b>{mermaid_escape(attrs.get('label', ''))}</b>",
        mermaid_escape(node_subtitle(attrs)),
    ]
    parts += [mermaid_escape(f) for f in node_flags(attrs)]
    return " · ".join(p for p in parts if p)


def _mermaid_nodes(
    graph: nx.DiGraph,
    ids: dict[str, str],
    out: list[str],
    members: dict[str, list[str]],
    dashed: list[str],
    clusters: list[tuple[str, str]],
    indent: str,
) -> None:
    for node, attrs in graph.nodes(data=True):
        nid = ids[node]
        if attrs.get("cluster") is not None:
            out.append(f'{indent}subgraph {nid} ["{_mermaid_title(attrs)}"]')
            out.append(f"{indent}  direction TB")
            _mermaid_nodes(attrs["cluster"], ids, out, members, dashed, clusters, indent + "  ")
            out.append(f"{indent}end")
            clusters.append((nid, "stack" if "stack" in attrs["shape"] else "cluster"))
            continue
        label = _mermaid_label(attrs)
        if attrs["role"] in ("input", "output"):
            out.append(f'{indent}{nid}(["{label}"])')
        elif attrs["role"] == "continue":
            out.append(f'{indent}{nid}(["<i>continue</i>"])')
        elif "branch" in attrs["shape"]:
            out.append(f'{indent}{nid}{{{{"{label}"}}}}')
        else:
            out.append(f'{indent}{nid}["{label}"]')
        members.setdefault(attrs.get("category", "helper"), []).append(nid)
        if attrs.get("fallback_only"):
            dashed.append(nid)


def to_mermaid(graph: nx.DiGraph) -> str:
    """Mermaid ``flowchart TB`` source (GitHub renders it in a ```` ```mermaid ```` block).

    A subflow node is a ``subgraph`` holding the child flow's nodes (recursively); edges to
    and from it join the subgraph. A switch is a hexagon; its branches are labelled with
    their conditions; a mapped node's edge says ``for each <item>``.
    """
    ids = {node: f"n{i}" for i, (node, _) in enumerate(walk(graph))}
    out = [
        "---",
        f"title: {mermaid_escape(graph.graph.get('name', 'flow'))}",
        "---",
        "flowchart TB",
    ]
    for category, (fill, stroke) in CATEGORIES.items():
        out.append(f"  classDef {category} fill:{fill},stroke:{stroke},color:#1f2328")
    members: dict[str, list[str]] = {}
    dashed: list[str] = []
    clusters: list[tuple[str, str]] = []
    _mermaid_nodes(graph, ids, out, members, dashed, clusters, "  ")
    link_styles: dict[str, list[int]] = {}
    for index, (u, v, attrs) in enumerate(walk_edges(graph)):
        label = mermaid_escape(_route_label(attrs))
        style = edge_style(attrs)
        out.append(f"  {ids[u]} {_mermaid_arrow(style, label)} {ids[v]}")
        link_styles.setdefault(style, []).append(index)
    for category, nids in members.items():
        out.append(f"  class {','.join(nids)} {category}")
    for nid in dashed:
        out.append(f"  style {nid} stroke-dasharray:5 3")
    fill, stroke = CATEGORIES["subflow"]
    for nid, what in clusters:
        width = "2.4px" if what == "stack" else "1.4px"
        out.append(f"  style {nid} fill:{fill},stroke:{stroke},stroke-width:{width}")
    for style, indices in link_styles.items():
        es = EDGE_STYLES[style]
        css = f"stroke:{es.color},stroke-width:{es.width:g}px"
        if es.dash:
            css += f",stroke-dasharray:{' '.join(f'{d:g}' for d in es.dash)}"
        out.append(f"  linkStyle {','.join(map(str, indices))} {css}")
    return "\n".join(out) + "\n"


# -- DOT ------------------------------------------------------------------------------------
def _dq(text: object) -> str:
    """A DOT double-quoted string."""
    value = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{value}"'


def _h(text: object) -> str:
    """Text inside a DOT HTML-like label."""
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", " ")
    )


def _port_id(prefix: str, name: str) -> str:
    return prefix + "_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _dot_label(attrs: dict[str, Any]) -> str:
    fill, stroke = CATEGORIES.get(attrs.get("category", "helper"), CATEGORIES["helper"])
    style = "rounded,dashed" if attrs.get("fallback_only") else "rounded"
    rows = [f'<TR><TD COLSPAN="1" ALIGN="LEFT"><B>{_h(attrs.get("label", ""))}</B></TD></TR>']
    sub = node_subtitle(attrs)
    if sub:
        rows.append(f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="9">{_h(sub)}</FONT></TD></TR>')
    for prefix, ports in (("in", attrs["inputs"]), ("out", attrs["outputs"])):
        if not ports or attrs["role"] != "node":
            continue
        cells = "".join(
            f'<TD PORT="{_port_id(prefix, p["name"])}" BORDER="1" COLOR="{stroke}">'
            f'<FONT POINT-SIZE="9">{_h(p["name"])}: {_h(p["type"])}'
            f"{'[]' if p.get('many') else ''}</FONT></TD>"
            for p in ports
        )
        rows.append(
            f'<TR><TD ALIGN="LEFT"><TABLE BORDER="0" CELLSPACING="2" CELLPADDING="2"><TR>'
            f'<TD><FONT POINT-SIZE="8" COLOR="#57606a">{prefix}</FONT></TD>{cells}'
            f"</TR></TABLE></TD></TR>"
        )
    flags = node_flags(attrs)
    if flags:
        rows.append(
            f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="8" COLOR="#57606a"><I>'
            f"{_h(' · '.join(flags))}</I></FONT></TD></TR>"
        )
    return (
        f'<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" STYLE="{style}" '
        f'BGCOLOR="{fill}" COLOR="{stroke}">{"".join(rows)}</TABLE>>'
    )


def _dot_nodes(graph: nx.DiGraph, out: list[str], indent: str) -> None:
    for node, attrs in graph.nodes(data=True):
        role = attrs["role"]
        fill, stroke = CATEGORIES.get(attrs.get("category", "helper"), CATEGORIES["helper"])
        if attrs.get("cluster") is not None:
            title = " · ".join(
                [str(attrs.get("label", node)), node_subtitle(attrs), *node_flags(attrs)]
            )
            style = "rounded,filled,bold" if "stack" in attrs["shape"] else "rounded,filled"
            out.append(f"{indent}subgraph {_dq('cluster_' + node)} {{")
            out.append(
                f"{indent}  label={_dq(title)}; labeljust=l; style={_dq(style)}; "
                f'fillcolor="{fill}"; color="{stroke}"; fontname=Helvetica; fontsize=11;'
            )
            _dot_nodes(attrs["cluster"], out, indent + "  ")
            out.append(f"{indent}}}")
        elif role == "continue":
            out.append(
                f"{indent}{_dq(node)} [shape=box, style={_dq('rounded,dotted,filled')}, "
                f'label="continue", fontsize=9, fillcolor="{fill}", color="{stroke}", '
                "height=0.25];"
            )
        elif role in ("input", "output"):
            label = f"{attrs.get('label', node)}\n{node_subtitle(attrs)}"
            out.append(
                f"{indent}{_dq(node)} [shape=box, style={_dq('rounded,filled')}, "
                f'label={_dq(label)}, fillcolor="{fill}", color="{stroke}"];'
            )
        else:
            out.append(f"{indent}{_dq(node)} [label={_dot_label(attrs)}];")


def _anchor(graph: nx.DiGraph, node: str, port: str | None, incoming: bool) -> str:
    """A real node standing for ``node`` at an edge's end: itself, or for a subflow cluster
    the child's input/output of that port (else its first/last node), recursively."""
    attrs = graph.nodes[node]
    inner = attrs.get("cluster")
    if inner is None:
        return node
    wanted = f"{node}/{'inputs' if incoming else 'outputs'}.{port}" if port else None
    if wanted is not None and wanted in inner:
        return wanted
    nodes = list(inner.nodes)
    if not nodes:
        return node
    pick = nodes[0] if incoming else nodes[-1]
    return _anchor(inner, pick, None, incoming)


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz DOT source (``dot -Tsvg`` renders it where Graphviz is installed).

    A subflow node is a ``cluster_<node>`` subgraph holding the child flow's nodes; edges to
    and from it end on its border (``compound=true`` with ``lhead``/``ltail``).
    """
    name = graph.graph.get("name", "flow")
    out = [
        f"digraph {_dq(name)} {{",
        f"  graph [rankdir=TB, label={_dq(name)}, labelloc=t, fontname=Helvetica, "
        'nodesep=0.45, ranksep=0.7, bgcolor="white", compound=true];',
        "  node [shape=plain, fontname=Helvetica, fontsize=11];",
        '  edge [fontname=Helvetica, fontsize=9, color="#5f6b7a", arrowsize=0.7];',
    ]
    _dot_nodes(graph, out, "  ")
    levels = [graph] + [a["cluster"] for _, a in walk(graph) if a.get("cluster") is not None]
    for level in levels:
        _dot_edges(level, out)
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_edges(graph: nx.DiGraph, out: list[str]) -> None:
    ports_of = {
        n: (
            {p["name"] for p in a["inputs"]} if a["role"] == "node" else set(),
            {p["name"] for p in a["outputs"]} if a["role"] == "node" else set(),
        )
        for n, a in graph.nodes(data=True)
    }
    for u, v, attrs in edge_list(graph):
        es = EDGE_STYLES[edge_style(attrs)]
        label = _route_label(attrs)
        a = [f'color="{es.color}"', f"penwidth={es.width:g}"]
        if label:
            a.append(f"label={_dq(label)}")
            a.append(f'fontcolor="{es.color}"')
        a += es.dot
        kind = attrs["kind"]
        ports = attrs.get("ports") or [(None, None)]
        sp, tp = ports[0]
        src_node = _anchor(graph, u, sp, incoming=False)
        dst_node = _anchor(graph, v, tp, incoming=True)
        src, dst = _dq(src_node), _dq(dst_node)
        if src_node != u:
            a.append(f"ltail={_dq('cluster_' + u)}")
        if dst_node != v:
            a.append(f"lhead={_dq('cluster_' + v)}")
        if kind == "data":
            if src_node == u and sp and sp in ports_of[u][1]:
                src = f"{_dq(u)}:{_port_id('out', sp)}:s"
            if dst_node == v and tp and tp in ports_of[v][0]:
                dst = f"{_dq(v)}:{_port_id('in', tp)}:n"
        out.append(f"  {src} -> {dst} [{', '.join(a)}];")
