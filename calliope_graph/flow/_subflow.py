"""``kind: flow``: another flow used as one node of this one.

The child flow's inputs and outputs become the node's typed ports. Validation loads and
checks the child with the parent (a flow file that reaches itself through subflows is
refused); compilation runs it as a LangGraph subgraph inside the node's task, so it is
checkpointed and resumable inside, and its executions are nested in the parent's trace.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from calliope_graph.context import RunContext
from calliope_graph.errors import ConfigurationError
from calliope_graph.nodes import Node, Port, PortType, register_node

if TYPE_CHECKING:
    from calliope_graph.flow.validate import Plan

__all__ = ["Subflow", "loading"]

#: The flow files being validated, outermost first (a subflow reaching one is a cycle).
loading: ContextVar[tuple[str, ...]] = ContextVar("calliope_subflows", default=())


class SubflowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow: str
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
            Port(name, PortType(spec.type), required=spec.required, description=spec.description)
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
        from calliope_graph.flow.run import FlowRunner

        runner = FlowRunner(self._plan(), ctx=ctx, checkpointer=False, trace_file=False)
        result = await runner.ainvoke(inputs)
        return result.outputs


def resolve_flow(reference: str, parent_source: str | None) -> Path | str:
    """A child flow reference → a file path (relative to the parent file) or a shipped name."""
    from calliope_graph.flow.builder import shipped_flows

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
