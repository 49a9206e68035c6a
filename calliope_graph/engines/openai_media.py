"""OpenAI engines for media: images (DALL-E, GPT image models), vision analysis, Whisper
transcription and speech.

The text engines (chat, completions, structured output) and the shared plumbing (base URL,
auth, error description, posting) live in :mod:`calliope_graph.engines.openai`; these engines
post through the same helper, so retries, error mapping and ``extra_body`` work the same.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import parse_json
from calliope_graph.engines._llm import ANALYSIS_PROMPT, analysis_from_answer
from calliope_graph.engines._params import form_fields, pick
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._sizes import FIXED_SIZES, size_family
from calliope_graph.engines._speech import audio_bytes, pcm_to_wav, save_speech
from calliope_graph.engines._stream import wants_previews
from calliope_graph.engines.openai import (
    _NAME,
    PROVIDER,
    _auth,
    _base,
    _chat_params,
    _message_text,
    _post,
    _words,
    content_policy_hook,
    describe,
)
from calliope_graph.errors import EmptyOutputError, InvalidRequestError, TransientProviderError
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
    "image_analysis",
    "image_size",
    "text_to_image",
    "text_to_speech",
]

log = logging.getLogger("calliope_graph.engines.openai")

#: Parameters passed through to each endpoint when present in ``config.parameters``.
IMAGE_PARAMS = _words(
    "quality style user response_format background moderation output_format output_compression"
)
TRANSCRIPTION_PARAMS = frozenset(("temperature", "prompt"))

#: Sizes each image model accepts (PROVIDERS.md §1.3); ``image_size`` picks the nearest.
#: The table lives in ``engines/_sizes.py``, where validation reads it without this module.
IMAGE_SIZES = FIXED_SIZES
#: Largest generated image downloaded from a returned URL.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
#: What a vision chat image may be: PNG, JPEG, WebP or GIF, about 20 MB (commonly cited,
#: unconfirmed); ``detail: high`` works within 2048x2048, so larger images are scaled to that
#: before sending instead of shipping pixels the API throws away (``media.prepared``).
IMAGE_LIMITS = ImageLimits(_NAME, max_side=2048, max_bytes=20 * 1024 * 1024)
#: Transcription uploads: at most 25 MiB per request (the API answers 413 "Maximum content
#: size limit (26214400) exceeded" past it), in flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg,
#: wav or webm: platform.openai.com/docs/guides/speech-to-text ("File uploads are currently
#: limited to 25 MB") and help.openai.com/en/articles/7031512-whisper-api-faq ("25 MiB").
AUDIO_LIMITS = AudioLimits(
    _NAME,
    max_bytes=25 * 1024 * 1024,
    formats=frozenset(
        ("audio/flac", "audio/mp4", "audio/mpeg", "audio/ogg", "audio/wav", "audio/webm")
    ),
    where="one transcription upload",
    fix="split it into parts under 25 MiB, or compress it (e.g. MP3 at 64 kbit/s holds about "
    "50 minutes)",
)
#: Reference images of an edit: PNG, WebP or JPEG under 50 MB each (ImageEditParams.image).
EDIT_IMAGE_LIMITS = ImageLimits(
    _NAME,
    formats=frozenset(("image/png", "image/webp", "image/jpeg")),
    max_side=4096,
    max_bytes=50 * 1024 * 1024,
)


# -- text -> image -------------------------------------------------------------------------
def image_size(model: str, width: int | None, height: int | None) -> str | None:
    """The ``size`` to request from ``model`` for a wanted width x height.

    Known models get the accepted size nearest in shape first, then in area (dall-e-2:
    256/512/1024 squares; dall-e-3: 1024x1024, 1792x1024, 1024x1792; GPT image models:
    1024x1024, 1536x1024, 1024x1536). Other models get ``WxH`` as asked. None when neither
    dimension is given (the provider's default).
    """
    if not width and not height:
        return None
    w = width or height or 1024
    h = height or width or 1024
    family = size_family(model)
    if family is None:
        return f"{w}x{h}"

    def distance(size: tuple[int, int]) -> float:
        shape = abs(math.log((size[0] / size[1]) / (w / h)))
        area = abs(math.log((size[0] * size[1]) / (w * h)))
        return shape * 4 + area

    best = min(IMAGE_SIZES[family], key=distance)
    return f"{best[0]}x{best[1]}"


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
) -> Image:
    """Draw ``prompt`` with dall-e-2, dall-e-3 or a GPT image model; save it as
    ``output_name`` (the extension follows the real format). ``reference_images`` (GPT
    image models) are sent to ``/images/edits`` as ``image[]`` files, up to 16 PNG, WebP or
    JPEG files under 50 MB (https://platform.openai.com/docs/api-reference/images/createEdit;
    the SDK's ``ImageEditParams.image``), with the same fields as a generation.

    DALL-E answers are requested as ``b64_json`` unless ``response_format: url`` is set, in
    which case the image is downloaded (capped at MAX_IMAGE_BYTES). A safety refusal is a
    ContentPolicyError. A GPT image model streams partial images when the node asks for
    ``previews`` and someone listens (engines/_openai_image_stream.py).
    """
    model = config.model.provider_model_name
    params = pick(config.parameters, IMAGE_PARAMS)
    gpt_image = model.startswith("gpt-image")
    if gpt_image:
        params.pop("response_format", None)  # GPT image models always answer in base64
        params.pop("style", None)
    else:
        params.setdefault("response_format", "b64_json")
    body: dict[str, Any] = {"model": model, "prompt": prompt, "n": 1, **params}
    size = image_size(model, width, height) or config.parameters.get("size")
    if size:
        body["size"] = size
    previews = wants_previews(config.parameters) if gpt_image else 0
    files: list[Any] = []
    for index, reference in enumerate(reference_images[:16]):
        sent = await prepared(reference, EDIT_IMAGE_LIMITS)
        ext = sent.mime.split("/")[-1]
        files.append(("image[]", (f"reference-{index}.{ext}", sent.data, sent.mime)))
    form = {k: str(v) for k, v in body.items()} if files else None
    if previews:  # someone listens: partial images as the model draws (a node's previews)
        from calliope_graph.engines._openai_image_stream import stream_image

        return await stream_image(
            ctx,
            config,
            url=f"{_base(ctx, config)}/images/{'edits' if files else 'generations'}",
            headers=_auth(ctx, config),
            output_name=output_name,
            previews=previews,
            json_body=None if files else body,
            form=form,
            files=files or None,
            describe=describe,
            hook=content_policy_hook,
        )
    if files:
        answer = await _post(ctx, config, "/images/edits", data=form, files=files)
    else:
        answer = await _post(ctx, config, "/images/generations", json_body=body)
    return await _saved_image(ctx, answer, model, output_name)


async def _saved_image(ctx: RunContext, answer: Any, model: str, output_name: str) -> Image:
    """The image of an Images API answer (``b64_json`` or a ``url`` to download), saved."""
    items = answer.get("data") if isinstance(answer, dict) else None
    item = items[0] if isinstance(items, list) and items else None
    if not isinstance(item, dict):
        raise EmptyOutputError(
            f"openai ({model}) returned no image for the prompt: try again or add a fallback "
            "edge on 'empty'."
        )
    if item.get("revised_prompt"):
        log.info("openai (%s) revised the prompt to: %s", model, item["revised_prompt"])
    if item.get("b64_json"):
        try:
            raw = base64.b64decode(item["b64_json"], validate=True)
        except (binascii.Error, ValueError):
            raise TransientProviderError(
                f"openai ({model}) returned image data that is not valid base64; try again.",
                provider=_NAME,
                code="malformed_body",
            ) from None
        return await ctx.store.asave_image(output_name, raw)
    if item.get("url"):
        path = await ctx.store.download(
            ctx.client, str(item["url"]), output_name, max_bytes=MAX_IMAGE_BYTES, provider=_NAME
        )
        image = await ctx.store.asave_image(output_name, ctx.store.read_download(path))
        if Path(image.path) != path:
            path.unlink(missing_ok=True)  # saved again under the real format's extension
        return image
    raise EmptyOutputError(
        f"openai ({model}) returned an image entry with neither b64_json nor url: try again "
        "or add a fallback edge on 'empty'."
    )


# -- image analysis ------------------------------------------------------------------------
@register(Conversion.IMAGE_ANALYSIS, PROVIDER)
async def image_analysis(ctx: RunContext, image: Image, config: ModelConfig) -> ImageAnalysis:
    """Describe ``image`` with a vision chat model answering in JSON (description,
    captions, tags, objects, text). An ``analysis_prompt`` parameter replaces the prompt;
    ``detail`` (low/high/auto) sets the image detail."""
    model = config.model.provider_model_name
    prompt = str(config.parameters.get("analysis_prompt") or ANALYSIS_PROMPT)
    detail = str(config.parameters.get("detail") or "auto")
    sent = await prepared(image, IMAGE_LIMITS)
    content = [
        {"type": "text", "text": prompt},
        {"type": "image_url", "image_url": {"url": sent.data_url(), "detail": detail}},
    ]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "response_format": {"type": "json_object"},
        **_chat_params(config),
    }

    def parse(response: httpx.Response) -> ImageAnalysis:
        # Inside the retry loop: an answer that is not a JSON object is asked for again.
        text = _message_text(parse_json(response, _NAME), model)
        return analysis_from_answer(_NAME, model, text, status=response.status_code)

    result: ImageAnalysis = await _post(
        ctx, config, "/chat/completions", json_body=body, parse=parse
    )
    return result


# -- audio -> text -------------------------------------------------------------------------
@register(Conversion.AUDIO_TO_TEXT, PROVIDER)
async def audio_to_text(
    ctx: RunContext, audio: Audio, config: ModelConfig, *, language: str | None = None
) -> str:
    """Transcribe ``audio`` with Whisper (``/audio/transcriptions``, multipart)."""
    model = config.model.provider_model_name
    fields: dict[str, Any] = {"model": model, "response_format": "json"}
    if language:
        fields["language"] = language
    fields.update(form_fields(pick(config.parameters, TRANSCRIPTION_PARAMS)))
    check_audio(audio, AUDIO_LIMITS, model)  # before the upload: not the provider's 413
    raw = audio.read_bytes()
    answer = await _post(
        ctx,
        config,
        "/audio/transcriptions",
        data=fields,
        files={"file": (audio.name, raw, audio.mime)},
    )
    text = answer.get("text") if isinstance(answer, dict) else None
    if text is None:
        raise EmptyOutputError(
            f"openai ({model}) returned a transcription without text: check the audio or add "
            "a fallback edge on 'empty'."
        )
    return str(text)


# -- text -> speech ------------------------------------------------------------------------
#: ``response_format`` -> the container the answer comes in (None: raw PCM, 24 kHz 16-bit
#: mono little-endian, saved wrapped in a WAV header).
SPEECH_FORMATS: dict[str, str | None] = {
    "mp3": "mp3",
    "opus": "ogg",
    "aac": "aac",
    "flac": "flac",
    "wav": "wav",
    "pcm": None,
}
#: An output name's extension -> the ``response_format`` asked for when none is configured.
SPEECH_SUFFIXES = {
    ".mp3": "mp3",
    ".opus": "opus",
    ".ogg": "opus",
    ".aac": "aac",
    ".flac": "flac",
    ".wav": "wav",
    ".pcm": "pcm",
}
SPEECH_PCM_RATE = 24_000
SPEECH_MAX_CHARS = 4096
SPEECH_VOICE = "alloy"


def speech_format(config: ModelConfig, output_name: str) -> str:
    """The ``response_format``: the configured one, else the output name's extension's,
    else mp3 (OpenAI's default)."""
    configured = config.parameters.get("response_format")
    if configured is None:
        return SPEECH_SUFFIXES.get(Path(output_name).suffix.lower(), "mp3")
    fmt = str(configured)
    if fmt not in SPEECH_FORMATS:
        raise InvalidRequestError(
            f"openai speech: response_format {fmt!r} of model config {config.slug!r} is not "
            f"one of {', '.join(SPEECH_FORMATS)}.",
            provider=_NAME,
            code="invalid_response_format",
        )
    return fmt


@register(Conversion.TEXT_TO_SPEECH, PROVIDER)
async def text_to_speech(
    ctx: RunContext,
    text: str,
    config: ModelConfig,
    *,
    output_name: str,
    voice: str | None = None,
) -> Audio:
    """Speak ``text`` with tts-1, tts-1-hd or gpt-4o-mini-tts (``/audio/speech``); save it as
    ``output_name`` (the extension follows the format; raw ``pcm`` is saved as WAV).

    ``voice`` (else the ``voice`` parameter, else alloy), ``response_format`` (else the output
    name's extension, else mp3), ``speed`` (0.25-4.0) and ``instructions`` (gpt-4o-mini-tts
    only; dropped with a note for the tts-1 models, which do not take it) come from the
    model config. Text over OpenAI's 4,096 characters is refused before anything is paid.
    """
    model = config.model.provider_model_name
    if not text.strip():
        raise InvalidRequestError(
            f"openai ({model}): there is no text to speak (the input is empty).",
            provider=_NAME,
            code="empty_input",
        )
    if len(text) > SPEECH_MAX_CHARS:
        raise InvalidRequestError(
            f"openai ({model}): the text is {len(text)} characters, over the speech endpoint's "
            f"{SPEECH_MAX_CHARS}: split it (one narration per scene) or use a provider that "
            "takes longer texts (ElevenLabs).",
            provider=_NAME,
            code="string_above_max_length",
        )
    fmt = speech_format(config, output_name)
    params = pick(config.parameters, ("speed", "instructions"))
    if "instructions" in params and model.startswith("tts-1"):
        log.info("openai: %s does not take instructions; they were not sent", model)
        params.pop("instructions")
    body: dict[str, Any] = {
        "model": model,
        "input": text,
        "voice": voice or str(config.parameters.get("voice") or SPEECH_VOICE),
        "response_format": fmt,
        **params,
    }
    container = SPEECH_FORMATS[fmt]
    data: bytes = await _post(
        ctx,
        config,
        "/audio/speech",
        json_body=body,
        parse=lambda r: audio_bytes(r, _NAME, model, container),
    )
    if container is None:
        return await save_speech(ctx, output_name, pcm_to_wav(data, SPEECH_PCM_RATE), "wav")
    return await save_speech(ctx, output_name, data, container)
