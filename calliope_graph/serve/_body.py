"""A request-body limit for LangGraph Server, applied before the API reads a byte of it.

LangGraph Server parses a run's JSON body and keeps the input in the run, its queue and
its first checkpoint: a 200 MB data URL grew ``langgraph dev`` by about 1.7 GB before our
input check could refuse it from its length. So the custom app (``langgraph.json``
``http.app``) carries this ASGI middleware, which LangGraph Server applies to every route:
a body declared larger than the limit never reaches the API; a chunked body is counted as
it arrives and cut off from the API as soon as it passes the limit (the API's own answer,
if any, is dropped). Either way the rest is read and dropped (bounded) and the client gets
a 413 saying what the limit is. Starlette has no body-size setting and uvicorn none either (only
``h11_max_incomplete_event_size``, for headers), hence these few lines.

The limit is ``CALLIOPE_MAX_BODY_BYTES``; by default room for one media input at the input
limit as a base64 data URL, plus 1 MiB for the rest of the request.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from calliope_graph.errors import ConfigurationError
from calliope_graph.media import MAX_INPUT_BYTES

__all__ = ["BODY_ENV", "BodyLimit", "max_body_bytes"]

BODY_ENV = "CALLIOPE_MAX_BODY_BYTES"
#: A refused body is read and dropped up to this many times the limit (see ``_drain``).
DRAIN_FACTOR = 8

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def max_body_bytes(environ: dict[str, str] | None = None) -> int:
    """The request-body limit in force: ``CALLIOPE_MAX_BODY_BYTES``, else the base64 size of
    one :data:`~calliope_graph.media.MAX_INPUT_BYTES` input plus 1 MiB."""
    env = os.environ if environ is None else environ
    raw = env.get(BODY_ENV, "").strip().replace("_", "")
    if not raw:
        return 4 * math.ceil(MAX_INPUT_BYTES / 3) + (1 << 20)
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigurationError(
            f"{BODY_ENV}={raw!r} is not a positive whole number of bytes: set it to e.g. "
            "100000000, or unset it for room for one media input at the input limit."
        )
    return int(raw)


class _TooLarge(Exception):
    """Raised into the app when a chunked body passes the limit."""


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413 (see the module)."""

    def __init__(self, app: ASGIApp, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_body_bytes() if max_bytes is None else max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._drain(receive, 0)
            await self._refuse(send)
            return
        received = 0
        over = False
        rest = True  # more body to come

        async def counted() -> Message:
            nonlocal received, over, rest
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                rest = bool(message.get("more_body"))
                if received > self.max_bytes:
                    over = True
                    raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            if not over:  # the app's answer to a body it could not read is not sent
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:  # _TooLarge, or whatever the app made of it, once over the limit
                raise
        if over:
            if rest:
                await self._drain(receive, received)
            await self._refuse(send)

    async def _drain(self, receive: Receive, received: int) -> None:
        """Read the rest of the body and drop it, so the client, still sending, then reads
        the 413 rather than a reset connection; memory stays flat. Past
        :data:`DRAIN_FACTOR` times the limit the connection is closed instead."""
        more = True
        while more and received <= DRAIN_FACTOR * self.max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            more = bool(message.get("more_body"))

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "detail": f"The request body is over the server's limit of {self.max_bytes} "
                f"bytes ({BODY_ENV}): send media as http(s) URLs, or smaller."
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
