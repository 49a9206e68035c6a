"""What goes in and out of a run: its options (one TypedDict per concern), its inputs made
into the first state, its result, and its events as a stream.

Part of :mod:`calliope_graph.flow.run` (import the public names from there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from langgraph.cache.base import BaseCache
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Checkpointer

from calliope_graph._secrets import redact_tree
from calliope_graph.context import StreamEvent, token_sink
from calliope_graph.errors import ConfigurationError, FlowRunError, MediaError, error_class
from calliope_graph.flow._input_values import check_value
from calliope_graph.flow._runtime import FlowEvent, FlowRuntime, OnEvent, input_key, port_key
from calliope_graph.flow.trace import Trace, jsonable
from calliope_graph.media import Audio, Image, Video
from calliope_graph.session import SessionOptions

if TYPE_CHECKING:
    from calliope_graph.context import RunContext
    from calliope_graph.flow._journal import Journal
    from calliope_graph.flow.compile import CompiledFlowGraph
    from calliope_graph.flow.run import FlowRunner
    from calliope_graph.flow.validate import Plan

__all__ = [
    "Durability",
    "FlowResult",
    "RunOptions",
    "RunnerOptions",
    "new_thread_id",
    "prepare_inputs",
    "split_options",
    "stream_events",
]


@dataclass(frozen=True)
class FlowResult:
    """A finished run: the flow's outputs (media values, text, objects) and its trace."""

    outputs: dict[str, Any]
    trace: Trace
    thread_id: str
    out_dir: Path


# -- inputs ------------------------------------------------------------------------------------
_MEDIA: dict[str, type[Image] | type[Audio] | type[Video]] = {
    "image": Image,
    "audio": Audio,
    "video": Video,
}


def prepare_inputs(plan: Plan, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flow inputs → initial state; paths become media values (a bad file is a MediaError)."""
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
                    f"Flow {spec.name!r} needs input {name!r} ({declared.shape}"
                    f"{': ' + declared.description if declared.description else ''}): pass it "
                    f"(CLI: --input {name}=...)."
                )
            state[input_key(name)] = declared.default
            continue
        value = check_value(name, declared, given[name])
        if declared.is_list and declared.element in _MEDIA:
            value = [_media(name, declared.element, item) for item in value]
        elif declared.type in _MEDIA:
            value = _media(name, declared.type, value)
        elif declared.type == "text" and not isinstance(value, str):
            value = str(value)
        state[input_key(name)] = value
    return state


def _media(name: str, kind: str, value: Any) -> Image | Audio | Video:
    """A media input (or a list input's item) as a value: a path is opened and checked."""
    media = _MEDIA[kind]
    if isinstance(value, media):
        return value
    if not isinstance(value, str | Path):
        raise MediaError(
            f"Input {name!r} must be a {kind} file path or a "
            f"{media.__name__} value, not {type(value).__name__}."
        )
    # Absolute, so a resume from another working directory finds the same file.
    return media.open(Path(value).expanduser().absolute())


async def stream_events(
    run: Callable[[OnEvent], Coroutine[Any, Any, FlowResult]],
) -> AsyncIterator[FlowEvent | StreamEvent | FlowResult]:
    """Run ``run(emit)`` and yield each event it emits as it happens, then its result.

    The text nodes write streams in too, as :class:`~calliope_graph.context.TokenEvent`s
    (``token``: a delta of ``node``'s text, before its ``finished``; ``discard``: drop what
    that attempt streamed, a retry or fallback writes anew): the run's task is made with the
    queue as its token sink, so only this stream's consumer sees them. Image nodes with
    ``previews`` stream :class:`~calliope_graph.context.PreviewEvent`s the same way."""
    queue: asyncio.Queue[FlowEvent | StreamEvent | None] = asyncio.Queue()
    sink = token_sink.set(queue.put_nowait)  # the task made next inherits it
    try:
        task = asyncio.create_task(run(queue.put_nowait))
    finally:
        token_sink.reset(sink)
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


# -- options ---------------------------------------------------------------------------------
Durability = Literal["sync", "async", "exit"]
"""LangGraph's: ``async`` saves each step's checkpoint while the next runs, ``sync`` before
it, ``exit`` only when the run ends. Completed node work is journaled either way."""


class RunnerOptions(SessionOptions, total=False):
    """How runs are set up: shared by :class:`FlowRunner` and every ``Flow`` run method
    (the session they run in — ``session``, ``keys``, ``simulator``, ``ctx``,
    ``media_store`` — from :class:`~calliope_graph.session.SessionOptions`)."""

    out_dir: str | Path
    """Where media, ``trace.json`` and the checkpoints go (default ``out``)."""
    checkpointer: Checkpointer | str | Path
    """Where checkpoints go: ``True`` = SQLite at ``out_dir/checkpoints.sqlite``; ``False`` =
    none (no resume); a URL (``postgresql://...``) or the path of a SQLite file; or a
    LangGraph checkpointer (given the flow's serializer allow-list). ``None`` (the default):
    ``$CALLIOPE_CHECKPOINT_URL`` if set, else ``True``."""
    cache: bool | BaseCache[Any]
    """``True`` = LangGraph's SQLite cache at ``out_dir/cache.sqlite``, or a cache."""
    trace_file: bool
    """Write ``out_dir/trace.json`` as nodes finish (default ``True``)."""
    record: bool
    """Record the trace at all (default ``True``; off only for benchmarks)."""
    durability: Durability


class RunOptions(RunnerOptions, total=False):
    """:class:`RunnerOptions` plus what one run takes."""

    thread_id: str | None
    """The checkpoint thread (default: a new one); with ``resume``, the run to continue."""
    resume: bool
    """Continue the failed, stopped or waiting run ``thread_id`` without re-running what
    completed."""
    on_event: OnEvent | None
    """Called with each :class:`FlowEvent` as it happens."""
    choices: Mapping[str, int] | None
    """With ``resume``: node → index of the candidate to keep, for a run that stopped with
    :class:`~calliope_graph.errors.WaitingForChoice` (CLI: ``--choose NODE=INDEX``)."""


_CALL_OPTIONS = ("thread_id", "resume", "on_event", "choices")


def split_options(options: RunOptions) -> tuple[RunnerOptions, dict[str, Any]]:
    """(runner options, per-run options) of ``options``."""
    runner = {k: v for k, v in options.items() if k not in _CALL_OPTIONS}
    call = {k: v for k, v in options.items() if k in _CALL_OPTIONS}
    return cast(RunnerOptions, runner), call


def new_thread_id() -> str:
    """A fresh thread id (12 hex digits)."""
    return os.urandom(6).hex()  # (what uuid4().hex[:12] holds: 48 random bits)


def run_failed(runtime: FlowRuntime, exc: BaseException, thread: str, resume: str) -> FlowRunError:
    """The :class:`FlowRunError` of a run that failed (its trace marked and saved): where,
    why, how many provider attempts, the path taken, and ``resume`` (how to continue)."""
    trace = runtime.trace
    failed = next((e for e in reversed(trace.executions) if e.status == "failed"), None)
    node = failed.node if failed is not None else getattr(exc, "node", None)
    cause = error_class(exc)
    message = runtime.describe(exc)
    path = trace.path()
    # Every provider attempt the failed node made in this run: LangGraph's RetryPolicy
    # runs it again as a new execution, each with its own engine-level attempts.
    attempts = (
        sum(
            e.attempts
            for e in trace.executions
            if e.node == failed.node and e.item == failed.item and not e.resumed
        )
        if failed is not None
        else 0
    )
    tries = f", {attempts} provider attempt{'s' if attempts > 1 else ''}" if attempts else ""
    text = (
        f"Flow {trace.flow!r} failed at node {node!r} ({cause}{tries}): {message} "
        f"Path taken: {' → '.join(path) or '(nothing completed)'}.{resume}"
    )
    trace.status, trace.ended_at, trace.error = "failed", time.time(), text
    runtime.save_final()
    return FlowRunError(
        text,
        node=node,
        attempts=attempts,
        path=path,
        cause_class=cause,
        thread_id=thread,
        resume_hint=resume,
    )


#: Checkpoint metadata key naming the flow a thread runs (a resume checks it).
FLOW_METADATA = "calliope_flow"


async def _threads(graph: CompiledFlowGraph) -> list[tuple[str, str | None]]:
    """(thread id, flow) of every thread in ``graph``'s checkpointer, newest first."""
    saver = graph.checkpointer
    if not isinstance(saver, BaseCheckpointSaver):
        return []
    seen: dict[str, str | None] = {}
    async for item in saver.alist(None):
        thread = str(item.config["configurable"].get("thread_id", ""))
        if thread and thread not in seen:
            seen[thread] = (item.metadata or {}).get(FLOW_METADATA)  # type: ignore[assignment]
    return list(seen.items())


def cache_hits(plan: Plan, runtime: FlowRuntime, chunk: dict[str, Any]) -> None:
    """Record the nodes a chunk of updates says LangGraph's cache answered (with a cache:
    without one, "cached" writes are a resume replaying saved work)."""
    if not chunk.get("__metadata__", {}).get("cached"):
        return
    done = {e.node for e in runtime.trace.executions if e.resumed}
    for name, update in chunk.items():
        node = plan.nodes.get(name)
        if node is None or not isinstance(update, dict) or name in done:
            continue
        prefix = port_key(plan.root(name), "")
        outputs = {k[len(prefix) :]: v for k, v in update.items() if k.startswith(prefix)}
        runtime.cache_hit(name, node, outputs)


def new_runtime(
    runner: FlowRunner,
    ctx: RunContext,
    inputs: Mapping[str, Any] | None,
    thread: str,
    on_event: OnEvent | None,
    journal: Journal | None,
) -> FlowRuntime:
    """A run's trace, and the runtime its nodes record into (``runner``'s settings)."""
    out, secrets = runner._resolved_out(), ctx.keys.secrets()
    trace = Trace(
        flow=runner.plan.spec.name,
        thread_id=thread,
        started_at=time.time(),
        spec=runner.plan.spec,
        out_dir=str(out),
        simulated=ctx.simulated,
        inputs=redact_tree(jsonable(inputs or {}, root=out), secrets),
    )
    runtime = FlowRuntime(
        ctx=ctx,
        trace=trace,
        on_event=on_event,
        trace_path=runner.out_dir / "trace.json" if runner.trace_file else None,
        live_trace=not runner._batch_item,
        record=runner.record,
        resumable=bool(runner.checkpointer),
        static=runner._static,
        journal=journal,
    )
    runtime._run.secrets = secrets  # the run's, computed once (redaction of every summary)
    return runtime
