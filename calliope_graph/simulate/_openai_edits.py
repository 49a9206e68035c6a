"""The OpenAI fake's image edits (``POST /v1/images/edits``): a GPT image model drawing a
prompt from reference images (https://platform.openai.com/docs/api-reference/images/createEdit).

The request is multipart: ``image`` (one file) or ``image[]`` (up to 16 files, each PNG,
WebP or JPEG under 50 MB for the GPT image models — the ``openai`` SDK's
``ImageEditParams.image`` and its ``<array>`` files sent as ``image[]``), ``prompt``,
``model`` and the generation fields as form values. The answer has the generations
answer's shape, its ``usage`` counting the input images' tokens.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import httpx

from calliope_graph.simulate._openai_image_stream import image_stream, stream_args

if TYPE_CHECKING:
    from calliope_graph.simulate.openai import OpenAIFake

__all__ = ["images_edits"]

_MAX_IMAGES = 16
_MAX_BYTES = 50 * 1024 * 1024
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")
#: Form fields an edit takes besides the files (ImageEditParams).
_FIELDS = frozenset(
    (
        "prompt",
        "model",
        "n",
        "size",
        "quality",
        "background",
        "input_fidelity",
        "output_compression",
        "output_format",
        "moderation",
        "user",
        "response_format",
        "stream",
        "partial_images",
    )
)
_NUMBERS = ("n", "output_compression", "partial_images")
#: Image tokens an input image costs in the fake's usage (a flat figure per image).
IMAGE_TOKENS = 765


def images_edits(fake: OpenAIFake, request: httpx.Request) -> httpx.Response:
    from calliope_graph.simulate._openai_wire import multipart_parts

    match = re.search(r'boundary="?([^";]+)"?', request.headers.get("content-type", ""))
    if match is None:
        raise fake._reject(
            "Invalid Content-Type header, expected multipart/form-data.", param="image"
        )
    fields: dict[str, Any] = {}
    images: list[bytes] = []
    for name, filename, payload in multipart_parts(request, match.group(1)):
        if name in ("image", "image[]") and filename is not None:
            images.append(payload)
        elif name not in _FIELDS:
            raise fake._reject(
                f"Unrecognized request argument supplied: {name}", param=name, code=None
            )
        else:
            text = payload.decode("utf-8", "replace")
            fields[name] = int(text) if name in _NUMBERS and text.isdigit() else text
            if name == "stream":  # a form's boolean: "true" or "false"
                fields[name] = {"true": True, "false": False}.get(text, text)
    model = str(fields.get("model") or "dall-e-2")
    if not model.startswith("gpt-image"):
        raise fake._reject(
            f"Invalid value: '{model}'. Edits with reference images take a GPT image model.",
            param="model",
            code="invalid_value",
        )
    if not images:
        raise fake._missing("image")
    if len(images) > _MAX_IMAGES:
        raise fake._reject(
            f"Invalid 'image': too many images ({len(images)}); at most {_MAX_IMAGES}.",
            param="image",
            code="array_above_max_length",
        )
    for index, raw in enumerate(images):
        if len(raw) > _MAX_BYTES or not raw.startswith(_SIGNATURES):
            raise fake._reject(
                f"Invalid image file or mode for image {index + 1}, please check your image "
                "file (png, webp or jpg under 50MB).",
                param="image",
                code="invalid_image_file",
            )
    # The rest is validated and drawn as a generation would be, from the same fields.
    fields.pop("input_fidelity", None)  # an edit's own field; the rest are a generation's
    streamed = stream_args(fake, fields, gpt_image=True)
    fields.pop("stream", None)
    fields.pop("partial_images", None)
    generation = httpx.Request(
        "POST", request.url, headers={"content-type": "application/json"}, json=fields
    )
    answer = fake._images(generation)
    if answer.status_code != 200:
        return answer
    body = json.loads(answer.content)
    usage = body.get("usage") or {}
    extra = IMAGE_TOKENS * len(images)
    usage["input_tokens"] = int(usage.get("input_tokens", 0)) + extra
    usage["total_tokens"] = int(usage.get("total_tokens", 0)) + extra
    usage.setdefault("input_tokens_details", {})["image_tokens"] = extra
    if streamed is not None:  # image_edit.* events (simulate/_openai_image_stream.py)
        headers = {
            k: v for k, v in answer.headers.items() if k.lower().startswith(("x-", "openai"))
        }
        return image_stream(fake, request, body, streamed, kind="image_edit", headers=headers)
    return httpx.Response(200, json=body, headers=dict(answer.headers))
