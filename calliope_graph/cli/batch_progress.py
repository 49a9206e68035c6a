"""Batch progress for the command line: a live rich display, plain lines, or JSON events.

- :class:`LiveProgress` (stderr is a terminal): items done / failed / running, throughput,
  ETA, spend, and per provider the calls in flight, requests made, 429s seen and time spent
  waiting on the shared limiter (``BatchStats.limiter_waits``, filled once it is wired).
- :class:`PlainProgress` (not a terminal): one line per finished item.
- :class:`JsonProgress` (``--json``): one JSON object per line on stdout —
  ``{"event": "item_started" | "item_finished" | "budget_stop" | "summary", ...}``.
"""

from __future__ import annotations

import json
import sys
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from calliope_graph.batch import BatchEvent, BatchStats

__all__ = ["JsonProgress", "LiveProgress", "PlainProgress", "fmt_duration"]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _item_line(record: dict[str, Any], stats: BatchStats) -> str:
    total = f"/{stats.total}" if stats.total is not None else ""
    cost = record.get("cost")
    money = f"${cost:.4f}" if isinstance(cost, int | float) else "$?"
    head = f"[{stats.done}{total}] {record['status']:<6} {record['id']}  {record['seconds']:.2f}s"
    if record["status"] == "ok":
        return f"{head}  {money}"
    error = record.get("error") or {}
    where = f" at {error.get('node')}" if error.get("node") else ""
    message = str(error.get("message") or "")
    if len(message) > 200:
        message = message[:200] + "…"
    return f"{head}  {error.get('class')}{where}: {message}"


class PlainProgress:
    """One line per finished item (and the budget stop) on ``console``."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: BatchEvent) -> None:
        if event.kind == "item_finished" and event.record is not None:
            self.console.print(_item_line(event.record, event.stats), markup=False, soft_wrap=True)
        elif event.kind == "budget_stop":
            self.console.print(event.message, markup=False, soft_wrap=True)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class JsonProgress:
    """One JSON event per line on ``stream`` (stdout), flushed as it happens."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def write(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()

    def __call__(self, event: BatchEvent) -> None:
        if event.kind == "item_started":
            self.write({"event": "item_started", "id": event.item_id, "source": event.message})
        elif event.kind == "item_finished" and event.record is not None:
            self.write({"event": "item_finished", **event.record})
        elif event.kind == "budget_stop":
            self.write({"event": "budget_stop", "message": event.message})

    def __enter__(self) -> JsonProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class LiveProgress:
    """A live rich display of the batch, redrawn a few times a second."""

    def __init__(self, console: Console, flow: str) -> None:
        self.console = console
        self.flow = flow
        self.stats: BatchStats | None = None
        self.recent: list[str] = []
        self.live = Live(
            self, console=console, refresh_per_second=4, transient=False, redirect_stdout=False
        )

    def __call__(self, event: BatchEvent) -> None:
        self.stats = event.stats
        if event.kind == "item_finished" and event.record is not None:
            record = event.record
            if record["status"] != "ok":
                self.recent.append(_item_line(record, event.stats))
                self.recent = self.recent[-5:]
        elif event.kind == "budget_stop":
            self.recent.append(event.message)

    def __enter__(self) -> LiveProgress:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def __rich__(self) -> Group:
        s = self.stats
        if s is None:
            return Group(Text(f"batch {self.flow}: starting…"))
        total = s.total
        width = 20
        done = s.done + s.not_started
        filled = int(width * done / total) if total else 0
        bar = "█" * filled + "░" * (width - filled)
        rate = s.throughput()
        head = Text.assemble(
            ("batch ", "bold"),
            (self.flow, "bold cyan"),
            f"  {bar}  ",
            (f"{s.done}", "bold"),
            f"/{total if total is not None else '?'}  ",
            ("ok ", "green"),
            f"{s.ok}  ",
            ("failed ", "red"),
            f"{s.failed}  ",
            ("running ", "blue"),
            f"{s.running}",
        )
        if s.skipped:
            head.append(f"  (already ok {s.skipped})", "dim")
        line2 = Text(
            f"{rate:.2f} items/s  ETA {fmt_duration(s.eta())}  elapsed "
            f"{fmt_duration(s.elapsed)}  spent ${s.spent:.4f}"
            + (f" ({s.unpriced} unpriced)" if s.unpriced else ""),
            style="dim",
        )
        parts: list[Any] = [head, line2]
        providers = sorted(
            set(s.calls) | set(s.in_flight) | set(s.rate_limited) | set(s.limiter_waits)
        )
        if providers:
            table = Table(box=None, pad_edge=False, show_edge=False, header_style="dim")
            table.add_column("provider")
            table.add_column("in flight", justify="right")
            table.add_column("calls", justify="right")
            table.add_column("429s", justify="right")
            table.add_column("limiter wait", justify="right")
            for p in providers:
                wait = s.limiter_waits.get(p)
                table.add_row(
                    p,
                    str(s.in_flight.get(p, 0)),
                    str(s.calls.get(p, 0)),
                    str(s.rate_limited.get(p, 0)),
                    f"{wait:.1f}s" if wait else "-",
                )
            parts.append(table)
        parts.extend(Text(line, style="red") for line in self.recent)
        return Group(*parts)
