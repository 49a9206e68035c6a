"""The output directory of a run: checked before anything runs, held by one run at a time.

:func:`prepare_out_dir` creates the directory and proves it is writable, so a bad ``--out``
(an existing file, a path under a file, a read-only directory) is one
:class:`~calliope_graph.errors.ConfigurationError` naming the path and the fix — raised
before a checkpointer is opened or a provider is paid.

:class:`OutDirLock` is an OS file lock (``filelock``) on ``<out>/.calliope.lock`` held for
the whole run: a second run on the same directory is refused up front (who holds it is read
from ``<out>/.calliope.lock.json``) instead of overwriting the first one's trace, media and
checkpoints. The operating system releases the lock when its process dies, so a run killed
with ``kill -9`` never blocks the resume that follows; taking the lock also removes the
temporary files such a run left half-written (:func:`~calliope_graph._files.sweep_stale_parts`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from types import TracebackType

from calliope_graph.errors import ConfigurationError

__all__ = ["LOCK_NAME", "OutDirLock", "prepare_out_dir"]

LOCK_NAME = ".calliope.lock"
_HOLDER_NAME = ".calliope.lock.json"
_FIX = "pass another output directory (--out on the command line, out_dir= in Python)"


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` if missing and check that files can be written in it.

    Raises :class:`ConfigurationError` for an existing file, a path under a file, or a
    directory that cannot be created or written to.
    """
    path = Path(out_dir)
    shown = str(path)
    try:
        if path.exists() and not path.is_dir():
            raise ConfigurationError(
                f"Output directory {shown!r} is an existing file, not a directory: {_FIX}, "
                "or move the file away."
            )
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise ConfigurationError(
                f"Output directory {shown!r} cannot be created: {str(blocker)!r} is a file, "
                f"not a directory. {_FIX[0].upper()}{_FIX[1:]}."
            )
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"Output directory {shown!r} cannot be created ({exc.strerror or exc}): "
            f"check its parent's permissions, or {_FIX}."
        ) from None
    try:
        _probe(path)
    except OSError as exc:
        raise ConfigurationError(
            f"Output directory {shown!r} is not writable ({exc.strerror or exc}): "
            f"give yourself write permission on it, or {_FIX}."
        ) from None
    return path


def _probe(directory: Path) -> None:
    """Create and remove a file: the only sure test of writability (``os.access`` is wrong
    for root, ACLs and read-only mounts)."""
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".calliope-write-probe-")
    os.close(fd)
    os.unlink(probe)


class OutDirLock:
    """Held by the run that writes into ``out_dir``; a second holder is refused at once.

    Use as a context manager around the run. ``thread_id`` is recorded so the refusal can
    say which run holds the directory.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, thread_id: str) -> None:
        from filelock import FileLock

        self.out_dir = Path(out_dir)
        self.thread_id = thread_id
        # thread_local=False: an asyncio run may release from another thread (to_thread).
        self._lock = FileLock(self.out_dir / LOCK_NAME, timeout=0, thread_local=False)
        self._holder = self.out_dir / _HOLDER_NAME

    def acquire(self) -> None:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise ConfigurationError(
                f"Another run ({self._who()}) is using the output directory "
                f"{str(self.out_dir)!r}: wait for it to finish, or {_FIX}. Two runs in one "
                "directory would overwrite each other's trace, media and checkpoints."
            ) from None
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot lock the output directory {str(self.out_dir)!r} "
                f"({exc.strerror or exc}): {_FIX}."
            ) from None
        # Temporary files of a run killed mid-write (a half-encoded ``.story.mp4.*.part``):
        # this run now owns the directory, and a file another live writer holds is kept.
        from calliope_graph._files import sweep_stale_parts

        with contextlib.suppress(OSError):
            sweep_stale_parts(self.out_dir)
        info = {
            "pid": os.getpid(),
            "thread_id": self.thread_id,
            "started_at": time.time(),
        }
        with contextlib.suppress(OSError):  # the holder note only improves the message
            tmp = self._holder.with_name(f"{_HOLDER_NAME}.{os.getpid()}.part")
            tmp.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp, self._holder)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self._holder.unlink(missing_ok=True)
        self._lock.release()

    def _who(self) -> str:
        try:
            info = json.loads(self._holder.read_text(encoding="utf-8"))
            return f"pid {info['pid']}, thread {info['thread_id']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "pid unknown"

    def __enter__(self) -> OutDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
