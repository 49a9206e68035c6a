"""The :class:`Plan` (a validated flow) and the pure predicates over it.

Validation builds a Plan (:func:`calliope_graph.flow.validate.check`); the lowering to
LangGraph (:mod:`calliope_graph.flow.compile` and each construct's lowering) reads it. Every
question both ask of a Plan — whose outputs a fallback publishes, who waits on a join, which
nodes one map item runs, which routed nodes end the run alone — is answered here, once.
Nothing here imports LangGraph.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from calliope_graph.config import ModelCatalog
from calliope_graph.errors import FlowSpecError
from calliope_graph.flow.spec import CONTINUE, INPUTS, Edge, FlowSpec, Ref, parse_ref
from calliope_graph.nodes import Node, Port

if TYPE_CHECKING:
    from calliope_graph.flow._types import ValueType

__all__ = [
    "Plan",
    "ending_alone",
    "feeding_alone",
    "feeds",
    "item_members",
    "item_name",
    "item_name_of",
]


@dataclass
class Plan:
    """A validated flow, ready to compile."""

    spec: FlowSpec
    nodes: dict[str, Node]
    catalog: ModelCatalog
    #: Fallback node → the node whose outputs it publishes (resolved to the root).
    stands_in: dict[str, str] = field(default_factory=dict)
    #: Rewrite (``via``) node → the nodes it rewrites for.
    rewrites_for: dict[str, list[str]] = field(default_factory=dict)
    #: Nodes that run only when a route sends them work (``FlowSpec.fallback_nodes``).
    routed: set[str] = field(default_factory=set)
    #: Nodes that may end without outputs (a ``continue`` route, or standing in with one).
    skippable: set[str] = field(default_factory=set)
    #: Node → (input port, ref) list.
    wiring: dict[str, list[tuple[str, Ref]]] = field(default_factory=dict)
    #: Data-edge order (sources before consumers), routed nodes last.
    order: list[str] = field(default_factory=list)
    #: Switch node → the nodes it may choose; and each chosen node → its switch.
    switches: dict[str, list[str]] = field(default_factory=dict)
    switched: dict[str, str] = field(default_factory=dict)
    #: Mapped node → the type of one item of the list it maps over.
    item_types: dict[str, ValueType] = field(default_factory=dict)
    #: Node with ``candidates`` → how many (its output ports are lists of that many).
    candidates: dict[str, int] = field(default_factory=dict)
    #: The flow's outputs as typed ports (what a subflow node offers its parent).
    output_ports: dict[str, Port] = field(default_factory=dict)
    #: The plan compiled with no checkpointer and no cache, made once for every runner of
    #: it (see :func:`calliope_graph.flow.run.compiled_once`): ``Flow.ainvoke`` makes a
    #: runner per call, and compiling costs tens of milliseconds before the first node.
    compiled: Any = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def output_refs(self) -> dict[str, Ref]:
        """The flow's outputs, their references parsed once (every run reads them)."""
        return {name: parse_ref(target) for name, target in self.spec.outputs.items()}

    @functools.cached_property
    def recursion_limit(self) -> int:
        """LangGraph's step limit for a run: one per node, with room, and three per allowed
        pass of each rewrite loop (the limit counts steps; a rewrite loop repeats nodes)."""
        passes = sum(
            route.rewrite.max_attempts or 0
            for node in self.spec.nodes.values()
            for route in node.on_error
            if route.rewrite is not None
        )
        return 25 + 4 * len(self.spec.nodes) + 3 * passes

    def sources(self, name: str) -> set[str]:
        """The nodes ``name`` reads from: its wired sources and what it maps over; a switch
        also waits for what its branches read (so the branch it chooses can start at once)."""
        out = {ref.node for _, ref in self.wiring.get(name, []) if ref.node in self.nodes}
        for target in self.switches.get(name, []):
            out |= {
                ref.node
                for _, ref in self.wiring.get(target, [])
                if ref.node in self.nodes and ref.node != name
            }
        mapping = self.spec.nodes[name].map
        if mapping is not None:
            with contextlib.suppress(FlowSpecError):
                over = parse_ref(mapping.over)
                if over.node in self.nodes:
                    out.add(over.node)
        return out

    def item_scope(self, name: str) -> str | None:
        """The mapped node whose item ``name`` may read: itself, or the node it stands in
        for or rewrites for."""
        if name in self.item_types:
            return name
        root = self.root(name)
        if root in self.item_types:
            return root
        for target in self.rewrites_for.get(name, []):
            if target in self.item_types:
                return target
        return None

    def root(self, name: str) -> str:
        """The node whose outputs ``name`` publishes (itself unless it is a fallback)."""
        for _ in range(len(self.stands_in) + 1):  # bounded: validation refuses cycles
            if name not in self.stands_in:
                return name
            name = self.stands_in[name]
        raise FlowSpecError(f"Fallbacks of {name!r} form a cycle.", where=name)

    def has_routes(self, name: str) -> bool:
        """Whether consumers wait on a join node: ``name`` has error routes, or it runs only
        when a switch chooses it (so it may be skipped)."""
        return bool(self.spec.nodes[name].on_error) or name in self.switched

    def rewrite_port(self, via: str) -> str | None:
        """The input port of a ``via`` node that receives the refused value (its unwired
        one); None when ``via`` rewrites for no node."""
        if via not in self.rewrites_for:
            return None
        node = self.nodes[via]
        wired = set(self.spec.nodes[via].inputs)
        return next((p.name for p in node.input_ports if p.name not in wired), None)


# -- predicates shared by the checks and the lowering ---------------------------------------------
def item_members(plan: Plan, name: str) -> list[str]:
    """``name`` and every node its routes may send work to (the work of one map item)."""
    members = [name]
    for member in members:
        for route in plan.spec.nodes[member].on_error:
            target = route.rewrite.via if route.rewrite is not None else route.goto
            if target and target != CONTINUE and target not in members:
                members.append(target)
    return members


def item_name(plan: Plan, mapped: str) -> str:
    spec = plan.spec.nodes[mapped].map
    return spec.as_ if spec is not None else "item"


def item_name_of(plan: Plan, name: str) -> str | None:
    scope = plan.item_scope(name)
    return item_name(plan, scope) if scope is not None else None


def feeds(edge: Edge, target: str) -> bool:
    return edge.kind in ("data", "map") and edge.target == target and edge.source != INPUTS


def feeding_alone(plan: Plan, elsewhere: set[str]) -> dict[str, list[str]]:
    """Routed nodes that need no join node because their consumers wait on them alone →
    those consumers: every path out of the node (its success, a ``continue``, a fallback)
    goes straight to them, so the join's superstep is saved.

    A consumer waits on it alone when everything else it reads comes from the node's own
    ancestors (done before the node started: a frame reading the story and the story's
    illustration waits for the illustration only). As for :func:`ending_alone`: the node
    and its fallbacks run in the top graph, no switch chooses it, it is not mapped, its
    fallbacks have no routes of their own and nobody reads them; its consumers also run in
    the top graph (``elsewhere``: in a lane, a map item or lowered by a construct) and are
    not switches.
    """
    fallbacks: dict[str, list[str]] = {}
    for fallback in plan.stands_in:
        fallbacks.setdefault(plan.root(fallback), []).append(fallback)
    waits = {n: plan.sources(n) - {n} for n in plan.order if n not in plan.routed}
    consumers: dict[str, list[str]] = {}
    for name, sources in waits.items():
        for source in sources:
            consumers.setdefault(source, []).append(name)
    out: dict[str, list[str]] = {}
    for name in plan.order:
        if not plan.spec.nodes[name].on_error or name != plan.root(name):
            continue
        group = [name, *fallbacks.get(name, [])]
        mine = consumers.get(name, [])
        if (
            not mine
            or name in plan.switched
            or name in plan.item_types
            or any(n in elsewhere or n in plan.rewrites_for for n in group)
            or any(plan.spec.nodes[n].on_error or n in consumers for n in group[1:])
        ):
            continue
        before = _ancestors(waits, name)
        if all(
            c not in elsewhere and c not in plan.switches and waits[c] - {name} <= before
            for c in mine
        ):
            out[name] = mine
    return out


def _ancestors(waits: dict[str, set[str]], name: str) -> set[str]:
    """Every node ``name`` waits on, directly or through the nodes it waits on."""
    seen: set[str] = set()
    todo = list(waits.get(name, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(waits.get(node, ()))
    return seen


def ending_alone(plan: Plan, edges: list[Edge], elsewhere: set[str]) -> frozenset[str]:
    """Routed nodes that need no join node: nothing waits on them (no node reads them, no
    switch chooses them), none of their routes is ``continue``, they and their fallbacks
    run in the top graph (not in a lane or map item), and the graph ends at ``END`` (each
    branch ends the run on its own; a waiting output node would need the join). A join
    costs every run a superstep — LangGraph plans, runs and checkpoints it like any node."""
    fallbacks: dict[str, list[str]] = {}
    for fallback in plan.stands_in:
        fallbacks.setdefault(plan.root(fallback), []).append(fallback)
    read = {e.source for e in edges if e.kind in ("data", "map") and e.target in plan.nodes}
    out = set()
    for name in plan.order:
        if not plan.spec.nodes[name].on_error or name != plan.root(name):
            continue
        group = [name, *fallbacks.get(name, [])]
        if (
            name in plan.switched
            or name in plan.item_types
            or any(n in read or n in elsewhere or n in plan.rewrites_for for n in group)
            or any(e.source in group and e.kind == "continue" for e in edges)
            or any(plan.spec.nodes[n].on_error for n in group[1:])
        ):
            continue
        out.add(name)
    return frozenset(out)
