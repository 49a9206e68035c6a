"""The OpenAI fake's streamed Chat Completions (``"stream": true``).

The answer the fake would have sent whole is sent as ``chat.completion.chunk`` events
(https://platform.openai.com/docs/api-reference/chat-streaming/streaming): a first chunk
with the role, the content (or refusal) in pieces, a last chunk with the ``finish_reason``,
with ``stream_options.include_usage`` one more chunk with empty ``choices`` and the whole
request's ``usage`` (https://platform.openai.com/docs/api-reference/chat/create), and
``data: [DONE]``. tests/test_streaming.py parses every chunk with the ``openai`` SDK's
``ChatCompletionChunk``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from calliope_graph.simulate._core import Reject
from calliope_graph.simulate._stream import pieces, sse, sse_response

if TYPE_CHECKING:
    from calliope_graph.simulate._openai_wire import OpenAIWire

__all__ = ["chat_stream", "stream_options"]


def stream_options(fake: OpenAIWire, body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's ``stream_options`` when it streams (``{}`` without any), else None;
    OpenAI's 400s for options without ``stream`` and for a non-boolean ``stream``."""
    stream, options = body.get("stream"), body.get("stream_options")
    if stream is not None and not isinstance(stream, bool):
        raise Reject(
            fake._fail(
                400,
                f"Invalid type for 'stream': expected a boolean, but got "
                f"{type(stream).__name__} instead.",
                param="stream",
                code="invalid_type",
            )
        )
    if options is not None and not stream:
        raise Reject(
            fake._fail(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        )
    if not stream:
        return None
    return dict(options) if isinstance(options, dict) else {}


def chat_stream(
    fake: OpenAIWire,
    request: httpx.Request,
    answer: dict[str, Any],
    options: dict[str, Any],
    *,
    headers: dict[str, str],
) -> httpx.Response:
    """``answer`` (a ``chat.completion``) as the chunks OpenAI streams."""
    head = {
        "id": answer["id"],
        "object": "chat.completion.chunk",
        "created": answer["created"],
        "model": answer["model"],
        "service_tier": answer.get("service_tier"),
        "system_fingerprint": answer.get("system_fingerprint"),
    }
    usage = options.get("include_usage") is True
    extra = {"usage": None} if usage else {}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**head, "choices": [choice], **extra})

    events: list[str] = []
    for choice in answer["choices"]:
        index, message = choice["index"], choice["message"]
        events.append(chunk(index, {"role": "assistant", "content": "", "refusal": None}))
        if message.get("refusal"):
            events.extend(chunk(index, {"refusal": p}) for p in pieces(message["refusal"]))
        for call in message.get("tool_calls") or []:
            events.append(chunk(index, {"tool_calls": [{"index": 0, **call}]}))
        for piece in pieces(message.get("content") or ""):
            events.append(chunk(index, {"content": piece}))
        events.append(chunk(index, {}, choice["finish_reason"]))
    if usage:
        events.append(sse({**head, "choices": [], "usage": answer["usage"]}))
    events.append(sse("[DONE]"))
    return sse_response(fake, request, events, headers=headers, lead=1)
