"""OpenAI engines: chat and legacy completions, images, vision, Whisper, speech, structured
output.

Everything goes through :func:`calliope_graph.engines._http.request` (retries, error
mapping, redaction). The base URL comes from ``ctx.keys.base_url("openai")``, so setting
``OPENAI_BASE_URL`` points every engine here at an OpenAI-compatible server (Ollama, vLLM,
llama.cpp). Model parameters come from ``config.parameters``; only the ones the endpoint
knows are sent (``_params.pick``), and ``extra_body`` (a dict) is merged into the request
body last (the JSON body, or the form fields of a transcription), for server-specific
options.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ValidationError

from calliope_graph.config import InferenceModelProvider, InferenceModelProviderVariant, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import bearer, parse_json, request
from calliope_graph.engines._llm import (
    ANALYSIS_PROMPT,
    analysis_from_answer,
    json_text,
    openai_format,
    validation_summary,
)
from calliope_graph.engines._params import extra_body, form_fields, pick, with_extra_body
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._speech import audio_bytes, pcm_to_wav, save_speech
from calliope_graph.engines._stream import wants_stream
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
    "ANALYSIS_PROMPT",
    "audio_to_text",
    "image_analysis",
    "image_size",
    "list_models",
    "messages_to_object",
    "strict_json_schema",
    "text_to_image",
    "text_to_speech",
    "text_to_text",
]

log = logging.getLogger("calliope_graph.engines.openai")

PROVIDER = InferenceModelProvider.OPENAI
_NAME = PROVIDER.value
ModelT = TypeVar("ModelT", bound=BaseModel)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Parameters passed through to each endpoint when present in ``config.parameters``.
CHAT_PARAMS = _words(
    "temperature top_p max_tokens max_completion_tokens stop seed presence_penalty "
    "frequency_penalty logit_bias user service_tier reasoning_effort verbosity "
    "parallel_tool_calls"
)
COMPLETION_PARAMS = _words(
    "temperature top_p max_tokens stop seed presence_penalty frequency_penalty "
    "logit_bias user suffix best_of"
)
IMAGE_PARAMS = _words(
    "quality style user response_format background moderation output_format output_compression"
)
TRANSCRIPTION_PARAMS = frozenset(("temperature", "prompt"))

#: Sizes each image model accepts (PROVIDERS.md §1.3); ``image_size`` picks the nearest.
IMAGE_SIZES: dict[str, tuple[tuple[int, int], ...]] = {
    "dall-e-2": ((256, 256), (512, 512), (1024, 1024)),
    "dall-e-3": ((1024, 1024), (1792, 1024), (1024, 1792)),
    "gpt-image": ((1024, 1024), (1536, 1024), (1024, 1536)),
}
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
_CONTENT_POLICY_CODES = frozenset(("content_policy_violation", "moderation_blocked"))
_CONTENT_POLICY_TYPES = frozenset(("image_generation_user_error",))


# -- plumbing ------------------------------------------------------------------------------
def _base(ctx: RunContext, config: ModelConfig) -> str:
    """The model's own ``base_url`` (a local OpenAI-compatible server), else OpenAI's."""
    return ctx.keys.model_base_url(config.model)


def _auth(ctx: RunContext, config: ModelConfig) -> dict[str, str]:
    """Bearer auth with the model's key; none for a local server that needs none."""
    key = ctx.keys.model_key(config.model)
    return bearer(key) if key is not None else {}


def _is_reasoning_model(model: str) -> bool:
    # o-series and GPT-5 and later (gpt-6-luna ...) take max_completion_tokens.
    return re.match(r"^(o\d|gpt-([5-9]|\d\d))", model) is not None


def _chat_params(config: ModelConfig) -> dict[str, Any]:
    params = pick(config.parameters, CHAT_PARAMS)
    model = config.model.provider_model_name
    if _is_reasoning_model(model) and "max_tokens" in params:
        # o-series and GPT-5 models reject max_tokens; the limit moved to max_completion_tokens.
        params.setdefault("max_completion_tokens", params.pop("max_tokens"))
    return params


def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from OpenAI's ``{"error": {"message", "type", "param", "code"}}``.

    Also reads the bare ``{"error": "..."}`` of some OpenAI-compatible servers (Ollama).
    """
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, None)
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, str):
        return (error, None)
    if not isinstance(error, dict):
        return (str(error)[:300], None)
    message = str(error.get("message") or error.get("detail") or response.reason_phrase)
    code = error.get("code") or error.get("type")
    param = error.get("param")
    if param and param not in message:
        message += f" (param: {param})"
    code_text = None if code is None else str(code)
    if code_text in _CONTENT_POLICY_CODES or error.get("type") in _CONTENT_POLICY_TYPES:
        message += (
            " — soften the prompt (a censor_text node can rewrite it) or add a fallback "
            "edge on content_policy"
        )
    return (message, code_text)


def content_policy_hook(
    response: httpx.Response, message: str, code: str | None
) -> type[ProviderError] | None:
    """OpenAI's safety refusals (HTTP 400) are ContentPolicyError, not a bad request."""
    if response.status_code != 400:
        return None
    if code in _CONTENT_POLICY_CODES:
        return ContentPolicyError
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return None
    if isinstance(error, dict) and error.get("type") in _CONTENT_POLICY_TYPES:
        return ContentPolicyError
    return None


async def _post(
    ctx: RunContext,
    config: ModelConfig,
    path: str,
    *,
    json_body: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    files: Any = None,
    parse: Callable[[httpx.Response], Any] | None = None,
) -> Any:
    """POST to ``{base}{path}`` and return ``parse(response)`` (the JSON body by default).

    The ``extra_body`` parameter is merged into the JSON body, or into the form ``data``.
    """
    if json_body is not None:
        json_body = with_extra_body(json_body, config.parameters, config.slug)
    if data is not None:
        data = {**data, **form_fields(extra_body(config.parameters, config.slug))}
    log.debug("openai: POST %s (model %s)", path, (json_body or data or {}).get("model"))
    return await request(
        ctx,
        _NAME,
        "POST",
        f"{_base(ctx, config)}{path}",
        parse=parse or (lambda r: parse_json(r, _NAME)),
        headers=_auth(ctx, config),
        json_body=json_body,
        data=data,
        files=files,
        describe=describe,
        hook=content_policy_hook,
    )


def _first_choice(body: Any, model: str) -> dict[str, Any]:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EmptyOutputError(
            f"openai ({model}) answered with no choices: nothing was generated. Try again, "
            "or add a fallback edge on 'empty'."
        )
    choice: dict[str, Any] = choices[0]
    return choice


def _message_text(body: Any, model: str) -> str:
    """The assistant's text from a chat completion, or the taxonomy error saying why not."""
    choice = _first_choice(body, model)
    message = choice.get("message") or {}
    refusal = message.get("refusal")
    content = message.get("content")
    if refusal:
        raise ContentPolicyError(
            f"openai ({model}) refused: {str(refusal)[:300]} — rephrase the request or add a "
            "fallback edge on content_policy.",
            provider=_NAME,
            status=200,
            code="refusal",
        )
    if choice.get("finish_reason") == "content_filter" and not content:
        raise ContentPolicyError(
            f"openai ({model}) withheld its answer (finish_reason=content_filter): soften the "
            "prompt or add a fallback edge on content_policy.",
            provider=_NAME,
            status=200,
            code="content_filter",
        )
    if content is None:
        raise EmptyOutputError(
            f"openai ({model}) answered without any text (finish_reason="
            f"{choice.get('finish_reason')!r}): try again or add a fallback edge on 'empty'."
        )
    if isinstance(content, list):  # some compatible servers answer with content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


async def _chat(ctx: RunContext, config: ModelConfig, body: dict[str, Any]) -> str:
    model = config.model.provider_model_name
    answer = await _post(ctx, config, "/chat/completions", json_body={"model": model, **body})
    return _message_text(answer, model)


# -- text -> text --------------------------------------------------------------------------
@register(Conversion.TEXT_TO_TEXT, PROVIDER)
async def text_to_text(ctx: RunContext, text: str, config: ModelConfig) -> str:
    """Continue or transform ``text``: chat completions, or legacy ``/completions`` for the
    ``openai_completion`` variant. A ``system_prompt`` parameter becomes a system message.
    Chat answers stream (engines/_openai_stream.py) when a node asks and someone listens."""
    model = config.model.provider_model_name
    if config.model.provider_api_variant is InferenceModelProviderVariant.OPENAI_COMPLETION:
        body = {"model": model, "prompt": text, **pick(config.parameters, COMPLETION_PARAMS)}
        answer = await _post(ctx, config, "/completions", json_body=body)
        choice = _first_choice(answer, model)
        if choice.get("finish_reason") == "content_filter" and not choice.get("text"):
            raise ContentPolicyError(
                f"openai ({model}) withheld its completion (finish_reason=content_filter): "
                "soften the prompt or add a fallback edge on content_policy.",
                provider=_NAME,
                status=200,
                code="content_filter",
            )
        completion = choice.get("text")
        if completion is None:
            raise EmptyOutputError(
                f"openai ({model}) returned a completion without text: try again or add a "
                "fallback edge on 'empty'."
            )
        return str(completion)
    messages: list[dict[str, Any]] = []
    system = config.parameters.get("system_prompt")
    if system:
        messages.append({"role": "system", "content": str(system)})
    messages.append({"role": "user", "content": text})
    body = {"messages": messages, **_chat_params(config)}
    if wants_stream(config.parameters):  # someone listens: the text as it is written
        from calliope_graph.engines._openai_stream import stream_chat

        return await stream_chat(
            ctx,
            config,
            {"model": model, **body},
            url=f"{_base(ctx, config)}/chat/completions",
            headers=_auth(ctx, config),
            prompt=text,
            describe=describe,
            hook=content_policy_hook,
        )
    return await _chat(ctx, config, body)


# -- text -> image -------------------------------------------------------------------------
def _size_family(model: str) -> str | None:
    if model in ("dall-e-2", "dall-e-3"):
        return model
    if model.startswith("gpt-image"):
        return "gpt-image"
    return None


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
    family = _size_family(model)
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
    ContentPolicyError.
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
    if reference_images:
        files = []
        for index, reference in enumerate(reference_images[:16]):
            sent = await prepared(reference, EDIT_IMAGE_LIMITS)
            ext = sent.mime.split("/")[-1]
            files.append(("image[]", (f"reference-{index}.{ext}", sent.data, sent.mime)))
        form = {k: str(v) for k, v in body.items()}
        answer = await _post(ctx, config, "/images/edits", data=form, files=files)
    else:
        answer = await _post(ctx, config, "/images/generations", json_body=body)
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
        image = await ctx.store.asave_image(output_name, path.read_bytes())
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


# -- messages -> object --------------------------------------------------------------------
def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema made acceptable to OpenAI's strict mode.

    Every object gets ``additionalProperties: false`` and lists all its properties as
    required; defaults are dropped (a strict answer always carries every field) and a
    ``$ref`` with sibling keywords is inlined.
    """
    schema = copy.deepcopy(model.model_json_schema())
    defs = schema.get("$defs", {})

    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node and len(node) > 1:
            target = defs.get(str(node["$ref"]).rsplit("/", 1)[-1], {})
            node = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        out = {k: fix(v) for k, v in node.items() if k != "default"}
        props = out.get("properties")
        if out.get("type") == "object" or isinstance(props, dict):
            out["additionalProperties"] = False
            out["required"] = list(props) if isinstance(props, dict) else []
            out.setdefault("properties", {})
        return out

    fixed: dict[str, Any] = fix(schema)
    return fixed


def _schema_name(model: type[BaseModel]) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", model.__name__)[:64] or "response"


@register(Conversion.MESSAGES_TO_OBJECT, PROVIDER)
async def messages_to_object(
    ctx: RunContext,
    messages: Sequence[BaseMessage],
    config: ModelConfig,
    response_model: type[ModelT],
) -> ModelT:
    """Fill ``response_model`` from chat ``messages`` with strict JSON Schema output.

    An answer that does not validate is shown back to the model once with the validation
    error; a second failure is an InvalidRequestError naming the model class and the error.
    """
    name = _schema_name(response_model)
    spec: dict[str, Any] = {
        "name": name,
        "schema": strict_json_schema(response_model),
        "strict": True,
    }
    doc = (response_model.__doc__ or "").strip()
    if doc:
        spec["description"] = doc[:500]
    response_format = {"type": "json_schema", "json_schema": spec}
    chat = openai_format(messages, "OpenAI")
    params = _chat_params(config)
    problem = ""
    for attempt in (1, 2):
        answer = await _chat(
            ctx, config, {"messages": chat, "response_format": response_format, **params}
        )
        try:
            return response_model.model_validate_json(json_text(answer))
        except ValidationError as exc:
            problem = validation_summary(exc)
        if attempt == 1:
            log.info("openai: %s answer did not validate (%s); asking again", name, problem)
            chat = [
                *chat,
                {"role": "assistant", "content": answer},
                {
                    "role": "user",
                    "content": f"That answer does not validate against the {name} schema: "
                    f"{problem}. Answer again with only a JSON object that matches the "
                    "schema exactly.",
                },
            ]
    raise InvalidRequestError(
        f"openai ({config.model.provider_model_name}) could not produce a valid "
        f"{response_model.__name__} in two tries: {problem}. Simplify the model, improve the "
        "prompt, or use a more capable model.",
        provider=_NAME,
        code="invalid_structured_output",
    )


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


async def list_models(ctx: RunContext) -> list[str]:
    """The model ids OpenAI lists for this key (``GET /v1/models``; OpenAI's API reference,
    https://platform.openai.com/docs/api-reference/models/list). Used by ``models --check``."""

    def parse(response: httpx.Response) -> list[str]:
        data = response.json().get("data") or []
        return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]

    return await request(
        ctx,
        _NAME,
        "GET",
        f"{ctx.keys.base_url(PROVIDER)}/models",
        parse=parse,
        headers=bearer(ctx.keys.require(PROVIDER)),
        describe=describe,
    )
