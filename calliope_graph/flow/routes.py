"""Error routes: ``on_error`` fallbacks (``goto: <node>``), ``continue`` and rewrite loops.

Here: the spec fields (:class:`ErrorRoute` and :class:`RewriteSpec`, a list on
``NodeSpec.on_error``), the edges (``fallback``, ``continue``, ``rewrite``, ``rewrite_back``:
:func:`route_edges`, listed by :meth:`FlowSpec.edges`), the checks (a fallback stands in for
one node, fallbacks form no cycle, a rewrite loop is bounded and names real ports, a
stand-in produces what its node's consumers read) and the registration; the lowering (error
handlers returning ``Command(goto=...)``, join nodes) is
:mod:`calliope_graph.flow._lower_routes`. A rewrite's way back is drawn as a ``loop``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from calliope_graph.flow._spec_core import CONTINUE, Edge, ErrorClassName, _classes, _Model
from calliope_graph.flow.construct import Construct, register_construct

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow.spec import NodeSpec

__all__ = ["CONSTRUCT", "ErrorRoute", "RewriteSpec", "route_edges"]


# -- spec fields (NodeSpec.on_error) -----------------------------------------------------------
class RewriteSpec(_Model):
    """Censor-and-retry: ``via`` rewrites input ``port``, then the node runs again."""

    via: str
    """The node that rewrites the failing input (e.g. a ``censor_text`` node)."""
    port: str
    """The input port of the failing node whose value is rewritten."""
    output: str | None = None
    """The ``via`` node's output port to use (default: its only/first output)."""
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    """How many rewrites at most. Required: a loop without a bound is an error."""


class ErrorRoute(_Model):
    """Where a failure of the given classes goes: a fallback node, ``continue``, or a rewrite."""

    when: list[ErrorClassName] = Field(default_factory=lambda: _classes("any"), min_length=1)
    """The error classes this route catches (YAML's bare ``on`` would read as a boolean)."""
    goto: str | None = None
    rewrite: RewriteSpec | None = None
    label: str | None = None
    """Shown on the edge in drawings (default: the error classes)."""


# -- edges ---------------------------------------------------------------------------------------
def route_edges(name: str, node: NodeSpec) -> list[Edge]:
    """The edges of ``name``'s error routes: ``fallback``, ``continue``, ``rewrite`` and its
    ``rewrite_back`` (the way back into the failed node, drawn as a ``loop``)."""
    edges: list[Edge] = []
    for route in node.on_error:
        label = route.label or " | ".join(route.when)
        if route.rewrite is not None:
            rw = route.rewrite
            bound = rw.max_attempts
            text = f"{label} (≤{bound})" if bound else label
            edges.append(
                Edge(
                    kind="rewrite",
                    source=name,
                    target=rw.via,
                    target_port=rw.port,
                    when=list(route.when),
                    bound=bound,
                    label=text,
                )
            )
            edges.append(
                Edge(
                    kind="rewrite_back",
                    source=rw.via,
                    source_port=rw.output,
                    target=name,
                    target_port=rw.port,
                    bound=bound,
                    label=f"retry {rw.port}",
                )
            )
        elif route.goto == CONTINUE:
            edges.append(
                Edge(kind="continue", source=name, target=None, when=list(route.when), label=label)
            )
        elif route.goto:
            edges.append(
                Edge(
                    kind="fallback",
                    source=name,
                    target=route.goto,
                    when=list(route.when),
                    label=label,
                )
            )
    return edges


# -- checks --------------------------------------------------------------------------------------
def check_routes(plan: Plan) -> None:
    """Each route is well formed; fallbacks stand in for one node; loops are bounded."""
    spec = plan.spec
    for name, node_spec in spec.nodes.items():
        for index, route in enumerate(node_spec.on_error):
            where = ("nodes", name, "on_error", str(index))
            if (route.goto is None) == (route.rewrite is None):
                raise spec.error(
                    f"Node {name!r}: each on_error route needs exactly one of 'goto' (a fallback "
                    "node or 'continue') or 'rewrite'.",
                    *where,
                )
            if route.goto is not None and route.goto != CONTINUE:
                _check_fallback(plan, name, route.goto, where)
            elif route.goto == CONTINUE:
                plan.skippable.add(name)
            if route.rewrite is not None:
                _check_rewrite(plan, name, route.rewrite, where)
    _check_fallback_cycles(plan)
    _check_routes_start(plan)
    # A stand-in that may itself continue makes its root skippable.
    for fallback in plan.stands_in:
        if fallback in plan.skippable:
            plan.skippable.add(plan.root(fallback))


def _check_fallback(plan: Plan, name: str, goto: str, where: tuple[str, ...]) -> None:
    spec = plan.spec
    if goto not in spec.nodes:
        raise spec.error(
            f"Node {name!r}: on_error goes to {goto!r}, which is not a node. "
            f"Nodes: {', '.join(spec.nodes)}; or write 'goto: continue'.",
            *where,
            "goto",
        )
    if goto == name:
        raise spec.error(f"Node {name!r} falls back to itself: use 'retry' for that.", *where)
    other = plan.stands_in.get(goto)
    if other is not None and other != name:
        raise spec.error(
            f"Node {goto!r} is the fallback of both {other!r} and {name!r}: a fallback stands "
            "in for one node; declare a second node of the same kind.",
            *where,
            "goto",
        )
    plan.stands_in[goto] = name


def _check_rewrite(plan: Plan, name: str, rw: RewriteSpec, where: tuple[str, ...]) -> None:
    spec, nodes = plan.spec, plan.nodes
    if rw.via not in spec.nodes:
        raise spec.error(
            f"Node {name!r}: rewrite via {rw.via!r}, which is not a node.",
            *where,
            "rewrite",
            "via",
        )
    if rw.max_attempts is None:
        raise spec.error(
            f"Node {name!r}: the rewrite loop through {rw.via!r} has no bound: set "
            "'max_attempts' (the seed retries a censored prompt 3 times).",
            *where,
            "rewrite",
        )
    if nodes[name].input_port(rw.port) is None:
        ports = ", ".join(p.name for p in nodes[name].input_ports)
        raise spec.error(
            f"Node {name!r}: rewrite port {rw.port!r} is not one of its inputs ({ports}).",
            *where,
            "rewrite",
            "port",
        )
    via = nodes[rw.via]
    outputs = [p.name for p in via.output_ports]
    out = rw.output or (outputs[0] if outputs else None)
    if out is None or via.output_port(out) is None:
        raise spec.error(
            f"Node {name!r}: rewrite output {out!r} is not an output of {rw.via!r} "
            f"({', '.join(outputs) or 'none'}).",
            *where,
            "rewrite",
            "output",
        )
    plan.rewrites_for.setdefault(rw.via, []).append(name)


def _check_fallback_cycles(plan: Plan) -> None:
    """Fallbacks form chains (a → b → c), never a cycle (a → b → a)."""
    for start in plan.stands_in:
        chain = [start]
        while chain[-1] in plan.stands_in:
            nxt = plan.stands_in[chain[-1]]
            if nxt in chain:
                cycle = [*chain[chain.index(nxt) :], nxt]
                raise plan.spec.error(
                    f"Nodes {' and '.join(repr(n) for n in sorted(set(cycle)))} fall back to "
                    f"each other ({' → '.join(reversed(cycle))}): a fallback chain must end at "
                    "a node that is not itself a fallback. Break the cycle: remove one of the "
                    "on_error routes.",
                    "nodes",
                    nxt,
                    "on_error",
                )
            chain.append(nxt)


def _check_routes_start(plan: Plan) -> None:
    """Every node that runs only when routed to is reached from a node that starts on its own.

    Two nodes that ``rewrite`` via each other (or a node rewriting via itself) are each
    routed to only by the other: neither ever starts, and LangGraph would refuse the graph
    at run time ("Graph must have an entrypoint").
    """
    spec = plan.spec
    senders: dict[str, list[Edge]] = {}
    for edge in spec.edges():
        if edge.kind in ("fallback", "rewrite", "switch") and edge.target:
            senders.setdefault(edge.target, []).append(edge)
    reached = [n for n in spec.nodes if n not in senders]
    seen = set(reached)
    while reached:
        source = reached.pop()
        for target, edges in senders.items():
            if target not in seen and any(e.source == source for e in edges):
                seen.add(target)
                reached.append(target)
    stuck = [n for n in spec.nodes if n not in seen]
    if not stuck:
        return
    name = stuck[0]
    ways = "; ".join(
        f"{e.source!r} {'rewrites via' if e.kind == 'rewrite' else 'routes to'} {e.target!r}"
        for n in stuck
        for e in senders[n]
    )
    raise spec.error(
        f"Node {name!r} runs only when a route sends it work, but every route to it starts at "
        f"a node that itself runs only when routed ({ways}): nothing ever starts "
        f"{' or '.join(repr(n) for n in stuck)}. Break the cycle: rewrite through a node "
        "with no route of its own back (e.g. a separate censor_text node), or remove one of "
        "the routes.",
        "nodes",
        name,
        "on_error",
    )


def check_stand_ins(plan: Plan) -> None:
    """A fallback produces every port its failed node's consumers read."""
    spec, nodes = plan.spec, plan.nodes
    for fallback, failed in plan.stands_in.items():
        root = plan.root(failed)
        read = {ref.port for w in plan.wiring.values() for _, ref in w if ref.node == root}
        read |= {t.partition(".")[2] for t in spec.outputs.values() if t.startswith(root + ".")}
        for port_name in sorted(read):
            theirs = nodes[root].output_port(port_name)
            mine = nodes[fallback].output_port(port_name)
            if mine is None or (theirs is not None and not theirs.type.accepts(mine.type)):
                raise spec.error(
                    f"Fallback {fallback!r} must produce {port_name!r} to stand in for "
                    f"{root!r} (its consumers read {root}.{port_name}); it produces "
                    f"{', '.join(p.name for p in nodes[fallback].output_ports) or 'nothing'}.",
                    "nodes",
                    failed,
                    "on_error",
                )


CONSTRUCT = register_construct(
    Construct(
        name="routes",
        checks={"structure": check_routes, "wiring": check_stand_ins},
        edges=route_edges,
        edge_shapes={
            "fallback": "edge",
            "continue": "edge",
            "rewrite": "edge",
            "rewrite_back": "loop",
        },
        lowering="calliope_graph.flow._lower_routes",
    )
)
