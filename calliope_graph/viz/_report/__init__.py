"""``render_report(trace, path)``: one self-contained HTML page of what a run did.

Everything is inline (CSS, a few lines of JS, the SVG drawing and the SVG timeline); the
page asks no host for anything — no CDN, no web font — and a Content-Security-Policy says
so to the browser. Media stay files: thumbnails and players point at them with paths
relative to the report's folder, so the output directory can be zipped and moved whole.

Trace content is untrusted (prompts, model outputs, error messages): every piece of it is
escaped, parameters whose names say "secret" are masked, and key-shaped strings are masked
wherever they appear (``calliope_graph._secrets``, strict). The page renders a run in
progress too (executions still ``running``), with a short meta refresh while the trace says
``running``, because ``calliope-graph run`` rewrites it as nodes finish; the file is replaced
atomically (``calliope_graph._files``).

The sections, one module each: ``_data`` (what the run did, per node and edge), ``_values``
(how one value is shown), ``_summary``, ``_drawing``, ``_timeline``, ``_nodes``, and
``_page`` (the document around them, with ``viz/report.css`` and ``viz/report.js`` inlined).
"""

from __future__ import annotations

from pathlib import Path

from calliope_graph._files import write_atomic
from calliope_graph.flow.trace import Trace
from calliope_graph.viz._report._data import drawing_state, node_outcomes
from calliope_graph.viz._report._format import REDACTED, fmt_seconds, redact_params
from calliope_graph.viz._report._page import CSP, REFRESH_SECONDS, html
from calliope_graph.viz._report._values import Page

__all__ = [
    "CSP",
    "REDACTED",
    "REFRESH_SECONDS",
    "drawing_state",
    "fmt_seconds",
    "node_outcomes",
    "redact_params",
    "render_report",
]


def render_report(trace: Trace | str | Path, out_path: str | Path) -> Path:
    """Write the HTML report of ``trace`` (a Trace or a ``trace.json`` path) to ``out_path``.

    One file, no network: media are linked relative to ``out_path``'s folder. The file is
    replaced atomically, so a browser reloading it mid-run never sees half a page.
    """
    if not isinstance(trace, Trace):
        trace = Trace.load(trace)
    path = Path(out_path)
    return write_atomic(path, html(Page(trace, path)), durable=False)  # a view: redrawn
