"""One run per thread on a SQLite checkpoint file, across processes.

PostgreSQL has advisory locks (``_checkpoints._thread_lock``); SQLite has nothing keyed by a
thread id, and holding a write transaction for a whole run would block every checkpoint. So a
run of thread ``T`` on ``flow.sqlite`` holds an exclusive POSIX record lock on one byte of a
lock file beside it, ``flow.sqlite.lock``, at an offset derived from ``T``: one small file for
any number of threads, and the operating system drops the lock when the process dies, so a
killed run never blocks its resume.

Written by hand because no well-kept library locks *byte ranges* (``filelock`` and
``portalocker`` lock whole files, one file per thread would leave thousands of files beside a
batch's checkpoint file). POSIX record locks belong to the *process* and all of them on a file
are dropped when the process closes *any* descriptor of that file: so each lock file is opened
once per process and kept open, and runs inside one process are kept apart by a set.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calliope_graph.errors import ConfigurationError

try:
    import fcntl
except ImportError:  # Windows: threads are kept apart inside one process only
    fcntl = None  # type: ignore[assignment]

__all__ = ["sqlite_database_path", "sqlite_thread_lock"]

_guard = threading.Lock()
_files: dict[str, int] = {}  # lock file → its descriptor, open for the life of the process
_held: set[tuple[str, int]] = set()  # (lock file, offset) held by a run of this process
_OFFSETS = 1 << 62  # offsets stay positive and within off_t everywhere


def _offset(thread: str) -> int:
    return int.from_bytes(hashlib.sha256(thread.encode()).digest()[:8], "big") % _OFFSETS


async def sqlite_database_path(conn: Any) -> Path | None:
    """The file behind a ``sqlite3`` or aiosqlite connection (None for an in-memory one)."""
    if isinstance(conn, sqlite3.Connection):
        rows = conn.execute("PRAGMA database_list").fetchall()
    else:
        cursor = await conn.execute("PRAGMA database_list")
        rows = list(await cursor.fetchall())
        await cursor.close()
    for _, name, file in rows:
        if name == "main" and file:
            return Path(file)
    return None


@contextlib.contextmanager
def sqlite_thread_lock(database: Path | None, thread: str, store: str) -> Iterator[None]:
    """Held while one run of ``thread`` uses the SQLite checkpoint file ``database``; a second
    run of the thread — in this process or another — gets a ConfigurationError at once."""
    lock_file = str(database) + ".lock" if database is not None else ":memory:"
    key = (lock_file, _offset(thread))
    refused = ConfigurationError(
        f"Thread {thread!r} is being run by another process on the checkpoint store {store} "
        f"(it holds the thread's lock in {Path(lock_file).name}). Wait for it to finish, or stop "
        "it, then resume: two runs of one thread would both pay for its pending nodes."
    )
    with _guard:
        if key in _held:
            raise ConfigurationError(str(refused).replace("another process", "another run"))
        fd = _lock(lock_file, key[1], refused) if database is not None else None
        _held.add(key)
    try:
        yield
    finally:
        with _guard:
            _held.discard(key)
            if fd is not None and fcntl is not None:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, key[1])


def _lock(lock_file: str, offset: int, refused: ConfigurationError) -> int | None:
    if fcntl is None:
        return None
    fd = _files.get(lock_file)
    if fd is None:
        fd = _files[lock_file] = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
    except OSError:
        raise refused from None
    return fd
