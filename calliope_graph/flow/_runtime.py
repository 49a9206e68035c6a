"""What a compiled flow carries at run time, and the names of its state.

Both the compiler (:mod:`calliope_graph.flow.compile`) and the runner
(:mod:`calliope_graph.flow.run`) import this module; neither imports the other's internals.

- **State keys.** Every key of a flow's LangGraph state is built by one function here:
  ``port_key`` (``"story.text"``), ``input_key`` (``"inputs.image"``), and the loop
  bookkeeping ``rewrites_key`` (``"~rw.<node>"``), ``override_key``
  (``"~ovr.<node>.<port>"``), ``request_key`` (``"~req.<via>"``), ``halt_key``
  (``"~halt.<node>"``). ``done_name`` names a node's join node.
- **FlowRuntime** is LangGraph's runtime context for one run: the
  :class:`~calliope_graph.context.RunContext` (client, keys, store) and the trace being
  written — never state, so never checkpointed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from calliope_graph.context import RunContext
from calliope_graph.engines._http import CallStats, call_stats, redact
from calliope_graph.errors import CalliopeError, error_class, error_classes
from calliope_graph.flow.trace import NodeExecution, Trace, jsonable
from calliope_graph.media import Audio, Image, Video

if TYPE_CHECKING:
    from calliope_graph.nodes import Node

__all__ = [
    "EventKind",
    "FlowEvent",
    "FlowRuntime",
    "OnEvent",
    "done_name",
    "halt_key",
    "input_key",
    "override_key",
    "port_key",
    "request_key",
    "rewrites_key",
]


# -- state keys ----------------------------------------------------------------------------------
def port_key(node: str, port: str) -> str:
    """The state key of output ``port`` of ``node`` (a fallback publishes under its root's)."""
    return f"{node}.{port}"


def input_key(name: str) -> str:
    """The state key of flow input ``name``."""
    return f"inputs.{name}"


def rewrites_key(node: str) -> str:
    """How many times a rewrite loop has rewritten ``node``'s input."""
    return f"~rw.{node}"


def override_key(node: str, port: str) -> str:
    """A rewritten value replacing ``node``'s input ``port``."""
    return f"~ovr.{node}.{port}"


def request_key(via: str) -> str:
    """What a rewriter ``via`` is asked to fix: ``{node, port, output, value}``."""
    return f"~req.{via}"


def halt_key(node: str) -> str:
    """Set when ``node`` failed and no route took it: it pauses until resumed."""
    return f"~halt.{node}"


def done_name(node: str) -> str:
    """The join node of ``node`` (reached on success, after a fallback, or on continue)."""
    return f"{node}__done"


# -- events and the runtime ------------------------------------------------------------------------
EventKind = Literal["started", "finished", "retried", "fallback", "skipped", "cache_hit", "failed"]


@dataclass(frozen=True)
class FlowEvent:
    """Something a node did, as it happened (``trace`` is the live trace)."""

    kind: EventKind
    node: str
    execution: NodeExecution
    trace: Trace


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
        if not self.record:
            return self._scrub(node, await node.run(self.ctx, **inputs))
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
            execution.error_class = error_class(exc) if exc is not None else None
            execution.error = self.describe(exc) if exc is not None else None
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
                # Cancelled from outside: LangGraph's node timeout (the error route or the
                # runner then says "timeout") or the run being stopped (Ctrl-C).
                execution.status = "interrupted"
                execution.error_class = None
                execution.error = f"stopped before node {name!r} finished"
            else:
                execution.error_class = error_class(exc)
                execution.error = self.describe(exc)
            self._emit("failed", execution)
            raise
        finally:
            if token is not None:
                call_stats.reset(token)
        self._close(execution, stats)
        outputs = self._scrub(node, outputs)
        # One dict update instead of pydantic's per-attribute __setattr__ (hot path).
        execution.__dict__.update(
            status="ok", error_class=None, error=None, outputs=self._summary(outputs, root)
        )
        self._emit("finished", execution)
        return outputs

    def routed(self, name: str, exc: BaseException, branch: str, *, status: Any) -> None:
        """An error route caught the failure of ``name`` (called by its error handler)."""
        execution = self._last.get(name)
        if execution is None:  # failed before it could start (e.g. a missing input)
            execution = NodeExecution(node=name, kind="?", started_at=time.time())
            execution.ended_at = execution.started_at
            self.trace.executions.append(execution)
        execution.status = status
        execution.branch = branch
        execution.error_class = error_class(exc)
        execution.error = self.describe(exc)
        self._emit("skipped" if status == "skipped" else "fallback", execution)

    def timed_out(self, name: str, exc: BaseException) -> None:
        """``exc`` ended ``name``: if it was a timeout, its cancelled execution says so."""
        execution = self._last.get(name)
        if execution is None or execution.status != "interrupted":
            return
        if "timeout" in error_classes(exc):
            execution.status = "failed"
            execution.error_class = "timeout"
            execution.error = self.describe(exc)

    def interrupted(self) -> None:
        """The run was stopped (Ctrl-C, cancelled): executions still running say so."""
        now = time.time()
        for execution in self.trace.executions:
            if execution.status == "running":
                execution.status = "interrupted"
                execution.ended_at = now
                execution.error = "the run was stopped before it finished"

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

    def describe(self, exc: BaseException) -> str:
        """``exc`` as the trace and FlowRunError show it: our message, or ``Type: message``
        for a foreign exception — redacted either way."""
        text = str(exc) if isinstance(exc, CalliopeError) else f"{type(exc).__name__}: {exc}"
        if type(exc).__name__ == "NodeTimeoutError":
            text = f"the node ran past its timeout ({exc})"
        return self._redact(text.rstrip(": "))

    def _summary(self, value: Any, root: str | None) -> Any:
        summary = jsonable(value, root=root)
        secrets = self._secrets()
        if not secrets:
            return summary
        return _redact_tree(summary, secrets)

    def _scrub(self, node: Node, outputs: dict[str, Any]) -> dict[str, Any]:
        """A provider's answer that echoes a key (a prompt quoting it, a debug field) is
        redacted before it becomes state: so neither checkpoints, the cache, the trace nor
        printed results ever hold it."""
        secrets = self._secrets() if node.model is not None else None
        if not secrets:
            return outputs
        scrubbed: dict[str, Any] = _redact_tree(outputs, secrets)
        return scrubbed

    def _emit(self, kind: EventKind, execution: NodeExecution) -> None:
        if self.trace_path is not None and kind not in ("started", "retried"):
            self._save_soon()
        if self.on_event is not None:
            self.on_event(FlowEvent(kind, execution.node, execution, self.trace))


def _redact_tree(value: Any, secrets: list[str]) -> Any:
    """A copy of ``value`` with every secret in its strings redacted (pydantic models are
    copied field by field; media references are paths we wrote, left alone)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_tree(v, secrets) for v in value)
    if isinstance(value, BaseModel) and not isinstance(value, Image | Audio | Video):
        fields = {f: getattr(value, f) for f in type(value).model_fields}
        clean = {f: _redact_tree(v, secrets) for f, v in fields.items()}
        changed = {f: v for f, v in clean.items() if v is not fields[f] and v != fields[f]}
        return value.model_copy(update=changed) if changed else value
    return value
