"""Anthropic engines: Claude through the Messages API (``POST /v1/messages``).

Text, image analysis (a base64 image block; JPEG, PNG, GIF and WebP are sent as they are,
anything else is converted to PNG first, and images beyond the API's size limits are scaled
down to its 1568-pixel working size) and structured output (a tool whose
``input_schema`` is the pydantic model's JSON Schema, forced with ``tool_choice``).

Everything goes through :func:`calliope_graph.engines._http.request`. The base URL comes
from ``ctx.keys.base_url("anthropic")`` (``ANTHROPIC_BASE_URL``), so Anthropic-compatible
servers work too. ``max_tokens`` is required by the API; it defaults to
``DEFAULT_MAX_TOKENS`` when the model config does not set it (``max_output_tokens`` is read
as ``max_tokens``). A ``system_prompt`` parameter becomes the top-level ``system`` field;
``extra_body`` (a dict) is merged into the request body last.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ValidationError

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import parse_json, request
from calliope_graph.engines._llm import (
    ANALYSIS_PROMPT,
    analysis_from_answer,
    json_text,
    openai_format,
    validation_summary,
)
from calliope_graph.engines._params import pick, with_extra_body
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._stream import wants_stream
from calliope_graph.errors import (
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    TransientProviderError,
)
from calliope_graph.media import Image, ImageAnalysis, ImageLimits, prepared

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "anthropic_messages",
    "describe",
    "image_analysis",
    "image_block",
    "list_models",
    "messages_to_object",
    "text_to_text",
]

log = logging.getLogger("calliope_graph.engines.anthropic")

PROVIDER = InferenceModelProvider.ANTHROPIC
_NAME = PROVIDER.value
ModelT = TypeVar("ModelT", bound=BaseModel)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
#: Parameters passed through from ``config.parameters`` when present.
MESSAGE_PARAMS = frozenset(
    ("temperature", "top_p", "top_k", "stop_sequences", "metadata", "service_tier")
)
#: Image types the Messages API accepts in a base64 source.
IMAGE_TYPES = frozenset(("image/jpeg", "image/png", "image/gif", "image/webp"))
#: Longest edge the API works at: larger images are scaled down to it on arrival.
MAX_EDGE = 1568
#: Largest base64 image the API takes (5 MB).
MAX_IMAGE_B64 = 5 * 1024 * 1024
#: What an image block may be [PROVIDERS.md §7.2]: other types become PNG, larger images
#: are scaled to the working size, heavier ones re-encoded as JPEG (``media.prepared``).
IMAGE_LIMITS = ImageLimits(
    _NAME, formats=IMAGE_TYPES, max_side=MAX_EDGE, max_bytes=MAX_IMAGE_B64, measure="base64"
)
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+/-]+);base64,(?P<data>.*)$", re.DOTALL)


# -- plumbing ------------------------------------------------------------------------------
def _headers(ctx: RunContext, config: ModelConfig | None = None) -> dict[str, str]:
    """Anthropic's headers, with the model's own key (or none) when it names its own server."""
    key = ctx.keys.model_key(config.model) if config is not None else ctx.keys.require(PROVIDER)
    return {
        **({"x-api-key": key} if key is not None else {}),
        "anthropic-version": API_VERSION,
        "content-type": "application/json",
    }


def _params(config: ModelConfig) -> dict[str, Any]:
    picked = pick(
        config.parameters,
        MESSAGE_PARAMS | {"max_tokens"},
        renames={"max_output_tokens": "max_tokens"},
    )
    max_tokens = picked.get("max_tokens")
    picked["max_tokens"] = int(max_tokens) if max_tokens else DEFAULT_MAX_TOKENS
    return picked


def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from ``{"type": "error", "error": {"type", "message"}}``."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, None)
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, str):
        return (error, None)
    if not isinstance(error, dict):
        return (str(error)[:300], None)
    message = str(error.get("message") or response.reason_phrase)
    code = error.get("type")
    return (message, None if code is None else str(code))


def _body(
    config: ModelConfig,
    messages: list[dict[str, Any]],
    system: str | None,
    **fields: Any,
) -> dict[str, Any]:
    """The Messages API body: model, parameters, system, messages and ``fields`` (tools...),
    with ``extra_body`` merged in last."""
    body: dict[str, Any] = {"model": config.model.provider_model_name, **_params(config)}
    if system:
        body["system"] = system
    body["messages"] = messages
    body.update(fields)
    return with_extra_body(body, config.parameters, config.slug)


async def _post(ctx: RunContext, config: ModelConfig, body: dict[str, Any], parse: Any) -> Any:
    log.debug("anthropic: POST /v1/messages (model %s)", body.get("model"))
    return await request(
        ctx,
        _NAME,
        "POST",
        f"{ctx.keys.model_base_url(config.model)}/v1/messages",
        parse=parse,
        headers=_headers(ctx, config),
        json_body=body,
        describe=describe,
    )


def _content(body: Any, model: str) -> list[dict[str, Any]]:
    """The content blocks of a message, or the taxonomy error saying why there are none."""
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise TransientProviderError(
            f"anthropic ({model}) answered with something that is not a message; it was "
            "asked again.",
            provider=_NAME,
            code="malformed_body",
        )
    if body.get("stop_reason") == "refusal":
        raise ContentPolicyError(
            f"anthropic ({model}) refused to answer (stop_reason=refusal): rephrase the "
            "request or add a fallback edge on content_policy.",
            provider=_NAME,
            status=200,
            code="refusal",
        )
    return [b for b in body["content"] if isinstance(b, dict)]


def _text(blocks: list[dict[str, Any]]) -> str:
    return "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")


def _parse_text(model: str) -> Any:
    def parse(response: httpx.Response) -> str:
        return _text(_content(parse_json(response, _NAME), model))

    return parse


# -- text -> text --------------------------------------------------------------------------
@register(Conversion.TEXT_TO_TEXT, PROVIDER)
async def text_to_text(ctx: RunContext, text: str, config: ModelConfig) -> str:
    """Continue or transform ``text`` with Claude; the text blocks of the answer, joined
    (streamed, engines/_anthropic_stream.py, when a node asks and someone listens)."""
    model = config.model.provider_model_name
    system = config.parameters.get("system_prompt")
    body = _body(config, [{"role": "user", "content": text}], str(system) if system else None)
    if wants_stream(config.parameters):  # someone listens: the text as it is written
        from calliope_graph.engines._anthropic_stream import stream_messages

        return await stream_messages(
            ctx,
            config,
            body,
            url=f"{ctx.keys.model_base_url(config.model)}/v1/messages",
            headers=_headers(ctx, config),
            prompt=text,
            describe=describe,
        )
    result: str = await _post(ctx, config, body, _parse_text(model))
    return result


# -- image analysis ------------------------------------------------------------------------
async def image_block(image: Image) -> dict[str, Any]:
    """A base64 image block of ``image`` made to fit the API's limits (``IMAGE_LIMITS``):
    prepared in a worker thread; the input file is left alone."""
    sent = await prepared(image, IMAGE_LIMITS)
    if sent.converted:
        log.debug(
            "anthropic: sending %s as %dx%d %s", image.name, sent.width, sent.height, sent.mime
        )
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": sent.mime, "data": sent.b64()},
    }


@register(Conversion.IMAGE_ANALYSIS, PROVIDER)
async def image_analysis(ctx: RunContext, image: Image, config: ModelConfig) -> ImageAnalysis:
    """Describe ``image`` with Claude answering in JSON (description, captions, tags,
    objects, text). An ``analysis_prompt`` parameter replaces the prompt."""
    model = config.model.provider_model_name
    prompt = str(config.parameters.get("analysis_prompt") or ANALYSIS_PROMPT)
    content = [await image_block(image), {"type": "text", "text": prompt}]
    system = config.parameters.get("system_prompt")
    body = _body(config, [{"role": "user", "content": content}], str(system) if system else None)

    def parse(response: httpx.Response) -> ImageAnalysis:
        # Inside the retry loop: an answer that is not a JSON object is asked for again.
        text = _text(_content(parse_json(response, _NAME), model))
        return analysis_from_answer(_NAME, model, text, status=response.status_code)

    result: ImageAnalysis = await _post(ctx, config, body, parse)
    return result


# -- messages -> object --------------------------------------------------------------------
def _part(part: Any) -> dict[str, Any]:
    """One OpenAI-style content part as an Anthropic content block."""
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, dict):
        return {"type": "text", "text": str(part)}
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        match = _DATA_URL.match(str(url or ""))
        if match:
            media = match.group("mime")
            if media not in IMAGE_TYPES:
                raise ConfigurationError(
                    f"Anthropic does not accept {media} images: send JPEG, PNG, GIF or WebP."
                )
            source = {"type": "base64", "media_type": media, "data": match.group("data")}
            return {"type": "image", "source": source}
        return {"type": "image", "source": {"type": "url", "url": str(url)}}
    if kind == "image" and "source" in part:
        return dict(part)
    raise ConfigurationError(
        f"Cannot send a {kind!r} content part to Anthropic: use text or image parts."
    )


def anthropic_messages(
    messages: Sequence[BaseMessage],
) -> tuple[str | None, list[dict[str, Any]]]:
    """(system, messages) in the Messages API's shape from LangChain messages.

    System messages are joined into the top-level system text; human and AI turns become
    user and assistant turns (consecutive turns of one role are merged).
    """
    converted = openai_format(messages, "Anthropic")
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in converted:
        role = message.get("role")
        content = message.get("content")
        parts = [_part(p) for p in content] if isinstance(content, list) else []
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}] if content else []
        if role in ("system", "developer"):
            system.extend(str(p.get("text", "")) for p in parts if p["type"] == "text")
            continue
        if role not in ("user", "assistant"):
            raise ConfigurationError(
                f"Cannot send a {role!r} message to Anthropic here: use system, human and AI "
                "messages."
            )
        if not parts:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(parts)
        else:
            out.append({"role": role, "content": parts})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": "Go ahead."}]})
    return ("\n\n".join(s for s in system if s) or None, out)


def _tool_name(model: type[BaseModel]) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", model.__name__)[:64] or "record"


def _tool_input(body: Any, model: str, name: str) -> Any:
    blocks = _content(body, model)
    for block in blocks:
        if block.get("type") == "tool_use" and block.get("name") == name:
            return block.get("input")
    text = _text(blocks)
    if text.strip():
        return text  # validated as JSON text below
    raise EmptyOutputError(
        f"anthropic ({model}) answered without calling the {name} tool and without text: "
        "try again or add a fallback edge on 'empty'."
    )


@register(Conversion.MESSAGES_TO_OBJECT, PROVIDER)
async def messages_to_object(
    ctx: RunContext,
    messages: Sequence[BaseMessage],
    config: ModelConfig,
    response_model: type[ModelT],
) -> ModelT:
    """Fill ``response_model`` from chat ``messages`` through a forced tool call.

    The tool's ``input_schema`` is the model's JSON Schema. An input that does not validate
    is shown back to Claude once (as an error tool result); a second failure is an
    InvalidRequestError naming the model class and the error.
    """
    model = config.model.provider_model_name
    name = _tool_name(response_model)
    tool: dict[str, Any] = {
        "name": name,
        "description": (response_model.__doc__ or "").strip()[:1000]
        or f"Record the answer as a {response_model.__name__}.",
        "input_schema": response_model.model_json_schema(),
    }
    system, chat = anthropic_messages(messages)
    extra = config.parameters.get("system_prompt")
    if extra:
        system = f"{extra}\n\n{system}" if system else str(extra)
    problem = ""
    for attempt in (1, 2):
        body = _body(config, chat, system, tools=[tool], tool_choice={"type": "tool", "name": name})
        answer = await _post(ctx, config, body, lambda r: parse_json(r, _NAME))
        value = _tool_input(answer, model, name)
        try:
            if isinstance(value, str):
                return response_model.model_validate_json(json_text(value))
            return response_model.model_validate(value)
        except ValidationError as exc:
            problem = validation_summary(exc)
        if attempt == 1:
            log.info("anthropic: %s input did not validate (%s); asking again", name, problem)
            chat = [*chat, *_reask(answer, name, problem)]
    raise InvalidRequestError(
        f"anthropic ({model}) could not produce a valid {response_model.__name__} in two "
        f"tries: {problem}. Simplify the model, improve the prompt, or use a more capable "
        "model.",
        provider=_NAME,
        code="invalid_structured_output",
    )


def _reask(answer: Any, name: str, problem: str) -> list[dict[str, Any]]:
    """The assistant's turn and a user turn carrying the validation error back."""
    blocks = [b for b in answer.get("content", []) if isinstance(b, dict)]
    note = (
        f"That input does not validate against the {name} schema: {problem}. Call {name} "
        "again with input that matches the schema exactly."
    )
    tool_use = next((b for b in blocks if b.get("type") == "tool_use"), None)
    if tool_use is None:
        return [
            {"role": "assistant", "content": blocks or [{"type": "text", "text": "(none)"}]},
            {"role": "user", "content": [{"type": "text", "text": note}]},
        ]
    result = {
        "type": "tool_result",
        "tool_use_id": str(tool_use.get("id", "")),
        "is_error": True,
        "content": note,
    }
    return [
        {"role": "assistant", "content": blocks},
        {"role": "user", "content": [result]},
    ]


async def list_models(ctx: RunContext) -> list[str]:
    """The model ids Anthropic lists (``GET /v1/models``, pages of up to 1,000 followed by
    ``after_id`` while ``has_more``; https://docs.anthropic.com/en/api/models-list). Used
    by ``models --check``; at most 20 pages are read."""
    ids: list[str] = []
    after: str | None = None
    for _ in range(20):  # bounded: a misbehaving server cannot keep us paging
        params: dict[str, Any] = {"limit": 1000, **({"after_id": after} if after else {})}
        page: dict[str, Any] = await request(
            ctx,
            _NAME,
            "GET",
            f"{ctx.keys.base_url(PROVIDER)}/v1/models",
            parse=lambda r: dict(r.json()),
            headers=_headers(ctx),
            params=params,
            describe=describe,
        )
        ids += [str(m["id"]) for m in page.get("data") or [] if isinstance(m, dict) and "id" in m]
        after = page.get("last_id")
        if not page.get("has_more") or not after:
            break
    return ids
