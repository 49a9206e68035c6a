"""ImageAndTextToVideo: animate a still image following a text prompt."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.nodes._base import Node, Port, PortType, register_node
from calliope_graph.nodes.text_to_image import seed_of


class VideoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    output_name: str | None = Field(default=None, examples=["clip.mp4"])


@register_node
class ImageAndTextToVideo(Node):
    kind = "image_and_text_to_video"
    description = "Generate a video clip from an image and a text prompt"
    conversion = Conversion.IMAGE_AND_TEXT_TO_VIDEO
    needs_model = True
    default_model = "runway-gen4-turbo"
    Params = VideoParams
    inputs = (
        Port("image", PortType.IMAGE, description="the first frame"),
        Port("text", PortType.TEXT, description="what happens"),
        Port(
            "last_frame",
            PortType.IMAGE,
            required=False,
            description="the last frame (models whose catalog entry `takes` it)",
        ),
        Port("seed", PortType.ANY, required=False, description="an integer seed"),
    )
    outputs = (Port("video", PortType.VIDEO),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.IMAGE_AND_TEXT_TO_VIDEO, config.provider)
        extra: dict[str, Any] = {}
        if inputs.get("last_frame") is not None:
            extra["last_frame"] = inputs["last_frame"]
        if inputs.get("seed") is not None:
            extra["seed"] = seed_of(inputs["seed"], self.name)
        video = await engine(
            ctx,
            inputs["image"],
            str(inputs["text"]),
            config,
            output_name=self.params.output_name or f"{self.output_stem()}.mp4",
            **extra,
        )
        return {"video": video}
