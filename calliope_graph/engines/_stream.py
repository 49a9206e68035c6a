"""Streaming a model's text as it is written: server-sent events, token events, retries.

A node that writes text (``text_to_text``) calls its engine inside
:func:`calliope_graph.context.streaming`. When someone listens — the run's
:data:`~calliope_graph.context.token_sink` (``flow.astream`` yields the events) or LangGraph's
``stream_mode="messages"`` (LangGraph Server's too) — the engine asks the provider to stream
and reports each text delta through a :class:`Tokens` of the attempt:

- to the sink as :class:`~calliope_graph.context.TokenEvent` ``token`` events, and a
  ``discard`` event when an attempt that streamed text fails (it is retried here, by
  LangGraph's RetryPolicy, or a fallback takes over: the consumer drops the partial text);
- to LangGraph's messages handler as a chat-model run whose chunks are ``AIMessageChunk``s
  (the way a LangChain chat model reports ``on_llm_new_token``); each attempt is its own
  message id, and a failed attempt ends with an empty chunk whose ``response_metadata``
  holds ``{"calliope_discard": true}``.

:func:`stream_text` sends one streamed request under the engine layer's retry policy: the
whole stream is read inside the attempt, so a stream that breaks mid-way (a dropped
connection, an ``error`` event) is retried like a 5xx and the usage it reports is recorded
on the attempt (``_usage.report_usage``), so costs stay right.

The SSE parser is a short one written here rather than a dependency: the three providers
send only ``event:`` and ``data:`` fields (no ``id``/``retry`` reconnection, which a
request-response stream cannot use), and the WHATWG framing rules for those fit in
:func:`sse_events` (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from calliope_graph._transport import map_transport_errors
from calliope_graph.context import RunContext, TokenEvent, streaming_node, token_sink
from calliope_graph.engines._http import (
    Describe,
    ErrorHook,
    RetryAfterHint,
    call_stats,
    error_from_response,
    with_retries,
)
from calliope_graph.errors import TransientProviderError, error_class

__all__ = [
    "SSE",
    "StreamReader",
    "Tokens",
    "malformed_stream",
    "next_attempt",
    "sse_events",
    "stream_text",
    "streamed_events",
    "wants_previews",
    "wants_stream",
    "where_in_run",
]


@dataclass(frozen=True)
class SSE:
    """One server-sent event: its ``event`` field (None when it has none) and ``data``."""

    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SSE]:
    """The events of a ``text/event-stream`` body, framed as the SSE spec says: fields up to
    a blank line, ``data`` lines joined by newlines, one leading space dropped, comments
    (``:``) ignored; an event without data is not dispatched."""
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield SSE(event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield SSE(event, "\n".join(data))


class StreamReader(Protocol):
    """Reads one attempt's events: each to a text delta (or None), reporting the usage it
    carries and raising the taxonomy error it means (an ``error`` event); then ``finish``
    checks the whole text (a refusal, an empty answer, a stream cut short)."""

    def __call__(self, event: SSE) -> str | None: ...

    def finish(self, text: str) -> str: ...


def malformed_stream(provider: str, model: str, what: str) -> TransientProviderError:
    return TransientProviderError(
        f"{provider} ({model}) streamed {what}; it was asked again.",
        provider=provider,
        code="malformed_body",
    )


# -- who listens ---------------------------------------------------------------------------
def _messages_handler(config: Mapping[str, Any]) -> Any:
    """The callback manager of the current LangGraph node when its run streams in
    ``messages`` mode (a StreamMessagesHandler among its handlers), else None."""
    callbacks = config.get("callbacks")
    handlers = getattr(callbacks, "handlers", None) or (
        callbacks if isinstance(callbacks, list) else []
    )
    for handler in handlers:
        if any(c.__name__ == "StreamMessagesHandler" for c in type(handler).__mro__):
            from langchain_core.runnables.config import get_async_callback_manager_for_config

            return get_async_callback_manager_for_config(config)  # type: ignore[arg-type]
    return None


def _langgraph_config() -> Mapping[str, Any] | None:
    try:
        from langgraph.config import get_config

        return get_config()
    except (ImportError, RuntimeError):
        return None


def wants_stream(config_parameters: Mapping[str, Any]) -> bool:
    """Whether this engine call should stream: a node asked for it (``streaming``), someone
    listens (the run's token sink, or LangGraph's messages mode) and the model config does
    not say ``stream: false``."""
    if streaming_node.get() is None or config_parameters.get("stream") is False:
        return False
    if token_sink.get() is not None:
        return True
    config = _langgraph_config()
    return config is not None and _messages_handler(config) is not None


def where_in_run(config: Mapping[str, Any], node: str) -> tuple[str, int | None]:
    """``node`` as the run's events name it, and its map item: the flow's runtime context
    (in LangGraph's config) names where in the run this is (a subflow's scope, a map item),
    as its FlowEvents do."""
    runtime = (config.get("configurable") or {}).get("__pregel_runtime")
    context = getattr(runtime, "context", None)
    item = getattr(context, "item", None)
    return str(getattr(context, "scope", "") or "") + node, item if isinstance(item, int) else None


def wants_previews(config_parameters: Mapping[str, Any]) -> int:
    """How many partial images an image engine call should stream: the node's ``previews``
    when someone listens (the run's token sink) and the model config does not say
    ``stream: false``; 0 otherwise (the request is then the unstreamed one)."""
    scope = streaming_node.get()
    if scope is None or not scope.previews or config_parameters.get("stream") is False:
        return 0
    return scope.previews if token_sink.get() is not None else 0


class Tokens:
    """The deltas of one streamed attempt, reported to whoever listens (see the module)."""

    def __init__(self, attempt: int, *, messages: bool = True) -> None:
        """``messages=False``: the call reports to LangGraph's messages mode itself (a
        LangChain chat model does), so only the run's token sink is told here."""
        self._scope = streaming_node.get()
        self.node = self._scope.node if self._scope is not None else ""
        self.attempt = attempt
        self.item: int | None = None
        self.parts: list[str] = []
        self._sink = token_sink.get()
        self._run: Any = None
        self._id = f"run-{uuid.uuid4()}"
        self._manager: Any = None
        config = _langgraph_config()
        if config is not None:
            self._manager = _messages_handler(config) if messages else None
            self.node, self.item = where_in_run(config, self.node)

    async def start(self, prompt: str, model: str) -> None:
        if self._manager is None:
            return
        from langchain_core.messages import HumanMessage

        runs = await self._manager.on_chat_model_start(
            {"name": model}, [[HumanMessage(prompt)]], run_id=uuid.uuid4(), name=model
        )
        self._run = runs[0] if runs else None

    async def token(self, text: str) -> None:
        if not text:
            return
        self.parts.append(text)
        if self._sink is not None:
            event = TokenEvent("token", self.node, text, self.attempt, self.item)
            if self._scope is not None:
                self._scope.pending = event
            self._sink(event)
        if self._run is not None:
            from langchain_core.messages import AIMessageChunk
            from langchain_core.outputs import ChatGenerationChunk

            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text, id=self._id))
            await self._run.on_llm_new_token(text, chunk=chunk)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def done(self) -> None:
        if self._run is not None:
            from langchain_core.messages import AIMessage
            from langchain_core.outputs import ChatGeneration, LLMResult

            message = AIMessage(content=self.text, id=self._id)
            await self._run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]))

    async def failed(self, exc: BaseException) -> None:
        """The attempt failed: if it streamed anything, tell the listeners to drop it."""
        if self._scope is not None:
            self._scope.pending = None  # told here: not again when the node fails
        if self.parts and self._sink is not None:
            reason = error_class(exc)
            self._sink(TokenEvent("discard", self.node, "", self.attempt, self.item, reason))
        if self._run is not None:
            if self.parts:
                from langchain_core.messages import AIMessageChunk
                from langchain_core.outputs import ChatGenerationChunk

                message = AIMessageChunk(
                    content="", id=self._id, response_metadata={"calliope_discard": True}
                )
                await self._run.on_llm_new_token("", chunk=ChatGenerationChunk(message=message))
            await self._run.on_llm_error(exc)


def next_attempt(counter: list[int]) -> int:
    """The number of the attempt in progress: the node's provider attempts so far (its
    CallStats), else ``counter`` (one list per call, counting its attempts)."""
    stats = call_stats.get()
    counter[0] += 1
    return stats.attempts if stats is not None and stats.attempts else counter[0]


async def stream_text(
    ctx: RunContext,
    provider: str,
    url: str,
    *,
    reader: Callable[[], StreamReader],
    prompt: str,
    model: str,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    params: Mapping[str, Any] | None = None,
    describe: Describe | None = None,
    hook: ErrorHook | None = None,
    retry_after: RetryAfterHint | None = None,
    tokens: int = 0,
) -> str:
    """POST a streaming request and return the whole text, streaming its deltas.

    ``reader()`` makes each attempt's :class:`StreamReader`; its ``finish`` runs inside the
    attempt, so a stream cut short is retried like any transient failure.
    """
    counter = [0]

    async def attempt() -> str:
        tokens_ = Tokens(next_attempt(counter))
        read = reader()
        request = ctx.client.build_request(
            "POST", url, params=params, headers=headers, json=json_body
        )
        try:
            await tokens_.start(prompt, model)
            events = streamed_events(
                ctx, provider, model, request, describe=describe, hook=hook, retry_after=retry_after
            )
            async with contextlib.aclosing(events):  # the answer is closed when this ends
                async for event in events:
                    await tokens_.token(read(event) or "")
            text = read.finish(tokens_.text)
        except BaseException as exc:
            await tokens_.failed(exc)
            raise
        await tokens_.done()
        return text

    return await with_retries(ctx, provider, attempt, model=model, tokens=tokens)


async def streamed_events(
    ctx: RunContext,
    provider: str,
    model: str,
    request: httpx.Request,
    *,
    describe: Describe | None = None,
    hook: ErrorHook | None = None,
    retry_after: RetryAfterHint | None = None,
) -> AsyncGenerator[SSE, None]:
    """Send ``request`` (within one attempt of ``with_retries``) and yield the events of its
    streamed answer: an error status is the taxonomy's error, a body that is not an event
    stream a malformed answer, a connection dropped mid-way a transient failure. Read it
    inside ``contextlib.aclosing`` so the answer is closed as soon as the reading stops."""
    secrets = ctx.keys.secrets()
    async with map_transport_errors(provider, what="request", secrets=secrets):
        response = await ctx.client.send(request, stream=True)
    try:
        ctx.limits.for_call(provider, model).observe(response.headers)
        if response.status_code >= 400:
            await response.aread()
            raise error_from_response(
                provider,
                response,
                secrets=secrets,
                describe=describe,
                hook=hook,
                retry_after=retry_after,
            )
        if "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aread()
            raise malformed_stream(provider, model, "a body that is not an event stream")
        async with map_transport_errors(provider, what="stream", secrets=secrets):
            async for event in sse_events(response):
                yield event
    finally:
        await response.aclose()
