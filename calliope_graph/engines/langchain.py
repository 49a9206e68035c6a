"""LangChain engines: any langchain-core ``BaseChatModel`` as a Calliope provider.

A model config with ``provider: langchain`` finds its chat model in one of three ways:

* ``model_parameters["chat_model"]`` holding a model instance (from Python only: such a
  config cannot be written in YAML);
* ``provider_model_name`` naming a model given to :func:`register_chat_model`
  (``register_chat_model("local", model)``), the way to reach one from a YAML flow;
* ``provider_model_name`` as an import path ``"package.module:ClassName"``, built once with
  ``model_parameters`` as constructor arguments (e.g. ``"langchain_core.language_models.
  fake_chat_models:FakeListChatModel"`` with ``{responses: [...]}``). A path to a
  module-level model instance is used as is.

Text goes in as a human message (after a system message from ``system_prompt``); image
analysis sends an image content block (refused up front when the model's profile says it
takes no images) and parses the JSON answer; structured output uses
``with_structured_output`` and, for models that do not implement it, asks for JSON matching
the schema. An invalid or unparsable answer is shown back to the model once.

Calls are bounded by ``call_timeout`` (a parameter, in seconds; ``ctx.retry.request_timeout``
by default) and retried like HTTP engines' requests: rate limits (waiting the Retry-After
the exception carries), 5xx/529 statuses, connection failures and timeouts, per
``ctx.retry`` and on ``ctx.sleep``. Models with retries of their own (``max_retries``)
retry inside each of those attempts; set theirs to 0 to leave retrying to Calliope.

Failures are mapped to the taxonomy: timeouts are ProviderTimeoutError, refusals (a
``refusal`` stop reason, a ``content_filter`` finish reason, a refusal exception) are
ContentPolicyError, an exception carrying an HTTP status is mapped by that status, anything
else is a ProviderError naming the exception class (its message redacted of every known
secret).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import httpx
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from calliope_graph._transport import transport_error
from calliope_graph._usage import report_usage
from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import (
    classify_status,
    redact,
    retry_after_seconds,
    with_retries,
)
from calliope_graph.engines._llm import ANALYSIS_PROMPT, json_text, validation_summary
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.engines._stream import Tokens, next_attempt, wants_stream
from calliope_graph.errors import (
    AuthenticationError,
    CalliopeError,
    ConfigurationError,
    ContentPolicyError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.media import Image, ImageAnalysis, ImageLimits, prepared

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
OWN_PARAMS = frozenset(("system_prompt", "analysis_prompt", "chat_model", "call_timeout"))
#: Error codes (an exception's ``code``) that mean the provider's content policy said no.
POLICY_CODES = frozenset(("content_policy_violation", "content_filter", "refusal"))
#: Any chat model may be behind this engine: images are fitted to the strictest common
#: limits (Anthropic's 5 MB of base64; OpenAI's 2048-pixel working size).
IMAGE_LIMITS = ImageLimits(_NAME, max_side=2048, max_bytes=5 * 1024 * 1024, measure="base64")

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
    """The chat model a config names: its ``chat_model`` parameter, a registered name, or an
    import path (built once per set of constructor arguments)."""
    given = config.parameters.get("chat_model")
    if given is not None:
        if not isinstance(given, BaseChatModel):
            raise ConfigurationError(
                f"The chat_model parameter of {config.slug!r} is a {type(given).__name__}, "
                "not a langchain-core BaseChatModel: pass a chat model instance."
            )
        return given
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


def _retry_after(exc: BaseException) -> float | None:
    """The wait a rate-limit exception asks for: its response's Retry-After headers, or a
    ``retry_after`` attribute (seconds)."""
    for source in (exc, getattr(exc, "response", None)):
        headers = getattr(source, "headers", None)
        if headers is None or not hasattr(headers, "get"):
            continue
        found = {k: str(v) for k in ("retry-after-ms", "retry-after") if (v := headers.get(k))}
        if found:
            return retry_after_seconds(httpx.Headers(found))
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(float(value), 0.0)
    return None


def _is_refusal(exc: BaseException, kind: str) -> bool:
    code = getattr(exc, "code", None)
    return any(word in kind for word in ("Refusal", "ContentPolicy", "ContentFilter")) or (
        isinstance(code, str) and code in POLICY_CODES
    )


def _map_error(exc: Exception, ctx: RunContext, label: str) -> CalliopeError:
    secrets = ctx.keys.secrets()
    kind = type(exc).__name__
    lower = transport_error(exc, _NAME, what=f"call to langchain model {label}", secrets=secrets)
    if lower is not None:  # httpx under the model: mapped like every engine's requests
        return lower
    if isinstance(exc, TimeoutError) or "Timeout" in kind:
        return ProviderTimeoutError(
            f"langchain model {label} timed out ({kind}): raise the model's own timeout or "
            "add a fallback edge on timeout.",
            provider=_NAME,
        )
    detail = redact(str(exc), secrets)[:300]
    status = _status_of(exc)
    text = f"langchain model {label} failed with {kind}: {detail}"
    if _is_refusal(exc, kind):
        text += " — rephrase the request or add a fallback edge on content_policy."
        return ContentPolicyError(redact(text, secrets), provider=_NAME, status=status, code=kind)
    cls: type[ProviderError] = ProviderError
    if status is not None and status >= 400:
        cls = classify_status(status)  # the HTTP engines' reading of a status
    elif "Authentication" in kind or "PermissionDenied" in kind:
        cls = AuthenticationError
    elif "RateLimit" in kind:
        cls = RateLimitError
    elif isinstance(exc, ConnectionError) or any(
        word in kind for word in ("Connection", "Overloaded", "InternalServer")
    ):
        cls = TransientProviderError
    text += " — check the model's configuration and credentials, or add a fallback edge."
    text = redact(text, secrets)
    if cls is RateLimitError:
        return RateLimitError(
            text, provider=_NAME, status=status, code=kind, retry_after=_retry_after(exc)
        )
    return cls(text, provider=_NAME, status=status, code=kind)


def _timeout(ctx: RunContext, config: ModelConfig) -> float:
    value = config.parameters.get("call_timeout")
    if value is None:
        return ctx.retry.request_timeout
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if seconds <= 0:
        raise ConfigurationError(
            f"call_timeout of {config.slug!r} must be a positive number of seconds, not {value!r}."
        )
    return seconds


async def _call(ctx: RunContext, config: ModelConfig, make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` (one model call) bounded in time, mapping its exceptions into the
    taxonomy; the engine layer's one retry loop (:func:`with_retries`) retries the
    transient ones as it retries HTTP requests."""
    label = _label(config)
    timeout = _timeout(ctx, config)

    async def attempt() -> T:
        bound = asyncio.timeout(timeout)
        try:
            async with bound:
                answer = await make()
            _usage(answer)
            return answer
        except CalliopeError:
            raise
        except Exception as exc:
            if bound.expired():
                raise ProviderTimeoutError(
                    f"langchain model {label} did not answer within {timeout:g}s: raise "
                    "call_timeout or add a fallback edge on timeout.",
                    provider=_NAME,
                ) from None
            raise _map_error(exc, ctx, label) from None

    return await with_retries(ctx, _NAME, attempt)


def _usage(answer: Any) -> None:
    """Record the tokens a chat model reports on its answer: langchain-core's
    ``AIMessage.usage_metadata`` (``input_tokens``, ``output_tokens``; see
    https://python.langchain.com/api_reference/core/messages/langchain_core.messages.ai.UsageMetadata.html)
    and ``response_metadata["model_name"]``; a structured-output answer carries its raw
    message under ``raw`` (``include_raw=True``)."""
    if isinstance(answer, dict):
        answer = answer.get("raw")
    if not isinstance(answer, AIMessage):
        return
    meta = answer.usage_metadata
    model = (answer.response_metadata or {}).get("model_name")
    report_usage(
        input_tokens=meta.get("input_tokens") if meta else None,
        output_tokens=meta.get("output_tokens") if meta else None,
        response_model=model if isinstance(model, str) else None,
    )


def _answer_text(answer: Any, label: str) -> str:
    """The text of a model's answer, or a ContentPolicyError when the answer is a refusal."""
    if isinstance(answer, AIMessage):
        meta = answer.response_metadata or {}
        refusal = answer.additional_kwargs.get("refusal")
        stop = meta.get("stop_reason") or meta.get("finish_reason")
        text = _content_text(answer)
        if refusal or stop == "refusal" or (stop == "content_filter" and not text.strip()):
            why = f": {str(refusal)[:200]}" if isinstance(refusal, str) else f" ({stop})"
            raise ContentPolicyError(
                f"langchain model {label} refused to answer{why} — rephrase the request or "
                "add a fallback edge on content_policy.",
                provider=_NAME,
                code="refusal" if stop != "content_filter" else "content_filter",
            )
        return text
    return _content_text(answer)


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
    if wants_stream(config.parameters):  # someone listens: the text as it is written
        counter = [0]

        async def streamed() -> Any:
            # The model reports its chunks to LangGraph's messages mode itself (as any
            # LangChain chat model run does); the run's token sink is told here.
            tokens = Tokens(next_attempt(counter), messages=False)
            merged: Any = None
            try:
                async for chunk in model.astream(messages):
                    merged = chunk if merged is None else merged + chunk
                    await tokens.token(_content_text(chunk))
            except BaseException as exc:
                await tokens.failed(exc)
                raise
            return merged if merged is not None else AIMessage("")

        answer = await _call(ctx, config, streamed)
    else:
        answer = await _call(ctx, config, partial(model.ainvoke, messages))
    return _answer_text(answer, _label(config))


# -- image analysis ------------------------------------------------------------------------
def _check_takes_images(model: BaseChatModel, label: str) -> None:
    """Refuse before calling when the model's profile says it accepts no images."""
    profile = getattr(model, "profile", None)
    if isinstance(profile, dict) and profile.get("image_inputs") is False:
        raise ConfigurationError(
            f"The LangChain chat model {label} does not accept images (its profile says "
            "image_inputs=False): choose a vision model for image analysis."
        )


@register(Conversion.IMAGE_ANALYSIS, PROVIDER)
async def image_analysis(ctx: RunContext, image: Image, config: ModelConfig) -> ImageAnalysis:
    """Describe ``image`` with a vision chat model answering in JSON; a non-JSON answer is
    asked for again once."""
    model = chat_model(config)
    label = _label(config)
    _check_takes_images(model, label)
    prompt = str(config.parameters.get("analysis_prompt") or ANALYSIS_PROMPT)
    sent = await prepared(image, IMAGE_LIMITS)
    question = HumanMessage(
        content=[
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": sent.data_url()}},
        ]
    )
    messages = _with_system(config, [question])
    text = ""
    for attempt in (1, 2):
        answer = await _call(ctx, config, partial(model.ainvoke, messages))
        text = _answer_text(answer, label)
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
class _Unparsed:
    """A structured-output call whose answer its parser could not read (re-asked once)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        output = getattr(exc, "llm_output", None)
        self.shown = output if isinstance(output, str) and output else "(an unreadable answer)"

    def problem(self, secrets: list[str]) -> str:
        if isinstance(self.exc, ValidationError):
            return validation_summary(self.exc)
        first = str(self.exc).strip().splitlines()[0] if str(self.exc).strip() else ""
        return redact(f"the answer could not be parsed ({first[:200]})", secrets)


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
    models without it, a JSON answer); one re-ask carries the validation or parsing error
    back."""
    model = chat_model(config)
    label = _label(config)
    runnable = _structured(model, response_model)
    chat: list[BaseMessage] = _with_system(config, list(messages))
    if runnable is None:
        chat = [*chat, _json_request(response_model)]

    async def ask(sent: list[BaseMessage]) -> Any:
        if runnable is None:
            return _answer_text(await model.ainvoke(sent), label)
        try:
            return await runnable.ainvoke(sent)
        except (OutputParserException, ValidationError) as exc:
            return _Unparsed(exc)

    problem = ""
    for attempt in (1, 2):
        raw: Any = await _call(ctx, config, partial(ask, chat))
        shown: str
        if isinstance(raw, _Unparsed):
            problem, shown = raw.problem(ctx.keys.secrets()), raw.shown
        else:
            try:
                if isinstance(raw, str):
                    return response_model.model_validate_json(json_text(raw))
                if isinstance(raw, BaseModel):
                    raw = raw.model_dump()
                return response_model.model_validate(raw)
            except ValidationError as exc:
                problem = validation_summary(exc)
            shown = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        if attempt == 1:
            log.info("langchain: %s answer did not validate (%s); asking again", label, problem)
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
