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
import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from typing_extensions import TypedDict

from calliope_graph.config import KeysModel, ModelCatalog
from calliope_graph.limits import Limits, LimitsSource, default_limits

if TYPE_CHECKING:
    from calliope_graph.context import PollSettings, RetrySettings, RunContext
    from calliope_graph.simulate import Simulator

__all__ = [
    "FAULTS_ENV",
    "SIMULATE_ENV",
    "SIMULATE_LIMITS_ENV",
    "OfflineSwitch",
    "Session",
    "SessionOptions",
    "default_session",
    "session_of",
]

#: The offline switch: every provider call goes to the simulator (no keys, no network).
SIMULATE_ENV = "CALLIOPE_SIMULATE"
#: The simulator's faults, in the ``--faults`` syntax (with the switch on).
FAULTS_ENV = "CALLIOPE_FAULTS"
#: The simulator's provider limits, in the ``--simulate-limits`` syntax (with the switch on).
SIMULATE_LIMITS_ENV = "CALLIOPE_SIMULATE_LIMITS"
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class OfflineSwitch:
    """The offline switch as the environment sets it: ``CALLIOPE_SIMULATE=1`` (every provider
    call goes to the simulator), ``CALLIOPE_FAULTS`` and ``CALLIOPE_SIMULATE_LIMITS`` (the
    simulator's faults and limits, in the CLI's ``--faults``/``--simulate-limits`` syntax).

    Read in one place for every process role: a :class:`Session` made without keys,
    simulator or transport (so :func:`default_session`, the DBOS worker's and the server's),
    and the CLI (where ``--simulate``, ``--faults`` and ``--simulate-limits`` win over it).
    """

    simulate: bool = False
    faults: str = ""
    limits: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OfflineSwitch:
        """The switch of ``environ`` (default: the process's); a value that is neither on
        nor off is a :class:`~calliope_graph.errors.ConfigurationError` naming the variable."""
        env = os.environ if environ is None else environ
        raw = env.get(SIMULATE_ENV, "").strip()
        if raw.lower() not in _ON + _OFF:
            from calliope_graph.errors import ConfigurationError

            raise ConfigurationError(
                f"{SIMULATE_ENV}={raw!r} is neither on nor off: set {SIMULATE_ENV}=1 to run "
                f"every provider call against the offline simulator, or 0 (or unset it) to "
                "call the providers."
            )
        return cls(
            simulate=raw.lower() in _ON,
            faults=env.get(FAULTS_ENV, "").strip(),
            limits=env.get(SIMULATE_LIMITS_ENV, "").strip(),
        )

    def simulator(self) -> Simulator | None:
        """The simulator the switch asks for (None when it is off), its faults and limits
        read from the environment's syntax; a bad value is a ``ConfigurationError`` naming
        the variable, as is a fault or limit given while the switch is off."""
        from calliope_graph.errors import ConfigurationError

        if not self.simulate:
            for name, value in ((FAULTS_ENV, self.faults), (SIMULATE_LIMITS_ENV, self.limits)):
                if value:
                    raise ConfigurationError(
                        f"{name} applies only to the simulator: set {SIMULATE_ENV}=1 too "
                        f"(or pass --simulate on the command line), or unset {name}."
                    )
            return None
        from calliope_graph.simulate import (
            FaultSpecError,
            Simulator,
            parse_faults,
            parse_simulate_limits,
        )

        try:
            faults = parse_faults(self.faults)
        except FaultSpecError as exc:
            raise ConfigurationError(f"{FAULTS_ENV}={self.faults!r}: {exc}") from None
        limits = (
            parse_simulate_limits(self.limits, where=SIMULATE_LIMITS_ENV) if self.limits else None
        )
        return Simulator(faults=faults, limits=limits)


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
    else the environment (read for each run context). ``simulate``: None (the default) —
    a session given no ``keys``, ``simulator`` or ``transport`` follows the offline switch
    (:class:`OfflineSwitch`: ``CALLIOPE_SIMULATE=1`` makes its simulator); True — simulate
    (with the switch's faults and limits); False — never. See the module docstring.
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
        simulate: bool | None = None,
    ) -> None:
        self._keys = keys
        if simulator is None and (
            simulate or (simulate is None and keys is None and transport is None)
        ):
            simulator = OfflineSwitch.from_env().simulator()
            if simulator is None and simulate:
                from calliope_graph.simulate import Simulator

                simulator = Simulator()
            #: The simulator came from the offline switch: it wins over keys given later.
            self._switched = simulator is not None
        else:
            self._switched = False
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
        if simulator is None and (keys is None or self._switched):
            return self  # with the offline switch on, every call goes to the simulator
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
            simulated=self.simulator is not None,
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
