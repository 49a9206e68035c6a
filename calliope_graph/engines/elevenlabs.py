"""ElevenLabs engine: text to speech (``POST /v1/text-to-speech/{voice_id}``).

The key goes in the ``xi-api-key`` header; ``output_format`` is a query parameter
(``codec_samplerate[_bitrate]``: ``mp3_44100_128``, ``pcm_24000``, ``wav_44100``,
``opus_48000_64``...); the JSON body carries ``text``, ``model_id`` and ``voice_settings``
(``stability``, ``similarity_boost``, ``style``, ``use_speaker_boost``, ``speed``). The answer
is the audio bytes. Errors come as ``{"detail": {"status", "message"}}`` (a validation error
as FastAPI's ``{"detail": [{"loc", "msg", "type"}]}``); a 429 is either
``too_many_concurrent_requests`` (the plan's concurrency, which the shared limiter's
``elevenlabs`` concurrency keeps under) or ``system_busy``. Requests go through
:func:`calliope_graph.engines._http.request` (retries, error mapping, redaction, limiter).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx

from calliope_graph._usage import report_usage
from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import request
from calliope_graph.engines._params import pick, with_extra_body
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._speech import audio_bytes, pcm_to_wav, save_speech
from calliope_graph.errors import ContentPolicyError, InvalidRequestError, ProviderError
from calliope_graph.media import Audio

__all__ = ["content_policy_hook", "describe", "list_models", "output_format", "text_to_speech"]

log = logging.getLogger("calliope_graph.engines.elevenlabs")

PROVIDER = InferenceModelProvider.ELEVENLABS
_NAME = PROVIDER.value

#: George, one of ElevenLabs' default voices (every account has it).
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"
DEFAULT_FORMAT = "mp3_44100_128"
#: Body fields taken from the model config besides ``voice_settings``.
BODY_PARAMS = frozenset(
    ("language_code", "seed", "previous_text", "next_text", "apply_text_normalization")
)
VOICE_SETTINGS = frozenset(("stability", "similarity_boost", "style", "use_speaker_boost", "speed"))
#: An output name's extension -> the ``output_format`` asked for when none is configured.
SUFFIX_FORMATS = {
    ".mp3": "mp3_44100_128",
    ".wav": "wav_24000",
    ".pcm": "pcm_24000",
    ".ogg": "opus_48000_64",
    ".opus": "opus_48000_64",
}
#: ``output_format`` codec -> the container the answer comes in (None: raw 16-bit PCM).
CODECS: dict[str, str | None] = {"mp3": "mp3", "wav": "wav", "pcm": None, "opus": "ogg"}
_CONTENT_POLICY = frozenset(("bad_prompt", "content_policy_violation"))


def output_format(config: ModelConfig, output_name: str) -> tuple[str, str | None, int]:
    """(``output_format``, its container, its sample rate) from the model config, else the
    output name's extension, else mp3 at 44.1 kHz. μ-law and A-law are refused: they would
    not play as a file here."""
    fmt = str(
        config.parameters.get("output_format")
        or SUFFIX_FORMATS.get(Path(output_name).suffix.lower(), DEFAULT_FORMAT)
    )
    codec, _, rest = fmt.partition("_")
    rate_text = rest.split("_")[0]
    if codec not in CODECS or not rate_text.isdigit():
        raise InvalidRequestError(
            f"elevenlabs: output_format {fmt!r} of model config {config.slug!r} cannot be saved "
            "as a playable file: use mp3_<rate>_<bitrate> (e.g. mp3_44100_128), pcm_<rate>, "
            "wav_<rate> or opus_48000_<bitrate>.",
            provider=_NAME,
            code="invalid_output_format",
        )
    return fmt, CODECS[codec], int(rate_text)


def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from ``{"detail": {"status", "message"}}``, FastAPI's validation list
    ``{"detail": [{"loc", "msg"}]}`` or a bare ``{"detail": "..."}``."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, None)
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        message = str(detail.get("message") or detail.get("status") or response.reason_phrase)
        code = detail.get("status")
        if code in _CONTENT_POLICY:
            message += (
                " — rephrase the text (a censor_text node can rewrite it) or add a fallback "
                "edge on content_policy"
            )
        return (message, None if code is None else str(code))
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return ("; ".join(parts) or str(detail)[:300], "validation_error")
    return (str(detail)[:300], None)


def content_policy_hook(
    response: httpx.Response, message: str, code: str | None
) -> type[ProviderError] | None:
    """ElevenLabs' refusal of a text (``bad_prompt``, HTTP 400) is a ContentPolicyError."""
    if response.status_code == 400 and code in _CONTENT_POLICY:
        return ContentPolicyError
    return None


@register(Conversion.TEXT_TO_SPEECH, PROVIDER)
async def text_to_speech(
    ctx: RunContext,
    text: str,
    config: ModelConfig,
    *,
    output_name: str,
    voice: str | None = None,
) -> Audio:
    """Speak ``text`` with an ElevenLabs model (``model_id`` = the provider model name) in
    ``voice`` (a voice id; else the ``voice`` parameter, else George); save it as
    ``output_name`` (the extension follows the format; ``pcm_*`` is saved as WAV).

    ``output_format`` (else from the output name's extension, else ``mp3_44100_128``), the
    voice settings (``stability``, ``similarity_boost``, ``style``, ``use_speaker_boost``,
    ``speed``, or a ``voice_settings`` dict) and ``language_code``, ``seed``,
    ``previous_text``/``next_text`` come from the model config.
    """
    model = config.model.provider_model_name
    if not text.strip():
        raise InvalidRequestError(
            f"elevenlabs ({model}): there is no text to speak (the input is empty).",
            provider=_NAME,
            code="empty_input",
        )
    fmt, container, rate = output_format(config, output_name)
    voice_id = voice or str(config.parameters.get("voice") or DEFAULT_VOICE)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", voice_id):
        raise InvalidRequestError(
            f"elevenlabs: voice {voice_id!r} is not a voice id (letters, digits, '_' and '-', "
            "e.g. JBFqnCBsd6RMkjVDRZzb): copy the id from the voice library, not its name.",
            provider=_NAME,
            code="invalid_voice_id",
        )
    settings = dict(config.parameters.get("voice_settings") or {})
    settings.update(pick(config.parameters, VOICE_SETTINGS))
    body: dict[str, Any] = {"text": text, "model_id": model, **pick(config.parameters, BODY_PARAMS)}
    if settings:
        body["voice_settings"] = settings
    body = with_extra_body(body, config.parameters, config.slug)
    base = ctx.keys.base_url(PROVIDER)
    log.debug("elevenlabs: POST /v1/text-to-speech (model %s, %s)", model, fmt)
    data: bytes = await request(
        ctx,
        _NAME,
        "POST",
        f"{base}/v1/text-to-speech/{voice_id}",
        parse=lambda r: _charged(r, audio_bytes(r, _NAME, model, container)),
        headers={"xi-api-key": ctx.keys.require(PROVIDER), "accept": "audio/*"},
        json_body=body,
        params={"output_format": fmt},
        describe=describe,
        hook=content_policy_hook,
    )
    if container is None:
        return await save_speech(ctx, output_name, pcm_to_wav(data, rate), "wav")
    return await save_speech(ctx, output_name, data, container)


async def list_models(ctx: RunContext) -> list[str]:
    """The model ids ElevenLabs lists (``GET /v1/models``, a JSON array;
    https://elevenlabs.io/docs/api-reference/models/list). Used by ``models --check``."""

    def parse(response: httpx.Response) -> list[str]:
        body = response.json()
        return [str(m["model_id"]) for m in body if isinstance(m, dict) and "model_id" in m]

    return await request(
        ctx,
        _NAME,
        "GET",
        f"{ctx.keys.base_url(PROVIDER)}/v1/models",
        parse=parse,
        headers={"xi-api-key": ctx.keys.require(PROVIDER)},
        describe=describe,
    )


def _charged(response: httpx.Response, audio: bytes) -> bytes:
    """``audio``, with the characters ElevenLabs says it billed recorded on the call: the
    ``character-cost`` response header of text-to-speech
    (https://elevenlabs.io/docs/api-reference/text-to-speech/convert, response headers)."""
    cost = response.headers.get("character-cost")
    if cost is not None and cost.isdigit():
        report_usage(characters=int(cost))
    return audio
