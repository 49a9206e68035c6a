"""The summary card (status, times, critical path, providers, routes) and flow I/O."""

from __future__ import annotations

from calliope_graph.flow.trace import Trace
from calliope_graph.viz._report._data import lane_parent, node_outcomes, outcome, switch_choices
from calliope_graph.viz._report._format import STATUS_LABEL, badge, clock, esc, fmt_seconds, txt
from calliope_graph.viz._report._values import Page

__all__ = ["choice_section", "io_section", "summary"]


def summary(page: Page) -> str:
    """Status, wall time, node counts, critical path, calls per provider, routes taken."""
    t = page.trace
    cp_seconds, cp_chain = page.critical
    chain = " → ".join(_node_link(page, name) for name in cp_chain)
    wall = fmt_seconds(page.wall_time())
    if page.running:
        wall += " so far"
    resumed = (
        f"<div><dt>resumed from</dt><dd><code>{txt(t.resumed_from)}</code></dd></div>"
        if t.resumed_from
        else ""
    )
    error = (
        f'<div class="run-error"><b>The run failed.</b><pre>{txt(t.error)}</pre></div>'
        if t.error
        else ""
    )
    cache_hits = sum(1 for e in t.executions if e.status == "cache_hit")
    return f"""
<section id="summary" class="card">
  <h2>Summary</h2>{error}
  <dl class="facts">
    <div><dt>status</dt><dd>{badge(t.status)}</dd></div>
    <div><dt>total wall time</dt><dd class="wall-time">{esc(wall)}</dd></div>
    <div><dt>started</dt><dd>{esc(clock(t.started_at))}</dd></div>
    <div><dt>thread</dt><dd><code>{txt(t.thread_id)}</code></dd></div>{resumed}
    <div><dt>node executions</dt><dd>{len(t.executions)} ({cache_hits} cache hits)</dd></div>
    <div><dt>nodes</dt><dd>{_status_counts(page) or "—"}</dd></div>
  </dl>
  <div class="summary-grid">
    <div><h3>Critical path · {esc(fmt_seconds(cp_seconds))}</h3>
      <p class="critical-path">{chain or '<span class="none">—</span>'}</p></div>
    <div><h3>Calls and retries per provider</h3>{_providers(t)}</div>
    <div><h3>Fallbacks and routes taken</h3>{_fallbacks(page)}</div>{_branches(page)}
  </div>
</section>"""


def choice_section(page: Page) -> str:
    """While the run waits for a person's choice: each waiting node's candidates, numbered
    by the index a resume takes (images as thumbnails, text as text), and how to resume."""
    t = page.trace
    if t.status != "waiting" or not t.waiting:
        return ""
    blocks = []
    for node, found in t.waiting.items():
        items = "".join(
            f'<li class="candidate" value="{i}"><span class="index">{i}</span>'
            f"{page.value(candidate)}</li>"
            for i, candidate in enumerate(found)
        )
        how = f"--resume {t.thread_id} --choose {node}=INDEX"
        blocks.append(
            f'<h3><a class="node-link" href="#{esc(page.ids.get(node, ""))}" '
            f'data-node="{esc(node)}">{esc(node)}</a> · {len(found)} candidates</h3>'
            f'<ol class="candidates" start="0">{items}</ol>'
            f"<p>Keep one: <code>calliope-graph run … {txt(how)}</code> (the command the run "
            f"printed), <code>choices={{{txt(repr(node))}: INDEX}}</code> in Python, or "
            f'<code>command={{"resume": {{{txt(repr(node))}: INDEX}}}}</code> on LangGraph '
            "Server. Nothing before this node runs again.</p>"
        )
    return f"""
<section id="choice" class="card waiting">
  <h2>Waiting for a choice</h2>{"".join(blocks)}
</section>"""


def _node_link(page: Page, name: str) -> str:
    """A link to node ``name``'s card (the report's script also highlights it)."""
    return (
        f'<a class="node-link" href="#{esc(page.ids.get(name, ""))}" '
        f'data-node="{esc(name)}">{esc(name)}</a>'
    )


def _status_counts(page: Page) -> str:
    """A badge per status with how many of the flow's own nodes ended so (a subflow's
    insides are counted under the node that ran them), nodes not run included."""
    outcomes = {n: s for n, s in node_outcomes(page.trace).items() if lane_parent(n) is None}
    counts: dict[str, int] = {}
    for status in outcomes.values():
        counts[status] = counts.get(status, 0) + 1
    total_nodes = len([n for n in page.node_names() if lane_parent(n) is None])
    not_run = total_nodes - len(outcomes)
    if not_run > 0:
        counts["not_run"] = not_run
    order = [*STATUS_LABEL, *counts]
    return " ".join(
        f"{badge(s)}&nbsp;×{n}"
        for s, n in sorted(counts.items(), key=lambda kv: order.index(kv[0]))
    )


def _providers(t: Trace) -> str:
    """The table of calls and retries per provider."""
    calls = t.calls_per_provider()
    retries = t.retries_per_provider()
    providers = sorted(set(calls) | set(retries))
    if not providers:
        return '<p class="none">No provider was called.</p>'
    rows = "".join(
        f"<tr><th scope='row'>{esc(p)}</th><td>{calls.get(p, 0)}</td>"
        f"<td>{retries.get(p, 0)}</td></tr>"
        for p in providers
    )
    return (
        '<table class="providers"><thead><tr><th>provider</th><th>calls</th>'
        f"<th>retries</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _fallbacks(page: Page) -> str:
    """The fallbacks and error routes taken: node, error class and the branch it took."""
    fallbacks = [e for e in page.trace.fallbacks() if outcome(e) != "not_taken"]
    if not fallbacks:
        return '<p class="none">None: every node that ran succeeded.</p>'
    items = "".join(
        f"<li>{_node_link(page, e.node)}"
        f"{f' #{e.iteration}' if e.iteration > 1 else ''}: "
        f"<code>{txt(e.error_class or 'error')}</code> → <b>{txt(e.branch)}</b></li>"
        for e in fallbacks
    )
    return f'<ul class="fallbacks">{items}</ul>'


def _branches(page: Page) -> str:
    """The switches' choices: the node chosen, the condition that held (or the default)
    and the nodes not taken; empty when no switch ran."""
    choices = switch_choices(page.trace)
    if not choices:
        return ""
    items = "".join(
        f'<li>{_node_link(page, e.node)} → <b class="branch">{txt(chosen)}</b>'
        f" ({'no case held: default' if cond == 'default' else f'<code>{txt(cond)}</code>'})"
        + (
            f'<span class="not-taken"> · not taken: {txt(", ".join(others))}</span>'
            if others
            else ""
        )
        + "</li>"
        for e, chosen, cond, others in choices
    )
    return f'<div><h3>Branches taken</h3><ul class="branches">{items}</ul></div>'


def io_section(page: Page) -> str:
    """The flow's outputs and inputs."""
    t = page.trace
    outputs = page.table(
        t.outputs, "No outputs yet." if page.running else "The run produced no outputs."
    )
    inputs = page.table(page.typed_inputs(), "No inputs.")
    return f"""
<section id="io" class="card">
  <div class="io-grid">
    <div id="flow-outputs"><h2>Outputs</h2>{outputs}</div>
    <div id="flow-inputs"><h2>Inputs</h2>{inputs}</div>
  </div>
</section>"""
