"""The OpenAI fake's streamed image generations and edits (``stream: true``,
``partial_images``), in OpenAI's wire format (the ``openai`` SDK's ``ImageGenStreamEvent``
and ``ImageEditStreamEvent``; https://platform.openai.com/docs/api-reference/images-streaming).

The answer the fake would have sent whole is sent as server-sent events: ``partial_images``
``<kind>.partial_image`` events (``b64_json``: the final picture, blurred less and less;
``partial_image_index`` from 0), then one ``<kind>.completed`` with the final image and the
request's ``usage`` — ``kind`` is ``image_generation`` or ``image_edit``. Each event also
carries the ``size``, ``quality``, ``background``, ``output_format`` and ``created_at`` of
the answer, and is named in an ``event:`` line as well as by its ``type`` (the SDK reads the
``data``). Paced like every stream (``latency={"openai:ttft": ...}``: the first partial image
waits the time to first token, the next ones ``token`` apart); ``stream_break`` cuts it off
half-way. tests/test_image_previews.py parses every event with the SDK's types.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any, Literal

import httpx

from calliope_graph.simulate._stream import sse, sse_response

if TYPE_CHECKING:
    from calliope_graph.simulate._openai_wire import OpenAIWire

__all__ = ["image_stream", "stream_args"]

#: OpenAI's bound on ``partial_images`` (``ImageGenerateParams.partial_images``: 0 to 3).
MAX_PARTIAL_IMAGES = 3


def stream_args(fake: OpenAIWire, body: dict[str, Any], *, gpt_image: bool) -> int | None:
    """The partial images a streamed request asks for (0 when it names none), or None when
    it does not stream; OpenAI's 400s for a non-boolean ``stream``, a ``partial_images``
    out of 0-3, and streaming with a model that does not stream (DALL-E)."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise fake._reject(
            f"Invalid type for 'stream': expected a boolean, but got {type(stream).__name__} "
            "instead.",
            param="stream",
            code="invalid_type",
        )
    partial = fake._int_param(body, "partial_images", 0, 0, MAX_PARTIAL_IMAGES)
    if not stream:
        return None
    if not gpt_image:
        raise fake._reject(
            "Streaming is only supported for the GPT image models.",
            param="stream",
            code="unsupported_value",
        )
    return partial


def _blurred(raw: bytes, fmt: str, radius: float) -> bytes:
    """``raw`` blurred by ``radius`` pixels, in the same format: a stand-in partial image."""
    from PIL import Image, ImageFilter

    with Image.open(io.BytesIO(raw)) as im:
        out = im.filter(ImageFilter.GaussianBlur(radius))
    buf = io.BytesIO()
    out.save(buf, {"jpeg": "JPEG", "webp": "WEBP"}.get(fmt, "PNG"))
    return buf.getvalue()


def image_stream(
    fake: OpenAIWire,
    request: httpx.Request,
    answer: dict[str, Any],
    partial: int,
    *,
    kind: Literal["image_generation", "image_edit"],
    headers: dict[str, str],
) -> httpx.Response:
    """``answer`` (a GPT image model's whole answer, one image) as the events OpenAI
    streams, with ``partial`` partial images first."""
    final = str(answer["data"][0]["b64_json"])
    common = {
        "background": answer["background"],
        "created_at": answer["created"],
        "output_format": answer["output_format"],
        "quality": answer["quality"],
        "size": answer["size"],
    }
    raw = base64.b64decode(final)
    events: list[str] = []
    for index in range(partial):
        radius = 12.0 * (partial - index) / partial
        data = base64.b64encode(_blurred(raw, str(common["output_format"]), radius))
        event = {
            "type": f"{kind}.partial_image",
            "b64_json": data.decode("ascii"),
            "partial_image_index": index,
            **common,
        }
        events.append(sse(event, f"{kind}.partial_image"))
    completed = {"type": f"{kind}.completed", "b64_json": final, **common, "usage": answer["usage"]}
    events.append(sse(completed, f"{kind}.completed"))
    return sse_response(fake, request, events, headers=headers)
