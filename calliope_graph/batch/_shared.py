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
pending workflows. So each worker writes a heartbeat here; a worker that finds another's
heartbeat older than ``dead_after`` deletes the row (exactly one worker wins the delete) and
asks DBOS to recover that executor's pending workflows, which DBOS re-enqueues for any worker
(``DBOS._recover_pending_workflows``, what the admin API's ``/dbos-workflow-recovery`` calls).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calliope_graph.errors import ConfigurationError

__all__ = ["SharedWindows", "is_postgres", "sqlite_file"]

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

    def claim_dead(self, dead_after: float, recover: Callable[[str], Any]) -> list[str]:
        """Executors silent for ``dead_after`` seconds, removed (by exactly one worker) and
        handed to ``recover`` inside the same transaction, so a crash mid-way leaves them
        for the next worker to find."""
        q = self._sql
        with self._transaction("calliope-workers") as (conn, now):
            rows = conn.execute(
                q("SELECT executor_id FROM calliope_workers WHERE beat < ?"), (now - dead_after,)
            ).fetchall()
            dead = [str(r[0]) for r in rows]
            for executor_id in dead:
                recover(executor_id)
                conn.execute(
                    q("DELETE FROM calliope_workers WHERE executor_id = ?"), (executor_id,)
                )
            return dead
