"""A write-ahead journal of paid node outputs: a killed run never pays twice for a node.

LangGraph saves a finished task's writes to the checkpointer in the background (with every
``durability``), so a process killed in the milliseconds after a node returns loses that
node's outputs and a resume runs — and pays for — it again. The journal closes that window:
when a node that calls a provider returns, its outputs are committed here (SQLite, WAL)
*before* LangGraph sees them; a resumed run looks each provider node up
before running it and, on a hit whose media files still exist, returns the journaled outputs
without calling the provider.

An entry's key is the thread, the node, its iteration (rewrite loops) and a hash of the
node's exact inputs as the checkpoint serializer encodes them — not LangGraph's task id,
which changes when the checkpoint the task was planned from was itself lost in the kill.
Values are encoded with the flow's allow-listed checkpoint serializer, so the journal
restores exactly the types a checkpoint may.

**Two steps to the disk.** A commit is written to the journal's WAL before the node returns:
from then on a *killed* process keeps it (the OS has the bytes). The WAL is then flushed to
the disk (``fdatasync``, what ``synchronous=FULL`` does inside each commit) in a worker
thread, so the flush overlaps the steps between nodes instead of standing between them; the
run waits for it before its next provider call starts and before it ends (and ``close``
waits for any still pending): no call is paid for while an earlier paid output could still
be lost to a power cut, and a run never returns with one.

A fresh (non-resume) run on a thread forgets
that thread's entries; a run that completes deletes them (its checkpoint holds everything).
A fresh run also journals its initial state, so a run killed before LangGraph saved its first
checkpoint (possible with ``async`` and ``exit`` durability) still resumes.

**A full disk.** A journal commit that fails for want of space raises
:class:`~calliope_graph.errors.DiskFullError` (the run stops, exit 4) instead of the warning
other journal failures give, and no node starts after it: going on would only pay for more.
First it frees a slice (:data:`SLICE`) of the reserve the journal keeps beside itself
(``journal.sqlite-reserve``, :data:`RESERVE` bytes written when it opens and there is room)
and commits into that space — another slice while that was too little — so the node's
answer is usually kept all the same, and so is the answer of a node that finds the disk full
at the same moment (it frees the next slice). Media a full disk kept from being
written (``MediaStore.save_image``, ``save_audio``, ``save_video`` and ``download`` inside a
provider node) are committed here with the outputs (table ``files``), and a resumed run
writes them back before replaying the entry — the provider is not asked again. A download
whose bytes do not fit even into the reserve (a video of many MB) keeps the URL the provider
served it at instead (table ``fetch``, when it needed no key): the resumed run fetches it
again (a download is not a paid call); a URL that has expired by then runs the node again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from calliope_graph._files import write_atomic
from calliope_graph._usage import ProviderCall
from calliope_graph.errors import DiskFullError, disk_full
from calliope_graph.media import Audio, Image, Video

if TYPE_CHECKING:
    from calliope_graph.context import RunContext

__all__ = ["JOURNAL_NAME", "Journal", "JournalDB"]

JOURNAL_NAME = "journal.sqlite"
#: Bytes of disk the journal keeps beside itself (``journal.sqlite-reserve``) and frees when
#: a commit finds the disk full, so a paid node's outputs are still kept (a few WAL pages).
RESERVE = 256 << 10
#: The smallest reserve kept when there is no room for :data:`RESERVE` (a small disk).
MIN_RESERVE = 64 << 10
#: What one commit that finds the disk full frees of the reserve before it tries again (it
#: frees another slice if that was not room enough): two nodes that find the disk full at
#: the same moment each get room, where one reserve freed whole went to the first.
SLICE = 64 << 10
_INPUTS = "~inputs"

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    thread TEXT NOT NULL,
    key TEXT NOT NULL,
    node TEXT NOT NULL,
    type TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (thread, key)
);
CREATE TABLE IF NOT EXISTS paid (
    thread TEXT NOT NULL,
    key TEXT NOT NULL,
    calls TEXT NOT NULL,
    PRIMARY KEY (thread, key)
);
CREATE TABLE IF NOT EXISTS files (
    thread TEXT NOT NULL,
    key TEXT NOT NULL,
    path TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (thread, key, path)
);
CREATE TABLE IF NOT EXISTS fetch (
    thread TEXT NOT NULL,
    key TEXT NOT NULL,
    path TEXT NOT NULL,
    url TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (thread, key, path)
)
"""
#: ``paid`` holds, per journaled node, the provider requests that made its outputs (JSON
#: ProviderCall records, with their cost): a replay after a kill carries them into the
#: resumed trace, so what was paid before the kill is still counted (batch/_local.py).
#: ``files`` holds media a full disk kept from being written (see the module docstring);
#: ``fetch`` the provider's URL of a download whose bytes did not fit either.
_TABLES = ("outputs", "paid", "files", "fetch")


class JournalDB:
    """One journal database, its connection shared by every run that writes to it (a batch
    opens one for all its items: a connection, its PRAGMAs and the schema cost more CPU
    than an item's own writes). Use from one thread — the event loop's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wal = path.with_name(path.name + "-wal")
        self._db: sqlite3.Connection | None = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit is handed to the OS (a killed process keeps it); :meth:`sync`
            # puts it on the disk — what FULL would do inside the commit, on the loop.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except BaseException:
            self.close()
            raise
        self._reserve = path.with_name(path.name + "-reserve")
        self._make_reserve()

    def _make_reserve(self) -> None:
        """Keep :data:`RESERVE` bytes of the disk for the commits a full disk would refuse
        (a paid node's outputs): :meth:`release_slice` frees them a slice at a time."""
        with contextlib.suppress(OSError):
            if self._reserve.stat().st_size >= RESERVE:
                return
        size = RESERVE
        while size >= MIN_RESERVE:  # a small disk: a smaller reserve still keeps text
            try:
                with open(self._reserve, "wb") as fh:
                    fh.write(bytes(size))
                return
            except OSError:  # no room for it now: a full disk then fails as it would without
                with contextlib.suppress(OSError):
                    self._reserve.unlink()
            size //= 2

    def release_slice(self) -> bool:
        """Free one :data:`SLICE` of the reserve (a commit failed for want of space: it
        tries again in that room, and a commit failing after it frees the next slice, so
        nodes finding the disk full together each get room); whether there was one."""
        try:
            size = self._reserve.stat().st_size
            if size > SLICE:
                os.truncate(self._reserve, size - SLICE)
            else:
                self._reserve.unlink()
        except OSError:
            return False
        return True

    def release_reserve(self) -> bool:
        """Free the whole reserve; whether there was one."""
        freed = False
        while self.release_slice():
            freed = True
        return freed

    @classmethod
    def open(cls, path: Path) -> JournalDB | None:
        """The journal at ``path``; None (with a warning) if it cannot be used — but a full
        disk raises :class:`~calliope_graph.errors.DiskFullError`: nothing is paid yet."""
        try:
            return cls(path)
        except sqlite3.Error as exc:
            full = disk_full(exc, path.parent, what=path.name)
            if full is not None:  # running without it would pay for what a resume re-pays
                raise _before_anything(full) from exc
            log.warning(
                "The output journal %s cannot be used (%s): a run killed now may pay again "
                "for nodes that had finished. Delete the file to start a new one.",
                path,
                exc,
            )
            return None

    def run(self, thread_id: str, *, serde: Any, resume: bool) -> Journal:
        """The journal of one run on ``thread_id`` (a fresh run forgets the thread's entries)."""
        return Journal(self, serde=serde, thread_id=thread_id, replay=resume)

    def started(self, thread_id: str) -> bool:
        """A run on ``thread_id`` journaled its start and has not completed (a resume of it
        continues from the journal even when LangGraph saved no checkpoint)."""
        cursor = self.execute(
            "SELECT 1 FROM outputs WHERE thread = ? AND key = ?", (thread_id, _INPUTS)
        )
        return cursor is not None and cursor.fetchone() is not None

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor | None:
        """Run one statement; None once closed."""
        return None if self._db is None else self._db.execute(sql, args)

    def sync(self) -> None:
        """Flush the WAL to the disk (``fdatasync``): every commit made so far then survives
        a power cut, not only a killed process. Safe from a worker thread (a file of its
        own, not the connection); the WAL is a file SQLite takes no locks on."""
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:  # checkpointed into the database and removed: synced then
            return
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """The transaction of a paid node's outputs: committed (a killed process keeps it)
        before it returns, on the disk once :meth:`sync` has run (its caller asks)."""
        return self._commit()

    def unsynced(self) -> contextlib.AbstractContextManager[None]:
        """The transaction of bookkeeping whose loss only costs a repeat (forgetting entries,
        a run's initial inputs): committed as :meth:`transaction`'s, never synced. (Two
        names for one commit: each kind of write is patched apart in the full-disk tests.)"""
        return self._commit()

    @contextlib.contextmanager
    def _commit(self) -> Iterator[None]:
        if self._db is None:
            yield
            return
        db = self._db
        db.execute("BEGIN")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


class Journal:
    """The output journal of one run (see the module docstring), in a :class:`JournalDB`.

    ``replay``: look entries up (a resumed run); a fresh run only writes.
    """

    def __init__(self, db: JournalDB, *, serde: Any, thread_id: str, replay: bool) -> None:
        self.db = db
        self.thread_id = thread_id
        self.replay = replay
        self._serde = serde
        self._owns_db = False
        #: flushes of paid outputs' commits still running (see :meth:`synced`)
        self._syncing: list[asyncio.Future[None]] = []

    @classmethod
    def open(cls, out_dir: Path, *, serde: Any, thread_id: str, resume: bool) -> Journal | None:
        """The journal of one run in ``out_dir`` (its own connection, closed with the run);
        None (with a warning) if it cannot be used."""
        db = JournalDB.open(out_dir / JOURNAL_NAME)
        if db is None:
            return None
        journal = db.run(thread_id, serde=serde, resume=resume)
        journal._owns_db = True
        return journal

    def key(self, node: str, iteration: int, inputs: Mapping[str, Any]) -> str | None:
        """The entry key of ``node`` run on ``inputs``; None if the inputs cannot be encoded."""
        try:
            kind, data = self._serde.dumps_typed(dict(inputs))
        except Exception:  # an input the serializer does not know: not journaled
            return None
        digest = hashlib.sha256(f"{node}\0{iteration}\0{kind}\0".encode())
        digest.update(data)
        return digest.hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The outputs journaled under ``key`` (a resumed run only), if still usable."""
        if not self.replay:
            return None
        try:
            cursor = self.db.execute(
                "SELECT type, data FROM outputs WHERE thread = ? AND key = ?",
                (self.thread_id, key),
            )
            row = None if cursor is None else cursor.fetchone()
            if row is None:
                return None
            outputs = self._serde.loads_typed((row[0], row[1]))
        except Exception as exc:
            log.warning("Ignoring an unreadable output journal entry: %s", exc)
            return None
        if not isinstance(outputs, dict):
            return None
        self._restore_files(key)
        if not _media_present(outputs):
            return None  # a media file was deleted since: run the node again
        return outputs

    async def aget(self, key: str, ctx: RunContext) -> dict[str, Any] | None:
        """:meth:`get`, first fetching again the downloads journaled as their URLs (a
        failed fetch — the URL expired — leaves the file missing: the node runs again)."""
        if not self.replay:
            return None
        try:
            cursor = self.db.execute(
                "SELECT path, url, size FROM fetch WHERE thread = ? AND key = ?",
                (self.thread_id, key),
            )
            rows = [] if cursor is None else cursor.fetchall()
        except sqlite3.Error:
            rows = []
        for path, url, size in rows:
            if not Path(path).is_file():
                await _fetch(ctx, Path(path), url, size)
        return self.get(key)

    def _restore_files(self, key: str) -> None:
        """Write the media of ``key`` that a full disk kept from being written (still full:
        DiskFullError, and the entry stays for the next resume)."""
        try:
            cursor = self.db.execute(
                "SELECT path, data FROM files WHERE thread = ? AND key = ?", (self.thread_id, key)
            )
            rows = [] if cursor is None else cursor.fetchall()
        except sqlite3.Error as exc:
            log.warning("Ignoring unreadable journaled media: %s", exc)
            return
        for path, data in rows:
            if not Path(path).is_file():
                write_atomic(path, data)

    def put(
        self,
        key: str,
        node: str,
        outputs: Mapping[str, Any],
        calls: Sequence[ProviderCall] = (),
        files: Mapping[str, bytes] | None = None,
        *,
        flush: bool = True,
    ) -> None:
        """Commit ``outputs`` under ``key`` (before the node returns to LangGraph), with the
        requests that made them (and their cost) in the same transaction: a kill can keep
        both or neither, never outputs whose cost a resumed run would then not count.
        ``files``: media not written for want of space (path to bytes), kept with them.
        ``flush``: put the commit on the disk before returning; else in a worker thread,
        awaited by :meth:`synced` (inside a running event loop only).
        A full disk raises :class:`DiskFullError`; other failures only warn."""
        try:
            self._put(key, node, outputs, calls, files)
            if flush:
                self.db.sync()
            else:
                self._syncing.append(asyncio.ensure_future(asyncio.to_thread(self.db.sync)))
        except Exception as exc:  # never fail a node that has been paid for, but a full disk
            what = f"the outputs of node {node!r}"
            full = disk_full(exc, self.db.path.parent, needed=_size(outputs, files), what=what)
            if full is None:
                log.warning("Node %r: its outputs were not journaled (%s).", node, exc)
                return
            kept = self._put_in_reserve(key, node, outputs, calls, files)
            if kept:
                full = DiskFullError(folder=full.folder, needed=full.needed, what=what + kept)
            raise full from exc

    def _put_in_reserve(
        self,
        key: str,
        node: str,
        outputs: Mapping[str, Any],
        calls: Sequence[ProviderCall],
        files: Mapping[str, bytes] | None,
    ) -> str:
        """Commit into the space the reserve frees, one slice more at each try: everything,
        else downloads as the URLs they came from (a few bytes each, so a video of many MB
        takes one slice); what was kept, for the message ("" if none). On the disk (synced)
        before it returns: the run stops here."""
        urls = {p: b for p, b in (files or {}).items() if getattr(b, "url", None)}
        rest = {p: b for p, b in (files or {}).items() if p not in urls}
        while self.db.release_slice():
            with contextlib.suppress(Exception):
                self._put(key, node, outputs, calls, files)
                self.db.sync()
                return " (kept in the journal's reserve)"
            if urls:
                with contextlib.suppress(Exception):
                    self._put(key, node, outputs, calls, rest, urls)
                    self.db.sync()
                    return (
                        " (kept in the journal: the provider's URL of the media, fetched on resume)"
                    )
        return ""

    def _put(
        self,
        key: str,
        node: str,
        outputs: Mapping[str, Any],
        calls: Sequence[ProviderCall],
        files: Mapping[str, bytes] | None,
        urls: Mapping[str, bytes] | None = None,
    ) -> None:
        with self.db.transaction():
            self._insert(key, node, outputs)
            if calls:
                data = "[" + ",".join(c.model_dump_json() for c in calls) + "]"
                self.db.execute(
                    "INSERT INTO paid (thread, key, calls) VALUES (?, ?, ?) "
                    "ON CONFLICT (thread, key) DO UPDATE SET calls = excluded.calls",
                    (self.thread_id, key, data),
                )
            for path, blob in (files or {}).items():
                self.db.execute(
                    "INSERT OR REPLACE INTO files (thread, key, path, data) VALUES (?, ?, ?, ?)",
                    (self.thread_id, key, path, blob),
                )
            for path, blob in (urls or {}).items():
                self.db.execute(
                    "INSERT OR REPLACE INTO fetch (thread, key, path, url, size) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (self.thread_id, key, path, getattr(blob, "url", ""), len(blob)),
                )

    def calls(self, key: str) -> list[ProviderCall]:
        """The requests journaled with ``key``'s outputs (none kept: an empty list)."""
        try:
            cursor = self.db.execute(
                "SELECT calls FROM paid WHERE thread = ? AND key = ?", (self.thread_id, key)
            )
            row = None if cursor is None else cursor.fetchone()
            records = json.loads(row[0]) if row is not None else []
            return [ProviderCall.model_validate(r) for r in records]
        except Exception as exc:
            log.warning("Ignoring an unreadable journaled cost: %s", exc)
            return []

    def start(self, state: Mapping[str, Any]) -> None:
        """A fresh run: forget the thread's entries and commit its initial state (a run
        killed before LangGraph saved its first checkpoint then resumes from these inputs,
        its journaled nodes replaying) — one transaction, never synced to the disk (see
        :meth:`JournalDB.unsynced`)."""
        try:
            with self.db.unsynced():
                self._delete_thread()
                self._insert(_INPUTS, _INPUTS, state)
        except Exception as exc:
            full = disk_full(exc, self.db.path.parent, what="the run's inputs")
            if full is not None:  # nothing is paid yet: stop before anything is
                raise _before_anything(full) from exc
            log.warning("The run's inputs were not journaled (%s).", exc)

    def _insert(self, key: str, node: str, outputs: Mapping[str, Any]) -> None:
        kind, data = self._serde.dumps_typed(dict(outputs))
        self.db.execute(
            "INSERT OR REPLACE INTO outputs (thread, key, node, type, data) VALUES (?, ?, ?, ?, ?)",
            (self.thread_id, key, node, kind, data),
        )

    def inputs(self) -> dict[str, Any] | None:
        """The journaled initial state of this thread's run, if any."""
        replay, self.replay = self.replay, True
        try:
            return self.get(_INPUTS)
        finally:
            self.replay = replay

    def forget(self) -> None:
        """Drop this thread's entries (a run that completed: its checkpoint holds all)."""
        with contextlib.suppress(sqlite3.Error), self.db.unsynced():
            self._delete_thread()

    def _delete_thread(self) -> None:
        for table in _TABLES:
            self.db.execute(f"DELETE FROM {table} WHERE thread = ?", (self.thread_id,))

    @property
    def syncing(self) -> bool:
        """A paid output's commit is not on the disk yet (:meth:`synced` waits for it)."""
        return bool(self._syncing)

    async def synced(self) -> None:
        """Wait until every paid output committed so far is on the disk (before a provider
        call is paid for, before the run ends). A failed flush warns: the outputs are
        committed (a killed process keeps them) but a power cut could lose them."""
        while self._syncing:
            pending, self._syncing = self._syncing, []
            for outcome in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    log.warning("The output journal could not be flushed to disk (%s).", outcome)

    def close(self) -> None:
        """End the run's use of the journal (closing its connection if it opened one); a
        flush still pending (a run stopped mid-way) is made here, on this thread."""
        if self._syncing:
            for pending in self._syncing:  # (their outcome is this flush's)
                pending.add_done_callback(_ignore)
            self._syncing = []
            with contextlib.suppress(OSError):
                self.db.sync()
        if self._owns_db:
            self.db.close()


def _ignore(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


async def _fetch(ctx: RunContext, path: Path, url: str, size: int) -> None:
    """Download a journaled provider URL to ``path`` (a full disk: DiskFullError)."""
    from calliope_graph.media import MediaStore

    store = MediaStore(path.parent, max_download_bytes=size)
    try:
        await store.download(ctx.client, url, path.name, provider="the journaled download")
    except DiskFullError:
        raise
    except Exception as exc:  # expired, gone: the node runs (and is paid for) again
        log.warning("Could not fetch %s again from its URL (%s): its node runs again.", path, exc)


def _before_anything(full: DiskFullError) -> DiskFullError:
    """``full`` saying that nothing was paid for: the run is started again, not resumed (it
    left nothing to resume)."""
    message = full.message.split(" Free space there", 1)[0]
    return DiskFullError(
        f"{message} Nothing was paid for yet: free space there (or give --out on another "
        "disk) and run it again.",
        folder=full.folder,
        needed=full.needed,
    )


def _size(outputs: Mapping[str, Any], files: Mapping[str, bytes] | None) -> int:
    """About the bytes a journal entry of ``outputs`` and ``files`` needs."""
    return len(repr(outputs)) + sum(len(b) for b in (files or {}).values())


def _media_present(value: Any) -> bool:
    if isinstance(value, Image | Audio | Video):
        return Path(value.path).is_file()
    if isinstance(value, BaseModel):
        return all(_media_present(getattr(value, name)) for name in type(value).model_fields)
    if isinstance(value, dict):
        return all(_media_present(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_media_present(v) for v in value)
    return True
