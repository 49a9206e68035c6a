"""``OUT/batch.jsonl``: one JSON line appended per finished item, flushed and fsynced.

A line is written only when an item has finished (``ok`` or ``failed``), so after a kill -9
the file holds exactly the items that finished; the latest line of an id is its state. A
line cut short by a kill mid-write is ignored when read back, and the next append starts on
a fresh line. Fields (see README "Many stories"):

``id``, ``status`` (``ok`` | ``failed``), ``thread_id``, ``flow``, ``source`` (file:line),
``outputs`` (text as text, media as paths relative to OUT), ``error`` (``{class, node,
message}``, redacted; null when ok), ``attempts`` (provider requests, retries included),
``calls`` (``{provider: requests}``), ``rate_limits`` (``{provider: 429s}``), ``cost`` (USD,
null when a model has no price), ``started_at``/``ended_at`` (ISO 8601, UTC), ``seconds``.
``attempts``, ``calls`` and ``cost`` count this attempt only (work carried over from an
earlier attempt of the item's thread is not paid again) — plus the calls an attempt killed
before it wrote a line had paid for (replayed from the output journal): so every paid call
is counted once across the lines.

A line is all or nothing on a full disk too: a write the disk refuses is cut back off the
file (truncating needs no space) and raised as one
:class:`~calliope_graph.errors.DiskFullError` naming the folder, so the file holds whole
lines only and the item, having no line, runs again on ``--resume`` (its thread and the
output journal keep what it paid for).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calliope_graph.errors import ConfigurationError, disk_full

__all__ = ["MANIFEST_NAME", "Manifest", "ManifestState"]

MANIFEST_NAME = "batch.jsonl"


@dataclass
class ManifestState:
    """What a manifest already says: the latest line per id, and everything spent."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    spent: float = 0.0
    """USD over every line (a failed attempt, then its retry, both paid)."""
    flows: set[str] = field(default_factory=set)
    lines: int = 0

    def status(self, item_id: str) -> str | None:
        record = self.latest.get(item_id)
        return None if record is None else str(record.get("status"))


class Manifest:
    """The append-only manifest of one batch folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def read(self) -> ManifestState:
        """Every complete line; a torn last line (a kill mid-write) is skipped."""
        state = ManifestState()
        if not self.path.is_file():
            return state
        with self.path.open(encoding="utf-8") as fh:
            for number, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    if not text.endswith("\n"):
                        continue  # the torn last line of a killed run
                    raise ConfigurationError(
                        f"{self.path}:{number} is not a manifest line (not JSON): the batch "
                        "folder's batch.jsonl was edited; fix or remove that line."
                    ) from None
                if not isinstance(record, dict) or "id" not in record:
                    continue
                state.lines += 1
                state.latest[str(record["id"])] = record
                cost = record.get("cost")
                if isinstance(cost, int | float):
                    state.spent += float(cost)
                if record.get("flow"):
                    state.flows.add(str(record["flow"]))
        return state

    def append(self, record: dict[str, Any]) -> None:
        """Write one line and make it durable (flush + fsync) before returning; on a full
        disk the file is left as it was and :class:`DiskFullError` is raised."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        data = (line + "\n").encode("utf-8")
        torn = False
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            torn = _torn(self.path)
        size = os.fstat(self._fd).st_size
        if torn:  # a line cut short by a kill mid-write: the next line starts afresh
            data = b"\n" + data
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            full = disk_full(exc, self.path.parent, needed=len(data), what=self.path.name)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)  # whole lines only (needs no space)
            self.close()  # the next line checks the file's end again
            if full is None or full is exc:
                raise
            raise full from exc

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _torn(path: Path) -> bool:
    """``path`` ends in a line cut short (no newline)."""
    if not path.stat().st_size:
        return False
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte of ``data`` is written (a write may take fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
