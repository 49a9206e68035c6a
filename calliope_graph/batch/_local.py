"""The local batch engine: items → checkpoint threads, run with asyncio in one process.

One compiled graph and one checkpoint database (``OUT/checkpoints.sqlite``) serve the whole
batch; each item runs on its own thread (``batch-<item id>``) with its outputs, ``trace.json``
and ``report.html`` in ``OUT/<item id>/``. At most ``concurrency`` items run at once, pulled
from the streaming item iterator as slots free up (10,000 items are never 10,000 tasks). A
manifest line is appended (and fsynced) as each item finishes, and ``OUT/batch.html`` is
rewritten every few seconds and at the end.

``resume`` skips items whose latest manifest line is ``ok``; an item that failed or was
interrupted continues its thread from the last checkpoint when the thread exists (completed
nodes are not run, nor paid, again) and starts afresh otherwise. ``retry_failed`` runs only
the failed items. ``budget`` (USD) stops starting items once what the batch has spent, plus
the expected cost of the items running and of one more, would pass it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from calliope_graph._files import Throttled
from calliope_graph._outdir import OutDirLock, prepare_out_dir
from calliope_graph._telemetry import batch_scope
from calliope_graph.batch._cost import estimate_item_cost, trace_cost
from calliope_graph.batch._housekeeping import (
    _folder_state,
    _frozen_heap,
    _has_thread,
    _load_trace,
    _own_context,
    _remembered_budget,
    stop_full,
)
from calliope_graph.batch._items import (
    BatchInputError,
    Item,
    count_items,
    iter_items,
    thread_id_for,
)
from calliope_graph.batch._manifest import MANIFEST_NAME, Manifest, ManifestState
from calliope_graph.batch._options import BatchOptions
from calliope_graph.batch._records import (
    BatchEvent,
    BatchStats,
    BatchSummary,
    _first_image,
    _iso,
    _larger,
    _mark_unbilled,
    _outputs,
    _summary,
    _uris,
    busy_time,
)
from calliope_graph.context import RunContext
from calliope_graph.engines._http import redact
from calliope_graph.errors import CalliopeError, DiskFullError, FlowRunError, error_class
from calliope_graph.flow._checkpoints import open_sqlite
from calliope_graph.flow._journal import JOURNAL_NAME, JournalDB
from calliope_graph.flow._runtime import FlowEvent
from calliope_graph.flow.run import Durability, FlowRunner, checkpoint_serializer
from calliope_graph.flow.trace import Trace

if TYPE_CHECKING:
    from calliope_graph.flow.builder import Flow
    from calliope_graph.flow.validate import Plan

__all__ = [
    "REPORT_NAME",
    "BatchEvent",
    "BatchOptions",
    "BatchStats",
    "BatchSummary",
    "run_batch",
]

REPORT_NAME = "batch.html"
CHECKPOINTS_NAME = "checkpoints.sqlite"
#: An item's checkpoint is saved when it stops (done, failed or interrupted), not after every
#: step: the output journal already keeps what a killed item paid for (a resume replays it),
#: and per-step checkpoints were half of an item's CPU (docs/architecture.md, "Batches").
BATCH_DURABILITY: Durability = "exit"
#: batch.html is rewritten at most every ``REPORT_COST_FACTOR`` × its last rewrite's time.
REPORT_COST_FACTOR = 50.0


log = logging.getLogger(__name__)


class _Batch:
    """One run of a batch (state shared by the item tasks)."""

    def __init__(self, plan: Plan, out: Path, options: BatchOptions) -> None:
        self.plan = plan
        self.out = out
        self.options = options
        concurrency = options.get("concurrency")
        self.concurrency = max(int(4 if concurrency is None else concurrency), 1)
        self.retry_failed = bool(options.get("retry_failed", False))
        self.resume = bool(options.get("resume", False)) or self.retry_failed
        self.budget = options.get("budget")
        self.on_progress = options.get("on_progress")
        self.reports = options.get("report", True)
        self.item_reports = options.get("item_reports", True)
        self.report_interval = float(options.get("report_interval", 5.0))
        self.manifest = Manifest(out / MANIFEST_NAME)
        self.stats = BatchStats()
        self.records: dict[str, dict[str, Any]] = {}
        self.earlier_wall = 0.0
        """Seconds earlier runs of this batch folder had items running (``--resume``)."""
        """Id → slim manifest record (what batch.html shows), in input order."""
        self.not_started: list[tuple[str, str]] = []
        self.item_costs: list[float] = []
        self.counted_until: dict[str, float] = {}
        """Id → when the item's latest manifest line was written: what its thread did
        before then was counted by a line."""
        self.static_estimate = estimate_item_cost(plan)
        self.budget_message = ""
        self.warned_unpriced = False
        # The page lists every item, so a rewrite costs more as the batch grows: Throttled
        # spaces rewrites by at least REPORT_COST_FACTOR times the last one's cost, so the
        # report takes a bounded share of the batch's time, not a quadratic one.
        self._reporter = Throttled(
            self._write_report, self.report_interval, cost_factor=REPORT_COST_FACTOR
        )
        self._final = False
        self._report_path: Path | None = None
        self._secrets: list[str] = []
        #: The local engine's items share one output journal and run under the batch's
        #: lock of ``out`` (a DBOS worker's items keep both in their own folders).
        self.journal: JournalDB | None = None
        self.local = False
        self.disk_full: DiskFullError | None = None  # no item starts after (stop_full)

    # -- events -----------------------------------------------------------------------------
    def emit(self, kind: Any, **fields: Any) -> None:
        if self.on_progress is not None:
            self.on_progress(BatchEvent(kind=kind, stats=self.stats, **fields))

    # -- budget -----------------------------------------------------------------------------
    def estimate(self) -> float:
        """Expected cost of one item: the mean of the priced items so far, else the plan's."""
        if self.item_costs:
            return sum(self.item_costs) / len(self.item_costs)
        return self.static_estimate or 0.0

    def over_budget(self) -> bool:
        if self.budget is None:
            return False
        one = self.estimate()
        expected = self.stats.spent + (self.stats.running + 1) * one
        if expected <= self.budget:
            return False
        self.budget_message = (
            f"Budget ${self.budget:.2f} reached: ${self.stats.spent:.4f} spent, "
            f"{self.stats.running} item(s) running, about ${one:.4f} per item — no more "
            f"items started. Continue with --resume --budget {_larger(self.budget)} (or "
            "another budget larger than what was spent)."
        )
        return True

    # -- records ----------------------------------------------------------------------------
    def slim(self, record: dict[str, Any]) -> dict[str, Any]:
        """What the batch report needs of a manifest line (kept in memory per item: what is
        empty or None is left out, the report reads every field with a default)."""
        keep = (
            "id",
            "status",
            "source",
            "cost",
            "seconds",
            "started_at",
            "ended_at",
            "error",
            "calls",
            "rate_limits",
            "thumb",
            "attempts",
            "simulated",
        )
        slim = {k: record[k] for k in keep if record.get(k) not in (None, {}, [])}
        if "thumb" not in record:  # a line of an earlier run (thumbs are not in the manifest)
            thumb = _first_image(record.get("outputs") or {}, str(record.get("id")))
            if thumb is not None:
                slim["thumb"] = thumb
        return slim

    def remember(self, state: ManifestState) -> None:
        for item_id, record in state.latest.items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                ended = datetime.fromisoformat(str(record["ended_at"]).replace("Z", "+00:00"))
                self.counted_until[item_id] = ended.timestamp()
        for record in state.latest.values():
            if isinstance(record.get("cost"), int | float):
                self.item_costs.append(float(record["cost"]))
        self.earlier_wall = busy_time(state.latest.values())
        self.stats.spent = state.spent

    # -- one item ---------------------------------------------------------------------------
    async def run_item(
        self,
        root: FlowRunner,
        saver: Any,
        item: Item,
        *,
        again: bool | None = None,
        append: bool = True,
    ) -> dict[str, Any]:
        """Run one item; its manifest record. ``again`` (default: resuming and the thread
        exists) continues the item's thread; ``append=False`` leaves the manifest alone (a DBOS
        worker returns the record to the database instead; a full disk's is ``stopped``)."""
        thread = thread_id_for(item.id)
        folder = self.out / item.id
        runner = root.with_out_dir(folder, journal=self.journal, batch_item=self.local)
        if again is None:
            again = self.resume and (
                await _has_thread(saver, thread)
                or (self.journal is not None and self.journal.started(thread))
            )
        started = time.time()
        rate_limits: Counter[str] = Counter()
        in_flight: dict[int, str] = {}  # node executions of this item calling a provider
        self.emit("item_started", item_id=item.id, message=item.source)
        on_event = self._watch(item, in_flight, rate_limits)
        trace: Trace | None = None
        outputs: dict[str, Any] = {}
        uris: dict[str, Any] = {}
        error: dict[str, Any] | None = None
        stopped = False  # by a full disk: no manifest line (stop_full)
        try:
            result = await runner.ainvoke(
                None if again else item.inputs, thread_id=thread, resume=again, on_event=on_event
            )
            trace, outputs = result.trace, _outputs(result.outputs, self.out)
            if runner._context().store.remote:  # media in object storage: where
                uris = _uris(result.outputs)
        except Exception as exc:  # a failed run, a refusal before it ran, or a bug: recorded
            trace, error = self._failure(exc, folder)
            full = stop_full(self, exc, folder)
            if full is not None:  # (a DBOS worker's record carries it to the follower)
                stopped = True
                error.update(
                    message=self.redact(full.message), folder=full.folder, needed=full.needed
                )
        finally:
            for provider in in_flight.values():  # stopped mid-node
                self.release(provider)
        ended = time.time()
        if trace is not None and again:
            _mark_unbilled(trace, self.counted_until.get(item.id))
        attempts, calls = _fresh_work(trace)
        cost = trace_cost(trace, self.plan) if trace is not None else 0.0
        record: dict[str, Any] = {
            "id": item.id,
            "status": "failed" if error else "ok",
            "thread_id": thread,
            "flow": self.plan.spec.name,
            "source": item.source,
            "outputs": outputs,
            "error": error,
            "attempts": attempts,
            "calls": calls,
            "rate_limits": dict(rate_limits),
            "cost": cost,
            "started_at": _iso(started),
            "ended_at": _iso(ended),
            "seconds": round(ended - started, 3),
            "resumed": again,
        }
        if uris:  # media kept in object storage: where (an addition to the outputs' paths)
            record["uris"] = uris
        if trace is not None and trace.simulated:  # shown on batch.html
            record["simulated"] = True
        if stopped or (append and not self._append(record)):
            record["status"] = "stopped"  # not finished: batch --resume runs it again
        if self.item_reports and trace is not None:
            self.item_report(trace, folder)
        record["thumb"] = _first_image(outputs, item.id)
        return record

    def _append(self, record: dict[str, Any]) -> bool:
        """Write the item's manifest line; False if a full disk refused it (stop_full)."""
        try:
            self.manifest.append(record)
        except DiskFullError as exc:
            return stop_full(self, exc, self.out) is None
        return True

    def _watch(
        self, item: Item, in_flight: dict[int, str], rate_limits: Counter[str]
    ) -> Callable[[FlowEvent], None]:
        """The event callback of one item's run: counts the provider calls in flight, the
        limiter's waits and the rate limits met, and passes each event on."""

        def on_event(event: FlowEvent) -> None:
            execution = event.execution
            provider = execution.provider
            key = id(execution)
            if event.kind == "started" and provider:
                in_flight[key] = provider
                self.stats.in_flight[provider] += 1
            elif event.kind in ("finished", "failed") and key in in_flight:
                self.release(in_flight.pop(key))
            if event.kind in ("finished", "failed") and provider and execution.limit_wait:
                waits = self.stats.limiter_waits
                waits[provider] = waits.get(provider, 0.0) + execution.limit_wait
            if event.kind == "retried" and execution.error_class == "rate_limit" and provider:
                rate_limits[provider] += 1
                self.stats.rate_limited[provider] += 1
            self.emit("node", item_id=item.id, node_event=event)

        return on_event

    def _failure(self, exc: Exception, folder: Path) -> tuple[Trace | None, dict[str, Any]]:
        """The trace (when the run wrote one) and the record's ``error`` of a failed item."""
        if isinstance(exc, FlowRunError):
            trace = _load_trace(folder / "trace.json")
            failed = None
            if trace is not None:
                failed = next((e for e in reversed(trace.executions) if e.status == "failed"), None)
            message = failed.error if failed is not None and failed.error else str(exc)
            return trace, {"class": exc.cause_class, "node": exc.node, "message": message}
        if isinstance(exc, CalliopeError):  # refused before it ran: a bad media file, a key
            return None, {"class": error_class(exc), "node": None, "message": self.redact(str(exc))}
        # a bug must not stop the other items; the line says what
        text = self.redact(f"{type(exc).__name__}: {exc}")
        return None, {"class": "any", "node": None, "message": text}

    def release(self, provider: str) -> None:
        self.stats.in_flight[provider] -= 1
        if self.stats.in_flight[provider] <= 0:
            del self.stats.in_flight[provider]

    def item_report(self, trace: Trace, folder: Path) -> None:
        from calliope_graph.viz import render_report

        with contextlib.suppress(Exception):  # a report problem never fails the item
            render_report(trace, folder / "report.html")

    def finished(self, record: dict[str, Any]) -> None:
        stats = self.stats
        stats.running -= 1
        if record["status"] == "stopped":  # a full disk: not finished (no manifest line)
            stats.not_started += 1
            self.not_started.append((record["id"], record["source"]))
            return
        stats.ran += 1
        if record["status"] == "ok":
            stats.ok += 1
        else:
            stats.failed += 1
        cost = record.get("cost")
        if isinstance(cost, int | float):
            stats.spent += cost
            stats.spent_this_run += cost
            self.item_costs.append(float(cost))
        else:
            stats.unpriced += 1
            if self.budget is not None and not self.warned_unpriced:
                self.warned_unpriced = True  # once a batch: every such item is alike
                log.warning(
                    "warning: item %s called a model with no list price (providers: %s): its "
                    "cost is unknown and not counted against --budget %g. Give the model "
                    "config a price to budget it.",
                    record["id"],
                    ", ".join(sorted(record.get("calls") or {})) or "none",
                    self.budget,
                )
        stats.calls.update(record.get("calls") or {})
        self.records[record["id"]] = self.slim(record)
        self.emit("item_finished", item_id=record["id"], record=record)
        self.maybe_report()

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    # -- the batch report -------------------------------------------------------------------
    def maybe_report(self, *, final: bool = False) -> Path | None:
        """Rewrite ``batch.html`` soon (throttled), or now and for the last time (``final``:
        its path, None if it could not be written)."""
        if not self.reports:
            return None
        if not final:
            self._reporter.request()
            return None
        self._final = True
        self._reporter.flush()
        return self._report_path

    def _write_report(self) -> None:
        from calliope_graph.viz._batch_report import render_batch_report

        path = self.out / REPORT_NAME
        self._report_path = None
        try:
            render_batch_report(
                list(self.records.values()),
                path,
                flow=self.plan.spec.name,
                not_started=self.not_started,
                summary=self.report_summary(self._final),
            )
        except Exception:  # a report problem never stops the batch
            return
        self._report_path = path
        self.emit("report", message=str(path))

    def report_summary(self, final: bool) -> dict[str, Any]:
        s = self.stats
        return {
            "running": not final,
            "ok": s.ok,
            "failed": s.failed,
            "in_progress": s.running,
            "not_started": len(self.not_started),
            "cost": round(s.spent, 6),
            "unpriced": s.unpriced,
            "wall_time": round(s.elapsed + self.earlier_wall, 2),
            "wall_time_this_run": round(s.elapsed, 2),
            "budget": self.budget,
            "budget_message": self.budget_message,
            "rate_limited": dict(s.rate_limited),
        }


def _plan_of(flow: Flow | Plan) -> Plan:
    plan = getattr(flow, "plan", None)
    return plan() if callable(plan) else flow  # type: ignore[return-value]


async def _schedule(
    batch: _Batch,
    stream: Iterable[Item],
    state: ManifestState,
    slots: asyncio.Semaphore,
    start: Callable[[Item], None],
) -> BatchInputError | None:
    """Start (``start``) each item of ``stream`` that needs running, as ``slots`` allow: an
    item already ok is skipped, and none starts past the budget; returns the input error that
    stopped the reading, if any (the items started keep running)."""
    stopped = False
    try:
        for item in stream:
            status = state.status(item.id)
            if status == "ok":
                batch.stats.skipped += 1
                batch.stats.ok += 1
                batch.records[item.id] = batch.slim(state.latest[item.id])
                continue
            if stopped or (batch.retry_failed and status != "failed"):
                batch.not_started.append((item.id, item.source))
                batch.stats.not_started += 1
                continue
            await slots.acquire()
            if batch.disk_full is not None or batch.over_budget():
                slots.release()
                stopped = True
                if batch.disk_full is None:
                    batch.emit("budget_stop", message=batch.budget_message)
                batch.not_started.append((item.id, item.source))
                batch.stats.not_started += 1
                continue
            batch.stats.running += 1
            start(item)
    except BatchInputError as exc:
        return exc
    except OSError as exc:  # the inputs file went away or cannot be read mid-way
        return BatchInputError(f"Cannot read the batch inputs: {exc}")
    return None


async def _open_run(
    batch: _Batch, held: contextlib.AsyncExitStack, ctx: RunContext, options: BatchOptions
) -> tuple[FlowRunner, Any]:
    """What a local batch holds while it runs (released by ``held``): the folder's lock, the
    journal, the checkpoints, the frozen heap, the telemetry span; and the root runner."""
    plan, out, name = batch.plan, batch.out, batch.plan.spec.name
    # One batch process per folder: a second one would run the same items and
    # interleave the manifest. The items' folders are then not locked one by one.
    held.enter_context(OutDirLock(out, thread_id=f"batch of {name}"))
    batch.local = True
    batch.journal = JournalDB.open(out / JOURNAL_NAME)
    if batch.journal is not None:
        held.callback(batch.journal.close)
    durability = options.get("durability", BATCH_DURABILITY)
    saver = await held.enter_async_context(
        open_sqlite(out / CHECKPOINTS_NAME, checkpoint_serializer(plan), defer=durability != "sync")
    )
    held.enter_context(_frozen_heap())
    # With OpenTelemetry on, a span for the batch that each item's trace links to.
    held.enter_context(batch_scope(name, lambda: batch.report_summary(True)))
    root = FlowRunner(
        plan,
        out_dir=out,
        ctx=ctx,
        checkpointer=saver,
        cache=False,
        trace_file=True,
        durability=durability,
    )
    return root, saver


async def run_batch(
    flow: Flow | Plan,
    items: str | Path | Iterable[Mapping[str, Any] | Item],
    out_dir: str | Path,
    **options: Unpack[BatchOptions],
) -> BatchSummary:
    """Run ``flow`` over ``items`` into ``out_dir`` (see the module docstring and
    :class:`BatchOptions`); returns a :class:`BatchSummary`.

    ``items`` is a ``.jsonl``/``.csv`` file, a directory of media files, or an iterable of
    input mappings (an ``id`` key names an item). A malformed input row stops the batch
    (after the running items finish and are recorded) with a :class:`BatchInputError`
    carrying the summary as ``.summary``.
    """
    plan = _plan_of(flow)
    out = Path(out_dir)
    batch = _Batch(plan, out, options)
    name = plan.spec.name
    state = _folder_state(batch, out, name)
    stream = iter_items(items, plan.spec)  # a missing or unknown source fails here, early
    prepare_out_dir(out)  # a bad folder is a ConfigurationError naming it and the fix
    batch.budget = _remembered_budget(out, batch.budget, resume=batch.resume)
    batch.remember(state)
    batch.stats.total = count_items(items)

    ctx = options.get("ctx")
    own_ctx: RunContext | None = None
    if ctx is None:
        ctx = own_ctx = _own_context(plan, out, options)
    batch._secrets = ctx.keys.secrets()
    input_error: BatchInputError | None = None
    tasks: set[asyncio.Task[dict[str, Any]]] = set()
    slots = asyncio.Semaphore(batch.concurrency)
    try:
        async with contextlib.AsyncExitStack() as held:
            root, saver = await _open_run(batch, held, ctx, options)

            async def run_and_count(item: Item) -> dict[str, Any]:
                # Counted in the item's own task, right after its manifest line: a done
                # callback runs a turn later, after other items may have appended theirs.
                record = await batch.run_item(root, saver, item)
                batch.finished(record)
                return record

            def done(task: asyncio.Task[dict[str, Any]]) -> None:
                tasks.discard(task)
                slots.release()

            def start(item: Item) -> None:
                task = asyncio.create_task(run_and_count(item))
                tasks.add(task)
                task.add_done_callback(done)

            input_error = await _schedule(batch, stream, state, slots, start)
            if tasks:
                await asyncio.gather(*tasks)
    except BaseException:
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        batch.maybe_report(final=True)
        raise
    finally:
        batch.manifest.close()
        if own_ctx is not None:
            await own_ctx.aclose()
    report = batch.maybe_report(final=True)
    summary = _summary(batch, report, input_error)
    if input_error is not None:
        input_error.summary = summary
        raise input_error
    if batch.disk_full is not None:  # one clear error (exit 4), with what the batch did
        batch.disk_full.summary = summary
        raise batch.disk_full
    return summary


def _fresh_work(trace: Trace | None) -> tuple[int, dict[str, int]]:
    """The attempts and provider calls of what this run did: not what its resume replayed,
    unless that was never counted (unbilled)."""
    fresh = [e for e in (trace.executions if trace else []) if not e.resumed or e.unbilled]
    calls: Counter[str] = Counter()
    for execution in fresh:
        calls.update(execution.calls)
    return sum(e.attempts for e in fresh), dict(calls)
