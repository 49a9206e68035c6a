"""TextToText: a language model continues or transforms text."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from calliope_graph.context import RunContext, streaming
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.errors import EmptyOutputError
from calliope_graph.nodes._base import Node, Port, PortType, register_node


class TextToTextParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    empty_is_error: bool = False
    """Raise EmptyOutputError (error class ``empty``) when the model returns only whitespace."""
    strip: bool = True
    """Strip whitespace around the answer."""


@register_node
class TextToText(Node):
    kind = "text_to_text"
    description = "Generate text from text with a language model"
    conversion = Conversion.TEXT_TO_TEXT
    needs_model = True
    default_model = "openai-gpt-6-luna"
    Params = TextToTextParams
    inputs = (Port("text", PortType.TEXT, description="the prompt"),)
    outputs = (Port("text", PortType.TEXT, description="the model's answer"),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.TEXT_TO_TEXT, config.provider)
        with streaming(self.name):  # token events while someone listens (flow.astream)
            text = await engine(ctx, str(inputs["text"]), config)
        if self.params.strip:
            text = text.strip()
        if self.params.empty_is_error and not text.strip():
            raise EmptyOutputError(
                f"Node {self.name!r}: {config.slug} returned an empty continuation; "
                "add a fallback edge on 'empty' or change the prompt."
            )
        return {"text": text}
