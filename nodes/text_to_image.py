"""TextToImage: an image generator draws a prompt into a file in the media store."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.nodes._base import Node, Port, PortType, register_node


class TextToImageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int | None = Field(default=None, gt=0, le=8192)
    height: int | None = Field(default=None, gt=0, le=8192)
    output_name: str | None = None
    """File name in the output directory (default: the node's name, with the real extension)."""


@register_node
class TextToImage(Node):
    kind = "text_to_image"
    description = "Generate an image from a text prompt"
    conversion = Conversion.TEXT_TO_IMAGE
    needs_model = True
    default_model = "openai-gpt-image-2"
    Params = TextToImageParams
    inputs = (Port("prompt", PortType.TEXT, description="what to draw"),)
    outputs = (Port("image", PortType.IMAGE),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.TEXT_TO_IMAGE, config.provider)
        image = await engine(
            ctx,
            str(inputs["prompt"]),
            config,
            output_name=self.params.output_name or f"{self.output_stem()}.png",
            width=self.params.width,
            height=self.params.height,
        )
        return {"image": image}
