"""A shipped (or any) flow compiled for LangGraph Server.

- **I/O**: the graph's input and output schemas are the flow's own inputs and outputs
  (:mod:`._schema`); a first node turns media inputs into files of the thread's media
  directory (:mod:`._inputs`), a last one turns media outputs into URLs (:mod:`._outputs`).
- **Run context**: built per run, inside the run's first node that needs it, from what the
  server passes (its context, the run's config): keys from the server's environment, media
  under ``<media root>/<thread id>/``, the simulator when ``CALLIOPE_SIMULATE=1``. Every
  file-system call runs in a worker thread (the server refuses blocking calls).
- **Progress**: every node event goes to LangGraph's ``custom`` stream (started, finished,
  retried, fallback, skipped, failed — with the route taken and the redacted error).
- **Failures** pause the run on the failed node (any node, not only those with routes), with
  the library's message in the interrupt; ``Command(resume=True)`` on the thread runs it
  again and the flow goes on.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from langgraph.config import get_config, get_stream_writer
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from calliope_graph._fetch import Fetcher
from calliope_graph.config import KeysModel
from calliope_graph.context import RunContext
from calliope_graph.errors import CalliopeError, ConfigurationError
from calliope_graph.flow import Flow
from calliope_graph.flow._runtime import FlowEvent, FlowRuntime
from calliope_graph.flow.compile import GraphIO, compile_plan, read_ref
from calliope_graph.flow.run import checkpoint_types, prepare_inputs
from calliope_graph.flow.spec import parse_ref
from calliope_graph.flow.trace import Trace
from calliope_graph.media import MediaStore
from calliope_graph.serve._inputs import media_input
from calliope_graph.serve._outputs import public
from calliope_graph.serve._schema import input_schema, output_schema

__all__ = ["ServeContext", "ServeSettings", "ServedGraph", "serve_graph", "stream_event", "visible"]

#: LangGraph's config key holding the run's checkpointer (``CONFIG_KEY_CHECKPOINTER``).
_CHECKPOINTER = "__pregel_checkpointer"
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ServeSettings:
    """What the server's environment decides (read once, when the graphs are imported).

    - ``CALLIOPE_MEDIA_ROOT``: where every thread's media go (``<root>/<thread id>/``) and
      the only place path inputs may point into (default ``./media`` of the server).
    - ``CALLIOPE_SIMULATE=1``: every provider call goes to the in-process simulator (and
      runs may ask for simulated faults). Base URLs pointing at a simulator server
      (``OPENAI_BASE_URL=...``) work without it, like any OpenAI-compatible server.
    - ``CALLIOPE_PUBLIC_URL``: the address clients reach the server at, for media URLs
      (default: LangGraph Server's own ``LANGGRAPH_API_URL``; else URLs are relative).
    """

    media_root: Path
    simulate: bool = False
    public_url: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeSettings:
        env = dict(os.environ if environ is None else environ)
        root = Path(env.get("CALLIOPE_MEDIA_ROOT") or "media").expanduser().resolve()
        return cls(
            media_root=root,
            simulate=env.get("CALLIOPE_SIMULATE", "").strip().lower() in _TRUE,
            public_url=env.get("CALLIOPE_PUBLIC_URL", "").strip(),
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


#: A flow compiled for the server: public input/output schemas, a ServeContext context.
ServedGraph = CompiledStateGraph[Any, ServeContext, Any, Any]


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
    _clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    async def __call__(self, context: Any) -> FlowRuntime:
        if not isinstance(context, ServeContext):  # invoked without a context: not cached
            return await self._make(ServeContext.model_validate(context or {}))
        if context._runtime is None:
            context._runtime = asyncio.ensure_future(self._make(context))
        return await asyncio.shield(context._runtime)

    async def client(self) -> httpx.AsyncClient:
        """The process's client on this event loop (made in a thread: it reads CA files)."""
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            made = await asyncio.to_thread(
                httpx.AsyncClient, timeout=httpx.Timeout(60.0), follow_redirects=True
            )
            found = self._clients.setdefault(loop, made)
        return found

    def base_url(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url
        metadata = get_config().get("metadata") or {}
        return str(metadata.get("langgraph_api_url") or os.environ.get("LANGGRAPH_API_URL", ""))

    async def _make(self, context: ServeContext) -> FlowRuntime:
        configurable = get_config().get("configurable") or {}
        thread = str(configurable.get("thread_id") or "shared")
        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", thread).lstrip(".") or "shared"
        root = self.settings.media_root

        def make_store() -> MediaStore:
            store = MediaStore(root / folder)
            store.root.mkdir(parents=True, exist_ok=True)
            return store

        store = await asyncio.to_thread(make_store)
        if self.settings.simulate:
            from calliope_graph.simulate import Simulator, parse_faults

            simulator = Simulator(faults=parse_faults(context.faults or ""))
            keys = simulator.keys()
            client = simulator.client(follow_redirects=True)
        else:
            if context.faults:
                raise ConfigurationError(
                    "Run context 'faults' needs a simulating server: start it with "
                    "CALLIOPE_SIMULATE=1, or drop 'faults' from the run's context."
                )
            keys = KeysModel.from_env()
            client = await self.client()
        ctx = RunContext(client=client, keys=keys, store=store, catalog=self.plan.catalog)
        trace = Trace(
            flow=self.flow, thread_id=thread, started_at=time.time(), out_dir=str(store.root)
        )
        return FlowRuntime(
            ctx=ctx,
            trace=trace,
            on_event=stream_event,
            resumable=configurable.get(_CHECKPOINTER) is not None,
        )


def serve_graph(flow: str | Flow, settings: ServeSettings | None = None) -> ServedGraph:
    """``flow`` (a shipped flow's name, a YAML path or a :class:`Flow`) compiled for LangGraph
    Server: the flow's inputs and outputs as its schemas, the run context built per run."""
    loaded = flow if isinstance(flow, Flow) else Flow.load(flow)
    plan = loaded.plan()
    settings = settings or ServeSettings.from_env()
    runtimes = _Runtimes(plan.spec.name, plan, settings)
    media = {name: spec.type for name, spec in plan.spec.inputs.items()}
    media = {k: v for k, v in media.items() if v in ("image", "audio", "video")}
    outputs = [(name, parse_ref(target)) for name, target in plan.spec.outputs.items()]

    async def prepare(state: dict[str, Any]) -> dict[str, Any]:
        try:
            return await _prepare(state)
        except CalliopeError as exc:
            raise visible(exc) from None

    async def _prepare(state: dict[str, Any]) -> dict[str, Any]:
        given = {k: state[k] for k in plan.spec.inputs if state.get(k) is not None}
        if media.keys() & given.keys():
            flow_rt = await runtimes(get_runtime().context)
            for name, kind in media.items():
                if name in given:
                    given[name] = await media_input(
                        name,
                        kind,  # type: ignore[arg-type]
                        given[name],
                        store=flow_rt.ctx.store,
                        root=settings.media_root,
                        fetcher=runtimes.fetcher,
                    )
        # The public keys are cleared: a data URL is not kept in every later checkpoint,
        # and an output of the same name (webcam_story's ``image``) starts empty.
        cleared = {k: None for k in plan.spec.inputs if k in state}
        return {**prepare_inputs(plan, given), **cleared}

    async def finish(state: dict[str, Any]) -> dict[str, Any]:
        base = runtimes.base_url()
        found = {name: read_ref(state, ref) for name, ref in outputs}
        return {k: public(v, settings.media_root, base) for k, v in found.items() if v is not None}

    io = GraphIO(
        input_schema=input_schema(plan),
        output_schema=output_schema(plan),
        context_schema=ServeContext,
        prepare=prepare,
        finish=finish,
        value_types=tuple(sorted(checkpoint_types(plan), key=lambda t: t.__qualname__)),
    )
    served: ServedGraph = compile_plan(plan, runtime_factory=runtimes, io=io)  # type: ignore[assignment]
    return served
