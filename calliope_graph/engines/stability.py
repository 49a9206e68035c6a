"""Stability AI engine: text → image through the v1 generation API or v2beta Stable Image.

The model's ``provider_model_name`` picks the API (PROVIDERS.md §3):

* ``core``, ``ultra``, ``sd3`` (or an SD3 model id such as ``sd3.5-large``, sent as the
  ``model`` field of the ``sd3`` endpoint) → ``POST /v2beta/stable-image/generate/{core|
  ultra|sd3}``, a multipart form. ``width`` x ``height`` become the nearest of Stability's
  nine aspect ratios. The answer is the image bytes (``Accept: image/*``, with
  ``finish-reason`` and ``seed`` headers) or, with the ``accept: application/json``
  parameter, ``{"image", "finish_reason", "seed"}``.
* anything else is a v1 engine id (``stable-diffusion-xl-1024-v1-0``,
  ``stable-diffusion-v1-6``) → ``POST /v1/generation/{engine_id}/text-to-image`` with a
  JSON body (``text_prompts``, ``cfg_scale``, ``steps``, ``seed``...). SDXL engines accept
  only nine sizes, so the requested size is mapped to the nearest of them; other engines
  get multiples of 64. The answer is ``{"artifacts": [{"base64", "seed", "finishReason"}]}``
  (or a raw PNG with ``accept: image/png``).

Model parameters the API takes are passed through (``_params.pick``); ``extra_body`` (a dict)
is merged in last: into the v2beta form fields (each value as text) or the v1 JSON body.

Safety: a v2beta 403 ``content_moderation``, a v1 400 ``invalid_prompts`` and a
``CONTENT_FILTERED`` finish reason (either API) are ContentPolicyError; nothing is saved.
Errors carry Stability's short ``name`` as the code and its request id in the message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import bearer, parse_json, request
from calliope_graph.engines._params import extra_body, form_fields, pick, with_extra_body
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.errors import (
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    ProviderError,
    TransientProviderError,
)
from calliope_graph.media import Image, ImageLimits, prepared

__all__ = [
    "ASPECT_RATIOS",
    "SDXL_SIZES",
    "V2_ENDPOINTS",
    "aspect_ratio",
    "describe",
    "text_to_image",
    "v1_size",
]

log = logging.getLogger("calliope_graph.engines.stability")

PROVIDER = InferenceModelProvider.STABILITY
_NAME = PROVIDER.value
CLIENT_ID = "calliope-graph"

#: v2beta Stable Image generate endpoints.
V2_ENDPOINTS = ("core", "ultra", "sd3")
_V2_ALIASES = {"stable-image-core": "core", "stable-image-ultra": "ultra"}
#: A reference image (sd3 ``mode=image-to-image``, ultra's ``image``): JPEG, PNG or WebP, at
#: least 64 px a side (platform.stability.ai/docs/api-reference, "image"), sent scaled to
#: at most 2048 px; ``strength`` (0: the image as it is, 1: as if none were given) defaults
#: to DEFAULT_STRENGTH, overridable as the ``strength`` model parameter.
REFERENCE_LIMITS = ImageLimits(
    "stability",
    formats=frozenset(("image/jpeg", "image/png", "image/webp")),
    max_side=2048,
    min_side=64,
    max_bytes=10 * 1024 * 1024,
)
DEFAULT_STRENGTH = 0.65
#: The aspect ratios every v2beta generate endpoint accepts.
ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
#: The only sizes SDXL 0.9 / 1.0 accept on v1.
SDXL_SIZES = (
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
#: Side limits of the other v1 engines we know (multiples of 64 within them).
_V1_SIDES: dict[str, tuple[int, int]] = {"stable-diffusion-v1-6": (320, 1536)}
_V1_PROMPT_LIMIT = 2000
_V2_PROMPT_LIMIT = 10000

_V1_PARAMS = frozenset(
    ("cfg_scale", "clip_guidance_preset", "sampler", "seed", "steps", "style_preset", "extras")
)
_V2_PARAMS: dict[str, frozenset[str]] = {
    "core": frozenset(("negative_prompt", "seed", "output_format", "style_preset")),
    "ultra": frozenset(("negative_prompt", "seed", "output_format", "style_preset")),
    "sd3": frozenset(
        ("negative_prompt", "seed", "output_format", "style_preset", "model", "cfg_scale")
    ),
}
_POLICY_NAMES = frozenset(("content_moderation", "invalid_prompts"))


@dataclass(frozen=True)
class _Generated:
    data: bytes
    finish_reason: str
    seed: str | None


# -- sizes -----------------------------------------------------------------------------------
def _wanted(width: int | None, height: int | None) -> tuple[int, int] | None:
    if not width and not height:
        return None
    w = width or height or 1024
    h = height or width or 1024
    return w, h


def _distance(size: tuple[int, int], wanted: tuple[int, int]) -> float:
    shape = abs(math.log((size[0] / size[1]) / (wanted[0] / wanted[1])))
    area = abs(math.log((size[0] * size[1]) / (wanted[0] * wanted[1])))
    return shape * 4 + area


def aspect_ratio(width: int | None, height: int | None) -> str | None:
    """The v2beta ``aspect_ratio`` closest in shape to ``width`` x ``height`` (None when
    neither is given: Stability's default, 1:1)."""
    wanted = _wanted(width, height)
    if wanted is None:
        return None

    def distance(ratio: str) -> float:
        w, h = (int(v) for v in ratio.split(":"))
        return abs(math.log((w / h) / (wanted[0] / wanted[1])))

    return min(ASPECT_RATIOS, key=distance)


def _is_sdxl(engine_id: str) -> bool:
    return engine_id.startswith("stable-diffusion-xl-1024")


def v1_size(engine_id: str, width: int | None, height: int | None) -> tuple[int, int] | None:
    """The ``width``, ``height`` to send to a v1 engine for the wanted size.

    SDXL engines get the allowed size nearest in shape, then area (1024x1024 when no size
    is asked: their 512x512 default is refused). Other engines get each side rounded to a
    multiple of 64, at least 128 (and within the engine's limits when known). None means
    "send nothing" (the engine's default).
    """
    wanted = _wanted(width, height)
    if _is_sdxl(engine_id):
        return min(SDXL_SIZES, key=lambda s: _distance(s, wanted or (1024, 1024)))
    if wanted is None:
        return None
    low, high = _V1_SIDES.get(engine_id, (128, 2048))

    def side(value: int) -> int:
        return min(max(round(value / 64.0) * 64, low), high)

    return side(wanted[0]), side(wanted[1])


# -- errors ----------------------------------------------------------------------------------
def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from ``{"id", "name", "message"}`` (v1) or ``{"id", "name",
    "errors": [...]}`` (v2beta); the code is Stability's ``name``."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, None)
    if not isinstance(body, dict):
        return (str(body)[:300], None)
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        message = "; ".join(str(e) for e in errors[:5])
    else:
        message = str(body.get("message") or response.reason_phrase)
    name = body.get("name")
    code = None if name is None else str(name)
    if code in _POLICY_NAMES:
        message += (
            " — soften the prompt (a censor_text node can rewrite it) or add a fallback edge "
            "on content_policy"
        )
    if body.get("id"):
        message += f" [request id {body['id']}]"
    return (message, code)


def content_policy_hook(
    response: httpx.Response, message: str, code: str | None
) -> type[ProviderError] | None:
    """v2beta's 403 ``content_moderation`` and v1's 400 ``invalid_prompts`` are the safety
    system refusing the prompt, not a key or request problem."""
    if code in _POLICY_NAMES and response.status_code in (400, 403):
        return ContentPolicyError
    return None


def _timed_out_for(response: httpx.Response) -> float | None:
    """Stability's 429 says "you have been timed out for 60 seconds" instead of a header."""
    message, _ = describe(response)
    match = re.search(r"timed out for (\d+(?:\.\d+)?) second", message)
    return float(match.group(1)) if match else None


def _filtered(model: str, seed: str | None) -> ContentPolicyError:
    return ContentPolicyError(
        f"stability ({model}) generated an image but its content filter flagged it "
        f"(finish reason CONTENT_FILTERED, seed {seed or '?'}); nothing was saved. Soften the "
        "prompt (a censor_text node can rewrite it) or add a fallback edge on content_policy.",
        provider=_NAME,
        status=200,
        code="CONTENT_FILTERED",
    )


def _malformed(model: str, what: str, response: httpx.Response) -> TransientProviderError:
    return TransientProviderError(
        f"stability ({model}) answered {what}; it was asked again.",
        provider=_NAME,
        status=response.status_code,
        code="malformed_body",
    )


def _b64(model: str, value: Any, response: httpx.Response) -> bytes:
    if not isinstance(value, str) or not value:
        raise _malformed(model, "without image data", response)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(model, "with image data that is not valid base64", response) from None


def _prompt(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if " " in cut[-40:]:
        cut = cut[: cut.rfind(" ")]
    log.warning(
        "stability: the prompt was %d characters; sent the first %d (the limit is %d)",
        len(text),
        len(cut),
        limit,
    )
    return cut.rstrip()


def _headers(ctx: RunContext, accept: str) -> dict[str, str]:
    return {
        **bearer(ctx.keys.require(PROVIDER)),
        "Accept": accept,
        "Stability-Client-ID": CLIENT_ID,
    }


def _endpoint(model: str) -> tuple[str, str | None] | None:
    """(v2beta endpoint, sd3 model id) for ``model``; None for a v1 engine id."""
    name = _V2_ALIASES.get(model, model)
    if name in V2_ENDPOINTS:
        return name, None
    if name.startswith("sd3"):
        return "sd3", name
    return None


# -- v2beta ----------------------------------------------------------------------------------
async def _v2(
    ctx: RunContext,
    endpoint: str,
    sd3_model: str | None,
    prompt: str,
    config: ModelConfig,
    width: int | None,
    height: int | None,
    reference: Image | None = None,
) -> _Generated:
    params = config.parameters
    model = config.model.provider_model_name
    fields: dict[str, str] = {"prompt": _prompt(prompt, _V2_PROMPT_LIMIT)}
    ratio = params.get("aspect_ratio") or aspect_ratio(width, height)
    if reference is not None:
        ratio = None  # "aspect_ratio: only valid for text-to-image requests"
    if ratio:
        if ratio not in ASPECT_RATIOS:
            raise ConfigurationError(
                f"Stability aspect_ratio {ratio!r} is not one it makes: use one of "
                f"{', '.join(ASPECT_RATIOS)} (or leave it out and give width and height)."
            )
        fields["aspect_ratio"] = str(ratio)
    picked = pick(params, _V2_PARAMS[endpoint])
    fields.update(form_fields({k: v for k, v in sorted(picked.items()) if v != ""}))
    if endpoint == "sd3":
        fields["mode"] = "text-to-image" if reference is None else "image-to-image"
        if sd3_model:
            fields["model"] = sd3_model
    files: dict[str, Any] = {}
    if reference is not None:  # image-to-image: the image and how far to move from it
        sent = await prepared(reference, REFERENCE_LIMITS)
        files["image"] = (f"reference.{sent.mime.split('/')[-1]}", sent.data, sent.mime)
        fields["strength"] = str(params.get("strength", DEFAULT_STRENGTH))
    fields.update(form_fields(extra_body(params, config.slug)))
    accept = str(params.get("accept") or "image/*")
    if accept not in ("image/*", "application/json"):
        raise ConfigurationError(
            f"Stability accept {accept!r} is not supported: use 'image/*' (raw bytes) or "
            "'application/json' (base64)."
        )

    def parse(response: httpx.Response) -> _Generated:
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            body = parse_json(response, _NAME)
            if not isinstance(body, dict):
                raise _malformed(model, "with JSON that is not an object", response)
            data = _b64(model, body.get("image"), response)
            seed = body.get("seed")
            return _Generated(
                data,
                str(body.get("finish_reason") or "SUCCESS"),
                None if seed is None else str(seed),
            )
        if not kind.startswith("image/") or not response.content:
            raise _malformed(
                model, f"with {kind or 'no content type'} instead of an image", response
            )
        return _Generated(
            response.content,
            response.headers.get("finish-reason", "SUCCESS"),
            response.headers.get("seed"),
        )

    log.debug("stability: POST /v2beta/stable-image/generate/%s (%s)", endpoint, model)
    return await request(
        ctx,
        _NAME,
        "POST",
        f"{ctx.keys.base_url(PROVIDER)}/v2beta/stable-image/generate/{endpoint}",
        parse=parse,
        headers=_headers(ctx, accept),
        files={**{key: (None, value) for key, value in fields.items()}, **files},
        describe=describe,
        hook=content_policy_hook,
        retry_after=_timed_out_for,
    )


# -- v1 --------------------------------------------------------------------------------------
async def _v1(
    ctx: RunContext,
    engine_id: str,
    prompt: str,
    config: ModelConfig,
    width: int | None,
    height: int | None,
) -> _Generated:
    params = config.parameters
    prompts: list[dict[str, Any]] = [{"text": _prompt(prompt, _V1_PROMPT_LIMIT), "weight": 1.0}]
    negative = params.get("negative_prompt")
    if negative:
        prompts.append({"text": _prompt(str(negative), _V1_PROMPT_LIMIT), "weight": -1.0})
    body: dict[str, Any] = {"text_prompts": prompts, "samples": 1, **pick(params, _V1_PARAMS)}
    size = v1_size(engine_id, width, height)
    if size is not None:
        body["width"], body["height"] = size
    body = with_extra_body(body, params, config.slug)
    accept = str(params.get("accept") or "application/json")
    if accept not in ("application/json", "image/png"):
        raise ConfigurationError(
            f"Stability v1 accept {accept!r} is not supported: use 'application/json' "
            "(base64 artifacts) or 'image/png' (raw bytes)."
        )

    def parse(response: httpx.Response) -> _Generated:
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "image/png":
            return _Generated(
                response.content,
                response.headers.get("finish-reason", "SUCCESS"),
                response.headers.get("seed"),
            )
        answer = parse_json(response, _NAME)
        artifacts = answer.get("artifacts") if isinstance(answer, dict) else None
        if not isinstance(artifacts, list):
            raise _malformed(engine_id, "without an artifacts list", response)
        if not artifacts or not isinstance(artifacts[0], dict):
            raise EmptyOutputError(
                f"stability ({engine_id}) returned no image for the prompt: try again or add "
                "a fallback edge on 'empty'."
            )
        artifact = artifacts[0]
        reason = str(artifact.get("finishReason") or "SUCCESS")
        seed = artifact.get("seed")
        data = b"" if reason != "SUCCESS" else _b64(engine_id, artifact.get("base64"), response)
        return _Generated(data, reason, None if seed is None else str(seed))

    log.debug("stability: POST /v1/generation/%s/text-to-image", engine_id)
    return await request(
        ctx,
        _NAME,
        "POST",
        f"{ctx.keys.base_url(PROVIDER)}/v1/generation/{engine_id}/text-to-image",
        parse=parse,
        headers=_headers(ctx, accept),
        json_body=body,
        describe=describe,
        hook=content_policy_hook,
        retry_after=_timed_out_for,
    )


@register(Conversion.TEXT_TO_IMAGE, PROVIDER)
async def text_to_image(
    ctx: RunContext,
    prompt: str,
    config: ModelConfig,
    *,
    output_name: str,
    width: int | None = None,
    height: int | None = None,
    seed: int | None = None,
    reference_images: Sequence[Image] = (),
) -> Image:
    """Draw ``prompt`` with a Stability model and save it as ``output_name`` (the extension
    follows the real format). See the module docstring for the two APIs. The first of
    ``reference_images`` makes sd3 and ultra draw image-to-image from it."""
    if seed is not None:  # the seed port: the request's ``seed`` field
        config = config.with_parameters(seed=seed)
    model = config.model.provider_model_name
    v2 = _endpoint(model)
    if v2 is not None:
        reference = reference_images[0] if reference_images else None
        generated = await _v2(ctx, v2[0], v2[1], prompt, config, width, height, reference)
    else:
        generated = await _v1(ctx, model, prompt, config, width, height)
    if generated.finish_reason == "CONTENT_FILTERED":
        raise _filtered(model, generated.seed)
    if generated.finish_reason != "SUCCESS":
        raise TransientProviderError(
            f"stability ({model}) failed to generate the image (finish reason "
            f"{generated.finish_reason}); run the node again or add a fallback edge on "
            "transient.",
            provider=_NAME,
            status=200,
            code=generated.finish_reason,
        )
    log.info("stability (%s): image generated (seed %s)", model, generated.seed)
    return await ctx.store.asave_image(output_name, generated.data)
