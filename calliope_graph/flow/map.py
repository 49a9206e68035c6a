"""``map: {over, as, max_parallel}``: run a node once per item of a list, in parallel.

The spec field is :class:`~calliope_graph.flow.spec.MapSpec` (``NodeSpec.map``); the ``map``
edge (from the list to the node) comes from :meth:`FlowSpec.edges`. Here: the checks (the
node is not itself routed to, its item name shadows no node, it maps over a list) and the
registration. A mapped node is drawn as a ``stack``; every output port becomes a list.
Lowering: ``<node>__each`` sends one ``Send`` per item, ``<node>__gather`` assembles the
lists (:mod:`calliope_graph.flow._lower_map`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from calliope_graph.errors import FlowSpecError
from calliope_graph.flow._types import ValueType, typed
from calliope_graph.flow.construct import Construct, NodeShape, register_construct
from calliope_graph.flow.spec import INPUTS, parse_ref
from calliope_graph.nodes import PortType

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow.spec import NodeSpec

__all__ = ["CONSTRUCT"]


def check_maps(plan: Plan) -> None:
    """A map goes over a list; its item name shadows no node."""
    spec = plan.spec
    for name, node_spec in spec.nodes.items():
        mapping = node_spec.map
        if mapping is None:
            continue
        where = ("nodes", name, "map")
        if name in plan.routed:
            raise spec.error(
                f"Node {name!r} only runs when routed to, so it cannot map: map the node "
                "it backs up instead (its routes then apply per item).",
                *where,
            )
        if mapping.as_ in spec.nodes or mapping.as_ == INPUTS:
            raise spec.error(
                f"Node {name!r}: map item name {mapping.as_!r} is also a node name: rename "
                "it ('as: scene').",
                *where,
                "as",
            )
        try:
            ref = parse_ref(mapping.over)
        except FlowSpecError as exc:
            raise spec.error(f"Node {name!r}: map over: {exc}", *where, "over") from None
        if ref.node == name:
            raise spec.error(f"Node {name!r} maps over its own output.", *where, "over")
        if not ref.is_input and ref.node not in plan.nodes:
            raise spec.error(
                f"Node {name!r} maps over {str(ref)!r}, but there is no node {ref.node!r}.",
                *where,
                "over",
            )
        source = typed(plan, ref, None, (*where, "over"), f"Node {name!r}: map over")
        if source is None:
            raise spec.error(
                f"Node {name!r} maps over {str(ref)!r}, which does not exist.", *where, "over"
            )
        if not source.is_list and source.type is not PortType.ANY:
            raise spec.error(
                f"Node {name!r} maps over {str(ref)!r}, which is {source.describe()}, not a "
                "list: map over a list-typed value (e.g. a structured object's array field).",
                *where,
                "over",
            )
        plan.item_types[name] = ValueType(source.type, source.schema)
        plan.wiring.setdefault(name, [])


def _shapes(name: str, node: NodeSpec) -> tuple[NodeShape, ...]:
    return ("stack",) if node.map is not None else ()


CONSTRUCT = register_construct(
    Construct(
        name="map",
        checks={"structure": check_maps},
        shapes=_shapes,
        edge_shapes={"map": "edge"},
        lowering="calliope_graph.flow._lower_map",
    )
)
