"""The SVG timeline: one lane per node, one bar per provider attempt."""

from __future__ import annotations

from typing import Any

from calliope_graph.flow.trace import NodeExecution
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


def timeline(page: Page) -> str:
    """An SVG timeline: one lane per node, one bar per attempt, the critical path marked."""
    t = page.trace
    executions = sorted(t.executions, key=lambda e: (e.started_at, e.iteration))
    if not executions:
        return (
            '<section id="timeline" class="card"><h2>Timeline</h2>'
            '<p class="none">No node has started yet.</p></section>'
        )
    lanes: list[str] = []
    for e in executions:
        if e.node not in lanes:
            lanes.append(e.node)
    t0 = min([t.started_at, *(e.started_at for e in executions)])
    t1 = max(page.latest(), *(page.end_of(e) for e in executions))
    span = max(t1 - t0, 1e-3)
    width, label_w, right = 1000.0, 170.0, 34.0
    chart_w = width - label_w - right
    row_h, top = 26.0, 30.0
    height = top + row_h * len(lanes) + 12

    def x(ts: float) -> float:
        return label_w + (ts - t0) / span * chart_w

    critical = set(page.critical[1])
    out = [
        f'<svg class="timeline" viewBox="0 0 {num(width)} {num(height)}" '
        f'role="img" aria-label="timeline of node executions" font-family="{esc(FONT)}">',
        "<defs>"
        '<pattern id="tl-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f6c26b"/>'
        '<rect width="3" height="6" fill="#d97706"/></pattern></defs>',
    ]
    step = nice_step(span / 8)
    tick = 0.0
    while tick <= span + 1e-9:
        tx = x(t0 + tick)
        out.append(
            f'<line class="tick" x1="{num(tx)}" y1="{num(top - 6)}" x2="{num(tx)}" '
            f'y2="{num(height - 8)}" stroke="#e4e7eb" stroke-width="1"/>'
            f'<text class="tick-label" x="{num(tx)}" y="{num(top - 12)}" font-size="10" '
            f'text-anchor="middle" fill="#57606a">{esc(tick_label(tick, step))}</text>'
        )
        tick += step
    for i, name in enumerate(lanes):
        y = top + i * row_h
        shade = "#f6f8fa" if i % 2 == 0 else "#ffffff"
        bold = ' font-weight="600"' if name in critical else ""
        mark = " ◆" if name in critical else ""
        out.append(
            f'<g class="lane" data-node="{esc(name)}">'
            f'<rect x="0" y="{num(y)}" width="{num(width)}" height="{num(row_h)}" '
            f'fill="{shade}"/>'
            f'<text class="lane-label" x="8" y="{num(y + row_h / 2 + 4)}" font-size="11.5" '
            f'fill="#1f2328"{bold}>{txt(short(name, 24))}{mark}</text></g>'
        )
    for e in executions:
        out.append(_bars(page, e, lanes.index(e.node), x, top, row_h, t0))
    if page.running:
        nx_ = x(page.latest())
        out.append(
            f'<line class="now" x1="{num(nx_)}" y1="{num(top - 4)}" x2="{num(nx_)}" '
            f'y2="{num(height - 8)}" stroke="#3b6fd8" stroke-width="1.2" '
            'stroke-dasharray="4 3"/>'
            f'<text x="{num(nx_)}" y="{num(height - 1)}" font-size="9.5" '
            'text-anchor="middle" fill="#3b6fd8">now</text>'
        )
    out.append("</svg>")
    legend = "".join(
        f'<span class="key"><i class="swatch status-{s}"></i>{esc(STATUS_LABEL[s])}</span>'
        for s in ("ok", "retry", "fallback", "skipped", "failed", "cache_hit", "running")
    )
    return f"""
<section id="timeline" class="card">
  <h2>Timeline</h2>
  <p class="hint">One lane per node; overlapping bars ran in parallel. Each provider attempt is
  its own bar (hatched: an attempt that failed and was retried), each re-run of a node in a
  rewrite loop is a new bar marked #2, #3… The outline spans a whole node execution.
  ◆ marks the critical path.</p>
  <div class="timeline-wrap">{"".join(out)}</div>
  <p class="legend">{legend}</p>
</section>"""


def _bars(
    page: Page, e: NodeExecution, lane: int, x: Any, top: float, row_h: float, t0: float
) -> str:
    y = top + lane * row_h
    start, end = e.started_at, page.end_of(e)
    status = e.status
    parts = [
        f'<g class="execution status-{esc(status)}" data-node="{esc(e.node)}" '
        f'data-iteration="{e.iteration}">'
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
            f"{e.node}{f' #{e.iteration}' if e.iteration > 1 else ''} — {what}: "
            f"{STATUS_LABEL.get(bar_status, bar_status)}, starts +"
            f"{fmt_seconds(a - t0)}, lasts {fmt_seconds(max(b - a, 0))}"
        )
        parts.append(
            f'<rect class="bar status-{esc(bar_status)}" data-node="{esc(e.node)}" '
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
