"""What a compiled flow carries at run time, and the names of its state.

The compiler (``flow.compile``) and the runner (``flow.run``) import this; neither the other.

- **State keys** are named in :mod:`calliope_graph.flow._names` (every key and generated
  node name of a compiled flow); the ones the runner reads are re-exported here.
- **FlowRuntime** is LangGraph's runtime context for one run: the
  :class:`~calliope_graph.context.RunContext` (client, keys, store) and the trace being
  written — never state, so never checkpointed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from langgraph.errors import GraphBubbleUp, GraphInterrupt

from calliope_graph._files import AFTER_NODE_DELAY, Throttled
from calliope_graph._pricing import settle
from calliope_graph._secrets import redact, redact_tree
from calliope_graph._telemetry import run_recorder
from calliope_graph._usage import ProviderCall
from calliope_graph.context import RunContext
from calliope_graph.engines._http import CallStats
from calliope_graph.errors import CalliopeError, DiskFullError, error_class, error_classes
from calliope_graph.flow._bookkeeping import (
    EventKind,
    FlowEvent,
    OnEvent,
    execute_plain,
    execution_template,
    node_work,
    started,
    total_cost,
    track,
    twin,
    untrack,
)
from calliope_graph.flow._names import (
    HALT_KEY,
    done_name,
    input_key,
    override_key,
    port_key,
    request_key,
    rewrites_key,
)
from calliope_graph.flow.trace import NodeExecution, Trace, jsonable

if TYPE_CHECKING:
    from calliope_graph.flow._journal import Journal
    from calliope_graph.nodes import Node

__all__ = [
    "HALT_KEY",
    "EventKind",
    "FlowEvent",
    "FlowRuntime",
    "OnEvent",
    "done_name",
    "input_key",
    "override_key",
    "port_key",
    "request_key",
    "rewrites_key",
]


log = logging.getLogger(__name__)


# -- events and the runtime ------------------------------------------------------------------------
#: Shortest time between two rewrites of trace.json during a run (seconds).
SAVE_INTERVAL = 0.1


@dataclass
class _RunState:
    """What every scope of one run shares (a subflow's runtime is a view of its parent's)."""

    halted: tuple[str, BaseException] | None = None
    last: dict[str, NodeExecution] = field(default_factory=dict)
    secrets: list[str] | None = None
    saver: Throttled | None = None
    semaphores: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    view_warned: bool = False  # a trace.json write failed and said so (once per run)
    disk_full: DiskFullError | None = None  # the journal found the disk full: no node starts
    telemetry: Any = None
    """The run's OpenTelemetry recorder: None until the first event asks, False if off."""


@dataclass
class FlowRuntime:
    """LangGraph's runtime context for one run (see module docstring)."""

    ctx: RunContext
    trace: Trace
    on_event: OnEvent | None = None
    trace_path: Path | None = None
    live_trace: bool = True
    """Rewrite ``trace_path`` as nodes finish (else only when the run stops)."""
    record: bool = True
    resumable: bool = False
    """A checkpointer is present: an unrouted failure pauses (resumable) instead of raising."""
    static: dict[str, tuple[str | None, str | None, dict[str, Any], dict[str, Any]]] = field(
        default_factory=dict
    )
    """Per node: provider, model, summarised params (they do not change between runs)."""
    scope: str = ""
    """Where in the run this runtime records: ``""`` at the top, ``"illustrate/"`` inside a
    subflow node, ``"illustrate[3]/"`` inside item 3 of a mapped one."""
    item: int | None = None
    """The map item whose work this runtime records (set inside a map item)."""
    outer_item: int | None = None
    """The map item this scope runs inside (a subflow of a mapped node): what the trace
    records as ``item`` when no map item of this scope is set (``item`` keys the journal)."""
    journal: Journal | None = None
    """Write-ahead journal of provider nodes' outputs (see flow/_journal.py)."""
    _run: _RunState = field(default_factory=lambda: _RunState())

    @property
    def halted(self) -> tuple[str, BaseException] | None:
        """The node whose failure no route took, and the failure (shared by every scope)."""
        return self._run.halted

    @halted.setter
    def halted(self, value: tuple[str, BaseException] | None) -> None:
        self._run.halted = value

    @property
    def _last(self) -> dict[str, NodeExecution]:
        return self._run.last

    def scoped(
        self,
        prefix: str = "",
        *,
        item: int | None = None,
        resumable: bool | None = None,
        folder: str | None = None,
    ) -> FlowRuntime:
        """A view of this runtime for a subflow or a map item (the same client, keys, trace,
        run state) recording under ``scope + prefix``; ``folder``: a sub-folder for its media."""
        # Shallow copies of the two dataclasses (what dataclasses.replace makes, at a tenth
        # of its cost: one per map item and subflow run)
        ctx = self.ctx
        if folder:
            ctx = twin(ctx, store=ctx.store.sub(folder))
        return twin(
            self,
            ctx=ctx,
            scope=self.scope + prefix,
            item=item,
            outer_item=self._item if self.item is not None else self.outer_item,
            resumable=self.resumable if resumable is None else resumable,
        )

    def semaphore(self, name: str, bound: int | None) -> asyncio.Semaphore | None:
        """The run's bound on parallel items of map node ``name`` (one per run and scope)."""
        if bound is None:
            return None
        key = self.scope + name
        found = self._run.semaphores.get(key)
        if found is None:
            found = self._run.semaphores[key] = asyncio.Semaphore(bound)
        return found

    def _static(
        self, name: str, node: Node
    ) -> tuple[str | None, str | None, dict[str, Any], dict[str, Any]]:
        """Provider, model, params and the execution template of node ``name``."""
        known = self.static.get(name)
        if known is None:
            config = None
            with contextlib.suppress(CalliopeError):
                config = node.model_config_for(self.ctx) if node.model is not None else None
            provider = config.provider.value if config is not None else None
            model = config.slug if config is not None else None
            params = self._summary(node.params.model_dump(mode="json"), None)
            template = execution_template(node.kind, provider, model, params)
            known = self.static[name] = (provider, model, params, template)
        return known

    # -- node executions --------------------------------------------------------------------
    @property
    def _item(self) -> int | None:
        """The map item the trace records (this scope's, else the enclosing map's)."""
        return self.item if self.item is not None else self.outer_item

    def _key(self, name: str) -> str:  # (inlined in execute_plain)
        return self.scope + name + (f"#{self.item}" if self.item is not None else "")

    async def execute(
        self,
        name: str,
        node: Node,
        inputs: dict[str, Any],
        *,
        iteration: int,
        work: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> dict[str, Any]:
        """Run ``node`` once, recording it in the trace (the compiled node calls this);
        ``work`` replaces ``node.run`` (a subflow node runs its child graph)."""
        store = self.ctx.store
        plain = node.model is None and work is None and self._run.disk_full is None
        if plain and self.record and not store.remote:  # no provider: nothing to pay
            return await execute_plain(self, name, node, inputs, iteration)
        run, key = work or node_work(self.ctx, node, inputs), self._key(name)
        journal, entry = self.journal, None
        if node.model is not None and journal is not None and journal.syncing:
            await journal.synced()  # earlier paid outputs on the disk before paying more
        if self._run.disk_full is not None:  # the journal found the disk full: pay no more
            self._stop_full(key, name, node, inputs, iteration)
        if journal is not None and node.model is not None:  # only provider calls are paid
            entry = journal.key(key, iteration, inputs)
            saved = await journal.aget(entry, self.ctx) if entry is not None else None
            if saved is not None and entry is not None:
                if store.remote:  # an upload that failed before is made now
                    saved = await store.publish(saved)
                self._journaled(name, node, inputs, saved, iteration, journal.calls(entry))
                return saved
        if not self.record:
            outputs = self._scrub(node, await run())
            if entry is not None and journal is not None:
                journal.put(entry, key, outputs)
            return await store.publish(outputs) if store.remote else outputs
        execution = self._start(key, name, node, inputs, iteration)

        def retried(provider: str, exc: BaseException | None) -> None:
            execution.retries += 1
            execution.error_class = error_class(exc) if exc is not None else None
            execution.error = self.describe(exc) if exc is not None else None
            self._emit("retried", execution)

        stats = CallStats(on_retry=retried)
        unwritten: dict[str, bytes] = {}
        tokens = track(node, stats, unwritten)
        settled = False
        try:
            outputs = self._scrub(node, await run())
            if unwritten:  # paid for, not written: journaled (below), then the run stops
                self._keep_unwritten(execution, node, stats, key, entry, outputs, unwritten)
            if entry is not None and journal is not None:
                # Priced first: outputs and cost are one commit, before anyone sees them.
                self._close(execution, stats)
                execution.outputs = self._summary(outputs, self.trace.out_dir)
                self._settle(execution, node, stats)
                settled = True
                self._journal_put(journal, entry, key, outputs, execution.provider_calls)
            if store.remote:  # uploaded after the journal has them: a failure re-pays nothing
                outputs = await store.publish(outputs)
        except GraphInterrupt as exc:  # a choice (runs again when resumed), or a halt below
            if self.halted is None:
                self._waiting(execution, stats)
            else:
                self._failed(name, node, execution, stats, exc)
            raise
        except BaseException as exc:
            self._failed(name, node, execution, stats, exc)
            raise
        finally:
            untrack(tokens)
        if not settled:
            self._close(execution, stats)
        # One dict update instead of pydantic's per-attribute __setattr__ (hot path).
        execution.__dict__.update(status="ok", error_class=None, error=None)
        if not settled or store.remote:  # (its fields are all set: unvalidated)
            execution.__dict__["outputs"] = self._summary(outputs, self.trace.out_dir)
        if not settled:
            self._settle(execution, node, stats)
        self._emit("finished", execution)
        return outputs

    def _journal_put(
        self, journal: Journal, entry: str, key: str, outputs: dict[str, Any], calls: Any
    ) -> None:
        """Journal paid outputs (flushed later); a full disk: no node starts after."""
        try:
            journal.put(entry, key, outputs, calls, flush=False)
        except DiskFullError as exc:
            log.warning("%s", exc)
            self._run.disk_full = exc

    def _stop_full(
        self, key: str, name: str, node: Node, inputs: dict[str, Any], iteration: int
    ) -> NoReturn:
        """Fail ``name`` before it starts: the disk is full (the trace says so)."""
        full = self._run.disk_full
        assert full is not None
        exc = DiskFullError(full.message, folder=full.folder, needed=full.needed)
        if self.record:
            self._failed(
                name, node, self._start(key, name, node, inputs, iteration), CallStats(), exc
            )
        raise exc

    def _keep_unwritten(
        self,
        execution: NodeExecution,
        node: Node,
        stats: CallStats,
        key: str,
        entry: str | None,
        outputs: dict[str, Any],
        unwritten: dict[str, bytes],
    ) -> None:
        """Journal paid media a full disk kept from being written, then fail the node."""
        if entry is not None and self.journal is not None:
            self._close(execution, stats)
            execution.outputs = self._summary(outputs, self.trace.out_dir)
            self._settle(execution, node, stats)
            self.journal.put(entry, key, outputs, execution.provider_calls, files=unwritten)
        folder, needed = Path(next(iter(unwritten))).parent, sum(map(len, unwritten.values()))
        raise DiskFullError(folder=folder, needed=needed, what=f"{len(unwritten)} media file(s)")

    def _start(
        self, key: str, name: str, node: Node, inputs: dict[str, Any], iteration: int
    ) -> NodeExecution:
        """A new execution of ``name`` in the trace, announced (``started``)."""
        last = self._run.last  # (not the properties: this runs once per node execution)
        previous = last.get(key)
        if previous is not None and previous.status == "failed" and previous.branch is None:
            self._emit("retried", previous)  # LangGraph's RetryPolicy runs it again
        template = self._static(name, node)[3]
        item = self.item if self.item is not None else self.outer_item
        inputs_summary = self._summary(inputs, self.trace.out_dir)
        execution = started(template, self.scope + name, iteration, item, inputs_summary)
        self.trace.executions.append(execution)
        last[key] = execution
        self._emit("started", execution)
        return execution

    def _failed(
        self,
        name: str,
        node: Node,
        execution: NodeExecution,
        stats: CallStats,
        exc: BaseException,
    ) -> None:
        """``execution`` ended with ``exc`` (or was cancelled): the trace says which."""
        self._close(execution, stats)
        self._settle(execution, node, stats)
        execution.status = "failed"
        if isinstance(exc, asyncio.CancelledError):
            # Cancelled from outside: LangGraph's node timeout (the error route or the
            # runner then says "timeout") or the run being stopped (Ctrl-C).
            execution.status = "interrupted"
            execution.error_class = None
            execution.error = f"stopped before node {name!r} finished"
        else:
            if isinstance(exc, GraphBubbleUp) and self.halted is not None:
                exc = self.halted[1]  # a subflow paused on its failure: record that cause
            execution.error_class = error_class(exc)
            execution.error = self.describe(exc)
        self._emit("failed", execution)

    def _waiting(self, execution: NodeExecution, stats: CallStats) -> None:
        """``execution`` paused for a person's choice (a ``choose`` node's interrupt)."""
        self._close(execution, stats)
        execution.status = "waiting"
        self._emit("waiting", execution)

    def routed(self, name: str, exc: BaseException, branch: str, *, status: Any) -> None:
        """An error route caught the failure of ``name`` (called by its error handler)."""
        execution = self._last.get(self._key(name))
        if execution is None:  # failed before it could start (e.g. a missing input)
            execution = NodeExecution(
                node=self.scope + name, kind="?", started_at=time.time(), item=self._item
            )
            execution.ended_at = execution.started_at
            self.trace.executions.append(execution)
        execution.status = status
        execution.branch = branch
        execution.error_class = error_class(exc)
        execution.error = self.describe(exc)
        self._emit("skipped" if status == "skipped" else "fallback", execution)

    def timed_out(self, name: str, exc: BaseException) -> None:
        """``exc`` ended ``name``: if it was a timeout, its cancelled execution says so."""
        execution = self._last.get(self._key(name))
        if execution is None or execution.status != "interrupted":
            return
        if "timeout" in error_classes(exc):
            execution.status = "failed"
            execution.error_class = "timeout"
            execution.error = self.describe(exc)

    def skip(self, name: str, kind: str, branch: str) -> None:
        """``name`` will not run: the switch took another branch (``branch`` says which)."""
        now = time.time()
        execution = NodeExecution(
            node=self.scope + name,
            kind=kind,
            started_at=now,
            ended_at=now,
            status="skipped",
            branch=branch,
            item=self._item,
        )
        self.trace.executions.append(execution)
        self._emit("skipped", execution)

    def interrupted(self) -> None:
        """The run was stopped (Ctrl-C, cancelled): executions still running say so."""
        now = time.time()
        for execution in self.trace.executions:
            if execution.status == "running":
                execution.status = "interrupted"
                execution.ended_at = now
                execution.error = "the run was stopped before it finished"

    def _journaled(
        self,
        name: str,
        node: Node,
        inputs: dict[str, Any],
        outputs: dict[str, Any],
        iteration: int,
        calls: list[ProviderCall] | None = None,
    ) -> None:
        """A resumed run found ``name``'s outputs in the journal: paid already, not re-run
        (``calls``: the requests that made them, with their cost)."""
        if not self.record:
            return
        qualified = self.scope + name
        done = next(
            (
                e
                for e in self.trace.executions
                if e.node == qualified
                and e.item == self._item
                and e.iteration == iteration
                and e.resumed
                and e.status == "ok"
            ),
            None,
        )
        if done is None:  # the earlier run was killed before trace.json recorded it
            provider, model, params, _ = self._static(name, node)
            now = time.time()
            root = self.trace.out_dir
            done = NodeExecution(
                node=qualified,
                kind=node.kind,
                provider=provider,
                model=model,
                started_at=now,
                ended_at=now,
                status="ok",
                iteration=iteration,
                item=self._item,
                resumed=True,
                inputs=self._summary(inputs, root),
                outputs=self._summary(outputs, root),
                params=params,
            )
            self.trace.executions.append(done)
        if calls and not done.provider_calls:
            done.provider_calls = calls
            done.cost_usd = total_cost(calls)
            for call in calls:
                done.calls[call.provider] = done.calls.get(call.provider, 0) + 1
        self._last[self._key(name)] = done
        self._emit("finished", done)

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
    def _settle(self, execution: NodeExecution, node: Node, stats: CallStats) -> None:
        """Price the execution's provider requests (calliope_graph/_pricing.py)."""
        if not stats.records:
            return
        config = None
        with contextlib.suppress(CalliopeError):
            config = node.model_config_for(self.ctx) if node.model is not None else None
        settle(execution, config, stats.records)

    def _close(self, execution: NodeExecution, stats: CallStats) -> None:
        execution.__dict__.update(
            ended_at=time.time(),
            attempts=stats.attempts,
            calls=dict(stats.calls),
            retry_times=list(stats.attempt_times),
            limit_wait=round(stats.limit_wait, 3),
        )
        if stats.providers and execution.provider is None:
            execution.provider = stats.providers[0]

    def _save_soon(self) -> None:
        """Rewrite trace.json as nodes finish: at most every SAVE_INTERVAL, AFTER_NODE_DELAY after a
        node at the earliest (finishing together: one write; the last: :meth:`save_final`)."""
        if self._run.saver is None:
            self._run.saver = Throttled(
                self.save, SAVE_INTERVAL, first_now=False, delay=AFTER_NODE_DELAY
            )
        self._run.saver.request()

    def save(self) -> None:
        """Write trace.json — a view: a failure (a full disk) warns once per run, no more."""
        if self.trace_path is None:
            return
        try:
            self.trace.save(self.trace_path)
        except OSError as exc:
            if not self._run.view_warned:
                self._run.view_warned = True
                log.warning("%s was not updated (%s); the run goes on.", self.trace_path, exc)

    def save_final(self) -> None:
        """Write the finished trace now, and drop a rewrite still scheduled: nothing writes
        into the output directory after the run returned. Ends the run's telemetry."""
        if self._run.saver is not None:
            self._run.saver.cancel()
        self.save()
        if self._run.telemetry:
            self._run.telemetry.finish(self.trace)

    def _secrets(self) -> list[str]:
        if self._run.secrets is None:
            self._run.secrets = self.ctx.keys.secrets()
        return self._run.secrets

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
        summary, secrets = jsonable(value, root=root), self._run.secrets
        if secrets is None:
            secrets = self._secrets()
        if not secrets:
            return summary
        return redact_tree(summary, secrets)

    def _scrub(self, node: Node, outputs: dict[str, Any]) -> dict[str, Any]:
        """A provider's answer that echoes a key (a prompt quoting it, a debug field) is
        redacted before it becomes state: so neither checkpoints, the cache, the trace nor
        printed results ever hold it."""
        secrets = self._secrets() if node.model is not None else None
        if not secrets:
            return outputs
        scrubbed: dict[str, Any] = redact_tree(outputs, secrets)
        return scrubbed

    def _emit(self, kind: EventKind, execution: NodeExecution) -> None:
        telemetry = self._run.telemetry
        if telemetry is None:  # the run's first event: is it traced? (once per run)
            telemetry = self._run.telemetry = run_recorder(self.trace)
        if telemetry:
            telemetry.event(kind, execution)
        if self.trace_path is not None and self.live_trace and kind not in ("started", "retried"):
            self._save_soon()
        if self.on_event is not None:
            self.on_event(FlowEvent(kind, execution.node, execution, self.trace))
