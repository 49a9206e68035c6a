"""Running a compiled flow: inputs in, typed outputs and a trace out, with live events.

:class:`FlowRunner` owns what one or many runs share (the validated plan, the run context,
the compiled graph when it can be reused). :class:`FlowRuntime` is what LangGraph carries in
its runtime context for one run: the :class:`~calliope_graph.context.RunContext` and the
trace being written — never state, so never checkpointed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langgraph.types import Command

from calliope_graph.config import KeysModel
from calliope_graph.context import RunContext
from calliope_graph.engines._http import CallStats, call_stats, redact
from calliope_graph.errors import CalliopeError, ConfigurationError, FlowRunError, MediaError
from calliope_graph.flow.trace import NodeExecution, Trace, jsonable
from calliope_graph.media import Audio, Image, Video

if TYPE_CHECKING:
    from calliope_graph.flow._journal import Journal
    from calliope_graph.flow.validate import Plan
    from calliope_graph.nodes import Node
    from calliope_graph.simulate import Simulator

__all__ = ["EventKind", "FlowEvent", "FlowResult", "FlowRunner", "FlowRuntime"]

EventKind = Literal["started", "finished", "retried", "fallback", "skipped", "cache_hit", "failed"]


@dataclass(frozen=True)
class FlowEvent:
    """Something a node did, as it happened (``trace`` is the live trace)."""

    kind: EventKind
    node: str
    execution: NodeExecution
    trace: Trace


@dataclass(frozen=True)
class FlowResult:
    """A finished run: the flow's outputs (media values, text, objects) and its trace."""

    outputs: dict[str, Any]
    trace: Trace
    thread_id: str
    out_dir: Path


OnEvent = Callable[[FlowEvent], None]
#: Shortest time between two rewrites of trace.json during a run (seconds).
SAVE_INTERVAL = 0.1


@dataclass
class FlowRuntime:
    """LangGraph's runtime context for one run (see module docstring)."""

    ctx: RunContext
    trace: Trace
    on_event: OnEvent | None = None
    trace_path: Path | None = None
    record: bool = True
    resumable: bool = False
    """A checkpointer is present: an unrouted failure pauses (resumable) instead of raising."""
    halted: tuple[str, BaseException] | None = None
    """The node whose failure no route took, and the failure."""
    static: dict[str, tuple[str | None, str | None, dict[str, Any]]] = field(default_factory=dict)
    """Per node: provider, model, summarised params (they do not change between runs)."""
    journal: Journal | None = None
    """Write-ahead journal of provider nodes' outputs (see flow/_journal.py)."""
    _last: dict[str, NodeExecution] = field(default_factory=dict)
    _secret_list: list[str] | None = None
    _save_pending: bool = False
    _last_save: float = 0.0

    def _static(self, name: str, node: Node) -> tuple[str | None, str | None, dict[str, Any]]:
        known = self.static.get(name)
        if known is None:
            config = None
            with contextlib.suppress(CalliopeError):
                config = node.model_config_for(self.ctx) if node.model is not None else None
            known = (
                config.provider.value if config is not None else None,
                config.slug if config is not None else None,
                self._summary(node.params.model_dump(mode="json"), None),
            )
            self.static[name] = known
        return known

    # -- node executions --------------------------------------------------------------------
    async def execute(
        self, name: str, node: Node, inputs: dict[str, Any], *, iteration: int
    ) -> dict[str, Any]:
        """Run ``node`` once, recording it in the trace (the compiled node calls this)."""
        journal = self.journal
        key = None
        if journal is not None and node.model is not None:  # only provider calls are paid
            key = journal.key(name, iteration, inputs)
            saved = journal.get(key) if key is not None else None
            if saved is not None:
                self._journaled(name, node, inputs, saved, iteration)
                return saved
        if not self.record:
            outputs = await node.run(self.ctx, **inputs)
            if key is not None and journal is not None:
                journal.put(key, name, outputs)
            return outputs
        previous = self._last.get(name)
        if previous is not None and previous.status == "failed" and previous.branch is None:
            self._emit("retried", previous)  # LangGraph's RetryPolicy runs it again
        provider, model, params = self._static(name, node)
        root = self.trace.out_dir
        execution = NodeExecution(
            node=name,
            kind=node.kind,
            provider=provider,
            model=model,
            started_at=time.time(),
            iteration=iteration,
            inputs=self._summary(inputs, root),
            params=params,
            # every field given: pydantic's default-factory lookup is slow
            ended_at=None,
            status="running",
            attempts=0,
            retries=0,
            retry_times=[],
            calls={},
            error_class=None,
            error=None,
            branch=None,
            cache_hit=False,
            resumed=False,
            outputs={},
        )
        self.trace.executions.append(execution)
        self._last[name] = execution
        self._emit("started", execution)

        def retried(provider: str, exc: BaseException | None) -> None:
            execution.retries += 1
            execution.error_class = _class_name(exc) if exc is not None else None
            execution.error = self._redact(str(exc)) if exc is not None else None
            self._emit("retried", execution)

        stats = CallStats(on_retry=retried)
        # Only nodes that call providers need their requests counted.
        token = call_stats.set(stats) if node.model is not None else None
        try:
            outputs = await node.run(self.ctx, **inputs)
        except BaseException as exc:
            self._close(execution, stats)
            execution.status = "failed"
            if isinstance(exc, asyncio.CancelledError):
                execution.error_class = "timeout"
                execution.error = f"stopped: node {name!r} ran past its timeout"
            else:
                execution.error_class = _class_name(exc)
                execution.error = self._redact(str(exc))
            self._emit("failed", execution)
            raise
        finally:
            if token is not None:
                call_stats.reset(token)
        if key is not None and journal is not None:
            journal.put(key, name, outputs)  # before LangGraph (and anyone) sees the outputs
        self._close(execution, stats)
        # One dict update instead of pydantic's per-attribute __setattr__ (hot path).
        execution.__dict__.update(
            status="ok", error_class=None, error=None, outputs=self._summary(outputs, root)
        )
        self._emit("finished", execution)
        return outputs

    def routed(
        self, name: str, exc: BaseException, classes: set[str], branch: str, *, status: Any
    ) -> None:
        """An error route caught the failure of ``name`` (called by its error handler)."""
        execution = self._last.get(name)
        if execution is None:  # failed before it could start (e.g. a missing input)
            execution = NodeExecution(node=name, kind="?", started_at=time.time())
            execution.ended_at = execution.started_at
            self.trace.executions.append(execution)
        execution.status = status
        execution.branch = branch
        execution.error_class = _class_name(exc)
        execution.error = self._redact(str(exc)) or type(exc).__name__
        self._emit("skipped" if status == "skipped" else "fallback", execution)

    def cache_hit(self, name: str, node: Node, outputs: Mapping[str, Any]) -> None:
        now = time.time()
        execution = NodeExecution(
            node=name,
            kind=node.kind,
            started_at=now,
            ended_at=now,
            status="cache_hit",
            cache_hit=True,
            outputs=self._summary(dict(outputs), self.trace.out_dir),
        )
        self.trace.executions.append(execution)
        self._emit("cache_hit", execution)

    def _journaled(
        self,
        name: str,
        node: Node,
        inputs: dict[str, Any],
        outputs: dict[str, Any],
        iteration: int,
    ) -> None:
        """A resumed run found ``name``'s outputs in the journal: paid already, not re-run."""
        if not self.record:
            return
        done = next(
            (
                e
                for e in self.trace.executions
                if e.node == name and e.iteration == iteration and e.resumed and e.status == "ok"
            ),
            None,
        )
        if done is None:  # the earlier run was killed before trace.json recorded it
            provider, model, params = self._static(name, node)
            now = time.time()
            root = self.trace.out_dir
            done = NodeExecution(
                node=name,
                kind=node.kind,
                provider=provider,
                model=model,
                started_at=now,
                ended_at=now,
                status="ok",
                iteration=iteration,
                resumed=True,
                inputs=self._summary(inputs, root),
                outputs=self._summary(outputs, root),
                params=params,
            )
            self.trace.executions.append(done)
        self._last[name] = done
        self._emit("finished", done)

    # -- helpers ----------------------------------------------------------------------------
    def _close(self, execution: NodeExecution, stats: CallStats) -> None:
        execution.__dict__.update(
            ended_at=time.time(),
            attempts=stats.attempts,
            calls=dict(stats.calls),
            retry_times=list(stats.attempt_times),
        )
        if stats.providers and execution.provider is None:
            execution.provider = stats.providers[0]

    def _save_soon(self) -> None:
        """Rewrite trace.json as nodes finish, at most every SAVE_INTERVAL seconds (nodes
        finishing together share one write; the runner always writes the final trace)."""
        if self._save_pending:
            return
        now = time.monotonic()
        wait = self._last_save + SAVE_INTERVAL - now
        if wait <= 0:
            self.save()
            return
        self._save_pending = True
        asyncio.get_running_loop().call_later(wait, self.save)

    def save(self) -> None:
        self._save_pending = False
        self._last_save = time.monotonic()
        if self.trace_path is not None:
            self.trace.save(self.trace_path)

    def _secrets(self) -> list[str]:
        if self._secret_list is None:
            self._secret_list = self.ctx.keys.secrets()
        return self._secret_list

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    def _summary(self, value: Any, root: str | None) -> Any:
        summary = jsonable(value, root=root)
        secrets = self._secrets()
        if not secrets:
            return summary
        return _redact_tree(summary, secrets)

    def _emit(self, kind: EventKind, execution: NodeExecution) -> None:
        if self.trace_path is not None and kind not in ("started", "retried"):
            self._save_soon()
        if self.on_event is not None:
            self.on_event(FlowEvent(kind, execution.node, execution, self.trace))


def _redact_tree(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_tree(v, secrets) for v in value]
    return value


def _class_name(exc: BaseException) -> str:
    from langgraph.errors import NodeTimeoutError

    if isinstance(exc, NodeTimeoutError | asyncio.CancelledError | TimeoutError):
        return "timeout"
    if isinstance(exc, CalliopeError):
        return exc.error_class
    return type(exc).__name__


def checkpoint_serializer(plan: Plan) -> Any:
    """LangGraph's serializer, allowed to restore exactly the value types this flow produces.

    Media references, analyses, story frames and the pydantic objects of structured-output
    nodes are registered, so checkpoints load without LangGraph's "unregistered type" warning
    and nothing else can be smuggled into one.
    """
    from pydantic import BaseModel

    from calliope_graph.media import ImageAnalysis
    from calliope_graph.nodes import Character, Scene, StoryFrame

    found: set[type] = {Image, Audio, Video, ImageAnalysis, StoryFrame, Scene, Character}

    def walk(model: type[BaseModel]) -> None:
        if model in found:
            return
        found.add(model)
        for info in model.model_fields.values():
            for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)

    for node in plan.nodes.values():
        response_model = getattr(node, "response_model", None)
        if isinstance(response_model, type) and issubclass(response_model, BaseModel):
            walk(response_model)
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer(allowed_msgpack_modules=tuple(found))


# -- inputs ------------------------------------------------------------------------------------
_MEDIA: dict[str, type[Image] | type[Audio] | type[Video]] = {
    "image": Image,
    "audio": Audio,
    "video": Video,
}


def prepare_inputs(plan: Plan, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flow inputs → initial state; paths become media values (a bad file is a MediaError)."""
    from calliope_graph.flow.compile import input_key

    spec = plan.spec
    given = dict(inputs or {})
    unknown = sorted(set(given) - set(spec.inputs))
    if unknown:
        raise ConfigurationError(
            f"Flow {spec.name!r} has no input {unknown[0]!r}; its inputs: "
            f"{', '.join(spec.inputs) or 'none'}."
        )
    state: dict[str, Any] = {}
    for name, declared in spec.inputs.items():
        if name not in given or given[name] is None:
            if declared.required:
                raise ConfigurationError(
                    f"Flow {spec.name!r} needs input {name!r} ({declared.type}"
                    f"{': ' + declared.description if declared.description else ''}): pass it "
                    f"(CLI: --input {name}=...)."
                )
            state[input_key(name)] = declared.default
            continue
        value = given[name]
        media = _MEDIA.get(declared.type)
        if media is not None and not isinstance(value, media):
            if not isinstance(value, str | Path):
                raise MediaError(
                    f"Input {name!r} must be a {declared.type} file path or a "
                    f"{media.__name__} value, not {type(value).__name__}."
                )
            value = media.open(value)
        elif declared.type == "text" and not isinstance(value, str):
            value = str(value)
        state[input_key(name)] = value
    return state


async def stream_events(
    run: Callable[[OnEvent], Coroutine[Any, Any, FlowResult]],
) -> AsyncIterator[FlowEvent | FlowResult]:
    """Run ``run(emit)`` and yield each event it emits as it happens, then its result."""
    queue: asyncio.Queue[FlowEvent | None] = asyncio.Queue()
    task = asyncio.create_task(run(queue.put_nowait))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (event := await queue.get()) is not None:
            yield event
        yield task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class _NothingToResume(ConfigurationError):
    """A resume found neither a checkpoint nor journaled inputs for its thread."""


# -- the runner ---------------------------------------------------------------------------------
class FlowRunner:
    """Runs one validated flow, once or many times.

    ``checkpoint``: True (SQLite at ``out_dir/checkpoints.sqlite``), False, or a LangGraph
    checkpointer. ``cache``: False, True (LangGraph's SQLite cache at ``out_dir/cache.sqlite``)
    or a LangGraph cache. ``trace_file``: write ``out_dir/trace.json`` as nodes finish.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        out_dir: str | Path = "out",
        keys: KeysModel | None = None,
        simulator: Simulator | None = None,
        ctx: RunContext | None = None,
        checkpoint: Any = True,
        cache: Any = False,
        trace_file: bool = True,
        record: bool = True,
        durability: Literal["sync", "async", "exit"] = "async",
    ) -> None:
        self.plan = plan
        self.out_dir = Path(out_dir)
        self._keys = keys
        self._simulator = simulator
        self._ctx = ctx
        self._own_ctx: RunContext | None = None
        self.checkpoint = checkpoint
        self.cache = cache
        self.trace_file = trace_file
        self.record = record
        self.durability: Any = durability
        self._graph: Any = None
        self._static: dict[str, tuple[str | None, str | None, dict[str, Any]]] = {}
        self._out_ready = False
        self._serde_cache: Any = None

    # -- context ----------------------------------------------------------------------------
    def _context(self) -> RunContext:
        if self._ctx is not None:
            return self._ctx
        if self._own_ctx is None:
            sim = self._simulator
            keys = self._keys if self._keys is not None else (sim.keys() if sim else None)
            self._own_ctx = RunContext.create(
                self.out_dir,
                keys=keys,
                transport=sim.transport() if sim is not None else None,
                catalog=self.plan.catalog,
            )
        return self._own_ctx

    async def aclose(self) -> None:
        if self._own_ctx is not None:
            await self._own_ctx.aclose()
            self._own_ctx = None

    @contextlib.asynccontextmanager
    async def _graph_for_run(self) -> AsyncIterator[Any]:
        from calliope_graph.flow.compile import compile_plan

        cache = self._cache()
        if self.checkpoint is True:
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / "checkpoints.sqlite"
            # WAL (set by the saver) and a generous busy timeout: a reader of the checkpoints
            # (a report, sqlite3, Studio) never makes a paid run fail with "database is locked".
            async with aiosqlite.connect(str(path), timeout=30.0) as conn:
                saver = AsyncSqliteSaver(conn, serde=self._serde())
                yield compile_plan(self.plan, checkpointer=saver, cache=cache)
            return
        if self.checkpoint:
            yield compile_plan(self.plan, checkpointer=self.checkpoint, cache=cache)
            return
        if self._graph is None:
            self._graph = compile_plan(self.plan, cache=cache)
        yield self._graph

    def _cache(self) -> Any:
        if self.cache is True:
            from langgraph.cache.sqlite import SqliteCache

            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.cache = SqliteCache(path=str(self.out_dir / "cache.sqlite"))
        return self.cache or None

    # -- running ----------------------------------------------------------------------------
    async def ainvoke(
        self,
        inputs: Mapping[str, Any] | None,
        *,
        thread_id: str | None = None,
        resume: bool = False,
        on_event: OnEvent | None = None,
    ) -> FlowResult:
        """Run the flow; a failure is a FlowRunError (the trace and checkpoint are kept).

        The output directory is checked and locked first (a bad or busy ``out_dir`` is a
        ConfigurationError before any provider call); with checkpointing, provider nodes'
        outputs go to the output journal as they finish (see docs/architecture.md).
        """
        if resume and not thread_id:
            raise ConfigurationError("Resuming needs the thread id of the run to continue.")
        if resume and not self.checkpoint:
            raise ConfigurationError("Resuming needs checkpointing: do not pass checkpoint=False.")
        thread = thread_id or uuid.uuid4().hex[:12]
        self._check_out_dir()
        lock = None
        if self.checkpoint is True or self.trace_file or self.cache is True:
            from calliope_graph._outdir import OutDirLock

            lock = OutDirLock(self.out_dir, thread_id=thread)
        with lock or contextlib.nullcontext():
            journal = None
            if self.checkpoint:
                from calliope_graph.flow._journal import Journal

                journal = Journal.open(
                    self.out_dir,
                    serde=self._serde(),
                    thread_id=thread,
                    resume=resume,
                )
            try:
                result = await self._run(inputs, thread, resume, on_event, journal)
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
    ) -> FlowResult:
        from calliope_graph.flow.compile import port_key

        spec = self.plan.spec
        state = None if resume else prepare_inputs(self.plan, inputs)
        if journal is not None and state is not None:
            journal.put_inputs(state)  # a run killed before its first checkpoint can resume
        ctx = self._context()
        trace_path = self.out_dir / "trace.json" if self.trace_file else None
        trace = Trace(
            flow=spec.name,
            thread_id=thread,
            started_at=time.time(),
            spec=spec,
            out_dir=str(self.out_dir.resolve()),
            inputs=jsonable(inputs or {}, root=self.out_dir.resolve()),
        )
        if resume:
            trace.resumed_from = thread
            previous = self.out_dir / "trace.json"
            if previous.is_file():
                with contextlib.suppress(Exception):
                    old = Trace.load(previous)
                    if old.thread_id == thread:
                        trace.inputs = old.inputs
                        for execution in old.executions:
                            # in flight when the run stopped: runs again, not carried over
                            if execution.status not in ("failed", "running"):
                                trace.executions.append(
                                    execution.model_copy(update={"resumed": True})
                                )
        runtime = FlowRuntime(
            ctx=ctx,
            trace=trace,
            on_event=on_event,
            trace_path=trace_path,
            record=self.record,
            resumable=bool(self.checkpoint),
            static=self._static,
            journal=journal,
        )
        config: dict[str, Any] = {
            "configurable": {"thread_id": thread},
            "recursion_limit": 25 + 4 * len(spec.nodes) + self._loop_budget(),
        }
        values: dict[str, Any] = dict(state or {})
        paused = False
        try:
            async with self._graph_for_run() as graph:
                start: Any = state
                if resume:
                    snapshot = await graph.aget_state(config)
                    if snapshot.interrupts:  # stopped on a failure no route took
                        start = Command(resume=True)
                    elif snapshot.created_at is None:  # killed before its first checkpoint
                        start = self._restart(journal, thread)
                async for chunk in graph.astream(
                    start,
                    config,
                    context=runtime,
                    stream_mode="updates",
                    durability=self.durability,
                ):
                    for name, update in chunk.items():
                        if isinstance(update, dict) and name != "__metadata__":
                            values.update(update)
                    if "__interrupt__" in chunk:
                        paused = True
                    if self.record and "__metadata__" in chunk:
                        self._cache_hits(runtime, chunk)
                if resume and self.checkpoint:
                    snapshot = await graph.aget_state(config)
                    values = {**snapshot.values, **values}
        except (KeyboardInterrupt, asyncio.CancelledError):
            trace.status, trace.ended_at = "failed", time.time()
            trace.error = "interrupted"
            if trace_path is not None:
                trace.save(trace_path)
            raise
        except _NothingToResume:
            raise
        except Exception as exc:
            raise self._failed(runtime, exc, thread) from exc
        if paused and runtime.halted is not None:
            cause = runtime.halted[1]
            raise self._failed(runtime, cause, thread) from cause
        outputs: dict[str, Any] = {}
        for out_name, target in spec.outputs.items():
            node, _, port = target.partition(".")
            key = target if node == "inputs" else port_key(node, port)
            if key in values and values[key] is not None:
                outputs[out_name] = values[key]
        trace.outputs = runtime._summary(outputs, trace.out_dir)
        trace.status, trace.ended_at = "ok", time.time()
        if trace_path is not None:
            trace.save(trace_path)
        return FlowResult(outputs=outputs, trace=trace, thread_id=thread, out_dir=self.out_dir)

    async def astream(
        self,
        inputs: Mapping[str, Any] | None,
        *,
        thread_id: str | None = None,
        resume: bool = False,
    ) -> AsyncIterator[FlowEvent | FlowResult]:
        """Yield each :class:`FlowEvent` as it happens, then the :class:`FlowResult`."""
        async for item in stream_events(
            lambda emit: self.ainvoke(inputs, thread_id=thread_id, resume=resume, on_event=emit)
        ):
            yield item

    # -- internals --------------------------------------------------------------------------
    def _check_out_dir(self) -> None:
        """Create and probe the output directory (once per runner, again if it vanished)."""
        if self._out_ready and self.out_dir.is_dir():
            return
        from calliope_graph._outdir import prepare_out_dir

        prepare_out_dir(self.out_dir)
        self._out_ready = True

    def _restart(self, journal: Journal | None, thread: str) -> dict[str, Any]:
        """The journaled inputs of a run that left no checkpoint (its nodes replay)."""
        start = journal.inputs() if journal is not None else None
        if start is None:
            raise _NothingToResume(
                f"Nothing to resume: thread {thread!r} has no checkpoint in {str(self.out_dir)!r}"
                " (a wrong thread id or --out, or a run that stopped before it started). "
                "Run the flow again without resuming."
            )
        return start

    def _serde(self) -> Any:
        if self._serde_cache is None:
            self._serde_cache = checkpoint_serializer(self.plan)
        return self._serde_cache

    def _loop_budget(self) -> int:
        total = 0
        for node in self.plan.spec.nodes.values():
            for route in node.on_error:
                if route.rewrite is not None and route.rewrite.max_attempts:
                    total += 3 * route.rewrite.max_attempts
        return total

    def _cache_hits(self, runtime: FlowRuntime, chunk: dict[str, Any]) -> None:
        from calliope_graph.flow.compile import port_key

        if not chunk.get("__metadata__", {}).get("cached"):
            return
        for name, update in chunk.items():
            node = self.plan.nodes.get(name)
            if node is None or not isinstance(update, dict):
                continue
            prefix = port_key(self.plan.root(name), "")
            outputs = {k[len(prefix) :]: v for k, v in update.items() if k.startswith(prefix)}
            runtime.cache_hit(name, node, outputs)

    def _failed(self, runtime: FlowRuntime, exc: BaseException, thread: str) -> FlowRunError:
        trace = runtime.trace
        failed = next((e for e in reversed(trace.executions) if e.status == "failed"), None)
        node = failed.node if failed is not None else getattr(exc, "node", None)
        cause = _class_name(exc)
        message = runtime._redact(str(exc)) or type(exc).__name__
        path = trace.path()
        attempts = failed.attempts if failed is not None else 0
        resume = (
            f" Fix the cause, then resume without re-running what completed: "
            f"calliope-graph run {trace.flow} --out {self.out_dir} --resume {thread}"
            if self.checkpoint
            else ""
        )
        tries = f", {attempts} provider attempt{'s' if attempts > 1 else ''}" if attempts else ""
        text = (
            f"Flow {trace.flow!r} failed at node {node!r} ({cause}{tries}): {message} "
            f"Path taken: {' → '.join(path) or '(nothing completed)'}.{resume}"
        )
        trace.status, trace.ended_at, trace.error = "failed", time.time(), text
        if runtime.trace_path is not None:
            trace.save(runtime.trace_path)
        return FlowRunError(
            text, node=node, attempts=attempts, path=path, cause_class=cause, thread_id=thread
        )
