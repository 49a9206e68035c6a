"""Page assembly: the sections in order, inside one self-contained HTML document.

The stylesheet and the script are package files (``calliope_graph/viz/report.css`` and
``report.js``), read once and inlined, so the page still loads nothing from anywhere.
"""

from __future__ import annotations

import functools
from importlib import resources

from calliope_graph.viz._report._drawing import drawing
from calliope_graph.viz._report._format import badge, bar_fill, clock, esc, txt
from calliope_graph.viz._report._nodes import nodes
from calliope_graph.viz._report._summary import choice_section, io_section, summary
from calliope_graph.viz._report._timeline import timeline
from calliope_graph.viz._report._values import Page
from calliope_graph.viz._style import STATUS_STYLES
from calliope_graph.viz._svg import FONT

__all__ = ["CSP", "REFRESH_SECONDS", "html"]

#: Seconds between reloads of a report whose run is still going.
REFRESH_SECONDS = 2

CSP = (
    "default-src 'none'; img-src 'self' file: data: blob:; media-src 'self' file: blob:; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


@functools.cache
def _asset(name: str) -> str:
    """A text file shipped beside the viz modules (``report.css``, ``report.js``)."""
    return resources.files("calliope_graph.viz").joinpath(name).read_text(encoding="utf-8")


@functools.cache
def _css() -> str:
    """The page's stylesheet (``viz/report.css``) with the status colours filled in."""
    status_css = []
    for key, style in STATUS_STYLES.items():
        status_css.append(
            f".badge.status-{key}{{background:{style.fill};color:{style.stroke};"
            f"border-color:{style.stroke}}}"
            f".swatch.status-{key}{{background:{bar_fill(key)}}}"
            f"article.node-detail.status-{key}{{border-left-color:{style.stroke}}}"
        )
    status_css.append(
        ".badge.simulated{background:#ede7fb;color:#6639ba;border-color:#6639ba}"
        ".badge.status-retry{background:#fff0d6;color:#b45309;border-color:#d97706}"
        ".swatch.status-retry{background:repeating-linear-gradient(45deg,#d97706 0 3px,"
        "#f6c26b 3px 6px)}"
    )
    return (
        _asset("report.css").replace("/*STATUS*/", "".join(status_css)).replace("FONT_STACK", FONT)
    )


def html(page: Page) -> str:
    """The whole page: head (CSP, styles), the sections in order, the script."""
    t = page.trace
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if page.running else ""
    title = f"{t.flow} — run {t.thread_id}"
    description = ""
    if t.spec is not None and t.spec.description:
        description = f'<p class="description">{txt(t.spec.description)}</p>'
    simulated = (
        ' <span class="badge simulated" title="every provider call went to the offline '
        'simulator: nothing was paid, the media are its drawings">simulated</span>'
        if t.simulated
        else ""
    )
    live = (
        f'<p class="live">This run is still going: the page reloads every {REFRESH_SECONDS} s.</p>'
        if page.running
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">
{refresh}<meta name="generator" content="calliope-graph">
<title>{txt(title)}</title>
<style>
{_css()}</style>
</head>
<body class="run-{esc(t.status)}">
<header>
  <h1><span class="flow-name">{txt(t.flow)}</span> {badge(t.status)}{simulated}</h1>\
{description}{live}
  <nav><a href="#summary">summary</a> <a href="#drawing">flow</a>
  <a href="#timeline">timeline</a> <a href="#io">outputs</a> <a href="#nodes">nodes</a></nav>
</header>
<main>{choice_section(page)}{summary(page)}{drawing(page)}{timeline(page)}{io_section(page)}{nodes(page)}
</main>
<footer>Report written by calliope-graph at {esc(clock(page.now))}. Self-contained: it loads
nothing from the network; media are files beside it.</footer>
<script>
{_asset("report.js")}</script>
</body>
</html>
"""
