"""A faithful offline fake of Stability AI's image generation APIs (PROVIDERS.md §3).

Served on ``api.stability.ai`` with ``Authorization: Bearer <key>``:

* ``POST /v1/generation/{engine_id}/text-to-image`` (JSON) for ``stable-diffusion-xl-1024-
  v1-0``, ``stable-diffusion-xl-1024-v0-9`` and ``stable-diffusion-v1-6``. Bodies are
  checked as v1 does (``text_prompts``, sizes in multiples of 64 and SDXL's nine allowed
  sizes, ``cfg_scale``, ``steps``, ``samples``, ``seed``, the enums) with v1's envelope
  ``{"id", "name", "message"}``. ``Accept: application/json`` answers ``{"artifacts":
  [{"base64", "seed", "finishReason"}]}``; ``Accept: image/png`` the raw PNG with
  ``Finish-Reason`` and ``Seed`` headers.
* ``POST /v2beta/stable-image/generate/{core|ultra|sd3}`` (multipart/form-data only):
  ``prompt``, ``negative_prompt``, ``aspect_ratio``, ``seed``, ``output_format``,
  ``style_preset`` and for sd3 ``model``, ``mode``, ``cfg_scale``; errors in v2's envelope
  ``{"id", "name", "errors": [...]}``. ``Accept: image/*`` answers the image bytes with
  ``finish-reason``, ``seed`` and ``x-request-id`` headers; ``Accept: application/json``
  answers ``{"image", "finish_reason", "seed"}``.
* ``GET /v1/engines/list``.

Images are real PNG/JPEG/WebP files drawn from the prompt and seed, sized as each API
would (v1: as asked; v2beta: by aspect ratio, about one megapixel).

Content policy (a ``content_policy`` fault matching the prompt) answers the way each API is
best known for: v2beta refuses before generating (403 ``content_moderation``), v1 generates
and flags the result (200, ``finishReason: CONTENT_FILTERED``, a blurred image).
``sim.state("stability")["filter"] = "prompt"`` or ``"output"`` forces one form for both
APIs (v1's prompt form is 400 ``invalid_prompts``; v2beta's output form is 200 with
``finish-reason: CONTENT_FILTERED``). The 401 bodies and v1's 429 body are **unconfirmed**
(PROVIDERS.md) and follow each version's envelope.

Endpoint names for counting: ``v1.text_to_image``, ``v2.generate.core``,
``v2.generate.ultra``, ``v2.generate.sd3``, ``v1.engines.list``.
"""

from __future__ import annotations

import base64
import io
import json
import re
from contextvars import ContextVar
from typing import Any

import httpx
from PIL import ImageFilter

from calliope_graph.media import pil_open
from calliope_graph.simulate._content import digest, image_bytes
from calliope_graph.simulate._core import (
    AuthCheck,
    Credential,
    Failure,
    FaultErrors,
    ProviderFake,
    Reject,
)
from calliope_graph.simulate._openai_wire import multipart_form

__all__ = ["ENGINES", "FAKE", "V2_SIZES", "StabilityFake"]

#: v1 engines served, with their description (GET /v1/engines/list).
ENGINES: dict[str, str] = {
    "stable-diffusion-xl-1024-v1-0": "Stable Diffusion XL v1.0",
    "stable-diffusion-xl-1024-v0-9": "Stable Diffusion XL v0.9",
    "stable-diffusion-v1-6": "Stable Diffusion v1.6",
}
_SDXL_SIZES = (
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
)
#: Output size of a v2beta generation per aspect ratio (about one megapixel).
V2_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "5:4": (1152, 896),
    "4:5": (896, 1152),
}
_STYLES = (
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
)
_SAMPLERS = (
    "DDIM",
    "DDPM",
    "K_DPMPP_2M",
    "K_DPMPP_2S_ANCESTRAL",
    "K_DPM_2",
    "K_DPM_2_ANCESTRAL",
    "K_EULER",
    "K_EULER_ANCESTRAL",
    "K_HEUN",
    "K_LMS",
)
_CLIP = ("FAST_BLUE", "FAST_GREEN", "NONE", "SIMPLE", "SLOW", "SLOWER", "SLOWEST")
_SD3_MODELS = (
    "sd3.5-large",
    "sd3.5-large-turbo",
    "sd3.5-medium",
    "sd3.5-flash",
    "sd3-large",
    "sd3-large-turbo",
    "sd3-medium",
)
_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_V2_LIMIT = 10 * 1024 * 1024
_MODERATION = (
    "Your request was flagged by our content moderation system, as a result your request was "
    "denied and you were not charged."
)
_RATE_LIMIT = (
    "You have exceeded the rate limit of 150 requests within a 10 second period, and have "
    "been timed out for 60 seconds."
)

#: Which API the request being answered speaks ("v1" or "v2"), for ``envelope()``.
_api: ContextVar[str] = ContextVar("stability_api", default="v2")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_UNAVAILABLE = Failure(
    503,
    "service_unavailable",
    "The service is temporarily unavailable, please try again later.",
)


class StabilityFake(ProviderFake):
    """Stability's REST API on ``api.stability.ai`` (v1 generation and v2beta Stable Image)."""

    name = "stability"
    endpoints = (
        "v1.text_to_image",
        "v2.generate.core",
        "v2.generate.ultra",
        "v2.generate.sd3",
        "v1.engines.list",
    )
    hosts = ("api.stability.ai",)

    def endpoint(self, request: httpx.Request) -> str:
        path = request.url.path.rstrip("/")
        api = "v1" if path.startswith("/v1/") else "v2"
        _api.set(api)
        if re.fullmatch(r"/v1/generation/[^/]+/text-to-image", path):
            return "v1.text_to_image"
        match = re.fullmatch(r"/v2beta/stable-image/generate/([^/]+)", path)
        if match:
            return f"v2.generate.{match.group(1)}"
        if path == "/v1/engines/list":
            return "v1.engines.list"
        return path.strip("/").replace("/", ".") or "root"

    # -- wire ------------------------------------------------------------------------------
    def _request_id(self) -> str:
        state = self.sim.state(self.name)
        state["seq"] = int(state.get("seq", 0)) + 1
        return digest("stability-request", str(self.sim.seed), str(state["seq"]))[:32]

    def _fail(
        self,
        status: int,
        name: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        api: str | None = None,
    ) -> httpx.Response:
        request_id = self._request_id()
        if (api or _api.get()) == "v1":
            body: dict[str, Any] = {
                "id": f"{request_id[:8]}-{request_id[8:12]}-{request_id[12:16]}-"
                f"{request_id[16:20]}-{request_id[20:32]}",
                "name": name,
                "message": message,
            }
        else:
            body = {"id": request_id, "name": name, "errors": [message]}
        return httpx.Response(
            status, json=body, headers={"x-request-id": request_id, **(headers or {})}
        )

    def _reject(self, status: int, name: str, message: str) -> Reject:
        return Reject(self._fail(status, name, message))

    auth = AuthCheck(
        credentials=(Credential("authorization", schemes=("bearer",), other_scheme="invalid"),),
        missing=Failure(401, "unauthorized", "missing authorization header"),
        invalid=Failure(
            401,
            "unauthorized",
            "invalid API key: check it at https://platform.stability.ai/account/keys",
        ),
    )
    # Stability has no 529; v1 names a server error ``server_error``, v2 ``internal_error``.
    errors = FaultErrors(
        rate_limit=Failure(429, "rate_limit_exceeded", _RATE_LIMIT),
        server_error=Failure(
            500,
            "internal_error",
            "An unexpected server error has occurred, please try again later.",
            extra={"v1_code": "server_error"},
        ),
        unavailable=_UNAVAILABLE,
        overloaded=_UNAVAILABLE,
    )

    # Over a configured limit: 429, then every request is refused for 60 s (``block=``).
    rate_limited = Failure(
        429,
        "rate_limit_exceeded",
        "You have exceeded the rate limit of {limit} {unit} within a {window_seconds} second "
        "period, and have been timed out for {retry_after} seconds.",
    )
    limit_block = 60.0

    def envelope(self, failure: Failure) -> httpx.Response:
        """In the envelope of the API version the request's path is on (set by ``endpoint``)."""
        name = failure.code or "error"
        if _api.get() == "v1":
            name = str(failure.extra.get("v1_code", name))
        return self._fail(failure.status, name, failure.message, headers=dict(failure.headers))

    def _prompt(self, request: httpx.Request) -> str | None:
        endpoint = self.endpoint(request)
        if endpoint == "v1.text_to_image":
            try:
                body = json.loads(request.content or b"{}")
                prompts = body.get("text_prompts") or []
                texts = [
                    str(p.get("text", ""))
                    for p in prompts
                    if isinstance(p, dict) and (_number(p.get("weight", 1.0)) or 0.0) >= 0
                ]
            except (ValueError, AttributeError):
                return None
            return " ".join(texts) or None
        if endpoint.startswith("v2.generate."):
            try:
                fields, _ = multipart_form(request)
            except ValueError:
                return None
            return fields.get("prompt")
        return None

    def _filter_mode(self, api: str) -> str:
        forced = self.sim.state(self.name).get("filter")
        if forced in ("prompt", "output"):
            return str(forced)
        return "output" if api == "v1" else "prompt"

    # -- requests --------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.rstrip("/")
        try:
            match = re.fullmatch(r"/v1/generation/([^/]+)/text-to-image", path)
            if match:
                self._method(request, "POST")
                return self._v1(request, match.group(1))
            match = re.fullmatch(r"/v2beta/stable-image/generate/([^/]+)", path)
            if match:
                self._method(request, "POST")
                return self._v2(request, match.group(1))
            if path == "/v1/engines/list":
                self._method(request, "GET")
                return httpx.Response(
                    200,
                    json=[
                        {"description": f"Stability-AI {label}", "id": engine, "name": label,
                         "type": "PICTURE"}
                        for engine, label in ENGINES.items()
                    ],
                )  # fmt: skip
        except Reject as rejected:
            return rejected.response
        return self._fail(404, "not_found", f"The requested path {path} was not found.")

    def _method(self, request: httpx.Request, method: str) -> None:
        if request.method != method:
            raise self._reject(405, "method_not_allowed", f"{request.method} is not allowed.")

    # v1 -------------------------------------------------------------------------------------
    def _v1(self, request: httpx.Request, engine: str) -> httpx.Response:
        if engine not in ENGINES:
            raise self._reject(
                404, "not_found", f"The specified engine (ID {engine}) was not found."
            )
        accept = request.headers.get("accept", "application/json").split(";")[0].strip()
        if accept in ("*/*", ""):
            accept = "application/json"
        if accept not in ("application/json", "image/png"):
            raise self._reject(
                400, "bad_request", f"accept: must be application/json or image/png, not {accept}"
            )
        try:
            body = json.loads(request.content or b"")
        except (ValueError, UnicodeDecodeError):
            raise self._reject(400, "bad_request", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise self._reject(400, "bad_request", "The request body must be a JSON object.")
        prompts = body.get("text_prompts")
        if not isinstance(prompts, list) or not prompts:
            raise self._reject(
                400, "invalid_prompts", "text_prompts: at least one prompt is required"
            )
        for index, item in enumerate(prompts):
            text = item.get("text") if isinstance(item, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise self._reject(
                    400, "invalid_prompts", f"text_prompts[{index}].text: cannot be empty"
                )
            if len(text) > 2000:
                raise self._reject(
                    400,
                    "invalid_prompts",
                    f"text_prompts[{index}].text: must be at most 2000 characters",
                )
            if "weight" in item and _number(item["weight"]) is None:
                raise self._reject(
                    400, "bad_request", f"text_prompts[{index}].weight: must be a number"
                )
        width = self._int(body, "width", 512)
        height = self._int(body, "height", 512)
        self._v1_size(engine, width, height)
        self._range(body, "cfg_scale", 0, 35)
        self._range(body, "steps", 10, 50)
        samples = int(self._range(body, "samples", 1, 10) or 1)
        seed = int(self._range(body, "seed", 0, 4294967295) or 0)
        for key, allowed in (
            ("sampler", _SAMPLERS),
            ("style_preset", _STYLES),
            ("clip_guidance_preset", _CLIP),
        ):
            value = body.get(key)
            if value is not None and value not in allowed:
                raise self._reject(
                    400, "bad_request", f"{key}: must be one of {', '.join(allowed)}"
                )
        if accept == "image/png" and samples > 1:
            raise self._reject(
                400,
                "invalid_samples",
                "samples: must be 1 when requesting image/png; use application/json for more",
            )
        prompt = self._prompt(request) or ""
        filtered = self.sim.blocked(self, request, prompt)
        if filtered and self._filter_mode("v1") == "prompt":
            raise self._reject(
                400,
                "invalid_prompts",
                "One or more prompts contains filtered words.",
            )
        seed = seed or int(digest("stability-seed", prompt, engine)[:8], 16)
        artifacts: list[dict[str, Any]] = []
        for index in range(samples):
            raw = self._draw(
                f"{prompt}|{seed + index}",
                *self.sim.drawn_size(width, height),
                "PNG",
                blur=filtered,
            )
            artifacts.append(
                {
                    "base64": base64.b64encode(raw).decode("ascii"),
                    "seed": seed + index,
                    "finishReason": "CONTENT_FILTERED" if filtered else "SUCCESS",
                }
            )
        if accept == "image/png":
            first = artifacts[0]
            return httpx.Response(
                200,
                content=base64.b64decode(first["base64"]),
                headers={
                    "content-type": "image/png",
                    "finish-reason": str(first["finishReason"]),
                    "seed": str(first["seed"]),
                },
            )
        return httpx.Response(200, json={"artifacts": artifacts})

    def _int(self, body: dict[str, Any], key: str, default: int) -> int:
        value = body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._reject(400, "invalid_height_or_width", f"{key}: must be an integer")
        return value

    def _range(self, body: dict[str, Any], key: str, low: float, high: float) -> float | None:
        if key not in body or body[key] is None:
            return None
        value = _number(body[key])
        if value is None or not low <= value <= high or isinstance(body[key], str):
            raise self._reject(
                400, "bad_request", f"{key}: must be a number from {low:g} to {high:g}"
            )
        return value

    def _v1_size(self, engine: str, width: int, height: int) -> None:
        if engine.startswith("stable-diffusion-xl-1024"):
            if (width, height) not in _SDXL_SIZES:
                allowed = ", ".join(f"{w}x{h}" for w, h in _SDXL_SIZES)
                raise self._reject(
                    400,
                    "invalid_sdxl_v1_dimensions",
                    f"For the SDXL 1024 engines, the allowed dimensions are {allowed}; "
                    f"got {width}x{height}.",
                )
            return
        if width % 64 or height % 64 or width < 128 or height < 128:
            raise self._reject(
                400,
                "invalid_height_or_width",
                "height and width must be specified in increments of 64, minimum 128",
            )
        if not (320 <= width <= 1536 and 320 <= height <= 1536):
            raise self._reject(
                400,
                "invalid_height_or_width",
                f"height and width must be between 320 and 1536 for {engine}; got "
                f"{width}x{height}.",
            )

    # v2beta ---------------------------------------------------------------------------------
    def _v2(self, request: httpx.Request, endpoint: str) -> httpx.Response:
        if endpoint not in ("core", "ultra", "sd3"):
            raise self._reject(404, "not_found", f"stable-image/generate/{endpoint} not found")
        if len(request.content) > _V2_LIMIT:
            raise self._reject(
                413, "payload_too_large", "body: payloads cannot be larger than 10MiB in size"
            )
        accept = request.headers.get("accept", "image/*").split(";")[0].strip().lower()
        if accept in ("*/*", ""):
            accept = "image/*"
        if accept != "application/json" and not accept.startswith("image/"):
            raise self._reject(
                400, "bad_request", "accept: must be one of application/json, image/*"
            )
        try:
            fields, files = multipart_form(request)
        except ValueError:
            raise self._reject(
                400,
                "bad_request",
                "content-type: the request body must be multipart/form-data",
            ) from None
        prompt = fields.get("prompt", "")
        if not prompt.strip():
            raise self._reject(400, "bad_request", "prompt: is required")
        if len(prompt) > 10000:
            raise self._reject(400, "bad_request", "prompt: must be at most 10000 characters")
        if len(fields.get("negative_prompt", "")) > 10000:
            raise self._reject(
                400, "bad_request", "negative_prompt: must be at most 10000 characters"
            )
        ratio = fields.get("aspect_ratio", "1:1")
        if ratio not in V2_SIZES:
            raise self._reject(
                400, "bad_request", f"aspect_ratio: must be one of {', '.join(V2_SIZES)}"
            )
        formats = ("png", "jpeg") if endpoint == "sd3" else ("png", "jpeg", "webp")
        output_format = fields.get("output_format", "png")
        if output_format not in formats:
            raise self._reject(
                400, "bad_request", f"output_format: must be one of {', '.join(formats)}"
            )
        seed_text = fields.get("seed", "0")
        if not seed_text.isdigit() or int(seed_text) > 4294967294:
            raise self._reject(400, "bad_request", "seed: must be an integer from 0 to 4294967294")
        style = fields.get("style_preset")
        if style is not None and style not in _STYLES:
            raise self._reject(
                400, "bad_request", f"style_preset: must be one of {', '.join(_STYLES)}"
            )
        if endpoint == "sd3":
            self._sd3(fields, files)
        elif endpoint == "ultra" and ("image" in files) != ("strength" in fields):
            raise self._reject(400, "bad_request", "strength: is required when image is provided")
        filtered = self.sim.blocked(self, request, prompt)
        if filtered and self._filter_mode("v2") == "prompt":
            raise self._reject(403, "content_moderation", _MODERATION)
        seed = int(seed_text) or int(digest("stability-seed", prompt, endpoint)[:8], 16)
        width, height = V2_SIZES[ratio]
        raw = self._draw(
            f"{prompt}|{seed}",
            *self.sim.drawn_size(width, height),
            _FORMATS[output_format],
            blur=filtered,
        )
        reason = "CONTENT_FILTERED" if filtered else "SUCCESS"
        request_id = self._request_id()
        if accept == "application/json":
            return httpx.Response(
                200,
                content=json.dumps(
                    {
                        "image": base64.b64encode(raw).decode("ascii"),
                        "finish_reason": reason,
                        "seed": seed,
                    }
                ).encode(),
                headers={
                    "content-type": f"application/json; type=image/{output_format}",
                    "x-request-id": request_id,
                },
            )
        return httpx.Response(
            200,
            content=raw,
            headers={
                "content-type": f"image/{output_format}",
                "finish-reason": reason,
                "seed": str(seed),
                "x-request-id": request_id,
            },
        )

    def _sd3(self, fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> None:
        model = fields.get("model", "sd3.5-large")
        if model not in _SD3_MODELS:
            raise self._reject(
                400, "bad_request", f"model: must be one of {', '.join(_SD3_MODELS)}"
            )
        mode = fields.get("mode", "text-to-image")
        if mode not in ("text-to-image", "image-to-image"):
            raise self._reject(
                400, "bad_request", "mode: must be one of text-to-image, image-to-image"
            )
        if mode == "image-to-image" and ("image" not in files or "strength" not in fields):
            raise self._reject(
                400, "bad_request", "image, strength: are required for image-to-image"
            )
        if "cfg_scale" in fields:
            value = _number(fields["cfg_scale"])
            if value is None or not 1 <= value <= 10:
                raise self._reject(400, "bad_request", "cfg_scale: must be between 1 and 10")

    @staticmethod
    def _draw(seed: str, width: int, height: int, fmt: str, *, blur: bool) -> bytes:
        raw = image_bytes(seed, width, height, fmt)
        if not blur:
            return raw
        with pil_open(io.BytesIO(raw)) as im:
            blurred = im.convert("RGB").filter(ImageFilter.GaussianBlur(radius=24))
        buf = io.BytesIO()
        blurred.save(buf, fmt)
        return buf.getvalue()


FAKE = StabilityFake
