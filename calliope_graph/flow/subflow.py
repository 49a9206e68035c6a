"""``kind: flow``: another flow used as one node of this one.

The child flow's inputs and outputs become the node's typed ports. Validation loads and
checks the child with the parent (:func:`load_child`; a flow file that reaches itself through
subflows is refused); compilation runs it as a LangGraph subgraph inside the node's task
(:mod:`calliope_graph.flow._lower_subflow`), so it is checkpointed and resumable inside, and
its executions are nested in the parent's trace. It is drawn as a ``cluster`` holding the
child's own drawing.
"""

from __future__ import annotations

from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph.context import RunContext
from calliope_graph.errors import ConfigurationError, FlowSpecError
from calliope_graph.flow import _entry
from calliope_graph.flow.construct import Construct, NodeShape, register_construct
from calliope_graph.flow.spec import FlowSpec, NodeSpec, load_spec
from calliope_graph.nodes import Node, Port, PortType, register_node

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan

__all__ = ["CONSTRUCT", "Subflow", "identity", "load_child", "loading", "resolve_flow"]

#: The flow files being validated, outermost first (a subflow reaching one is a cycle).
loading: ContextVar[tuple[str, ...]] = ContextVar("calliope_subflows", default=())


class SubflowParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    flow: str = Field(examples=["illustrate"])
    """A shipped flow's name (``illustrate``) or a YAML/JSON path relative to this file."""


@register_node
class Subflow(Node):
    kind = "flow"
    description = "Run another flow as one step: its inputs and outputs are this node's ports"
    Params = SubflowParams

    def __init__(
        self, model: Any = None, *, name: str | None = None, plan: Plan | None = None, **params: Any
    ) -> None:
        super().__init__(model, name=name, **params)
        self.plan = plan

    def _plan(self) -> Plan:
        if self.plan is None:
            raise ConfigurationError(
                f"Node {self.name!r} (flow {self.params.flow!r}) was not loaded: build it "
                "through a flow (validation loads the child flow)."
            )
        return self.plan

    @property
    def input_ports(self) -> tuple[Port, ...]:
        if self.plan is None:
            return ()
        return tuple(
            Port(
                name,
                PortType(spec.element),
                required=spec.required,
                description=spec.description,
                is_list=spec.is_list,
            )
            for name, spec in self.plan.spec.inputs.items()
        )

    @property
    def output_ports(self) -> tuple[Port, ...]:
        if self.plan is None:
            return ()
        return tuple(self.plan.output_ports.values())

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        """Run the child flow on ``inputs`` in ``ctx`` (outside a compiled parent flow; inside
        one, the compiler runs the child as a subgraph instead)."""
        # Through the entry point the package root wires in (flow/_entry.py): the runner
        # runs nodes, this node among them, so importing it from here would close a circle.
        return await _entry.run_flow()(self._plan(), ctx, inputs)


def resolve_flow(reference: str, parent_source: str | None) -> Path | str:
    """A child flow reference → a file path (relative to the parent file) or a shipped name."""
    from calliope_graph.flow.spec import shipped_flows

    path = Path(reference)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        base = Path(parent_source).parent if parent_source and "/" in parent_source else None
        if base is not None and not path.is_absolute() and Path(parent_source or "").exists():
            return (base / path).resolve()
        return path.resolve()
    if reference in shipped_flows():
        return reference
    raise ConfigurationError(
        f"No flow {reference!r}: name a shipped flow ({', '.join(shipped_flows())}) or a "
        ".yaml/.json path relative to this flow file."
    )


def identity(spec: FlowSpec) -> str:
    source = spec.source or spec.name
    path = Path(source)
    return str(path.resolve()) if path.exists() else source


def load_child(spec: FlowSpec, name: str) -> Plan:
    """Load and validate the child flow of subflow node ``name`` (cycles refused)."""
    where = ("nodes", name, "params", "flow")
    reference = spec.nodes[name].params.get("flow")
    if not isinstance(reference, str) or not reference:
        raise spec.error(
            f"Node {name!r} (flow): set params.flow to a shipped flow's name or a flow file.",
            *where,
        )
    try:
        target = resolve_flow(reference, spec.source)
    except ConfigurationError as exc:
        raise spec.error(f"Node {name!r}: {exc}", *where) from None
    if isinstance(target, Path):
        child_spec = load_spec(target)
    else:
        text = resources.files("calliope_graph.graphs").joinpath(f"{target}.yaml")
        child_spec = load_spec(f"{target}.yaml", text=text.read_text(encoding="utf-8"))
    chain = loading.get()
    child = identity(child_spec)
    if child in chain:
        cycle = [*chain[chain.index(child) :], child]
        raise spec.error(
            f"Node {name!r}: subflow {reference!r} leads back to itself "
            f"({' → '.join(Path(c).name for c in cycle)}): flows may not include themselves.",
            *where,
        )
    from calliope_graph.flow.validate import check  # validation of the child, as of any flow

    try:
        return check(child_spec)
    except FlowSpecError as exc:
        raise spec.error(f"Node {name!r}: in subflow {reference!r}: {exc}", *where) from None


def _shapes(name: str, node: NodeSpec) -> tuple[NodeShape, ...]:
    return ("cluster",) if node.kind == Subflow.kind else ()


CONSTRUCT = register_construct(
    Construct(name="subflow", shapes=_shapes, lowering="calliope_graph.flow._lower_subflow")
)
