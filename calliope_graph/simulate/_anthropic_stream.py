"""The Anthropic fake's streamed Messages (``"stream": true``).

The message the fake would have sent whole is sent as Anthropic's named events
(https://docs.anthropic.com/en/api/messages-streaming): ``message_start`` (the message with
empty ``content``, ``stop_reason`` null and its input usage), a ``ping``, per content block
``content_block_start`` / ``content_block_delta`` (``text_delta`` or ``input_json_delta``) /
``content_block_stop``, then ``message_delta`` (``stop_reason``, cumulative ``usage``) and
``message_stop``. tests/test_streaming.py parses each with the ``anthropic`` SDK's
``RawMessageStreamEvent``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from calliope_graph.simulate._stream import pieces, sse, sse_response

if TYPE_CHECKING:
    from calliope_graph.simulate._core import ProviderFake

__all__ = ["messages_stream"]


def _named(event: dict[str, Any]) -> str:
    return sse(event, event["type"])


def messages_stream(
    fake: ProviderFake, request: httpx.Request, message: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """``message`` (a Messages answer) as the events Anthropic streams."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events = [_named({"type": "message_start", "message": start}), _named({"type": "ping"})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            empty: dict[str, Any] = {"type": "text", "text": "", "citations": None}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
        else:
            empty = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
        events.append(
            _named({"type": "content_block_start", "index": index, "content_block": empty})
        )
        events.extend(
            _named({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
        )
        events.append(_named({"type": "content_block_stop", "index": index}))
    delta = {
        "type": "message_delta",
        "delta": {
            "stop_reason": message["stop_reason"],
            "stop_sequence": message["stop_sequence"],
            "stop_details": message.get("stop_details"),
            "container": None,
        },
        "usage": {
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "server_tool_use": None,
        },
    }
    events += [_named(delta), _named({"type": "message_stop"})]
    return sse_response(fake, request, events, headers=headers, lead=3)
