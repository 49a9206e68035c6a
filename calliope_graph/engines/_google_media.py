"""Google (Gemini API) media engines: Gemini image and Imagen, Veo video, speech.

See :mod:`calliope_graph.engines.google` for the API; split out of ``google.py`` to
keep each module under 600 lines (registered when ``google`` is imported).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._google_base import (
    _NAME,
    API_VERSION,
    GEMINI_RATIOS,
    IMAGE_LIMITS,
    IMAGEN_RATIOS,
    MAX_VIDEO_BYTES,
    PROVIDER,
    SPEECH_RATE,
    SPEECH_VOICE,
    VEO_DEFAULT_DURATION,
    VEO_DURATIONS,
    VEO_RATIOS,
    _base,
    _body,
    _call,
    _headers,
    _image_part,
    _malformed,
    _parts,
    _system,
    _text,
    log,
)
from calliope_graph.engines._http import (
    parse_json,
    redact,
)
from calliope_graph.engines._params import pick, with_extra_body
from calliope_graph.engines._poll import Waiting, poll_bounds, poll_job
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._speech import pcm_to_wav, save_speech
from calliope_graph.errors import (
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    ProviderError,
    TransientProviderError,
)
from calliope_graph.media import (
    Audio,
    Image,
    Video,
    prepared,
)


# -- text -> image -------------------------------------------------------------------------
def nearest_ratio(width: int | None, height: int | None, ratios: Sequence[str]) -> str | None:
    """The ratio (``"16:9"``) closest in shape to ``width`` x ``height`` (None: not given)."""
    if not width and not height:
        return None
    w = width or height or 1
    h = height or width or 1

    def distance(ratio: str) -> float:
        a, b = (int(v) for v in ratio.split(":"))
        return abs(math.log((a / b) / (w / h)))

    return min(ratios, key=distance)


def _decode(data: Any, model: str) -> bytes:
    try:
        return base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(model, "media data that is not valid base64") from None


async def _gemini_image(
    ctx: RunContext,
    prompt: str,
    config: ModelConfig,
    output_name: str,
    ratio: str | None,
    reference_images: Sequence[Image] = (),
    seed: int | None = None,
) -> Image:
    """A Gemini image model (``generateContent`` answering an inline image part); see
    ai.google.dev/gemini-api/docs/image-generation. Reference images go after the prompt
    as ``inlineData`` parts ("Image editing (text-and-image-to-image)" and "Use up to 14
    reference images" there); ``seed`` is ``generationConfig.seed``
    (ai.google.dev/api/generate-content#generationconfig)."""
    model = config.model.provider_model_name
    image_config = dict(
        pick(config.parameters, ("image_size",), renames={"image_size": "imageSize"})
    )
    ratio = ratio or config.parameters.get("aspect_ratio")
    if ratio:
        image_config["aspectRatio"] = str(ratio)
    fields: dict[str, Any] = {"responseModalities": ["IMAGE"]}
    if image_config:
        fields["imageConfig"] = image_config
    if seed is not None:
        fields["seed"] = seed
    parts: list[dict[str, Any]] = [{"text": prompt}]
    parts += [await _image_part(reference) for reference in reference_images]
    contents = [{"role": "user", "parts": parts}]
    body = _body(config, contents, system=_system(config), **fields)

    def parse(response: httpx.Response) -> bytes:
        answer = parse_json(response, _NAME)
        parts = _parts(answer, model)
        for part in parts:
            inline = part.get("inlineData")
            if isinstance(inline, dict) and str(inline.get("mimeType", "")).startswith("image/"):
                return _decode(inline.get("data", ""), model)
        words = _text(parts).strip()
        finish = (answer.get("candidates") or [{}])[0].get("finishReason")
        raise EmptyOutputError(
            f"google ({model}) answered without an image (finishReason={finish}"
            + (f"; it wrote: {words[:160]!r}" if words else "")
            + "): rephrase the prompt as a picture to draw, or add a fallback edge on 'empty'."
        )

    raw: bytes = await _call(ctx, "POST", f"models/{model}:generateContent", model, parse, body)
    return await ctx.store.asave_image(output_name, raw)


async def _imagen(
    ctx: RunContext, prompt: str, config: ModelConfig, output_name: str, ratio: str | None
) -> Image:
    """Imagen (``:predict``; ai.google.dev/gemini-api/docs/imagen). Google shut Imagen down
    on the Gemini API (see catalog.yaml); this path serves accounts and compatible servers
    that still answer it."""
    model = config.model.provider_model_name
    parameters: dict[str, Any] = {"sampleCount": 1, "includeRaiReason": True}
    parameters.update(
        pick(
            config.parameters,
            ("person_generation", "image_size", "negative_prompt"),
            renames={
                "person_generation": "personGeneration",
                "image_size": "imageSize",
                "negative_prompt": "negativePrompt",
            },
        )
    )
    ratio = ratio or config.parameters.get("aspect_ratio")
    if ratio:
        parameters["aspectRatio"] = str(ratio)
    body = with_extra_body(
        {"instances": [{"prompt": prompt}], "parameters": parameters},
        config.parameters,
        config.slug,
    )

    def parse(response: httpx.Response) -> bytes:
        answer = parse_json(response, _NAME)
        if not isinstance(answer, dict):
            raise _malformed(model, "something that is not a prediction response")
        predictions = [p for p in answer.get("predictions") or [] if isinstance(p, dict)]
        for prediction in predictions:
            if prediction.get("bytesBase64Encoded"):
                return _decode(prediction["bytesBase64Encoded"], model)
        reasons = [str(p["raiFilteredReason"]) for p in predictions if p.get("raiFilteredReason")]
        if reasons:
            raise ContentPolicyError(
                f"google ({model}) filtered the image: {reasons[0][:300]} — soften the prompt "
                "or add a fallback edge on content_policy.",
                provider=_NAME,
                status=200,
                code="rai_filtered",
            )
        raise EmptyOutputError(
            f"google ({model}) returned no image for the prompt: try again or add a fallback "
            "edge on 'empty'."
        )

    raw: bytes = await _call(ctx, "POST", f"models/{model}:predict", model, parse, body)
    return await ctx.store.asave_image(output_name, raw)


@register(Conversion.TEXT_TO_IMAGE, PROVIDER)
async def text_to_image(
    ctx: RunContext,
    prompt: str,
    config: ModelConfig,
    *,
    output_name: str,
    width: int | None = None,
    height: int | None = None,
    reference_images: Sequence[Image] = (),
    seed: int | None = None,
) -> Image:
    """Draw ``prompt`` with a Gemini image model (``generateContent``) or Imagen
    (``imagen-*`` models, ``:predict``); saved as ``output_name`` (the extension follows
    the real format). ``width`` x ``height`` choose the nearest supported aspect ratio;
    Gemini image models also take ``reference_images`` and a ``seed``."""
    imagen = config.model.provider_model_name.startswith("imagen-")
    ratio = nearest_ratio(width, height, IMAGEN_RATIOS if imagen else GEMINI_RATIOS)
    if imagen:
        return await _imagen(ctx, prompt, config, output_name, ratio)
    return await _gemini_image(
        ctx, prompt, config, output_name, ratio, reference_images=reference_images, seed=seed
    )


# -- image + text -> video -----------------------------------------------------------------
def _veo_parameters(image: Image, config: ModelConfig) -> dict[str, Any]:
    params = config.parameters
    ratio = params.get("aspect_ratio")
    if ratio in (None, "", "auto"):
        ratio = nearest_ratio(image.width, image.height, VEO_RATIOS)
    elif ratio not in VEO_RATIOS:
        raise ConfigurationError(
            f"Veo makes {' or '.join(VEO_RATIOS)} videos, not {ratio!r}: set aspect_ratio to "
            "one of them, or to 'auto' to follow the image."
        )
    duration = params.get("duration", VEO_DEFAULT_DURATION)
    if duration not in VEO_DURATIONS:
        raise ConfigurationError(
            f"Veo makes videos of {', '.join(map(str, VEO_DURATIONS))} seconds, not "
            f"{duration!r}: change the duration model parameter."
        )
    out: dict[str, Any] = {"aspectRatio": ratio, "durationSeconds": int(duration)}
    out.update(
        pick(
            params,
            ("resolution", "person_generation", "negative_prompt", "seed"),
            renames={"person_generation": "personGeneration", "negative_prompt": "negativePrompt"},
        )
    )
    return out


def _operation_error(
    name: str, error: dict[str, Any], secrets: Sequence[str] = ()
) -> ProviderError:
    """The taxonomy error of a finished operation's ``error`` (a google.rpc.Status); its
    free-text message with any of ``secrets`` masked."""
    code = error.get("code")
    message = redact(str(error.get("message") or "no reason given"), secrets)[:400]
    text = f"google operation {name} failed (code {code}): {message}"
    if code == 3:  # INVALID_ARGUMENT
        return InvalidRequestError(
            f"{text} — fix the request (image, prompt, parameters).", provider=_NAME, code="3"
        )
    if re.search(r"safety|policy|guideline|responsible ai", message, re.IGNORECASE):
        return ContentPolicyError(
            f"{text} — change the prompt or image, or add a fallback edge on content_policy.",
            provider=_NAME,
            code=str(code),
        )
    return TransientProviderError(
        f"{text} — this may pass; run the node again or add a fallback edge on transient.",
        provider=_NAME,
        code=str(code),
    )


def _video_uri(operation: dict[str, Any], name: str, model: str, secrets: Sequence[str]) -> str:
    """The file URI of a finished Veo operation's video, or the taxonomy error of why none."""
    error = operation.get("error")
    if isinstance(error, dict):
        raise _operation_error(name, error, secrets)
    result = operation.get("response")
    videos = result.get("generateVideoResponse") if isinstance(result, dict) else None
    videos = videos if isinstance(videos, dict) else {}
    samples = [s for s in videos.get("generatedSamples") or [] if isinstance(s, dict)]
    video = samples[0].get("video") if samples else None
    uri = video.get("uri") if isinstance(video, dict) else None
    if not isinstance(uri, str) or not uri:
        reasons = videos.get("raiMediaFilteredReasons") or []
        if videos.get("raiMediaFilteredCount") or reasons:
            reason = str(reasons[0]) if reasons else "filtered"
            raise ContentPolicyError(
                f"google ({model}) operation {name} filtered the video: {reason[:300]} — change "
                "the prompt or image, or add a fallback edge on content_policy.",
                provider=_NAME,
                status=200,
                code="rai_media_filtered",
            )
        raise EmptyOutputError(
            f"google ({model}) operation {name} finished without a video: run the node again "
            "or add a fallback edge on 'empty'."
        )
    return uri


@register(Conversion.IMAGE_AND_TEXT_TO_VIDEO, PROVIDER)
async def image_and_text_to_video(
    ctx: RunContext,
    image: Image,
    text: str,
    config: ModelConfig,
    *,
    output_name: str,
    last_frame: Image | None = None,
    seed: int | None = None,
) -> Video:
    """Animate ``image`` as ``text`` describes with Veo (ai.google.dev/gemini-api/docs/veo):
    ``:predictLongRunning`` starts an operation, polled until ``done``; the video is then
    downloaded from its file URI (with the key) as ``output_name`` (``.mp4``).

    ``aspect_ratio`` (16:9 or 9:16; default: the nearest to the image), ``duration`` (4, 6
    or 8 s), ``resolution``, ``person_generation``, ``negative_prompt`` and ``seed`` are
    model parameters; ``poll_interval`` / ``poll_timeout`` bound the wait. ``last_frame``
    makes Veo interpolate from ``image`` to it (``instances[0].lastFrame``, shaped like
    ``image``; ai.google.dev/gemini-api/docs/video "first and last frames", and the
    google-genai SDK's GenerateVideosConfig.last_frame → ``instances[0].lastFrame``); a
    ``seed`` port overrides the ``seed`` parameter (``parameters.seed``).
    """
    model = config.model.provider_model_name
    interval, bound = poll_bounds(ctx, config.parameters)  # checked before anything is paid
    body = await _veo_body(image, text, config, last_frame, seed)
    name = await _start_operation(ctx, model, body)
    operation = await _finished_operation(ctx, name, model, interval, bound)
    uri = _video_uri(operation, name, model, ctx.keys.secrets())
    return await _download_video(ctx, uri, config, output_name)


async def _veo_body(
    image: Image, text: str, config: ModelConfig, last_frame: Image | None, seed: int | None
) -> dict[str, Any]:
    """The ``:predictLongRunning`` request: one instance (the image, the prompt, the last
    frame) and the model parameters, a ``seed`` port overriding the ``seed`` parameter."""
    sent = await prepared(image, IMAGE_LIMITS)
    instance: dict[str, Any] = {"image": {"bytesBase64Encoded": sent.b64(), "mimeType": sent.mime}}
    if text.strip():
        instance["prompt"] = text.strip()
    if last_frame is not None:
        last = await prepared(last_frame, IMAGE_LIMITS)
        instance["lastFrame"] = {"bytesBase64Encoded": last.b64(), "mimeType": last.mime}
    parameters = _veo_parameters(image, config)
    if seed is not None:
        parameters["seed"] = seed
    return with_extra_body(
        {"instances": [instance], "parameters": parameters},
        config.parameters,
        config.slug,
    )


async def _start_operation(ctx: RunContext, model: str, body: dict[str, Any]) -> str:
    """Start the Veo operation; its name (``models/.../operations/...``)."""

    def created(response: httpx.Response) -> str:
        answer = parse_json(response, _NAME)
        name = answer.get("name") if isinstance(answer, dict) else None
        if not isinstance(name, str) or not name:
            raise _malformed(model, "an operation without a name", response.status_code)
        return name

    name: str = await _call(ctx, "POST", f"models/{model}:predictLongRunning", model, created, body)
    log.info("google: operation %s started (%s)", name, model)
    return name


async def _finished_operation(
    ctx: RunContext, name: str, model: str, interval: float, bound: float
) -> dict[str, Any]:
    """Poll operation ``name`` every ``interval`` seconds until ``done`` (at most ``bound``
    seconds); the finished operation."""

    def polled(response: httpx.Response) -> dict[str, Any]:
        answer = parse_json(response, _NAME)
        if not isinstance(answer, dict):
            raise _malformed(model, "an operation poll that is not an operation")
        return answer

    async def check() -> dict[str, Any] | Waiting:
        operation: dict[str, Any] = await _call(ctx, "GET", name, model, polled)
        return operation if operation.get("done") else Waiting("running")

    return await poll_job(
        ctx,
        check,
        provider=_NAME,
        what="operation",
        job_id=name,
        label=model,
        interval=interval,
        timeout=bound,
        first=Waiting("running"),  # just started: wait an interval before the first poll
        advice=f"it may still finish: GET /{API_VERSION}/{name} later, raise the "
        "poll_timeout model parameter (or PollSettings.timeout), or add a fallback edge on "
        "timeout",
    )


async def _download_video(
    ctx: RunContext, uri: str, config: ModelConfig, output_name: str
) -> Video:
    """Download the video at ``uri`` as ``output_name`` (with a ``.mp4`` extension)."""
    target = (
        output_name
        if output_name.lower().endswith(".mp4")
        else str(Path(output_name).with_suffix(".mp4"))
    )
    max_bytes = int(config.parameters.get("max_download_bytes") or MAX_VIDEO_BYTES)
    path = await ctx.store.download(
        ctx.client,
        uri,
        target,
        max_bytes=max_bytes,
        provider=_NAME,
        headers=_file_headers(ctx, uri),
    )
    return await ctx.store.aopen_video(path)


def _file_headers(ctx: RunContext, uri: str) -> dict[str, str] | None:
    """The key for a file URI on the Gemini API's own origin (``files/...:download``), and
    nothing for any other host: the key must not leave Google's API (the download itself
    drops it on a redirect elsewhere, ``MediaStore.download``)."""
    api, target = httpx.URL(_base(ctx)), httpx.URL(uri)
    same = (api.scheme, api.host, api.port) == (target.scheme, target.host, target.port)
    return _headers(ctx) if same else None


# -- text -> speech ------------------------------------------------------------------------
def _pcm_rate(mime: str) -> int:
    """The sample rate of ``audio/L16;codec=pcm;rate=24000`` (24 kHz when unsaid)."""
    match = re.search(r"rate=(\d+)", mime)
    return int(match.group(1)) if match else SPEECH_RATE


@register(Conversion.TEXT_TO_SPEECH, PROVIDER)
async def text_to_speech(
    ctx: RunContext,
    text: str,
    config: ModelConfig,
    *,
    output_name: str,
    voice: str | None = None,
) -> Audio:
    """Speak ``text`` with a Gemini TTS model (``responseModalities: [AUDIO]`` and a prebuilt
    voice: ``voice``, else the ``voice`` parameter, else Kore;
    ai.google.dev/gemini-api/docs/speech-generation). Gemini answers raw 16-bit PCM; it is
    saved as a WAV file (``output_name`` with a ``.wav`` extension). A ``style`` parameter
    is said before the text ("Say cheerfully:")."""
    model = config.model.provider_model_name
    if not text.strip():
        raise InvalidRequestError(
            f"google ({model}): there is no text to speak (the input is empty).",
            provider=_NAME,
            code="empty_input",
        )
    style = config.parameters.get("style")
    spoken = f"{style}: {text}" if style else text
    name = voice or str(config.parameters.get("voice") or SPEECH_VOICE)
    contents = [{"role": "user", "parts": [{"text": spoken}]}]
    body = _body(
        config,
        contents,
        responseModalities=["AUDIO"],
        speechConfig={"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": name}}},
    )

    def parse(response: httpx.Response) -> tuple[bytes, int]:
        for part in _parts(parse_json(response, _NAME), model):
            inline = part.get("inlineData")
            if isinstance(inline, dict) and str(inline.get("mimeType", "")).startswith("audio/"):
                data = _decode(inline.get("data", ""), model)
                if data:
                    return data, _pcm_rate(str(inline["mimeType"]))
        raise EmptyOutputError(
            f"google ({model}) answered with no audio at all: try again, or add a fallback "
            "edge on 'empty'."
        )

    pcm, rate = await _call(ctx, "POST", f"models/{model}:generateContent", model, parse, body)
    return await save_speech(ctx, output_name, pcm_to_wav(pcm, rate), "wav")
