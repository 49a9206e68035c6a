"""LangChain engines: any langchain-core ``BaseChatModel`` as a Calliope provider.

A model config with ``provider: langchain`` names its chat model in
``provider_model_name``, either

* a name given to :func:`register_chat_model` (``register_chat_model("local", model)``), or
* an import path ``"package.module:ClassName"``, built once with ``model_parameters`` as
  constructor arguments (e.g. ``"langchain_core.language_models.fake_chat_models:
  FakeListChatModel"`` with ``{responses: [...]}``). A path to a module-level model
  instance is used as is.

Text goes in as a human message (after a system message from ``system_prompt``); image
analysis sends an image content block and parses the JSON answer; structured output uses
``with_structured_output`` and, for models that do not implement it, asks for JSON matching
the schema. An invalid answer is shown back to the model once. Failures are mapped to the
taxonomy: timeouts are ProviderTimeoutError, an exception carrying an HTTP status is mapped
by that status, anything else is a ProviderError naming the exception class (its message
redacted of every known secret).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import redact
from calliope_graph.engines._llm import ANALYSIS_PROMPT, json_text, validation_summary
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.errors import (
    AuthenticationError,
    CalliopeError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.media import Image, ImageAnalysis

__all__ = [
    "chat_model",
    "image_analysis",
    "messages_to_object",
    "register_chat_model",
    "registered_chat_models",
    "text_to_text",
    "unregister_chat_model",
]

log = logging.getLogger("calliope_graph.engines.langchain")

PROVIDER = InferenceModelProvider.LANGCHAIN
_NAME = PROVIDER.value
ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")

#: Parameters Calliope reads itself; never passed to a model's constructor.
OWN_PARAMS = frozenset(("system_prompt", "analysis_prompt"))

_MODELS: dict[str, BaseChatModel] = {}
_BUILT: dict[str, BaseChatModel] = {}


def register_chat_model(name: str, model: BaseChatModel) -> None:
    """Make ``model`` available to model configs whose ``provider_model_name`` is ``name``."""
    if not isinstance(model, BaseChatModel):
        raise ConfigurationError(
            f"register_chat_model({name!r}, ...) needs a langchain-core BaseChatModel, not "
            f"{type(model).__name__}."
        )
    _MODELS[name] = model


def unregister_chat_model(name: str) -> None:
    """Forget a registered model (no error when unknown)."""
    _MODELS.pop(name, None)


def registered_chat_models() -> list[str]:
    return sorted(_MODELS)


def chat_model(config: ModelConfig) -> BaseChatModel:
    """The chat model a config names: a registered name, or an import path (built once)."""
    name = config.model.provider_model_name
    if name in _MODELS:
        return _MODELS[name]
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        known = ", ".join(sorted(_MODELS)) or "none registered"
        raise ConfigurationError(
            f"No LangChain chat model named {name!r} (registered: {known}). Call "
            "calliope_graph.engines.langchain.register_chat_model(name, model) first, or set "
            "provider_model_name to an import path such as 'package.module:ClassName'."
        )
    kwargs = {k: v for k, v in config.parameters.items() if k not in OWN_PARAMS}
    cache_key = f"{name}|{json.dumps(kwargs, sort_keys=True, default=repr)}"
    if cache_key in _BUILT:
        return _BUILT[cache_key]
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"Cannot import the LangChain chat model {name!r} ({type(exc).__name__}: {exc}): "
            "install its package or fix the import path."
        ) from None
    if isinstance(target, BaseChatModel):
        model = target
    elif isinstance(target, type) and issubclass(target, BaseChatModel):
        try:
            model = target(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"Cannot build {name} from the model parameters "
                f"({type(exc).__name__}: {str(exc)[:300]}): fix model_parameters."
            ) from None
    else:
        raise ConfigurationError(
            f"{name} is not a langchain-core BaseChatModel (class or instance): point "
            "provider_model_name at a chat model."
        )
    _BUILT[cache_key] = model
    return model


def _label(config: ModelConfig) -> str:
    return config.model.provider_model_name.rsplit(":", 1)[-1]


def _status_of(exc: BaseException) -> int | None:
    for source in (exc, getattr(exc, "response", None)):
        status = getattr(source, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _map_error(exc: Exception, ctx: RunContext, label: str) -> CalliopeError:
    secrets = ctx.keys.secrets()
    kind = type(exc).__name__
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | httpx.TimeoutException):
        return ProviderTimeoutError(
            f"langchain model {label} did not answer in time ({kind}): raise its timeout or "
            "add a fallback edge on timeout.",
            provider=_NAME,
        )
    detail = redact(str(exc), secrets)[:300]
    status = _status_of(exc)
    cls: type[ProviderError] = ProviderError
    if status in (401, 403) or "Authentication" in kind or "PermissionDenied" in kind:
        cls = AuthenticationError
    elif status == 429 or "RateLimit" in kind:
        cls = RateLimitError
    elif (status is not None and (status >= 500 or status in (408, 409))) or isinstance(
        exc, httpx.TransportError | ConnectionError
    ):
        cls = TransientProviderError
    elif status is not None and 400 <= status < 500:
        cls = InvalidRequestError
    text = f"langchain model {label} failed with {kind}: {detail}"
    text += " — check the model's configuration and credentials, or add a fallback edge."
    return cls(redact(text, secrets), provider=_NAME, status=status, code=kind)


async def _call(ctx: RunContext, label: str, call: Awaitable[T]) -> T:
    """Await a model call, mapping its exceptions into the taxonomy."""
    try:
        return await call
    except CalliopeError:
        raise
    except Exception as exc:
        raise _map_error(exc, ctx, label) from None


def _content_text(message: Any) -> str:
    content = message.content if isinstance(message, BaseMessage) else message
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
        return "".join(parts)
    return str(content)


def _with_system(config: ModelConfig, messages: list[BaseMessage]) -> list[BaseMessage]:
    system = config.parameters.get("system_prompt")
    return [SystemMessage(str(system)), *messages] if system else messages


# -- text -> text --------------------------------------------------------------------------
@register(Conversion.TEXT_TO_TEXT, PROVIDER)
async def text_to_text(ctx: RunContext, text: str, config: ModelConfig) -> str:
    """The chat model's answer to ``text`` (after a ``system_prompt``, when set)."""
    model = chat_model(config)
    messages = _with_system(config, [HumanMessage(text)])
    answer = await _call(ctx, _label(config), model.ainvoke(messages))
    return _content_text(answer)


# -- image analysis ------------------------------------------------------------------------
@register(Conversion.IMAGE_ANALYSIS, PROVIDER)
async def image_analysis(ctx: RunContext, image: Image, config: ModelConfig) -> ImageAnalysis:
    """Describe ``image`` with a vision chat model answering in JSON; a non-JSON answer is
    asked for again once."""
    model = chat_model(config)
    label = _label(config)
    prompt = str(config.parameters.get("analysis_prompt") or ANALYSIS_PROMPT)
    question = HumanMessage(
        content=[
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": image.data_url()}},
        ]
    )
    messages = _with_system(config, [question])
    text = ""
    for attempt in (1, 2):
        answer = await _call(ctx, label, model.ainvoke(messages))
        text = _content_text(answer)
        try:
            data = json.loads(json_text(text))
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            return ImageAnalysis.from_dict(data).model_copy(update={"sources": [_NAME]})
        if attempt == 1:
            log.info("langchain: %s described the image without JSON; asking again", label)
            messages = [
                *messages,
                AIMessage(text),
                HumanMessage("Answer again with only the JSON object, nothing else."),
            ]
    raise InvalidRequestError(
        f"langchain model {label} described the image in something other than a JSON object "
        f"twice ({text[:80]!r}): use a vision model that follows instructions, or set "
        "analysis_prompt.",
        provider=_NAME,
        code="malformed_output",
    )


# -- messages -> object --------------------------------------------------------------------
def _structured(model: BaseChatModel, response_model: type[BaseModel]) -> Any | None:
    """``model.with_structured_output(response_model)``, or None when not implemented."""
    try:
        return model.with_structured_output(response_model)
    except NotImplementedError:
        return None


def _json_request(response_model: type[BaseModel]) -> HumanMessage:
    schema = json.dumps(response_model.model_json_schema())
    return HumanMessage(
        f"Answer with only a JSON object that validates against this JSON Schema: {schema}"
    )


@register(Conversion.MESSAGES_TO_OBJECT, PROVIDER)
async def messages_to_object(
    ctx: RunContext,
    messages: Sequence[BaseMessage],
    config: ModelConfig,
    response_model: type[ModelT],
) -> ModelT:
    """Fill ``response_model`` from ``messages`` with ``with_structured_output`` (or, for
    models without it, a JSON answer); one re-ask carries the validation error back."""
    model = chat_model(config)
    label = _label(config)
    runnable = _structured(model, response_model)
    chat: list[BaseMessage] = _with_system(config, list(messages))
    if runnable is None:
        chat = [*chat, _json_request(response_model)]
    problem = ""
    for attempt in (1, 2):
        raw: Any
        if runnable is not None:
            raw = await _call(ctx, label, runnable.ainvoke(chat))
        else:
            raw = _content_text(await _call(ctx, label, model.ainvoke(chat)))
        try:
            if isinstance(raw, str):
                return response_model.model_validate_json(json_text(raw))
            if isinstance(raw, BaseModel):
                raw = raw.model_dump()
            return response_model.model_validate(raw)
        except ValidationError as exc:
            problem = validation_summary(exc)
        if attempt == 1:
            log.info("langchain: %s answer did not validate (%s); asking again", label, problem)
            shown = raw if isinstance(raw, str) else json.dumps(raw, default=str)
            chat = [
                *chat,
                AIMessage(shown),
                HumanMessage(
                    f"That answer does not validate against the {response_model.__name__} "
                    f"schema: {problem}. Answer again so that it matches the schema exactly."
                ),
            ]
    raise InvalidRequestError(
        f"langchain model {label} could not produce a valid {response_model.__name__} in two "
        f"tries: {problem}. Simplify the model, improve the prompt, or use a more capable "
        "model.",
        provider=_NAME,
        code="invalid_structured_output",
    )
