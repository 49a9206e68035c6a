"""A layered (Sugiyama-style) layout of the flow graph, computed in Python.

Steps: break cycles (rewrite loops' back edges point up, so they are reversed first), assign
layers by longest path (flow inputs on top, each output just under its source), insert dummy points
where an edge spans several layers, order each layer by barycenter sweeps keeping the order
with the fewest crossings, place boxes and pull each toward its neighbours, then route every
edge as a smooth curve through its dummy points and place its label where it collides least.
The SVG and PNG renderers both draw this one :class:`Layout`.

A subflow node is laid out as a cluster: its child flow is laid out first (recursively), and
the node's box is made big enough to hold that drawing under a header; once the parent is
placed, the child's boxes and routes are moved inside (:attr:`Box.inner`, in the parent's
coordinates). A mapped node's box is drawn as a stack (:attr:`Box.stack`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from calliope_graph.viz._geometry import Point, curve, mono_width, rect_hits, spread, text_width
from calliope_graph.viz._graph import edge_list, node_flags, node_subtitle, port_lines
from calliope_graph.viz._style import edge_style

__all__ = ["Box", "Label", "Layout", "Route", "layout", "text_width"]

TITLE_SIZE = 13.0
TEXT_SIZE = 11.0
LABEL_SIZE = 10.5
LINE_GAP = 4.0
PAD_X = 12.0
PAD_Y = 8.0
LAYER_GAP = 78.0
NODE_GAP = 34.0
MARGIN = 24.0
MAX_CHARS = 52
CLUSTER_PAD = 12.0
STACK = 4.0
"""Offset of each of the two shadow boxes behind a mapped node (drawn as a stack)."""


def _clip(text: str, limit: int = MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Box:
    """A node's box: position (top-left), size and the text it shows."""

    id: str
    x: float
    y: float
    w: float
    h: float
    layer: int
    role: str
    category: str
    title: str
    subtitle: str
    lines: list[str]
    flags: list[str]
    fallback_only: bool
    attrs: dict[str, Any]
    inner: Layout | None = None
    """A subflow's own drawing, placed inside this box (parent coordinates)."""
    header_h: float = 0.0
    """Height of a cluster's header (title, kind, flags) above its inner drawing."""

    @property
    def stack(self) -> bool:
        """Shape ``stack`` (a mapped node): drawn as a stack of boxes (it runs several times)."""
        return "stack" in self.attrs.get("shape", ())

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass
class Label:
    text: str
    x: float
    """Centre."""
    y: float
    """Centre."""
    w: float
    h: float


@dataclass
class Route:
    """One edge's path: cubic Bézier segments (start, c1, c2, end) and its label."""

    source: str
    target: str
    kind: str
    attrs: dict[str, Any]
    segments: list[tuple[Point, Point, Point, Point]]
    reversed: bool
    label: Label | None = None

    @property
    def style(self) -> str:
        """The key of :data:`~calliope_graph.viz._style.EDGE_STYLES` this edge is drawn with."""
        return edge_style(self.attrs)

    def polyline(self, steps: int = 16) -> list[Point]:
        """The path flattened into points (for hit tests, PNG drawing and labels)."""
        points: list[Point] = []
        for p0, c1, c2, p3 in self.segments:
            for i in range(steps + 1):
                if points and i == 0:
                    continue
                t = i / steps
                a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
                points.append(
                    (
                        a * p0[0] + b * c1[0] + c * c2[0] + d * p3[0],
                        a * p0[1] + b * c1[1] + c * c2[1] + d * p3[1],
                    )
                )
        return points

    def end_direction(self) -> Point:
        """Unit vector of the path's arrival (for the arrowhead)."""
        p0, _c1, c2, p3 = self.segments[-1]
        dx, dy = p3[0] - c2[0], p3[1] - c2[1]
        if abs(dx) + abs(dy) < 1e-6:
            dx, dy = p3[0] - p0[0], p3[1] - p0[1]
        norm = math.hypot(dx, dy) or 1.0
        return (dx / norm, dy / norm)


@dataclass
class Layout:
    width: float
    height: float
    boxes: dict[str, Box]
    routes: list[Route]
    graph: nx.DiGraph
    layers: list[list[str]] = field(default_factory=list)
    """Real nodes per layer, left to right (the ASCII drawing reads this)."""

    def all_boxes(self) -> list[Box]:
        """Every box, those inside subflow clusters included (a cluster before its inside)."""
        out: list[Box] = []
        for box in self.boxes.values():
            out.append(box)
            if box.inner is not None:
                out += box.inner.all_boxes()
        return out

    def all_routes(self) -> list[Route]:
        """Every route, those inside subflow clusters included."""
        out = list(self.routes)
        for box in self.boxes.values():
            if box.inner is not None:
                out += box.inner.all_routes()
        return out

    def shift(self, dx: float, dy: float) -> None:
        """Move everything (clusters' insides too) by (dx, dy)."""
        for box in self.boxes.values():
            box.x += dx
            box.y += dy
            if box.inner is not None:
                box.inner.shift(dx, dy)
        for route in self.routes:
            route.segments = [
                (
                    (a[0] + dx, a[1] + dy),
                    (b[0] + dx, b[1] + dy),
                    (c[0] + dx, c[1] + dy),
                    (d[0] + dx, d[1] + dy),
                )
                for a, b, c, d in route.segments
            ]
            if route.label is not None:
                route.label.x += dx
                route.label.y += dy


# -- layering -----------------------------------------------------------------------------
def _acyclic(graph: nx.DiGraph) -> tuple[nx.DiGraph, set[tuple[str, str]]]:
    """A DAG of the graph's edges: ``loop`` edges (a rewrite's way back) and any remaining
    cycle edges reversed."""
    dag = nx.DiGraph()
    dag.add_nodes_from(graph.nodes)
    reversed_edges: set[tuple[str, str]] = set()
    for u, v, attrs in graph.edges(data=True):
        if attrs.get("shape") == "loop":
            reversed_edges.add((u, v))
            if not dag.has_edge(v, u):
                dag.add_edge(v, u)
        elif not dag.has_edge(u, v):
            dag.add_edge(u, v)
    while True:
        try:
            cycle = nx.find_cycle(dag)
        except nx.NetworkXNoCycle:
            break
        u, v = cycle[-1][0], cycle[-1][1]
        dag.remove_edge(u, v)
        if graph.has_edge(u, v):
            reversed_edges.add((u, v))
        else:  # (u, v) was itself a reversal: drop it entirely
            reversed_edges.discard((v, u))
        if u != v and not dag.has_edge(v, u):
            dag.add_edge(v, u)
    return dag, reversed_edges


def _layers(graph: nx.DiGraph, dag: nx.DiGraph) -> dict[str, int]:
    layer: dict[str, int] = {}
    for node in nx.topological_sort(dag):
        preds = list(dag.predecessors(node))
        layer[node] = max((layer[p] + 1 for p in preds), default=0)
    return layer


# -- ordering ------------------------------------------------------------------------------
def _crossings(order: list[list[str]], down: dict[str, list[str]]) -> int:
    total = 0
    for upper, lower in itertools.pairwise(order):
        pos = {n: i for i, n in enumerate(lower)}
        pairs = [(i, pos[w]) for i, n in enumerate(upper) for w in down.get(n, []) if w in pos]
        for a in range(len(pairs)):
            for b in range(a + 1, len(pairs)):
                (i1, j1), (i2, j2) = pairs[a], pairs[b]
                if (i1 - i2) * (j1 - j2) < 0:
                    total += 1
    return total


def _order(
    layers: list[list[str]], down: dict[str, list[str]], up: dict[str, list[str]]
) -> list[list[str]]:
    order = [list(layer) for layer in layers]
    best = [list(layer) for layer in order]
    best_cross = _crossings(order, down)
    for sweep in range(16):
        if sweep % 2 == 0:
            rng, neighbours = range(1, len(order)), up
            ref_of = -1
        else:
            rng, neighbours = range(len(order) - 2, -1, -1), down
            ref_of = 1
        for i in rng:
            ref = {n: k for k, n in enumerate(order[i + ref_of])}
            current = {n: k for k, n in enumerate(order[i])}

            def key(
                node: str,
                ref: dict[str, int] = ref,
                cur: dict[str, int] = current,
                near: dict[str, list[str]] = neighbours,
            ) -> float:
                ks = [ref[m] for m in near.get(node, []) if m in ref]
                return sum(ks) / len(ks) if ks else float(cur[node])

            order[i].sort(key=key)
        cross = _crossings(order, down)
        if cross < best_cross:
            best, best_cross = [list(layer) for layer in order], cross
        if best_cross == 0:
            break
    return best


# -- boxes -----------------------------------------------------------------------------------
def _box(node: str, attrs: dict[str, Any], layer: int) -> Box:
    role = attrs["role"]
    title = _clip(str(attrs.get("label", node)), 40)
    subtitle = _clip(node_subtitle(attrs))
    lines = [_clip(line) for line in port_lines(attrs)]
    flags = node_flags(attrs)
    if flags:
        lines.append(_clip(" · ".join(flags)))
    if role == "continue":
        w = text_width("continue", TEXT_SIZE) + 2 * PAD_X
        return Box(
            node, 0, 0, w, 26.0, layer, role, "continue", "continue", "", [], [], False, attrs
        )
    widths = [text_width(title, TITLE_SIZE, bold=True)]
    widths += [text_width(t, TEXT_SIZE) for t in [subtitle, *lines[len(port_lines(attrs)) :]]]
    widths += [mono_width(t, TEXT_SIZE - 0.8) for t in lines[: len(port_lines(attrs))]]
    w = max(max(widths) + 2 * PAD_X, 96.0)
    h = PAD_Y * 2 + TITLE_SIZE
    h += sum(TEXT_SIZE + LINE_GAP for t in [subtitle, *lines] if t)
    if role in ("input", "output"):
        w += 10  # pill ends
    return Box(
        node,
        0,
        0,
        w,
        h,
        layer,
        role,
        attrs.get("category", "helper"),
        title,
        subtitle,
        lines,
        flags,
        bool(attrs.get("fallback_only")),
        attrs,
    )


def _cluster_box(node: str, attrs: dict[str, Any], layer: int, inner: Layout) -> Box:
    """A subflow node's box: a header over its child flow's drawing."""
    title = _clip(str(attrs.get("label", node)), 40)
    subtitle = _clip(node_subtitle(attrs))
    flags = node_flags(attrs)
    lines = [_clip(" · ".join(flags))] if flags else []
    header_w = max(
        [text_width(title, TITLE_SIZE, bold=True)]
        + [text_width(t, TEXT_SIZE) for t in [subtitle, *lines]]
    )
    header_h = PAD_Y * 2 + TITLE_SIZE + sum(TEXT_SIZE + LINE_GAP for t in [subtitle, *lines] if t)
    w = max(header_w + 2 * PAD_X, inner.width - 2 * MARGIN + 2 * CLUSTER_PAD, 96.0)
    h = header_h + inner.height - 2 * MARGIN + CLUSTER_PAD
    return Box(
        node,
        0,
        0,
        w,
        h,
        layer,
        "node",
        attrs.get("category", "subflow"),
        title,
        subtitle,
        lines,
        flags,
        bool(attrs.get("fallback_only")),
        attrs,
        inner=inner,
        header_h=header_h,
    )


def _place_x(
    order: list[list[str]],
    widths: dict[str, float],
    down: dict[str, list[str]],
    up: dict[str, list[str]],
) -> dict[str, float]:
    """Centre x of every node: packed, then pulled toward neighbours keeping order and gaps."""
    cx: dict[str, float] = {}
    for layer in order:
        x = 0.0
        for node in layer:
            cx[node] = x + widths[node] / 2
            x += widths[node] + NODE_GAP

    def settle(layer: list[str], want: dict[str, float]) -> None:
        # Place left to right at the wanted x unless that overlaps the left neighbour, then
        # push right to left so the row is centred around the wishes (a simple priority pass).
        pos = [want[n] for n in layer]
        for i in range(1, len(layer)):
            gap = (widths[layer[i - 1]] + widths[layer[i]]) / 2 + NODE_GAP
            pos[i] = max(pos[i], pos[i - 1] + gap)
        for i in range(len(layer) - 2, -1, -1):
            gap = (widths[layer[i]] + widths[layer[i + 1]]) / 2 + NODE_GAP
            pos[i] = min(pos[i], pos[i + 1] - gap)
        shift = sum(want[n] - p for n, p in zip(layer, pos, strict=True)) / max(len(layer), 1)
        for n, p in zip(layer, pos, strict=True):
            cx[n] = p + shift

    for it in range(24):
        sweep = order if it % 2 == 0 else list(reversed(order))
        for layer in sweep:
            want = {}
            for node in layer:
                ns = [cx[m] for m in up.get(node, []) + down.get(node, []) if m in cx]
                want[node] = (sum(ns) / len(ns) + cx[node]) / 2 if ns else cx[node]
            settle(layer, want)
    left = min(cx[n] - widths[n] / 2 for n in cx) if cx else 0.0
    return {n: x - left + MARGIN for n, x in cx.items()}


def layout(graph: nx.DiGraph) -> Layout:
    """Lay out ``graph`` (from :func:`~calliope_graph.viz.to_networkx`) top to bottom."""
    dag, reversed_edges = _acyclic(graph)
    layer = _layers(graph, dag)
    chains, down, up, node_layer = _chains(dag, layer)
    order = _order(_initial_layers(graph, dag, node_layer), down, up)
    boxes = {
        n: (
            _cluster_box(n, graph.nodes[n], layer[n], layout(graph.nodes[n]["cluster"]))
            if graph.nodes[n].get("cluster") is not None
            else _box(n, graph.nodes[n], layer[n])
        )
        for n in graph.nodes
    }
    widths = {n: (boxes[n].w if n in boxes else 16.0) for n in node_layer}
    cx = _place_x(order, widths, down, up)
    dummy_xy = _place_y(order, boxes, cx, node_layer)
    routes = _routes(graph, boxes, chains, reversed_edges, cx, dummy_xy)
    _place_labels(routes, boxes)
    width = max((b.x + b.w for b in boxes.values()), default=0.0) + MARGIN
    height = max((b.y + b.h for b in boxes.values()), default=0.0) + MARGIN
    for r in routes:
        for x, yy in r.polyline(6):
            width = max(width, x + MARGIN)
            height = max(height, yy + MARGIN)
        if r.label is not None:
            width = max(width, r.label.x + r.label.w / 2 + MARGIN)
    real_layers = [[n for n in row if n in boxes] for row in order]
    return Layout(width, height, boxes, routes, graph, real_layers)


def _chains(
    dag: nx.DiGraph, layer: dict[str, int]
) -> tuple[
    dict[tuple[str, str], list[str]], dict[str, list[str]], dict[str, list[str]], dict[str, int]
]:
    """Chains through dummy nodes for every DAG edge spanning more than one layer; the
    neighbours below and above every (dummy) node; every (dummy) node's layer."""
    chains: dict[tuple[str, str], list[str]] = {}
    down: dict[str, list[str]] = {}
    up: dict[str, list[str]] = {}
    node_layer = dict(layer)
    for u, v in dag.edges:
        chain = [u]
        for k in range(layer[u] + 1, layer[v]):
            dummy = f"\x00{u}\x00{v}\x00{k}"
            node_layer[dummy] = k
            chain.append(dummy)
        chain.append(v)
        chains[(u, v)] = chain
        for a, b in itertools.pairwise(chain):
            down.setdefault(a, []).append(b)
            up.setdefault(b, []).append(a)
    return chains, down, up, node_layer


def _initial_layers(
    graph: nx.DiGraph, dag: nx.DiGraph, node_layer: dict[str, int]
) -> list[list[str]]:
    """Initial order: depth-first from the inputs, so related nodes start side by side."""
    seen: list[str] = []
    for start in sorted(
        (n for n in dag.nodes if dag.in_degree(n) == 0),
        key=lambda n: (graph.nodes[n]["role"] != "input", n),
    ):
        for n in nx.dfs_preorder_nodes(dag, start):
            if n not in seen:
                seen.append(n)
    rank = {n: i for i, n in enumerate(seen)}
    layers: list[list[str]] = [[] for _ in range(max(node_layer.values(), default=0) + 1)]
    for n in sorted(
        node_layer, key=lambda n: rank.get(n.split("\x00")[1] if "\x00" in n else n, 0)
    ):
        layers[node_layer[n]].append(n)
    return layers


def _place_y(
    order: list[list[str]], boxes: dict[str, Box], cx: dict[str, float], node_layer: dict[str, int]
) -> dict[str, Point]:
    """Vertical placement: each layer as tall as its tallest box; gaps hold edge labels.
    Clusters' insides move under their headers. Returns the dummy nodes' points."""
    y = MARGIN
    layer_top: list[float] = []
    layer_h: list[float] = []
    for row in order:
        height = max((boxes[n].h for n in row if n in boxes), default=20.0)
        layer_top.append(y)
        layer_h.append(height)
        y += height + LAYER_GAP
    for n, box in boxes.items():
        box.x = cx[n] - box.w / 2
        top = layer_top[box.layer]
        box.y = top + (layer_h[box.layer] - box.h) / 2
    for box in boxes.values():
        if box.inner is not None:  # the child drawing (margins trimmed) under the header
            inner_w = box.inner.width - 2 * MARGIN
            dx = box.x + (box.w - inner_w) / 2 - MARGIN
            box.inner.shift(dx, box.y + box.header_h - MARGIN)
    return {
        n: (cx[n], layer_top[k] + layer_h[k] / 2) for n, k in node_layer.items() if n not in boxes
    }


def _routes(
    graph: nx.DiGraph,
    boxes: dict[str, Box],
    chains: dict[tuple[str, str], list[str]],
    reversed_edges: set[tuple[str, str]],
    cx: dict[str, float],
    dummy_xy: dict[str, Point],
) -> list[Route]:
    """Every edge's path: down from a box's bottom to the next one's top, through its dummy
    points, anchors spread in neighbour order; a reversed (``loop``) edge from the lower box's
    right side back up to the upper box's right side."""
    out_x, in_x = _anchors(graph, boxes, chains, reversed_edges, cx)
    routes: list[Route] = []
    for u, v, attrs in edge_list(graph):
        is_rev = (u, v) in reversed_edges
        key = (v, u) if is_rev else (u, v)
        through = chains.get(key)
        if through is None:  # a self-loop (u == v) or an edge lost with its reversal
            continue
        mids = [dummy_xy[d] for d in through[1:-1]]
        src, dst = boxes[u], boxes[v]
        if is_rev:
            p_start = (src.x + src.w, src.cy)
            p_end = (dst.x + dst.w, dst.cy + min(10.0, dst.h / 4))
            segments = curve([p_start, *reversed(mids), p_end], (1.0, 0.0), (-1.0, 0.0))
        else:
            p_start = (out_x.get(key, src.cx), src.y + src.h)
            p_end = (in_x.get(key, dst.cx), dst.y)
            segments = curve([p_start, *mids, p_end], (0.0, 1.0), (0.0, 1.0))
        routes.append(Route(u, v, attrs["kind"], attrs, segments, is_rev))
    return routes


def _anchors(
    graph: nx.DiGraph,
    boxes: dict[str, Box],
    chains: dict[tuple[str, str], list[str]],
    reversed_edges: set[tuple[str, str]],
    cx: dict[str, float],
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """Where each forward edge leaves its source's bottom and enters its target's top."""
    out_edges: dict[str, list[tuple[float, tuple[str, str]]]] = {}
    in_edges: dict[str, list[tuple[float, tuple[str, str]]]] = {}
    for (u, v), chain in chains.items():
        out_edges.setdefault(u, []).append((cx[chain[1]], (u, v)))
        in_edges.setdefault(v, []).append((cx[chain[-2]], (u, v)))
    forward_keys = {(u, v) for u, v in graph.edges if (u, v) not in reversed_edges}
    out_x: dict[tuple[str, str], float] = {}
    in_x: dict[tuple[str, str], float] = {}
    for n, items in out_edges.items():
        forward = sorted(i for i in items if i[1] in forward_keys)
        for k, (_, key) in enumerate(forward):
            out_x[key] = spread(len(forward), k, boxes[n].x, boxes[n].w)
    for n, items in in_edges.items():
        forward = sorted(i for i in items if i[1] in forward_keys)
        for k, (_, key) in enumerate(forward):
            in_x[key] = spread(len(forward), k, boxes[n].x, boxes[n].w)
    return out_x, in_x


def _place_labels(routes: list[Route], boxes: dict[str, Box]) -> None:
    """Put each label on its path where it overlaps no box and no earlier label."""
    taken: list[tuple[float, float, float, float]] = [
        (b.x - 2, b.y - 2, b.x + b.w + 2, b.y + b.h + 2) for b in boxes.values()
    ]
    # Route labels (fallback, rewrite...) first: they matter most.
    ranked = sorted(routes, key=lambda r: (r.kind == "data", r.source, r.target))
    for route in ranked:
        text = str(route.attrs.get("label") or "")
        if not text:
            continue
        text = _clip(text, 44)
        w = text_width(text, LABEL_SIZE) + 8
        h = LABEL_SIZE + 6
        line = route.polyline(24)
        lengths = [0.0]
        for a, b in itertools.pairwise(line):
            lengths.append(lengths[-1] + math.dist(a, b))
        total = lengths[-1] or 1.0
        best: tuple[float, float, float] | None = None
        for frac in (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78, 0.15, 0.85):
            goal = total * frac
            i = next((k for k, s in enumerate(lengths) if s >= goal), len(line) - 1)
            x, y = line[i]
            rect = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
            hits = sum(1 for t in taken if rect_hits(rect, t))
            if best is None or hits < best[2]:
                best = (x, y, hits)
            if hits == 0:
                break
        assert best is not None
        x, y, _ = best
        route.label = Label(text, x, y, w, h)
        taken.append((x - w / 2, y - h / 2, x + w / 2, y + h / 2))
