"""What every chat-model engine shares: the analysis prompt and reading JSON out of answers.

OpenAI, Anthropic and LangChain models describe images and fill pydantic objects the same
way; only the wire format differs, so the parsing lives here once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_openai_messages
from pydantic import ValidationError

from calliope_graph.errors import ConfigurationError, TransientProviderError
from calliope_graph.media import ImageAnalysis

__all__ = [
    "ANALYSIS_PROMPT",
    "analysis_from_answer",
    "json_text",
    "openai_format",
    "validation_summary",
]

ANALYSIS_PROMPT = (
    "Look at this image and describe it for a storyteller. Answer with one JSON object with "
    'exactly these keys: "description" (two or three sentences saying what the image shows), '
    '"captions" (a list of short one-line captions), "tags" (a list of single words or short '
    'phrases: subjects, setting, colours, mood), "objects" (a list of the things visible in '
    'it) and "text" (any writing legible in the image, or an empty string).'
)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def json_text(text: str) -> str:
    """The JSON inside a model's answer: a fenced block, or the outermost braces."""
    fenced = _FENCE.search(text)
    if fenced:
        return fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        return text[start : end + 1]
    return text.strip()


def analysis_from_answer(
    provider: str, model: str, text: str, *, status: int | None = None
) -> ImageAnalysis:
    """Parse a model's JSON description into an ImageAnalysis.

    An answer that is not a JSON object is a TransientProviderError (``malformed_output``),
    so the engine's retry loop asks again.
    """
    try:
        data = json.loads(json_text(text))
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise TransientProviderError(
            f"{provider} ({model}) described the image in something other than a JSON "
            f"object ({text[:80]!r}); it was asked again.",
            provider=provider,
            status=status,
            code="malformed_output",
        )
    return ImageAnalysis.from_dict(data).model_copy(update={"sources": [provider]})


def validation_summary(exc: ValidationError) -> str:
    """A short account of why an answer did not fit the response model (for a re-ask)."""
    parts = []
    for err in exc.errors()[:5]:
        if err["type"] == "json_invalid":
            parts.append(f"not valid JSON ({err['msg']})")
            continue
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def openai_format(messages: Sequence[BaseMessage], provider: str) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI-format dicts (the shape Anthropic's converter starts from)."""
    try:
        converted = convert_to_openai_messages(list(messages))
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ConfigurationError(
            f"Cannot send these messages to {provider} ({exc}): use system, human and AI "
            "messages with text or image content."
        ) from None
    return [dict(m) for m in converted]
