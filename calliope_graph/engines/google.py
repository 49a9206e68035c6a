"""Google engines: the Gemini API (``generativelanguage.googleapis.com``, version ``v1beta``).

One API key (``GEMINI_API_KEY``, or ``GOOGLE_API_KEY`` which wins when both are set, as in
Google's own SDK) sent as the ``x-goog-api-key`` header, one error envelope
``{"error": {"code", "message", "status", "details"}}``. What each conversion calls:

* text, image analysis, structured output, transcription, Gemini image models and speech:
  ``POST models/{model}:generateContent`` (``:streamGenerateContent?alt=sse`` when the
  ``stream`` parameter is true — :func:`stream_text` yields the text as it arrives);
* Imagen: ``POST models/{model}:predict``;
* Veo: ``POST models/{model}:predictLongRunning``, then ``GET {operation name}`` polled on
  ``ctx.sleep`` (``_poll.poll_job``, bounded by ``ctx.poll`` or ``poll_interval`` /
  ``poll_timeout``), then the video downloaded from its file URI with the key;
* :func:`list_models`: ``GET models`` page by page (for ``calliope-graph models --check``).

A refusal arrives as a 200: ``promptFeedback.blockReason`` (the prompt was blocked) or a
candidate ``finishReason`` of ``SAFETY``, ``IMAGE_SAFETY``, ``PROHIBITED_CONTENT``... (the
answer was withheld), Imagen's ``raiFilteredReason``, Veo's ``raiMediaFilteredReasons``: all
are :class:`ContentPolicyError`. A wrong key is Google's 400 ``API_KEY_INVALID`` (mapped to
:class:`AuthenticationError`), no key its 403; a 429 ``RESOURCE_EXHAUSTED`` waits the
``RetryInfo.retryDelay`` its body carries (Google sends no Retry-After header).

Wire facts are from Google's REST reference (ai.google.dev/api/generate-content,
ai.google.dev/api/models) and the guides cited beside each engine.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ValidationError

from calliope_graph._transport import map_transport_errors
from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import (
    error_from_response,
    parse_json,
    redact,
    request,
    with_retries,
)
from calliope_graph.engines._llm import (
    ANALYSIS_PROMPT,
    analysis_from_answer,
    json_text,
    openai_format,
    validation_summary,
)
from calliope_graph.engines._params import pick, with_extra_body
from calliope_graph.engines._poll import Waiting, poll_bounds, poll_job
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._speech import pcm_to_wav, save_speech
from calliope_graph.engines._stream import wants_stream
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
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
    Video,
    check_audio,
    prepared,
)

__all__ = [
    "API_VERSION",
    "audio_to_text",
    "describe",
    "gemini_contents",
    "image_analysis",
    "image_and_text_to_video",
    "list_models",
    "messages_to_object",
    "stream_text",
    "text_to_image",
    "text_to_speech",
    "text_to_text",
]

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


# -- text -> text --------------------------------------------------------------------------
def _text_body(text: str, config: ModelConfig) -> dict[str, Any]:
    contents = [{"role": "user", "parts": [{"text": text}]}]
    return _body(config, contents, system=_system(config))


async def _sse_events(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (joined lines), as the SSE spec frames them.

    Written here rather than taking a dependency (httpx-sse) for a dozen lines: Gemini
    only sends ``data:`` lines and blank separators.
    """
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


async def stream_text(ctx: RunContext, text: str, config: ModelConfig) -> AsyncIterator[str]:
    """The text Gemini writes for ``text``, delta by delta, as it streams
    (``:streamGenerateContent?alt=sse``).

    Opening the stream is retried like any request (a 429, a 5xx, a body that is not an
    event stream); once text has arrived, a failure is raised as it is.
    """
    model = config.model.provider_model_name
    body = _text_body(text, config)
    url = f"{_base(ctx)}/models/{model}:streamGenerateContent"
    secrets = ctx.keys.secrets()

    async def open_stream() -> httpx.Response:
        req = ctx.client.build_request(
            "POST", url, params={"alt": "sse"}, headers=_headers(ctx), json=body
        )
        async with map_transport_errors(_NAME, what="request", secrets=secrets):
            response = await ctx.client.send(req, stream=True)
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise error_from_response(
                _NAME,
                response,
                secrets=secrets,
                describe=describe,
                hook=error_hook,
                retry_after=retry_delay,
            )
        if "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aread()
            await response.aclose()
            raise _malformed(model, "a body that is not an event stream", response.status_code)
        return response

    log.debug("google: POST models/%s:streamGenerateContent?alt=sse", model)
    response = await with_retries(ctx, _NAME, open_stream, model=model)
    try:
        async with map_transport_errors(_NAME, what="stream", secrets=secrets):
            async for data in _sse_events(response):
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError:
                    raise _malformed(model, "a stream event that is not JSON") from None
                delta = _text(_parts(chunk, model, partial=True))
                if delta:
                    yield delta
    finally:
        await response.aclose()


@register(Conversion.TEXT_TO_TEXT, PROVIDER)
async def text_to_text(ctx: RunContext, text: str, config: ModelConfig) -> str:
    """Continue or transform ``text`` with Gemini (``generateContent``; streamed —
    engines/_google_stream.py — when the ``stream`` parameter is true, or a node asks and
    someone listens). ``system_prompt`` becomes the ``systemInstruction``."""
    body = _text_body(text, config)
    if config.parameters.get("stream") or wants_stream(config.parameters):
        from calliope_graph.engines._google_stream import stream_generate

        model = config.model.provider_model_name
        return await stream_generate(
            ctx,
            config,
            body,
            base=_base(ctx),
            headers=_headers(ctx),
            prompt=text,
            text_of=lambda chunk: _text(_parts(chunk, model, partial=True)),
            describe=describe,
            hook=error_hook,
            retry_after=retry_delay,
            tokens=estimate_tokens(body),
        )
    return await _generate_text(ctx, config, body)


# -- image analysis ------------------------------------------------------------------------
async def _image_part(image: Image) -> dict[str, Any]:
    sent = await prepared(image, IMAGE_LIMITS)
    return {"inlineData": {"mimeType": sent.mime, "data": sent.b64()}}


@register(Conversion.IMAGE_ANALYSIS, PROVIDER)
async def image_analysis(ctx: RunContext, image: Image, config: ModelConfig) -> ImageAnalysis:
    """Describe ``image`` with Gemini answering in JSON (``responseMimeType:
    application/json``): description, captions, tags, objects, text. An
    ``analysis_prompt`` parameter replaces the prompt."""
    model = config.model.provider_model_name
    prompt = str(config.parameters.get("analysis_prompt") or ANALYSIS_PROMPT)
    contents = [{"role": "user", "parts": [await _image_part(image), {"text": prompt}]}]
    body = _body(config, contents, system=_system(config), responseMimeType="application/json")

    def parse(response: httpx.Response) -> ImageAnalysis:
        text = _answer_text(parse_json(response, _NAME), model)
        return analysis_from_answer(_NAME, model, text, status=response.status_code)

    result: ImageAnalysis = await _call(
        ctx, "POST", f"models/{model}:generateContent", model, parse, body
    )
    return result


# -- messages -> object --------------------------------------------------------------------
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+/-]+);base64,(?P<data>.*)$", re.DOTALL)


def _part(part: Any) -> dict[str, Any]:
    """One OpenAI-style content part as a Gemini part."""
    if isinstance(part, str):
        return {"text": part}
    if not isinstance(part, dict):
        return {"text": str(part)}
    kind = part.get("type")
    if kind == "text":
        return {"text": str(part.get("text", ""))}
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        match = _DATA_URL.match(str(url or ""))
        if match:
            return {"inlineData": {"mimeType": match.group("mime"), "data": match.group("data")}}
        raise ConfigurationError(
            "Gemini reads images inline, not by URL: give the image as a data URL (an Image "
            "value does that) instead of an http(s) link."
        )
    raise ConfigurationError(
        f"Cannot send a {kind!r} content part to Gemini: use text or image parts."
    )


def gemini_contents(
    messages: Sequence[BaseMessage],
) -> tuple[str | None, list[dict[str, Any]]]:
    """(system instruction, contents) in the Gemini shape from LangChain messages: system
    messages joined into the instruction, human turns ``user``, AI turns ``model``
    (consecutive turns of one role merged)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in openai_format(messages, "Gemini"):
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, list):
            parts = [_part(p) for p in content]
        else:
            parts = [{"text": str(content)}] if content else []
        if role in ("system", "developer"):
            system.extend(str(p.get("text", "")) for p in parts if "text" in p)
            continue
        if role not in ("user", "assistant"):
            raise ConfigurationError(
                f"Cannot send a {role!r} message to Gemini here: use system, human and AI messages."
            )
        if not parts:
            continue
        turn = "user" if role == "user" else "model"
        if out and out[-1]["role"] == turn:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": turn, "parts": parts})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "parts": [{"text": "Go ahead."}]})
    return ("\n\n".join(s for s in system if s) or None, out)


@register(Conversion.MESSAGES_TO_OBJECT, PROVIDER)
async def messages_to_object(
    ctx: RunContext,
    messages: Sequence[BaseMessage],
    config: ModelConfig,
    response_model: type[ModelT],
) -> ModelT:
    """Fill ``response_model`` from chat ``messages`` with Gemini's structured output:
    ``responseMimeType: application/json`` and the model's JSON Schema as
    ``responseJsonSchema`` (the JSON Schema form Google's structured-output guide
    recommends over the older OpenAPI-subset ``responseSchema``:
    ai.google.dev/gemini-api/docs/structured-output).

    An answer that does not validate is shown back once with the error; a second failure
    is an InvalidRequestError naming the model class and the error.
    """
    model = config.model.provider_model_name
    system, contents = gemini_contents(messages)
    extra = _system(config)
    if extra:
        system = f"{extra}\n\n{system}" if system else extra
    schema = response_model.model_json_schema()
    problem = ""
    for attempt in (1, 2):
        body = _body(
            config,
            contents,
            system=system,
            responseMimeType="application/json",
            responseJsonSchema=schema,
        )
        answer = await _generate_text(ctx, config, body)
        try:
            return response_model.model_validate_json(json_text(answer))
        except ValidationError as exc:
            problem = validation_summary(exc)
        if attempt == 1:
            log.info("google: %s answer did not validate (%s); asking again", model, problem)
            contents = [
                *contents,
                {"role": "model", "parts": [{"text": answer}]},
                {
                    "role": "user",
                    "parts": [
                        {
                            "text": f"That answer does not validate against the "
                            f"{response_model.__name__} schema: {problem}. Answer again with "
                            "only a JSON object that matches the schema exactly."
                        }
                    ],
                },
            ]
    raise InvalidRequestError(
        f"google ({model}) could not produce a valid {response_model.__name__} in two tries: "
        f"{problem}. Simplify the model, improve the prompt, or use a more capable model.",
        provider=_NAME,
        code="invalid_structured_output",
    )


# -- audio -> text -------------------------------------------------------------------------
@register(Conversion.AUDIO_TO_TEXT, PROVIDER)
async def audio_to_text(
    ctx: RunContext, audio: Audio, config: ModelConfig, *, language: str | None = None
) -> str:
    """Transcribe ``audio`` with Gemini: the file as an inline data part and a transcription
    prompt (``transcribe_prompt`` replaces it). Files over 20 MB need Google's Files API,
    which this engine does not upload to: they are refused before anything is sent."""
    model = config.model.provider_model_name
    mime = AUDIO_TYPES.get(audio.mime.lower())
    if mime is None:
        known = ", ".join(sorted(set(AUDIO_TYPES.values())))
        raise InvalidRequestError(
            f"google ({model}) does not read {audio.mime} audio: convert {audio.name} to one "
            f"of {known}.",
            provider=_NAME,
            code="unsupported_audio",
        )
    check_audio(audio, AUDIO_LIMITS, model)  # before anything is read or sent
    data = await asyncio.to_thread(audio.read_bytes)  # off the event loop (up to 20 MB)
    prompt = str(config.parameters.get("transcribe_prompt") or TRANSCRIBE_PROMPT)
    if language:
        prompt += f" The speech is in {language}."
    part = {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode("ascii")}}
    contents = [{"role": "user", "parts": [{"text": prompt}, part]}]
    return await _generate_text(ctx, config, _body(config, contents, system=_system(config)))


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
    body = with_extra_body(
        {"instances": [instance], "parameters": parameters},
        config.parameters,
        config.slug,
    )

    def created(response: httpx.Response) -> str:
        answer = parse_json(response, _NAME)
        name = answer.get("name") if isinstance(answer, dict) else None
        if not isinstance(name, str) or not name:
            raise _malformed(model, "an operation without a name", response.status_code)
        return name

    name: str = await _call(ctx, "POST", f"models/{model}:predictLongRunning", model, created, body)
    log.info("google: operation %s started (%s)", name, model)

    def polled(response: httpx.Response) -> dict[str, Any]:
        answer = parse_json(response, _NAME)
        if not isinstance(answer, dict):
            raise _malformed(model, "an operation poll that is not an operation")
        return answer

    async def check() -> dict[str, Any] | Waiting:
        operation: dict[str, Any] = await _call(ctx, "GET", name, model, polled)
        return operation if operation.get("done") else Waiting("running")

    operation = await poll_job(
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
    error = operation.get("error")
    if isinstance(error, dict):
        raise _operation_error(name, error, ctx.keys.secrets())
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
    return Video.open(path)


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


# -- the provider's model list ---------------------------------------------------------------
async def list_models(ctx: RunContext) -> list[str]:
    """Every model name the key can use (``GET /v1beta/models``, following
    ``nextPageToken``), without the ``models/`` prefix: what ``models --check`` compares
    the catalog with."""
    names: list[str] = []
    token: str | None = None
    for _ in range(100):  # a bound on pages, in case a server repeats its token
        params: dict[str, Any] = {"pageSize": 1000}
        if token:
            params["pageToken"] = token

        def parse(response: httpx.Response) -> dict[str, Any]:
            answer = parse_json(response, _NAME)
            if not isinstance(answer, dict):
                raise _malformed("models", "a model list that is not an object")
            return answer

        page: dict[str, Any] = await _call(ctx, "GET", "models", None, parse, params=params)
        for entry in page.get("models") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                names.append(entry["name"].removeprefix("models/"))
        token = page.get("nextPageToken") or None
        if not token:
            break
    return names
