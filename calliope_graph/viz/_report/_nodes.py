"""Per-node details: each execution with its inputs, outputs, errors and parameters.

One article per node of the flow. A mapped node's article has a strip of its items' outcomes
and one foldable ``details.nested-detail`` per item; a subflow's executions are nested the
same way under the execution that ran them (``scenes[2]`` → ``scenes[2]/illustration`` →
``scenes[2]/illustration/image``), each with its inputs and outputs.
"""

from __future__ import annotations

from typing import Any

from calliope_graph.flow.trace import NodeExecution
from calliope_graph.viz._report._data import (
    aggregate,
    base_name,
    lane_key,
    lane_parent,
    node_outcomes,
    outcome,
    spec_fallbacks,
)
from calliope_graph.viz._report._format import badge, esc, fmt_seconds, redact_params, txt
from calliope_graph.viz._report._values import Page

__all__ = ["nodes"]


def nodes(page: Page) -> str:
    """One article per node (in flow order), each execution with its inputs and outputs."""
    outcomes = node_outcomes(page.trace)
    spec = page.trace.spec
    lanes: dict[str, list[NodeExecution]] = {}
    children: dict[str, list[str]] = {}
    for e in sorted(page.trace.executions, key=lambda e: (e.started_at, e.iteration)):
        key = lane_key(e)
        lanes.setdefault(key, []).append(e)
        while (parent := lane_parent(key)) is not None:
            kids = children.setdefault(parent, [])
            if key not in kids:
                kids.append(key)
            key = parent
    articles = []
    for name in page.node_names():
        if lane_parent(name) is not None and name not in (spec.nodes if spec else {}):
            continue  # shown nested under the node that ran it
        executions = list(lanes.get(name, []))
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
        kids = children.get(name, [])
        everything = _subtree(name, lanes, children)
        if kids and any(k.endswith("]") for k in kids):
            status = aggregate(everything) if everything else status
            body.insert(0, _items_strip(kids, lanes, children))
        if not executions and everything:
            body = [b for b in body if 'class="none"' not in b and "class='params'" not in b]
        body += [_nested(page, k, lanes, children, node_spec) for k in kids]
        executions = [e for e in everything if base_name(e.node) == name]
        total = sum(e.duration for e in executions)
        attempts = sum(e.attempts for e in everything)
        retries = sum(e.retries for e in everything)
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


def _subtree(
    key: str, lanes: dict[str, list[NodeExecution]], children: dict[str, list[str]]
) -> list[NodeExecution]:
    found = list(lanes.get(key, []))
    for kid in children.get(key, []):
        found += _subtree(kid, lanes, children)
    return found


def _items_strip(
    kids: list[str], lanes: dict[str, list[NodeExecution]], children: dict[str, list[str]]
) -> str:
    """One badge per map item (in item order), each linking to that item's details."""
    items = sorted((k for k in kids if k.endswith("]")), key=_item_index)
    links = "".join(
        f'<a class="item-link node-link" href="#" data-node="{esc(k)}">'
        f"[{_item_index(k)}] {badge(aggregate(_subtree(k, lanes, children)))}</a>"
        for k in items
    )
    return f'<p class="items"><b>{len(items)} items:</b> {links}</p>'


def _item_index(key: str) -> int:
    text = key[key.rindex("[") + 1 : -1] if key.endswith("]") else ""
    return int(text) if text.isdigit() else -1


def _nested(
    page: Page,
    key: str,
    lanes: dict[str, list[NodeExecution]],
    children: dict[str, list[str]],
    node_spec: Any,
) -> str:
    """A foldable block of one map item or one node inside a subflow, its children inside."""
    own = lanes.get(key, [])
    everything = _subtree(key, lanes, children)
    status = aggregate(everything)
    last = key.rsplit("/", 1)[-1]
    title = f"item {_item_index(key)}" if last.endswith("]") else last
    who = own[0].kind if own else ""
    if own and (own[0].provider or own[0].model):
        who += " · " + "/".join(str(p) for p in (own[0].provider, own[0].model) if p)
    took = sum(e.duration for e in own)
    body = [_execution(page, e, len(own), node_spec if last.endswith("]") else None) for e in own]
    body += [_nested(page, k, lanes, children, None) for k in children.get(key, [])]
    opened = " open" if status in ("failed", "running", "interrupted") else ""
    return (
        f'<details class="nested-detail status-{esc(status)}" data-node="{esc(key)}" '
        f'data-base="{esc(base_name(key))}"{opened}><summary>{badge(status)} '
        f'<span class="node-name">{txt(title)}</span> <small>{txt(who)}'
        f"{' · ' + esc(fmt_seconds(took)) if own else ''}</small> "
        f'<code class="qualified">{txt(key)}</code></summary>{"".join(body)}</details>'
    )


def _execution(page: Page, e: NodeExecution, count: int, node_spec: Any) -> str:
    start = e.started_at - page.trace.started_at
    duration = (
        f"took {fmt_seconds(e.duration)}"
        if e.ended_at is not None
        else f"running for {fmt_seconds(max(page.latest() - e.started_at, 0.0))}"
    )
    head = [
        f"#{e.iteration}" if count > 1 or e.iteration > 1 else "execution",
        badge(outcome(e)),
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
    if e.provider_calls:
        head.append("cost " + (f"${e.cost_usd:.4f}" if e.cost_usd is not None else "unknown"))
    error = ""
    if e.error or e.error_class:
        route = f' → <b class="branch">{txt(e.branch)}</b>' if e.branch else ""
        error = (
            f'<div class="error"><code>{txt(e.error_class or "error")}</code>{route}'
            f"<pre>{txt(e.error or '')}</pre></div>"
        )
    elif outcome(e) == "not_taken":
        switch, _, chosen = (e.branch or "")[7:].partition("→")
        error = (
            f'<div class="branch-note">Branch not taken: switch <b>{txt(switch)}</b> chose '
            f'<b class="branch">{txt(chosen)}</b>.</div>'
        )
    elif e.branch:
        error = f'<div class="error">route: <b class="branch">{txt(e.branch)}</b></div>'
    if e.kind == "switch" and isinstance(e.outputs.get("branch"), str) and e.status == "ok":
        error += (
            f'<div class="branch-note">Chose <b class="branch">{txt(e.outputs["branch"])}'
            "</b>.</div>"
        )
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
<section class="execution status-{esc(outcome(e))}" data-iteration="{e.iteration}">
  <h4>{" · ".join(head)}</h4>{error}
  <div class="io-grid">
    <div><h5>Inputs</h5>{page.table(e.inputs, "no inputs")}</div>
    <div><h5>Outputs</h5>{page.table(e.outputs, outputs_empty)}</div>
  </div>{params_html}{_calls(e)}
</section>"""


def _calls(e: NodeExecution) -> str:
    """The execution's provider requests: what each did, used and cost (and which figures
    the provider reported, which were estimated)."""
    if not e.provider_calls:
        return ""
    rows = []
    for call in e.provider_calls:
        usage = ", ".join(
            f"{txt(name)} {value:g}{'' if name in call.reported else ' (estimated)'}"
            for name, value in call.usage.items()
        )
        cost = "unknown" if call.cost_usd is None else f"${call.cost_usd:.6f}"
        outcome_text = call.status if call.error_class is None else call.error_class
        took = fmt_seconds(call.duration) if call.ended_at is not None else "-"
        rows.append(
            f"<tr><td>{txt(call.provider)}</td><td>{txt(call.model or '')}</td>"
            f"<td>{txt(call.operation or '')}</td><td>{txt(outcome_text)}</td>"
            f"<td>{esc(took)}</td><td>{usage or '-'}</td><td>{esc(cost)}</td></tr>"
        )
    return (
        '<details class="provider-calls" open><summary>Provider calls</summary>'
        '<table class="calls"><tr><th>provider</th><th>model</th><th>operation</th>'
        "<th>outcome</th><th>took</th><th>usage</th><th>cost (USD)</th></tr>"
        + "".join(rows)
        + "</table></details>"
    )
