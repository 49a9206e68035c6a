"""Runway engine: image + text → video through the task API.

``POST {base}/v1/image_to_video`` (``Authorization: Bearer …`` and ``X-Runway-Version:
2024-11-06``) starts a task; ``GET {base}/v1/tasks/{id}`` is polled through ``PENDING``,
``THROTTLED`` and ``RUNNING`` until ``SUCCEEDED`` (the MP4 is then downloaded into the
store) or ``FAILED`` / ``CANCELLED``, for at most ``ctx.poll.timeout`` seconds (or the
``poll_timeout`` parameter) — after which ProviderTimeoutError names the task id, which
stays valid for fetching the result later. A ``CANCELLED`` task is the engines' one
"cancelled" error (a ProviderError with code ``cancelled``, not retried: see ``_poll``).

The prompt image travels as a data URI (JPEG, PNG and WebP as they are; other formats are
converted to PNG) and must stay under Runway's 5 MB data-URI limit. ``ratio`` defaults to
the model's allowed ratio nearest the image's shape; ``duration``, ``seed`` and
``public_figure_threshold`` are model parameters; ``extra_body`` (a dict) is merged into
the request body last.

Failure codes map to the taxonomy: ``SAFETY.*`` and ``INPUT_PREPROCESSING.SAFETY.*`` are
ContentPolicyError (do not retry), ``ASSET.INVALID`` is InvalidRequestError, ``INTERNAL*``
and anything else TransientProviderError (a later run may succeed).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import bearer, parse_json, request
from calliope_graph.engines._params import pick, with_extra_body
from calliope_graph.engines._poll import Cancelled, Waiting, poll_bounds, poll_job
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.errors import (
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    ProviderError,
    TransientProviderError,
)
from calliope_graph.media import Image, ImageLimits, Video, prepared

__all__ = [
    "API_VERSION",
    "MAX_DATA_URI",
    "MAX_VIDEO_BYTES",
    "MODELS",
    "describe",
    "error_for_failure",
    "image_and_text_to_video",
    "nearest_ratio",
]

log = logging.getLogger("calliope_graph.engines.runway")

PROVIDER = InferenceModelProvider.RUNWAY
_NAME = PROVIDER.value
API_VERSION = "2024-11-06"
#: Runway's limit on a data URI, in characters of the whole URI (PROVIDERS.md §6.4).
MAX_DATA_URI = 5 * 1024 * 1024
#: Largest generated video downloaded.
MAX_VIDEO_BYTES = 500 * 1024 * 1024
#: promptText limit, in UTF-16 code units.
MAX_PROMPT_UNITS = 1000
_SENT_AS_IS = frozenset(("image/jpeg", "image/png", "image/webp"))
#: promptImage as a data URI: JPEG, PNG or WebP, the whole URI at most MAX_DATA_URI
#: characters; a heavier image is re-encoded / scaled down to fit (``media.prepared``).
IMAGE_LIMITS = ImageLimits(_NAME, formats=_SENT_AS_IS, max_bytes=MAX_DATA_URI, measure="data_url")
_WAITING = ("PENDING", "THROTTLED", "RUNNING")


@dataclass(frozen=True)
class ModelSpec:
    """What an image-to-video model accepts: output ratios and durations in seconds."""

    ratios: tuple[str, ...]
    durations: tuple[int, ...]
    default_duration: int


_GEN4 = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO = ("1280:720", "720:1280", "1080:1920", "1920:1080")
#: Models Runway no longer serves: gone from its API spec (Gen-3 Alpha Turbo, retired
#: 2026-07-30 per ComfyUI's Runway docs), refused before anything is paid for.
RETIRED = {"gen3a_turbo": "gen4_turbo"}
#: Known models ([RW-SDK]); other model names are sent as configured, unchecked.
MODELS: dict[str, ModelSpec] = {
    "gen4_turbo": ModelSpec(_GEN4, tuple(range(2, 11)), 5),
    "gen4.5": ModelSpec(_GEN4, tuple(range(2, 11)), 5),
    "veo3.1": ModelSpec(_VEO, (4, 6, 8), 8),
    "veo3.1_fast": ModelSpec(_VEO, (4, 6, 8), 8),
}


def nearest_ratio(width: int, height: int, ratios: tuple[str, ...]) -> str:
    """The ratio (``"1280:720"``) whose shape is closest to ``width`` x ``height``."""

    def distance(ratio: str) -> float:
        w, h = (int(v) for v in ratio.split(":"))
        return abs(math.log((w / h) / (width / height)))

    return min(ratios, key=distance)


def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from ``{"error": "…", "issues": [{"path", "message"}]?}``."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, None)
    if not isinstance(body, dict):
        return (str(body)[:300], None)
    message = str(body.get("error") or response.reason_phrase)
    issues = body.get("issues")
    if isinstance(issues, list) and issues:
        details = []
        for issue in issues[:5]:
            if not isinstance(issue, dict):
                continue
            where = ".".join(str(p) for p in issue.get("path") or []) or "(body)"
            details.append(f"{where}: {issue.get('message', issue.get('code', '?'))}")
        if details:
            message += " — " + "; ".join(details)
    code = body.get("code")
    return (message, None if code is None else str(code))


def error_for_failure(task_id: str, code: str | None, failure: str) -> ProviderError:
    """The taxonomy error for a FAILED task's ``failureCode`` and ``failure`` text."""
    label = code or "no failure code"
    text = f"runway task {task_id} failed ({label}): {failure or 'no reason given'}"
    upper = (code or "").upper()
    if upper.startswith(("SAFETY.", "INPUT_PREPROCESSING.SAFETY")):
        return ContentPolicyError(
            f"{text} — Runway's moderation refused the "
            f"{'output' if '.OUTPUT' in upper else 'input'}; change the prompt or image (do "
            "not resubmit it unchanged) or add a fallback edge on content_policy.",
            provider=_NAME,
            code=code,
        )
    if upper.startswith("ASSET."):
        return InvalidRequestError(
            f"{text} — the prompt image was rejected; supply a valid JPEG, PNG or WebP.",
            provider=_NAME,
            code=code,
        )
    advice = (
        "Runway rejected its own output (often because of text or graphics overlaid on the "
        "image); try another image or prompt"
        if upper.startswith("INTERNAL.BAD_OUTPUT")
        else "this may pass; run the node again or add a fallback edge on transient"
    )
    return TransientProviderError(f"{text} — {advice}.", provider=_NAME, code=code)


def _headers(ctx: RunContext) -> dict[str, str]:
    return {**bearer(ctx.keys.require(PROVIDER)), "X-Runway-Version": API_VERSION}


async def _prompt_image(image: Image) -> str:
    """``image`` as a data URI Runway accepts (``IMAGE_LIMITS``), prepared in a thread."""
    return (await prepared(image, IMAGE_LIMITS)).data_url()


def _prompt_text(text: str) -> str | None:
    """``text`` within Runway's 1000 UTF-16 units, cut at a word boundary when longer."""
    text = text.strip()
    if not text:
        return None
    if len(text.encode("utf-16-le")) // 2 <= MAX_PROMPT_UNITS:
        return text
    units = 0
    cut = text
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1  # astral characters are surrogate pairs
        if units > MAX_PROMPT_UNITS:
            cut = text[:index]
            break
    if " " in cut[-40:]:
        cut = cut[: cut.rfind(" ")]
    cut = cut.rstrip()
    log.warning(
        "runway: promptText was %d characters; sent the first %d (Runway takes at most %d)",
        len(text),
        len(cut),
        MAX_PROMPT_UNITS,
    )
    return cut


async def _body(ctx: RunContext, image: Image, text: str, config: ModelConfig) -> dict[str, Any]:
    model = config.model.provider_model_name
    params = config.parameters
    if model in RETIRED:
        raise ConfigurationError(
            f"Runway model {model!r} is retired (no longer in Runway's API); use "
            f"{RETIRED[model]!r} (catalog: runway-gen4-turbo)."
        )
    spec = MODELS.get(model)
    ratio = params.get("ratio")
    if ratio in (None, "", "auto"):
        if spec is None:
            raise ConfigurationError(
                f"Runway model {model!r} is not one calliope-graph knows the ratios of: set "
                "the ratio model parameter (e.g. ratio: '1280:720')."
            )
        ratio = nearest_ratio(image.width, image.height, spec.ratios)
    elif spec is not None and ratio not in spec.ratios:
        raise ConfigurationError(
            f"Runway model {model} does not make {ratio!r} videos: set ratio to one of "
            f"{', '.join(spec.ratios)}, or to 'auto' to follow the image."
        )
    body: dict[str, Any] = {
        "model": model,
        "promptImage": await _prompt_image(image),
        "ratio": str(ratio),
    }
    duration = params.get("duration", spec.default_duration if spec else None)
    if duration is not None:
        if spec is not None and duration not in spec.durations:
            allowed = ", ".join(str(d) for d in spec.durations)
            raise ConfigurationError(
                f"Runway model {model} makes videos of {allowed} seconds, not {duration!r}: "
                "change the duration model parameter."
            )
        body["duration"] = int(duration)
    prompt = _prompt_text(text)
    if prompt:
        body["promptText"] = prompt
    picked = pick(params, ("seed", "public_figure_threshold"))
    if "seed" in picked:
        body["seed"] = int(picked["seed"])
    if picked.get("public_figure_threshold"):
        body["contentModeration"] = {
            "publicFigureThreshold": str(picked["public_figure_threshold"])
        }
    return with_extra_body(body, params, config.slug)


async def _create(ctx: RunContext, body: dict[str, Any]) -> str:
    def parse(response: httpx.Response) -> str:
        answer = parse_json(response, _NAME)
        task_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise TransientProviderError(
                f"runway accepted the task but answered without an id ({response.text[:120]!r})"
                "; it was asked again.",
                provider=_NAME,
                status=response.status_code,
                code="malformed_body",
            )
        return task_id

    return await request(
        ctx,
        _NAME,
        "POST",
        f"{ctx.keys.base_url(PROVIDER)}/v1/image_to_video",
        parse=parse,
        headers=_headers(ctx),
        json_body=body,
        describe=describe,
    )


async def _task(ctx: RunContext, task_id: str) -> dict[str, Any]:
    def parse(response: httpx.Response) -> dict[str, Any]:
        answer = parse_json(response, _NAME)
        if not isinstance(answer, dict) or not isinstance(answer.get("status"), str):
            raise TransientProviderError(
                f"runway answered a task poll without a status ({response.text[:120]!r}); it "
                "was asked again.",
                provider=_NAME,
                status=response.status_code,
                code="malformed_body",
            )
        return answer

    return await request(
        ctx,
        _NAME,
        "GET",
        f"{ctx.keys.base_url(PROVIDER)}/v1/tasks/{task_id}",
        parse=parse,
        headers=_headers(ctx),
        describe=describe,
    )


async def _wait(ctx: RunContext, task_id: str, bounds: tuple[float, float]) -> dict[str, Any]:
    """Poll the task until it ends; the final task object, or the taxonomy error (a
    cancelled task, or ProviderTimeoutError past the bound)."""
    interval, bound = bounds

    async def check() -> dict[str, Any] | Waiting | Cancelled:
        task = await _task(ctx, task_id)
        status = str(task["status"])
        if status in _WAITING:
            log.debug("runway: task %s is %s (progress %s)", task_id, status, task.get("progress"))
            return Waiting(status)
        if status == "CANCELLED":
            return Cancelled(status)
        return task

    return await poll_job(
        ctx,
        check,
        provider=_NAME,
        what="task",
        job_id=task_id,
        interval=interval,
        timeout=bound,
        first=Waiting("PENDING"),  # just created: wait an interval before the first poll
        advice=f"it may still finish: GET /v1/tasks/{task_id} later, raise "
        "PollSettings.timeout (or the poll_timeout model parameter), or add a fallback edge "
        "on timeout",
    )


@register(Conversion.IMAGE_AND_TEXT_TO_VIDEO, PROVIDER)
async def image_and_text_to_video(
    ctx: RunContext,
    image: Image,
    text: str,
    config: ModelConfig,
    *,
    output_name: str,
    seed: int | None = None,
) -> Video:
    """Animate ``image`` as ``text`` describes; the MP4 is saved as ``output_name``
    (with an ``.mp4`` extension)."""
    if seed is not None:  # the task's ``seed`` (docs.dev.runwayml.com/api, image_to_video)
        config = config.with_parameters(seed=seed)
    bounds = poll_bounds(ctx, config.parameters)  # checked before a task is paid for
    body = await _body(ctx, image, text, config)
    task_id = await _create(ctx, body)
    log.info("runway: task %s started (%s, %s)", task_id, body["model"], body["ratio"])
    task = await _wait(ctx, task_id, bounds)
    status = task["status"]
    if status == "FAILED":
        code = task.get("failureCode")
        failure = str(task.get("failure") or "")
        raise error_for_failure(task_id, None if code is None else str(code), failure)
    if status != "SUCCEEDED":
        raise TransientProviderError(
            f"runway task {task_id} ended with an unknown status {status!r}: run the node "
            "again, and report it if it persists.",
            provider=_NAME,
            code=str(status),
        )
    output = task.get("output")
    url = output[0] if isinstance(output, list) and output else None
    if not isinstance(url, str) or not url:
        raise EmptyOutputError(
            f"runway task {task_id} succeeded without an output URL: run the node again or add "
            "a fallback edge on 'empty'."
        )
    name = output_name
    if not name.lower().endswith(".mp4"):
        name = str(Path(name).with_suffix(".mp4"))
    max_bytes = int(config.parameters.get("max_download_bytes") or MAX_VIDEO_BYTES)
    path = await ctx.store.download(ctx.client, url, name, max_bytes=max_bytes, provider=_NAME)
    return await ctx.store.aopen_video(path)
