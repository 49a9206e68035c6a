"""The session: what one process role shares between all the runs it makes.

A :class:`Session` owns the keys, the simulator (offline runs), the per-provider rate
limits (:class:`~calliope_graph.limits.Limits`), the retry and poll settings, the HTTP
clients the engines call providers with, and where media go (an object store URL). It is
made once per process role and passed down — never a module global that code writes:

- the CLI makes one per command (``--limits``, ``--simulate``, the keys of the
  environment) and passes it to ``Flow.ainvoke``, :func:`~calliope_graph.batch.run_batch`
  and :func:`~calliope_graph.batch._dbos.run_worker` as ``session=``;
- :func:`~calliope_graph.batch.run_batch` and the DBOS worker take one (or make one from
  ``keys``/``simulator``) and hand it to every item's run; the worker's own limits take
  their windows from the batch database (:meth:`Limits.share`), not the process's;
- the server (:class:`~calliope_graph.serve.ServeSettings`) makes one when it starts and
  every served run's context comes from it;
- a plain Python user calling ``flow.invoke(...)`` passes nothing: the runs use
  :func:`default_session`, made on first use, so concurrent ``ainvoke`` calls still share
  one rate budget as before.

A run reaches the session through its :class:`~calliope_graph.context.RunContext` (made by
:meth:`Session.run_context`), which carries the session's limits — or, for a flow whose
model catalog has a ``limits:`` section, the session's overlay of them
(:meth:`Limits.overlay`): two flows with different limits in one process each keep their
own, and neither writes the other's.

An ``httpx.AsyncClient`` belongs to one event loop, so the session makes clients rather
than holding a single one: :meth:`Session.client` keeps one per running loop (the server:
one loop, every run shares it), :meth:`Session.run_context` gives a run or a batch a client
of its own that its owner closes (``asyncio.run`` per ``flow.invoke`` makes a new loop each
time).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from typing_extensions import TypedDict

from calliope_graph.config import KeysModel, ModelCatalog
from calliope_graph.limits import Limits, LimitsSource, default_limits

if TYPE_CHECKING:
    from calliope_graph.context import PollSettings, RetrySettings, RunContext
    from calliope_graph.simulate import Simulator

__all__ = ["Session", "SessionOptions", "default_session", "session_of"]


class SessionOptions(TypedDict, total=False):
    """What a run, a batch, a worker or a follower takes about the session it runs in
    (the base of :class:`~calliope_graph.flow.run.RunnerOptions` and
    :class:`~calliope_graph.batch.BatchOptions`)."""

    session: Session | None
    """The session to run in (default: :func:`default_session`)."""
    keys: KeysModel | None
    """Provider keys (default: the session's: from the environment, or the simulator's)."""
    simulator: Simulator | None
    """Run every provider call against this simulator (offline)."""
    ctx: RunContext | None
    """A ready run context (client, keys, store, limits); overrides the three above."""
    media_store: str | None
    """Keep media in object storage too: ``s3://bucket/prefix`` (credentials and endpoint
    from the AWS environment). ``None`` (the default): ``$CALLIOPE_MEDIA_STORE`` if set,
    else only the output folder. See :mod:`calliope_graph.object_store`."""


def _new_limits() -> Limits:
    """A session's own limits when it is given none (tests swap this for a virtual clock)."""
    return Limits()


class Session:
    """What one process role shares: keys, simulator, limits, retry/poll settings, clients.

    ``limits``: a :class:`Limits` to share, or ``--limits``-style specs (a string or a
    mapping) over the defaults; none: the defaults. ``keys``: default from the simulator,
    else the environment (read for each run context). See the module docstring.
    """

    def __init__(
        self,
        *,
        keys: KeysModel | None = None,
        simulator: Simulator | None = None,
        limits: Limits | LimitsSource | None = None,
        retry: RetrySettings | None = None,
        poll: PollSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        media_store: str | None = None,
        where: str = "limits",
    ) -> None:
        self._keys = keys
        self.simulator = simulator
        if isinstance(limits, Limits):
            self.limits = limits
        else:
            self.limits = _new_limits()
            if limits:
                self.limits.configure(limits, where=where)
        self._retry = retry
        self._poll = poll
        self._transport = transport
        self.media_store = media_store
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:  # never show keys
        sim = ", simulated" if self.simulator is not None else ""
        return f"Session(limits={self.limits!r}{sim})"

    # -- what it shares ------------------------------------------------------------------
    @property
    def keys(self) -> KeysModel:
        """The provider keys: given, else the simulator's, else the environment's — read
        again each time (each run context reads them when it is made, as before sessions:
        a key exported after a first run is seen by the next)."""
        with self._lock:
            if self._keys is None and self.simulator is not None:
                self._keys = self.simulator.keys()
            keys = self._keys
        return keys if keys is not None else KeysModel.from_env()

    @property
    def transport(self) -> httpx.AsyncBaseTransport | None:
        """Where requests go: the given transport, the simulator's, or the network (None)."""
        if self._transport is None and self.simulator is not None:
            self._transport = self.simulator.transport()
        return self._transport

    @property
    def retry(self) -> RetrySettings:
        from calliope_graph.context import RetrySettings

        return self._retry or RetrySettings()

    @property
    def poll(self) -> PollSettings:
        from calliope_graph.context import PollSettings

        return self._poll or PollSettings()

    def limits_for(self, catalog: ModelCatalog | None) -> Limits:
        """The limits a flow of ``catalog`` waits on: the session's, with the catalog's
        ``limits:`` section (if any) on top in an overlay of their own."""
        if catalog is None or not catalog.limits:
            return self.limits
        return self.limits.overlay(catalog.limits, where="the model catalog")

    def derive(
        self, *, keys: KeysModel | None = None, simulator: Simulator | None = None
    ) -> Session:
        """This session with other keys or another simulator, sharing its limits (so calls
        made with ``keys=``/``simulator=`` still share the session's rate budget)."""
        if keys is None and simulator is None:
            return self
        twin = Session(
            keys=keys,
            simulator=simulator,
            limits=self.limits,
            retry=self._retry,
            poll=self._poll,
            media_store=self.media_store,
        )
        if simulator is None:
            twin.simulator = self.simulator
            twin._transport = self.transport
        return twin

    # -- clients and contexts --------------------------------------------------------------
    def new_client(self) -> httpx.AsyncClient:
        """A new client for provider calls (the caller closes it)."""
        from calliope_graph.context import _Client

        return _Client(
            transport=self.transport,
            timeout=httpx.Timeout(self.retry.request_timeout),
            follow_redirects=True,
        )

    async def client(self) -> httpx.AsyncClient:
        """The session's client on the running event loop, made on first use (in a thread:
        it reads CA files) and closed by :meth:`aclose`."""
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            made = await asyncio.to_thread(self.new_client)
            found = self._clients.setdefault(loop, made)
        return found

    def run_context(
        self,
        out_dir: str | Path = "out",
        *,
        catalog: ModelCatalog | None = None,
        media_store: str | None = None,
        client: httpx.AsyncClient | None = None,
        **kwargs: Any,
    ) -> RunContext:
        """A run context of this session writing into ``out_dir``: its keys, its limits
        (with ``catalog``'s on top), a new client unless ``client`` is given (the
        context's owner closes it with :meth:`RunContext.aclose`)."""
        from calliope_graph.config import catalog as default_catalog
        from calliope_graph.context import RunContext

        return RunContext.create(
            out_dir,
            keys=self.keys,
            client=client if client is not None else self.new_client(),
            media_store=media_store or self.media_store,
            catalog=catalog if catalog is not None else default_catalog,
            limits=self.limits_for(catalog),
            retry=self.retry,
            poll=self.poll,
            **kwargs,
        )

    async def aclose(self) -> None:
        """Close the client of the running loop (others belong to loops already gone)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        client = self._clients.pop(loop, None) if loop is not None else None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_default: Session | None = None
_default_lock = threading.Lock()


def default_session() -> Session:
    """The session of runs that name none (a plain ``flow.invoke(...)``), made on first use.

    Read-only to the library: the CLI, batches, workers and the server make sessions of
    their own and never change this one.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = Session(limits=default_limits())
        return _default


def session_of(options: Mapping[str, Any]) -> Session:
    """The session ``options`` (:class:`SessionOptions`) name: ``session`` (default
    :func:`default_session`) with their ``keys``/``simulator`` if given."""
    session = options.get("session") or default_session()
    return session.derive(keys=options.get("keys"), simulator=options.get("simulator"))
