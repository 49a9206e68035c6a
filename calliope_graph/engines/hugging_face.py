"""Hugging Face Inference API engines: text generation, text to image, captioning, speech.

Every call is ``POST {base}/models/{model_id}`` with ``Authorization: Bearer hf_…``, where
the base is ``ctx.keys.base_url("hugging_face")`` (``https://router.huggingface.co/hf-inference``
by default; ``HF_BASE_URL`` points it at the legacy ``api-inference.huggingface.co`` or a
self-hosted server). A model name that is a full ``https://`` URL (an Inference Endpoint)
is called as is.

A model that is still loading answers 503 ``{"error": "… is currently loading",
"estimated_time": s}``. The engine waits that long (at least ``ctx.poll.interval``) and asks
again, for at most ``ctx.poll.timeout`` seconds (or the ``wait_for_model_timeout``
parameter, or ``poll_timeout``), then raises ProviderTimeoutError naming the model (the
engines' one polling loop, ``_poll``). The ``wait_for_model: true``
parameter asks the server to hold the request until the model is ready instead
(``X-Wait-For-Model`` header). Other failures go through the shared request layer: 401 is
AuthenticationError, 429 and 5xx are retried, ``{"error": "…"}`` (or a list) is read for
the message. ``extra_body`` (a dict) is merged into the JSON body last; raw-bytes requests
(captioning, speech) given one are sent as JSON with the bytes base64-encoded in ``inputs``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import bearer, parse_json, request
from calliope_graph.engines._params import extra_body, pick, with_extra_body
from calliope_graph.engines._poll import Waiting, poll_bounds, poll_job
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.errors import (
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    ProviderError,
    TransientProviderError,
)
from calliope_graph.media import (
    Audio,
    AudioLimits,
    Image,
    ImageAnalysis,
    ImageLimits,
    check_audio,
    prepared,
)

__all__ = [
    "audio_to_text",
    "describe",
    "image_analysis",
    "model_url",
    "text_to_image",
    "text_to_text",
]

log = logging.getLogger("calliope_graph.engines.hugging_face")

PROVIDER = InferenceModelProvider.HUGGINGFACE
_NAME = PROVIDER.value
T = TypeVar("T")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: ``parameters`` forwarded for each task when present in ``config.parameters``.
GENERATION_PARAMS = _words(
    "max_new_tokens temperature top_p top_k repetition_penalty do_sample seed stop "
    "truncate typical_p watermark"
)
IMAGE_PARAMS = _words("negative_prompt num_inference_steps guidance_scale seed scheduler")
#: Image-to-text bodies are the raw image. No documented limit: captioning models work well
#: below 2048 pixels, so larger images are scaled down before sending (``media.prepared``).
IMAGE_LIMITS = ImageLimits(
    _NAME,
    formats=frozenset(("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp")),
    max_side=2048,
)
#: The raw-bytes speech-recognition route reads what ffmpeg decodes (huggingface_hub's
#: ``InferenceClient.automatic_speech_recognition`` sends any audio file as is). Hugging Face
#: documents no size limit for it (PROVIDERS.md §5 and its limits table: "none documented"),
#: so only the library's own MAX_INPUT_BYTES applies: declared, not guessed.
AUDIO_LIMITS = AudioLimits(_NAME)
_LOADING = re.compile(r"currently loading|is loading", re.IGNORECASE)
_SAFETY = re.compile(r"nsfw|safety checker|content policy|unsafe content", re.IGNORECASE)


class _ModelLoading(ProviderError):
    """Internal: a 503 saying the model is loading (handled by the wait loop, never raised)."""


# -- plumbing ------------------------------------------------------------------------------
def model_url(ctx: RunContext, config: ModelConfig) -> str:
    """Where ``config``'s model is served: ``{base}/models/{id}``, or the model's own URL."""
    model = config.model.provider_model_name.strip()
    if model.startswith(("https://", "http://")):
        return model
    return f"{ctx.keys.base_url(PROVIDER)}/models/{model.strip('/')}"


def _headers(ctx: RunContext, config: ModelConfig, **extra: str) -> dict[str, str]:
    headers = bearer(ctx.keys.require(PROVIDER))
    if config.parameters.get("wait_for_model"):
        headers["X-Wait-For-Model"] = "true"
    headers.update(extra)
    return headers


def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from ``{"error": "…" | [...], "error_type"?}`` or the error headers."""
    code = response.headers.get("x-error-code")
    message = response.headers.get("x-error-message") or ""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, list):
            message = "; ".join(str(e) for e in error) or message
        elif error is not None:
            message = str(error)
        code = code or (str(body["error_type"]) if body.get("error_type") else None)
        if "estimated_time" in body or _LOADING.search(message):
            code = "model_loading"
    if not message:
        message = response.text[:300].strip() or response.reason_phrase
    return (message, code)


def _hook(loading: dict[str, float]) -> Callable[..., type[ProviderError] | None]:
    """The error hook for one call: records a loading model's estimate, spots safety refusals."""

    def hook(
        response: httpx.Response, message: str, code: str | None
    ) -> type[ProviderError] | None:
        if response.status_code == 503 and code == "model_loading":
            try:
                estimate = response.json().get("estimated_time")
            except (ValueError, AttributeError):
                estimate = None
            loading["estimated_time"] = float(estimate) if estimate else 0.0
            return _ModelLoading
        if response.status_code in (400, 422) and _SAFETY.search(message):
            return ContentPolicyError
        return None

    return hook


async def _call(
    ctx: RunContext,
    config: ModelConfig,
    parse: Callable[[httpx.Response], T],
    *,
    json_body: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> T:
    """POST to the model, waiting out 503 "model is loading" answers within the poll bound.

    ``extra_body`` is merged into a JSON body; a raw-bytes request (``content``) with an
    ``extra_body`` is sent as JSON instead, the bytes base64-encoded in ``inputs`` (the
    Inference API takes both forms).
    """
    model = config.model.provider_model_name
    url = model_url(ctx, config)
    sent_headers = {**_headers(ctx, config), **(headers or {})}
    if content is not None and extra_body(config.parameters, config.slug):
        json_body, content = {"inputs": base64.b64encode(content).decode("ascii")}, None
        sent_headers = {k: v for k, v in sent_headers.items() if k.lower() != "content-type"}
    if json_body is not None:
        json_body = with_extra_body(json_body, config.parameters, config.slug)
    interval, bound = poll_bounds(ctx, config.parameters, timeout_keys=("wait_for_model_timeout",))

    async def check() -> T | Waiting:
        loading: dict[str, float] = {}
        try:
            return await request(
                ctx,
                _NAME,
                "POST",
                url,
                parse=parse,
                headers=sent_headers,
                json_body=json_body,
                content=content,
                describe=describe,
                hook=_hook(loading),
            )
        except _ModelLoading:
            estimate = loading.get("estimated_time") or 0.0
        log.info("huggingface: %s is loading (it estimates %.0fs)", model, estimate)
        return Waiting(
            "model_loading",
            shown=f"loading (it estimated {estimate:.0f}s more)",
            retry_in=estimate,
            http_status=503,
        )

    return await poll_job(
        ctx,
        check,
        provider=_NAME,
        what="model",
        job_id=model,
        interval=interval,
        timeout=bound,
        advice="raise the bound (PollSettings.timeout, or the wait_for_model_timeout model "
        "parameter), set wait_for_model: true, or add a fallback edge on timeout",
    )


def _content_type(response: httpx.Response) -> str:
    kind: str = response.headers.get("content-type", "")
    return kind.split(";")[0].strip().lower()


def _wrong_task(model: str, got: str, wanted: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"huggingface model {model} answered with {got or 'no content type'} where {wanted} "
        "was expected: it probably serves a different task. Choose a model for this "
        "conversion.",
        provider=_NAME,
        status=200,
        code="wrong_task",
    )


def _generated_text(body: Any, model: str) -> str:
    """``generated_text`` from ``[{"generated_text"}]`` (or a bare object); retry otherwise."""
    item = body[0] if isinstance(body, list) and body else body
    if isinstance(item, dict) and isinstance(item.get("generated_text"), str):
        return str(item["generated_text"])
    raise TransientProviderError(
        f"huggingface model {model} answered without generated_text "
        f"({json.dumps(body)[:120]}); it was asked again.",
        provider=_NAME,
        code="malformed_output",
    )


# -- text -> text --------------------------------------------------------------------------
@register(Conversion.TEXT_TO_TEXT, PROVIDER)
async def text_to_text(ctx: RunContext, text: str, config: ModelConfig) -> str:
    """Continue ``text`` with a text-generation model; only the new text is returned."""
    model = config.model.provider_model_name
    params = {**pick(config.parameters, GENERATION_PARAMS), "return_full_text": False}
    body = {"inputs": text, "parameters": params}

    def parse(response: httpx.Response) -> str:
        kind = _content_type(response)
        if kind and kind != "application/json":
            raise _wrong_task(model, kind, "JSON text")
        return _generated_text(parse_json(response, _NAME), model)

    generated = await _call(ctx, config, parse, json_body=body)
    if generated.startswith(text):  # servers that ignore return_full_text echo the prompt
        generated = generated[len(text) :]
    if not generated.strip():
        raise EmptyOutputError(
            f"huggingface model {model} generated no text: raise max_new_tokens, change the "
            "prompt, or add a fallback edge on 'empty'."
        )
    return generated.strip()


# -- text -> image -------------------------------------------------------------------------
def _multiple_of_8(value: int) -> int:
    return max(8, round(value / 8) * 8)


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
    """Draw ``prompt`` with a text-to-image model; the raw image answer is saved as
    ``output_name`` with the extension of its real format.

    Width and height are rounded to multiples of 8 (diffusion models need that). The
    ``output_format`` parameter (``png`` by default, or ``jpeg``) sets the Accept header.
    """
    model = config.model.provider_model_name
    params = pick(config.parameters, IMAGE_PARAMS)
    if width:
        params["width"] = _multiple_of_8(width)
    if height:
        params["height"] = _multiple_of_8(height)
    body: dict[str, Any] = {"inputs": prompt}
    if params:
        body["parameters"] = params
    fmt = str(config.parameters.get("output_format") or "png").lower()
    accept = "image/jpeg" if fmt in ("jpg", "jpeg") else "image/png"

    def parse(response: httpx.Response) -> bytes:
        kind = _content_type(response)
        if kind.startswith("image/"):
            return response.content
        if kind == "application/json":
            raise TransientProviderError(
                f"huggingface model {model} answered JSON instead of an image "
                f"({response.text[:120]!r}); it was asked again.",
                provider=_NAME,
                status=response.status_code,
                code="malformed_body",
            )
        raise _wrong_task(model, kind, "an image")

    raw = await _call(ctx, config, parse, json_body=body, headers={"Accept": accept})
    return await ctx.store.asave_image(output_name, raw)


# -- image analysis ------------------------------------------------------------------------
@register(Conversion.IMAGE_ANALYSIS, PROVIDER)
async def image_analysis(ctx: RunContext, image: Image, config: ModelConfig) -> ImageAnalysis:
    """Caption ``image`` with an image-to-text model (the raw bytes are the request body)."""
    model = config.model.provider_model_name

    def parse(response: httpx.Response) -> str:
        return _generated_text(parse_json(response, _NAME), model).strip()

    sent = await prepared(image, IMAGE_LIMITS)
    caption = await _call(
        ctx, config, parse, content=sent.data, headers={"Content-Type": sent.mime}
    )
    if not caption:
        raise EmptyOutputError(
            f"huggingface model {model} returned an empty caption: try another captioning "
            "model or add a fallback edge on 'empty'."
        )
    description = caption[0].upper() + caption[1:]
    if description[-1] not in ".!?":
        description += "."
    return ImageAnalysis(description=description, captions=[caption], sources=[_NAME])


# -- audio -> text -------------------------------------------------------------------------
@register(Conversion.AUDIO_TO_TEXT, PROVIDER)
async def audio_to_text(
    ctx: RunContext, audio: Audio, config: ModelConfig, *, language: str | None = None
) -> str:
    """Transcribe ``audio`` (the raw bytes, with their content type) with a speech model.

    The raw-bytes form takes no parameters, so ``language`` is not sent: Whisper models
    detect the language themselves.
    """
    model = config.model.provider_model_name
    if language:
        log.debug("huggingface: %s detects the language itself; %r not sent", model, language)

    def parse(response: httpx.Response) -> str:
        body = parse_json(response, _NAME)
        if isinstance(body, dict) and isinstance(body.get("text"), str):
            return str(body["text"])
        raise TransientProviderError(
            f"huggingface model {model} answered without text ({json.dumps(body)[:120]}); it "
            "was asked again.",
            provider=_NAME,
            code="malformed_output",
        )

    check_audio(audio, AUDIO_LIMITS, model)
    text = await _call(
        ctx, config, parse, content=audio.read_bytes(), headers={"Content-Type": audio.mime}
    )
    return text.strip()
