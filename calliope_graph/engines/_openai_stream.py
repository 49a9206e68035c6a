"""OpenAI Chat Completions, streamed (``"stream": true``): the text as it is written.

Wire facts (checked against the ``openai`` SDK's ``ChatCompletionChunk`` type by
tests/test_streaming.py):

- the request adds ``stream: true`` and ``stream_options: {"include_usage": true}``
  (https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream_options:
  "an additional chunk will be streamed before the ``data: [DONE]`` message. The ``usage``
  field on this chunk shows the token usage statistics for the entire request, and the
  ``choices`` field will always be an empty array");
- the answer is server-sent events, each ``data:`` a ``chat.completion.chunk`` whose
  ``choices[0].delta`` carries ``content`` (or ``refusal``) pieces and whose last choice
  has a ``finish_reason``; the stream ends with ``data: [DONE]``
  (https://platform.openai.com/docs/api-reference/chat-streaming/streaming);
- an error after the stream started arrives as ``data: {"error": {...}}`` (the SDK raises
  ``APIError`` on it: ``openai/_streaming.py``).
"""

from __future__ import annotations

from typing import Any

from calliope_graph._usage import usage_from_body
from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._params import with_extra_body
from calliope_graph.engines._stream import SSE, stream_text
from calliope_graph.errors import (
    ContentPolicyError,
    TransientProviderError,
)
from calliope_graph.limits import estimate_tokens

__all__ = ["stream_chat"]

_NAME = "openai"


class _Reader:
    """Reads one streamed chat completion, event by event."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.refusal: list[str] = []
        self.reason: str | None = None

    def __call__(self, event: SSE) -> str | None:
        if event.data.strip() == "[DONE]":
            return None
        chunk = event.json()
        if not isinstance(chunk, dict):
            return None
        error = chunk.get("error")
        if isinstance(error, dict):
            raise TransientProviderError(
                f"openai ({self.model}) broke off its stream: {error.get('message')}",
                provider=_NAME,
                code=str(error.get("code") or error.get("type") or "stream_error"),
            )
        if isinstance(chunk.get("usage"), dict):
            usage_from_body(chunk)  # the include_usage chunk: the whole request's usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        choice = choices[0]
        self.reason = choice.get("finish_reason") or self.reason
        delta = choice.get("delta") or {}
        if delta.get("refusal"):
            self.refusal.append(str(delta["refusal"]))
        content = delta.get("content")
        return str(content) if content else None

    def finish(self, text: str) -> str:
        if self.refusal:
            raise ContentPolicyError(
                f"openai ({self.model}) refused: {''.join(self.refusal)[:300]} — rephrase the "
                "request or add a fallback edge on content_policy.",
                provider=_NAME,
                status=200,
                code="refusal",
            )
        if self.reason == "content_filter" and not text:
            raise ContentPolicyError(
                f"openai ({self.model}) withheld its answer (finish_reason=content_filter): "
                "soften the prompt or add a fallback edge on content_policy.",
                provider=_NAME,
                status=200,
                code="content_filter",
            )
        if self.reason is None:
            raise TransientProviderError(
                f"openai ({self.model}) ended its stream before a finish_reason; it was asked "
                "again.",
                provider=_NAME,
                code="protocol_error",
            )
        return text  # empty text is the node's to judge (``empty_is_error``), as unstreamed


async def stream_chat(
    ctx: RunContext,
    config: ModelConfig,
    body: dict[str, Any],
    *,
    url: str,
    headers: dict[str, str],
    prompt: str,
    describe: Any,
    hook: Any,
) -> str:
    """The chat completion for ``body`` (with ``model``), streamed; its whole text."""
    model = config.model.provider_model_name
    body = with_extra_body(
        {**body, "stream": True, "stream_options": {"include_usage": True}},
        config.parameters,
        config.slug,
    )
    return await stream_text(
        ctx,
        _NAME,
        url,
        reader=lambda: _Reader(model),
        prompt=prompt,
        model=model,
        headers=headers,
        json_body=body,
        describe=describe,
        hook=hook,
        tokens=estimate_tokens(body),
    )
