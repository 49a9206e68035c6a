"""Google (Gemini API) engine plumbing: constants, requests, error mapping, answers.

Shared by :mod:`calliope_graph.engines.google` (text, analysis, structured output,
transcription) and :mod:`calliope_graph.engines._google_media` (images, video, speech);
split out of ``google.py`` to keep each module under 600 lines.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import (
    parse_json,
    request,
)
from calliope_graph.engines._params import pick, with_extra_body
from calliope_graph.errors import (
    AuthenticationError,
    ContentPolicyError,
    EmptyOutputError,
    ProviderError,
    TransientProviderError,
)
from calliope_graph.media import (
    AudioLimits,
    Image,
    ImageLimits,
    prepared,
)

log = logging.getLogger("calliope_graph.engines.google")

PROVIDER = InferenceModelProvider.GOOGLE
_NAME = PROVIDER.value
ModelT = TypeVar("ModelT", bound=BaseModel)

API_VERSION = "v1beta"
#: Model parameters sent in ``generationConfig``: our (OpenAI-style) names -> Gemini's.
#: (ai.google.dev/api/generate-content#generationconfig)
GENERATION_RENAMES = {
    "top_p": "topP",
    "top_k": "topK",
    "max_tokens": "maxOutputTokens",
    "max_output_tokens": "maxOutputTokens",
    "stop": "stopSequences",
    "stop_sequences": "stopSequences",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "candidate_count": "candidateCount",
}
GENERATION_PARAMS = frozenset(
    (
        "temperature",
        "topP",
        "topK",
        "maxOutputTokens",
        "stopSequences",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "thinkingConfig",
    )
)
#: Candidate finish reasons that mean the answer was withheld for policy reasons
#: (ai.google.dev/api/generate-content#FinishReason).
POLICY_FINISH = frozenset(
    (
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    )
)
#: Inline data: the whole request must stay under 20 MB (ai.google.dev/gemini-api/docs/
#: image-understanding, "inline image data"); larger media need the Files API.
MAX_INLINE_BYTES = 20 * 1024 * 1024
#: Transcription sends the audio inline (base64 in the JSON body), so the same 20 MB holds
#: (ai.google.dev/gemini-api/docs/audio: "Always use the Files API when the total request
#: size ... is larger than 20 MB"); this engine does not upload to the Files API.
AUDIO_LIMITS = AudioLimits(
    "google",
    max_bytes=MAX_INLINE_BYTES,
    measure="base64",
    where="inline audio",
    fix="split it into shorter parts, compress it (MP3 or OGG), or use another "
    "transcription provider",
)
#: Images are sent inline as PNG, JPEG or WebP; Gemini works at most 3072 px a side
#: (larger ones are scaled down on arrival), so they are scaled here first.
IMAGE_LIMITS = ImageLimits(
    _NAME,
    formats=frozenset(("image/png", "image/jpeg", "image/webp")),
    max_side=3072,
    max_bytes=15 * 1024 * 1024,
    measure="base64",
)
#: Audio types Gemini reads inline (ai.google.dev/gemini-api/docs/audio); other spellings
#: of the same types are renamed.
AUDIO_TYPES = {
    "audio/wav": "audio/wav",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/mp3": "audio/mp3",
    "audio/mpeg": "audio/mp3",
    "audio/aiff": "audio/aiff",
    "audio/x-aiff": "audio/aiff",
    "audio/aac": "audio/aac",
    "audio/ogg": "audio/ogg",
    "audio/flac": "audio/flac",
    "audio/x-flac": "audio/flac",
}
#: Aspect ratios of Gemini image models' ``imageConfig`` (ai.google.dev/gemini-api/docs/
#: image-generation) and of Imagen's ``aspectRatio`` (ai.google.dev/gemini-api/docs/imagen).
GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
#: Veo's aspect ratios and durations (ai.google.dev/gemini-api/docs/veo).
VEO_RATIOS = ("16:9", "9:16")
VEO_DURATIONS = (4, 6, 8)
VEO_DEFAULT_DURATION = 8
#: Largest generated video downloaded.
MAX_VIDEO_BYTES = 500 * 1024 * 1024
#: The default prebuilt voice (ai.google.dev/gemini-api/docs/speech-generation, "Kore").
SPEECH_VOICE = "Kore"
#: Speech arrives as 16-bit mono PCM; its rate is in the mime type (24 kHz documented).
SPEECH_RATE = 24_000
TRANSCRIBE_PROMPT = (
    "Transcribe this audio exactly, word for word. Answer with the transcript only, no "
    "commentary, no timestamps."
)


# -- plumbing ------------------------------------------------------------------------------
def _base(ctx: RunContext) -> str:
    return f"{ctx.keys.base_url(PROVIDER)}/{API_VERSION}"


def _headers(ctx: RunContext) -> dict[str, str]:
    return {"x-goog-api-key": ctx.keys.require(PROVIDER)}


def _details(body: Any) -> list[dict[str, Any]]:
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _reason(body: Any) -> str | None:
    """The ``google.rpc.ErrorInfo`` reason of an error body (``API_KEY_INVALID``...)."""
    for detail in _details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo") and detail.get("reason"):
            return str(detail["reason"])
    return None


def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from ``{"error": {"code", "message", "status", "details"}}``: the
    code is the ErrorInfo reason when there is one, else the status (``NOT_FOUND``)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, None)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return (str(body)[:300], None)
    message = str(error.get("message") or response.reason_phrase).strip()
    code = _reason(body) or error.get("status")
    if response.status_code == 404 and "ListModels" in message:
        message += " (calliope-graph models --check lists what your key can call)"
    return (message, None if code is None else str(code))


def error_hook(
    response: httpx.Response, message: str, code: str | None
) -> type[ProviderError] | None:
    """Google answers a wrong key with 400 ``API_KEY_INVALID``: an authentication error."""
    if response.status_code == 400 and code in ("API_KEY_INVALID", "API_KEY_EXPIRED"):
        return AuthenticationError
    return None


def retry_delay(response: httpx.Response) -> float | None:
    """Seconds a 429 asks to wait: its ``google.rpc.RetryInfo.retryDelay`` (``"32s"``)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    for detail in _details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


#: Tokens Gemini counts for one inline image (ai.google.dev/gemini-api/docs/tokens: 258 for
#: an image up to 384 px a side; larger ones are tiled, so this is a floor).
IMAGE_TOKENS = 258


def estimate_tokens(body: dict[str, Any] | None) -> int:
    """A rough token count of a ``generateContent`` body for ``tpm`` limits: characters / 4
    of its text parts, :data:`IMAGE_TOKENS` per inline image, plus ``maxOutputTokens``. The
    answer's ``usageMetadata.totalTokenCount`` corrects it (``_http._settle_usage``)."""
    if not body or "contents" not in body:
        return 0
    chars = images = 0
    turns = [*(body.get("contents") or []), body.get("systemInstruction") or {}]
    for turn in turns:
        parts = turn.get("parts") if isinstance(turn, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                chars += len(part["text"])
            elif "inlineData" in part:
                images += 1
    output = (body.get("generationConfig") or {}).get("maxOutputTokens")
    output = output if isinstance(output, int) and not isinstance(output, bool) else 0
    return math.ceil(chars / 4) + images * IMAGE_TOKENS + output


async def _call(
    ctx: RunContext,
    method: str,
    path: str,
    model: str | None,
    parse: Callable[[httpx.Response], Any],
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """One Gemini API call through ``_http.request`` (retries, limits, error mapping)."""
    log.debug("google: %s %s", method, path)
    return await request(
        ctx,
        _NAME,
        method,
        f"{_base(ctx)}/{path}",
        parse=parse,
        headers=_headers(ctx),
        json_body=body,
        params=params,
        describe=describe,
        hook=error_hook,
        retry_after=retry_delay,
        model=model,
        tokens=estimate_tokens(body),
    )


def _generation(config: ModelConfig, **fields: Any) -> dict[str, Any]:
    """``generationConfig``: the model parameters Gemini takes, then ``fields``."""
    picked = pick(config.parameters, GENERATION_PARAMS, renames=GENERATION_RENAMES)
    if "stopSequences" in picked and isinstance(picked["stopSequences"], str):
        picked["stopSequences"] = [picked["stopSequences"]]
    return {**picked, **fields}


def _body(
    config: ModelConfig,
    contents: list[dict[str, Any]],
    *,
    system: str | None = None,
    **generation: Any,
) -> dict[str, Any]:
    """A ``generateContent`` body, ``extra_body`` merged in last."""
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    gen = _generation(config, **generation)
    if gen:
        body["generationConfig"] = gen
    return with_extra_body(body, config.parameters, config.slug)


def _system(config: ModelConfig) -> str | None:
    system = config.parameters.get("system_prompt")
    return str(system) if system else None


def _malformed(model: str, what: str, status: int | None = None) -> TransientProviderError:
    return TransientProviderError(
        f"google ({model}) answered with {what}; it was asked again.",
        provider=_NAME,
        status=status,
        code="malformed_body",
    )


def _blocked(model: str, feedback: Any) -> ContentPolicyError | None:
    """A ContentPolicyError when ``promptFeedback`` says the prompt was blocked."""
    if not isinstance(feedback, dict) or not feedback.get("blockReason"):
        return None
    reason = str(feedback["blockReason"])
    return ContentPolicyError(
        f"google ({model}) blocked the prompt (promptFeedback.blockReason={reason}): "
        "soften it (a censor_text node can rewrite it) or add a fallback edge on "
        "content_policy.",
        provider=_NAME,
        status=200,
        code=reason,
    )


def _parts(answer: Any, model: str, *, partial: bool = False) -> list[dict[str, Any]]:
    """The parts of the first candidate, or the taxonomy error saying why there are none.

    ``partial``: a streamed chunk, which may carry no candidate (usage only) or no parts.
    """
    if not isinstance(answer, dict):
        raise _malformed(model, "something that is not a GenerateContentResponse")
    blocked = _blocked(model, answer.get("promptFeedback"))
    if blocked is not None:
        raise blocked
    candidates = answer.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        if partial:
            return []
        raise EmptyOutputError(
            f"google ({model}) answered with no candidate: nothing was generated. Try again, "
            "or add a fallback edge on 'empty'."
        )
    candidate = candidates[0]
    finish = candidate.get("finishReason")
    if finish in POLICY_FINISH:
        raise ContentPolicyError(
            f"google ({model}) withheld its answer (finishReason={finish}): soften the prompt "
            "or add a fallback edge on content_policy.",
            provider=_NAME,
            status=200,
            code=str(finish),
        )
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _text(parts: list[dict[str, Any]]) -> str:
    """The answer's text (thought summaries left out)."""
    return "".join(str(p["text"]) for p in parts if "text" in p and not p.get("thought"))


def _answer_text(answer: Any, model: str) -> str:
    text = _text(_parts(answer, model))
    if not text:
        raise EmptyOutputError(
            f"google ({model}) answered without any text: try again or add a fallback edge "
            "on 'empty'."
        )
    return text


async def _generate_text(ctx: RunContext, config: ModelConfig, body: dict[str, Any]) -> str:
    model = config.model.provider_model_name

    def parse(response: httpx.Response) -> str:
        return _answer_text(parse_json(response, _NAME), model)

    result: str = await _call(ctx, "POST", f"models/{model}:generateContent", model, parse, body)
    return result


async def _image_part(image: Image) -> dict[str, Any]:
    sent = await prepared(image, IMAGE_LIMITS)
    return {"inlineData": {"mimeType": sent.mime, "data": sent.b64()}}
