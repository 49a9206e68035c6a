"""Writing files: one atomic writer, one permission policy, one throttle.

Every file the library writes — media, ``trace.json``, ``report.html``, frames, drawings —
goes through :func:`atomic_writer` / :func:`write_atomic`: the bytes go to a hidden
temporary file in the same directory, are flushed to disk, and the temporary file is
renamed over the target (``os.replace``), so a reader (a browser reloading the report, a
watcher of ``trace.json``) sees the old file or the new one, never half of one. A failed
write removes its temporary file and leaves the old file untouched. ``durable=False`` skips
the fsync for files whose loss costs no paid work (``trace.json``, whose paid outputs are in
the output journal; reports, which are redrawn): the rename is still atomic, and a killed
process loses nothing the kernel already has — only a power cut can lose that latest rewrite.

**Stale temporary files**: a writer holds an OS lock (``flock``) on its temporary file
until the rename, so a process killed mid-write leaves an unlocked ``.<name>.<hex>.part``
behind. The next write of the same target removes those (:func:`clean_stale_parts`, once
per target and process), and a run taking its output directory sweeps the directory
(:func:`sweep_stale_parts`); a file another live writer holds is never touched. Without
``flock`` (Windows) nothing is removed: a live writer could not be told from a dead one.

**A full disk** (``ENOSPC``/``EDQUOT``) is raised as one
:class:`~calliope_graph.errors.DiskFullError` naming the folder and the bytes being written
(the old file is untouched, the temporary file removed); callers decide whether that fails
the run (media, the journal) or only logs a warning (views: ``trace.json``, reports).

**Permissions**: a written file gets ``0o666`` minus the process umask — exactly what
``open(path, "w")``, ``touch`` or a shell redirect would give (``0o644`` under the usual
umask 022). The temporary file is created with that mode by the kernel, so nothing is
chmod-ed afterwards and a default ACL on the directory applies as it would to any file.

:class:`Throttled` runs a writer at most every ``interval`` seconds from an asyncio event
loop (writes asked for in between share one later write) and always runs it on
:meth:`Throttled.flush`; the flow runner throttles ``trace.json`` with it and the CLI the
live ``report.html``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from calliope_graph.errors import disk_full

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, so no stale-file cleanup
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "AFTER_NODE_DELAY",
    "FILE_MODE",
    "Throttled",
    "aatomic_writer",
    "atomic_writer",
    "clean_stale_parts",
    "sweep_stale_parts",
    "write_atomic",
]

#: How long the bookkeeping a finishing node asks for waits (``trace.json``'s rewrite, the
#: trace rows beside the checkpoints, the checkpoint store's writes): not inside the node,
#: where LangGraph's next step would wait for it, but a moment later — typically while the
#: next node waits on its provider; what is asked for meanwhile shares the write.
AFTER_NODE_DELAY = 0.01

#: The mode asked for when creating a file; the process umask is taken off it by the kernel.
FILE_MODE = 0o666

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


#: The temporary files :func:`_temp_path` makes: ``.<target name>.<12 hex>.part``.
_PART = re.compile(r"^\..+\.[0-9a-f]{12}\.part$")
#: An unlocked temporary file younger than this (seconds) is left alone: its writer may be
#: between creating it and locking it.
STALE_AFTER = 2.0
#: Targets whose stale temporary files this process has removed lately: the most recent
#: ones only (a long-running server or batch writes new targets without end; cleaning a
#: target again after it fell out costs one directory glob). A process memo, not session
#: state: it records what this process did to files on disk (which every session of the
#: process shares), changes no behaviour (a miss costs one glob) and is bounded.
#: Kept as strings: a Path holds its parsed parts too (~600 bytes for an item's trace.json
#: against ~100), which a 4,000-item batch kept for every file it wrote.
_CLEANED: OrderedDict[str, None] = OrderedDict()
_CLEANED_MAX = 4096
_CLEANED_LOCK = threading.Lock()


def _temp_path(path: Path) -> tuple[Path, int]:
    """A new hidden temporary file beside ``path``, opened for writing and locked by this
    writer until the fd is closed (path, fd). Stale ones of ``path`` are removed first."""
    key = os.fspath(path)
    with _CLEANED_LOCK:
        first = key not in _CLEANED
        _CLEANED[key] = None
        _CLEANED.move_to_end(key)
        while len(_CLEANED) > _CLEANED_MAX:
            _CLEANED.popitem(last=False)
    if first:
        clean_stale_parts(path)
    while True:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            fd = os.open(tmp, _FLAGS, FILE_MODE)
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a filesystem without flock: no claim
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return tmp, fd


def _remove_if_stale(part: Path, now: float) -> bool:
    """Remove ``part`` if no live writer holds it (its lock is free) and it is not brand new."""
    if fcntl is None:
        return False
    try:
        fd = os.open(part, os.O_RDONLY)
    except OSError:
        return False
    try:
        if now - os.fstat(fd).st_mtime < STALE_AFTER:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer (this process or another) holds it
            return False
        with contextlib.suppress(OSError):
            part.unlink()
            return True
        return False
    finally:
        os.close(fd)


def clean_stale_parts(target: str | os.PathLike[str]) -> int:
    """Remove the temporary files a killed writer left beside ``target``; return how many."""
    path = Path(target)
    now = time.time()
    pattern = os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.part")
    parts = (Path(p) for p in glob.glob(pattern) if _PART.match(os.path.basename(p)))
    return sum(_remove_if_stale(part, now) for part in parts)


def sweep_stale_parts(directory: str | os.PathLike[str]) -> int:
    """Remove every stale temporary file under ``directory`` (a resumed run's output
    directory); return how many."""
    now = time.time()
    removed = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(".part") and _PART.match(name):
                removed += _remove_if_stale(Path(root, name), now)
    return removed


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], *, durable: bool = True, size: int | None = None
) -> Iterator[BinaryIO]:
    """Open a binary file whose content replaces ``path`` atomically when the block ends.

    If the block raises (or the rename fails), the temporary file is removed, ``path`` keeps
    its old content, and the exception propagates — a full disk as a
    :class:`~calliope_graph.errors.DiskFullError` (``size``: the bytes being written, its
    estimate of the space needed). Parent directories are created.
    ``durable``: fsync the content before the rename (see the module docstring).
    """
    target = Path(path)
    try:
        with _atomic_writer(target, durable) as fh:
            yield fh
    except OSError as exc:
        full = disk_full(exc, target.parent, needed=size, what=target.name)
        if full is None or full is exc:
            raise
        raise full from exc


@contextlib.contextmanager
def _atomic_writer(target: Path, durable: bool) -> Iterator[BinaryIO]:
    try:
        tmp, fd = _temp_path(target)
    except FileNotFoundError:  # its folder is new: made only then (a mkdir costs a syscall)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _temp_path(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
            if fcntl is not None:  # renamed while this writer still holds its lock
                os.replace(tmp, target)
        if fcntl is None:  # Windows cannot rename an open file
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.asynccontextmanager
async def aatomic_writer(path: str | os.PathLike[str]) -> AsyncIterator[BinaryIO]:
    """:func:`atomic_writer` for async code: creating the directory and the temporary file,
    the fsync and the rename run in a worker thread, so the event loop never waits on the
    disk for them (LangGraph Server refuses those calls on its loop)."""
    writer = atomic_writer(path)
    fh = await asyncio.to_thread(writer.__enter__)
    try:
        yield fh
    except BaseException as exc:
        await asyncio.to_thread(writer.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await asyncio.to_thread(writer.__exit__, None, None, None)


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, durable: bool = True) -> Path:
    """Write ``data`` (``str`` is encoded as UTF-8) to ``path`` atomically; return the path."""
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(target, durable=durable, size=len(payload)) as fh:
        fh.write(payload)
    return target


class Throttled:
    """Run ``write`` at most every ``interval`` seconds; :meth:`flush` always runs it.

    :meth:`request` writes now if the last write was long enough ago, else schedules one
    write on the running event loop for when the interval is up (requests in between share
    it). The gap also grows with the writer's own cost (at least ``cost_factor`` times the
    last write's duration), so a writer that gets slower as its content grows — a report
    of a long run — takes a bounded share of the run instead of a quadratic one.
    Call :meth:`flush` at the end (success, failure, interrupt): it cancels any pending
    write and writes now. ``delay``: a requested write waits at least this long, so it never
    runs inside the caller (a node finishing: the run's next step would wait for it) but
    on the loop a moment later, typically while the next node waits on its provider.
    """

    def __init__(
        self,
        write: Callable[[], object],
        interval: float,
        *,
        cost_factor: float = 4.0,
        first_now: bool = True,
        delay: float = 0.0,
    ) -> None:
        self._write = write
        self.interval = interval
        self.delay = delay
        self.cost_factor = cost_factor
        # first_now=False: the first request also waits an interval (a short run then
        # writes once, at its end, instead of once per early event and again at the end).
        self._last = -float("inf") if first_now else time.monotonic()
        self._cost = 0.0
        self._pending: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        """A write has been asked for and not done yet."""
        return self._pending is not None

    def request(self) -> None:
        """Ask for a write (soon, not necessarily now)."""
        if self._pending is not None:
            return
        wait = self._last + max(self.interval, self.cost_factor * self._cost) - time.monotonic()
        wait = max(wait, self.delay)
        if wait <= 0:
            self._run()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to come back on: write now
            self._run()
            return
        self._pending = loop.call_later(wait, self._run)

    def flush(self) -> None:
        """Write now (cancelling a scheduled write)."""
        self._run()

    def cancel(self) -> None:
        """Drop a scheduled write without writing."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _run(self) -> None:
        self.cancel()
        start = time.monotonic()
        try:
            self._write()
        finally:
            end = time.monotonic()
            self._last, self._cost = end, end - start
