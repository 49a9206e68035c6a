"""State the DBOS workers of a batch share through its database: rate windows and heartbeats.

**Provider limits across workers.** Every worker keeps its in-process limiter
(:mod:`calliope_graph.limits`: cooldowns, headers, concurrency, its own windows), and each
request window (``rps``, ``rpm``, ``requests=N/Ts``) and token budget (``tpm``) is *also*
taken from one sliding-window log in the batch database (:class:`SharedWindows`), so the
limit holds for all workers together, on any number of machines. A take is one short
transaction: lock the key (``pg_advisory_xact_lock``; SQLite: ``BEGIN IMMEDIATE``), read the
database's clock (``clock_timestamp()``; one clock for every machine), count what the last
window holds, and either insert the request or answer how long until it fits.

Tokens: a request is charged its *estimate* (:func:`calliope_graph.limits.estimate_tokens`,
the same one the local limiter uses) in a sliding minute; the correction once the answer
reports its usage stays local (each worker's token bucket refunds or charges it), so the
shared window is conservative when estimates run high. DBOS's own queue ``limiter`` counts
workflow *starts*, not provider requests or tokens, so it is not used for provider limits.

**Worker liveness.** Self-hosted DBOS (no Conductor) recovers only a restarted executor's own
pending workflows. So each worker holds a *life lock* for as long as its process lives
(:class:`LifeLock`: a session-level ``pg_advisory_lock`` on a connection of its own, which the
server drops when the process dies — it asks the server to probe that connection every few
seconds, so a vanished machine lets go too; on SQLite an ``fcntl`` record lock on one byte of
``<database>.workers.lock``, which the operating system drops) and writes a heartbeat row.
Another worker tests the lock without waiting: a lock it can take belongs to a dead worker,
known at once; the heartbeat's age (``dead_after``) decides only where the lock cannot be
tested (a SQLite worker on another host, or no ``fcntl``). A live worker whose heartbeat is
late (a loaded machine, a paused process) is therefore never taken for dead: its items are
never run twice. The workers then ask DBOS to re-enqueue the pending workflows of every
executor that is not alive (:meth:`SharedWindows.live_workers`; ``_dbos`` does the recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calliope_graph.errors import ConfigurationError

try:
    import fcntl
except ImportError:  # Windows: liveness by heartbeat age only
    fcntl = None  # type: ignore[assignment]

__all__ = ["LifeLock", "SharedWindows", "is_postgres", "sqlite_file"]

_TOKEN_WINDOW = 60.0

_TABLES = (
    """CREATE TABLE IF NOT EXISTS calliope_rate_log (
        key TEXT NOT NULL, kind TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
        weight INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS calliope_rate_log_key ON calliope_rate_log (key, kind, ts)",
    """CREATE TABLE IF NOT EXISTS calliope_workers (
        executor_id TEXT PRIMARY KEY, host TEXT, pid INTEGER, beat DOUBLE PRECISION NOT NULL)""",
)

_INSERT = "INSERT INTO calliope_rate_log (key, kind, ts, weight) VALUES (?, ?, ?, ?)"
_FORGET_SQL = "DELETE FROM calliope_rate_log WHERE key = ? AND ts < ?"
_BEAT = "INSERT INTO calliope_workers (executor_id, host, pid, beat) VALUES (?, ?, ?, ?)"
_LEAVE = "DELETE FROM calliope_workers WHERE executor_id = ?"


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql:", "postgres:", "postgresql+"))


def sqlite_file(url: str) -> Path:
    """The file of a ``sqlite:///path`` URL (or a plain path)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if url.startswith("sqlite:"):
        raise ConfigurationError(
            f"--db {url!r}: write a SQLite database as sqlite:///path/to/file.sqlite "
            "(or a plain file path)."
        )
    return Path(url)


def psycopg_url(url: str) -> str:
    """A libpq connection string from a SQLAlchemy-style URL (``postgresql+psycopg://``)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and "+" in scheme else url


class SharedWindows:
    """The shared sliding-window log and worker heartbeats in the batch database (a
    ``postgresql://`` URL or a SQLite file). Thread-safe; async callers use :meth:`take`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = is_postgres(url)
        self._lock = threading.Lock()
        self._conn: Any = None

    # -- connection -----------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._conn is None:
            if self.postgres:
                import psycopg

                self._conn = psycopg.connect(psycopg_url(self.url), autocommit=True)
            else:
                # Its own file beside DBOS's: a transaction here never blocks DBOS's writes.
                path = sqlite_file(self.url).with_suffix(".shared.sqlite")
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                self._conn = conn
        return self._conn

    @contextmanager
    def _transaction(self, lock_key: str) -> Iterator[tuple[Any, float]]:
        """A transaction holding the lock of ``lock_key``, and the database's clock."""
        with self._lock:
            conn = self._connect()
            if self.postgres:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,))
                    row = conn.execute("SELECT extract(epoch from clock_timestamp())").fetchone()
                    yield conn, float(row[0])
            else:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn, time.time()
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    def setup(self) -> None:
        """Create the tables (safe when workers start together)."""
        with self._transaction("calliope-setup") as (conn, _now):
            for statement in _TABLES:
                conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- rate windows ---------------------------------------------------------------------------
    def take_now(
        self, key: str, windows: Sequence[tuple[int, float]], tpm: int, tokens: int
    ) -> float:
        """Record one request of ``key`` (and its ``tokens``) if every window has room: 0.0;
        else the seconds until the fullest window has room (nothing recorded)."""
        if not windows and not (tpm and tokens):
            return 0.0
        q = self._sql
        with self._transaction(f"calliope-limit:{key}") as (conn, now):
            longest = max([s for _, s in windows] + ([_TOKEN_WINDOW] if tpm else []))
            conn.execute(
                q("DELETE FROM calliope_rate_log WHERE key = ? AND ts < ?"), (key, now - longest)
            )
            wait = 0.0
            for limit, seconds in windows:
                row = conn.execute(
                    q(
                        "SELECT ts FROM calliope_rate_log WHERE key = ? AND kind = 'r' AND ts > ? "
                        "ORDER BY ts DESC LIMIT 1 OFFSET ?"
                    ),
                    (key, now - seconds, limit - 1),
                ).fetchone()
                if row is not None:  # `limit` requests already in the window
                    wait = max(wait, float(row[0]) + seconds - now)
            if tpm and tokens:
                need = min(tokens, tpm)
                rows = conn.execute(
                    q(
                        "SELECT ts, weight FROM calliope_rate_log WHERE key = ? AND kind = 't' "
                        "AND ts > ? ORDER BY ts"
                    ),
                    (key, now - _TOKEN_WINDOW),
                ).fetchall()
                used = sum(int(w) for _, w in rows)
                for ts, weight in rows:  # the oldest charges leave the window first
                    if used + need <= tpm:
                        break
                    used -= int(weight)
                    wait = max(wait, float(ts) + _TOKEN_WINDOW - now)
            if wait > 0:
                return max(wait, 0.001)
            if windows:
                conn.execute(q(_INSERT), (key, "r", now, 1))
            if tpm and tokens:
                conn.execute(q(_INSERT), (key, "t", now, min(tokens, tpm)))
            return 0.0

    async def take(
        self, key: str, windows: Sequence[tuple[int, float]], tpm: int, tokens: int
    ) -> float:
        return await asyncio.to_thread(self.take_now, key, windows, tpm, tokens)

    # -- heartbeats -----------------------------------------------------------------------------
    def beat(self, executor_id: str, host: str, pid: int) -> None:
        q = self._sql
        with self._transaction("calliope-workers") as (conn, now):
            conn.execute(q(_LEAVE), (executor_id,))
            conn.execute(q(_BEAT), (executor_id, host, pid, now))

    def leave(self, executor_id: str) -> None:
        with self._transaction("calliope-workers") as (conn, _now):
            conn.execute(
                self._sql("DELETE FROM calliope_workers WHERE executor_id = ?"), (executor_id,)
            )

    def live_workers(self, dead_after: float, me: str, owners: Iterable[str] = ()) -> set[str]:
        """The executors alive now (``me`` included); the heartbeat rows of dead ones are
        removed. Alive: its life lock is held (see the module docstring); where the lock cannot
        be tested, a heartbeat younger than ``dead_after`` seconds. ``owners`` without a row
        (a worker that left the table, still stopping) are alive while their lock is held."""
        q = self._sql
        alive = {me}
        with self._transaction("calliope-workers") as (conn, now):
            rows = conn.execute("SELECT executor_id, host, beat FROM calliope_workers").fetchall()
            for executor_id, host, beat in rows:
                executor_id = str(executor_id)
                if executor_id == me:
                    continue
                held = self._life_lock_held(conn, executor_id, str(host or ""))
                if held is None:
                    held = float(beat) >= now - dead_after
                if held:
                    alive.add(executor_id)
                else:
                    conn.execute(q(_LEAVE), (executor_id,))
            listed = {str(r[0]) for r in rows}
            for executor_id in set(owners) - listed - {me}:
                host = executor_id.rsplit("-", 2)[0]  # ids are <host>-<pid>-<random>
                if self._life_lock_held(conn, executor_id, host):
                    alive.add(executor_id)
        return alive

    def _life_lock_held(self, conn: Any, executor_id: str, host: str) -> bool | None:
        """Whether ``executor_id``'s life lock is held (None: it cannot be tested from here)."""
        key = life_key(executor_id)
        if self.postgres:
            free = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            if free:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            return not free
        if fcntl is None or host != socket.gethostname():
            return None
        fd = _lock_fd(_lock_path(self.url))
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key % _OFFSETS)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, key % _OFFSETS)
        return False


# -- life locks ------------------------------------------------------------------------------------
_OFFSETS = 1 << 62
_fds: dict[str, int] = {}  # lock file → its descriptor, open for the life of the process
_fd_guard = threading.Lock()


def life_key(executor_id: str) -> int:
    """The signed 64-bit key of a worker's life lock (advisory lock key; byte offset mod 2^62)."""
    digest = hashlib.sha256(f"calliope-worker:{executor_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _lock_path(url: str) -> str:
    return str(sqlite_file(url).absolute()) + ".workers.lock"


def _lock_fd(path: str) -> int:
    """One descriptor per lock file per process, never closed: closing any descriptor of a file
    drops every POSIX record lock the process holds on it."""
    with _fd_guard:
        if path not in _fds:
            _fds[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        return _fds[path]


#: The server probes a worker's lock connection after this many idle seconds, then every
#: interval, and drops it after that many missed answers: a machine that vanished without
#: closing its connection lets go of its life lock within about 5 + 2 × 3 seconds.
_KEEPALIVE = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 2",
              "SET tcp_keepalives_count = 3")  # fmt: skip


class LifeLock:
    """The lock a worker holds for its whole life (see the module docstring): taken before its
    first heartbeat, dropped by the server or the operating system when its process dies."""

    def __init__(self, url: str, executor_id: str) -> None:
        self.url = url
        self.key = life_key(executor_id)
        self._conn: Any = None

    def hold(self) -> None:
        """Take the lock (again, if its connection was lost). Call from one thread at a time."""
        if is_postgres(self.url):
            import psycopg

            if self._conn is not None:
                try:
                    self._conn.execute("SELECT 1")
                    return
                except psycopg.Error:
                    self.release()
            conn = psycopg.connect(psycopg_url(self.url), autocommit=True)
            for setting in _KEEPALIVE:
                conn.execute(setting)
            conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
            self._conn = conn
        elif fcntl is not None and self._conn is None:
            fd = _lock_fd(_lock_path(self.url))
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, self.key % _OFFSETS)
            self._conn = fd

    def release(self) -> None:
        if self._conn is None:
            return
        if is_postgres(self.url):
            with contextlib.suppress(Exception):
                self._conn.close()
        elif fcntl is not None:
            fcntl.lockf(self._conn, fcntl.LOCK_UN, 1, self.key % _OFFSETS)
        self._conn = None
