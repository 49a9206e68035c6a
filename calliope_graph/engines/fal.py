"""fal.ai engines: text → image (FLUX) and image + text → video (Kling, Seedance) through
fal's queue API.

The model is a fal application id, the catalog's ``provider_model_name`` (``fal-ai/flux/
schnell``, ``fal-ai/kling-video/v2.5-turbo/standard/image-to-video``). Every request carries
``Authorization: Key <FAL_KEY>`` (fal-client: ``AuthCredentials("Key", FAL_KEY)``, fal-ai/fal
``projects/fal_client/src/fal_client/auth.py``). The queue (docs.fal.ai/model-endpoints/queue):

* ``POST {base}/{app id}`` submits the model input and answers ``request_id``,
  ``status_url``, ``response_url`` and ``cancel_url``;
* ``GET .../requests/{id}/status`` reports ``IN_QUEUE`` (with ``queue_position``),
  ``IN_PROGRESS``, then ``COMPLETED`` (with ``error`` / ``error_type`` when it failed);
* ``GET .../requests/{id}`` answers the model's output (or its error);
* ``PUT .../requests/{id}/cancel`` cancels it.

Status, result and cancel live under the app's ``owner/alias`` only, without the sub-path the
submit went to (``fal-ai/flux/schnell`` is polled under ``fal-ai/flux``): fal's docs say so
and fal-client builds them that way (``AsyncRequestHandle.from_request_id``); the URLs in the
submit answer are used when they are on the configured host. ``{base}`` is ``FAL_BASE_URL``
(default ``https://queue.fal.run``).

The request is polled every ``ctx.poll.interval`` seconds for at most ``ctx.poll.timeout``
(the ``poll_interval`` / ``poll_timeout`` parameters override both); past the bound, or when
the run itself is cancelled, the fal request is cancelled (best effort; ``cancel_on_timeout:
false`` keeps it) and ProviderTimeoutError names its id.

Every model parameter that the engine does not read itself is passed through as model input
(``num_inference_steps``, ``guidance_scale``, ``seed``, ``duration``, ``negative_prompt``,
``cfg_scale``...); ``extra_body`` (a dict) is merged in last. The video's start image goes as
a data URI in ``image_url`` (fal's models accept data URIs as file inputs:
docs.fal.ai/documentation/model-apis/fal-cdn, "Data URIs").

Errors (docs.fal.ai/errors, docs.fal.ai/documentation/model-apis/request-errors): a body
``{"detail": [{"loc", "msg", "type", ...}]}`` (model errors) or ``{"detail": "...",
"error_type": "..."}`` (request errors, also in ``X-Fal-Error-Type``). ``type:
content_policy_violation``, and an image whose ``has_nsfw_concepts`` flag is set (FLUX
answers a blacked-out image then), are ContentPolicyError; other 422s InvalidRequestError;
``X-Fal-Retryable: true`` and 5xx TransientProviderError.

:func:`list_models` reads fal's model list from its Platform APIs (``GET
https://api.fal.ai/v1/models?status=active``, paged by ``next_cursor``:
docs.fal.ai/platform-apis/v1/models); with ``FAL_BASE_URL`` pointing elsewhere (a proxy, the
simulator's server) it asks ``{FAL_BASE_URL}/v1/models``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from calliope_graph.config import DEFAULT_BASE_URLS, InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import parse_json, redact, request
from calliope_graph.engines._params import EXTRA_BODY, pick, with_extra_body
from calliope_graph.engines._poll import Cancelled, Waiting, poll_bounds, poll_job
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.errors import (
    CalliopeError,
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    MediaError,
    ProviderError,
    TransientProviderError,
)
from calliope_graph.media import Image, ImageLimits, Video, prepared

__all__ = [
    "IMAGE_LIMITS",
    "MAX_IMAGE_BYTES",
    "MAX_VIDEO_BYTES",
    "AppId",
    "app_id",
    "describe",
    "image_and_text_to_video",
    "list_models",
    "text_to_image",
]

log = logging.getLogger("calliope_graph.engines.fal")

PROVIDER = InferenceModelProvider.FAL
_NAME = PROVIDER.value
#: Largest generated image / video downloaded.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_VIDEO_BYTES = 500 * 1024 * 1024
#: The start image as a data URI. fal names no limit for data URIs; 10 MB is our own cap
#: (fal's CDN is recommended for larger files), and Kling works far below 4096 pixels.
IMAGE_LIMITS = ImageLimits(
    _NAME,
    formats=frozenset(("image/jpeg", "image/png", "image/webp")),
    max_side=4096,
    max_bytes=10 * 1024 * 1024,
    measure="data_url",
)
#: fal's Platform APIs (model search), and how many models one page asks for.
PLATFORM_URL = "https://api.fal.ai/v1"
PAGE_SIZE = 100
#: Most pages read (a bound on a cursor that never ends).
MAX_PAGES = 100
#: Namespaces whose app ids have three parts before the sub-path (fal-client's APP_NAMESPACES).
_NAMESPACES = ("workflows", "comfy")
#: Parameters the engine reads itself; everything else is a model input.
_RESERVED = frozenset(
    (
        "poll_timeout",
        "poll_interval",
        "max_download_bytes",
        "cancel_on_timeout",
        "prompt_field",
        "image_field",
        EXTRA_BODY,
    )
)
#: Model error types that mean "the input is refused by a content checker".
_POLICY_TYPES = frozenset(("content_policy_violation",))
#: Request error types after which a later try may pass (docs: request errors).
_TRANSIENT_TYPES = frozenset(
    (
        "request_timeout",
        "startup_timeout",
        "runner_scheduling_failure",
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_connection_refused",
        "runner_connection_error",
        "runner_incomplete_response",
        "runner_server_error",
        "internal_error",
    )
)
_CANCELLED_TYPES = frozenset(("client_cancelled",))


@dataclass(frozen=True)
class AppId:
    """A fal application id: ``owner/alias[/path]`` (or ``workflows/owner/alias[/path]``)."""

    owner: str
    alias: str
    path: str | None
    namespace: str | None

    @property
    def endpoint(self) -> str:
        """What a request is submitted to (with the sub-path)."""
        return "/".join(p for p in (self.namespace, self.owner, self.alias, self.path) if p)

    @property
    def queue(self) -> str:
        """Where its requests are polled, fetched and cancelled (without the sub-path)."""
        return "/".join(p for p in (self.namespace, self.owner, self.alias) if p)


_PART = re.compile(r"^[A-Za-z0-9][\w.-]*$")


def app_id(model: str) -> AppId:
    """Parse a fal application id, or a ConfigurationError saying what one looks like."""
    parts = [p for p in model.strip().strip("/").split("/") if p]
    namespace = parts.pop(0) if parts and parts[0] in _NAMESPACES else None
    if len(parts) < 2 or not all(_PART.match(p) for p in parts):
        raise ConfigurationError(
            f"fal model {model!r} is not a fal application id: use the id shown on the model's "
            "fal.ai page, e.g. 'fal-ai/flux/schnell' or "
            "'fal-ai/kling-video/v2.5-turbo/standard/image-to-video'."
        )
    return AppId(parts[0], parts[1], "/".join(parts[2:]) or None, namespace)


# -- errors ----------------------------------------------------------------------------------
def _detail_items(body: Any) -> list[dict[str, Any]]:
    detail = body.get("detail") if isinstance(body, dict) else None
    return [d for d in detail if isinstance(d, dict)] if isinstance(detail, list) else []


def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from fal's ``{"detail": [...]}``, ``{"detail": "...", "error_type"}`` or
    (Platform APIs) ``{"error": {"type", "message"}}``."""
    header_type = response.headers.get("x-fal-error-type")
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, header_type)
    items = _detail_items(body)
    if items:
        parts = []
        for item in items[:5]:
            loc = [str(p) for p in item.get("loc") or [] if p != "body"]
            where = ".".join(loc) or "(input)"
            parts.append(f"{where}: {item.get('msg', item.get('type', '?'))}")
        code = items[0].get("type")
        return ("; ".join(parts), None if code is None else str(code))
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # the Platform APIs: {"error": {"type", "message"}}
            return (str(error.get("message") or error.get("type")), error.get("type"))
        detail = body.get("detail") or error or body.get("message")
        code = body.get("error_type") or header_type
        message = str(detail) if detail else response.reason_phrase
        if response.status_code == 404 and "/requests/" not in response.url.path:
            message += (
                " — check the fal application id (provider_model_name), e.g. 'fal-ai/flux/schnell'"
            )
        return (message, None if code is None else str(code))
    return (str(body)[:300], header_type)


def _hook(response: httpx.Response, message: str, code: str | None) -> type[ProviderError] | None:
    if code in _POLICY_TYPES:
        return ContentPolicyError
    if code in _TRANSIENT_TYPES or response.headers.get("x-fal-retryable", "").lower() == "true":
        return TransientProviderError
    return None


def _policy_error(request_id: str, what: str) -> ContentPolicyError:
    return ContentPolicyError(
        f"fal request {request_id}: {what} — change the prompt or input (a censor_text node "
        "can rewrite it) or add a fallback edge on content_policy.",
        provider=_NAME,
        code="content_policy_violation",
    )


# -- the queue -------------------------------------------------------------------------------
def _headers(ctx: RunContext) -> dict[str, str]:
    return {"Authorization": f"Key {ctx.keys.require(PROVIDER)}"}


def _malformed(what: str, response: httpx.Response) -> TransientProviderError:
    return TransientProviderError(
        f"fal answered {what} ({response.text[:120]!r}); it was asked again.",
        provider=_NAME,
        status=response.status_code,
        code="malformed_body",
    )


@dataclass(frozen=True)
class _Handle:
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


def _handle(ctx: RunContext, app: AppId, answer: dict[str, Any]) -> _Handle:
    """The request's URLs: the submit answer's when they are on the configured origin
    (scheme, host and port: the key goes there, never over a downgrade to http), else built
    the way fal-client builds them."""
    base = ctx.keys.base_url(PROVIDER)
    request_id = str(answer["request_id"])
    built = f"{base}/{app.queue}/requests/{request_id}"
    configured = httpx.URL(base)
    origin = (configured.scheme, configured.host, configured.port)

    def url(key: str, fallback: str) -> str:
        given = answer.get(key)
        usable = isinstance(given, str) and given.startswith(("https://", "http://"))
        if usable:
            target = httpx.URL(str(given))
            if (target.scheme, target.host, target.port) == origin:
                return str(given)
        return fallback

    return _Handle(
        request_id,
        url("status_url", f"{built}/status"),
        url("response_url", built),
        url("cancel_url", f"{built}/cancel"),
    )


async def _submit(ctx: RunContext, app: AppId, inputs: dict[str, Any]) -> _Handle:
    def parse(response: httpx.Response) -> _Handle:
        answer = parse_json(response, _NAME)
        if not isinstance(answer, dict) or not isinstance(answer.get("request_id"), str):
            raise _malformed("a submit without a request_id", response)
        return _handle(ctx, app, answer)

    return await request(
        ctx,
        _NAME,
        "POST",
        f"{ctx.keys.base_url(PROVIDER)}/{app.endpoint}",
        parse=parse,
        headers=_headers(ctx),
        json_body=inputs,
        describe=describe,
        hook=_hook,
    )


async def _status(ctx: RunContext, handle: _Handle) -> dict[str, Any]:
    def parse(response: httpx.Response) -> dict[str, Any]:
        answer = parse_json(response, _NAME)
        if not isinstance(answer, dict) or not isinstance(answer.get("status"), str):
            raise _malformed("a status poll without a status", response)
        return answer

    return await request(
        ctx,
        _NAME,
        "GET",
        handle.status_url,
        parse=parse,
        headers=_headers(ctx),
        describe=describe,
        hook=_hook,
    )


async def _result(ctx: RunContext, handle: _Handle, *, retry: bool) -> dict[str, Any]:
    def parse(response: httpx.Response) -> dict[str, Any]:
        answer = parse_json(response, _NAME)
        if not isinstance(answer, dict):
            raise _malformed("a result that is not an object", response)
        return answer

    return await request(
        ctx,
        _NAME,
        "GET",
        handle.response_url,
        parse=parse,
        headers=_headers(ctx),
        describe=describe,
        hook=_hook,
        retry=retry,
    )


async def _cancel(ctx: RunContext, handle: _Handle) -> bool:
    """Best effort: stop paying for a request we no longer wait for. True if fal took it."""
    try:
        await request(
            ctx,
            _NAME,
            "PUT",
            handle.cancel_url,
            parse=lambda r: None,
            headers=_headers(ctx),
            describe=describe,
            retry=False,
        )
    except CalliopeError as exc:
        log.warning("fal: could not cancel request %s (%s)", handle.request_id, exc)
        return False
    log.info("fal: cancelled request %s", handle.request_id)
    return True


def _state(status: dict[str, Any]) -> dict[str, Any] | Waiting | Cancelled:
    word = str(status["status"])
    if word == "IN_QUEUE":
        position = status.get("queue_position")
        shown = f"in the queue (position {position})" if position is not None else "queued"
        return Waiting(word, shown=shown)
    if word == "IN_PROGRESS":
        return Waiting(word, shown="in progress")
    if word == "COMPLETED":
        if status.get("error_type") in _CANCELLED_TYPES:
            return Cancelled(str(status["error_type"]))
        return status
    raise TransientProviderError(
        f"fal answered an unknown request status {word!r}: run the node again, and report it "
        "if it persists.",
        provider=_NAME,
        code=word,
    )


async def _run(
    ctx: RunContext, config: ModelConfig, app: AppId, inputs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Submit ``inputs``, wait for the request and return (request id, the model's output)."""
    params = config.parameters
    interval, bound = poll_bounds(ctx, params)  # checked before a request is paid for
    inputs = with_extra_body(inputs, params, config.slug)
    handle = await _submit(ctx, app, inputs)
    log.info("fal: request %s submitted (%s)", handle.request_id, app.endpoint)

    async def check() -> dict[str, Any] | Waiting | Cancelled:
        return _state(await _status(ctx, handle))

    async def on_timeout(state: Waiting) -> str:
        if not params.get("cancel_on_timeout", True):
            return "; it may still finish"
        cancelled = await _cancel(ctx, handle)
        return " and was cancelled" if cancelled else "; cancelling it failed, it may finish"

    try:
        status = await poll_job(
            ctx,
            check,
            provider=_NAME,
            what="request",
            job_id=handle.request_id,
            label=app.endpoint,
            interval=interval,
            timeout=bound,
            first=Waiting("IN_QUEUE", shown="queued"),  # just submitted: wait an interval
            on_timeout=on_timeout,
            advice=f"fetch it later with GET {handle.response_url}, raise the poll_timeout "
            "model parameter (or PollSettings.timeout), or add a fallback edge on timeout",
        )
    except asyncio.CancelledError:
        # The run was cancelled (a node timeout, Ctrl-C): do not leave fal computing.
        if params.get("cancel_on_timeout", True):
            await asyncio.shield(_cancel(ctx, handle))
        raise
    failed = status.get("error") is not None or status.get("error_type") is not None
    try:
        output = await _result(ctx, handle, retry=not failed)
    except ProviderError as exc:
        raise _redacted(ctx, exc) from None
    if failed and not output:
        reason = redact(str(status.get("error") or status.get("error_type")), ctx.keys.secrets())
        raise TransientProviderError(
            f"fal request {handle.request_id} ({app.endpoint}) failed: {reason[:300]}",
            provider=_NAME,
            code=str(status.get("error_type") or "failed"),
        )
    return handle.request_id, output


def _redacted(ctx: RunContext, error: ProviderError) -> ProviderError:
    """``error`` with any known secret masked (model errors are free text)."""
    message = redact(error.message, ctx.keys.secrets())
    if message == error.message:
        return error
    return type(error)(message, provider=error.provider, status=error.status, code=error.code)


def _inputs(config: ModelConfig) -> dict[str, Any]:
    return pick(config.parameters, None, exclude=_RESERVED)


def _field(config: ModelConfig, key: str, default: str) -> str:
    value = config.parameters.get(key)
    return str(value) if value else default


# -- media out -------------------------------------------------------------------------------
def _data_uri(url: str, cap: int) -> bytes:
    head, _, payload = url.partition(",")
    if ";base64" not in head:
        raise EmptyOutputError(f"fal returned a data URI that is not base64 ({head[:40]}).")
    if len(payload) * 3 // 4 > cap:
        raise MediaError(f"fal output is over the {cap}-byte download cap.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise EmptyOutputError("fal returned a data URI that is not valid base64.") from None


def _file_url(output: dict[str, Any], key: str, request_id: str) -> str:
    value = output.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise EmptyOutputError(
            f"fal request {request_id} completed without a {key} URL: run the node again or "
            "add a fallback edge on 'empty'."
        )
    return url


# -- text to image ---------------------------------------------------------------------------
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
    """Draw ``prompt`` with a fal image app (FLUX) and save the first image as
    ``output_name`` (the extension follows the real format).

    ``width`` x ``height`` go as ``image_size: {width, height}`` (FLUX on fal takes a preset
    name or a size object); the ``image_size`` parameter overrides it. One image is asked for.
    """
    if seed is not None:  # the seed port: the request's ``seed`` field
        config = config.with_parameters(seed=seed)
    app = app_id(config.model.provider_model_name)
    inputs: dict[str, Any] = {"num_images": 1}
    if width and height:
        inputs["image_size"] = {"width": int(width), "height": int(height)}
    inputs.update(_inputs(config))
    inputs[_field(config, "prompt_field", "prompt")] = prompt
    request_id, output = await _run(ctx, config, app, inputs)
    flags = output.get("has_nsfw_concepts")
    if isinstance(flags, list) and flags and flags[0] is True:
        # FLUX's safety checker answers a blacked-out image: nothing worth keeping.
        raise _policy_error(request_id, "the model's safety checker flagged the image")
    url = _file_url(output, "images", request_id)
    cap = int(config.parameters.get("max_download_bytes") or MAX_IMAGE_BYTES)
    if url.startswith("data:"):  # sync_mode: true answers data URIs
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


# -- image and text to video -----------------------------------------------------------------
@register(Conversion.IMAGE_AND_TEXT_TO_VIDEO, PROVIDER)
async def image_and_text_to_video(
    ctx: RunContext, image: Image, text: str, config: ModelConfig, *, output_name: str
) -> Video:
    """Animate ``image`` as ``text`` describes with a fal video app (Kling, Seedance); the MP4
    is saved as ``output_name`` (with an ``.mp4`` extension)."""
    app = app_id(config.model.provider_model_name)
    poll_bounds(ctx, config.parameters)  # a bad bound is refused before the image is read
    sent = await prepared(image, IMAGE_LIMITS)
    inputs = _inputs(config)
    if "duration" in inputs:  # Kling and Seedance on fal take the seconds as a string
        inputs["duration"] = str(inputs["duration"])
    inputs[_field(config, "image_field", "image_url")] = sent.data_url()
    inputs[_field(config, "prompt_field", "prompt")] = text.strip()
    request_id, output = await _run(ctx, config, app, inputs)
    url = _file_url(output, "video", request_id)
    name = output_name
    if not name.lower().endswith(".mp4"):
        name = str(Path(name).with_suffix(".mp4"))
    cap = int(config.parameters.get("max_download_bytes") or MAX_VIDEO_BYTES)
    if url.startswith("data:"):
        return await ctx.store.asave_video(name, _data_uri(url, cap))
    path = await ctx.store.download(ctx.client, url, name, max_bytes=cap, provider=_NAME)
    return await ctx.store.aopen_video(path)


# -- the model list --------------------------------------------------------------------------
def _platform_url(ctx: RunContext) -> str:
    base = ctx.keys.base_url(PROVIDER)
    return PLATFORM_URL if base == DEFAULT_BASE_URLS[PROVIDER] else f"{base}/v1"


async def list_models(ctx: RunContext) -> list[str]:
    """The endpoint ids of every active fal model (``fal-ai/flux/dev``...), all pages."""

    def parse(response: httpx.Response) -> tuple[list[str], str | None]:
        answer = parse_json(response, _NAME)
        models = answer.get("models") if isinstance(answer, dict) else None
        if not isinstance(models, list):
            raise _malformed("a model list without models", response)
        ids = [str(m["endpoint_id"]) for m in models if isinstance(m, dict) and "endpoint_id" in m]
        cursor = answer.get("next_cursor") if answer.get("has_more", True) else None
        return ids, str(cursor) if cursor else None

    url = f"{_platform_url(ctx)}/models"
    found: list[str] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"limit": PAGE_SIZE, "status": "active"}
        if cursor:
            params["cursor"] = cursor
        ids, cursor = await request(
            ctx,
            _NAME,
            "GET",
            url,
            parse=parse,
            headers=_headers(ctx),
            params=params,
            describe=describe,
            hook=_hook,
        )
        found += ids
        if cursor is None:
            break
    return found
