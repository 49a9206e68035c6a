"""CensorText: a copy editor rewrites a prompt so a provider's safety system accepts it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.nodes._base import Node, Port, PortType, register_node

CENSOR_PROMPT = """You are a careful copy editor. The text below was refused by an image \
generator's content-safety filter. Rewrite it so that a strict filter accepts it: remove or \
soften violence, gore, weapons, sexual content, hateful language, real public figures and \
trademarks, while keeping the scene, the imagery and the mood. Answer with the rewritten \
text only, nothing else.

Text:
{text}
"""


class CensorParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    prompt: str = CENSOR_PROMPT
    """The editor's instructions; ``{text}`` is replaced by the text to rewrite."""


@register_node
class CensorText(Node):
    kind = "censor_text"
    description = "Rewrite text so a content-safety filter accepts it (the seed's copy editor)"
    conversion = Conversion.TEXT_TO_TEXT
    needs_model = True
    default_model = "openai-gpt-6-luna"
    Params = CensorParams
    inputs = (Port("text", PortType.TEXT, description="the refused text"),)
    outputs = (Port("text", PortType.TEXT, description="the softened text"),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.TEXT_TO_TEXT, config.provider)
        original = str(inputs["text"])
        rewritten = await engine(ctx, self.params.prompt.replace("{text}", original), config)
        return {"text": rewritten.strip() or original}
