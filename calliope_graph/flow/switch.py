"""``kind: switch``: run one of several branches, chosen by JMESPath conditions on a value.

The node kind is :class:`calliope_graph.nodes.Switch` (its ``cases`` and ``default`` are
params). Here: the ``switch`` edges (one per branch, labelled with its condition:
:func:`switch_edges`, listed by :meth:`FlowSpec.edges`), the checks (branches exist, are
reached by no other route, a default is set; conditions read fields the value has) and the
registration. The switch is
drawn as a ``branch``. Lowering: the node returns ``Command(goto=[chosen, <other>__done...])``
(:mod:`calliope_graph.flow._lower_switch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from calliope_graph.flow._spec_core import Edge
from calliope_graph.flow._types import typed
from calliope_graph.flow.construct import Construct, NodeShape, register_construct
from calliope_graph.nodes import Switch
from calliope_graph.nodes.switch import expression_fields

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow.spec import NodeSpec

__all__ = ["CONSTRUCT", "switch_edges"]


def switch_edges(name: str, node: NodeSpec) -> list[Edge]:
    """A switch's branches as edges labelled with their conditions (read loosely: a switch
    that does not validate is still drawn)."""
    out: list[Edge] = []
    if node.kind != Switch.kind:
        return out
    cases = node.params.get("cases")
    for case in cases if isinstance(cases, list) else []:
        if isinstance(case, dict) and isinstance(case.get("goto"), str):
            label = str(case.get("when", ""))
            out.append(Edge(kind="switch", source=name, target=case["goto"], label=label))
    default = node.params.get("default")
    if isinstance(default, str):
        out.append(Edge(kind="switch", source=name, target=default, label="default"))
    return out


def check_switches(plan: Plan) -> None:
    """A switch names existing nodes that nothing else routes to, and has a default."""
    spec = plan.spec
    for name, node in plan.nodes.items():
        if not isinstance(node, Switch):
            continue
        where = ("nodes", name, "params")
        if node.params.default is None:
            raise spec.error(
                f"Switch {name!r}: a value for which no case holds would fall through: add "
                "'default: <node>' (the node to run then).",
                *where,
                "cases",
            )
        for index, target in enumerate(node.targets):
            place = (*where, "cases", str(index)) if index < len(node.params.cases) else where
            if target not in spec.nodes:
                raise spec.error(
                    f"Switch {name!r} goes to {target!r}, which is not a node. Nodes: "
                    f"{', '.join(spec.nodes)}.",
                    *place,
                )
            if target == name:
                raise spec.error(f"Switch {name!r} routes to itself.", *place)
            other = plan.switched.get(target)
            by_route = target in plan.stands_in or target in plan.rewrites_for
            if by_route or (other is not None and other != name):
                raise spec.error(
                    f"Switch {name!r} goes to {target!r}, which another route already sends "
                    "work to: a node has one way in; declare a second node.",
                    *place,
                )
            plan.switched[target] = name
            plan.skippable.add(target)
        plan.switches[name] = node.targets
        plan.routed |= set(node.targets)


def check_conditions(plan: Plan) -> None:
    """Conditions read fields the value has (where the value's schema is known)."""
    spec = plan.spec
    for name in plan.switches:
        node = plan.nodes[name]
        assert isinstance(node, Switch)
        refs = [ref for port, ref in plan.wiring.get(name, []) if port == "value"]
        value = typed(plan, refs[0], name, ("nodes", name), "Switch") if refs else None
        props = (value.schema or {}).get("properties") if value is not None else None
        if isinstance(props, dict):
            for index, case in enumerate(node.params.cases):
                for field_name in expression_fields(case.when):
                    if field_name not in props:
                        raise spec.error(
                            f"Switch {name!r}: condition {case.when!r} reads field "
                            f"{field_name!r}, which {str(refs[0])!r} does not have (its "
                            f"fields: {', '.join(sorted(props))}).",
                            "nodes",
                            name,
                            "params",
                            "cases",
                            str(index),
                        )


def _shapes(name: str, node: NodeSpec) -> tuple[NodeShape, ...]:
    return ("branch",) if node.kind == Switch.kind else ()


CONSTRUCT = register_construct(
    Construct(
        name="switch",
        checks={"structure": check_switches, "order": check_conditions},
        shapes=_shapes,
        edges=switch_edges,
        edge_shapes={"switch": "edge"},
        lowering="calliope_graph.flow._lower_switch",
    )
)
