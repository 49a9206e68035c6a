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
import gc
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from typing_extensions import Unpack

from calliope_graph._files import Throttled, write_atomic
from calliope_graph._outdir import OutDirLock, prepare_out_dir
from calliope_graph._telemetry import batch_scope
from calliope_graph.batch._cost import estimate_item_cost, trace_cost
from calliope_graph.batch._items import (
    BatchInputError,
    Item,
    count_items,
    iter_items,
    thread_id_for,
)
from calliope_graph.batch._manifest import MANIFEST_NAME, Manifest, ManifestState
from calliope_graph.batch._options import BatchOptions
from calliope_graph.context import RunContext
from calliope_graph.engines._http import redact
from calliope_graph.errors import CalliopeError, ConfigurationError, FlowRunError, error_class
from calliope_graph.flow._checkpoints import open_sqlite
from calliope_graph.flow._journal import JOURNAL_NAME, JournalDB
from calliope_graph.flow._runtime import FlowEvent
from calliope_graph.flow.run import Durability, FlowRunner, checkpoint_serializer
from calliope_graph.flow.trace import Trace, jsonable
from calliope_graph.session import session_of

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


@dataclass
class BatchStats:
    """Live counters of a batch (what progress displays read)."""

    total: int | None = None
    """Items in the input, when it could be counted up front."""
    started_at: float = field(default_factory=time.time)
    ok: int = 0
    """Items whose latest state is ok (including those ok before this run)."""
    failed: int = 0
    running: int = 0
    skipped: int = 0
    """Items already ok in the manifest, not run again."""
    not_started: int = 0
    ran: int = 0
    """Items finished in this run."""
    spent: float = 0.0
    """USD spent by the batch (every manifest line, earlier runs included)."""
    spent_this_run: float = 0.0
    unpriced: int = 0
    """Items of this run whose cost is unknown (a model without a price)."""
    calls: Counter[str] = field(default_factory=Counter)
    """Provider → requests made in this run (finished node executions)."""
    in_flight: Counter[str] = field(default_factory=Counter)
    """Provider → node executions calling it right now."""
    rate_limited: Counter[str] = field(default_factory=Counter)
    """Provider → 429 answers seen in this run (each one retried or failed)."""
    limiter_waits: dict[str, float] = field(default_factory=dict)
    """Provider → seconds spent waiting on the shared rate limiter (filled by the limiter
    when it is wired under the engines; empty until then)."""

    @property
    def elapsed(self) -> float:
        return max(time.time() - self.started_at, 0.0)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def throughput(self) -> float:
        """Items finished per second in this run."""
        return self.ran / self.elapsed if self.elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds until every item is done at the current pace (None: unknown)."""
        rate = self.throughput()
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.done - self.not_started, 0) / rate


@dataclass(frozen=True)
class BatchEvent:
    """Something a batch did: ``item_started``, ``item_finished`` (with its manifest
    ``record``), ``node`` (a node event of a running item), ``budget_stop``, ``report``."""

    kind: Literal["item_started", "item_finished", "node", "budget_stop", "report"]
    stats: BatchStats
    item_id: str | None = None
    record: dict[str, Any] | None = None
    node_event: FlowEvent | None = None
    message: str = ""


@dataclass
class BatchSummary:
    """A finished (or stopped) batch."""

    flow: str
    out_dir: Path
    manifest: Path
    report: Path | None
    total: int
    """Items read from the input."""
    ok: int
    failed: int
    skipped: int
    """Already ok before this run (not run again)."""
    ran: int
    """Items run in this run."""
    not_started: list[str]
    """Ids of items that have no manifest line (budget reached, or not selected)."""
    cost: float
    """USD spent by the whole batch (all manifest lines)."""
    cost_this_run: float
    unpriced: int
    calls: dict[str, int]
    """Provider → requests made in this run."""
    rate_limited: dict[str, int]
    wall_time: float
    budget: float | None = None
    budget_stopped: bool = False
    budget_message: str = ""
    failures: dict[str, int] = field(default_factory=dict)
    """``"<error class> at <node>"`` → items failed that way."""
    input_error: str | None = None
    """The input row that stopped the batch early (also raised as a BatchInputError)."""

    @property
    def all_ok(self) -> bool:
        return self.failed == 0 and not self.not_started and self.input_error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "out_dir": str(self.out_dir),
            "manifest": str(self.manifest),
            "report": str(self.report) if self.report else None,
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "ran": self.ran,
            "not_started": len(self.not_started),
            "not_started_ids": self.not_started,
            "cost": round(self.cost, 6),
            "cost_this_run": round(self.cost_this_run, 6),
            "unpriced": self.unpriced,
            "calls": self.calls,
            "rate_limited": self.rate_limited,
            "wall_time": round(self.wall_time, 3),
            "budget": self.budget,
            "budget_stopped": self.budget_stopped,
            "budget_message": self.budget_message,
            "failures": self.failures,
            "input_error": self.input_error,
        }


def _mark_unbilled(trace: Trace, counted_until: float | None) -> None:
    """Mark the executions a resumed item carried over that no manifest line counted: those
    of attempts killed or stopped before their item finished, i.e. that ended after the
    item's latest line (or with no line at all). This attempt's line counts them, once."""
    for execution in trace.executions:
        if execution.resumed and not execution.cache_hit:
            ended = execution.ended_at or execution.started_at
            execution.unbilled = counted_until is None or ended > counted_until


def _larger(budget: float) -> str:
    """A budget to suggest for continuing: twice this one, as a short number."""
    return f"{budget * 2:g}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _outputs(values: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Flow outputs for the manifest: media as paths relative to ``root``."""

    def simple(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("type") in ("image", "audio", "video") and "path" in value:
                return value["path"]
            return {k: simple(v) for k, v in value.items()}
        if isinstance(value, list):
            return [simple(v) for v in value]
        return value

    return {name: simple(jsonable(value, root=root)) for name, value in values.items()}


def _uris(values: Mapping[str, Any]) -> dict[str, Any]:
    """Where the media outputs are kept in object storage (``--media-store``): the
    manifest's ``uris``, shaped like its ``outputs``; empty when nothing is stored."""

    def find(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("type") in ("image", "audio", "video"):
                return value.get("uri")
            found = {k: v for k, v in ((k, find(v)) for k, v in value.items()) if v}
            return found or None
        if isinstance(value, list):
            items = [find(v) for v in value]
            return items if any(items) else None
        return None

    found = {name: find(jsonable(value)) for name, value in values.items()}
    return {k: v for k, v in found.items() if v}


def _first_image(outputs: Mapping[str, Any], folder: str) -> str | None:
    """Path (relative to OUT) of the item's first image output, for a thumbnail."""
    for value in outputs.values():
        if (
            isinstance(value, str)
            and value.startswith(folder + "/")
            and value.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif"))
        ):
            return value
    return None


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
        """What the batch report needs of a manifest line (kept in memory per item)."""
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
        )
        return {k: record.get(k) for k in keep}

    def remember(self, state: ManifestState) -> None:
        for item_id, record in state.latest.items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                ended = datetime.fromisoformat(str(record["ended_at"]).replace("Z", "+00:00"))
                self.counted_until[item_id] = ended.timestamp()
        for record in state.latest.values():
            if isinstance(record.get("cost"), int | float):
                self.item_costs.append(float(record["cost"]))
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
        worker returns the record to the database instead)."""
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

        trace: Trace | None = None
        outputs: dict[str, Any] = {}
        uris: dict[str, Any] = {}
        error: dict[str, Any] | None = None
        try:
            result = await runner.ainvoke(
                None if again else item.inputs, thread_id=thread, resume=again, on_event=on_event
            )
            trace, outputs = result.trace, _outputs(result.outputs, self.out)
            if runner._context().store.remote:  # media in object storage: where
                uris = _uris(result.outputs)
        except FlowRunError as exc:
            trace = _load_trace(folder / "trace.json")
            failed = None
            if trace is not None:
                failed = next((e for e in reversed(trace.executions) if e.status == "failed"), None)
            message = failed.error if failed is not None and failed.error else str(exc)
            error = {"class": exc.cause_class, "node": exc.node, "message": message}
        except CalliopeError as exc:  # refused before it ran: a bad media file, a missing key
            error = {"class": error_class(exc), "node": None, "message": self.redact(str(exc))}
        except Exception as exc:  # a bug must not stop the other items; the line says what
            text = self.redact(f"{type(exc).__name__}: {exc}")
            error = {"class": "any", "node": None, "message": text}
        finally:
            for provider in in_flight.values():  # stopped mid-node
                self.release(provider)
        ended = time.time()
        if trace is not None and again:
            _mark_unbilled(trace, self.counted_until.get(item.id))
        fresh = [e for e in (trace.executions if trace else []) if not e.resumed or e.unbilled]
        calls: Counter[str] = Counter()
        for execution in fresh:
            calls.update(execution.calls)
        cost = trace_cost(trace, self.plan) if trace is not None else 0.0
        record: dict[str, Any] = {
            "id": item.id,
            "status": "failed" if error else "ok",
            "thread_id": thread,
            "flow": self.plan.spec.name,
            "source": item.source,
            "outputs": outputs,
            "error": error,
            "attempts": sum(e.attempts for e in fresh),
            "calls": dict(calls),
            "rate_limits": dict(rate_limits),
            "cost": cost,
            "started_at": _iso(started),
            "ended_at": _iso(ended),
            "seconds": round(ended - started, 3),
            "resumed": again,
        }
        if uris:  # media kept in object storage: where (an addition to the outputs' paths)
            record["uris"] = uris
        if append:
            self.manifest.append(record)
        if self.item_reports and trace is not None:
            self.item_report(trace, folder)
        record["thumb"] = _first_image(outputs, item.id)
        return record

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
            "wall_time": round(s.elapsed, 2),
            "budget": self.budget,
            "budget_message": self.budget_message,
            "rate_limited": dict(s.rate_limited),
        }


async def _has_thread(saver: Any, thread: str) -> bool:
    return await saver.aget_tuple({"configurable": {"thread_id": thread}}) is not None


def _load_trace(path: Path) -> Trace | None:
    try:
        return Trace.load(path)
    except Exception:
        return None


_frozen_batches = 0  # batches of this process running with the heap frozen


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """The objects alive when a batch starts (modules, the catalog, the stores) kept out of
    the garbage collector's full passes while it runs (``gc.freeze``), given back after.

    A full pass otherwise walks the whole interpreter heap: 100 ms here, against 20 ms for
    what a batch allocates. A pause that long between the limiter's admission of a call and
    its arrival at the provider packs 11 calls into a provider's 1-s window, and Stability
    answers that with a 60-s block. Reference counting still frees frozen objects; only a
    frozen object that dies in a reference cycle meanwhile waits for the unfreeze.
    """
    global _frozen_batches
    if _frozen_batches == 0:
        gc.freeze()
    _frozen_batches += 1
    try:
        yield
    finally:
        _frozen_batches -= 1
        if _frozen_batches == 0:
            gc.unfreeze()


def _plan_of(flow: Flow | Plan) -> Plan:
    plan = getattr(flow, "plan", None)
    return plan() if callable(plan) else flow  # type: ignore[return-value]


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
    if out.is_dir():  # a folder another batch is running in: refused before its manifest
        with OutDirLock(out, thread_id=f"batch of {name}"):  # is read (held again below)
            pass
    state = batch.manifest.read()
    if state.lines and not batch.resume:
        raise ConfigurationError(
            f"{out} already holds a batch ({state.lines} manifest lines in "
            f"{batch.manifest.path}): pass --resume (resume=True) to continue it, or choose "
            "another output folder."
        )
    other = sorted(state.flows - {name})
    if other:
        raise ConfigurationError(
            f"{out} holds a batch of flow {other[0]!r}, not {name!r}: resume it with that flow, "
            "or choose another output folder."
        )
    stream = iter_items(items, plan.spec)  # a missing or unknown source fails here, early
    prepare_out_dir(out)  # a bad folder is a ConfigurationError naming it and the fix
    batch.budget = _remembered_budget(out, batch.budget, resume=batch.resume)
    batch.remember(state)
    batch.stats.total = count_items(items)

    ctx = options.get("ctx")
    own_ctx: RunContext | None = None
    if ctx is None:  # one context for the batch, from its session: every item shares it
        session = session_of(options)
        ctx = own_ctx = session.run_context(
            out,
            catalog=plan.catalog,
            media_store=options.get("media_store")
            or session.media_store
            or os.environ.get("CALLIOPE_MEDIA_STORE"),
        )
    batch._secrets = ctx.keys.secrets()
    input_error: BatchInputError | None = None
    tasks: set[asyncio.Task[dict[str, Any]]] = set()
    slots = asyncio.Semaphore(batch.concurrency)
    try:
        async with contextlib.AsyncExitStack() as held:
            # One batch process per folder: a second one would run the same items and
            # interleave the manifest. The items' folders are then not locked one by one.
            held.enter_context(OutDirLock(out, thread_id=f"batch of {name}"))
            batch.local = True
            batch.journal = JournalDB.open(out / JOURNAL_NAME)
            if batch.journal is not None:
                held.callback(batch.journal.close)
            saver = await held.enter_async_context(
                open_sqlite(out / CHECKPOINTS_NAME, checkpoint_serializer(plan))
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
                durability=options.get("durability", BATCH_DURABILITY),
            )

            async def run_and_count(item: Item) -> dict[str, Any]:
                # Counted in the item's own task, right after its manifest line: a done
                # callback runs a turn later, after other items may have appended theirs.
                record = await batch.run_item(root, saver, item)
                batch.finished(record)
                return record

            def done(task: asyncio.Task[dict[str, Any]]) -> None:
                tasks.discard(task)
                slots.release()

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
                    if batch.over_budget():
                        slots.release()
                        stopped = True
                        batch.emit("budget_stop", message=batch.budget_message)
                        batch.not_started.append((item.id, item.source))
                        batch.stats.not_started += 1
                        continue
                    batch.stats.running += 1
                    task = asyncio.create_task(run_and_count(item))
                    tasks.add(task)
                    task.add_done_callback(done)
            except BatchInputError as exc:
                input_error = exc
            except OSError as exc:  # the inputs file went away or cannot be read mid-way
                input_error = BatchInputError(f"Cannot read the batch inputs: {exc}")
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
    return summary


#: The batch folder's settings file: the budget it was started (or last resumed) with.
SETTINGS_NAME = "batch-settings.json"


def _remembered_budget(out: Path, budget: float | None, *, resume: bool) -> float | None:
    """The budget to hold: the one given (remembered in the folder for later resumes), else
    on a resume the one the batch was started with — a resume never spends without limit
    because ``--budget`` was left off."""
    path = out / SETTINGS_NAME
    if budget is not None:
        write_atomic(path, json.dumps({"budget": budget}))
        return budget
    if not resume or not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8")).get("budget")
    except (OSError, ValueError, AttributeError):
        return None
    return float(saved) if isinstance(saved, int | float) and not isinstance(saved, bool) else None


def _summary(batch: _Batch, report: Path | None, error: BatchInputError | None) -> BatchSummary:
    s = batch.stats
    failures: Counter[str] = Counter()
    for record in batch.records.values():
        err = record.get("error")
        if record.get("status") == "failed" and isinstance(err, dict):
            where = f" at {err['node']}" if err.get("node") else ""
            failures[f"{err.get('class')}{where}"] += 1
    return BatchSummary(
        flow=batch.plan.spec.name,
        out_dir=batch.out,
        manifest=batch.manifest.path,
        report=report,
        total=s.ok + s.failed + s.not_started,
        ok=s.ok,
        failed=s.failed,
        skipped=s.skipped,
        ran=s.ran,
        not_started=[i for i, _ in batch.not_started],
        cost=s.spent,
        cost_this_run=s.spent_this_run,
        unpriced=s.unpriced,
        calls=dict(s.calls),
        rate_limited=dict(s.rate_limited),
        wall_time=s.elapsed,
        budget=batch.budget,
        budget_stopped=bool(batch.budget_message),
        budget_message=batch.budget_message,
        failures=dict(failures.most_common()),
        input_error=str(error) if error is not None else None,
    )
