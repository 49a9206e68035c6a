"""``map: {over, as, max_parallel}``: run a node once per item of a list, in parallel.

Here: the spec field (:class:`MapSpec`, ``NodeSpec.map``), the ``map`` edge from the list to
the node (:func:`map_edges`, listed by :meth:`FlowSpec.edges`), the checks (the
node is not itself routed to, its item name shadows no node, it maps over a list) and the
registration. A mapped node is drawn as a ``stack``; every output port becomes a list.
Lowering: ``<node>__each`` sends one ``Send`` per item, ``<node>__gather`` assembles the
lists (:mod:`calliope_graph.flow._lower_map`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field

from calliope_graph.errors import FlowSpecError
from calliope_graph.flow._spec_core import INPUTS, Edge, _Model, parse_ref
from calliope_graph.flow.construct import Construct, NodeShape, register_construct

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow.spec import NodeSpec

__all__ = ["CONSTRUCT", "MapSpec", "map_edges"]


# -- spec field (NodeSpec.map) -------------------------------------------------------------------
class MapSpec(_Model):
    """Run the node once per item of a list, items in parallel, results gathered in order.

    Inside the node's ``inputs`` the current item is ``<as>`` (``item`` unless renamed) and
    its fields ``<as>.<field>``; every output port of the node becomes a list, in item order.
    """

    over: str
    """A list-typed value: ``<node>.<port>[.<field>...]`` or ``inputs.<name>``."""
    as_: str = Field(default="item", alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The name the current item goes by in the node's wiring."""
    max_parallel: int | None = Field(default=None, ge=1, le=1000)
    """Items running at once (default: all)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


# -- edges ---------------------------------------------------------------------------------------
def map_edges(name: str, node: NodeSpec) -> list[Edge]:
    """The ``map`` edge into ``name``: from the list it runs over (none if unreadable)."""
    if node.map is None:
        return []
    try:
        over = parse_ref(node.map.over)
    except FlowSpecError:
        return []
    return [
        Edge(
            kind="map",
            source=over.node,
            source_port=".".join((over.port, *over.fields)),
            target=name,
            bound=node.map.max_parallel,
            label=f"for each {node.map.as_}",
        )
    ]


# -- checks --------------------------------------------------------------------------------------
def check_maps(plan: Plan) -> None:
    """A map goes over a list; its item name shadows no node."""
    from calliope_graph.flow._types import ValueType, typed  # checks need node kinds' types
    from calliope_graph.nodes import PortType

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
        input_edges=map_edges,
        shapes=_shapes,
        edge_shapes={"map": "edge"},
        lowering="calliope_graph.flow._lower_map",
    )
)
