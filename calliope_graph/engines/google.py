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
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from langchain_core.messages import BaseMessage
from pydantic import ValidationError

from calliope_graph._transport import map_transport_errors
from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import (
    error_from_response,
    parse_json,
    with_retries,
)
from calliope_graph.engines._llm import (
    ANALYSIS_PROMPT,
    analysis_from_answer,
    json_text,
    openai_format,
    validation_summary,
)
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._stream import wants_stream
from calliope_graph.errors import (
    ConfigurationError,
    InvalidRequestError,
)
from calliope_graph.media import (
    Audio,
    Image,
    ImageAnalysis,
    check_audio,
)

__all__ = [
    "API_VERSION",
    "audio_to_text",
    "describe",
    "estimate_tokens",
    "gemini_contents",
    "image_analysis",
    "image_and_text_to_video",
    "list_models",
    "messages_to_object",
    "retry_delay",
    "stream_text",
    "text_to_image",
    "text_to_speech",
    "text_to_text",
]

from calliope_graph.engines._google_base import (
    _NAME,
    API_VERSION,
    AUDIO_LIMITS,
    AUDIO_TYPES,
    PROVIDER,
    TRANSCRIBE_PROMPT,
    ModelT,
    _answer_text,
    _base,
    _body,
    _call,
    _generate_text,
    _headers,
    _image_part,
    _malformed,
    _parts,
    _system,
    _text,
    describe,
    error_hook,
    estimate_tokens,
    log,
    retry_delay,
)
from calliope_graph.engines._google_media import (
    image_and_text_to_video,
    text_to_image,
    text_to_speech,
)


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
