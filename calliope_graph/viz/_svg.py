"""SVG from a :class:`~calliope_graph.viz._layout.Layout`, written by hand (no renderer needed).

Every element carries a class (``node``, ``cat-<category>``, ``edge``, ``edge-<style>``,
``status-<outcome>``, ``taken``) and ``data-`` attributes, so a report can style and script
it; colours are also set as attributes, so the file looks right on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from calliope_graph.viz._graph import CATEGORIES
from calliope_graph.viz._layout import (
    LABEL_SIZE,
    LINE_GAP,
    PAD_X,
    PAD_Y,
    STACK,
    TEXT_SIZE,
    TITLE_SIZE,
    Box,
    Layout,
    Route,
    text_width,
)
from calliope_graph.viz._style import EDGE_STYLES, STATUS_STYLES

__all__ = ["FONT", "render_svg"]

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif"
MONO = "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace"


def _a(value: object) -> str:
    return escape(str(value), quote=True)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _path_d(route: Route) -> str:
    parts = []
    for i, (p0, c1, c2, p3) in enumerate(route.segments):
        if i == 0:
            parts.append(f"M{_num(p0[0])},{_num(p0[1])}")
        parts.append(
            f"C{_num(c1[0])},{_num(c1[1])} {_num(c2[0])},{_num(c2[1])} {_num(p3[0])},{_num(p3[1])}"
        )
    return " ".join(parts)


def _dash(dash: Iterable[float]) -> str:
    values = list(dash)
    return f' stroke-dasharray="{" ".join(_num(d) for d in values)}"' if values else ""


def _edge_key(route: Route) -> str:
    return f"{route.source}|{route.target}|{route.kind}"


def render_svg(
    layout: Layout,
    *,
    status: dict[str, str] | None = None,
    taken: set[tuple[str, str, str]] | None = None,
    legend: bool = True,
    id_prefix: str = "cg",
    title: str | None = None,
    notes: dict[str, str] | None = None,
    collapsible: bool = False,
) -> str:
    """The drawing as an SVG document string.

    ``status`` maps node ids to an outcome (``ok``, ``failed``, ``skipped``, ``fallback``,
    ``cache_hit``, ``running``, ``not_run``) to colour nodes by what a run did; ``taken`` holds
    ``(source, target, kind)`` of the edges the run followed (drawn bold, the rest faded);
    ``notes`` puts a short tag on a node's top-right corner (``ran ×2``).

    A subflow is a ``g.cluster`` (its frame and header in ``.cluster-frame``, the child
    drawing in ``.cluster-body``); with ``collapsible`` its header carries a toggle
    (``.cluster-toggle``) that the report's script uses to fold the child drawing away.
    """
    styles_used = sorted({r.style for r in layout.all_routes()}, key=list(EDGE_STYLES).index)
    legend_items: list[tuple[str, str]] = []
    if legend:
        legend_items += [("edge", s) for s in styles_used]
        if status is not None:
            seen = set(status.values())
            legend_items += [("status", s) for s in STATUS_STYLES if s in seen]
    legend_h = 0.0
    rows: list[list[tuple[str, str, float]]] = []
    if legend_items:
        row: list[tuple[str, str, float]] = []
        x = 0.0
        limit = max(layout.width - 40, 360.0)
        for what, key in legend_items:
            name = EDGE_STYLES[key].name if what == "edge" else STATUS_STYLES[key].name
            w = 44 + text_width(name, LABEL_SIZE) + 18
            if row and x + w > limit:
                rows.append(row)
                row, x = [], 0.0
            row.append((what, key, w))
            x += w
        rows.append(row)
        legend_h = 16 + 20 * len(rows)
    width = max(layout.width, 380.0)
    height = layout.height + legend_h
    out: list[str] = []
    label = title or f"flow {layout.graph.graph.get('name', '')}"
    out.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="calliope-flow" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" width="{_num(width)}" '
        f'height="{_num(height)}" role="img" aria-label="{_a(label)}" '
        f'font-family="{_a(FONT)}">'
    )
    out.append(f"<title>{escape(label)}</title>")
    out.append("<defs>")
    for key, style in EDGE_STYLES.items():
        out.append(
            f'<marker id="{id_prefix}-arrow-{key}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerUnits="userSpaceOnUse" markerWidth="{10 if style.width < 2.5 else 12}" '
            f'markerHeight="{10 if style.width < 2.5 else 12}" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{style.color}"/></marker>'
        )
    out.append("</defs>")
    out.append('<rect class="background" width="100%" height="100%" fill="#ffffff"/>')

    _body(out, layout, status, taken, id_prefix, notes or {}, collapsible)
    if rows:
        out.append(_legend(rows, layout.height, id_prefix))
    out.append("</svg>")
    return "\n".join(out)


def _body(
    out: list[str],
    layout: Layout,
    status: dict[str, str] | None,
    taken: set[tuple[str, str, str]] | None,
    id_prefix: str,
    notes: dict[str, str],
    collapsible: bool,
) -> None:
    """Edges under nodes, labels above everything; clusters hold their own three layers."""
    out.append('<g class="edges">')
    for route in layout.routes:
        out.append(_edge(route, taken, id_prefix))
    out.append("</g>")
    out.append('<g class="nodes">')
    for box in layout.boxes.values():
        if box.inner is not None:
            out.append(_cluster_open(box, status, collapsible))
            out.append('<g class="cluster-body">')
            _body(out, box.inner, status, taken, id_prefix, notes, collapsible)
            out.append("</g></g>")
        else:
            out.append(_node(box, status))
        if notes.get(box.id):
            out.append(_note(box, notes[box.id]))
    out.append("</g>")
    out.append('<g class="edge-labels">')
    for route in layout.routes:
        if route.label is None:
            continue
        style = EDGE_STYLES[route.style]
        lab = route.label
        is_taken = taken is None or (route.source, route.target, route.kind) in taken
        opacity = "" if is_taken else ' opacity="0.45"'
        out.append(
            f'<g class="edge-label edge-label-{route.style}" data-edge="{_a(_edge_key(route))}"'
            f"{opacity}>"
            f'<rect x="{_num(lab.x - lab.w / 2)}" y="{_num(lab.y - lab.h / 2)}" '
            f'width="{_num(lab.w)}" height="{_num(lab.h)}" rx="3" fill="#ffffff" '
            f'fill-opacity="0.92" stroke="{style.color}" stroke-width="0.6"/>'
            f'<text x="{_num(lab.x)}" y="{_num(lab.y + LABEL_SIZE * 0.36)}" '
            f'font-size="{_num(LABEL_SIZE)}" text-anchor="middle" fill="{style.color}">'
            f"{escape(lab.text)}</text></g>"
        )
    out.append("</g>")


def _stack(box: Box, fill: str, stroke: str, radius: float, dash: tuple[float, ...]) -> str:
    """Two shadow boxes behind a mapped node: it runs once per item."""
    return "".join(
        f'<rect class="stack" x="{_num(d)}" y="{_num(d)}" width="{_num(box.w)}" '
        f'height="{_num(box.h)}" rx="{_num(radius)}" fill="{fill}" stroke="{stroke}" '
        f'stroke-width="1.2"{_dash(dash)}/>'
        for d in (2 * STACK, STACK)
    )


def _cluster_open(box: Box, status: dict[str, str] | None, collapsible: bool) -> str:
    """A subflow cluster's group, frame and header (the caller adds the body and closes)."""
    fill, stroke = CATEGORIES.get(box.category, CATEGORIES["subflow"])
    classes = ["node", "cluster", f"cat-{box.category}", "role-node"]
    if box.stack:
        classes.append("map")
    outcome = None
    if status is not None:
        outcome = status.get(box.id, "not_run")
        stroke = STATUS_STYLES.get(outcome, STATUS_STYLES["not_run"]).stroke
        classes.append(f"status-{outcome}")
    count = len(box.inner.all_boxes()) if box.inner is not None else 0
    tip = box.attrs.get("description") or box.subtitle or box.title
    if outcome:
        tip = f"{tip} — {outcome}"
    sw = 2.4 if box.stack else 1.6
    parts = [
        f'<g class="{" ".join(classes)}" data-node="{_a(box.id)}">',
        f'<g class="cluster-frame" transform="translate({_num(box.x)},{_num(box.y)})">',
        f"<title>{escape(f'{box.id}: {tip}')}</title>",
    ]
    if box.stack:
        parts.append(_stack(box, fill, stroke, 10.0, ()))
    parts.append(
        f'<rect class="cluster-box" width="{_num(box.w)}" height="{_num(box.h)}" rx="10" '
        f'fill="{fill}" fill-opacity="0.55" stroke="{stroke}" stroke-width="{_num(sw)}"/>'
    )
    y = PAD_Y + TITLE_SIZE * 0.85
    parts.append(
        f'<text class="node-title" x="{_num(PAD_X)}" y="{_num(y)}" '
        f'font-size="{_num(TITLE_SIZE)}" font-weight="600" fill="#1f2328">'
        f"{escape(box.title)}</text>"
    )
    y += 3
    for cls, text in [("node-kind", box.subtitle), *(("node-flags", t) for t in box.lines)]:
        if not text:
            continue
        y += TEXT_SIZE + LINE_GAP
        parts.append(
            f'<text class="{cls}" x="{_num(PAD_X)}" y="{_num(y)}" font-size="{_num(TEXT_SIZE)}" '
            f'fill="#57606a">{escape(text)}</text>'
        )
    if collapsible:
        parts.append(
            f'<g class="cluster-toggle" role="button" tabindex="0" '
            f'aria-label="fold or unfold {_a(box.id)}" '
            f'transform="translate({_num(box.w - 26)},6)"><rect width="20" height="18" rx="4" '
            f'fill="#ffffff" stroke="{stroke}" stroke-width="0.8"/>'
            '<text class="cluster-toggle-glyph" x="10" y="13.5" font-size="12" '
            'text-anchor="middle" fill="#1f2328">−</text></g>'
            f'<text class="cluster-note" x="{_num(PAD_X)}" y="{_num(box.header_h + 14)}" '
            f'font-size="{_num(TEXT_SIZE)}" fill="#57606a" font-style="italic" '
            f'visibility="hidden">{count} nodes folded away — click − / + to unfold</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _edge(route: Route, taken: set[tuple[str, str, str]] | None, id_prefix: str) -> str:
    style = EDGE_STYLES[route.style]
    classes = ["edge", f"edge-{route.style}"]
    if route.style != route.kind:
        classes.append(f"edge-{route.kind}")
    width = style.width
    opacity = 1.0
    if taken is not None:
        if (route.source, route.target, route.kind) in taken:
            classes.append("taken")
            width += 1.6
        else:
            classes.append("not-taken")
            opacity = 0.32
    tip = route.attrs.get("label") or route.kind
    return (
        f'<g class="{" ".join(classes)}" data-source="{_a(route.source)}" '
        f'data-target="{_a(route.target)}" data-kind="{_a(route.kind)}"'
        f"{'' if opacity == 1.0 else f' opacity={chr(34)}{opacity}{chr(34)}'}>"
        f"<title>{escape(f'{route.source} → {route.target}: {tip}')}</title>"
        f'<path d="{_path_d(route)}" fill="none" stroke="{style.color}" '
        f'stroke-width="{_num(width)}"{_dash(style.dash)} stroke-linecap="round" '
        f'marker-end="url(#{id_prefix}-arrow-{route.style})"/></g>'
    )


def _node(box: Box, status: dict[str, str] | None) -> str:
    fill, stroke = CATEGORIES.get(box.category, CATEGORIES["helper"])
    dash: tuple[float, ...] = (5.0, 3.0) if box.fallback_only else ()
    opacity = 1.0
    classes = ["node", f"cat-{box.category}", f"role-{box.role}"]
    if box.fallback_only:
        classes.append("fallback-only")
    outcome = None
    if status is not None:
        outcome = status.get(box.id, "not_run")
        st = STATUS_STYLES.get(outcome, STATUS_STYLES["not_run"])
        fill, stroke, opacity = st.fill, st.stroke, st.opacity
        dash = st.dash or dash
        classes.append(f"status-{outcome}")
    radius = box.h / 2 if box.role in ("input", "output", "continue") else 8.0
    if box.stack:
        classes.append("map")
    parts = [
        f'<g class="{" ".join(classes)}" data-node="{_a(box.id)}" '
        f'transform="translate({_num(box.x)},{_num(box.y)})"'
        f"{'' if opacity == 1.0 else f' opacity={chr(34)}{opacity}{chr(34)}'}>"
    ]
    tip = box.attrs.get("description") or box.subtitle or box.title
    if outcome:
        tip = f"{tip} — {outcome}"
    parts.append(f"<title>{escape(f'{box.id}: {tip}')}</title>")
    if box.stack:
        parts.append(_stack(box, fill, stroke, radius, dash))
    sw = 2.2 if status is not None and outcome not in (None, "not_run") else 1.4
    parts.append(
        f'<rect width="{_num(box.w)}" height="{_num(box.h)}" rx="{_num(radius)}" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="{_num(sw)}"{_dash(dash)}/>'
    )
    if box.role == "continue":
        parts.append(
            f'<text x="{_num(box.w / 2)}" y="{_num(box.h / 2 + TEXT_SIZE * 0.36)}" '
            f'font-size="{_num(TEXT_SIZE)}" text-anchor="middle" fill="#555" '
            f'font-style="italic">continue</text></g>'
        )
        return "".join(parts)
    if box.role == "node":
        # A coloured band on the left says the node's category even when status recolours it.
        cat_stroke = CATEGORIES.get(box.category, CATEGORIES["helper"])[1]
        parts.append(
            f'<rect class="category-band" x="0" y="0" width="5" height="{_num(box.h)}" rx="2" '
            f'fill="{cat_stroke}"/>'
        )
    pad = PAD_X + (5 if box.role in ("input", "output") else 0)
    y = PAD_Y + TITLE_SIZE * 0.85
    parts.append(
        f'<text class="node-title" x="{_num(pad)}" y="{_num(y)}" font-size="{_num(TITLE_SIZE)}" '
        f'font-weight="600" fill="#1f2328">{escape(box.title)}</text>'
    )
    y += 3
    lines: list[tuple[str, str]] = []
    if box.subtitle:
        lines.append(("node-kind", box.subtitle))
    for line in box.lines:
        lines.append(("node-ports" if line[:3] in ("in ", "out") else "node-flags", line))
    for cls, text in lines:
        y += TEXT_SIZE + LINE_GAP
        colour = "#57606a" if cls != "node-kind" else "#333a44"
        family = f' font-family="{_a(MONO)}"' if cls == "node-ports" else ""
        size = TEXT_SIZE - (0.8 if cls == "node-ports" else 0)
        parts.append(
            f'<text class="{cls}" x="{_num(pad)}" y="{_num(y)}" font-size="{_num(size)}"'
            f'{family} fill="{colour}">{escape(text)}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _note(box: Box, text: str) -> str:
    w = text_width(text, LABEL_SIZE) + 10
    x = box.x + box.w - w - 6
    y = box.y - 8
    return (
        f'<g class="node-note" data-node="{_a(box.id)}">'
        f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="15" rx="7.5" '
        'fill="#fff8c5" stroke="#d4a72c" stroke-width="0.8"/>'
        f'<text x="{_num(x + w / 2)}" y="{_num(y + 11)}" font-size="{_num(LABEL_SIZE - 0.5)}" '
        f'text-anchor="middle" fill="#7d4e00">{escape(text)}</text></g>'
    )


def _legend(rows: list[list[tuple[str, str, float]]], top: float, id_prefix: str) -> str:
    out = [f'<g class="legend" transform="translate(16,{_num(top + 6)})">']
    y = 10.0
    for row in rows:
        x = 0.0
        for what, key, w in row:
            if what == "edge":
                es = EDGE_STYLES[key]
                out.append(
                    f'<g class="legend-item legend-edge-{key}">'
                    f'<line x1="{_num(x)}" y1="{_num(y)}" x2="{_num(x + 34)}" y2="{_num(y)}" '
                    f'stroke="{es.color}" stroke-width="{_num(es.width)}"{_dash(es.dash)} '
                    f'marker-end="url(#{id_prefix}-arrow-{key})"/>'
                    f'<text x="{_num(x + 42)}" y="{_num(y + 3.5)}" font-size="{_num(LABEL_SIZE)}" '
                    f'fill="#333">{escape(es.name)}</text></g>'
                )
            else:
                ss = STATUS_STYLES[key]
                out.append(
                    f'<g class="legend-item legend-status-{key}">'
                    f'<rect x="{_num(x + 4)}" y="{_num(y - 7)}" width="26" height="14" rx="4" '
                    f'fill="{ss.fill}" stroke="{ss.stroke}" stroke-width="1.6"{_dash(ss.dash)}/>'
                    f'<text x="{_num(x + 42)}" y="{_num(y + 3.5)}" font-size="{_num(LABEL_SIZE)}" '
                    f'fill="#333">{escape(ss.name)}</text></g>'
                )
            x += w
        y += 20
    out.append("</g>")
    return "".join(out)
