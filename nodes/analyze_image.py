"""AnalyzeImage: describe an image (caption, tags, objects, text) with a vision engine."""

from __future__ import annotations

from typing import Any

from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.nodes._base import Node, Port, PortType, register_node


@register_node
class AnalyzeImage(Node):
    kind = "analyze_image"
    description = "Analyse an image into description, captions, tags, objects and text"
    conversion = Conversion.IMAGE_ANALYSIS
    needs_model = True
    default_model = "azure-vision-4.0"
    inputs = (Port("image", PortType.IMAGE),)
    outputs = (Port("analysis", PortType.ANALYSIS),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.IMAGE_ANALYSIS, config.provider)
        return {"analysis": await engine(ctx, inputs["image"], config)}
