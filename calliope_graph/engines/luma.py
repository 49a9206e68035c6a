"""Luma engines: text → image (Photon) and image + text → video (Ray) through the Dream
Machine API.

``POST {base}/generations/image`` (``photon-1``, ``photon-flash-1``) and ``POST
{base}/generations/video`` (``ray-2``, ``ray-flash-2``; the path the ``lumaai`` SDK's
``generations.create`` posts to, lumalabs/lumaai-python ``api.md``) start a generation with
``Authorization: Bearer <LUMAAI_API_KEY>``; ``GET {base}/generations/{id}`` is polled through
``queued`` and ``dreaming`` until ``completed`` (``assets.image`` / ``assets.video``, then
downloaded into the store) or ``failed`` (``failure_reason``), for at most
``ctx.poll.timeout`` seconds (``poll_timeout`` / ``poll_interval`` parameters). Luma has no
cancel (``DELETE /generations/{id}`` deletes a generation), so past the bound the
ProviderTimeoutError names the generation id, which can still be fetched later. ``{base}``
is ``LUMAAI_BASE_URL`` (default ``https://api.lumalabs.ai/dream-machine/v1``), as the SDK
reads it.

**The start frame must be a public URL.** Luma takes keyframe images only as URLs it
downloads itself ("You should upload and use your own cdn image urls, currently this is the
only way to pass an image", docs.lumalabs.ai/docs/video-generation): no data URIs, no
uploads. Set the ``image_base_url`` model parameter to the https URL at which the output
directory (the media store's root) is served, e.g. a bucket or CDN synced from it: the image
``<root>/frames/a.png`` is then sent as ``<image_base_url>/frames/a.png`` (an image outside
the store, such as a flow input, is first copied into ``<root>/frames/``). Without it the
node fails before anything is paid for, saying so (and ``validate`` refuses the flow).

Parameters: ``aspect_ratio`` (default: the allowed ratio nearest the asked size or the
image's shape), ``format`` (``jpg``/``png``) for images; ``duration`` (``5s``/``9s``, or 5 /
9), ``resolution`` (``540p``...``4k``), ``loop`` for videos; ``extra_body`` (a dict) is
merged into the request last.

``failure_reason`` maps to the taxonomy (docs.lumalabs.ai/docs/errors): moderation
("blacklisted words", "moderation failed") is ContentPolicyError, "Failed to read user input
frames" (Luma could not download the image) InvalidRequestError, anything else
TransientProviderError (failed generations are refunded, docs.lumalabs.ai/docs/faq).

Luma publishes no list-models endpoint (the lumaai SDK's ``api.md`` lists generations,
concepts, camera motions, ping and credits only), so there is no ``list_models`` here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import bearer, parse_json, redact, request
from calliope_graph.engines._params import pick, with_extra_body
from calliope_graph.engines._poll import Waiting, poll_bounds, poll_job
from calliope_graph.engines._registry import Conversion, register, register_check
from calliope_graph.errors import (
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    MediaError,
    ProviderError,
    TransientProviderError,
)
from calliope_graph.media import Image, Video

__all__ = [
    "ASPECT_RATIOS",
    "MAX_IMAGE_BYTES",
    "MAX_VIDEO_BYTES",
    "check_video_config",
    "describe",
    "error_for_failure",
    "image_and_text_to_video",
    "image_url",
    "nearest_ratio",
    "text_to_image",
]

log = logging.getLogger("calliope_graph.engines.luma")

PROVIDER = InferenceModelProvider.LUMA
_NAME = PROVIDER.value
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_VIDEO_BYTES = 500 * 1024 * 1024
#: The aspect ratios Photon and Ray take (lumaai: ``VideoCreateParams.aspect_ratio``).
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
_WAITING = ("queued", "dreaming")
_IMAGE_FIELDS = ("aspect_ratio", "format", "image_ref", "style_ref", "character_ref")
_VIDEO_FIELDS = ("aspect_ratio", "duration", "resolution", "loop", "concepts")
_POLICY = ("blacklisted", "moderation")


def nearest_ratio(width: int, height: int) -> str:
    """The allowed aspect ratio closest to ``width`` x ``height``."""

    def distance(ratio: str) -> float:
        w, h = (int(v) for v in ratio.split(":"))
        return abs(math.log((w / h) / (width / height)))

    return min(ASPECT_RATIOS, key=distance)


def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from Luma's ``{"detail": "..."}`` (or a list of validation items)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, None)
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
                parts.append(f"{loc or '(body)'}: {item.get('msg', '?')}")
        return ("; ".join(parts) or response.reason_phrase, None)
    return (str(detail or response.reason_phrase)[:400], None)


def error_for_failure(generation_id: str, reason: str) -> ProviderError:
    """The taxonomy error for a ``failed`` generation's ``failure_reason``."""
    reason = reason.strip() or "no reason given"
    text = f"luma generation {generation_id} failed: {reason[:300]}"
    lower = reason.lower()
    if any(word in lower for word in _POLICY):
        return ContentPolicyError(
            f"{text} — Luma's moderation refused the prompt or image; change it (a "
            "censor_text node can rewrite the prompt) or add a fallback edge on content_policy.",
            provider=_NAME,
            code="moderation",
        )
    if "input frames" in lower or "keyframe" in lower:
        return InvalidRequestError(
            f"{text} — Luma could not download the start image: image_base_url must point at "
            "a public https copy of the output directory.",
            provider=_NAME,
            code="input_frames",
        )
    return TransientProviderError(
        f"{text} — failed generations are refunded; run the node again or add a fallback edge "
        "on transient.",
        provider=_NAME,
        code="failed",
    )


def _image_base_problem(config: ModelConfig, served: str = "the output directory") -> str | None:
    base = config.parameters.get("image_base_url")
    if not base:
        return (
            f"Luma takes the start frame only as a public https URL, not as a file or a data "
            f"URI: set the image_base_url model parameter of {config.slug!r} to the URL where "
            f"{served} is served (e.g. https://media.example.com/story/), or use a video "
            "engine that takes the image itself (fal, runway)"
        )
    if not str(base).startswith("https://"):
        return (
            f"image_base_url of {config.slug!r} is {str(base)!r}: Luma downloads keyframes "
            "over https only; give an https:// URL"
        )
    return None


@register_check(Conversion.IMAGE_AND_TEXT_TO_VIDEO, PROVIDER)
def check_video_config(config: ModelConfig) -> str | None:
    """Validation's check of a Ray config: the public image URL it cannot run without."""
    return _image_base_problem(config)


async def _in_store(ctx: RunContext, image: Image) -> Image:
    """``image`` itself when it is in the output directory (the directory image_base_url
    serves), else a copy in its ``frames/`` folder (named by its content, so a retry or a
    resume reuses it): a flow input elsewhere on disk would otherwise be sent as a URL
    naming a file the served directory does not hold."""
    path = Path(image.path).resolve()
    if path.is_relative_to(ctx.store.root.resolve()):
        return image
    data = await asyncio.to_thread(image.read_bytes)
    name = ctx.store.unique_name(
        f"frames/{path.stem}", path.suffix or ".png", seed=hashlib.sha256(data).hexdigest()
    )
    target = ctx.store.path_for(name)
    if not target.exists():
        await asyncio.to_thread(ctx.store.write_bytes, name, data)
    return image.model_copy(update={"path": str(target)})


def image_url(ctx: RunContext, image: Image, config: ModelConfig) -> str:
    """The public URL Luma downloads ``image`` from (see the module docstring)."""
    problem = _image_base_problem(config, f"the output directory {str(ctx.store.root)!r}")
    if problem:
        raise ConfigurationError(f"{problem}.")
    base = str(config.parameters["image_base_url"])
    path = Path(image.path).resolve()
    try:
        relative = path.relative_to(ctx.store.root).as_posix()
    except ValueError:
        relative = path.name
    return f"{base.rstrip('/')}/{quote(relative)}"


# -- requests ----------------------------------------------------------------------------------
def _generation(response: httpx.Response) -> dict[str, Any]:
    answer = parse_json(response, _NAME)
    if (
        not isinstance(answer, dict)
        or not isinstance(answer.get("id"), str)
        or not isinstance(answer.get("state"), str)
    ):
        raise TransientProviderError(
            f"luma answered without a generation id and state ({response.text[:120]!r}); it "
            "was asked again.",
            provider=_NAME,
            status=response.status_code,
            code="malformed_body",
        )
    return answer


async def _create(ctx: RunContext, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return await request(
        ctx,
        _NAME,
        "POST",
        f"{ctx.keys.base_url(PROVIDER)}/generations/{kind}",
        parse=_generation,
        headers=bearer(ctx.keys.require(PROVIDER)),
        json_body=body,
        describe=describe,
    )


async def _get(ctx: RunContext, generation_id: str) -> dict[str, Any]:
    return await request(
        ctx,
        _NAME,
        "GET",
        f"{ctx.keys.base_url(PROVIDER)}/generations/{generation_id}",
        parse=_generation,
        headers=bearer(ctx.keys.require(PROVIDER)),
        describe=describe,
    )


async def _generate(
    ctx: RunContext, kind: str, body: dict[str, Any], config: ModelConfig
) -> tuple[str, dict[str, Any]]:
    """Create a generation, poll it to its end; (id, assets) or the taxonomy error."""
    interval, bound = poll_bounds(ctx, config.parameters)  # before anything is paid for
    body = with_extra_body(body, config.parameters, config.slug)
    created = await _create(ctx, kind, body)
    generation_id = str(created["id"])
    log.info("luma: generation %s started (%s)", generation_id, body.get("model"))

    async def check() -> dict[str, Any] | Waiting:
        generation = await _get(ctx, generation_id)
        state = str(generation["state"])
        if state in _WAITING:
            return Waiting(state)
        return generation

    generation = await poll_job(
        ctx,
        check,
        provider=_NAME,
        what="generation",
        job_id=generation_id,
        label=str(body.get("model")),
        interval=interval,
        timeout=bound,
        first=Waiting(str(created["state"])) if created["state"] in _WAITING else created,
        advice=f"it may still finish: GET /generations/{generation_id} later, raise the "
        "poll_timeout model parameter (or PollSettings.timeout), or add a fallback edge on "
        "timeout",
    )
    state = str(generation["state"])
    if state == "failed":
        reason = redact(str(generation.get("failure_reason") or ""), ctx.keys.secrets())
        raise error_for_failure(generation_id, reason)
    if state != "completed":
        raise TransientProviderError(
            f"luma generation {generation_id} ended in an unknown state {state!r}: run the "
            "node again, and report it if it persists.",
            provider=_NAME,
            code=state,
        )
    assets = generation.get("assets")
    return generation_id, assets if isinstance(assets, dict) else {}


def _asset(assets: dict[str, Any], key: str, generation_id: str) -> str:
    url = assets.get(key)
    if not isinstance(url, str) or not url:
        raise EmptyOutputError(
            f"luma generation {generation_id} completed without an {key} URL: run the node "
            "again or add a fallback edge on 'empty'."
        )
    return url


# -- engines -----------------------------------------------------------------------------------
@register(Conversion.TEXT_TO_IMAGE, PROVIDER)
async def text_to_image(
    ctx: RunContext,
    prompt: str,
    config: ModelConfig,
    *,
    output_name: str,
    width: int | None = None,
    height: int | None = None,
) -> Image:
    """Draw ``prompt`` with Photon and save the image as ``output_name`` (the extension
    follows the real format). ``width`` x ``height`` choose the nearest aspect ratio."""
    body: dict[str, Any] = {"model": config.model.provider_model_name, "prompt": prompt}
    if width and height:
        body["aspect_ratio"] = nearest_ratio(width, height)
    body.update(pick(config.parameters, _IMAGE_FIELDS))
    generation_id, assets = await _generate(ctx, "image", body, config)
    url = _asset(assets, "image", generation_id)
    cap = int(config.parameters.get("max_download_bytes") or MAX_IMAGE_BYTES)
    path = await ctx.store.download(ctx.client, url, output_name, max_bytes=cap, provider=_NAME)
    try:
        image = await ctx.store.asave_image(output_name, ctx.store.read_download(path))
    except MediaError:
        path.unlink(missing_ok=True)
        raise
    if Path(image.path) != path:
        path.unlink(missing_ok=True)  # saved again under the real format's extension
    return image


@register(Conversion.IMAGE_AND_TEXT_TO_VIDEO, PROVIDER)
async def image_and_text_to_video(
    ctx: RunContext,
    image: Image,
    text: str,
    config: ModelConfig,
    *,
    output_name: str,
    last_frame: Image | None = None,
) -> Video:
    """Animate ``image`` (sent by its public URL, see the module docstring) as ``text``
    describes with Ray; the MP4 is saved as ``output_name`` (with an ``.mp4`` extension).
    An image from outside the output directory is copied into its ``frames/`` first.
    ``last_frame`` is keyframe ``frame1`` (the end; ``image`` is ``frame0``), sent the same
    way (docs.lumalabs.ai/docs/video-generation "Start and end keyframes";
    lumaai SDK's ``Keyframes.frame1``)."""
    if problem := _image_base_problem(config, f"the output directory {str(ctx.store.root)!r}"):
        raise ConfigurationError(f"{problem}.")  # before anything is copied or paid for
    url = image_url(ctx, await _in_store(ctx, image), config)
    end: dict[str, Any] = {}
    if last_frame is not None:
        last = image_url(ctx, await _in_store(ctx, last_frame), config)
        end = {"frame1": {"type": "image", "url": last}}
    body: dict[str, Any] = {
        "model": config.model.provider_model_name,
        "prompt": text.strip(),
        "keyframes": {"frame0": {"type": "image", "url": url}, **end},
        "aspect_ratio": nearest_ratio(image.width, image.height),
    }
    picked = pick(config.parameters, _VIDEO_FIELDS)
    duration = picked.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        picked["duration"] = f"{int(duration)}s"  # Luma takes "5s" / "9s"
    body.update(picked)
    generation_id, assets = await _generate(ctx, "video", body, config)
    video_url = _asset(assets, "video", generation_id)
    name = output_name
    if not name.lower().endswith(".mp4"):
        name = str(Path(name).with_suffix(".mp4"))
    cap = int(config.parameters.get("max_download_bytes") or MAX_VIDEO_BYTES)
    path = await ctx.store.download(ctx.client, video_url, name, max_bytes=cap, provider=_NAME)
    return await ctx.store.aopen_video(path)
