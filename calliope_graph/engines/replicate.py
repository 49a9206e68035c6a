"""Replicate engines: text → text, text → image and image analysis through predictions.

The model's ``provider_model_name`` says how to start a prediction (PROVIDERS.md §4):
``owner/name`` is an official model (``POST /v1/models/{owner}/{name}/predictions``);
``owner/name:<version>`` (or a bare 64-hex version id) is a community model version
(``POST /v1/predictions`` with ``version``). Requests carry ``Authorization: Bearer`` and
``Prefer: wait=N`` (the ``wait`` parameter, default 60 seconds, 0 to turn it off): Replicate
holds the request until the prediction ends or N seconds pass. A prediction still
``starting`` or ``processing`` is polled (``GET /v1/predictions/{id}``) every
``ctx.poll.interval`` seconds for at most ``ctx.poll.timeout`` seconds — both overridable
with the ``poll_interval`` and ``poll_timeout`` parameters, since a cold start can take
minutes. Past the bound the prediction is cancelled (unless ``cancel_on_timeout: false``)
and ProviderTimeoutError names its id.

Every other model parameter is passed through as a model input (``max_new_tokens``,
``temperature``, ``num_inference_steps``...); ``prompt_field`` and ``image_field`` rename the
inputs that carry the prompt and the image for models that call them something else. The
``input`` parameter (a dict) gives inputs under the ones the engine sets; ``extra_body`` (a
dict) is merged into the ``input`` last, over everything.

Outputs: text models stream a list of tokens (joined); image models return a URL or a list
of URLs (the first is downloaded through the media store, capped at ``max_download_bytes``;
only http(s) URLs are fetched, and ``data:`` URIs are decoded); vision models (LLaVA) are
asked for a JSON description and their answer becomes an ImageAnalysis (plain prose becomes
its description).

A ``failed`` prediction is mapped by its error text: NSFW/safety/sensitive → ContentPolicy
Error, bad input → InvalidRequestError, out of memory/timeouts/internal → Transient
ProviderError, anything else ProviderError. ``canceled`` is the engines' one "cancelled"
error (a ProviderError with code ``cancelled``, not retried: see ``_poll``), ``aborted`` (a
``Cancel-After`` deadline) a ProviderTimeoutError.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import bearer, parse_json, redact, request
from calliope_graph.engines._params import EXTRA_BODY, pick, with_extra_body
from calliope_graph.engines._poll import Cancelled, Waiting, poll_bounds, poll_job
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._replicate_errors import (
    _throttle_wait,
    describe,
    error_for_failure,
)
from calliope_graph.errors import (
    CalliopeError,
    ConfigurationError,
    EmptyOutputError,
    MediaError,
    ProviderError,
    ProviderTimeoutError,
    TransientProviderError,
)
from calliope_graph.media import Image, ImageAnalysis, ImageLimits, prepared

__all__ = [
    "ANALYSIS_PROMPT",
    "IMAGE_MODELS",
    "MAX_IMAGE_BYTES",
    "ModelRef",
    "describe",
    "error_for_failure",
    "image_analysis",
    "model_ref",
    "text_to_image",
    "text_to_text",
]

log = logging.getLogger("calliope_graph.engines.replicate")

PROVIDER = InferenceModelProvider.REPLICATE
_NAME = PROVIDER.value
#: The longest ``Prefer: wait`` Replicate honours, in seconds.
MAX_WAIT = 60
#: Largest generated image downloaded.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
_WAITING = ("starting", "processing")
_SENT_AS_IS = frozenset(("image/jpeg", "image/png", "image/webp", "image/gif"))
#: Images go as data URIs, which Replicate recommends only under 1 MB (larger files should
#: be hosted); vision models work far below 2048 pixels. Other formats become PNG.
IMAGE_LIMITS = ImageLimits(
    _NAME, formats=_SENT_AS_IS, max_side=2048, max_bytes=1024 * 1024, measure="data_url"
)
#: Parameters the engine reads itself; everything else is a model input.
_RESERVED = frozenset(
    (
        "poll_timeout",
        "poll_interval",
        "wait",
        "max_download_bytes",
        "cancel_on_timeout",
        "analysis_prompt",
        "prompt_field",
        "image_field",
        "input",
        EXTRA_BODY,
    )
)

#: How known image models take a size: the aspect ratios they accept (the nearest is
#: sent), or None for ``width`` and ``height`` (multiples of 8). Unknown models get
#: ``width`` and ``height`` as asked.
_FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
IMAGE_MODELS: dict[str, tuple[str, ...] | None] = {
    "black-forest-labs/flux-schnell": _FLUX_RATIOS,
    "black-forest-labs/flux-dev": _FLUX_RATIOS,
    "black-forest-labs/flux-1.1-pro": (
        "1:1",
        "16:9",
        "3:2",
        "2:3",
        "4:5",
        "5:4",
        "9:16",
        "3:4",
        "4:3",
    ),
    "stability-ai/sdxl": None,
}

ANALYSIS_PROMPT = (
    "Describe this image for a storyteller. Answer with one JSON object with the keys "
    '"description" (two or three sentences), "captions" (short one-line captions), "tags" '
    '(single words or short phrases), "objects" (the things visible) and "text" (any legible '
    "writing, or an empty string)."
)


@dataclass(frozen=True)
class ModelRef:
    """Where a model's predictions start: an official model or a version."""

    owner: str | None
    name: str | None
    version: str | None

    @property
    def label(self) -> str:
        if self.owner and self.name:
            return f"{self.owner}/{self.name}"
        return f"version {str(self.version)[:12]}"


_REF = re.compile(r"^(?P<owner>[\w.-]+)/(?P<name>[\w.-]+)(?::(?P<version>[\w.-]+))?$")
_VERSION = re.compile(r"^[0-9a-f]{64}$")


def model_ref(model: str) -> ModelRef:
    """Parse ``owner/name``, ``owner/name:version`` or a bare 64-hex version id."""
    model = model.strip()
    if _VERSION.match(model):
        return ModelRef(None, None, model)
    match = _REF.match(model)
    if match is None:
        raise ConfigurationError(
            f"Replicate model {model!r} is not a model reference: use 'owner/name' for an "
            "official model or 'owner/name:<version id>' for a model version."
        )
    return ModelRef(match.group("owner"), match.group("name"), match.group("version"))


# -- predictions -----------------------------------------------------------------------------
def _malformed(what: str, response: httpx.Response) -> TransientProviderError:
    return TransientProviderError(
        f"replicate answered {what} ({response.text[:120]!r}); it was asked again.",
        provider=_NAME,
        status=response.status_code,
        code="malformed_body",
    )


def _prediction(response: httpx.Response) -> dict[str, Any]:
    answer = parse_json(response, _NAME)
    if (
        not isinstance(answer, dict)
        or not isinstance(answer.get("id"), str)
        or not isinstance(answer.get("status"), str)
    ):
        raise _malformed("without a prediction id and status", response)
    return answer


def _wait_seconds(config: ModelConfig) -> int:
    wait = config.parameters.get("wait", MAX_WAIT)
    if wait is True:
        return MAX_WAIT
    if not wait:
        return 0
    try:
        seconds = int(wait)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"Replicate wait {wait!r} is not a number of seconds: use 1 to {MAX_WAIT}, or 0 "
            "to poll from the start."
        ) from None
    return max(0, min(seconds, MAX_WAIT))


async def _create(
    ctx: RunContext, ref: ModelRef, inputs: dict[str, Any], config: ModelConfig
) -> dict[str, Any]:
    base = ctx.keys.base_url(PROVIDER)
    headers = bearer(ctx.keys.require(PROVIDER))
    wait = _wait_seconds(config)
    timeout: float | None = None
    if wait:
        headers["Prefer"] = f"wait={wait}"
        # Replicate holds the request up to ``wait`` seconds: read for a little longer.
        timeout = max(ctx.retry.request_timeout, wait + 5.0)
    if ref.version is not None:
        url = f"{base}/v1/predictions"
        body: dict[str, Any] = {"version": ref.version, "input": inputs}
    else:
        url = f"{base}/v1/models/{ref.owner}/{ref.name}/predictions"
        body = {"input": inputs}
    log.debug("replicate: POST %s (%s, wait %ss)", httpx.URL(url).path, ref.label, wait)
    return await request(
        ctx,
        _NAME,
        "POST",
        url,
        parse=_prediction,
        headers=headers,
        json_body=body,
        timeout=timeout,
        describe=describe,
        retry_after=_throttle_wait,
    )


def _poll_url(ctx: RunContext, prediction: dict[str, Any]) -> str:
    """``urls.get`` when it is on the API host (the key goes there), else built from the id."""
    base = ctx.keys.base_url(PROVIDER)
    urls = prediction.get("urls")
    get = urls.get("get") if isinstance(urls, dict) else None
    if isinstance(get, str):
        url = httpx.URL(get)
        if url.scheme == "https" and url.host == httpx.URL(base).host:
            return get
    return f"{base}/v1/predictions/{prediction['id']}"


async def _get(ctx: RunContext, url: str) -> dict[str, Any]:
    return await request(
        ctx,
        _NAME,
        "GET",
        url,
        parse=_prediction,
        headers=bearer(ctx.keys.require(PROVIDER)),
        describe=describe,
        retry_after=_throttle_wait,
    )


async def _cancel(ctx: RunContext, prediction_id: str) -> None:
    """Best effort: stop paying for a prediction we no longer wait for."""
    url = f"{ctx.keys.base_url(PROVIDER)}/v1/predictions/{prediction_id}/cancel"
    try:
        await request(
            ctx,
            _NAME,
            "POST",
            url,
            parse=lambda r: None,
            headers=bearer(ctx.keys.require(PROVIDER)),
            describe=describe,
            retry=False,
        )
        log.info("replicate: cancelled prediction %s", prediction_id)
    except CalliopeError as exc:
        log.warning("replicate: could not cancel prediction %s (%s)", prediction_id, exc)


def _state(prediction: dict[str, Any]) -> dict[str, Any] | Waiting | Cancelled:
    status = str(prediction["status"])
    if status in _WAITING:
        return Waiting(status)
    if status == "canceled":
        return Cancelled(status)
    return prediction


async def _wait(
    ctx: RunContext,
    prediction: dict[str, Any],
    config: ModelConfig,
    ref: ModelRef,
    bounds: tuple[float, float],
) -> dict[str, Any]:
    """Poll until the prediction ends; the final prediction, or the taxonomy error (a
    cancelled one, or ProviderTimeoutError past the bound)."""
    params = config.parameters
    interval, bound = bounds
    prediction_id = str(prediction["id"])
    url = _poll_url(ctx, prediction)

    async def check() -> dict[str, Any] | Waiting | Cancelled:
        return _state(await _get(ctx, url))

    async def on_timeout(state: Waiting) -> str:
        if not params.get("cancel_on_timeout", True):
            return "; it may still finish"
        await _cancel(ctx, prediction_id)
        return " and was cancelled"

    return await poll_job(
        ctx,
        check,
        provider=_NAME,
        what="prediction",
        job_id=prediction_id,
        label=ref.label,
        interval=interval,
        timeout=bound,
        first=_state(prediction),
        on_timeout=on_timeout,
        advice="cold starts can take minutes: raise the poll_timeout model parameter (or "
        "PollSettings.timeout), or add a fallback edge on timeout",
    )


async def _run(ctx: RunContext, config: ModelConfig, inputs: dict[str, Any]) -> tuple[str, Any]:
    """Start a prediction, wait for it, and return (id, output) or the taxonomy error."""
    ref = model_ref(config.model.provider_model_name)
    extra = config.parameters.get("input")
    if isinstance(extra, dict):
        inputs = {**extra, **inputs}
    inputs = with_extra_body(inputs, config.parameters, config.slug)
    bounds = poll_bounds(ctx, config.parameters)  # checked before a prediction is paid for
    prediction = await _create(ctx, ref, inputs, config)
    prediction_id = str(prediction["id"])
    log.info("replicate: prediction %s started (%s)", prediction_id, ref.label)
    prediction = await _wait(ctx, prediction, config, ref, bounds)
    status = str(prediction["status"])
    if status == "succeeded":
        return prediction_id, prediction.get("output")
    if status == "failed":
        raise _redacted(
            ctx,
            error_for_failure(
                prediction_id, str(prediction.get("error") or ""), str(prediction.get("logs") or "")
            ),
        )
    if status == "aborted":
        raise ProviderTimeoutError(
            f"replicate prediction {prediction_id} ({ref.label}) was aborted: its Cancel-After "
            "deadline passed before it started. Raise the deadline or run the node again.",
            provider=_NAME,
            code="aborted",
            job_id=prediction_id,
        )
    raise TransientProviderError(
        f"replicate prediction {prediction_id} ended with an unknown status {status!r}: run the "
        "node again, and report it if it persists.",
        provider=_NAME,
        code=status,
    )


def _redacted(ctx: RunContext, error: ProviderError) -> ProviderError:
    """``error`` with any known secret masked (model errors and logs are free text)."""
    message = redact(error.message, ctx.keys.secrets())
    if message == error.message:
        return error
    clean = type(error)(message, provider=error.provider, status=error.status, code=error.code)
    return clean


def _inputs(config: ModelConfig) -> dict[str, Any]:
    return pick(config.parameters, None, exclude=_RESERVED)


def _field(config: ModelConfig, name: str, default: str) -> str:
    return str(config.parameters.get(name) or default)


def _joined(output: Any, prediction_id: str, what: str) -> str:
    if output is None:
        raise EmptyOutputError(
            f"replicate prediction {prediction_id} succeeded without any {what}: try again or "
            "add a fallback edge on 'empty'."
        )
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join("" if token is None else str(token) for token in output)
    return json.dumps(output)


# -- text -> text ----------------------------------------------------------------------------
@register(Conversion.TEXT_TO_TEXT, PROVIDER)
async def text_to_text(ctx: RunContext, text: str, config: ModelConfig) -> str:
    """Run a language model on ``text`` (sent as ``prompt``; a ``system_prompt`` parameter is
    passed through, as Llama models take one) and join the tokens it streams."""
    inputs = _inputs(config)
    inputs[_field(config, "prompt_field", "prompt")] = text
    prediction_id, output = await _run(ctx, config, inputs)
    return _joined(output, prediction_id, "text")


# -- text -> image ---------------------------------------------------------------------------
def _nearest_ratio(width: int, height: int, ratios: tuple[str, ...]) -> str:
    def distance(ratio: str) -> float:
        w, h = (int(v) for v in ratio.split(":"))
        return abs(math.log((w / h) / (width / height)))

    return min(ratios, key=distance)


def _size_inputs(model: str, width: int | None, height: int | None) -> dict[str, Any]:
    if not width and not height:
        return {}
    w = width or height or 1024
    h = height or width or 1024
    key = model.split(":", 1)[0]
    if key in IMAGE_MODELS:
        ratios = IMAGE_MODELS[key]
        if ratios is not None:
            return {"aspect_ratio": _nearest_ratio(w, h, ratios)}
        return {"width": max(8, round(w / 8) * 8), "height": max(8, round(h / 8) * 8)}
    return {"width": w, "height": h}


def _first_url(output: Any, prediction_id: str) -> str:
    url = output
    if isinstance(output, list):
        url = next((item for item in output if isinstance(item, str) and item), None)
    if not isinstance(url, str) or not url:
        raise EmptyOutputError(
            f"replicate prediction {prediction_id} succeeded without an image (output "
            f"{str(output)[:80]!r}); some models answer an empty list when their safety "
            "checker drops every image: soften the prompt, try again, or add a fallback edge "
            "on 'empty'."
        )
    return url


def _data_uri(url: str, cap: int) -> bytes:
    head, _, payload = url.partition(",")
    if not head.endswith(";base64"):
        raise MediaError("Replicate returned a data: URI that is not base64: cannot decode it.")
    if len(payload) * 3 // 4 > cap:
        raise MediaError(
            f"replicate output is about {len(payload) * 3 // 4} bytes, over the {cap}-byte "
            "download cap: raise max_download_bytes if this is expected."
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError("Replicate returned a data: URI with invalid base64.") from None


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
) -> Image:
    """Draw ``prompt`` with an image model (FLUX, SDXL...) and save the first image as
    ``output_name`` (the extension follows the real format)."""
    if seed is not None:  # the seed port: the request's ``seed`` field
        config = config.with_parameters(seed=seed)
    model = config.model.provider_model_name
    inputs = {**_size_inputs(model, width, height), **_inputs(config)}
    inputs[_field(config, "prompt_field", "prompt")] = prompt
    prediction_id, output = await _run(ctx, config, inputs)
    url = _first_url(output, prediction_id)
    cap = int(config.parameters.get("max_download_bytes") or MAX_IMAGE_BYTES)
    if url.startswith("data:"):
        return await ctx.store.asave_image(output_name, _data_uri(url, cap))
    path = await ctx.store.download(ctx.client, url, output_name, max_bytes=cap, provider=_NAME)
    try:
        image = await ctx.store.asave_image(output_name, ctx.store.read_download(path))
    except MediaError:
        path.unlink(missing_ok=True)
        raise
    if Path(image.path) != path:
        path.unlink(missing_ok=True)  # saved again under the real format's extension
    return image


# -- image analysis --------------------------------------------------------------------------
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def _analysis(text: str) -> ImageAnalysis:
    """A JSON answer parsed into the schema, or prose kept as the description."""
    fenced = _FENCE.search(text)
    candidate = fenced.group(1) if fenced else text
    start, end = candidate.find("{"), candidate.rfind("}")
    if start != -1 and end > start:
        try:
            data = json.loads(candidate[start : end + 1])
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            return ImageAnalysis.from_dict(data)
    prose = " ".join(text.split())
    first = re.split(r"(?<=[.!?])\s+", prose, maxsplit=1)[0] if prose else ""
    return ImageAnalysis(description=prose, captions=[first] if first else [])


@register(Conversion.IMAGE_ANALYSIS, PROVIDER)
async def image_analysis(ctx: RunContext, image: Image, config: ModelConfig) -> ImageAnalysis:
    """Describe ``image`` with a vision model (LLaVA by default): the image goes as a data
    URI in ``image``, the request (``analysis_prompt`` parameter, or a JSON-asking default)
    in ``prompt``."""
    sent = await prepared(image, IMAGE_LIMITS)
    prompt = str(config.parameters.get("analysis_prompt") or ANALYSIS_PROMPT)
    inputs = _inputs(config)
    inputs[_field(config, "image_field", "image")] = sent.data_url()
    inputs[_field(config, "prompt_field", "prompt")] = prompt
    prediction_id, output = await _run(ctx, config, inputs)
    text = _joined(output, prediction_id, "description")
    if not text.strip():
        raise EmptyOutputError(
            f"replicate prediction {prediction_id} described the image with an empty answer: "
            "try again or add a fallback edge on 'empty'."
        )
    return _analysis(text).model_copy(update={"sources": [_NAME]})
