"""Anthropic Messages, streamed (``"stream": true``): the text as Claude writes it.

Wire facts (https://docs.anthropic.com/en/api/messages-streaming, and the ``anthropic``
SDK's ``RawMessageStreamEvent`` types, which tests/test_streaming.py parses the fake's
events with): every event has a name (``event: message_stop``) and JSON data with the same
``type``. The flow is ``message_start`` (a Message with empty ``content`` and its
``usage.input_tokens``), then per content block ``content_block_start``, one or more
``content_block_delta`` (``delta.type: text_delta`` carries ``delta.text``),
``content_block_stop``; then ``message_delta`` (``delta.stop_reason`` and the cumulative
``usage.output_tokens``) and ``message_stop``. ``ping`` events may come at any time. An
``error`` event (``{"type": "error", "error": {"type": "overloaded_error", ...}}``) can
arrive mid-stream — "which would normally correspond to an HTTP 529 in a non-streaming
context" — and is retried like one.
"""

from __future__ import annotations

from typing import Any

from calliope_graph._usage import report_usage
from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._stream import SSE, malformed_stream, stream_text
from calliope_graph.errors import (
    ContentPolicyError,
    InvalidRequestError,
    ProviderError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.limits import estimate_tokens

__all__ = ["stream_messages"]

_NAME = "anthropic"
#: Error types that are worth another attempt (https://docs.anthropic.com/en/api/errors).
_TRANSIENT = {"overloaded_error": TransientProviderError, "api_error": TransientProviderError}


class _Reader:
    def __init__(self, model: str) -> None:
        self.model = model
        self.stop: str | None = None
        self.stopped = False

    def __call__(self, event: SSE) -> str | None:
        data = event.json()
        kind = data.get("type") if isinstance(data, dict) else None
        if kind is None:
            raise malformed_stream(_NAME, self.model, "an event without a type")
        if kind == "error":
            error = data.get("error") or {}
            etype = str(error.get("type") or "error")
            cls: type[ProviderError] = _TRANSIENT.get(etype, InvalidRequestError)
            if etype == "rate_limit_error":
                cls = RateLimitError
            raise cls(
                f"anthropic ({self.model}) broke off its stream ({etype}): {error.get('message')}",
                provider=_NAME,
                code=etype,
            )
        if kind == "message_start":
            message = data.get("message") or {}
            usage = message.get("usage") or {}
            report_usage(
                response_model=message.get("model"),
                input_tokens=usage.get("input_tokens"),
                output_tokens=usage.get("output_tokens"),
            )
        elif kind == "message_delta":
            self.stop = (data.get("delta") or {}).get("stop_reason") or self.stop
            report_usage(output_tokens=(data.get("usage") or {}).get("output_tokens"))
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return str(delta.get("text") or "")
        return None

    def finish(self, text: str) -> str:
        if self.stop == "refusal":
            raise ContentPolicyError(
                f"anthropic ({self.model}) refused to answer (stop_reason=refusal): rephrase "
                "the request or add a fallback edge on content_policy.",
                provider=_NAME,
                status=200,
                code="refusal",
            )
        if not self.stopped:
            raise malformed_stream(_NAME, self.model, "an answer cut off before message_stop")
        return text


async def stream_messages(
    ctx: RunContext,
    config: ModelConfig,
    body: dict[str, Any],
    *,
    url: str,
    headers: dict[str, str],
    prompt: str,
    describe: Any,
) -> str:
    """The Messages answer to ``body``, streamed; its text blocks joined."""
    model = config.model.provider_model_name
    body = {**body, "stream": True}
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
        tokens=estimate_tokens(body),
    )
