"""A write-ahead journal of paid node outputs: a killed run never pays twice for a node.

LangGraph saves a finished task's writes to the checkpointer in the background (with every
``durability``), so a process killed in the milliseconds after a node returns loses that
node's outputs and a resume runs — and pays for — it again. The journal closes that window:
when a node that calls a provider returns, its outputs are committed here (SQLite, WAL,
``synchronous=FULL``) *before* LangGraph sees them; a resumed run looks each provider node up
before running it and, on a hit whose media files still exist, returns the journaled outputs
without calling the provider.

An entry's key is the thread, the node, its iteration (rewrite loops) and a hash of the
node's exact inputs as the checkpoint serializer encodes them — not LangGraph's task id,
which changes when the checkpoint the task was planned from was itself lost in the kill.
Values are encoded with the flow's allow-listed checkpoint serializer, so the journal
restores exactly the types a checkpoint may. A fresh (non-resume) run on a thread forgets
that thread's entries; a run that completes deletes them (its checkpoint holds everything).
A fresh run also journals its initial state, so a run killed before LangGraph saved its first
checkpoint (possible with ``async`` and ``exit`` durability) still resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from calliope_graph.media import Audio, Image, Video

__all__ = ["JOURNAL_NAME", "Journal"]

JOURNAL_NAME = "journal.sqlite"
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
)
"""


class Journal:
    """The output journal of one run (see the module docstring).

    ``replay``: look entries up (a resumed run); a fresh run only writes.
    """

    def __init__(self, path: Path, *, serde: Any, thread_id: str, replay: bool) -> None:
        self.path = path
        self.thread_id = thread_id
        self.replay = replay
        self._serde = serde
        self._db: sqlite3.Connection | None = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk, not only handed to the OS, before the node returns.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, out_dir: Path, *, serde: Any, thread_id: str, resume: bool) -> Journal | None:
        """The journal in ``out_dir``; None (with a warning) if it cannot be used."""
        try:
            journal = cls(out_dir / JOURNAL_NAME, serde=serde, thread_id=thread_id, replay=resume)
        except sqlite3.Error as exc:
            log.warning(
                "The output journal %s cannot be used (%s): a run killed now may pay again "
                "for nodes that had finished. Delete the file to start a new one.",
                out_dir / JOURNAL_NAME,
                exc,
            )
            return None
        if not resume:
            journal.forget()
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
        if not self.replay or self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT type, data FROM outputs WHERE thread = ? AND key = ?",
                (self.thread_id, key),
            ).fetchone()
            if row is None:
                return None
            outputs = self._serde.loads_typed((row[0], row[1]))
        except Exception as exc:
            log.warning("Ignoring an unreadable output journal entry: %s", exc)
            return None
        if not isinstance(outputs, dict) or not _media_present(outputs):
            return None  # a media file was deleted since: run the node again
        return outputs

    def put(self, key: str, node: str, outputs: Mapping[str, Any]) -> None:
        """Commit ``outputs`` under ``key`` (before the node returns to LangGraph)."""
        if self._db is None:
            return
        try:
            kind, data = self._serde.dumps_typed(dict(outputs))
            self._db.execute(
                "INSERT OR REPLACE INTO outputs (thread, key, node, type, data) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.thread_id, key, node, kind, data),
            )
        except Exception as exc:  # never fail a node that has been paid for
            log.warning("Node %r: its outputs were not journaled (%s).", node, exc)

    def put_inputs(self, state: Mapping[str, Any]) -> None:
        """Commit a fresh run's initial state: a run killed before LangGraph saved its first
        checkpoint then resumes from these inputs (its journaled nodes replaying)."""
        self.put(_INPUTS, _INPUTS, state)

    def inputs(self) -> dict[str, Any] | None:
        """The journaled initial state of this thread's run, if any."""
        replay, self.replay = self.replay, True
        try:
            return self.get(_INPUTS)
        finally:
            self.replay = replay

    def forget(self) -> None:
        """Drop this thread's entries (a fresh run on it, or a run that completed)."""
        if self._db is None:
            return
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("DELETE FROM outputs WHERE thread = ?", (self.thread_id,))

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


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
