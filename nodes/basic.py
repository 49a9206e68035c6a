"""Small helpers: Passthrough, Constant and Frame (the story frame a flow produces)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph.context import RunContext
from calliope_graph.media import Image, Video
from calliope_graph.nodes._base import Node, Port, PortType, register_node


@register_node
class Passthrough(Node):
    kind = "passthrough"
    description = "Forward a value unchanged (a join point, or a 'continue with' fallback)"
    inputs = (Port("value", PortType.ANY),)
    outputs = (Port("value", PortType.ANY),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        return {"value": inputs["value"]}


class ConstantParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    value: Any = Field(examples=["a fox in the snow"])
    """The value (any YAML value: text, a number, a list, a mapping)."""


@register_node
class Constant(Node):
    kind = "constant"
    description = "Produce a fixed value"
    Params = ConstantParams
    outputs = (Port("value", PortType.ANY),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        return {"value": self.params.value}


class StoryFrame(BaseModel):
    """One frame of a story: its text and, when made, its image and video."""

    model_config = ConfigDict(frozen=True)

    text: str
    image: Image | None = None
    video: Video | None = None


class FrameParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    output_name: str = "frame.json"
    """File name of the frame's JSON in the output directory."""


@register_node
class Frame(Node):
    kind = "frame"
    description = "Assemble a story frame (text + image/video) and write it as JSON"
    Params = FrameParams
    inputs = (
        Port("text", PortType.TEXT),
        Port("image", PortType.IMAGE, required=False),
        Port("video", PortType.VIDEO, required=False),
    )
    outputs = (Port("frame", PortType.OBJECT),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        frame = StoryFrame(
            text=str(inputs["text"]), image=inputs.get("image"), video=inputs.get("video")
        )
        # Not fsynced (calliope_graph._files: only what was paid for waits on the disk): the
        # frame is also in the run's checkpoint, and making it again costs nothing.
        await ctx.store.awrite_bytes(
            self.params.output_name,
            json.dumps(frame.model_dump(mode="json"), indent=2).encode(),
            durable=False,
        )
        return {"frame": frame}
