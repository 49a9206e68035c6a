"""Running a compiled flow: inputs in, typed outputs and a trace out, with live events.

:class:`FlowRunner` owns what one or many runs share (the validated plan, the run context,
the compiled graph when it can be reused); each run gets a
:class:`~calliope_graph.flow._runtime.FlowRuntime` as LangGraph's runtime context.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.cache.base import BaseCache
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Checkpointer, Interrupt, StateSnapshot
from typing_extensions import Unpack

from calliope_graph.context import PreviewEvent, RunContext, StreamEvent, TokenEvent
from calliope_graph.errors import (
    CalliopeError,
    ConfigurationError,
    FlowRunError,
    FlowSpecError,
    MediaError,
    disk_full,
)
from calliope_graph.flow._checkpoints import (
    CHECKPOINT_URL_ENV,
    checkpoint_serializer,
    checkpoint_types,
    checkpointer_from_url,
    open_sqlite,
    run_guard,
    shown_url,
    with_flow_serializer,
)
from calliope_graph.flow._choice import check_call, resume_command, waiting_for_choice
from calliope_graph.flow._run_io import (
    FLOW_METADATA,
    Durability,
    FlowResult,
    RunnerOptions,
    RunOptions,
    _threads,
    cache_hits,
    new_runtime,
    new_thread_id,
    prepare_inputs,
    run_failed,
    split_options,
    stream_events,
)
from calliope_graph.flow._runtime import (
    FlowEvent,
    FlowRuntime,
    OnEvent,
)
from calliope_graph.flow.compile import CompiledFlowGraph, compile_plan, read_ref
from calliope_graph.flow.trace import Trace
from calliope_graph.media import MediaStore
from calliope_graph.session import Session, SessionOptions, session_of

if TYPE_CHECKING:
    from calliope_graph.flow._checkpoints import TraceLog
    from calliope_graph.flow._journal import Journal, JournalDB
    from calliope_graph.flow.validate import Plan

__all__ = [
    "Durability",
    "FlowResult",
    "FlowRunner",
    "PreviewEvent",
    "RunOptions",
    "RunnerOptions",
    "TokenEvent",
    "checkpoint_serializer",
    "checkpoint_types",
    "new_thread_id",
    "prepare_inputs",
    "shown_url",
    "split_options",
    "stream_events",
]


# -- the runner ---------------------------------------------------------------------------------
def compiled_once(plan: Plan) -> CompiledFlowGraph:
    """``plan`` compiled with no checkpointer and no cache, once for all its runners (a run
    with checkpoints uses a copy given its saver): the graph holds no run's state."""
    if plan.compiled is None:
        plan.compiled = compile_plan(plan)
    graph: CompiledFlowGraph = plan.compiled
    return graph


class FlowRunner:
    """Runs one validated flow, once or many times (see :class:`RunnerOptions`)."""

    def __init__(self, plan: Plan, **options: Unpack[RunnerOptions]) -> None:
        self.plan = plan
        self.out_dir = Path(options.get("out_dir", "out"))
        self._session_options: SessionOptions = {
            "session": options.get("session"),
            "keys": options.get("keys"),
            "simulator": options.get("simulator"),
        }
        self._session: Session | None = None
        self._ctx = options.get("ctx")
        self._own_ctx: RunContext | None = None
        checkpointer = options.get("checkpointer")
        if checkpointer is None:
            checkpointer = os.environ.get(CHECKPOINT_URL_ENV) or True
        self.checkpointer: Checkpointer | str | Path = checkpointer
        self.cache: bool | BaseCache[Any] = options.get("cache", False)
        self.trace_file = options.get("trace_file", True)
        self.record = options.get("record", True)
        self.durability: Durability = options.get("durability", "async")
        self.media_store = options.get("media_store")
        self._graph: CompiledFlowGraph | None = None
        self._static: dict[str, tuple[str | None, str | None, dict[str, Any], dict[str, Any]]] = {}
        self._out_ready = False
        self._resolved: Path | None = None
        self._serde_cache: Any = None
        #: Set on a twin by :meth:`with_out_dir`: one journal connection for all its runs,
        #: and whether it runs a batch's item (see there).
        self._journal_db: JournalDB | None = None
        self._batch_item = False
        self.reference: str | None = None  # the flow as loaded (Flow.runner): for commands

    # -- context ----------------------------------------------------------------------------
    def _context(self) -> RunContext:
        if self._ctx is not None:
            return self._ctx
        if self._own_ctx is None:
            # The session's keys, client and limits; the catalog's `limits:` section, if
            # any, in the session's overlay of them (no other flow's limits change).
            session = self.session
            self._own_ctx = session.run_context(
                self.out_dir,
                catalog=self.plan.catalog,
                media_store=self.media_store
                or session.media_store
                or os.environ.get("CALLIOPE_MEDIA_STORE"),
            )
        return self._own_ctx

    @property
    def session(self) -> Session:
        """The session its runs are in: ``session`` (default: the process's default
        session), with ``keys``/``simulator`` if given; resolved when first needed (a
        runner given a ready ``ctx`` needs none)."""
        if self._session is None:
            self._session = session_of(self._session_options)
        return self._session

    async def aclose(self) -> None:
        if self._own_ctx is not None:
            await self._own_ctx.aclose()
            self._own_ctx = None

    @contextlib.asynccontextmanager
    async def _graph_for_run(
        self, thread: str, *, fresh: bool
    ) -> AsyncIterator[tuple[CompiledFlowGraph, TraceLog | None]]:
        """The graph for one run of ``thread``, with its checkpointer open, the thread held
        (PostgreSQL: no other process runs it meanwhile) and the run's trace log (kept next
        to the checkpoints; None when the store has no room for it)."""
        if not self.checkpointer:
            yield self._compiled(), None
            return
        defer = self.durability != "sync"  # (sync: each step's saves before the next step)
        async with contextlib.AsyncExitStack() as stack:
            saver: BaseCheckpointSaver[Any]
            if self.checkpointer is True:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                saver = await stack.enter_async_context(
                    open_sqlite(self.out_dir / "checkpoints.sqlite", self._serde(), defer=defer)
                )
                graph = self._compiled().copy({"checkpointer": saver})  # compiled once
            elif isinstance(self.checkpointer, str | Path):
                saver = await stack.enter_async_context(
                    checkpointer_from_url(
                        self.checkpointer, self.plan, serde=self._serde(), defer=defer
                    )
                )
                graph = self._compiled().copy({"checkpointer": saver})
            else:  # a saver the caller opened: compiled once for every run of this runner
                graph = self._compiled()
                assert isinstance(graph.checkpointer, BaseCheckpointSaver)
                saver = graph.checkpointer
            trace_log = await stack.enter_async_context(
                run_guard(
                    saver,
                    thread,
                    fresh=fresh,
                    store=self._store_name(),
                    trace=not self._batch_item,
                )
            )
            yield graph, trace_log

    def _compiled(self) -> CompiledFlowGraph:
        """The graph compiled once for this runner when its checkpointer is a saver object
        (the flow's allow-list applied on top of its serializer) or none, and its cache."""
        if self._graph is None:
            cache = self._cache()
            if self.checkpointer and not isinstance(self.checkpointer, str | Path | bool):
                saver = with_flow_serializer(self.checkpointer, self.plan)
                self._graph = compile_plan(self.plan, checkpointer=saver, cache=cache)
            elif cache is not None:
                self._graph = compile_plan(self.plan, cache=cache)
            else:
                self._graph = compiled_once(self.plan)
        return self._graph

    # -- batches: one compiled graph, one folder per item (calliope_graph.batch) ------------
    def with_out_dir(
        self,
        out_dir: str | Path,
        ctx: RunContext | None = None,
        *,
        journal: JournalDB | None = None,
        batch_item: bool = False,
    ) -> FlowRunner:
        """A runner like this one writing into ``out_dir`` (media, ``trace.json``) that shares
        its compiled graph, checkpointer and cache, so many items compile the flow once.

        ``ctx`` defaults to this runner's context with a media store rooted at ``out_dir``
        (same client and keys). Closing the new runner leaves the shared context open.
        ``journal``: the output journal its runs write to (default: one in ``out_dir`` per
        run). ``batch_item``: ``out_dir`` is the folder of a batch's item — the batch holds
        the lock of its own folder and checked it (a run neither probes nor locks
        ``out_dir``), nobody watches one item's ``trace.json`` (it is written when the run
        stops, not as nodes finish), and the trace is not also logged beside the
        checkpoints (the folder's ``trace.json`` and the journal are what a resume reads).
        """
        if self.checkpointer is True or isinstance(self.checkpointer, str | Path):
            raise ConfigurationError(
                "with_out_dir() shares one checkpointer between folders: pass a checkpointer "
                "(e.g. an AsyncSqliteSaver), not checkpointer=True or a URL."
            )
        self._compiled()
        twin = copy.copy(self)
        twin.out_dir = Path(out_dir)
        twin._resolved = None
        if ctx is None:
            store = self._store_for(out_dir)
            ctx = dataclasses.replace(self._context(), store=store)
            twin._resolved = store.root  # a store's root is resolved already
        twin._ctx = ctx
        twin._own_ctx = None
        twin._out_ready = False
        twin._journal_db = journal
        twin._batch_item = batch_item
        return twin

    def _cache(self) -> BaseCache[Any] | None:
        if self.cache is True:
            from langgraph.cache.sqlite import SqliteCache

            self.out_dir.mkdir(parents=True, exist_ok=True)
            # The flow's allow-listed serializer, as for checkpoints: a cache hit restores
            # our value types without LangGraph's "unregistered type" warning.
            self.cache = SqliteCache(
                path=str(self.out_dir / "cache.sqlite"), serde=checkpoint_serializer(self.plan)
            )
        return self.cache or None

    def _resolved_out(self) -> Path:
        """``out_dir`` resolved (once per runner; a twin's is its media store's root)."""
        if self._resolved is None:
            self._resolved = self.out_dir.resolve()
        return self._resolved

    def _store_for(self, out_dir: str | Path) -> MediaStore:
        """The media store of ``out_dir``: a folder directly in this runner's is a sub-store
        of its (no path resolution per item of a batch), any other a store of its own."""
        folder = Path(out_dir)
        store = self._context().store
        if folder.parent == self.out_dir and store.root == Path(os.path.abspath(self.out_dir)):
            with contextlib.suppress(MediaError):
                if MediaStore.check_name(folder.name) == [folder.name]:
                    return store.sub(folder.name)
        if store.remote:  # the same object store, this folder as its working copy
            from calliope_graph.object_store import store_at

            return store_at(store, folder)
        return MediaStore(folder)

    # -- running ----------------------------------------------------------------------------
    async def ainvoke(
        self,
        inputs: Mapping[str, Any] | None,
        *,
        thread_id: str | None = None,
        resume: bool = False,
        on_event: OnEvent | None = None,
        choices: Mapping[str, int] | None = None,
    ) -> FlowResult:
        """Run the flow; a failure is a FlowRunError, a pause for a choice WaitingForChoice.

        The output directory is checked and locked first (a bad or busy ``out_dir`` is a
        ConfigurationError before any provider call); with checkpointing, provider nodes'
        outputs go to the output journal as they finish (see docs/architecture.md).
        """
        if resume and not thread_id:
            raise ConfigurationError("Resuming needs the thread id of the run to continue.")
        if resume and not self.checkpointer:
            raise ConfigurationError("Resuming needs checkpoints: do not pass checkpointer=False.")
        check_call(resume, choices)
        thread = thread_id or new_thread_id()
        self._check_out_dir()
        lock = None
        if not self._batch_item and (
            self.checkpointer is True or self.trace_file or self.cache is True
        ):
            from calliope_graph._outdir import OutDirLock

            lock = OutDirLock(self.out_dir, thread_id=thread)
        with lock or contextlib.nullcontext():
            journal = None
            if self.checkpointer and self._journal_db is not None:
                journal = self._journal_db.run(thread, serde=self._serde(), resume=resume)
            elif self.checkpointer:
                from calliope_graph.flow._journal import Journal

                journal = Journal.open(
                    self.out_dir, serde=self._serde(), thread_id=thread, resume=resume
                )
            try:
                result = await self._run(inputs, thread, resume, on_event, journal, choices)
                if journal is not None:
                    journal.forget()  # completed: the checkpoint holds everything now
                return result
            finally:
                if journal is not None:
                    journal.close()

    async def _run(
        self,
        inputs: Mapping[str, Any] | None,
        thread: str,
        resume: bool,
        on_event: OnEvent | None,
        journal: Journal | None,
        choices: Mapping[str, int] | None = None,
    ) -> FlowResult:
        ctx = self._context()
        if ctx.store.remote:  # media in object storage: keys under this run's thread, and
            from calliope_graph.object_store import for_run  # inputs read from the store

            ctx, inputs = await for_run(ctx, thread, self.plan, inputs, resume=resume)
        state = None if resume else prepare_inputs(self.plan, inputs)
        if journal is not None and state is not None:
            journal.start(state)  # a run killed before its first checkpoint can resume
        runtime = new_runtime(self, ctx, inputs, thread, on_event, journal)
        trace = runtime.trace
        values: dict[str, Any] = dict(state or {})
        pending: list[Interrupt] = []
        try:
            paused = await self._drive(runtime, state, thread, choices, values, pending)
            if journal is not None:
                await journal.synced()  # no run returns before its paid outputs are on disk
        except (KeyboardInterrupt, asyncio.CancelledError):
            runtime.interrupted()
            trace.status, trace.ended_at = "failed", time.time()
            trace.error = "interrupted"
            runtime.save_final()
            raise
        except CalliopeError as exc:
            if isinstance(exc, ConfigurationError | FlowSpecError | MediaError) and not (
                trace.executions
            ):
                raise  # refused before anything ran: nothing to report, nothing touched
            raise self._failed(runtime, exc, thread) from exc
        except Exception as exc:
            raise self._failed(runtime, exc, thread) from exc
        if paused and runtime.halted is not None:
            cause = runtime.halted[1]
            runtime.timed_out(runtime.halted[0], cause)
            raise self._failed(runtime, cause, thread) from cause
        if paused and (waiting := waiting_for_choice(self, runtime, pending, thread)):
            raise waiting  # a pause no failure made: waiting for a person's choice
        outputs = {
            name: value
            for name, ref in self.plan.output_refs.items()
            if (value := read_ref(values, ref)) is not None
        }
        trace.outputs = runtime._summary(outputs, trace.out_dir)
        trace.status, trace.ended_at = "ok", time.time()
        runtime.save_final()
        return FlowResult(outputs=outputs, trace=trace, thread_id=thread, out_dir=self.out_dir)

    async def _drive(
        self,
        runtime: FlowRuntime,
        state: dict[str, Any] | None,
        thread: str,
        choices: Mapping[str, int] | None,
        values: dict[str, Any],
        pending: list[Interrupt],
    ) -> bool:
        """Stream the graph from ``state`` (None: resume ``thread``), gathering its state
        updates into ``values`` and its interrupts into ``pending``; whether it paused."""
        resume, journal, trace = state is None, runtime.journal, runtime.trace
        config: RunnableConfig = {"recursion_limit": self.plan.recursion_limit}
        if self.checkpointer:  # what the checkpoints are keyed and labelled by; without
            # them LangGraph would only copy both into every task's metadata (per node)
            config["configurable"] = {"thread_id": thread}
            config["metadata"] = {FLOW_METADATA: self.plan.spec.name}
        paused = False
        async with self._graph_for_run(thread, fresh=not resume) as (graph, trace_log):
            if not self.record:
                trace_log = None
            if trace_log is not None:  # the trace also goes next to the checkpoints
                runtime.on_event = trace_log.listener(runtime.on_event)
            start: Any = state
            if not resume and trace_log is not None:
                trace_log.header(trace)
            if resume:
                snapshot = await self._resumable(graph, config, thread, journal)
                if snapshot.interrupts or choices:  # stopped on failures, or for a choice
                    start = resume_command(snapshot.interrupts, choices, thread)
                elif snapshot.created_at is None and journal is not None:
                    start = journal.inputs()  # killed before its first checkpoint
                await self._carry_over(trace, trace_log)
            async for chunk in graph.astream(
                start,
                config,
                context=runtime,
                stream_mode="updates",
                durability=self.durability if self.checkpointer else None,
            ):
                for name, update in chunk.items():
                    if isinstance(update, dict) and name != "__metadata__":
                        values.update(update)
                if "__interrupt__" in chunk:
                    paused = True
                    pending.extend(chunk["__interrupt__"])
                if self.record and "__metadata__" in chunk and self.cache:
                    cache_hits(self.plan, runtime, chunk)
            if resume:
                snapshot = await graph.aget_state(config)
                values.update({**snapshot.values, **values})
        return paused

    async def astream(
        self,
        inputs: Mapping[str, Any] | None,
        *,
        thread_id: str | None = None,
        resume: bool = False,
        choices: Mapping[str, int] | None = None,
    ) -> AsyncIterator[FlowEvent | StreamEvent | FlowResult]:
        """Yield each :class:`FlowEvent`, :class:`TokenEvent` and :class:`PreviewEvent` as it
        happens, then the :class:`FlowResult`."""
        run = functools.partial(self.ainvoke, inputs, thread_id=thread_id, choices=choices)
        async for item in stream_events(lambda emit: run(resume=resume, on_event=emit)):
            yield item

    # -- resuming ---------------------------------------------------------------------------
    async def _resumable(
        self,
        graph: CompiledFlowGraph,
        config: RunnableConfig,
        thread: str,
        journal: Journal | None,
    ) -> StateSnapshot:
        """The thread's last checkpoint; a ConfigurationError when there is none in this
        store (and no journaled start of a run killed before its first checkpoint), or when
        it belongs to another flow — before anything runs or is written."""
        snapshot = await graph.aget_state(config)
        store = self._store_name()
        started = journal is not None and journal.inputs() is not None
        if not snapshot.values and snapshot.created_at is None and not started:
            threads = await _threads(graph)
            listed = ", ".join(f"{t} ({f})" if f else t for t, f in threads[:20]) or "none"
            more = f" (and {len(threads) - 20} more)" if len(threads) > 20 else ""
            raise ConfigurationError(
                f"Cannot resume thread {thread!r}: it is not in the checkpoint store {store}. "
                f"Threads there: {listed}{more}. Pass one of them to --resume, or the --out "
                "directory of the run that printed the thread id."
            )
        owner = (snapshot.metadata or {}).get(FLOW_METADATA)
        if owner is not None and owner != self.plan.spec.name:
            raise ConfigurationError(
                f"Thread {thread!r} in {store} is a run of flow {owner!r}, not "
                f"{self.plan.spec.name!r}: resume it with that flow "
                f"(calliope-graph run {owner} --out {self.out_dir} --resume {thread})."
            )
        return snapshot

    def _store_name(self) -> str:
        if self.checkpointer is True:
            return str(self.out_dir / "checkpoints.sqlite")
        if isinstance(self.checkpointer, str | Path):
            return shown_url(str(self.checkpointer))
        return str(type(self.checkpointer).__name__)

    async def _carry_over(self, trace: Trace, trace_log: TraceLog | None) -> None:
        """A resumed trace starts with what the earlier attempts of this thread completed:
        from the checkpoint store (so on any machine, with any output directory), else from
        the output directory's ``trace.json``."""
        if trace_log is not None:
            try:
                inputs, earlier = await trace_log.load()
            except Exception:  # an unreadable trace never stops a resume
                inputs, earlier = None, []
            if inputs is not None or earlier:
                trace.inputs = inputs if inputs is not None else trace.inputs
                trace.resumed_from = trace.thread_id
                trace.executions.extend(earlier)
                trace_log.carried(earlier)
                return
        previous = self.out_dir / "trace.json"
        if not previous.is_file():
            return
        with contextlib.suppress(Exception):
            old = Trace.load(previous)
            if old.thread_id != trace.thread_id:
                return
            trace.inputs = old.inputs
            trace.resumed_from = trace.thread_id
            for execution in old.executions:
                if execution.status in ("ok", "fallback", "skipped", "cache_hit"):
                    trace.executions.append(execution.model_copy(update={"resumed": True}))
            if trace_log is not None:
                trace_log.carried(trace.executions)

    # -- internals --------------------------------------------------------------------------
    def _check_out_dir(self) -> None:
        """Create and probe the output directory (once per runner, again if it vanished)."""
        if self._out_ready and self.out_dir.is_dir():
            return
        from calliope_graph._outdir import prepare_out_dir

        if self._batch_item:  # a folder inside the batch's, which it checked and holds
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError:
                prepare_out_dir(self.out_dir)  # the error that names the path and the fix
        else:
            prepare_out_dir(self.out_dir)
        self._out_ready = True

    def _checkpoint_option(self) -> str:
        """`` --checkpoint URL`` for a resume command (the password shown as ``***``: keep it
        in PGPASSWORD or ~/.pgpass and the printed command works as it is)."""
        if not isinstance(self.checkpointer, str | Path):
            return ""
        url = str(self.checkpointer)
        shown = shown_url(url)
        quoted = shown if re.fullmatch(r"[\w@%+=:,./~-]+", shown) else f"'{shown}'"
        return f" --checkpoint {quoted}"

    def _password_note(self) -> str:
        url = str(self.checkpointer)
        if not isinstance(self.checkpointer, str | Path) or shown_url(url) == url:
            return ""
        return " (the password is not shown: put it back, or keep it in PGPASSWORD or ~/.pgpass)"

    def _serde(self) -> Any:
        if self._serde_cache is None:
            self._serde_cache = checkpoint_serializer(self.plan)
        return self._serde_cache

    def _failed(self, runtime: FlowRuntime, exc: BaseException, thread: str) -> FlowRunError:
        # A full disk anywhere (LangGraph's checkpoint saver, a library's own write) is one
        # error naming the folder, never a raw OSError/sqlite3 message (cause: disk_full).
        exc = disk_full(exc, self.out_dir, what="the run's checkpoints or files") or exc
        resume = (
            f" Fix the cause, then resume without re-running what completed: "
            f"calliope-graph run {runtime.trace.flow} --out {self.out_dir}"
            f"{self._checkpoint_option()} --resume {thread}{self._password_note()}"
            if self.checkpointer is True or isinstance(self.checkpointer, str | Path)
            else f" Fix the cause, then resume thread {thread!r} with the same checkpointer."
            if self.checkpointer
            else ""
        )
        return run_failed(runtime, exc, thread, resume)
