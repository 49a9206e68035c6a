"""Gemini ``streamGenerateContent?alt=sse``, read through the shared streaming engine.

Wire facts (https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent
and the ``google-genai`` SDK's ``GenerateContentResponse``, which tests parse the fake's
chunks with): ``alt=sse`` makes the answer server-sent events whose ``data`` is each a
``GenerateContentResponse`` chunk — the candidate's ``content.parts[].text`` is the next
piece of text, the last chunk carries ``finishReason``, and ``usageMetadata`` (on every
chunk, the last one complete) is the request's usage. A prompt blocked before any text is a
chunk with ``promptFeedback.blockReason``; a safety stop is a ``finishReason`` of ``SAFETY``
and the like (both :class:`ContentPolicyError`, as unstreamed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from calliope_graph._usage import usage_from_body
from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._stream import SSE, malformed_stream, stream_text
from calliope_graph.errors import EmptyOutputError

__all__ = ["stream_generate"]

_NAME = "google"


class _Reader:
    def __init__(self, model: str, text_of: Callable[[Any], str]) -> None:
        self.model = model
        self.text_of = text_of
        self.finished = False

    def __call__(self, event: SSE) -> str | None:
        chunk = event.json()
        if not isinstance(chunk, dict):
            raise malformed_stream(_NAME, self.model, "an event that is not a JSON object")
        usage_from_body(chunk)  # usageMetadata: the last chunk's is the whole request's
        candidates = chunk.get("candidates")
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            self.finished = self.finished or bool(candidates[0].get("finishReason"))
        return self.text_of(chunk)

    def finish(self, text: str) -> str:
        if not self.finished:
            raise malformed_stream(_NAME, self.model, "an answer cut off before its finishReason")
        if not text:
            raise EmptyOutputError(
                f"google ({self.model}) streamed no text: try again or add a fallback edge on "
                "'empty'."
            )
        return text


async def stream_generate(
    ctx: RunContext,
    config: ModelConfig,
    body: dict[str, Any],
    *,
    base: str,
    headers: dict[str, str],
    prompt: str,
    text_of: Callable[[Any], str],
    describe: Any,
    hook: Any,
    retry_after: Any,
    tokens: int,
) -> str:
    """The text Gemini writes for ``body``, streamed; ``text_of(chunk)`` is a chunk's text
    (raising the taxonomy error a blocked prompt or a safety stop means)."""
    model = config.model.provider_model_name
    return await stream_text(
        ctx,
        _NAME,
        f"{base}/models/{model}:streamGenerateContent",
        reader=lambda: _Reader(model, text_of),
        prompt=prompt,
        model=model,
        headers=headers,
        json_body=body,
        params={"alt": "sse"},
        describe=describe,
        hook=hook,
        retry_after=retry_after,
        tokens=tokens,
    )
