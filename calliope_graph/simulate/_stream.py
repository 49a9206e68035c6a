"""Streamed answers of the fakes: server-sent events, paced like a model writing.

Every fake that streams (OpenAI Chat Completions, Anthropic Messages, Gemini
``streamGenerateContent?alt=sse``) builds its own provider's events and hands them to
:func:`sse_response`, which sends them as a ``text/event-stream`` body: the first after the
simulator's time to first token (``latency={"openai:ttft": 0.4}``), the others ``token``
seconds apart, on the simulator's ``sleep`` (virtual in tests). A ``stream_break`` fault
cuts the body off half-way — the connection drops after some text, as httpx reports it
(``RemoteProtocolError``) — so clients can show that a partial answer is thrown away.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from calliope_graph.simulate._core import ProviderFake

__all__ = ["pieces", "sse", "sse_response"]


def sse(data: Any, event: str | None = None, *, newline: str = "\n") -> str:
    """One event: ``event: <name>`` (when named) and ``data: <json>``, then a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}{newline}" if event else ""
    return f"{head}data: {text}{newline}{newline}"


def pieces(text: str, count: int = 6) -> list[str]:
    """``text`` in about ``count`` word-aligned pieces that join back to it exactly."""
    if not text:
        return []
    words = text.split(" ")
    step = max(1, -(-len(words) // count))
    parts = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


def sse_response(
    fake: ProviderFake,
    request: httpx.Request,
    events: Sequence[str],
    *,
    headers: Mapping[str, str] | None = None,
    lead: int = 0,
) -> httpx.Response:
    """``events`` (each from :func:`sse`) as a streamed ``text/event-stream`` answer; the
    first ``lead`` events (a role chunk, ``message_start``...) come with the first text,
    which waits the time to first token."""
    sim = fake.sim
    first, between = sim.stream_timing(fake.name)
    cut = max(1, len(events) // 2) if sim.breaks(fake, request) else None

    async def body() -> AsyncIterator[bytes]:
        for index, event in enumerate(events):
            if cut is not None and index == cut:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body "
                    "(incomplete chunked read)",
                    request=request,
                )
            wait = first if index == 0 else (between if index > lead else 0.0)
            if wait:
                await sim.sleep(wait)
            yield event.encode()

    return httpx.Response(
        200,
        headers={**(headers or {}), "content-type": "text/event-stream; charset=utf-8"},
        content=body(),
    )
