"""The options of a batch, its DBOS workers and its follower: one type per concern.

:class:`BatchOptions` extends :class:`~calliope_graph.session.SessionOptions` (the session
the items run in: ``session``, ``keys``, ``simulator``, ``ctx``, ``media_store``), the base
that a single run's :class:`~calliope_graph.flow.run.RunOptions` extends too; the worker
(:class:`WorkerOptions`) and the follower (:class:`FollowOptions`) extend
:class:`BatchOptions`, so a key means the same in every one of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from calliope_graph.session import SessionOptions

if TYPE_CHECKING:
    from calliope_graph.batch._local import BatchEvent
    from calliope_graph.flow.run import Durability

__all__ = ["BatchOptions", "FollowOptions", "WorkerOptions"]


class BatchOptions(SessionOptions, total=False):
    """Options of :func:`run_batch` (and ``Flow.abatch`` / ``Flow.batch``); the DBOS worker
    and follower take them too (:class:`~calliope_graph.batch.WorkerOptions`,
    :class:`~calliope_graph.batch.FollowOptions`).

    The session the items run in — ``session``, ``keys``, ``simulator``, ``ctx`` (each item
    gets a copy whose media store is its own folder), ``media_store`` (each item's media
    under ``<prefix>/batch-<item id>/``) — comes from
    :class:`~calliope_graph.session.SessionOptions`, as for one run.
    """

    concurrency: int | None
    """Items running at once (default, or None: 4; a worker's default: the queue's)."""
    resume: bool
    """Continue the batch in ``out_dir``: skip ok items, continue failed/interrupted ones."""
    retry_failed: bool
    """Run only the items whose latest manifest line is ``failed`` (implies ``resume``)."""
    budget: float | None
    """USD: stop starting items when the spend would pass it (items left are not started)."""
    on_progress: Callable[[BatchEvent], None] | None
    """Called with each :class:`BatchEvent` (item started/finished, node events, ...)."""
    report: bool
    """Write ``batch.html`` (default True)."""
    item_reports: bool
    """Write each item's ``report.html`` beside its ``trace.json`` (default True; about
    15 ms of CPU per item — ``calliope-graph report OUT/<id>/trace.json`` makes one later)."""
    report_interval: float
    """Shortest time in seconds between two rewrites of ``batch.html`` during the run."""
    durability: Durability
    """When items' checkpoints are saved (default ``"exit"``: when an item stops; the output
    journal keeps what a killed item paid for). ``"async"``/``"sync"``: after every step too,
    so a killed item also keeps its free steps."""


class _DbosOptions(BatchOptions, total=False):
    db: str | None
    """The batch database: a PostgreSQL URL, or SQLite in the output folder (default)."""


class WorkerOptions(_DbosOptions, total=False):
    """Options of :func:`~calliope_graph.batch._dbos.run_worker` (``calliope-graph worker``):
    :class:`BatchOptions` (``concurrency``: the items this worker runs at once, default the
    queue's) plus the worker's own."""

    heartbeat: float
    """Seconds between two "alive" beats (default 2)."""
    dead_after: float
    """Seconds without a beat after which a worker's items are recovered (default 15)."""
    stop: asyncio.Event | None
    """Stop when set (default: on SIGTERM/SIGINT)."""
    on_record: Callable[[dict[str, Any]], None] | None
    """Called with each item's manifest record as the worker finishes it."""
    echo: Callable[[str], None] | None
    """Called with each line the worker has to say (started, recovered items)."""


class FollowOptions(_DbosOptions, total=False):
    """Options of :func:`~calliope_graph.batch._follow.follow_batch` (``batch --engine
    dbos``): :class:`BatchOptions` (``concurrency``: items running at once over all
    workers, default 4) plus the follower's own."""

    flow_ref: str | None
    """How workers load the flow (a shipped name or a path; default: from ``flow``)."""
    poll_interval: float
    """Seconds between two looks at the queue."""
