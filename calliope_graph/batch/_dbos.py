"""The DBOS batch engine: items as DBOS workflows on one queue, run by any number of workers.

    calliope-graph batch FLOW --inputs FILE --engine dbos --db postgresql://... --out SHARED
    calliope-graph worker --db postgresql://... --out SHARED          # on every machine

**The follower** (:func:`~._follow.follow_batch`, ``batch --engine dbos``, in ``_follow.py``)
enqueues one workflow per item on the queue :data:`QUEUE` and appends each finished item's
record to ``SHARED/batch.jsonl``.

**A worker** (:func:`run_worker`, ``calliope-graph worker``) launches DBOS, which dequeues
workflows; each runs one item through the flow's :class:`~calliope_graph.flow.run.FlowRunner`
on thread ``batch-<item id>`` with the LangGraph checkpoints in the same database (Postgres:
``AsyncPostgresSaver``; SQLite: ``SHARED/checkpoints.sqlite``) and the output journal in the
item's folder. The LangGraph run is not split into DBOS steps: DBOS gives item-level
durability and recovery, the checkpoints and the journal give node-level resume. A worker
killed with ``kill -9`` loses its life lock (:mod:`._shared`); at their next heartbeat the
other workers hand its pending workflows back to the queue (freeing its slots of the global
concurrency), and they run again from the top and continue the item's thread, so completed
nodes are not paid again. Provider limits hold across workers through the shared windows of
:mod:`._shared`.

DBOS with SQLite (``--db sqlite:///file``, the default ``SHARED/dbos.sqlite``) is the
single-machine form: the same commands, without a Postgres server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbos import DBOS
from dbos._serialization import WorkflowSerializationFormat
from typing_extensions import Unpack

from calliope_graph.batch._housekeeping import _has_thread
from calliope_graph.batch._items import Item, thread_id_for
from calliope_graph.batch._local import (
    BatchOptions,
    _Batch,
    _plan_of,
)
from calliope_graph.batch._options import WorkerOptions
from calliope_graph.batch._shared import LifeLock, SharedWindows, is_postgres, sqlite_file
from calliope_graph.context import RunContext
from calliope_graph.errors import DiskFullError, disk_full
from calliope_graph.flow._checkpoints import checkpointer_from_url
from calliope_graph.flow._journal import JOURNAL_NAME, JournalDB
from calliope_graph.flow.run import FlowRunner, checkpoint_serializer
from calliope_graph.session import Session

if TYPE_CHECKING:
    from calliope_graph.flow.builder import Flow
    from calliope_graph.flow.validate import Plan

__all__ = ["APP", "QUEUE", "WORKFLOW", "db_url", "run_worker"]

log = logging.getLogger(__name__)

APP = "calliope-graph"
QUEUE = "calliope-batch"
WORKFLOW = "calliope_batch_item"
#: Workers only dequeue workflows enqueued for their application version: one fixed value.
APP_VERSION = "calliope-graph-batch-1"
TERMINAL = ["SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]
POLL_INTERVAL = 0.5


def db_url(db: str | None, out: Path) -> str:
    """The DBOS system database URL: Postgres as given, a SQLite path as ``sqlite:///``;
    default ``OUT/dbos.sqlite`` (one machine)."""
    if not db:
        return f"sqlite:///{(out / 'dbos.sqlite').absolute()}"
    if is_postgres(db):
        return db
    return f"sqlite:///{sqlite_file(db).expanduser().absolute()}"


def _batch_id(out: Path, flow: str) -> str:
    digest = hashlib.sha256(f"{out.absolute()}\0{flow}".encode()).hexdigest()
    return f"cb{digest[:10]}"


def _flow_ref(flow: Flow | Plan | str) -> str:
    """What a worker loads the flow from: a shipped flow's name or an absolute file path."""
    if isinstance(flow, str):
        path = Path(flow)
        return str(path.absolute()) if path.is_file() else flow
    return _plan_of(flow).spec.name  # a shipped flow (a file: pass flow_ref=its path)


# -- the worker ------------------------------------------------------------------------------------
@dataclass
class _Engine:
    """One flow in a worker: its plan, compiled runner, checkpointer and record builder."""

    plan: Plan
    batch: _Batch
    root: FlowRunner
    saver: Any


class _Worker:
    def __init__(
        self,
        url: str,
        out: Path,
        *,
        ctx_for: Callable[[Plan], RunContext],
        stack: contextlib.AsyncExitStack,
        options: BatchOptions,
    ) -> None:
        self.url = url
        self.out = out
        self.ctx_for = ctx_for
        self.stack = stack
        self.options = options
        self.engines: dict[str, _Engine] = {}
        self._lock = asyncio.Lock()
        self.executor_id = ""
        self.on_record: Callable[[dict[str, Any]], None] | None = None

    async def engine(self, ref: str) -> _Engine:
        async with self._lock:
            if ref not in self.engines:
                from calliope_graph.flow import Flow

                plan = Flow.load(ref).plan()
                saver = await self.stack.enter_async_context(_saver(self.url, self.out, plan))
                root = FlowRunner(
                    plan,
                    out_dir=self.out,
                    ctx=self.ctx_for(plan),
                    checkpointer=saver,
                    cache=False,
                    trace_file=True,
                    durability=self.options.get("durability", "async"),
                )
                batch = _Batch(plan, self.out, self.options)
                batch._secrets = root._context().keys.secrets()
                self.engines[ref] = _Engine(plan, batch, root, saver)
            return self.engines[ref]

    async def run(self, job: Mapping[str, Any]) -> dict[str, Any]:
        engine = await self.engine(str(job["flow"]))
        item = Item(str(job["id"]), dict(job["inputs"]), str(job.get("source", "")))
        journal = self.out / item.id / JOURNAL_NAME
        thread = thread_id_for(item.id)
        again = await _has_thread(engine.saver, thread) or await asyncio.to_thread(
            _journal_started, journal, thread
        )
        record = await engine.batch.run_item(
            engine.root, engine.saver, item, again=again, append=False
        )
        if record["status"] == "stopped":  # a full disk: no item of the batch starts after
            await _stop_batch()
        error = record.get("error") or {}
        if again and "Nothing to resume" in str(error.get("message", "")):
            record = await engine.batch.run_item(
                engine.root, engine.saver, item, again=False, append=False
            )
        record["worker"] = self.executor_id
        if self.on_record is not None:
            self.on_record(record)
        clean: dict[str, Any] = json.loads(json.dumps(record, default=str))
        return clean


async def _stop_batch() -> None:
    """This workflow's item found the disk full: cancel the items of its batch still waiting
    in the queue (before this one's slot frees), as a local batch starts none after it (the
    follower records them as not started; ``--resume`` runs them; see ``_follow.py``)."""
    workflow = DBOS.workflow_id
    if not workflow:
        return
    # In a thread of the loop's own pool, outside the workflow's context (not steps): DBOS's
    # *_async forms would make its pool the loop's default, gone after DBOS.destroy.
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, cancel_waiting, DBOS, workflow.partition("-")[0] + "-")
    except Exception as exc:  # (the database's own disk full): the item's record still goes
        log.warning("The batch's waiting items were not cancelled (%s): they may start.", exc)


def cancel_waiting(api: Any, prefix: str) -> None:
    """Cancel the workflows of batch ``prefix`` still waiting in the queue (none has started);
    ``api``: ``DBOS`` in a worker, a ``DBOSClient`` in the follower."""
    waiting = api.list_workflows(
        workflow_id_prefix=prefix, status="ENQUEUED", load_input=False, load_output=False
    )
    if waiting:
        api.cancel_workflows([s.workflow_id for s in waiting])


def _journal_started(path: Path, thread: str) -> bool:
    """Whether the item's journal recorded the start of a run on ``thread`` (a resume can
    continue it). Not merely whether the file exists: a worker killed after creating the file
    and before journaling the run's inputs left a journal a resume refuses ("not in the
    checkpoint store"), which failed the item when another worker recovered it."""
    if not path.is_file():
        return False
    db = JournalDB.open(path)
    if db is None:
        return False
    try:
        return db.started(thread)
    finally:
        db.close()


_WORKER: _Worker | None = None


@DBOS.workflow(name=WORKFLOW, serialization_type=WorkflowSerializationFormat.PORTABLE)
async def batch_item(job: dict[str, Any]) -> dict[str, Any]:
    """One batch item as a DBOS workflow (the whole LangGraph run; see the module docstring)."""
    if _WORKER is None:
        raise RuntimeError("batch items run only in `calliope-graph worker` processes")
    return await _WORKER.run(job)


@contextlib.asynccontextmanager
async def _saver(url: str, out: Path, plan: Plan) -> Any:
    """The LangGraph checkpointer of a worker: Postgres in the batch database, else SQLite."""
    serde = checkpoint_serializer(plan)
    if is_postgres(url):  # the shared store helper: allow-list, concurrent-safe setup
        async with checkpointer_from_url(url, plan, serde=serde) as saver:
            yield saver
    else:
        # aiosqlite's saver, not open_sqlite's on the loop's thread: every worker process
        # writes this one file, so a statement may wait for another's commit, and that wait
        # must not stop the worker's event loop (its heartbeat, its calls in flight).
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with aiosqlite.connect(str(out / "checkpoints.sqlite"), timeout=30.0) as conn:
            lite = AsyncSqliteSaver(conn, serde=serde)
            await lite.setup()
            yield lite


async def run_worker(out_dir: str | Path, **options: Unpack[WorkerOptions]) -> None:
    """Process batch items from the DBOS queue until ``stop`` is set (or SIGTERM/SIGINT).

    The worker runs its items in one session (``session``, else one made from ``keys`` and
    ``simulator``: see :class:`~calliope_graph.session.SessionOptions`) whose limits take
    every request window from the batch database, so they hold for all workers together;
    no other session of the process is touched. ``media_store`` (``s3://bucket/prefix``,
    default ``$CALLIOPE_MEDIA_STORE``) keeps the items' media in object storage too.

    ``concurrency`` is the items this worker runs at once (DBOS ``worker_concurrency`` of the
    queue). Every ``heartbeat`` seconds the worker says it is alive and recovers the pending
    items of workers silent for ``dead_after`` seconds (see :class:`WorkerOptions`).
    """
    try:
        await _serve(out_dir, **options)
    except Exception as exc:  # the database's disk: one clear error, not SQLite's (exit 4)
        full = full_disk(exc, db_url(options.get("db"), Path(out_dir)), Path(out_dir))
        if full is None:
            raise
        raise full from exc


def full_disk(exc: BaseException, url: str, out: Path) -> DiskFullError | None:
    """``exc`` as the :class:`DiskFullError` of the DBOS database's folder (SQLite), else of
    the batch folder, if it is a full disk (a worker or follower meeting it outside an item)."""
    return disk_full(exc, out if is_postgres(url) else sqlite_file(url).parent)


async def _serve(out_dir: str | Path, **options: Unpack[WorkerOptions]) -> None:
    """:func:`run_worker`'s work."""
    global _WORKER
    from calliope_graph._outdir import prepare_out_dir

    out = Path(out_dir)
    prepare_out_dir(out)
    url = db_url(options.get("db"), out)
    session = _worker_session(options)
    windows = SharedWindows(url)
    await asyncio.to_thread(windows.setup)
    session.limits.share(windows)
    contexts: list[RunContext] = []
    media_store = options.get("media_store") or os.environ.get("CALLIOPE_MEDIA_STORE")

    def ctx_for(plan: Plan) -> RunContext:
        ctx = options.get("ctx")
        if ctx is not None:
            return ctx
        ctx = session.run_context(out, catalog=plan.catalog, media_store=media_store)
        contexts.append(ctx)
        return ctx

    concurrency = options.get("concurrency")
    heartbeat = options.get("heartbeat", 2.0)
    dead_after = options.get("dead_after", 15.0)
    echo = options.get("echo")
    on_record = options.get("on_record")
    stop = options.get("stop")
    executor_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    life = LifeLock(url, executor_id)
    await asyncio.to_thread(life.hold)  # before the first heartbeat: a row has a lock to test
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        worker = _Worker(url, out, ctx_for=ctx_for, stack=stack, options={"report": False})
        worker.executor_id = executor_id
        worker.on_record = on_record
        _WORKER = worker
        await asyncio.to_thread(
            windows.beat, executor_id, socket.gethostname(), os.getpid()
        )  # alive before it takes any item
        DBOS(
            config={
                "name": APP,
                "system_database_url": url,
                "executor_id": executor_id,
                "application_version": APP_VERSION,
                "log_level": "WARNING",
                "sys_db_pool_size": 10,
            }
        )
        try:
            DBOS.launch()  # from this loop: DBOS runs the async workflows on it
            if concurrency:
                await asyncio.to_thread(_set_worker_concurrency, concurrency)
            if echo is not None:
                echo(f"worker {executor_id} on {_shown(url)}  out {out}")

            await _beat_until(stop, windows, life, executor_id, dead_after, heartbeat, echo)
        finally:
            # Items still running stay PENDING under this executor: once it has left the
            # heartbeat table and let go of its life lock, the other workers recover them at
            # their next heartbeat (or this executor's next start does).
            DBOS.destroy(workflow_completion_timeout_sec=0)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(windows.leave, executor_id)
            _WORKER = None
            for ctx in contexts:
                with contextlib.suppress(Exception):
                    await ctx.aclose()
            session.limits.share(None)
            windows.close()
            await asyncio.to_thread(life.release)  # last: until now its items may still run


async def _beat_until(
    stop: asyncio.Event,
    windows: SharedWindows,
    life: LifeLock,
    executor_id: str,
    dead_after: float,
    heartbeat: float,
    echo: Callable[[str], None] | None,
) -> None:
    """Every ``heartbeat`` seconds until ``stop``: hold the life lock (again if its connection
    was lost), beat, and hand the items of stopped workers back to the queue."""
    while not stop.is_set():
        await asyncio.to_thread(life.hold)
        await asyncio.to_thread(windows.beat, executor_id, socket.gethostname(), os.getpid())
        try:
            await asyncio.to_thread(_recover_orphans, windows, executor_id, dead_after, echo)
        except Exception as exc:  # retried at the next heartbeat
            # Not the end of this worker: stopping would leave its own items PENDING.
            log.warning("recovering stopped workers' items failed (retried): %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), heartbeat)


def _recover_orphans(
    windows: SharedWindows, me: str, dead_after: float, echo: Callable[[str], None] | None
) -> list[str]:
    """Hand the items of every executor that is not alive back to the queue (DBOS re-enqueues
    them: their slots of the queue's global concurrency are free at once).

    Orphans are found from the PENDING workflows, not from the heartbeat rows: an executor
    whose row is gone (a clean stop with items running, a crash between a recovery and the
    row's removal) would otherwise keep its items PENDING, and their slots, for ever. The
    workflows are listed *before* the live workers are read: an executor that owns one was in
    the heartbeat table before it dequeued it, so a worker that starts meanwhile is never
    taken for dead.
    """
    pending = DBOS.list_workflows(
        status="PENDING", queue_name=QUEUE, load_input=False, load_output=False
    )
    owners = {s.executor_id for s in pending if s.executor_id and s.executor_id != me}
    alive = windows.live_workers(dead_after, me, owners)
    dead = sorted(owners - alive)
    for executor in dead:
        handles = recover_pending_workflows([executor])
        if echo is not None:
            echo(f"recovered {len(handles)} item(s) of stopped worker {executor}")
    return dead


def recover_pending_workflows(executors: list[str]) -> list[Any]:
    """Re-enqueue the PENDING workflows of ``executors`` (they are dead) on their queue.

    DBOS's private ``DBOS._recover_pending_workflows`` (what its startup recovery and
    Conductor's recovery run): its re-enqueue matches only rows still PENDING *under those
    executors*, so a workflow a live worker has dequeued meanwhile is left alone, and it keeps
    the workflow's queue (its global concurrency). The public ``DBOS.resume_workflow`` has
    neither guard (it would re-enqueue a workflow a live worker runs: a double run), and the
    admin server's recovery endpoint is not in the dbos 3.x package. So the dbos version is
    pinned (``pyproject.toml``) and ``tests/test_dbos.py`` checks this method's signature and
    guard on every run.
    """
    handles: list[Any] = DBOS._recover_pending_workflows(executors)
    return handles


def _worker_session(options: WorkerOptions) -> Session:
    """The worker's session: the one given, else one of its own (its own limits, whose
    windows the worker shares through the batch database) with the given keys/simulator."""
    given = options.get("session")
    if given is not None:
        return given.derive(keys=options.get("keys"), simulator=options.get("simulator"))
    return Session(keys=options.get("keys"), simulator=options.get("simulator"))


def _set_worker_concurrency(concurrency: int) -> None:
    queue = DBOS.retrieve_queue(QUEUE)
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=concurrency,
        global_concurrency=queue.concurrency if queue is not None else None,
        polling_interval_sec=POLL_INTERVAL,
        on_conflict="always_update",
    )


def _shown(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.partition(":")[0]
        return f"{scheme}://{user}:***@{host}"
    return url
