"""OpenAI engines: chat and legacy completions, structured output, and the plumbing the
media engines (images, vision, Whisper, speech: :mod:`calliope_graph.engines.openai_media`)
share.

Everything goes through :func:`calliope_graph.engines._http.request` (retries, error
mapping, redaction). The base URL comes from ``ctx.keys.base_url("openai")``, so setting
``OPENAI_BASE_URL`` points every engine here at an OpenAI-compatible server (Ollama, vLLM,
llama.cpp). Model parameters come from ``config.parameters``; only the ones the endpoint
knows are sent (``_params.pick``), and ``extra_body`` (a dict) is merged into the request
body last (the JSON body, or the form fields of a transcription), for server-specific
options.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ValidationError

from calliope_graph.config import InferenceModelProvider, InferenceModelProviderVariant, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import bearer, parse_json, request
from calliope_graph.engines._llm import (
    ANALYSIS_PROMPT,
    json_text,
    openai_format,
    validation_summary,
)
from calliope_graph.engines._params import extra_body, form_fields, pick, with_extra_body
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._stream import wants_stream
from calliope_graph.errors import (
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    ProviderError,
)

__all__ = [
    "ANALYSIS_PROMPT",
    "list_models",
    "messages_to_object",
    "strict_json_schema",
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
