"""The SVG timeline: one lane per node, one bar per provider attempt.

Lanes nest: a mapped node's lane holds one lane per item (``scenes[2]``), a subflow's lane
holds its nodes' lanes (``scenes[2]/illustration/image``). Each lane is a ``g.lane-row``
(``data-lane``, ``data-parent``, ``data-depth``) translated to its place, so the report's
script can fold a lane's children away and restack the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calliope_graph.flow.trace import NodeExecution
from calliope_graph.viz._report._data import aggregate, lane_key, lane_parent, outcome
from calliope_graph.viz._report._format import (
    STATUS_LABEL,
    bar_fill,
    esc,
    fmt_seconds,
    nice_step,
    num,
    short,
    tick_label,
    txt,
)
from calliope_graph.viz._report._values import Page
from calliope_graph.viz._style import STATUS_STYLES
from calliope_graph.viz._svg import FONT

__all__ = ["timeline"]


#: Lanes beyond this many start with map items folded (the script unfolds them on a click).
FOLD_OVER = 40


def _lanes(executions: list[NodeExecution]) -> tuple[list[str], dict[str, list[str]]]:
    """Lane keys in display order (parents before children) and each lane's children."""
    first: dict[str, float] = {}
    for e in executions:
        key: str | None = lane_key(e)
        while key is not None:
            first[key] = min(first.get(key, e.started_at), e.started_at)
            key = lane_parent(key)
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for key in first:
        parent = lane_parent(key)
        (children.setdefault(parent, []) if parent is not None else roots).append(key)

    def order(key: str) -> tuple[float, int, str]:
        item = key[key.rindex("[") + 1 : -1] if key.endswith("]") else ""
        return (first[key], int(item) if item.isdigit() else -1, key)

    out: list[str] = []

    def visit(key: str) -> None:
        out.append(key)
        kids = children.get(key, [])
        kids.sort(
            key=lambda k: (int(k[k.rindex("[") + 1 : -1]), k) if k.endswith("]") else order(k)
        )
        for kid in kids:
            visit(kid)

    for root in sorted(roots, key=order):
        visit(root)
    return out, children


def _lane_label(key: str) -> str:
    last = key.rsplit("/", 1)[-1]
    if last.endswith("]") and "[" in last:
        return f"item {last[last.rindex('[') + 1 : -1]}"
    return last


@dataclass(frozen=True)
class _Chart:
    """The timeline's geometry: lane labels on the left, then time from ``t0`` to ``t0 +
    span`` across the chart, one row per lane below a band of tick labels."""

    t0: float
    span: float
    lanes: int
    nested: bool
    width: float = 1000.0
    right: float = 34.0
    row_h: float = 26.0
    top: float = 30.0

    @property
    def label_w(self) -> float:
        return 210.0 if self.nested else 170.0

    @property
    def height(self) -> float:
        return self.top + self.row_h * self.lanes + 12

    def x(self, ts: float) -> float:
        """The x of time ``ts``."""
        chart_w = self.width - self.label_w - self.right
        return self.label_w + (ts - self.t0) / self.span * chart_w


def timeline(page: Page) -> str:
    """An SVG timeline: one lane per node (nested for map items and subflows), one bar per
    attempt, the critical path marked."""
    t = page.trace
    executions = sorted(t.executions, key=lambda e: (e.started_at, e.iteration))
    if not executions:
        return (
            '<section id="timeline" class="card"><h2>Timeline</h2>'
            '<p class="none">No node has started yet.</p></section>'
        )
    lanes, children = _lanes(executions)
    own: dict[str, list[NodeExecution]] = {}
    for e in executions:
        own.setdefault(lane_key(e), []).append(e)
    t0 = min([t.started_at, *(e.started_at for e in executions)])
    t1 = max(page.latest(), *(page.end_of(e) for e in executions))
    nested = len(lanes) > len([k for k in lanes if lane_parent(k) is None])
    chart = _Chart(t0=t0, span=max(t1 - t0, 1e-3), lanes=len(lanes), nested=nested)
    out = [_svg_start(chart), _ticks(chart), *_rows(page, chart, lanes, children, own)]
    if page.running:
        out.append(_now(chart, page.latest()))
    out.append("</svg>")
    return _section("".join(out), nested)


def _svg_start(chart: _Chart) -> str:
    """The SVG's opening tag (with the row geometry the report's script restacks by) and
    the hatch pattern of retried attempts."""
    return (
        f'<svg class="timeline" viewBox="0 0 {num(chart.width)} {num(chart.height)}" '
        f'data-top="{num(chart.top)}" data-row="{num(chart.row_h)}" '
        f'role="img" aria-label="timeline of node executions" font-family="{esc(FONT)}">'
        "<defs>"
        '<pattern id="tl-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f6c26b"/>'
        '<rect width="3" height="6" fill="#d97706"/></pattern></defs>'
    )


def _ticks(chart: _Chart) -> str:
    """Vertical lines at round times from the start, labelled above the lanes."""
    top, height = chart.top, chart.height
    step = nice_step(chart.span / 8)
    out = []
    tick = 0.0
    while tick <= chart.span + 1e-9:
        tx = chart.x(chart.t0 + tick)
        out.append(
            f'<line class="tick" x1="{num(tx)}" y1="{num(top - 6)}" x2="{num(tx)}" '
            f'y2="{num(height - 8)}" stroke="#e4e7eb" stroke-width="1"/>'
            f'<text class="tick-label" x="{num(tx)}" y="{num(top - 12)}" font-size="10" '
            f'text-anchor="middle" fill="#57606a">{esc(tick_label(tick, step))}</text>'
        )
        tick += step
    return "".join(out)


def _rows(
    page: Page,
    chart: _Chart,
    lanes: list[str],
    children: dict[str, list[str]],
    own: dict[str, list[NodeExecution]],
) -> list[str]:
    """One row per lane: its label (a fold toggle on a lane with children) and its own
    executions' bars; a group lane (a map) without executions of its own gets an envelope
    over all it holds. Over ``FOLD_OVER`` lanes, map items start folded."""
    critical = set(page.critical[1])
    fold = len(lanes) > FOLD_OVER

    def subtree(key: str) -> list[NodeExecution]:
        found = list(own.get(key, []))
        for kid in children.get(key, []):
            found += subtree(kid)
        return found

    out = []
    for i, key in enumerate(lanes):
        kids = children.get(key, [])
        out.append(_lane_head(chart, i, key, kids, key in critical, fold and key.endswith("]")))
        mine = own.get(key, [])
        if not mine and kids:  # a group lane (a map): one envelope over its items
            inside = subtree(key)
            out.append(_envelope(page, key, inside, chart.x, chart.row_h, chart.t0))
        for e in mine:
            out.append(_bars(page, e, 0, chart.x, 0.0, chart.row_h, chart.t0, key))
        out.append("</g>")
    return out


def _lane_head(
    chart: _Chart, i: int, key: str, kids: list[str], critical: bool, folded: bool
) -> str:
    """The start of lane ``key``'s row (the ``i``-th): its ``g.lane-row`` (left open for the
    bars), background, label indented by depth (bold and marked ◆ on the critical path;
    a map shows its item count) and, over ``kids``, the fold toggle."""
    row_h = chart.row_h
    y = chart.top + i * row_h
    depth = len(_ancestors(key))
    parent = lane_parent(key)
    node = key
    shade = "#f6f8fa" if i % 2 == 0 else "#ffffff"
    bold = ' font-weight="600"' if critical else ""
    mark = " ◆" if critical else ""
    label = _lane_label(key)
    if kids and not key.endswith("]") and any(k.endswith("]") for k in kids):
        label += f" ×{len(kids)}"
    indent = 8 + 12 * depth
    attrs = f'data-lane="{esc(key)}" data-depth="{depth}" data-node="{esc(node)}"'
    if parent is not None:
        attrs += f' data-parent="{esc(parent)}"'
    if kids:
        attrs += f' data-folded="{"1" if folded else "0"}"'
    out = [
        f'<g class="lane-row" {attrs} transform="translate(0,{num(y)})">'
        f'<g class="lane" data-node="{esc(node)}">'
        f'<rect x="0" y="0" width="{num(chart.width)}" height="{num(row_h)}" fill="{shade}"/>'
        f"<title>{txt(key)}</title>"
    ]
    if kids:
        out.append(
            f'<g class="tl-toggle" role="button" tabindex="0" aria-label="fold {esc(key)}" '
            f'transform="translate({num(indent - 6)},{num(row_h / 2 - 6)})">'
            '<rect width="12" height="12" rx="2" fill="#ffffff" stroke="#8c959f" '
            'stroke-width="0.8"/><text class="tl-toggle-glyph" x="6" y="10" font-size="11" '
            f'text-anchor="middle" fill="#1f2328">{"+" if folded else "−"}</text></g>'
        )
    out.append(
        f'<text class="lane-label" x="{num(indent + (10 if kids else 0))}" '
        f'y="{num(row_h / 2 + 4)}" font-size="11.5" fill="#1f2328"{bold}>'
        f"{txt(short(label, 26 - 2 * depth if depth < 6 else 14))}{mark}</text></g>"
    )
    return "".join(out)


def _now(chart: _Chart, latest: float) -> str:
    """The dashed "now" line of a running flow."""
    nx_ = chart.x(latest)
    return (
        f'<line class="now" x1="{num(nx_)}" y1="{num(chart.top - 4)}" x2="{num(nx_)}" '
        f'y2="{num(chart.height - 8)}" stroke="#3b6fd8" stroke-width="1.2" '
        'stroke-dasharray="4 3"/>'
        f'<text class="now-label" x="{num(nx_)}" y="{num(chart.height - 1)}" font-size="9.5" '
        'text-anchor="middle" fill="#3b6fd8">now</text>'
    )


def _section(svg: str, nested: bool) -> str:
    """The timeline's card: how to read it, the SVG and the legend of statuses."""
    legend = "".join(
        f'<span class="key"><i class="swatch status-{s}"></i>{esc(STATUS_LABEL[s])}</span>'
        for s in ("ok", "retry", "fallback", "skipped", "failed", "cache_hit", "running")
    )
    nesting = (
        " A map's lane holds one lane per item, a subflow's lane its nodes' lanes; fold "
        "them with − / +."
        if nested
        else ""
    )
    return f"""
<section id="timeline" class="card">
  <h2>Timeline</h2>
  <p class="hint">One lane per node; overlapping bars ran in parallel. Each provider attempt is
  its own bar (hatched: an attempt that failed and was retried), each re-run of a node in a
  rewrite loop is a new bar marked #2, #3… The outline spans a whole node execution.
  ◆ marks the critical path.{nesting}</p>
  <div class="timeline-wrap">{svg}</div>
  <p class="legend">{legend}</p>
</section>"""


def _ancestors(key: str) -> list[str]:
    out = []
    parent = lane_parent(key)
    while parent is not None:
        out.append(parent)
        parent = lane_parent(parent)
    return out


def _envelope(
    page: Page, key: str, inside: list[NodeExecution], x: Any, row_h: float, t0: float
) -> str:
    """A map's group lane: one light bar from its first item's start to its last's end."""
    if not inside:
        return ""
    start = min(e.started_at for e in inside)
    end = max(page.end_of(e) for e in inside)
    status = aggregate(inside)
    x0, x1 = x(start), max(x(end), x(start) + 2)
    colour = STATUS_STYLES.get(status, STATUS_STYLES["not_run"]).stroke
    tip = (
        f"{key}: {STATUS_LABEL.get(status, status)}, +{fmt_seconds(start - t0)} "
        f"for {fmt_seconds(end - start)}"
    )
    return (
        f'<rect class="envelope status-{esc(status)}" data-node="{esc(key)}" x="{num(x0)}" '
        f'y="7" width="{num(x1 - x0)}" height="{num(row_h - 14)}" rx="3" fill="{colour}" '
        f'fill-opacity="0.22" stroke="{colour}" stroke-width="1"><title>{txt(tip)}</title></rect>'
    )


def _bars(
    page: Page,
    e: NodeExecution,
    lane: int,
    x: Any,
    top: float,
    row_h: float,
    t0: float,
    key: str | None = None,
) -> str:
    y = top + lane * row_h
    key = key or e.node
    start, end = e.started_at, page.end_of(e)
    status = outcome(e)
    parts = [
        f'<g class="execution status-{esc(status)}" data-node="{esc(key)}" '
        f'data-iteration="{e.iteration}"{_item_attr(e)}>'
    ]
    x0, x1 = x(start), max(x(end), x(start) + 2)
    colour = STATUS_STYLES.get(status, STATUS_STYLES["not_run"]).stroke
    parts.append(
        f'<rect class="exec-span" x="{num(x0)}" y="{num(y + 3)}" width="{num(x1 - x0)}" '
        f'height="{num(row_h - 6)}" rx="3" fill="none" stroke="{colour}" '
        'stroke-width="1" stroke-dasharray="3 2"/>'
    )
    attempts: list[tuple[float, float]] = [(a, b) for a, b in e.retry_times]
    if not attempts:
        attempts = [(start, end)]
    elif e.ended_at is None:
        attempts.append((attempts[-1][1], end))
    n = len(attempts)
    failed_final = status in ("failed", "fallback", "skipped")
    for i, (a, b) in enumerate(attempts):
        last = i == n - 1
        bar_status = status if last else "retry"
        if last and failed_final and n > 1:
            bar_status = status
        ax0 = x(a)
        ax1 = max(x(max(b, a)), ax0 + 2)
        fill = "url(#tl-hatch)" if bar_status == "retry" else bar_fill(bar_status)
        what = f"attempt {i + 1}/{n}" if n > 1 else "execution"
        tip = (
            f"{key}{f' #{e.iteration}' if e.iteration > 1 else ''} — {what}: "
            f"{STATUS_LABEL.get(bar_status, bar_status)}, starts +"
            f"{fmt_seconds(a - t0)}, lasts {fmt_seconds(max(b - a, 0))}"
        )
        parts.append(
            f'<rect class="bar status-{esc(bar_status)}" data-node="{esc(key)}" '
            f'data-iteration="{e.iteration}" data-attempt="{i + 1}" x="{num(ax0)}" '
            f'y="{num(y + 6)}" width="{num(ax1 - ax0)}" height="{num(row_h - 12)}" rx="2" '
            f'fill="{fill}"><title>{txt(tip)}</title></rect>'
        )
    if e.iteration > 1:
        parts.append(
            f'<text class="iteration" x="{num(x1 + 3)}" y="{num(y + row_h / 2 + 4)}" '
            f'font-size="10" fill="#57606a">#{e.iteration}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _item_attr(e: NodeExecution) -> str:
    return f' data-item="{e.item}"' if e.item is not None else ""
