"""AudioToText: transcribe speech."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.nodes._base import Node, Port, PortType, register_node


class AudioParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    language: str | None = Field(default=None, examples=["en"])
    """ISO-639-1 language of the speech (``en``); None lets the model detect it."""


@register_node
class AudioToText(Node):
    kind = "audio_to_text"
    description = "Transcribe spoken audio to text"
    conversion = Conversion.AUDIO_TO_TEXT
    needs_model = True
    default_model = "openai-gpt-transcribe"
    Params = AudioParams
    inputs = (Port("audio", PortType.AUDIO),)
    outputs = (Port("text", PortType.TEXT),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.AUDIO_TO_TEXT, config.provider)
        text = await engine(ctx, inputs["audio"], config, language=self.params.language)
        return {"text": text.strip()}
