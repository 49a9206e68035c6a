"""The registry of flow constructs, and the closed vocabulary of shapes drawings use.

A *construct* is something a flow can say beyond "a node reads these values": error routes
(:mod:`~calliope_graph.flow.routes`), a map over a list (:mod:`~calliope_graph.flow.map`), a
switch (:mod:`~calliope_graph.flow.switch`), a subflow (:mod:`~calliope_graph.flow.subflow`),
dataflow lanes (:mod:`~calliope_graph.flow.lanes`). Each is one module that registers a
:class:`Construct`: its checks (run by :func:`calliope_graph.flow.validate.check` at a
named phase), the drawing shapes it gives a node, and the module holding its lowering to
LangGraph (imported only by :mod:`calliope_graph.flow.compile`, so validation never loads
LangGraph). Registration is the way node kinds register (``@register_node``):
``register_construct(Construct(...))`` at the end of the construct's module, and the module
listed in :data:`CONSTRUCT_MODULES`.

Shapes (the renderers in :mod:`calliope_graph.viz` draw these, never a construct by name):

- ``node`` — a box; ``branch`` — a box that chooses where the run goes (a hexagon in Mermaid);
- ``stack`` — a box that runs several times at once (drawn with two shadow boxes behind);
- ``cluster`` — a box holding a flow's own drawing (a subgraph);
- ``loop`` — an *edge* that goes back up (drawn from the side, never laid out downwards).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow._spec_core import Edge
    from calliope_graph.flow.spec import NodeSpec

__all__ = [
    "CONSTRUCT_MODULES",
    "EDGE_SHAPES",
    "NODE_SHAPES",
    "Construct",
    "EdgeShape",
    "NodeShape",
    "Phase",
    "constructs",
    "edge_shape",
    "node_shapes",
    "register_construct",
]

NodeShape = Literal["node", "stack", "cluster", "branch"]
EdgeShape = Literal["edge", "loop"]
NODE_SHAPES: tuple[NodeShape, ...] = ("node", "stack", "cluster", "branch")
EDGE_SHAPES: tuple[EdgeShape, ...] = ("edge", "loop")

Phase = Literal["structure", "wiring", "order"]
"""When a construct's check runs in :func:`~calliope_graph.flow.validate.check`:
``structure`` after the nodes are built and their models checked (it may fill the Plan's
structure: who stands in for whom, who a switch chooses, what a map's items are), ``wiring``
after every input is wired and typed, ``order`` after the data-edge order is known."""

#: The construct modules, in the order their checks run within a phase.
CONSTRUCT_MODULES: tuple[str, ...] = (
    "calliope_graph.flow.routes",
    "calliope_graph.flow.switch",
    "calliope_graph.flow.candidates",
    "calliope_graph.flow.map",
    "calliope_graph.flow.subflow",
    "calliope_graph.flow.lanes",
)


@dataclass(frozen=True)
class Construct:
    """One construct of the flow language (see the module docstring)."""

    name: str
    checks: Mapping[Phase, Callable[[Plan], None]] = field(default_factory=dict)
    """Validation of this construct, by phase; each raises ``plan.spec.error(...)``."""
    shapes: Callable[[str, NodeSpec], tuple[NodeShape, ...]] | None = None
    """The shapes a node takes because of this construct (``()`` when it does not apply)."""
    input_edges: Callable[[str, NodeSpec], list[Edge]] | None = None
    """Edges this construct draws *into* a node (listed before the node's data edges)."""
    edges: Callable[[str, NodeSpec], list[Edge]] | None = None
    """Edges this construct draws *out of* a node (listed after every data edge)."""
    edge_shapes: Mapping[str, EdgeShape] = field(default_factory=dict)
    """Edge kinds of :meth:`FlowSpec.edges` this construct adds, and how each is drawn."""
    lowering: str | None = None
    """The module lowering this construct to LangGraph (imported by the compiler only)."""


_REGISTRY: dict[str, Construct] = {}
_ordered: tuple[Construct, ...] | None = None


def register_construct(construct: Construct) -> Construct:
    """Add ``construct`` to the registry (a name registered twice is replaced). A module
    of :data:`CONSTRUCT_MODULES` keeps that list's place; any other comes after them."""
    global _ordered
    _REGISTRY[construct.name] = construct
    _ordered = None
    return construct


def constructs() -> tuple[Construct, ...]:
    """Every registered construct: those of :data:`CONSTRUCT_MODULES` first, in that order
    (whatever order they were imported in), then any other in registration order."""
    global _ordered
    if _ordered is None:
        listed = [importlib.import_module(m).CONSTRUCT for m in CONSTRUCT_MODULES]
        names = {c.name for c in listed}
        _ordered = (*listed, *(c for c in _REGISTRY.values() if c.name not in names))
    return _ordered


def run_checks(plan: Plan, phase: Phase) -> None:
    """Every construct's check of ``phase`` on ``plan``, in registry order."""
    for construct in constructs():
        check = construct.checks.get(phase)
        if check is not None:
            check(plan)


def node_shapes(name: str, node: NodeSpec) -> tuple[NodeShape, ...]:
    """How node ``name`` is drawn: the shapes its constructs give it, else ``("node",)``."""
    out: list[NodeShape] = []
    for construct in constructs():
        if construct.shapes is not None:
            out += [s for s in construct.shapes(name, node) if s not in out]
    return tuple(out) or ("node",)


def edge_shape(kind: str) -> EdgeShape:
    """How an edge of ``kind`` is drawn (``edge`` unless a construct says ``loop``)."""
    for construct in constructs():
        if kind in construct.edge_shapes:
            return construct.edge_shapes[kind]
    return "edge"
