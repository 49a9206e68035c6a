"""The follower of the DBOS batch engine (``batch --engine dbos``): enqueue, follow, record.

:func:`follow_batch` enqueues one workflow per item (workflow id ``<batch id>-<item id>``, so
enqueueing again is a no-op) on the queue :data:`~._dbos.QUEUE` (its ``global_concurrency``
is the batch's ``--concurrency``, across every worker), then polls the workflows' statuses
and appends each finished item's record (the workflow's result, stored by DBOS) to
``SHARED/batch.jsonl`` — through the local batch's :class:`~._local._Batch`, whose manifest,
counts and ``batch.html`` it shares. Stopping and restarting it loses nothing: the items are
in the database, finished ones are appended once (the manifest says which).

**A full disk** stops a DBOS batch as it stops a local one (``_Batch.disk_full``,
:func:`~._housekeeping.stop_full`): the worker whose item found the disk full returns a
``stopped`` record and cancels the batch's items still waiting in the queue before its slot
frees (``_dbos._stop_batch``), so no item starts after it; the items running finish. The
stopped item and the cancelled ones get no manifest line (a manifest line the disk refuses
stops the batch the same way), and the follower ends with the one
:class:`~calliope_graph.errors.DiskFullError` (exit 4) after its summary. Following again
(``batch --engine dbos --resume``) enqueues each item without a line whose last workflow was
stopped or cancelled as a new attempt (``<batch id>-<item id>~<n>``): it continues the item's
thread, and its output journal replays what was paid for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbos import DBOS, DBOSClient, EnqueueOptions
from dbos._serialization import WorkflowSerializationFormat
from typing_extensions import Unpack

from calliope_graph.batch._dbos import (
    APP,
    APP_VERSION,
    POLL_INTERVAL,
    QUEUE,
    TERMINAL,
    WORKFLOW,
    _batch_id,
    _flow_ref,
    cancel_waiting,
    db_url,
    full_disk,
)
from calliope_graph.batch._housekeeping import stop_full
from calliope_graph.batch._items import Item, count_items, iter_items, thread_id_for
from calliope_graph.batch._local import BatchSummary, _Batch, _plan_of
from calliope_graph.batch._options import FollowOptions
from calliope_graph.errors import ConfigurationError, DiskFullError

if TYPE_CHECKING:
    from calliope_graph.batch._manifest import ManifestState
    from calliope_graph.flow.builder import Flow
    from calliope_graph.flow.validate import Plan

__all__ = ["follow_batch"]

#: The record status of an item that did not finish (cancelled, or stopped by a full disk):
#: no manifest line, and it runs again as a new attempt.
_UNFINISHED = "stopped"


def _client(url: str, concurrency: int) -> DBOSClient:
    DBOS.migrate(url)  # the system tables, created by whoever comes first
    client = DBOSClient(system_database_url=url, application_name=APP)
    existing = client.retrieve_queue(QUEUE)
    client.register_queue(
        QUEUE,
        global_concurrency=concurrency,
        worker_concurrency=existing.worker_concurrency if existing is not None else None,
        polling_interval_sec=POLL_INTERVAL,
        on_conflict="always_update",
        application_name=APP,
    )
    return client


def _failed_record(status: Any, item: Item, flow: str) -> dict[str, Any]:
    message = str(status.error or status.status)
    return {
        "id": item.id,
        "status": "failed",
        "thread_id": thread_id_for(item.id),
        "flow": flow,
        "source": item.source,
        "outputs": {},
        "error": {"class": "any", "node": None, "message": f"workflow {status.status}: {message}"},
        "attempts": 0,
        "calls": {},
        "rate_limits": {},
        "cost": 0.0,
        "started_at": None,
        "ended_at": None,
        "seconds": None,
        "resumed": False,
    }


async def follow_batch(
    flow: Flow | Plan,
    items: str | Path | Iterable[Mapping[str, Any] | Item],
    out_dir: str | Path,
    **options: Unpack[FollowOptions],
) -> BatchSummary:
    """Enqueue every item of ``items`` for the workers, then follow them into
    ``out_dir/batch.jsonl`` until each has finished (see the module docstring); a full disk
    ends it with :class:`DiskFullError` carrying the summary (``.summary``)."""
    plan = _plan_of(flow)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = plan.spec.name
    batch = _Batch(
        plan,
        out,
        {
            "on_progress": options.get("on_progress"),
            "report": options.get("report", True),
            "report_interval": options.get("report_interval", 5.0),
        },
    )
    state = batch.manifest.read()
    other = sorted(state.flows - {name})
    if other:
        raise ConfigurationError(
            f"{out} holds a batch of flow {other[0]!r}, not {name!r}: follow it with that flow, "
            "or choose another output folder."
        )
    batch.remember(state)
    batch.stats.total = count_items(items)
    concurrency = options.get("concurrency")
    url = db_url(options.get("db"), out)
    try:
        client = await asyncio.to_thread(_client, url, 4 if concurrency is None else concurrency)
        follower = _Follower(batch, client, _batch_id(out, name) + "-")
        try:
            await follower.enqueue(items, state, options.get("flow_ref") or _flow_ref(flow))
            await follower.follow(options.get("poll_interval", POLL_INTERVAL))
        finally:
            batch.manifest.close()
            client.destroy()
    except Exception as exc:  # the database's disk: one clear error, not SQLite's (exit 4)
        full = full_disk(exc, url, out)
        if full is None:
            raise
        raise full from exc
    summary = _summary(batch, batch.maybe_report(final=True))
    if batch.disk_full is not None:  # one clear error (exit 4), with what the batch did
        batch.disk_full.summary = summary
        raise batch.disk_full
    return summary


class _Follower:
    """One follower's items: enqueued, then recorded as their workflows end."""

    def __init__(self, batch: _Batch, client: DBOSClient, prefix: str) -> None:
        self.batch = batch
        self.client = client
        self.prefix = prefix
        self.pending: dict[str, Item] = {}  # workflow id -> item

    async def enqueue(
        self, items: str | Path | Iterable[Mapping[str, Any] | Item], state: ManifestState, ref: str
    ) -> None:
        """Enqueue (or find again) the workflow of each item that has no manifest line."""
        batch, stats = self.batch, self.batch.stats
        earlier = await asyncio.to_thread(self._attempts)
        for item in iter_items(items, batch.plan.spec):
            if item.id in state.latest:
                record = state.latest[item.id]
                stats.skipped += 1
                if record.get("status") == "ok":
                    stats.ok += 1
                else:
                    stats.failed += 1
                batch.records[item.id] = batch.slim(record)
                continue
            workflow_id, again = earlier.get(item.id, (self.prefix + item.id, False))
            self.pending[workflow_id] = item
            if not again and item.id in earlier:
                continue  # enqueued by an earlier follower: followed, not enqueued again
            job = {
                "flow": ref,
                "id": item.id,
                "inputs": json.loads(json.dumps(item.inputs, default=str)),
                "source": item.source,
            }
            enqueue: EnqueueOptions = {
                "queue_name": QUEUE,
                "workflow_name": WORKFLOW,
                "workflow_id": workflow_id,
                "app_version": APP_VERSION,
                "serialization_type": WorkflowSerializationFormat.PORTABLE,
            }
            await asyncio.to_thread(self.client.enqueue, enqueue, job)
        stats.running = len(self.pending)
        for item in self.pending.values():
            batch.emit("item_started", item_id=item.id, message=item.source)

    def _attempts(self) -> dict[str, tuple[str, bool]]:
        """Item id -> (the workflow id to follow it by, whether that is a new attempt to
        enqueue): an item whose last workflow was cancelled, or stopped by a full disk, runs
        again as ``<item id>~<n + 1>``; any other is followed as it is."""
        found = self.client.list_workflows(
            workflow_id_prefix=self.prefix, load_input=False, load_output=False
        )
        last: dict[str, tuple[int, Any]] = {}
        for status in found:
            item_id, _, attempt = status.workflow_id[len(self.prefix) :].partition("~")
            number = int(attempt) if attempt.isdigit() else 1
            if number >= last.get(item_id, (0, None))[0]:
                last[item_id] = (number, status)
        done = [s.workflow_id for _, s in last.values() if s.status == "SUCCESS"]
        ended = self.client.list_workflows(workflow_ids=done, load_input=False) if done else []
        outputs = {s.workflow_id: s.output for s in ended}
        attempts: dict[str, tuple[str, bool]] = {}
        for item_id, (number, status) in last.items():
            output = outputs.get(status.workflow_id)
            stopped = isinstance(output, dict) and output.get("status") == _UNFINISHED
            if status.status == "CANCELLED" or stopped:
                attempts[item_id] = (f"{self.prefix}{item_id}~{number + 1}", True)
            else:
                attempts[item_id] = (status.workflow_id, False)
        return attempts

    async def follow(self, poll_interval: float) -> None:
        """Record each item as its workflow ends, until none is pending."""
        while self.pending:
            done = await asyncio.to_thread(
                self.client.list_workflows,
                workflow_id_prefix=self.prefix,
                status=TERMINAL,
                load_input=False,
                load_output=False,
            )
            new = [s.workflow_id for s in done if s.workflow_id in self.pending]
            if not new:
                await asyncio.sleep(poll_interval)
                continue
            ended = await asyncio.to_thread(
                self.client.list_workflows, workflow_ids=new, load_input=False
            )
            for status in ended:
                await self._ended(status, self.pending.pop(status.workflow_id))

    async def _ended(self, status: Any, item: Item) -> None:
        """Record the item of a workflow that ended: its manifest line, or none when it did
        not finish (cancelled, or stopped by a full disk: it runs again on resume)."""
        batch, output = self.batch, status.output
        if status.status == "SUCCESS" and isinstance(output, dict):
            record = dict(output)
        elif status.status == "CANCELLED":
            record = {"id": item.id, "source": item.source, "status": _UNFINISHED}
        else:
            record = _failed_record(status, item, batch.plan.spec.name)
        if record.get("status") == _UNFINISHED and status.status != "CANCELLED":
            error = record.get("error") or {}
            folder = Path(error.get("folder") or batch.out / item.id)
            full = DiskFullError(error.get("message"), folder=folder, needed=error.get("needed"))
            stop_full(batch, full, folder)
        if record.get("status") != _UNFINISHED and not batch._append(record):
            record["status"] = _UNFINISHED  # the disk refused its line (stop_full)
        if batch.disk_full is not None:  # no item starts after it (the worker's cancel too)
            await asyncio.to_thread(cancel_waiting, self.client, self.prefix)
        record["thumb"] = _thumb(record, item.id)
        batch.finished(record)


def _thumb(record: Mapping[str, Any], folder: str) -> str | None:
    from calliope_graph.batch._records import _first_image

    return _first_image(record.get("outputs") or {}, folder)


def _summary(batch: _Batch, report: Path | None) -> BatchSummary:
    from calliope_graph.batch._records import _summary as local_summary

    return local_summary(batch, report, None)
