"""Checkpoint stores: opened from a URL, read with the flow's serializer, one run per thread.

- :func:`checkpointer_from_url` opens ``postgresql://...`` (LangGraph's
  ``AsyncPostgresSaver``, its tables set up safely when several processes start at once) or a
  SQLite file, with the flow's allow-listed serializer (:func:`checkpoint_serializer`).
- :func:`with_flow_serializer` gives a checkpointer the user passed in the same allow-list,
  through LangGraph's own ``with_allowlist`` (a shallow clone: the user's serializer, e.g. an
  ``EncryptedSerializer``, is kept; with ``LANGGRAPH_STRICT_MSGPACK=true`` a resume works).
- :func:`run_guard` is held for one run of one thread. On PostgreSQL it takes an advisory lock
  keyed by the thread id on a connection of its own, so two processes — on any machines —
  running the same thread cannot both pay for its pending nodes: the second gets a
  ConfigurationError naming the holder. On SQLite the same guarantee comes from a record lock
  in a file beside the checkpoint file (:mod:`calliope_graph.flow._thread_lock`).
  On PostgreSQL and SQLite it also yields the run's :class:`TraceLog`: each finished node
  execution is written to a ``calliope_trace`` table next to the checkpoints, so a run resumed
  on another machine or with another output directory starts its trace with everything the
  earlier attempts did (docs/architecture.md says why a table and not the checkpoint metadata
  or history).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import sys
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver

from calliope_graph._files import AFTER_NODE_DELAY
from calliope_graph.errors import ConfigurationError
from calliope_graph.flow._thread_lock import sqlite_database_path, sqlite_thread_lock
from calliope_graph.flow.trace import NodeExecution, Trace

if TYPE_CHECKING:
    from calliope_graph.flow._runtime import FlowEvent, OnEvent
    from calliope_graph.flow.validate import Plan
from calliope_graph.flow._postgres_trace import (
    TRACE_TABLE,
    _connection_error,
    _conninfo,
    _PostgresTrace,
    _thread_lock,
)

__all__ = [
    "CHECKPOINT_URL_ENV",
    "TRACE_TABLE",
    "TraceLog",
    "checkpoint_serializer",
    "checkpoint_types",
    "checkpointer_from_url",
    "is_postgres_url",
    "run_guard",
    "setup_postgres",
    "shown_url",
    "with_flow_serializer",
]

log = logging.getLogger(__name__)

#: The environment variable naming the checkpoint store (``--checkpoint``'s default).
CHECKPOINT_URL_ENV = "CALLIOPE_CHECKPOINT_URL"
#: Execution statuses a resumed trace carries over (what completed, one way or another).
CARRIED = ("ok", "fallback", "skipped", "cache_hit")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


# -- serializer ------------------------------------------------------------------------------
def checkpoint_types(plan: Plan) -> set[type]:
    """The value types this flow's checkpoints may hold: media references, analyses, story
    frames, and the pydantic objects of structured-output nodes (with the models their fields
    use)."""
    from pydantic import BaseModel

    from calliope_graph.media import Audio, Image, ImageAnalysis, Video
    from calliope_graph.nodes import StoryFrame

    found: set[type] = {Image, Audio, Video, ImageAnalysis, StoryFrame}

    def walk(model: type[BaseModel]) -> None:
        if model in found:
            return
        found.add(model)
        for info in model.model_fields.values():
            for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)

    for node in plan.nodes.values():
        response_model = getattr(node, "response_model", None)
        if isinstance(response_model, type) and issubclass(response_model, BaseModel):
            walk(response_model)
    return found


def checkpoint_serializer(plan: Plan) -> Any:
    """LangGraph's ``JsonPlusSerializer``, allowed to restore exactly the value types this
    flow produces.

    So checkpoints load without LangGraph's "unregistered type" warning, and nothing else can
    be smuggled into one.
    """
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer(allowed_msgpack_modules=tuple(checkpoint_types(plan)))


def with_flow_serializer(saver: BaseCheckpointSaver[Any], plan: Plan) -> BaseCheckpointSaver[Any]:
    """``saver`` allowed to restore this flow's value types (LangGraph's ``with_allowlist``:
    a shallow clone sharing the connection; the saver's own serializer is kept, so a strict
    one stays strict and an encrypted one stays encrypted)."""
    return saver.with_allowlist({(t.__module__, t.__name__) for t in checkpoint_types(plan)})


# -- URLs ------------------------------------------------------------------------------------
def is_postgres_url(url: str) -> bool:
    """``postgresql://...`` or ``postgres://...`` (anything else names a SQLite file)."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in _POSTGRES_SCHEMES


def shown_url(url: str) -> str:
    """``url`` as messages show it: a password replaced by ``***``."""
    if is_postgres_url(url):
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            user = parts.username or ""
            parts = parts._replace(netloc=f"{user}:***@{host}")
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit(parts._replace(query=query))
    return re.sub(r"(?i)(password\s*=\s*)\S+", r"\1***", url)


def _password(url: str) -> str | None:
    if not is_postgres_url(url):
        return None
    found = re.search(r"(?i)password=([^&]*)", urlsplit(url).query)
    return urlsplit(url).password or (found.group(1) if found else None)


def sqlite_path(url: str) -> Path:
    """The SQLite file a non-PostgreSQL checkpoint URL names (``sqlite:///abs``, a path)."""
    for prefix in ("sqlite:///", "sqlite://", "sqlite:"):
        if url.startswith(prefix):
            url = ("/" if prefix == "sqlite:///" else "") + url[len(prefix) :]
            break
    return Path(url).expanduser()


# -- opening ---------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def checkpointer_from_url(
    url: str | os.PathLike[str], plan: Plan, *, serde: Any = None, defer: bool = True
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The checkpoint store ``url`` names, open for as long as the context lasts.

    ``postgresql://...``: LangGraph's ``AsyncPostgresSaver`` (``pip install
    'calliope-graph[postgres]'``), its tables created or migrated first (:func:`setup_postgres`).
    Anything else: a SQLite file (``sqlite:///path`` or a plain path; its folder is created).
    Either way with the flow's allow-listed serializer (``serde`` overrides it). One store can
    serve many runs, concurrently too (a batch passes it as ``checkpointer=`` to each run).
    """
    text = os.fspath(url)
    serde = serde if serde is not None else checkpoint_serializer(plan)
    if not is_postgres_url(text):
        async with open_sqlite(sqlite_path(text), serde, defer=defer) as sqlite_saver:
            yield sqlite_saver
        return
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:
        raise ConfigurationError(
            f"The checkpoint store {shown_url(text)} is PostgreSQL, which needs the postgres "
            "extra: pip install 'calliope-graph[postgres]'."
        ) from None
    import psycopg

    secret = _password(text)
    async with contextlib.AsyncExitStack() as stack:
        try:
            saver = await stack.enter_async_context(
                AsyncPostgresSaver.from_conn_string(text, serde=serde)
            )
            await setup_postgres(saver)
        except psycopg.Error as exc:
            raise _connection_error(shown_url(text), exc, [secret] if secret else []) from None
        yield saver


@contextlib.asynccontextmanager
async def open_sqlite(
    path: Path, serde: Any, *, defer: bool = True
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """LangGraph's ``SqliteSaver`` on ``path`` with ``serde``, usable from async code
    (:class:`~calliope_graph.flow._sqlite_saver.LoopSqliteSaver` says why not
    ``AsyncSqliteSaver``). ``defer``: its writes are made a moment later (not for a run whose
    durability is ``sync``, which waits for each step's)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot create the folder of the checkpoint file {str(path)!r} "
            f"({exc.strerror or exc}): pass another --checkpoint path."
        ) from None
    # WAL (set by the saver) and a generous busy timeout: a reader of the checkpoints (a
    # report, sqlite3, Studio) never makes a paid run fail with "database is locked".
    # synchronous=NORMAL: in WAL mode a commit then survives a killed process but not a power
    # cut, and costs no fsync. What a lost checkpoint would make a resume pay again is in
    # the output journal, which syncs fully (docs/architecture.md, "durability").
    # A new file is made empty (WAL mode, the tables) without waiting for the disk: that is
    # two or three fsyncs (the switch to WAL goes through a rollback journal), 1 ms on an idle
    # disk and 20 ms on a busy one, in every run's wall before its first node, to keep an
    # empty store across a power cut — which the NORMAL commits after it do not promise
    # either. A file that exists (a resume, a runner's second run) is opened as before.
    from calliope_graph.flow._sqlite_saver import LoopSqliteSaver, Queued

    new = not path.exists()
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
        conn.execute(f"PRAGMA synchronous={'OFF' if new else 'NORMAL'}")
        saver = LoopSqliteSaver(conn, serde=serde)
        saver.setup()  # its tables now, so a file that is not a checkpoint store says so here
        if new:
            conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise ConfigurationError(
            f"Cannot use the checkpoint file {str(path)!r} ({exc}): pass another "
            "--checkpoint path, or move that file away."
        ) from None
    if defer:
        saver.queued = Queued()
    try:
        yield saver
    except BaseException:
        try:  # what the run did before it stopped is kept where it can be
            saver.flush()
        except Exception as exc:
            log.warning("Some checkpoints of this run were not saved (%s).", exc)
        raise
    else:
        saver.flush()  # (a write that failed fails the run here)
    finally:
        conn.close()


async def setup_postgres(saver: Any) -> None:
    """LangGraph's ``setup()`` (tables and migrations), safe when processes race on it.

    Several processes setting up an empty database at once collide (a ``UniqueViolation`` on
    ``checkpoint_migrations_pkey``, or on the catalog when two create one table): the loser
    runs ``setup()`` again, which goes on from the migrations the others have applied. Each
    lost race means another process applied a migration, so a process retries at most once
    per migration. Not a blocking advisory lock around ``setup()``: the migrations include
    ``CREATE INDEX CONCURRENTLY``, which waits for every transaction holding an older
    snapshot, and a session blocked in ``pg_advisory_lock`` holds one — holder and waiters
    then wait for each other (tried: four tasks hung).
    """
    from psycopg import errors

    races = (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateObject,
             errors.DeadlockDetected)  # fmt: skip
    attempts = len(getattr(saver, "MIGRATIONS", ())) + 2
    for attempt in range(attempts):
        try:
            await saver.setup()
            return
        except races:
            if attempt == attempts - 1:
                raise


# -- one run of one thread -------------------------------------------------------------------
class _Backend(Protocol):
    """Where a :class:`TraceLog` keeps its rows (``n`` 0: the run's header)."""

    async def put(
        self, thread: str, rows: list[tuple[float, int, str]], *, clear: bool = False
    ) -> None: ...
    async def load(self, thread: str) -> list[tuple[float, int, str]]: ...
    async def delete(self, thread: str) -> None: ...


class TraceLog:
    """The trace of one thread, kept next to its checkpoints as the run goes.

    The runner passes every event through :meth:`listener`; each execution that completes
    (``ok``, ``fallback``, ``skipped``, ``cache_hit``) is written in the background, and
    :meth:`aclose` waits for the last writes. A resumed run :meth:`load`\\ s what earlier
    attempts recorded. A write that fails is logged, never fails the run (the checkpoints
    still hold the work).
    """

    def __init__(self, backend: _Backend, thread: str, *, fresh: bool = False) -> None:
        self._backend = backend
        self.thread = thread
        #: A fresh run: the earlier runs' rows go, in the same transaction as the first write.
        self._clear = fresh
        self._run = time.time()  # this attempt's rows sort after the earlier attempts'
        self._rows: dict[int, Any] = {}  # id(execution) → (n, execution), or -1: carried
        self._next = 1
        self._pending: dict[int, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._warned = False

    def header(self, trace: Trace) -> None:
        """Record a fresh run's flow and (redacted) inputs."""
        self._pending[0] = {"flow": trace.flow, "inputs": trace.inputs}
        self._kick()

    def carried(self, executions: Iterable[NodeExecution]) -> None:
        """These came from earlier attempts: never written again."""
        for execution in executions:
            self._rows[id(execution)] = (-1, execution)

    def listener(self, forward: OnEvent | None) -> OnEvent:
        """An event callback that records, then calls ``forward``."""

        def on_event(event: FlowEvent) -> None:
            self.record(event.execution)
            if forward is not None:
                forward(event)

        return on_event

    def record(self, execution: NodeExecution) -> None:
        if execution.status not in CARRIED:
            return
        n, _ = self._rows.get(id(execution), (None, None))
        if n == -1:
            return
        if n is None:
            n, self._next = self._next, self._next + 1
            self._rows[id(execution)] = (n, execution)
        self._pending[n] = execution
        self._kick()

    async def load(self) -> tuple[dict[str, Any] | None, list[NodeExecution]]:
        """(the first attempt's inputs, every execution earlier attempts completed)."""
        inputs: dict[str, Any] | None = None
        executions: list[NodeExecution] = []
        for _, n, data in await self._backend.load(self.thread):
            value = json.loads(data)
            if n == 0:
                if inputs is None:
                    inputs = value.get("inputs") or {}
                continue
            execution = NodeExecution.model_validate(value)
            if execution.status in CARRIED:
                executions.append(execution.model_copy(update={"resumed": True}))
        return inputs, executions

    def _kick(self) -> None:
        """Write what is pending ``AFTER_NODE_DELAY`` from now: not inside the node that just
        finished (LangGraph's next step would wait for the commit) but a moment later,
        typically while the next node waits on its provider; rows in between share it."""
        if self._timer is None and (self._task is None or self._task.done()):
            self._timer = asyncio.get_running_loop().call_later(AFTER_NODE_DELAY, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            rows = [
                (self._run, n, value.model_dump_json() if isinstance(value, NodeExecution)
                 else json.dumps(value))
                for n, value in sorted(batch.items())
            ]  # fmt: skip
            try:
                await self._backend.put(self.thread, rows, clear=self._clear)
                self._clear = False
            except Exception as exc:
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "The trace of thread %s was not saved next to its checkpoints (%s): a "
                        "resume elsewhere will not list what this run did.",
                        self.thread,
                        exc,
                    )

    async def aclose(self) -> None:
        if self._timer is not None:  # written now, below
            self._timer.cancel()
            self._timer = None
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        await self._drain()
        if self._clear:  # a fresh run that recorded nothing still drops the earlier rows
            try:
                await self._backend.delete(self.thread)
                self._clear = False
            except Exception as exc:
                log.warning("Could not clear the earlier trace of thread %s: %s", self.thread, exc)


@contextlib.asynccontextmanager
async def run_guard(
    saver: Any, thread: str, *, fresh: bool, store: str, trace: bool = True
) -> AsyncIterator[TraceLog | None]:
    """Held for one run of ``thread`` on ``saver`` (see the module docstring).

    ``fresh``: a new run (not a resume), so the thread's earlier trace rows are dropped.
    ``store``: how messages name the store. Yields the run's :class:`TraceLog`, or None for a
    checkpointer that is neither PostgreSQL nor SQLite, or when ``trace`` is false (a
    resumed trace then comes from the output directory's ``trace.json``).
    """
    backend: _Backend | None = None
    async with contextlib.AsyncExitStack() as stack:
        postgres = sys.modules.get("langgraph.checkpoint.postgres.aio")
        sqlite = sys.modules.get("langgraph.checkpoint.sqlite.aio")
        loop_saver = sys.modules.get("calliope_graph.flow._sqlite_saver")
        if postgres is not None and isinstance(saver, postgres.AsyncPostgresSaver):
            conninfo = _conninfo(saver)
            if conninfo is None:
                log.warning(
                    "The PostgreSQL checkpointer's connection string is not known: thread %s is "
                    "not locked against a second run elsewhere.",
                    thread,
                )
            else:
                conn = await stack.enter_async_context(_thread_lock(conninfo, thread, store))
                backend = _PostgresTrace(conn)
        elif (sqlite is not None and isinstance(saver, sqlite.AsyncSqliteSaver)) or (
            loop_saver is not None and isinstance(saver, loop_saver.LoopSqliteSaver)
        ):
            backend = _SqliteTrace(saver)
            database = await sqlite_database_path(saver.conn)
            stack.enter_context(sqlite_thread_lock(database, thread, store))
        if backend is None or not trace:
            yield None
            return
        trace_log = TraceLog(backend, thread, fresh=fresh)
        try:
            yield trace_log
        finally:
            await trace_log.aclose()


# -- SQLite ----------------------------------------------------------------------------------
_SQLITE_TRACE_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TRACE_TABLE} (thread_id TEXT NOT NULL, "
    "run_started REAL NOT NULL, n INTEGER NOT NULL, data TEXT NOT NULL, "
    "PRIMARY KEY (thread_id, run_started, n))"
)

#: One statement: SQL, its parameters, and whether they are many rows (``executemany``).
_Statement = tuple[str, Any, bool]


class _SqliteTrace:
    """The table in the checkpoint file itself, written through the saver's connection: a
    ``sqlite3`` one (:func:`open_sqlite`'s saver, used on the loop's thread) or aiosqlite's
    (an ``AsyncSqliteSaver`` the caller passed)."""

    #: Savers whose file has the table (checked once per saver, not per run).
    _ready: ClassVar[weakref.WeakSet[Any]] = weakref.WeakSet()

    def __init__(self, saver: Any) -> None:
        self.saver = saver

    async def _run(self, statements: list[_Statement]) -> list[Any]:
        """Run ``statements`` in one transaction; the rows the last one returned."""
        conn = self.saver.conn
        if self.saver not in self._ready:
            statements = [(_SQLITE_TRACE_SCHEMA, (), False), *statements]
        rows: list[Any] = []
        if isinstance(conn, sqlite3.Connection):
            with self.saver.lock:
                try:
                    for sql, args, many in statements:
                        rows = (conn.executemany if many else conn.execute)(sql, args).fetchall()
                    conn.commit()
                except BaseException:
                    conn.rollback()  # or the saver's next commit would carry half of these
                    raise
        else:
            async with self.saver.lock:
                try:
                    for sql, args, many in statements:
                        cursor = await (conn.executemany if many else conn.execute)(sql, args)
                        rows = list(await cursor.fetchall())
                        await cursor.close()
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise
        self._ready.add(self.saver)
        return rows

    async def put(
        self, thread: str, rows: list[tuple[float, int, str]], *, clear: bool = False
    ) -> None:
        statements: list[_Statement] = []
        if clear:
            statements.append((f"DELETE FROM {TRACE_TABLE} WHERE thread_id = ?", (thread,), False))
        insert = (
            f"INSERT INTO {TRACE_TABLE} (thread_id, run_started, n, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (thread_id, run_started, n) DO UPDATE SET data = excluded.data"
        )
        statements.append((insert, [(thread, *row) for row in rows], True))
        await self._run(statements)

    async def load(self, thread: str) -> list[tuple[float, int, str]]:
        select = (
            f"SELECT run_started, n, data FROM {TRACE_TABLE} WHERE thread_id = ? "
            "ORDER BY run_started, n"
        )
        rows = await self._run([(select, (thread,), False)])
        return [(float(a), int(b), str(c)) for a, b, c in rows]

    async def delete(self, thread: str) -> None:
        await self._run([(f"DELETE FROM {TRACE_TABLE} WHERE thread_id = ?", (thread,), False)])
