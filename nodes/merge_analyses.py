"""MergeAnalyses: join parallel image analyses into one (missing branches are skipped)."""

from __future__ import annotations

from typing import Any

from calliope_graph.context import RunContext
from calliope_graph.errors import EmptyOutputError
from calliope_graph.media import ImageAnalysis
from calliope_graph.nodes._base import Node, Port, PortType, register_node


@register_node
class MergeAnalyses(Node):
    kind = "merge_analyses"
    description = "Merge the analyses of parallel branches (a branch that fell through is skipped)"
    inputs = (
        Port(
            "analyses",
            PortType.ANALYSIS,
            many=True,
            description="one or more analyses; missing ones are ignored",
        ),
    )
    outputs = (Port("analysis", PortType.ANALYSIS),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        value = inputs.get("analyses")
        items = value if isinstance(value, list) else [value]
        analyses = [a for a in items if isinstance(a, ImageAnalysis)]
        if not analyses:
            raise EmptyOutputError(
                f"Node {self.name!r}: every analysis branch failed, nothing to merge; "
                "add a fallback edge or check the providers."
            )
        merged = analyses[0]
        for other in analyses[1:]:
            merged = merged.merge(other)
        return {"analysis": merged}
