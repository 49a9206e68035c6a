"""Per-node details: each execution with its inputs, outputs, errors and parameters."""

from __future__ import annotations

from typing import Any

from calliope_graph.flow.trace import NodeExecution
from calliope_graph.viz._report._data import node_outcomes, spec_fallbacks
from calliope_graph.viz._report._format import badge, esc, fmt_seconds, redact_params, txt
from calliope_graph.viz._report._values import Page

__all__ = ["nodes"]


def nodes(page: Page) -> str:
    """One article per node (in flow order), each execution with its inputs and outputs."""
    by_node = page.trace.by_node()
    outcomes = node_outcomes(page.trace)
    spec = page.trace.spec
    articles = []
    for name in page.node_names():
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
            if page.running:
                body.append('<p class="none">Not started yet.</p>')
            elif node_spec is not None and name in spec_fallbacks(spec):
                body.append('<p class="none">Did not run: no route sent it work.</p>')
            else:
                body.append('<p class="none">Did not run.</p>')
            if node_spec is not None and node_spec.params:
                body.append(
                    "<details class='params'><summary>Parameters (from the flow)</summary>"
                    f"{page.table(redact_params(node_spec.params), '')}</details>"
                )
        for e in executions:
            body.append(_execution(page, e, len(executions), node_spec))
        total = sum(e.duration for e in executions)
        attempts = sum(e.attempts for e in executions)
        retries = sum(e.retries for e in executions)
        meta = (
            f"{len(executions)} execution{'s' if len(executions) != 1 else ''} · "
            f"{fmt_seconds(total)} · {attempts} provider attempt"
            f"{'s' if attempts != 1 else ''} · {retries} retr{'ies' if retries != 1 else 'y'}"
        )
        articles.append(
            f'<article class="node-detail status-{esc(status)}" id="{esc(page.ids[name])}" '
            f'data-node="{esc(name)}"><h3>{badge(status)} <span class="node-name">'
            f'{txt(name)}</span> <small>{txt(who)}</small></h3><p class="meta">{esc(meta)}</p>'
            f"{''.join(body)}</article>"
        )
    return f"""
<section id="nodes" class="card">
  <h2>Nodes</h2>
  {"".join(articles)}
</section>"""


def _execution(page: Page, e: NodeExecution, count: int, node_spec: Any) -> str:
    start = e.started_at - page.trace.started_at
    duration = (
        f"took {fmt_seconds(e.duration)}"
        if e.ended_at is not None
        else f"running for {fmt_seconds(max(page.latest() - e.started_at, 0.0))}"
    )
    head = [
        f"#{e.iteration}" if count > 1 or e.iteration > 1 else "execution",
        badge(e.status),
    ]
    head.append(f"started at +{esc(fmt_seconds(start))}, {esc(duration)}")
    if e.attempts:
        head.append(f"{e.attempts} attempt{'s' if e.attempts != 1 else ''}")
    if e.retries:
        head.append(f"{e.retries} retr{'ies' if e.retries != 1 else 'y'}")
    if e.calls:
        head.append("calls " + ", ".join(f"{esc(p)}×{n}" for p, n in sorted(e.calls.items())))
    if e.resumed:
        head.append("carried over from an earlier attempt (resumed)")
    error = ""
    if e.error or e.error_class:
        route = f' → <b class="branch">{txt(e.branch)}</b>' if e.branch else ""
        error = (
            f'<div class="error"><code>{txt(e.error_class or "error")}</code>{route}'
            f"<pre>{txt(e.error or '')}</pre></div>"
        )
    elif e.branch:
        error = f'<div class="error">route: <b class="branch">{txt(e.branch)}</b></div>'
    params = e.params
    label = "Parameters"
    if not params and node_spec is not None and node_spec.params:
        params, label = node_spec.params, "Parameters (from the flow)"
    params_html = ""
    if params:
        params_html = (
            f'<details class="params" open><summary>{label}</summary>'
            f"{page.table(redact_params(params), '')}</details>"
        )
    outputs_empty = "still running" if e.status == "running" else "no outputs"
    return f"""
<section class="execution status-{esc(e.status)}" data-iteration="{e.iteration}">
  <h4>{" · ".join(head)}</h4>{error}
  <div class="io-grid">
    <div><h5>Inputs</h5>{page.table(e.inputs, "no inputs")}</div>
    <div><h5>Outputs</h5>{page.table(e.outputs, outputs_empty)}</div>
  </div>{params_html}
</section>"""
