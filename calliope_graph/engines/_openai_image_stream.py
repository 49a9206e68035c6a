"""OpenAI image generations and edits, streamed with partial images (a node's ``previews``).

Wire facts, checked against the ``openai`` SDK's types by tests/test_image_previews.py and
tests/test_provider_specs.py (``ImageGenerateParamsStreaming`` / ``ImageEditParamsStreaming``
for the request, ``ImageGenStreamEvent`` / ``ImageEditStreamEvent`` for the events; OpenAI's
reference, https://platform.openai.com/docs/api-reference/images-streaming, and the image
generation guide's "Streaming" section,
https://developers.openai.com/api/docs/guides/image-generation):

- the request adds ``stream: true`` and ``partial_images`` (0-3) to a generation (JSON) or
  an edit (form fields); only the GPT image models stream;
- the answer is server-sent events whose ``data`` is a JSON object typed by ``type``:
  ``image_generation.partial_image`` (``b64_json``, ``partial_image_index`` from 0, and the
  ``size``/``quality``/``background``/``output_format`` asked for), then one
  ``image_generation.completed`` with the final image's ``b64_json`` and the request's
  ``usage``; an edit's are ``image_edit.partial_image`` / ``image_edit.completed``;
- "the final image may be sent before the full number of partial images are generated if
  the full image is generated more quickly" (``partial_images``' description): fewer
  previews than asked for are normal;
- an error after the stream started arrives as ``data: {"error": {...}}`` (the SDK raises
  ``APIError`` on it, ``openai/_streaming.py``).

Each partial image is saved next to the output (``<name>-preview-<n>``, n from 1) and
reported to the run's token sink as a :class:`~calliope_graph.context.PreviewEvent` holding
the file's reference, never its bytes. The whole stream is read inside one attempt of the
engine layer's retry policy: a stream that breaks mid-way is retried like a 5xx, after a
``discard`` event telling the consumer that attempt's previews are void.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from pathlib import Path
from typing import Any

from calliope_graph._usage import usage_from_body
from calliope_graph.config import ModelConfig
from calliope_graph.context import (
    PreviewEvent,
    RunContext,
    TokenEvent,
    streaming_node,
    token_sink,
)
from calliope_graph.engines._http import with_retries
from calliope_graph.engines._params import extra_body, form_fields, with_extra_body
from calliope_graph.engines._stream import (
    SSE,
    _langgraph_config,
    next_attempt,
    streamed_events,
    where_in_run,
)
from calliope_graph.errors import EmptyOutputError, TransientProviderError, error_class
from calliope_graph.media import Image

__all__ = ["stream_image"]

_NAME = "openai"


class _Previews:
    """One attempt's partial images: each saved and reported to the run's token sink."""

    def __init__(self, ctx: RunContext, output_name: str, attempt: int) -> None:
        scope = streaming_node.get()
        self.node = scope.node if scope is not None else ""
        self.item: int | None = None
        config = _langgraph_config()
        if config is not None:
            self.node, self.item = where_in_run(config, self.node)
        self.ctx = ctx
        self.name = Path(output_name)
        self.attempt = attempt
        self.sink = token_sink.get()
        self.sent = 0

    async def preview(self, index: int, raw: bytes) -> None:
        name = self.name.with_name(f"{self.name.stem}-preview-{index + 1}{self.name.suffix}")
        image = await self.ctx.store.asave_image(str(name), raw)
        if self.sink is not None:
            self.sink(PreviewEvent(self.node, index, image, self.attempt, self.item))
        self.sent += 1

    def failed(self, exc: BaseException) -> None:
        """The attempt failed: if it showed previews, tell the consumer they are void."""
        if self.sent and self.sink is not None:
            reason = error_class(exc)
            self.sink(TokenEvent("discard", self.node, "", self.attempt, self.item, reason))


def _image_data(event: dict[str, Any], model: str) -> bytes:
    try:
        return base64.b64decode(str(event.get("b64_json") or ""), validate=True)
    except (binascii.Error, ValueError):
        raise TransientProviderError(
            f"openai ({model}) streamed image data that is not valid base64; try again.",
            provider=_NAME,
            code="malformed_body",
        ) from None


async def _read(events: Any, previews: _Previews, model: str) -> bytes | None:
    """The final image's bytes from an attempt's events (None when the stream ended without
    one), saving and reporting each partial image on the way."""
    final: bytes | None = None
    async for sse in events:
        event = _event(sse, model)
        kind = str(event.get("type") or "")
        if kind.endswith(".partial_image"):
            index = event.get("partial_image_index")
            raw = _image_data(event, model)
            await previews.preview(index if isinstance(index, int) else previews.sent, raw)
        elif kind.endswith(".completed"):
            final = _image_data(event, model)
            usage_from_body({"usage": event.get("usage"), "data": [{"b64_json": ""}]})
    return final


def _event(sse: SSE, model: str) -> dict[str, Any]:
    data = sse.json()
    if not isinstance(data, dict):
        return {}
    error = data.get("error")
    if isinstance(error, dict):
        raise TransientProviderError(
            f"openai ({model}) broke off its image stream: {error.get('message')}",
            provider=_NAME,
            code=str(error.get("code") or error.get("type") or "stream_error"),
        )
    return data


async def stream_image(
    ctx: RunContext,
    config: ModelConfig,
    *,
    url: str,
    headers: dict[str, str],
    output_name: str,
    previews: int,
    json_body: dict[str, Any] | None = None,
    form: dict[str, str] | None = None,
    files: Any = None,
    describe: Any = None,
    hook: Any = None,
) -> Image:
    """The image for a generation (``json_body``) or an edit (``form`` and ``files``),
    streamed with ``previews`` partial images (at most 3); saved as ``output_name``."""
    model = config.model.provider_model_name
    previews = max(0, min(3, previews))
    if json_body is not None:
        json_body = with_extra_body(
            {**json_body, "stream": True, "partial_images": previews},
            config.parameters,
            config.slug,
        )
    else:
        form = {
            **(form or {}),
            "stream": "true",
            "partial_images": str(previews),
            **form_fields(extra_body(config.parameters, config.slug)),
        }
    counter = [0]

    async def attempt() -> Image:
        shown = _Previews(ctx, output_name, next_attempt(counter))
        request = ctx.client.build_request(
            "POST", url, headers=headers, json=json_body, data=form, files=files
        )
        try:
            events = streamed_events(ctx, _NAME, model, request, describe=describe, hook=hook)
            async with contextlib.aclosing(events):
                final = await _read(events, shown, model)
            if final is None:
                raise TransientProviderError(
                    f"openai ({model}) ended its image stream before the completed image; it "
                    "was asked again.",
                    provider=_NAME,
                    code="protocol_error",
                )
        except BaseException as exc:
            shown.failed(exc)
            raise
        if not final:
            raise EmptyOutputError(
                f"openai ({model}) streamed an empty image: try again or add a fallback edge "
                "on 'empty'."
            )
        return await ctx.store.asave_image(output_name, final)

    return await with_retries(ctx, _NAME, attempt, model=model)
