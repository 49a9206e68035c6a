"""The trace next to PostgreSQL checkpoints: the ``calliope_trace`` table (created once per
database, by one process at a time), the advisory lock that keeps one run per thread, and
:class:`_PostgresTrace`, the backend :class:`~calliope_graph.flow._checkpoints.TraceLog`
writes through; and the connection error both backends raise."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from calliope_graph.errors import ConfigurationError

__all__ = ["TRACE_TABLE"]
#: The table of finished node executions, next to the checkpoints (PostgreSQL and SQLite).
TRACE_TABLE = "calliope_trace"
#: Attempts at creating the trace table when other processes create it at the same moment.


def _connection_error(shown: str, exc: BaseException, secrets: list[str]) -> ConfigurationError:
    from calliope_graph._secrets import redact

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigurationError(
        f"Cannot use the checkpoint store {shown} ({redact(first, secrets)}). Check the URL "
        "(postgresql://USER@HOST:PORT/DATABASE), that the server is running and reachable, and "
        "the password (PGPASSWORD or ~/.pgpass keep it out of the URL)."
    )


# -- PostgreSQL ------------------------------------------------------------------------------
def _lock_key(thread: str) -> int:
    """The advisory lock key of ``thread``: 64 bits of a hash, namespaced to this library."""
    digest = hashlib.sha256(b"calliope-graph thread\0" + thread.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _conninfo(saver: Any) -> str | None:
    """A connection string reaching ``saver``'s database (its password included)."""
    from psycopg import AsyncConnection
    from psycopg.conninfo import make_conninfo

    conn = getattr(saver, "conn", None)
    if isinstance(conn, AsyncConnection):
        password = conn.info.password
        dsn = conn.info.dsn  # psycopg leaves the password out
        return make_conninfo(dsn, password=password) if password else dsn
    conninfo = getattr(conn, "conninfo", None)  # a psycopg_pool.AsyncConnectionPool
    return conninfo if isinstance(conninfo, str) else None


_PG_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TRACE_TABLE} (
    thread_id TEXT NOT NULL,
    run_started DOUBLE PRECISION NOT NULL,
    n INTEGER NOT NULL,
    data JSONB NOT NULL,
    PRIMARY KEY (thread_id, run_started, n)
)
"""


_pg_ready: set[str] = set()


@contextlib.asynccontextmanager
async def _thread_lock(conninfo: str, thread: str, store: str) -> AsyncIterator[Any]:
    """A connection of its own holding the advisory lock of ``thread`` (the server drops it
    when the connection ends, so a killed process never blocks the resume)."""
    import psycopg

    me = f"calliope-graph pid {os.getpid()} on {socket.gethostname()}"[:63]
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, application_name=me)
    except psycopg.Error as exc:
        from psycopg.conninfo import conninfo_to_dict

        secret = conninfo_to_dict(conninfo).get("password")
        raise _connection_error(store, exc, [str(secret)] if secret else []) from None
    async with conn:
        key = _lock_key(thread)
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone()
        if not row or not row[0]:
            holder = await _holder(conn, key)
            raise ConfigurationError(
                f"Thread {thread!r} is being run by another process ({holder}) on the "
                f"checkpoint store {store}. Wait for it to finish, or stop it, then resume: "
                "two runs of one thread would both pay for its pending nodes."
            )
        try:
            if conninfo not in _pg_ready:
                await _create_trace_table(conn)
                _pg_ready.add(conninfo)
            yield conn
        finally:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


async def _create_trace_table(conn: Any) -> None:
    """Create the table once, whoever else starts at the same moment: PostgreSQL's
    ``CREATE TABLE IF NOT EXISTS`` is not safe against itself (two sessions both find no
    table, and the second fails on the row type: "type calliope_trace already exists"), so
    creators take turns under a transaction-scoped advisory lock, as the batch's shared
    tables do (``batch/_shared.py``)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("calliope-trace-setup",))
        await conn.execute(_PG_SCHEMA)


async def _holder(conn: Any, key: int) -> str:
    """Who holds advisory lock ``key``, as pg_stat_activity tells it."""
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    with contextlib.suppress(Exception):
        cursor = await conn.execute(
            "SELECT a.application_name, a.client_addr, a.pid, a.backend_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s "
            "AND l.objid::bigint = %s AND l.objsubid = 1",
            (high, low),
        )
        row = await cursor.fetchone()
        if row is not None:
            name, addr, pid, since = row
            who = name or f"server process {pid}"
            where = f" from {addr}" if addr else ""
            when = f", since {since:%Y-%m-%d %H:%M:%S %Z}" if since is not None else ""
            return f"{who}{where}{when}"
    return "holder not known"


class _PostgresTrace:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def put(
        self, thread: str, rows: list[tuple[float, int, str]], *, clear: bool = False
    ) -> None:
        async with self.conn.cursor() as cur:
            if clear:
                await cur.execute(f"DELETE FROM {TRACE_TABLE} WHERE thread_id = %s", (thread,))
            await cur.executemany(
                f"INSERT INTO {TRACE_TABLE} (thread_id, run_started, n, data) "
                "VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT (thread_id, run_started, n) "
                "DO UPDATE SET data = EXCLUDED.data",
                [(thread, *row) for row in rows],
            )

    async def load(self, thread: str) -> list[tuple[float, int, str]]:
        cursor = await self.conn.execute(
            f"SELECT run_started, n, data::text FROM {TRACE_TABLE} WHERE thread_id = %s "
            "ORDER BY run_started, n",
            (thread,),
        )
        return [(float(a), int(b), str(c)) for a, b, c in await cursor.fetchall()]

    async def delete(self, thread: str) -> None:
        await self.conn.execute(f"DELETE FROM {TRACE_TABLE} WHERE thread_id = %s", (thread,))
