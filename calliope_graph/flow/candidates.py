"""``candidates: N``: run a generation node N times in parallel and keep every result.

Here: the checks (1–8 candidates, only on a node that calls a model, not on a node that is
itself routed to or mapped, no ``rewrite`` route, and every consumer takes a list — a
``choose`` node, a ``many`` or list port, or a map over it), the Plan's record of it
(``plan.candidates``: every output port becomes a list of N, in candidate order, ``None``
where a candidate was dropped) and the registration. A candidates node is drawn as a
``stack``. The spec field is ``NodeSpec.candidates`` (a plain int). Lowering: the node's task
runs the N candidates with ``asyncio.gather``, each its own execution in the trace (its
``item`` is the candidate index), with seed ``base + index`` where the model takes a seed
(:mod:`calliope_graph.flow._lower_candidates`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from calliope_graph.errors import FlowSpecError
from calliope_graph.flow._spec_core import Ref, parse_ref
from calliope_graph.flow.construct import Construct, NodeShape, register_construct

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow.spec import NodeSpec

__all__ = ["CONSTRUCT", "MAX_CANDIDATES", "check_candidates"]

#: The most candidates one node may run (each is paid for).
MAX_CANDIDATES = 8


def check_candidates(plan: Plan) -> None:
    """``candidates`` is 1–8, on a node that calls a model, and its routes apply per
    candidate (fallback or ``continue``; a rewrite loop is refused)."""
    spec = plan.spec
    for name, node_spec in spec.nodes.items():
        count = node_spec.candidates
        if count is None:
            continue
        where = ("nodes", name, "candidates")
        if isinstance(count, bool) or not 1 <= count <= MAX_CANDIDATES:
            raise spec.error(
                f"Node {name!r}: candidates must be a whole number from 1 to "
                f"{MAX_CANDIDATES}, not {count!r} (each candidate is a paid call).",
                *where,
            )
        node = plan.nodes[name]
        if node.model is None or node.conversion is None:
            raise spec.error(
                f"Node {name!r} ({node.kind}) calls no model, so it cannot have candidates: "
                "put 'candidates' on a generation node (text_to_image, text_to_text...).",
                *where,
            )
        if name in plan.routed:
            raise spec.error(
                f"Node {name!r} only runs when routed to, so it cannot have candidates: put "
                "'candidates' on the node it backs up (its routes then apply per candidate).",
                *where,
            )
        if node_spec.map is not None:
            raise spec.error(
                f"Node {name!r} both maps and has candidates: choose one (map a subflow whose "
                "node has candidates, or generate candidates of one item).",
                *where,
            )
        if any(route.rewrite is not None for route in node_spec.on_error):
            raise spec.error(
                f"Node {name!r} has candidates and a rewrite route: a candidate's failure "
                "may go to a fallback ('goto: <node>') or be dropped ('goto: continue').",
                "nodes",
                name,
                "on_error",
            )
        plan.candidates[name] = count
        plan.skippable.discard(name)  # ``continue`` drops one candidate, never the lists
    for name in spec.nodes:
        _check_consumers(plan, name)


def _check_consumers(plan: Plan, name: str) -> None:
    """Whatever node ``name`` reads from a candidates node takes a list."""
    spec = plan.spec
    for port_name, value in spec.nodes[name].inputs.items():
        for text in value if isinstance(value, list) else [value]:
            try:
                ref = parse_ref(text)
            except FlowSpecError:
                continue  # the wiring check names it
            _check_read(plan, name, port_name, ref)


def _check_read(plan: Plan, name: str, port_name: str, ref: Ref) -> None:
    spec = plan.spec
    count = plan.candidates.get(ref.node)
    port = plan.nodes[name].input_port(port_name)
    if count is None or port is None or port.many or port.is_list:
        return
    if port.type.value == "any":
        return
    raise spec.error(
        f"Node {name!r}: input {port_name!r} reads {str(ref)!r}, the {count} candidates "
        f"of {ref.node!r} (a list), but {name}.{port_name} takes one {port.type.value}: "
        f"pick one first with a choose node (kind: choose, inputs: {{candidates: {ref!s}}}"
        f") and read its 'item', or map {name!r} over the list.",
        "nodes",
        name,
        "inputs",
        port_name,
    )


def check_choosers(plan: Plan) -> None:
    """A ``choose`` node chooses from a list (a candidates node's port, a map's, a list
    field), not from one value."""
    from calliope_graph.flow._types import typed  # checks need node kinds' types

    spec = plan.spec
    for name, node in plan.nodes.items():
        if node.kind != "choose":
            continue
        for port_name, ref in plan.wiring.get(name, []):
            where = ("nodes", name, "inputs", port_name)
            source = typed(plan, ref, name, where, f"Node {name!r}: input {port_name!r} reads")
            if source is None or source.is_list or source.type.value == "any":
                continue
            raise spec.error(
                f"Node {name!r} chooses from {str(ref)!r}, which is one {source.describe()}, "
                f"not a list: give {ref.node!r} 'candidates: N' (N results to choose from) or "
                "wire a list.",
                *where,
            )


def _shapes(name: str, node: NodeSpec) -> tuple[NodeShape, ...]:
    return ("stack",) if node.candidates is not None else ()


CONSTRUCT = register_construct(
    Construct(
        name="candidates",
        checks={"structure": check_candidates, "wiring": check_choosers},
        shapes=_shapes,
        lowering="calliope_graph.flow._lower_candidates",
    )
)
