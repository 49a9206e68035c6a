"""``render_report(trace, path)``: one self-contained HTML page of what a run did.

Everything is inline (CSS, a few lines of JS, the SVG drawing and the SVG timeline); the
page asks no host for anything — no CDN, no web font — and a Content-Security-Policy says
so to the browser. Media stay files: thumbnails and players point at them with paths
relative to the report's folder, so the output directory can be zipped and moved whole.

Trace content is untrusted (prompts, model outputs, error messages): every piece of it is
escaped, parameters whose names say "secret" are masked, and key-shaped strings are masked
wherever they appear. The page renders a run in progress too (executions still
``running``), with a short meta refresh while the trace says ``running``, because
``calliope-graph run`` rewrites it as nodes finish; the file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import math
import mimetypes
import os
import re
import tempfile
import time
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from calliope_graph.engines._http import redact
from calliope_graph.flow.trace import NodeExecution, Trace
from calliope_graph.viz._graph import edge_list, to_networkx
from calliope_graph.viz._layout import layout
from calliope_graph.viz._style import STATUS_STYLES
from calliope_graph.viz._svg import FONT, render_svg

__all__ = [
    "drawing_state",
    "node_outcomes",
    "redact_params",
    "render_report",
]

#: Seconds between reloads of a report whose run is still going.
REFRESH_SECONDS = 2
REDACTED = "••• redacted"

_SECRET_EXACT = {"key", "auth", "authorization", "bearer", "cookie", "password", "passwd"}
_SECRET_SUFFIXES = (
    "apikey",
    "secret",
    "secretkey",
    "accesskey",
    "privatekey",
    "password",
    "passwd",
    "token",
    "credential",
    "credentials",
    "authorization",
    "signature",
)
_BEARER = re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=\-]{8,}")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")
_SLUG = re.compile(r"[^A-Za-z0-9_\-]+")


# -- redaction --------------------------------------------------------------------------------
def _secret_name(name: str) -> bool:
    """Whether a parameter called ``name`` holds a secret (``api_key``, ``hf_token``...).

    ``max_tokens`` and friends are not secrets: only a singular ``token`` ending counts.
    """
    norm = re.sub(r"[^a-z0-9]", "", name.lower())
    return norm in _SECRET_EXACT or norm.endswith(_SECRET_SUFFIXES)


def _mask(text: str) -> str:
    """Key-shaped substrings (``sk-…``, ``r8_…``, ``hf_…``, ``Bearer …``) masked."""
    return _BEARER.sub(lambda m: f"{m.group(1)} ***", redact(text))


def redact_params(value: Any, name: str | None = None) -> Any:
    """``value`` with secret-named entries replaced and key-shaped strings masked (recursive)."""
    if name is not None and _secret_name(name) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): redact_params(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_params(v) for v in value]
    if isinstance(value, str):
        return _mask(value)
    return value


# -- what the run did, per node and edge ---------------------------------------------------
def _last(executions: list[NodeExecution]) -> NodeExecution:
    return max(executions, key=lambda e: (e.iteration, e.started_at))


def node_outcomes(trace: Trace) -> dict[str, str]:
    """Each executed node's outcome: its last execution's status (``running`` wins)."""
    out: dict[str, str] = {}
    for name, executions in trace.by_node().items():
        if any(e.status == "running" for e in executions):
            out[name] = "running"
        else:
            out[name] = _last(executions).status
    return out


def drawing_state(trace: Trace, graph: Any) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """(outcome per drawing node, taken edges as (source, target, kind)) for a run's trace."""
    by_node = trace.by_node()
    outcomes = node_outcomes(trace)
    spec = trace.spec
    started = bool(trace.executions)

    def input_given(name: str) -> bool:
        if trace.inputs.get(name) is not None:
            return True
        given = spec.inputs.get(name) if spec is not None else None
        return started and given is not None and (given.default is not None or not given.required)

    status: dict[str, str] = {}
    for node, attrs in graph.nodes(data=True):
        role = attrs["role"]
        _, _, rest = node.partition(".")
        if role == "node":
            status[node] = outcomes.get(node, "not_run")
        elif role == "input":
            status[node] = "ok" if input_given(rest) else "not_run"
        elif role == "output":
            status[node] = "ok" if trace.outputs.get(rest) is not None else "not_run"
        elif role == "continue":
            skipped = any(e.branch == "continue" for e in by_node.get(rest, []))
            status[node] = "ok" if skipped else "not_run"

    def branches(node: str) -> set[str]:
        return {e.branch for e in by_node.get(node, []) if e.branch}

    def produced(node: str, seen: frozenset[str] = frozenset()) -> bool:
        if node in seen:
            return False
        if graph.nodes[node]["role"] == "input":
            return status.get(node) == "ok"
        for execution in by_node.get(node, []):
            if execution.status in ("ok", "cache_hit"):
                return True
            branch = execution.branch or ""
            if branch.startswith("fallback:") and produced(branch[9:], seen | {node}):
                return True  # the fallback's outputs stand in for this node's
        return False

    def ran(node: str) -> bool:
        role = graph.nodes[node]["role"]
        if role == "node":
            return node in by_node
        return status.get(node) == "ok"

    taken: set[tuple[str, str, str]] = set()
    for u, v, attrs in edge_list(graph):
        kind = attrs["kind"]
        hit = False
        if kind == "data":
            hit = produced(u) and ran(v)
        elif kind == "fallback":
            hit = f"fallback:{v}" in branches(u)
        elif kind == "continue":
            hit = "continue" in branches(u)
        elif kind == "rewrite":
            hit = f"rewrite:{v}" in branches(u)
        elif kind == "rewrite_back":
            hit = produced(u) and any(e.iteration > 1 for e in by_node.get(v, []))
        if hit:
            taken.add((u, v, kind))
    return status, taken


# -- formatting helpers ---------------------------------------------------------------------
def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _t(value: object) -> str:
    """Untrusted text, masked and escaped."""
    return escape(_mask(str(value)), quote=True)


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def fmt_seconds(seconds: float) -> str:
    """``850 ms``, ``4.2 s``, ``3 min 05 s``."""
    if seconds <= 0:
        return "0 s"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 else f"{seconds * 1000:.2f} ms"
    if seconds < 60:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + " s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:02.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def _clock(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except (OverflowError, OSError, ValueError):
        return "?"


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    exp = math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        step = mult * 10.0**exp
        if step >= raw:
            return step
    return 10.0 ** (exp + 1)


def _slug(name: str, used: set[str]) -> str:
    base = "node-" + (_SLUG.sub("_", name) or "x")
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


_STATUS_LABEL = {
    "ok": "ok",
    "failed": "failed",
    "skipped": "skipped (continued)",
    "fallback": "failed → route taken",
    "cache_hit": "cache hit",
    "running": "running",
    "not_run": "not run",
    "retry": "retried attempt",
}


def _badge(status: str) -> str:
    return f'<span class="badge status-{_e(status)}">{_e(_STATUS_LABEL.get(status, status))}</span>'


# -- the page ----------------------------------------------------------------------------------
class _Page:
    def __init__(self, trace: Trace, out_path: Path) -> None:
        self.trace = trace
        self.report_dir = out_path.parent.resolve()
        root = Path(trace.out_dir) if trace.out_dir else self.report_dir
        self.media_root = root if root.is_absolute() else (Path.cwd() / root)
        self.now = time.time()
        self.running = trace.status == "running"
        self._latest: float | None = None
        self.ids: dict[str, str] = {}
        used: set[str] = set()
        for name in self.node_names():
            self.ids[name] = _slug(name, used)
        self.critical: tuple[float, list[str]] = (0.0, [])
        with contextlib.suppress(Exception):  # a trace from another version still renders
            self.critical = trace.critical_path()

    # -- data --------------------------------------------------------------------------
    def node_names(self) -> list[str]:
        names = list(self.trace.spec.nodes) if self.trace.spec is not None else []
        for execution in self.trace.executions:
            if execution.node not in names:
                names.append(execution.node)
        return names

    def end_of(self, execution: NodeExecution) -> float:
        if execution.ended_at is not None:
            return execution.ended_at
        return max(self.latest(), execution.started_at)

    def latest(self) -> float:
        """The last moment the trace knows of (now, for a live run that is not stale)."""
        if self._latest is None:
            self._latest = self._compute_latest()
        return self._latest

    def _compute_latest(self) -> float:
        times = [self.trace.started_at]
        if self.trace.ended_at is not None:
            times.append(self.trace.ended_at)
        for e in self.trace.executions:
            times.append(e.started_at)
            if e.ended_at is not None:
                times.append(e.ended_at)
            times += [b for _, b in e.retry_times]
        known = max(times)
        live = self.running or any(e.ended_at is None for e in self.trace.executions)
        if live and 0 <= self.now - known < 6 * 3600:
            return self.now
        return known

    def wall_time(self) -> float:
        if self.trace.ended_at is not None:
            return self.trace.wall_time
        return max(self.latest() - self.trace.started_at, 0.0)

    # -- values ------------------------------------------------------------------------
    def link(self, path: str) -> str | None:
        """A relative URL to a local media file, or None (remote, missing or not a file)."""
        if _SCHEME.match(path) and not re.match(r"^[A-Za-z]:[\\/]", path):
            return None  # a URL: never fetched by the report
        given = Path(path)
        # Trace paths are relative to the run's output folder; an input given on the command
        # line may be relative to the working directory instead.
        candidates = [given] if given.is_absolute() else [self.media_root / given, given]
        try:
            file = next((c for c in candidates if c.is_file()), None)
            if file is None:
                return None
            rel = os.path.relpath(file.resolve(), self.report_dir)
        except (OSError, ValueError):
            return None
        return quote(Path(rel).as_posix(), safe="/")

    def media(self, kind: str, value: dict[str, Any]) -> str:
        path = str(value.get("path", ""))
        name = path.replace("\\", "/").rsplit("/", 1)[-1] or path
        size = ""
        if value.get("width") and value.get("height"):
            size = f" · {_e(value['width'])}×{_e(value['height'])}"
        mime = f" · {_e(value['mime'])}" if value.get("mime") else ""
        url = self.link(path)
        if url is None:
            return (
                f'<div class="media missing">{_e(kind)} <code>{_t(_short(path, 200))}</code> '
                "(not found beside this report)</div>"
            )
        href = _e(url)
        caption = f'<figcaption><a href="{href}">{_t(name)}</a>{size}{mime}</figcaption>'
        if kind == "image":
            body = (
                f'<a href="{href}" target="_blank" rel="noopener">'
                f'<img class="thumb" src="{href}" alt="{_t(name)}"></a>'
            )
        elif kind == "audio":
            body = f'<audio class="player" controls preload="metadata" src="{href}"></audio>'
        else:
            body = f'<video class="player thumb" controls preload="metadata" src="{href}"></video>'
        return f'<figure class="media media-{kind}">{body}{caption}</figure>'

    def value(self, value: Any, depth: int = 0) -> str:
        if value is None:
            return '<span class="none">—</span>'
        if isinstance(value, bool | int | float):
            return f"<code>{_e(value)}</code>"
        if isinstance(value, str):
            if len(value) <= 90 and "\n" not in value:
                return f'<span class="text">{_t(value) or "<i>(empty)</i>"}</span>'
            return f'<pre class="text">{_t(value)}</pre>'
        if isinstance(value, dict):
            kind = _media_kind(value)
            if kind is not None:
                return self.media(kind, value)
            if value.get("type") == "analysis":
                return self.analysis(value)
            if depth >= 4:
                return f'<pre class="text">{_t(value)}</pre>'
            rows = "".join(
                f"<dt>{_t(k)}</dt><dd>{self.value(v, depth + 1)}</dd>" for k, v in value.items()
            )
            return f'<dl class="kv">{rows}</dl>' if rows else '<span class="none">{}</span>'
        if isinstance(value, list | tuple):
            if not value:
                return '<span class="none">[]</span>'
            if (
                all(isinstance(v, str | int | float) for v in value)
                and sum(len(str(v)) for v in value) < 160
            ):
                return '<span class="text">' + _t(", ".join(map(str, value))) + "</span>"
            items = "".join(f"<li>{self.value(v, depth + 1)}</li>" for v in value)
            return f'<ol class="list">{items}</ol>'
        return f"<code>{_t(value)}</code>"

    def analysis(self, value: dict[str, Any]) -> str:
        rows = []
        for key in ("description", "captions", "tags", "objects", "text", "sources"):
            item = value.get(key)
            if item in (None, "", []):
                continue
            shown = ", ".join(map(str, item)) if isinstance(item, list) else str(item)
            rows.append(f"<dt>{_e(key)}</dt><dd>{_t(shown)}</dd>")
        head = '<dt class="tag">image analysis</dt>'
        return f'<dl class="kv analysis">{head}{"".join(rows)}</dl>'

    def table(self, values: dict[str, Any], empty: str) -> str:
        if not values:
            return f'<p class="none">{_e(empty)}</p>'
        rows = "".join(
            f'<tr><th scope="row">{_t(k)}</th><td>{self.value(v)}</td></tr>'
            for k, v in values.items()
        )
        return f'<table class="values">{rows}</table>'

    # -- sections ----------------------------------------------------------------------
    def summary(self) -> str:
        t = self.trace
        outcomes = node_outcomes(t)
        counts: dict[str, int] = {}
        for status in outcomes.values():
            counts[status] = counts.get(status, 0) + 1
        total_nodes = len(self.node_names())
        not_run = total_nodes - len(outcomes)
        if not_run > 0:
            counts["not_run"] = not_run
        order = [*_STATUS_LABEL, *counts]
        status_line = " ".join(
            f"{_badge(s)}&nbsp;×{n}"
            for s, n in sorted(counts.items(), key=lambda kv: order.index(kv[0]))
        )
        cp_seconds, cp_chain = self.critical
        chain = " → ".join(
            f'<a class="node-link" href="#{_e(self.ids.get(name, ""))}" '
            f'data-node="{_e(name)}">{_e(name)}</a>'
            for name in cp_chain
        )
        calls = t.calls_per_provider()
        retries = t.retries_per_provider()
        providers = sorted(set(calls) | set(retries))
        if providers:
            prov_rows = "".join(
                f"<tr><th scope='row'>{_e(p)}</th><td>{calls.get(p, 0)}</td>"
                f"<td>{retries.get(p, 0)}</td></tr>"
                for p in providers
            )
            prov = (
                '<table class="providers"><thead><tr><th>provider</th><th>calls</th>'
                f"<th>retries</th></tr></thead><tbody>{prov_rows}</tbody></table>"
            )
        else:
            prov = '<p class="none">No provider was called.</p>'
        fallbacks = t.fallbacks()
        if fallbacks:
            items = "".join(
                f'<li><a class="node-link" href="#{_e(self.ids.get(e.node, ""))}" '
                f'data-node="{_e(e.node)}">{_e(e.node)}</a>'
                f"{f' #{e.iteration}' if e.iteration > 1 else ''}: "
                f"<code>{_t(e.error_class or 'error')}</code> → <b>{_t(e.branch)}</b></li>"
                for e in fallbacks
            )
            fb = f'<ul class="fallbacks">{items}</ul>'
        else:
            fb = '<p class="none">None: every node that ran succeeded.</p>'
        wall = fmt_seconds(self.wall_time())
        if self.running:
            wall += " so far"
        resumed = (
            f"<div><dt>resumed from</dt><dd><code>{_t(t.resumed_from)}</code></dd></div>"
            if t.resumed_from
            else ""
        )
        error = (
            f'<div class="run-error"><b>The run failed.</b><pre>{_t(t.error)}</pre></div>'
            if t.error
            else ""
        )
        cache_hits = sum(1 for e in t.executions if e.status == "cache_hit")
        return f"""
<section id="summary" class="card">
  <h2>Summary</h2>{error}
  <dl class="facts">
    <div><dt>status</dt><dd>{_badge(t.status)}</dd></div>
    <div><dt>total wall time</dt><dd class="wall-time">{_e(wall)}</dd></div>
    <div><dt>started</dt><dd>{_e(_clock(t.started_at))}</dd></div>
    <div><dt>thread</dt><dd><code>{_t(t.thread_id)}</code></dd></div>{resumed}
    <div><dt>node executions</dt><dd>{len(t.executions)} ({cache_hits} cache hits)</dd></div>
    <div><dt>nodes</dt><dd>{status_line or "—"}</dd></div>
  </dl>
  <div class="summary-grid">
    <div><h3>Critical path · {_e(fmt_seconds(cp_seconds))}</h3>
      <p class="critical-path">{chain or '<span class="none">—</span>'}</p></div>
    <div><h3>Calls and retries per provider</h3>{prov}</div>
    <div><h3>Fallbacks and routes taken</h3>{fb}</div>
  </div>
</section>"""

    def io_section(self) -> str:
        t = self.trace
        outputs = self.table(
            t.outputs, "No outputs yet." if self.running else "The run produced no outputs."
        )
        inputs = self.table(self.typed_inputs(), "No inputs.")
        return f"""
<section id="io" class="card">
  <div class="io-grid">
    <div id="flow-outputs"><h2>Outputs</h2>{outputs}</div>
    <div id="flow-inputs"><h2>Inputs</h2>{inputs}</div>
  </div>
</section>"""

    def typed_inputs(self) -> dict[str, Any]:
        """The flow inputs, with a media input given as a bare path shown as that medium."""
        out = dict(self.trace.inputs)
        spec = self.trace.spec
        if spec is None:
            return out
        for name, value in out.items():
            declared = spec.inputs.get(name)
            kind = declared.type if declared is not None else None
            if kind in ("image", "audio", "video") and isinstance(value, str) and value:
                mime = mimetypes.guess_type(value)[0] or ""
                out[name] = {"type": kind, "path": value, "mime": mime}
        return out

    def drawing(self) -> str:
        spec = self.trace.spec
        if spec is None:
            return (
                '<section id="drawing" class="card"><h2>Flow</h2><p class="none">This trace '
                "carries no flow description, so there is no drawing.</p></section>"
            )
        try:
            graph = to_networkx(spec)
            status, taken = drawing_state(self.trace, graph)
            svg = render_svg(
                layout(graph),
                status=status,
                taken=taken,
                id_prefix="report",
                title=f"flow {spec.name}: the path this run took",
                notes=self.notes(),
            )
        except Exception as exc:  # never lose the rest of the report to a drawing problem
            return (
                '<section id="drawing" class="card"><h2>Flow</h2>'
                f'<p class="error">The flow could not be drawn: {_t(exc)}</p></section>'
            )
        svg = svg.replace(' xmlns="http://www.w3.org/2000/svg"', "", 1)
        return f"""
<section id="drawing" class="card">
  <h2>Flow and the path taken</h2>
  <p class="hint">Nodes are coloured by outcome; edges the run followed are bold, the rest faded.
  Click a node for its inputs, outputs and errors.</p>
  <div class="drawing">{svg}</div>
</section>"""

    def notes(self) -> dict[str, str]:
        """``ran ×2 · 3 retries`` tags for nodes that ran more than once or retried."""
        notes: dict[str, str] = {}
        for name, executions in self.trace.by_node().items():
            parts = []
            if len(executions) > 1:
                parts.append(f"ran ×{len(executions)}")
            retries = sum(e.retries for e in executions)
            if retries:
                parts.append(f"{retries} retr{'ies' if retries != 1 else 'y'}")
            if any(e.status == "cache_hit" for e in executions):
                parts.append("cached")
            if parts:
                notes[name] = " · ".join(parts)
        return notes

    def timeline(self) -> str:
        t = self.trace
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
        t1 = max(self.latest(), *(self.end_of(e) for e in executions))
        span = max(t1 - t0, 1e-3)
        width, label_w, right = 1000.0, 170.0, 34.0
        chart_w = width - label_w - right
        row_h, top = 26.0, 30.0
        height = top + row_h * len(lanes) + 12

        def x(ts: float) -> float:
            return label_w + (ts - t0) / span * chart_w

        critical = set(self.critical[1])
        out = [
            f'<svg class="timeline" viewBox="0 0 {_num(width)} {_num(height)}" '
            f'role="img" aria-label="timeline of node executions" font-family="{_e(FONT)}">',
            "<defs>"
            '<pattern id="tl-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f6c26b"/>'
            '<rect width="3" height="6" fill="#d97706"/></pattern></defs>',
        ]
        step = _nice_step(span / 8)
        tick = 0.0
        while tick <= span + 1e-9:
            tx = x(t0 + tick)
            out.append(
                f'<line class="tick" x1="{_num(tx)}" y1="{_num(top - 6)}" x2="{_num(tx)}" '
                f'y2="{_num(height - 8)}" stroke="#e4e7eb" stroke-width="1"/>'
                f'<text class="tick-label" x="{_num(tx)}" y="{_num(top - 12)}" font-size="10" '
                f'text-anchor="middle" fill="#57606a">{_e(_tick_label(tick, step))}</text>'
            )
            tick += step
        for i, name in enumerate(lanes):
            y = top + i * row_h
            shade = "#f6f8fa" if i % 2 == 0 else "#ffffff"
            bold = ' font-weight="600"' if name in critical else ""
            mark = " ◆" if name in critical else ""
            out.append(
                f'<g class="lane" data-node="{_e(name)}">'
                f'<rect x="0" y="{_num(y)}" width="{_num(width)}" height="{_num(row_h)}" '
                f'fill="{shade}"/>'
                f'<text class="lane-label" x="8" y="{_num(y + row_h / 2 + 4)}" font-size="11.5" '
                f'fill="#1f2328"{bold}>{_t(_short(name, 24))}{mark}</text></g>'
            )
        for e in executions:
            out.append(self.bars(e, lanes.index(e.node), x, top, row_h, t0))
        if self.running:
            nx_ = x(self.latest())
            out.append(
                f'<line class="now" x1="{_num(nx_)}" y1="{_num(top - 4)}" x2="{_num(nx_)}" '
                f'y2="{_num(height - 8)}" stroke="#3b6fd8" stroke-width="1.2" '
                'stroke-dasharray="4 3"/>'
                f'<text x="{_num(nx_)}" y="{_num(height - 1)}" font-size="9.5" '
                'text-anchor="middle" fill="#3b6fd8">now</text>'
            )
        out.append("</svg>")
        legend = "".join(
            f'<span class="key"><i class="swatch status-{s}"></i>{_e(_STATUS_LABEL[s])}</span>'
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

    def bars(self, e: NodeExecution, lane: int, x: Any, top: float, row_h: float, t0: float) -> str:
        y = top + lane * row_h
        start, end = e.started_at, self.end_of(e)
        status = e.status
        parts = [
            f'<g class="execution status-{_e(status)}" data-node="{_e(e.node)}" '
            f'data-iteration="{e.iteration}">'
        ]
        x0, x1 = x(start), max(x(end), x(start) + 2)
        colour = STATUS_STYLES.get(status, STATUS_STYLES["not_run"]).stroke
        parts.append(
            f'<rect class="exec-span" x="{_num(x0)}" y="{_num(y + 3)}" width="{_num(x1 - x0)}" '
            f'height="{_num(row_h - 6)}" rx="3" fill="none" stroke="{colour}" '
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
            fill = "url(#tl-hatch)" if bar_status == "retry" else _bar_fill(bar_status)
            what = f"attempt {i + 1}/{n}" if n > 1 else "execution"
            tip = (
                f"{e.node}{f' #{e.iteration}' if e.iteration > 1 else ''} — {what}: "
                f"{_STATUS_LABEL.get(bar_status, bar_status)}, starts +"
                f"{fmt_seconds(a - t0)}, lasts {fmt_seconds(max(b - a, 0))}"
            )
            parts.append(
                f'<rect class="bar status-{_e(bar_status)}" data-node="{_e(e.node)}" '
                f'data-iteration="{e.iteration}" data-attempt="{i + 1}" x="{_num(ax0)}" '
                f'y="{_num(y + 6)}" width="{_num(ax1 - ax0)}" height="{_num(row_h - 12)}" rx="2" '
                f'fill="{fill}"><title>{_t(tip)}</title></rect>'
            )
        if e.iteration > 1:
            parts.append(
                f'<text class="iteration" x="{_num(x1 + 3)}" y="{_num(y + row_h / 2 + 4)}" '
                f'font-size="10" fill="#57606a">#{e.iteration}</text>'
            )
        parts.append("</g>")
        return "".join(parts)

    def nodes(self) -> str:
        by_node = self.trace.by_node()
        outcomes = node_outcomes(self.trace)
        spec = self.trace.spec
        articles = []
        for name in self.node_names():
            executions = sorted(by_node.get(name, []), key=lambda e: (e.started_at, e.iteration))
            status = outcomes.get(name, "not_run")
            node_spec = spec.nodes.get(name) if spec is not None else None
            kind = executions[0].kind if executions else (node_spec.kind if node_spec else "?")
            first = executions[0] if executions else None
            who = kind
            if first is not None and (first.provider or first.model):
                who += " · " + "/".join(str(p) for p in (first.provider, first.model) if p)
            elif node_spec is not None and isinstance(node_spec.model, str):
                who += f" · {node_spec.model}"
            body = []
            if not executions:
                if self.running:
                    body.append('<p class="none">Not started yet.</p>')
                elif node_spec is not None and name in spec_fallbacks(spec):
                    body.append('<p class="none">Did not run: no route sent it work.</p>')
                else:
                    body.append('<p class="none">Did not run.</p>')
                if node_spec is not None and node_spec.params:
                    body.append(
                        "<details class='params'><summary>Parameters (from the flow)</summary>"
                        f"{self.table(redact_params(node_spec.params), '')}</details>"
                    )
            for e in executions:
                body.append(self.execution(e, len(executions), node_spec))
            total = sum(e.duration for e in executions)
            attempts = sum(e.attempts for e in executions)
            retries = sum(e.retries for e in executions)
            meta = (
                f"{len(executions)} execution{'s' if len(executions) != 1 else ''} · "
                f"{fmt_seconds(total)} · {attempts} provider attempt"
                f"{'s' if attempts != 1 else ''} · {retries} retr{'ies' if retries != 1 else 'y'}"
            )
            articles.append(
                f'<article class="node-detail status-{_e(status)}" id="{_e(self.ids[name])}" '
                f'data-node="{_e(name)}"><h3>{_badge(status)} <span class="node-name">'
                f'{_t(name)}</span> <small>{_t(who)}</small></h3><p class="meta">{_e(meta)}</p>'
                f"{''.join(body)}</article>"
            )
        return f"""
<section id="nodes" class="card">
  <h2>Nodes</h2>
  {"".join(articles)}
</section>"""

    def execution(self, e: NodeExecution, count: int, node_spec: Any) -> str:
        start = e.started_at - self.trace.started_at
        duration = (
            f"took {fmt_seconds(e.duration)}"
            if e.ended_at is not None
            else f"running for {fmt_seconds(max(self.latest() - e.started_at, 0.0))}"
        )
        head = [
            f"#{e.iteration}" if count > 1 or e.iteration > 1 else "execution",
            _badge(e.status),
        ]
        head.append(f"started at +{_e(fmt_seconds(start))}, {_e(duration)}")
        if e.attempts:
            head.append(f"{e.attempts} attempt{'s' if e.attempts != 1 else ''}")
        if e.retries:
            head.append(f"{e.retries} retr{'ies' if e.retries != 1 else 'y'}")
        if e.calls:
            head.append("calls " + ", ".join(f"{_e(p)}×{n}" for p, n in sorted(e.calls.items())))
        if e.resumed:
            head.append("carried over from an earlier attempt (resumed)")
        error = ""
        if e.error or e.error_class:
            route = f' → <b class="branch">{_t(e.branch)}</b>' if e.branch else ""
            error = (
                f'<div class="error"><code>{_t(e.error_class or "error")}</code>{route}'
                f"<pre>{_t(e.error or '')}</pre></div>"
            )
        elif e.branch:
            error = f'<div class="error">route: <b class="branch">{_t(e.branch)}</b></div>'
        params = e.params
        label = "Parameters"
        if not params and node_spec is not None and node_spec.params:
            params, label = node_spec.params, "Parameters (from the flow)"
        params_html = ""
        if params:
            params_html = (
                f'<details class="params" open><summary>{label}</summary>'
                f"{self.table(redact_params(params), '')}</details>"
            )
        outputs_empty = "still running" if e.status == "running" else "no outputs"
        return f"""
<section class="execution status-{_e(e.status)}" data-iteration="{e.iteration}">
  <h4>{" · ".join(head)}</h4>{error}
  <div class="io-grid">
    <div><h5>Inputs</h5>{self.table(e.inputs, "no inputs")}</div>
    <div><h5>Outputs</h5>{self.table(e.outputs, outputs_empty)}</div>
  </div>{params_html}
</section>"""

    # -- whole page ------------------------------------------------------------------------
    def html(self) -> str:
        t = self.trace
        refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if self.running else ""
        title = f"{t.flow} — run {t.thread_id}"
        description = ""
        if t.spec is not None and t.spec.description:
            description = f'<p class="description">{_t(t.spec.description)}</p>'
        live = (
            f'<p class="live">This run is still going: the page reloads every '
            f"{REFRESH_SECONDS} s.</p>"
            if self.running
            else ""
        )
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">
{refresh}<meta name="generator" content="calliope-graph">
<title>{_t(title)}</title>
<style>{_css()}</style>
</head>
<body class="run-{_e(t.status)}">
<header>
  <h1><span class="flow-name">{_t(t.flow)}</span> {_badge(t.status)}</h1>{description}{live}
  <nav><a href="#summary">summary</a> <a href="#drawing">flow</a>
  <a href="#timeline">timeline</a> <a href="#io">outputs</a> <a href="#nodes">nodes</a></nav>
</header>
<main>{self.summary()}{self.drawing()}{self.timeline()}{self.io_section()}{self.nodes()}
</main>
<footer>Report written by calliope-graph at {_e(_clock(self.now))}. Self-contained: it loads
nothing from the network; media are files beside it.</footer>
<script>{_JS}</script>
</body>
</html>
"""


def spec_fallbacks(spec: Any) -> set[str]:
    try:
        return set(spec.fallback_nodes())
    except Exception:
        return set()


def _tick_label(value: float, step: float) -> str:
    """An axis label: ``0``, ``250 ms``, ``1.5 s``, ``45 s``, ``2:30``."""
    if value <= 0:
        return "0"
    if step < 1 and value < 1:
        return f"{value * 1000:.4g} ms"
    if value < 120 or step < 1:
        return f"{value:.4g} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}:{seconds:02d}"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bar_fill(status: str) -> str:
    return {
        "ok": "#2da44e",
        "cache_hit": "#0a7ea4",
        "fallback": "#d97706",
        "skipped": "#a0a7b0",
        "failed": "#cf222e",
        "running": "#3b6fd8",
    }.get(status, "#8c959f")


def _media_kind(value: dict[str, Any]) -> str | None:
    path = value.get("path")
    if not isinstance(path, str) or not path:
        return None
    kind = value.get("type")
    if kind in ("image", "audio", "video"):
        return str(kind)
    mime = str(value.get("mime") or "")
    for candidate in ("image", "audio", "video"):
        if mime.startswith(candidate + "/"):
            return candidate
    return None


CSP = (
    "default-src 'none'; img-src 'self' file: data: blob:; media-src 'self' file: blob:; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


def _css() -> str:
    status_css = []
    for key, style in STATUS_STYLES.items():
        status_css.append(
            f".badge.status-{key}{{background:{style.fill};color:{style.stroke};"
            f"border-color:{style.stroke}}}"
            f".swatch.status-{key}{{background:{_bar_fill(key)}}}"
            f"article.node-detail.status-{key}{{border-left-color:{style.stroke}}}"
        )
    status_css.append(
        ".badge.status-retry{background:#fff0d6;color:#b45309;border-color:#d97706}"
        ".swatch.status-retry{background:repeating-linear-gradient(45deg,#d97706 0 3px,"
        "#f6c26b 3px 6px)}"
    )
    return _CSS.replace("/*STATUS*/", "".join(status_css)).replace("FONT_STACK", FONT)


_CSS = """
a{color:#0969da}
:root{color-scheme:light;--ink:#1f2328;--muted:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font-family:FONT_STACK;font-size:14px;line-height:1.45;color:var(--ink);
background:var(--bg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:14px 24px 8px}
header h1{margin:0 0 4px;font-size:22px;display:flex;gap:10px;align-items:center}
header .description{margin:0 0 6px;color:var(--muted)}
header nav a{margin-right:14px;color:#0969da;text-decoration:none;font-size:13px}
.live{margin:4px 0;color:#3b6fd8;font-weight:600}
main{padding:16px 24px;max-width:1400px;margin:0 auto}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 18px;
margin:0 0 16px}
.card h2{margin:0 0 10px;font-size:17px}
h3{font-size:14px;margin:6px 0}
h4{font-size:13px;margin:4px 0 6px;font-weight:600;color:#333a44}
h5{font-size:12px;margin:6px 0 4px;color:var(--muted);text-transform:uppercase;
letter-spacing:.04em}
.hint{color:var(--muted);margin:0 0 10px;font-size:12.5px}
.none{color:var(--muted);font-style:italic}
code{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12px;
background:#f1f3f5;border-radius:4px;padding:0 4px}
pre{white-space:pre-wrap;word-break:break-word;margin:2px 0;font-size:12.5px;
font-family:ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace}
pre.text{background:#f6f8fa;border:1px solid #eaeef2;border-radius:6px;padding:6px 8px;
max-height:16em;overflow:auto}
.badge{display:inline-block;border:1px solid;border-radius:999px;padding:0 8px;font-size:11.5px;
font-weight:600;white-space:nowrap;vertical-align:middle}
/*STATUS*/
dl.facts{display:flex;flex-wrap:wrap;gap:8px 28px;margin:0 0 8px}
dl.facts div{min-width:120px}
dl.facts dt{font-size:11.5px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
dl.facts dd{margin:0;font-size:15px}
.summary-grid,.io-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));
gap:8px 24px}
.critical-path a,.fallbacks a{font-weight:600}
table{border-collapse:collapse}
table.providers th,table.providers td{border-bottom:1px solid #eaeef2;padding:3px 10px;
text-align:left}
table.values{width:100%}
table.values th{text-align:left;vertical-align:top;padding:4px 10px 4px 0;color:#333a44;
font-weight:600;white-space:nowrap;width:1%}
table.values td{padding:4px 0;vertical-align:top}
table.values tr+tr th,table.values tr+tr td{border-top:1px solid #f0f2f4}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:0}
dl.kv dt{color:var(--muted);font-size:12.5px}
dl.kv dd{margin:0}
dl.kv dt.tag{grid-column:1 / -1;font-size:11px;text-transform:uppercase;letter-spacing:.04em}
ol.list{margin:0;padding-left:20px}
figure.media{margin:2px 0;display:inline-block;vertical-align:top;margin-right:10px}
figure.media figcaption{font-size:11.5px;color:var(--muted)}
img.thumb{max-width:240px;max-height:180px;border:1px solid var(--line);border-radius:4px;
display:block;background:#fff}
video.thumb{max-width:320px;max-height:220px;display:block}
audio.player{width:280px;display:block}
.media.missing{color:#9a6700}
.drawing svg{max-width:100%;height:auto;display:block;margin:0 auto}
#drawing g.node[data-node]{cursor:pointer}
#drawing g.node.hover rect:first-of-type{stroke-width:3.5}
.timeline-wrap svg{width:100%;height:auto;display:block}
svg.timeline [data-node]{cursor:pointer}
svg.timeline g.lane.hover rect{fill:#fff8c5}
svg.timeline .bar:hover{stroke:#1f2328;stroke-width:1}
svg.timeline .bar.status-running{animation:pulse 1.2s ease-in-out infinite}
@keyframes pulse{50%{opacity:.45}}
.legend{font-size:12px;color:var(--muted);margin:6px 0 0}
.legend .key{margin-right:14px;white-space:nowrap}
.swatch{display:inline-block;width:18px;height:10px;border-radius:2px;margin-right:5px;
vertical-align:middle}
article.node-detail{border:1px solid var(--line);border-left:5px solid var(--line);
border-radius:6px;padding:8px 12px;margin:0 0 10px;scroll-margin-top:10px}
article.node-detail.hover{background:#fffbe6}
article.node-detail.flash{box-shadow:0 0 0 3px #f6c26b}
article.node-detail h3{font-size:15px;margin:2px 0}
article.node-detail h3 small{color:var(--muted);font-weight:400;font-size:12.5px}
article.node-detail .meta{margin:0 0 4px;color:var(--muted);font-size:12.5px}
section.execution{border-top:1px dashed #e4e7eb;padding-top:6px;margin-top:6px}
.error{background:#fff5f5;border:1px solid #f5c2c0;border-radius:6px;padding:6px 10px;
margin:4px 0}
.run-error{background:#fff5f5;border:1px solid #cf222e;border-radius:6px;padding:8px 12px;
margin:0 0 10px}
details.params summary{cursor:pointer;color:var(--muted);font-size:12.5px}
footer{color:var(--muted);font-size:12px;text-align:center;padding:6px 0 24px}
"""

_JS = """
(function () {
  "use strict";
  function each(selector, fn) {
    var list = document.querySelectorAll(selector);
    for (var i = 0; i < list.length; i++) { fn(list[i]); }
  }
  function detail(name) {
    var found = null;
    each("article.node-detail", function (el) {
      if (el.getAttribute("data-node") === name) { found = el; }
    });
    return found;
  }
  function mark(name, on) {
    each("[data-node]", function (el) {
      if (el.getAttribute("data-node") === name) { el.classList.toggle("hover", on); }
    });
  }
  function show(name) {
    var el = detail(name);
    if (!el) { return; }
    el.scrollIntoView({behavior: "smooth", block: "start"});
    el.classList.add("flash");
    window.setTimeout(function () { el.classList.remove("flash"); }, 1400);
  }
  each("#drawing g.node[data-node], #timeline [data-node], a.node-link[data-node]",
    function (el) {
      var name = el.getAttribute("data-node");
      el.addEventListener("click", function (event) { event.preventDefault(); show(name); });
      el.addEventListener("mouseenter", function () { mark(name, true); });
      el.addEventListener("mouseleave", function () { mark(name, false); });
    });
})();
"""


def render_report(trace: Trace | str | Path, out_path: str | Path) -> Path:
    """Write the HTML report of ``trace`` (a Trace or a ``trace.json`` path) to ``out_path``.

    One file, no network: media are linked relative to ``out_path``'s folder. The file is
    replaced atomically, so a browser reloading it mid-run never sees half a page.
    """
    if not isinstance(trace, Trace):
        trace = Trace.load(trace)
    path = Path(out_path)
    text = _Page(trace, path).html()
    _write_atomic(path, text)
    return path


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
