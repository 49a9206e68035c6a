"""``render_batch_report(records, path)``: one self-contained HTML page of a whole batch.

The page shows the items table (status, thumbnail, cost, time, a link to each item's own
``report.html``), failures grouped by cause (error class and node), and each provider's
calls (and 429s) over time as an inline SVG chart. Like the run report it is fully inline
(CSS, a few lines of JS, SVG), asks no host for anything (a Content-Security-Policy says so)
and points at media with paths relative to its folder, so ``OUT/`` can be zipped and moved.

``records`` are manifest lines (``OUT/batch.jsonl``); :func:`render_batch_report_from`
reads them from the manifest. Every record field is untrusted text and is escaped; error
messages are masked for key-shaped strings once more.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from calliope_graph._files import write_atomic
from calliope_graph.engines._http import redact

__all__ = ["render_batch_report", "render_batch_report_from"]

#: Seconds between reloads of a report whose batch is still running.
REFRESH_SECONDS = 5
CSP = (
    "default-src 'none'; img-src 'self' file: data: blob:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)
_COLORS = ("#2f6fde", "#1a7f37", "#d97706", "#8250df", "#0a7ea4", "#bf3989", "#57606a")
_STATUS = {"ok": "ok", "failed": "failed", "not_started": "not started"}


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _ts(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _prefix(root: Path, page: Path) -> str:
    """The batch folder ``root`` as seen from ``page``'s folder (``""``: the same folder),
    worked out once per page: a link per row is then a string join, not a path walk."""
    rel = os.path.relpath(root, page.parent).replace(os.sep, "/")
    return "" if rel == "." else rel.rstrip("/") + "/"


def _href(path: str, prefix: str) -> str:
    """``path`` (relative to the batch folder) as a link from the page (see :func:`_prefix`)."""
    return quote(prefix + path.replace(os.sep, "/"))


def _money(value: Any) -> str:
    if not isinstance(value, int | float):
        return "—"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


# -- sections -----------------------------------------------------------------------------------
def _summary(records: Sequence[dict[str, Any]], not_started: int, meta: dict[str, Any]) -> str:
    counts = Counter(str(r.get("status")) for r in records)
    cost = meta.get("cost")
    if cost is None:
        cost = sum(r["cost"] for r in records if isinstance(r.get("cost"), int | float))
    cells = [
        ("items", len(records) + not_started + int(meta.get("in_progress") or 0)),
        ("ok", counts.get("ok", 0)),
        ("failed", counts.get("failed", 0)),
        ("running", int(meta.get("in_progress") or 0)),
        ("not started", not_started),
        ("cost", _money(cost)),
    ]
    if meta.get("wall_time") is not None:
        cells.append(("wall time", f"{float(meta['wall_time']):.1f}s"))
        this_run = meta.get("wall_time_this_run")
        if this_run is not None and abs(float(this_run) - float(meta["wall_time"])) >= 0.05:
            cells.append(("this run", f"{float(this_run):.1f}s"))  # after a --resume
    html = "".join(
        f'<div class="stat" data-stat="{_e(k)}"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
        for k, v in cells
    )
    notes = []
    if meta.get("unpriced"):
        notes.append(f"{meta['unpriced']} item(s) called a model without a price: cost unknown.")
    if meta.get("budget_message"):
        notes.append(str(meta["budget_message"]))
    if counts.get("failed"):
        notes.append("Retry the failed items: calliope-graph batch … --resume --retry-failed")
    note_html = "".join(f'<p class="note">{_e(redact(n))}</p>' for n in notes)
    return f'<section class="summary">{html}</section>{note_html}'


def _table(
    records: Sequence[dict[str, Any]],
    not_started: Sequence[tuple[str, str]],
    root: Path,
    page: Path,
) -> str:
    prefix = _prefix(root, page)
    rows = []
    for r in records:
        item = str(r.get("id"))
        status = str(r.get("status"))
        thumb = ""
        if r.get("thumb"):
            src = _href(str(r["thumb"]), prefix)
            thumb = f'<img class="thumb" src="{src}" alt="" loading="lazy" width="48" height="48">'
        error = r.get("error") if isinstance(r.get("error"), dict) else None
        why = ""
        if error:
            where = f" at {error.get('node')}" if error.get("node") else ""
            why = (
                f'<span class="cls">{_e(error.get("class"))}{_e(where)}</span> '
                f"{_e(redact(str(error.get('message') or ''))[:300])}"
            )
        calls = _mapping(r.get("calls"))
        calls_text = ", ".join(f"{p} {n}" for p, n in sorted(calls.items()))
        seconds = r.get("seconds")
        took = f"{seconds:.2f}s" if isinstance(seconds, int | float) else "—"
        report = _href(f"{item}/report.html", prefix)
        rows.append(
            f'<tr class="item" data-status="{_e(status)}" data-id="{_e(item)}">'
            f'<td class="id"><a href="{report}">{_e(item)}</a></td>'
            f'<td><span class="badge {_e(status)}">{_e(_STATUS.get(status, status))}</span></td>'
            f"<td>{thumb}</td>"
            f'<td class="num">{_money(r.get("cost"))}</td>'
            f'<td class="num">{_e(took)}</td>'
            f"<td>{_e(calls_text)}</td>"
            f'<td class="why">{why}</td>'
            f'<td class="src">{_e(r.get("source") or "")}</td></tr>'
        )
    for item, source in not_started:
        rows.append(
            f'<tr class="item" data-status="not_started" data-id="{_e(item)}">'
            f'<td class="id">{_e(item)}</td>'
            '<td><span class="badge not_started">not started</span></td>'
            f'<td></td><td class="num">—</td><td class="num">—</td><td></td><td></td>'
            f'<td class="src">{_e(source)}</td></tr>'
        )
    buttons = "".join(
        f'<button type="button" data-filter="{k}">{_e(v)}</button>'
        for k, v in (
            ("all", "all"),
            ("ok", "ok"),
            ("failed", "failed"),
            *[("not_started", "not started")],
        )
    )
    return (
        '<section><h2>Items</h2><div class="filters">'
        f'{buttons}<input id="search" type="search" placeholder="filter by id or source"></div>'
        '<table id="items"><thead><tr><th>id</th><th>status</th><th></th><th>cost</th>'
        "<th>time</th><th>calls</th><th>error</th><th>input</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _failures(records: Sequence[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        error = r.get("error")
        if r.get("status") == "failed" and isinstance(error, dict):
            groups[(str(error.get("class")), str(error.get("node") or "—"))].append(r)
    if not groups:
        return '<section><h2>Failures</h2><p class="muted">No item failed.</p></section>'
    rows = []
    for (cls, node), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        ids = ", ".join(str(r.get("id")) for r in items[:8]) + (" …" if len(items) > 8 else "")
        message = redact(str((items[0].get("error") or {}).get("message") or ""))[:400]
        rows.append(
            f'<tr class="failure"><td><span class="cls">{_e(cls)}</span></td><td>{_e(node)}</td>'
            f'<td class="num">{len(items)}</td><td>{_e(ids)}</td>'
            f'<td class="why">{_e(message)}</td></tr>'
        )
    return (
        "<section><h2>Failures by cause</h2><table><thead><tr><th>error class</th><th>node</th>"
        "<th>items</th><th>ids</th><th>example</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _chart(records: Sequence[dict[str, Any]]) -> str:
    """Calls per provider (lines) and 429s (red bars), by the time items finished."""
    points: list[tuple[float, dict[str, Any], dict[str, Any]]] = []
    for r in records:
        t = _ts(r.get("ended_at"))
        calls = _mapping(r.get("calls"))
        limits = _mapping(r.get("rate_limits"))
        if t is not None and (calls or limits):
            points.append((t, calls, limits))
    if not points:
        return (
            "<section><h2>Provider calls over time</h2>"
            '<p class="muted">No provider calls recorded yet.</p></section>'
        )
    t0 = min(p[0] for p in points)
    t1 = max(p[0] for p in points)
    span = max(t1 - t0, 1.0)
    buckets = min(60, max(int(span) + 1, 1))
    width, height, pad = 720.0, 180.0, 36.0
    providers = sorted({p for _, calls, _ in points for p in calls})
    series: dict[str, list[int]] = {p: [0] * buckets for p in providers}
    limited = [0] * buckets
    for t, calls, limits in points:
        b = min(int((t - t0) / span * buckets), buckets - 1)
        for provider, n in calls.items():
            series[provider][b] += int(n)
        limited[b] += sum(int(n) for n in limits.values())
    top = max([max(v) for v in series.values()] + [max(limited), 1])
    step = (width - 2 * pad) / max(buckets - 1, 1)

    def x(i: int) -> float:
        return pad + i * step

    def y(v: float) -> float:
        return height - pad + 0 - (v / top) * (height - 2 * pad)

    parts = [
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'class="axis"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>',
        f'<text x="{pad - 6}" y="{pad + 4}" class="tick" text-anchor="end">{top}</text>',
        f'<text x="{pad - 6}" y="{height - pad + 4}" class="tick" text-anchor="end">0</text>',
        f'<text x="{width - pad}" y="{height - pad + 16}" class="tick" text-anchor="end">'
        f"{span:.0f}s</text>",
    ]
    bar_w = max(step * 0.6, 2.0)
    for i, n in enumerate(limited):
        if n:
            parts.append(
                f'<rect class="r429" x="{x(i) - bar_w / 2:.1f}" y="{y(n):.1f}" width="{bar_w:.1f}" '
                f'height="{height - pad - y(n):.1f}"><title>{n} × 429</title></rect>'
            )
    legend = []
    for index, provider in enumerate(providers):
        color = _COLORS[index % len(_COLORS)]
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(series[provider]))
        parts.append(
            f'<polyline class="series" data-provider="{_e(provider)}" points="{pts}" '
            f'stroke="{color}"/>'
        )
        total = sum(series[provider])
        legend.append(
            f'<span class="key"><i style="background:{color}"></i>{_e(provider)} {total}</span>'
        )
    if any(limited):
        legend.append(f'<span class="key"><i class="k429"></i>429s {sum(limited)}</span>')
    svg = (
        f'<svg class="chart" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'height="{height:.0f}" role="img" aria-label="provider calls over time">'
        + "".join(parts)
        + "</svg>"
    )
    return (
        "<section><h2>Provider calls over time</h2>"
        f'<div class="legend">{"".join(legend)}</div>{svg}</section>'
    )


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1f2328}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.muted,.src{color:#656d76}.note{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;
border-radius:6px}.summary{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.stat{border:1px solid #d0d7de;border-radius:8px;padding:8px 14px;min-width:80px}
.stat b{display:block;font-size:18px}.stat span{color:#656d76;font-size:12px}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #d8dee4;padding:4px 8px;
text-align:left;vertical-align:middle}th{background:#f6f8fa;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.why{max-width:420px;overflow-wrap:anywhere;font-size:12px}.cls{font-family:monospace;
background:#fde2e1;border-radius:4px;padding:0 4px}img.thumb{object-fit:cover;border-radius:4px;
display:block}.badge{border-radius:10px;padding:1px 8px;font-size:12px;white-space:nowrap}
.badge.ok{background:#dcf5e4;color:#1a7f37}.badge.failed{background:#fde2e1;color:#cf222e}
.badge.not_started{background:#f0f0f0;color:#57606a}
.badge.simulated{background:#ede7fb;color:#6639ba;font-size:14px;vertical-align:middle}
.filters{margin:6px 0;display:flex;gap:6px}
.filters button{border:1px solid #d0d7de;background:#f6f8fa;border-radius:6px;padding:2px 10px;
cursor:pointer}.filters button.on{background:#0969da;color:#fff}#search{flex:1;max-width:320px}
.chart .axis{stroke:#8c959f}.chart .tick{font-size:10px;fill:#656d76}
.chart .series{fill:none;stroke-width:2}.chart .r429{fill:#cf222e;opacity:.55}
.legend{display:flex;gap:14px;font-size:12px}.key i{display:inline-block;width:12px;height:4px;
margin-right:4px;vertical-align:middle}.key i.k429{background:#cf222e;height:10px;width:8px}
"""

_JS = """
(function(){
  var rows = Array.prototype.slice.call(document.querySelectorAll('#items tbody tr'));
  var mode = 'all', text = '';
  function apply(){
    rows.forEach(function(r){
      var show = (mode === 'all' || r.getAttribute('data-status') === mode) &&
        (!text || r.textContent.toLowerCase().indexOf(text) >= 0);
      r.style.display = show ? '' : 'none';
    });
  }
  document.querySelectorAll('.filters button').forEach(function(b){
    b.addEventListener('click', function(){
      mode = b.getAttribute('data-filter');
      document.querySelectorAll('.filters button').forEach(function(o){
        o.classList.toggle('on', o === b);
      });
      apply();
    });
  });
  var search = document.getElementById('search');
  if (search) search.addEventListener('input', function(){
    text = search.value.toLowerCase(); apply();
  });
})();
"""


def render_batch_report(
    records: Iterable[dict[str, Any]],
    out_path: str | Path,
    *,
    flow: str = "",
    not_started: Sequence[tuple[str, str]] = (),
    summary: dict[str, Any] | None = None,
    root: str | Path | None = None,
) -> Path:
    """Write the batch page to ``out_path`` (atomically) and return its path.

    ``records``: manifest lines (latest per item); ``not_started``: (id, source) of items
    without a line; ``summary``: counts from the runner (``running`` adds a refresh while the
    batch goes on); ``root``: the batch folder the records' paths are relative to
    (default: ``out_path``'s folder).
    """
    page = Path(out_path)
    base = Path(root) if root is not None else page.parent
    items = list(records)
    meta = dict(summary or {})
    title = f"batch · {flow}" if flow else "batch"
    refresh = (
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if meta.get("running") else ""
    )
    simulated = any(item.get("simulated") for item in items) or meta.get("simulated")
    mark = (
        ' <span class="badge simulated" title="every provider call went to the offline '
        'simulator: nothing was paid, the media are its drawings">simulated</span>'
        if simulated
        else ""
    )
    body = (
        f"<h1>{_e(title)}{mark}</h1>"
        f'<p class="muted">{_e(len(items))} finished item(s) · written '
        f"{_e(datetime.now().strftime('%Y-%m-%d %H:%M:%S'))}"
        f"{' · still running, this page reloads' if meta.get('running') else ''}</p>"
        + _summary(items, len(not_started), meta)
        + _table(items, not_started, base, page)
        + _failures(items)
        + _chart(items)
    )
    html = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">{refresh}'
        '<meta name="generator" content="calliope-graph">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}"
        f"<script>{_JS}</script></body></html>"
    )
    _write_atomic(page, html)
    return page


def render_batch_report_from(manifest: str | Path, out_path: str | Path | None = None) -> Path:
    """The batch page of a manifest file (``OUT/batch.jsonl`` → ``OUT/batch.html``)."""
    path = Path(manifest)
    latest: dict[str, dict[str, Any]] = {}
    flow = ""
    with path.open(encoding="utf-8") as fh:
        for text in fh:
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record:
                latest[str(record["id"])] = record
                flow = str(record.get("flow") or flow)
    for record in latest.values():
        if "thumb" not in record:
            outputs = _mapping(record.get("outputs"))
            record["thumb"] = next(
                (
                    v
                    for v in outputs.values()
                    if isinstance(v, str) and v.lower().endswith((".png", ".jpg", ".jpeg", ".webp"))
                ),
                None,
            )
    target = Path(out_path) if out_path else path.with_name("batch.html")
    return render_batch_report(latest.values(), target, flow=flow, root=path.parent)


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, text, durable=False)  # the one atomic writer; a view, redrawn
