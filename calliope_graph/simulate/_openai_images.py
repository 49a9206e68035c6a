"""The OpenAI fake's image generations (``POST /v1/images/generations``): DALL-E and
GPT image models, ``b64_json`` or ``url`` answers served from a CDN-like host; split out
of :mod:`calliope_graph.simulate.openai` to keep modules under 600 lines."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import httpx

from calliope_graph.simulate._content import (
    digest,
    image_bytes,
)
from calliope_graph.simulate._openai_audio import OpenAIAudio
from calliope_graph.simulate._openai_image_stream import image_stream, stream_args
from calliope_graph.simulate._openai_wire import (
    count_tokens,
    quote_list,
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_CDN = "https://oaidalleapiprodscus.blob.core.windows.net"
_IMAGE_ARGS = _words(
    "prompt model n size quality response_format style user background moderation "
    "output_compression output_format partial_images stream"
)


@dataclass(frozen=True)
class _ImageModel:
    """What an image model accepts (PROVIDERS.md §1.3)."""

    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    max_prompt: int
    max_n: int
    gpt_image: bool = False


_IMAGE_MODELS: dict[str, _ImageModel] = {
    "dall-e-2": _ImageModel(("256x256", "512x512", "1024x1024"), ("standard",), 1000, 10),
    "dall-e-3": _ImageModel(("1024x1024", "1792x1024", "1024x1792"), ("standard", "hd"), 4000, 1),
    "gpt-image-1": _ImageModel(
        ("1024x1024", "1536x1024", "1024x1536", "auto"),
        ("low", "medium", "high", "auto"),
        32000,
        10,
        gpt_image=True,
    ),
}
_IMAGE_MODELS["gpt-image-1-mini"] = _IMAGE_MODELS["gpt-image-1"]
_IMAGE_MODELS["gpt-image-1.5"] = _IMAGE_MODELS["gpt-image-1"]
_IMAGE_MODELS["gpt-image-2"] = _IMAGE_MODELS["gpt-image-1"]


class OpenAIImages(OpenAIAudio):
    """OpenAI's image generations (and the edits, which draw the same way)."""

    # -- images ---------------------------------------------------------------------------
    def _images(self, request: httpx.Request) -> httpx.Response:
        body = self._json_body(request, _IMAGE_ARGS)
        model_name = self._not_retired(body.get("model") or "dall-e-2")
        spec = _IMAGE_MODELS.get(model_name)
        if spec is None:
            raise self._reject(
                f"Invalid value: '{model_name}'. Supported values are: "
                f"{quote_list(['gpt-image-2'])}.",
                param="model",
                code="invalid_value",
            )
        prompt = body.get("prompt")
        if prompt is None:
            raise self._missing("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise self._reject(
                "Invalid 'prompt': empty string. Expected a string with minimum length 1, "
                "but got an empty string instead.",
                param="prompt",
                code="empty_string",
            )
        if len(prompt) > spec.max_prompt:
            raise self._reject(
                f"Invalid 'prompt': string too long. Expected a string with maximum length "
                f"{spec.max_prompt}, but got a string with length {len(prompt)} instead.",
                param="prompt",
                code="string_above_max_length",
            )
        n = self._int_param(body, "n", 1, 1, 10)
        if n > spec.max_n:
            raise self._reject("You must provide n=1 for this model.", param="n")
        size = body.get("size") or ("auto" if spec.gpt_image else "1024x1024")
        if size not in spec.sizes:
            raise self._reject(
                f"Invalid value: '{size}'. Supported values are: {quote_list(spec.sizes)}.",
                param="size",
                code="invalid_value",
            )
        quality = body.get("quality")
        if quality is not None and quality not in spec.qualities:
            raise self._reject(
                f"Invalid value: '{quality}'. Supported values are: {quote_list(spec.qualities)}.",
                param="quality",
                code="invalid_value",
            )
        gpt_only = ("background", "moderation", "output_compression", "output_format")
        for key in gpt_only if not spec.gpt_image else ():
            if key in body:
                raise self._reject(
                    f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter"
                )
        if spec.gpt_image and "response_format" in body:
            raise self._reject(
                "Unknown parameter: 'response_format'.",
                param="response_format",
                code="unknown_parameter",
            )
        if "style" in body and model_name != "dall-e-3":
            raise self._reject(
                "Unknown parameter: 'style'.", param="style", code="unknown_parameter"
            )
        response_format = body.get("response_format") or ("b64_json" if spec.gpt_image else "url")
        if response_format not in ("url", "b64_json"):
            raise self._reject(
                f"Invalid value: '{response_format}'. Supported values are: 'url' and 'b64_json'.",
                param="response_format",
                code="invalid_value",
            )
        output_format = body.get("output_format", "png")
        if output_format not in ("png", "jpeg", "webp"):
            raise self._reject(
                f"Invalid value: '{output_format}'. Supported values are: 'png', 'jpeg', and "
                "'webp'.",
                param="output_format",
                code="invalid_value",
            )

        streamed = stream_args(self, body, gpt_image=spec.gpt_image)
        if self.sim.blocked(self, request, prompt):
            if spec.gpt_image:
                return self._fail(
                    400,
                    "Your request was rejected by the safety system. If you believe this is an "
                    "error, contact us at help.openai.com and include the request ID.",
                    type_="image_generation_user_error",
                    code="moderation_blocked",
                    extra={
                        "moderation_details": {
                            "moderation_stage": "input",
                            "categories": ["violence"],
                        }
                    },
                )
            return self._fail(
                400,
                "Your request was rejected as a result of our safety system. Your prompt may "
                "contain text that is not allowed by our safety system.",
                code="content_policy_violation",
            )

        seq = self._seq()
        width, height = (int(v) for v in ("1024x1024" if size == "auto" else size).split("x"))
        fmt = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[output_format]
        data: list[dict[str, Any]] = []
        for i in range(n):
            drawn = prompt if i == 0 else f"{prompt} ({i + 1})"
            raw = image_bytes(drawn, *self.sim.drawn_size(width, height), fmt)
            item: dict[str, Any] = {}
            if response_format == "b64_json":
                item["b64_json"] = base64.b64encode(raw).decode("ascii")
            else:
                url = self._cdn_url(raw, output_format, seq, i)
                self.sim.serve_download(
                    url,
                    httpx.Response(
                        200,
                        content=raw,
                        headers={
                            "content-type": f"image/{output_format}",
                            "content-length": str(len(raw)),
                            "x-ms-blob-type": "BlockBlob",
                        },
                    ),
                )
                item["url"] = url
            if model_name == "dall-e-3":
                item["revised_prompt"] = f"A detailed illustration of {prompt.strip()}"
            data.append(item)
        out: dict[str, Any] = {"created": int(time.time()), "data": data}
        if spec.gpt_image:
            prompt_tokens = count_tokens(prompt)
            out.update(
                {
                    "background": body.get("background", "opaque"),
                    "output_format": output_format,
                    "quality": quality or "high",
                    "size": f"{width}x{height}",
                    "usage": {
                        "input_tokens": prompt_tokens,
                        "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0},
                        "output_tokens": 4160 * n,
                        "total_tokens": prompt_tokens + 4160 * n,
                    },
                }
            )
        if streamed is not None:  # server-sent partial images (simulate/_openai_image_stream.py)
            headers = self._headers(seq)
            return image_stream(
                self, request, out, streamed, kind="image_generation", headers=headers
            )
        return self._ok(out, seq=seq)

    def _cdn_url(self, raw: bytes, ext: str, seq: int, index: int) -> str:
        name = digest(raw, str(seq), str(index))
        signature = digest("sig", name)[:43]
        return (
            f"{_CDN}/private/org-calliopesim/user-calliopesim/img-{name[:24]}.{ext}"
            f"?st=2025-01-01T00%3A00%3A00Z&se=2025-01-01T01%3A00%3A00Z&sp=r&sv=2024-08-04"
            f"&sr=b&sig={signature}"
        )
