"""A shipped (or any) flow compiled for LangGraph Server.

- **I/O**: the graph's input and output schemas are the flow's own inputs and outputs
  (:mod:`._schema`); a first node turns media inputs into files of the thread's media
  directory (:mod:`._inputs`), a last one turns media outputs into URLs (:mod:`._outputs`).
- **Inputs are checked** before anything runs: an unknown key, or a value of the wrong JSON
  type (text given as a number, list or object), fails the run naming the input.
- **Run context**: built per run, inside the run's first node that needs it, from what the
  server passes (its context, the run's config): keys from the server's environment, media
  under ``<media root>/<thread id>/<run id>/`` (a later run never overwrites an earlier
  run's files, so its URLs keep their bytes), the simulator when ``CALLIOPE_SIMULATE=1``. Every
  file-system call runs in a worker thread (the server refuses blocking calls).
- **Progress**: every node event goes to LangGraph's ``custom`` stream (started, finished,
  retried, fallback, skipped, failed — with the route taken and the redacted error).
- **Failures** pause the run on the failed node (any node, not only those with routes), with
  the library's message in the interrupt; ``Command(resume=True)`` on the thread runs it
  again and the flow goes on.
- **A person's choice** (a ``choose`` node, ``by: human``) pauses the run with
  ``{"node": ..., "candidates": [...]}`` as the interrupt's value; ``Command(resume={node:
  index})`` (a client's ``command={"resume": {"pick": 1}}``) continues it with that candidate,
  nothing before the node run again.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from langchain_core.runnables import RunnableLambda
from langgraph.config import get_config, get_stream_writer
from langgraph.constants import START
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from calliope_graph._fetch import Fetcher
from calliope_graph.context import RunContext
from calliope_graph.errors import CalliopeError, ConfigurationError
from calliope_graph.flow import Flow
from calliope_graph.flow._plan import Plan
from calliope_graph.flow._runtime import FlowEvent, FlowRuntime
from calliope_graph.flow.compile import GraphIO, compile_plan, read_ref
from calliope_graph.flow.run import checkpoint_types, prepare_inputs
from calliope_graph.flow.spec import PortTypeName, parse_ref
from calliope_graph.flow.trace import Trace
from calliope_graph.media import MediaStore
from calliope_graph.serve._inputs import media_input
from calliope_graph.serve._outputs import public
from calliope_graph.serve._schema import check_input, input_schema, output_schema
from calliope_graph.serve._signing import MediaSigner, default_signer
from calliope_graph.session import OfflineSwitch, Session

__all__ = ["ServeContext", "ServeSettings", "ServedGraph", "serve_graph", "stream_event", "visible"]

#: LangGraph's config key holding the run's checkpointer (``CONFIG_KEY_CHECKPOINTER``).
_CHECKPOINTER = "__pregel_checkpointer"


@dataclass(frozen=True)
class ServeSettings:
    """What the server's environment decides (read once, when the graphs are imported).

    - ``CALLIOPE_MEDIA_ROOT``: where every thread's media go (``<root>/<thread id>/``) and
      the only place path inputs may point into (default ``./media`` of the server).
    - ``CALLIOPE_SIMULATE=1``: every provider call goes to the in-process simulator (with
      ``CALLIOPE_FAULTS`` and ``CALLIOPE_SIMULATE_LIMITS``, read as every process role reads
      them: :class:`~calliope_graph.session.OfflineSwitch`), and runs may ask for simulated
      faults of their own. Base URLs pointing at a simulator server
      (``OPENAI_BASE_URL=...``) work without it, like any OpenAI-compatible server.
    - ``CALLIOPE_PUBLIC_URL``: the address clients reach the server at, for media URLs
      (default: LangGraph Server's own ``LANGGRAPH_API_URL``; else URLs are relative).
    - ``CALLIOPE_MEDIA_SECRET`` / ``CALLIOPE_MEDIA_URL_TTL``: the key media URLs are signed
      with and how long they last (``signer``, see :mod:`._signing`).
    - ``LANGGRAPH_AUTH`` (set by LangGraph from ``langgraph.json`` ``auth``): a custom auth
      handler is configured, so the media route also serves the owner of a thread
      (``owner_auth``) without a signature.
    - ``CALLIOPE_MEDIA_STORE``: ``s3://bucket/prefix`` keeps every thread's media in object
      storage too (key ``<prefix>/<path under the media root>``), so replicas share them;
      media URLs are then the store's presigned URLs (see :mod:`calliope_graph.object_store`).

    ``session`` is the server's :class:`~calliope_graph.session.Session`, made once with the
    settings: every served run's context comes from it (its rate limits, with a flow's
    catalog limits on top; its HTTP client on the server's event loop).
    """

    media_root: Path
    simulate: bool = False
    public_url: str = ""
    signer: MediaSigner = field(default_factory=default_signer)
    owner_auth: bool = False
    media_store: str = ""
    session: Session = field(default_factory=Session, compare=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeSettings:
        env = dict(os.environ if environ is None else environ)
        root = Path(env.get("CALLIOPE_MEDIA_ROOT") or "media").expanduser().resolve()
        store = env.get("CALLIOPE_MEDIA_STORE", "").strip()
        if store:  # a bad URL stops the server at start, naming the variable
            from calliope_graph.object_store import parse_store_url

            try:
                parse_store_url(store)
            except ConfigurationError as exc:
                raise ConfigurationError(f"CALLIOPE_MEDIA_STORE: {exc}") from None
        # The offline switch, read as every process role reads it (a bad value stops the
        # server at start, naming the variable); its simulator is the server session's.
        simulator = OfflineSwitch.from_env(env).simulator()
        return cls(
            media_root=root,
            simulate=simulator is not None,
            session=Session(simulator=simulator, simulate=simulator is not None),
            public_url=env.get("CALLIOPE_PUBLIC_URL", "").strip(),
            signer=default_signer() if environ is None else MediaSigner.from_env(env),
            owner_auth=bool(env.get("LANGGRAPH_AUTH", "").strip()),
            media_store=store,
        )


class ServeContext(BaseModel):
    """The context a client may pass with a run (``context={...}``); unknown keys ignored."""

    model_config = ConfigDict(extra="ignore")

    faults: str | None = Field(
        default=None,
        description="Simulated provider faults for this run, in the CLI's --faults syntax "
        "(e.g. 'auth@openai'); only when the server runs with CALLIOPE_SIMULATE=1.",
    )
    _runtime: asyncio.Future[FlowRuntime] | None = PrivateAttr(default=None)
    #: The run's LangGraph run id, noted by the first node (``~inputs``): nodes inside a
    #: lane's subgraph no longer see it in their config.
    _run_id: str | None = PrivateAttr(default=None)


#: A flow compiled for the server: public input/output schemas, a ServeContext context.
ServedGraph = CompiledStateGraph[Any, ServeContext, Any, Any]

#: The graph's first or last node (``GraphIO.prepare`` / ``finish``).
_Node = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


_VISIBLE: dict[type[BaseException], type[BaseException]] = {}


def visible(exc: CalliopeError) -> BaseException:
    """``exc`` as LangGraph Server shows it to the client: with its message.

    The server replaces the message of any exception that is not a ``ValueError`` (or a few
    other builtins) with "An internal error occurred"; so the same error (same class name,
    attributes and message, still caught by ``except MediaError``) is re-raised as an
    instance of a subclass that is also a ``ValueError``. Our messages never hold a secret.
    """
    cls = type(exc)
    if isinstance(exc, ValueError):
        return exc
    sub = _VISIBLE.get(cls)
    if sub is None:
        sub = _VISIBLE[cls] = type(cls.__name__, (cls, ValueError), {"__module__": cls.__module__})
    copy = sub.__new__(sub)
    copy.__dict__.update(exc.__dict__)
    copy.args = exc.args
    return copy


def stream_event(event: FlowEvent) -> None:
    """Send a node event to LangGraph's ``custom`` stream (a no-op outside a run)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    e = event.execution
    writer(
        {
            "event": event.kind,
            "node": event.node,
            "item": e.item,
            "status": e.status,
            "provider": e.provider,
            "attempts": e.attempts,
            "retries": e.retries,
            "branch": e.branch,
            "error_class": e.error_class,
            "error": e.error,
        }
    )


@dataclass
class _Runtimes:
    """Builds each run's FlowRuntime (the graph's runtime factory)."""

    flow: str
    plan: Any
    settings: ServeSettings
    #: Downloads media inputs given as URLs under the fetch policy (CALLIOPE_FETCH_ALLOW,
    #: CALLIOPE_FETCH_TIMEOUT: read when the graph is built, so a bad value stops the server).
    fetcher: Fetcher = field(default_factory=Fetcher)

    async def __call__(self, context: Any) -> FlowRuntime:
        if not isinstance(context, ServeContext):  # invoked without a context: not cached
            return await self._make(ServeContext.model_validate(context or {}))
        if context._runtime is None:
            context._runtime = asyncio.ensure_future(self._make(context))
        return await asyncio.shield(context._runtime)

    async def client(self) -> httpx.AsyncClient:
        """The server session's client on this event loop (made in a thread: it reads CA
        files)."""
        return await self.settings.session.client()

    def base_url(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url
        metadata = get_config().get("metadata") or {}
        return str(metadata.get("langgraph_api_url") or os.environ.get("LANGGRAPH_API_URL", ""))

    async def _make(self, context: ServeContext) -> FlowRuntime:
        config = get_config()
        configurable = config.get("configurable") or {}
        thread = str(configurable.get("thread_id") or "shared")
        root = self.settings.media_root
        run = context._run_id or _run_id(config)

        def make_store() -> MediaStore:
            store = MediaStore(root / _folder(thread) / _folder(run))
            if self.settings.media_store:  # keys: <prefix>/<path under the media root>
                from calliope_graph.object_store import open_media_store, store_key_root

                store = store_key_root(
                    open_media_store(store.root, self.settings.media_store), root
                )
            store.root.mkdir(parents=True, exist_ok=True)
            return store

        store = await asyncio.to_thread(make_store)
        if self.settings.simulate:
            simulator = self.settings.session.simulator
            if simulator is None or context.faults:  # this run's faults: a simulator of its own
                from calliope_graph.simulate import Simulator, parse_faults

                base = list(simulator.faults) if simulator is not None else []
                simulator = Simulator(faults=[*base, *parse_faults(context.faults or "")])
                client = simulator.client(follow_redirects=True)
            else:  # the server's simulator (CALLIOPE_FAULTS, CALLIOPE_SIMULATE_LIMITS)
                client = await self.client()
            keys = simulator.keys()
        else:
            if context.faults:
                raise ConfigurationError(
                    "Run context 'faults' needs a simulating server: start it with "
                    "CALLIOPE_SIMULATE=1, or drop 'faults' from the run's context."
                )
            keys = self.settings.session.keys  # the environment's, read for each run
            client = await self.client()
        ctx = RunContext(
            client=client,
            keys=keys,
            store=store,
            catalog=self.plan.catalog,
            limits=self.settings.session.limits_for(self.plan.catalog),
            simulated=self.settings.simulate,
        )
        trace = Trace(
            flow=self.flow,
            thread_id=thread,
            started_at=time.time(),
            out_dir=str(store.root),
            simulated=self.settings.simulate,
        )
        return FlowRuntime(
            ctx=ctx,
            trace=trace,
            on_event=stream_event,
            resumable=configurable.get(_CHECKPOINTER) is not None,
        )


def _folder(name: str) -> str:
    """``name`` (a thread or run id) as one safe folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "shared"


def _run_id(config: Any) -> str:
    """The LangGraph run id of the running node (LangGraph Server gives every run one);
    a fresh id when invoked without one, so two runs never share a folder."""
    try:
        info = get_runtime().execution_info
    except (RuntimeError, AttributeError):
        info = None
    found = (info.run_id if info is not None else None) or config.get("run_id")
    found = found or (config.get("metadata") or {}).get("run_id")
    return str(found) if found else uuid.uuid4().hex


def serve_graph(flow: str | Flow, settings: ServeSettings | None = None) -> ServedGraph:
    """``flow`` (a shipped flow's name, a YAML path or a :class:`Flow`) compiled for LangGraph
    Server: the flow's inputs and outputs as its schemas, the run context built per run."""
    loaded = flow if isinstance(flow, Flow) else Flow.load(flow)
    plan = loaded.plan()
    settings = settings or ServeSettings.from_env()
    runtimes = _Runtimes(plan.spec.name, plan, settings)
    prepare = _inputs_node(plan, runtimes)
    finish = _outputs_node(plan, runtimes)
    io = GraphIO(
        input_schema=input_schema(plan),
        output_schema=output_schema(plan),
        context_schema=ServeContext,
        prepare=prepare,
        finish=finish,
        value_types=tuple(sorted(checkpoint_types(plan), key=lambda t: t.__qualname__)),
    )
    served: ServedGraph = compile_plan(plan, runtime_factory=runtimes, io=io)  # type: ignore[assignment]
    _check_input_at_start(served, plan)
    return served


def _inputs_node(plan: Plan, runtimes: _Runtimes) -> _Node:
    """The graph's first node (``~inputs``): notes the run id, turns media inputs into files
    of the run's media directory and the public inputs into the flow's state; a library
    error as the client sees it (:func:`visible`)."""
    # A media input, or a list of media (each item made a file the same way).
    media = {name: spec.element for name, spec in plan.spec.inputs.items()}
    media = {k: v for k, v in media.items() if v in ("image", "audio", "video")}

    async def prepare(state: dict[str, Any]) -> dict[str, Any]:
        try:
            return await _prepare(state)
        except CalliopeError as exc:
            raise visible(exc) from None

    async def _prepare(state: dict[str, Any]) -> dict[str, Any]:
        context = get_runtime().context
        if isinstance(context, ServeContext) and context._run_id is None:
            context._run_id = _run_id(get_config())
        given = {k: state[k] for k in plan.spec.inputs if state.get(k) is not None}
        if media.keys() & given.keys():
            await _media_inputs(given, media, runtimes)
        # The public keys are cleared: a data URL is not kept in every later checkpoint,
        # and an output of the same name (webcam_story's ``image``) starts empty.
        cleared = {k: None for k in plan.spec.inputs if k in state}
        return {**prepare_inputs(plan, given), **cleared}

    return prepare


async def _media_inputs(
    given: dict[str, Any], media: dict[str, PortTypeName], runtimes: _Runtimes
) -> None:
    """Replace each media input of ``given`` (a path, URL or data URL; ``media`` maps the
    flow's media inputs to their kinds) by a file of the run's store, published to a remote
    store too."""
    settings = runtimes.settings
    flow_rt = await runtimes(get_runtime().context)
    store = flow_rt.ctx.store

    async def one(name: str, kind: PortTypeName, value: Any) -> Any:
        found = await media_input(
            name,
            kind,  # type: ignore[arg-type]
            value,
            store=store,
            root=settings.media_root,
            fetcher=runtimes.fetcher,
            signer=settings.signer,
            server_url=runtimes.base_url(),
        )
        # Kept in the store too: a replica can resume the run.
        return await store.publish(found) if store.remote else found

    for name, kind in media.items():
        if name in given:
            value = given[name]
            if isinstance(value, list):  # a list input of media (checked a list already)
                given[name] = [await one(f"{name}[{i}]", kind, v) for i, v in enumerate(value)]
            else:
                given[name] = await one(name, kind, value)


def _outputs_node(plan: Plan, runtimes: _Runtimes) -> _Node:
    """The graph's last node (``~outputs``): ends the run's trace and gives the flow's
    outputs, media as URLs."""
    outputs = [(name, parse_ref(target)) for name, target in plan.spec.outputs.items()]
    settings = runtimes.settings

    async def finish(state: dict[str, Any]) -> dict[str, Any]:
        context = get_runtime().context
        if isinstance(context, ServeContext) and context._runtime is not None:
            flow_rt = await context._runtime  # the run's: its trace ends (and its telemetry)
            flow_rt.trace.status, flow_rt.trace.ended_at = "ok", time.time()
            flow_rt.save_final()
        base = runtimes.base_url()
        found = {name: read_ref(state, ref) for name, ref in outputs}
        root, signer = settings.media_root, settings.signer
        return {k: public(v, root, base, signer) for k, v in found.items() if v is not None}

    return finish


def _check_input_at_start(served: ServedGraph, plan: Plan) -> None:
    """Make ``served`` refuse an input that does not fit the flow's inputs, before anything
    runs, with a message the client sees."""

    def checked(value: Any) -> Any:
        try:
            return check_input(plan, value)
        except CalliopeError as exc:
            raise visible(exc) from None

    async def achecked(value: Any) -> Any:
        return checked(value)

    # LangGraph keeps only the input schema's keys of a run's input (``StateGraph``'s START
    # node filters them: langgraph ``graph/state.py`` ``attach_node``), so an unknown key
    # would vanish unseen; the START node's ``bound`` (the runnable its writers follow; by
    # default a pass-through) sees the raw input. Not its ``mapper``: LangGraph applies that
    # when it *prepares* the task too — also to discard a failed run's pending start when
    # the next input arrives (``pregel/_loop.py`` ``_first``) — so a refusal there raised the
    # old error for every later run of the thread, and for a read of its state.
    served.nodes[START] = served.nodes[START].copy(
        {"bound": RunnableLambda(checked, afunc=achecked, name="~check_input")}
    )
