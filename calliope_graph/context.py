"""The run context: everything a node or engine needs that must never enter graph state.

The shared ``httpx.AsyncClient``, the keys, the media store, retry/poll limits, the rate
limits and the model catalog travel here (in LangGraph's runtime context when a flow runs),
so nothing secret is ever checkpointed. What a process role shares between runs lives in
its :class:`~calliope_graph.session.Session`, which makes the runs' contexts
(:meth:`~calliope_graph.session.Session.run_context`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx

from calliope_graph.config import KeysModel, ModelCatalog, catalog
from calliope_graph.errors import error_class
from calliope_graph.limits import Limits, default_limits
from calliope_graph.media import Image, MediaStore

__all__ = [
    "PollSettings",
    "PreviewEvent",
    "RetrySettings",
    "RunContext",
    "Sleep",
    "StreamEvent",
    "StreamScope",
    "TokenEvent",
    "TokenSink",
    "streaming",
    "token_sink",
]

Sleep = Callable[[float], Awaitable[None]]


class _NoCookies(httpx.Cookies):
    """Cookies that are never kept. Provider APIs authenticate with keys, not cookies; a
    jar shared by every run of the process would carry one provider's cookies (a load
    balancer's affinity, a tracking id) across runs and users — and reading them off every
    answer costs more CPU than the rest of the client's work on it."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Client(httpx.AsyncClient):
    """httpx's client with :class:`_NoCookies` (httpx copies a ``cookies=`` argument into a
    plain jar, so the property is where a cookie-less client can be had)."""

    _none: ClassVar[_NoCookies] = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        return None


@dataclass(frozen=True)
class RetrySettings:
    """How the engine layer retries transient failures (429, 5xx, 529, timeouts, resets)."""

    max_attempts: int = 4
    """Attempts per request, including the first."""
    initial_wait: float = 0.5
    """First backoff in seconds; doubles each attempt, with jitter."""
    max_wait: float = 20.0
    """Longest single backoff."""
    jitter: float = 0.5
    """Up to this many seconds of random jitter added to each backoff."""
    max_total: float = 90.0
    """Give up once this many seconds have passed since the first attempt."""
    max_retry_after: float = 120.0
    """A provider's Retry-After above this is not honoured (the call fails instead)."""
    request_timeout: float = 60.0
    """Per-request timeout in seconds (connect, read, write)."""


@dataclass(frozen=True)
class PollSettings:
    """How long jobs (Replicate predictions, Runway tasks, HF model loading) are waited for."""

    interval: float = 1.0
    timeout: float = 300.0


@dataclass
class RunContext:
    """The non-state half of a run: client, keys, store, limits, catalog.

    Build one with :meth:`create` (which makes the client) or pass your own client.
    """

    client: httpx.AsyncClient
    keys: KeysModel
    store: MediaStore
    retry: RetrySettings = field(default_factory=RetrySettings)
    poll: PollSettings = field(default_factory=PollSettings)
    catalog: ModelCatalog = field(default_factory=lambda: catalog)
    sleep: Sleep = asyncio.sleep
    extras: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=default_limits)
    """The per-provider rate limits every engine call waits on (default: those of
    :func:`~calliope_graph.session.default_session`; a session's contexts carry its own)."""
    simulated: bool = False
    """Every provider call goes to the simulator (a simulating session's contexts say so;
    traces and reports show it)."""

    @classmethod
    def create(
        cls,
        out_dir: str | Path = "out",
        *,
        keys: KeysModel | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
        media_store: str | None = None,
        **kwargs: Any,
    ) -> RunContext:
        """A context writing into ``out_dir``; ``transport`` plugs in the simulator;
        ``media_store`` (``s3://bucket/prefix``) keeps the media in object storage too."""
        if media_store:
            from calliope_graph.object_store import open_media_store

            store = open_media_store(out_dir, media_store)
        else:
            store = MediaStore(out_dir)
        retry: RetrySettings = kwargs.get("retry", RetrySettings())
        if client is None:
            client = _Client(
                transport=transport,
                timeout=httpx.Timeout(retry.request_timeout),
                follow_redirects=True,
            )
        return cls(
            client=client,
            keys=keys if keys is not None else KeysModel.from_env(),
            store=store,
            **kwargs,
        )

    def __repr__(self) -> str:  # never show keys
        return f"RunContext(store={self.store!r}, retry={self.retry!r})"

    async def aclose(self) -> None:
        await self.client.aclose()


# -- streamed text ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenEvent:
    """Text a node's model is writing, as it arrives, or word to throw some of it away.

    ``kind="token"``: ``text`` is the next piece (a delta) of what ``node`` writes, in
    ``attempt`` (the node's provider attempt, from 1). ``kind="discard"``: that attempt failed
    after some text arrived (``reason`` is the error class); drop everything it streamed — a
    retry (``attempt + 1``), a LangGraph retry or a fallback node writes the text anew. The
    text a node finally outputs is exactly the tokens of its last attempt that was not
    discarded. ``item`` is the map item, when the runner knows it.
    """

    kind: Literal["token", "discard"]
    node: str
    text: str
    attempt: int
    item: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PreviewEvent:
    """A partial image of what ``node`` is drawing, as the provider streams it (OpenAI's GPT
    image models with the node's ``previews`` param): ``media`` is the saved file (a
    reference, never the bytes), ``index`` its place among the previews (from 0), in
    ``attempt``. The node's output is the final image, as without previews; a ``discard``
    :class:`TokenEvent` of the same node and attempt says its previews are void (the
    attempt failed and is retried or falls back)."""

    node: str
    index: int
    media: Image
    attempt: int
    item: int | None = None
    kind: Literal["preview"] = "preview"


#: What a token sink receives: text as it is written, and previews of images being drawn.
StreamEvent = TokenEvent | PreviewEvent
TokenSink = Callable[[StreamEvent], None]
#: Where token (and preview) events go during a run (set by the flow runner while someone
#: listens, e.g. ``flow.astream``, or by ``calliope-graph run`` on a terminal); engines
#: stream only when a node asked for it and someone listens.
token_sink: ContextVar[TokenSink | None] = ContextVar("calliope_token_sink", default=None)


@dataclass
class StreamScope:
    """A node's streamed call in progress: its name, the token event of the attempt whose
    text the consumer holds (None once discarded, or before any text), and how many
    partial images (``previews``) an image node asks for (0: none)."""

    node: str
    pending: TokenEvent | None = None
    previews: int = 0


#: The node whose model output may be streamed (set by the node around its engine call).
streaming_node: ContextVar[StreamScope | None] = ContextVar("calliope_streaming", default=None)


@contextmanager
def streaming(node: str, *, previews: int = 0) -> Iterator[None]:
    """Within it, the engine call of ``node`` streams its text when someone listens (the
    run's :data:`token_sink`, or LangGraph's ``stream_mode="messages"``) — or, with
    ``previews``, the partial images of an image it draws (to the token sink). When the
    node fails after text arrived (a refusal read from the whole answer, an empty answer it
    refuses), the consumer is told to discard it here."""
    scope = StreamScope(node, previews=previews)
    token = streaming_node.set(scope)
    try:
        yield
    except BaseException as exc:
        sink, last = token_sink.get(), scope.pending
        if sink is not None and last is not None:
            reason = error_class(exc)
            sink(TokenEvent("discard", last.node, "", last.attempt, last.item, reason))
        raise
    finally:
        streaming_node.reset(token)
