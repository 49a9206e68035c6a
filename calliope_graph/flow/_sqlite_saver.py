""":class:`LoopSqliteSaver`: LangGraph's ``SqliteSaver`` used from async code on the event
loop's thread, its writes made a moment after LangGraph hands them over.

Imported only when a run opens a SQLite checkpoint store
(:func:`calliope_graph.flow._checkpoints.open_sqlite`): a run without checkpoints never
loads ``langgraph.checkpoint.sqlite``.

**On the loop's thread.** LangGraph's ``AsyncSqliteSaver`` goes through aiosqlite, which
hands every statement to a thread of its own and the answer back (two thread switches and a
loop wake-up per statement): measured at 2 ms of CPU per run of a two-node graph, against
0.2 ms for the statements themselves. In WAL mode with ``synchronous=NORMAL`` a commit waits
for no fsync, so a statement holds the loop for tens of microseconds; only another process
writing the same file at that moment would make it wait longer (up to the busy timeout), and
a batch holds its folder's lock, so none does. Not a thread pool or executor of its own
either: nothing here waits on I/O long enough to pay for one.

**Writes a moment later** (:attr:`LoopSqliteSaver.queued` set: every durability but
``sync``). LangGraph saves a step's writes and checkpoint in the background and goes on
without waiting for them; on the loop's thread, "in the background" still meant before the
next node started, and those statements (0.1-0.5 ms each, two or three a step) were most of
what a step cost on the webcam story's path. So ``aput`` and ``aput_writes`` queue the call,
and the queue is written ``AFTER_NODE_DELAY`` (``calliope_graph._files``) later, in order
and in one transaction — typically while the next node waits on its provider. A read
(``get_tuple``, ``list``, ...), a delete and the store's closing write the queue first, so
nothing reads around it. A write that fails is raised by the next flush (the closing one at
the latest: the run fails, as a failed background save failed it). A kill in those
milliseconds loses what LangGraph's background saves could already lose: free work, redone
on resume — paid outputs are in the output journal (``flow/_journal.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver

from calliope_graph._files import AFTER_NODE_DELAY

__all__ = ["LoopSqliteSaver", "Queued"]


class Queued:
    """The writes a :class:`LoopSqliteSaver` holds back (shared with its clones:
    ``with_allowlist`` copies a saver, and both must drain one queue, in order)."""

    __slots__ = ("failure", "flushing", "timer", "writes")

    def __init__(self) -> None:
        #: (SqliteSaver's method, the saver that queued it — its serializer —, arguments)
        self.writes: list[tuple[Any, LoopSqliteSaver, tuple[Any, ...]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.failure: Exception | None = None
        self.flushing = False  # (its writes are one transaction: see LoopSqliteSaver.cursor)


class LoopSqliteSaver(SqliteSaver):
    """``SqliteSaver`` whose async methods run on the loop's thread (see the module)."""

    #: The writes held back; None: each is written when LangGraph hands it over.
    queued: Queued | None = None

    def flush(self) -> None:
        """Write what is queued now, in order; the first failure is raised once the rest
        were tried."""
        queued = self.queued
        if queued is None:
            return
        if queued.timer is not None:
            queued.timer.cancel()
            queued.timer = None
        failure, queued.failure = queued.failure, None
        if queued.writes:
            queued.flushing = True  # the queue's writes are one transaction (cursor below)
            try:
                while queued.writes:
                    writes, queued.writes = queued.writes, []
                    for write, saver, args in writes:
                        try:
                            write(saver, *args)
                        except Exception as exc:
                            failure = failure or exc
            finally:
                queued.flushing = False
                try:
                    self.conn.commit()
                except Exception as exc:
                    failure = failure or exc
        if failure is not None:
            raise failure

    @contextlib.contextmanager
    def cursor(self, transaction: bool = True) -> Iterator[sqlite3.Cursor]:
        # SqliteSaver commits after each statement; a flush commits once, after them all
        # (each commit appends the pages it changed to the WAL again).
        flushing = self.queued is not None and self.queued.flushing
        with SqliteSaver.cursor(self, transaction and not flushing) as cur:
            yield cur

    def _later(self, write: Any, *args: Any) -> None:
        queued = self.queued
        assert queued is not None
        queued.writes.append((write, self, args))
        if queued.timer is None:
            queued.timer = asyncio.get_running_loop().call_later(AFTER_NODE_DELAY, self._drain)

    def _drain(self) -> None:
        queued = self.queued
        assert queued is not None
        queued.timer = None
        try:
            self.flush()
        except Exception as exc:  # raised by the next flush: a read's or the closing one
            queued.failure = exc

    # -- writes: queued from async code; from sync code, made at once after the queue ------
    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        self.flush()
        return SqliteSaver.put(self, config, checkpoint, metadata, new_versions)

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        self.flush()
        SqliteSaver.put_writes(self, config, writes, task_id, task_path)

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        if self.queued is None:
            return self.put(config, checkpoint, metadata, new_versions)
        # (the checkpoint is LangGraph's copy already; its metadata dict is copied here)
        self._later(SqliteSaver.put, config, checkpoint, dict(metadata), new_versions)
        configurable = config["configurable"]
        return {  # what SqliteSaver.put returns
            "configurable": {
                "thread_id": configurable["thread_id"],
                "checkpoint_ns": configurable["checkpoint_ns"],
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self, config: Any, writes: Any, task_id: str, task_path: str = ""
    ) -> None:
        if self.queued is None:
            self.put_writes(config, writes, task_id, task_path)
        else:
            self._later(SqliteSaver.put_writes, config, [*writes], task_id, task_path)

    # -- reads and deletes: after the queue -----------------------------------------------
    def get_tuple(self, config: Any) -> Any:
        self.flush()
        return SqliteSaver.get_tuple(self, config)

    def list(
        self,
        config: Any,
        *,
        filter: dict[str, Any] | None = None,
        before: Any = None,
        limit: int | None = None,
    ) -> Any:
        self.flush()
        return SqliteSaver.list(self, config, filter=filter, before=before, limit=limit)

    def delete_thread(self, thread_id: str) -> None:
        self.flush()
        SqliteSaver.delete_thread(self, thread_id)

    def get_delta_channel_history(self, *, config: Any, channels: Any) -> Any:
        self.flush()
        return SqliteSaver.get_delta_channel_history(self, config=config, channels=channels)

    async def aget_tuple(self, config: Any) -> Any:
        return self.get_tuple(config)

    async def alist(
        self,
        config: Any,
        *,
        filter: dict[str, Any] | None = None,
        before: Any = None,
        limit: int | None = None,
    ) -> AsyncIterator[Any]:
        # Read whole before the first yield: SqliteSaver.list holds the saver's lock while
        # it iterates, and a run writing on this same thread meanwhile would then wait for
        # it forever.
        for item in [*self.list(config, filter=filter, before=before, limit=limit)]:
            yield item

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def aget_delta_channel_history(self, *, config: Any, channels: Any) -> Any:
        return self.get_delta_channel_history(config=config, channels=channels)


# LangGraph asks, at every graph and subgraph invocation, whether ``aput_writes`` takes
# ``task_path`` (inspect.signature: as costly as the rest of starting a map item's
# subgraph); a signature given once answers at once.
_method: Any = LoopSqliteSaver.aput_writes
_method.__signature__ = inspect.signature(_method)
