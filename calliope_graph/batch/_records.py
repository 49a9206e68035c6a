"""What a batch reports: its running stats, its events, its summary, and the pieces of an
item's record (outputs, object-store URIs, the first image)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from calliope_graph.flow._runtime import FlowEvent
from calliope_graph.flow.trace import Trace, jsonable

if TYPE_CHECKING:
    from calliope_graph.batch._items import BatchInputError
    from calliope_graph.batch._local import _Batch

__all__ = ["BatchEvent", "BatchStats", "BatchSummary"]


@dataclass
class BatchStats:
    """Live counters of a batch (what progress displays read)."""

    total: int | None = None
    """Items in the input, when it could be counted up front."""
    started_at: float = field(default_factory=time.time)
    ok: int = 0
    """Items whose latest state is ok (including those ok before this run)."""
    failed: int = 0
    running: int = 0
    skipped: int = 0
    """Items already ok in the manifest, not run again."""
    not_started: int = 0
    ran: int = 0
    """Items finished in this run."""
    spent: float = 0.0
    """USD spent by the batch (every manifest line, earlier runs included)."""
    spent_this_run: float = 0.0
    unpriced: int = 0
    """Items of this run whose cost is unknown (a model without a price)."""
    calls: Counter[str] = field(default_factory=Counter)
    """Provider → requests made in this run (finished node executions)."""
    in_flight: Counter[str] = field(default_factory=Counter)
    """Provider → node executions calling it right now."""
    rate_limited: Counter[str] = field(default_factory=Counter)
    """Provider → 429 answers seen in this run (each one retried or failed)."""
    limiter_waits: dict[str, float] = field(default_factory=dict)
    """Provider → seconds spent waiting on the shared rate limiter (filled by the limiter
    when it is wired under the engines; empty until then)."""

    @property
    def elapsed(self) -> float:
        return max(time.time() - self.started_at, 0.0)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def throughput(self) -> float:
        """Items finished per second in this run."""
        return self.ran / self.elapsed if self.elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds until every item is done at the current pace (None: unknown)."""
        rate = self.throughput()
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.done - self.not_started, 0) / rate


@dataclass(frozen=True)
class BatchEvent:
    """Something a batch did: ``item_started``, ``item_finished`` (with its manifest
    ``record``), ``node`` (a node event of a running item), ``budget_stop``, ``report``."""

    kind: Literal["item_started", "item_finished", "node", "budget_stop", "report"]
    stats: BatchStats
    item_id: str | None = None
    record: dict[str, Any] | None = None
    node_event: FlowEvent | None = None
    message: str = ""


@dataclass
class BatchSummary:
    """A finished (or stopped) batch."""

    flow: str
    out_dir: Path
    manifest: Path
    report: Path | None
    total: int
    """Items read from the input."""
    ok: int
    failed: int
    skipped: int
    """Already ok before this run (not run again)."""
    ran: int
    """Items run in this run."""
    not_started: list[str]
    """Ids of items that have no manifest line (budget reached, or not selected)."""
    cost: float
    """USD spent by the whole batch (all manifest lines)."""
    cost_this_run: float
    unpriced: int
    calls: dict[str, int]
    """Provider → requests made in this run."""
    rate_limited: dict[str, int]
    wall_time: float
    budget: float | None = None
    budget_stopped: bool = False
    budget_message: str = ""
    failures: dict[str, int] = field(default_factory=dict)
    """``"<error class> at <node>"`` → items failed that way."""
    input_error: str | None = None
    """The input row that stopped the batch early (also raised as a BatchInputError)."""

    @property
    def all_ok(self) -> bool:
        return self.failed == 0 and not self.not_started and self.input_error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "out_dir": str(self.out_dir),
            "manifest": str(self.manifest),
            "report": str(self.report) if self.report else None,
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "ran": self.ran,
            "not_started": len(self.not_started),
            "not_started_ids": self.not_started,
            "cost": round(self.cost, 6),
            "cost_this_run": round(self.cost_this_run, 6),
            "unpriced": self.unpriced,
            "calls": self.calls,
            "rate_limited": self.rate_limited,
            "wall_time": round(self.wall_time, 3),
            "budget": self.budget,
            "budget_stopped": self.budget_stopped,
            "budget_message": self.budget_message,
            "failures": self.failures,
            "input_error": self.input_error,
        }


def _mark_unbilled(trace: Trace, counted_until: float | None) -> None:
    """Mark the executions a resumed item carried over that no manifest line counted: those
    of attempts killed or stopped before their item finished, i.e. that ended after the
    item's latest line (or with no line at all). This attempt's line counts them, once."""
    for execution in trace.executions:
        if execution.resumed and not execution.cache_hit:
            ended = execution.ended_at or execution.started_at
            execution.unbilled = counted_until is None or ended > counted_until


def _larger(budget: float) -> str:
    """A budget to suggest for continuing: twice this one, as a short number."""
    return f"{budget * 2:g}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _outputs(values: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Flow outputs for the manifest: media as paths relative to ``root`` (an output that is
    media, or a list of them, as the path; media inside an object keep their reference, with
    the path relative too: ``frames[].image.path``)."""

    def simple(value: Any, top: bool = True) -> Any:
        if isinstance(value, dict):
            if top and value.get("type") in ("image", "audio", "video") and "path" in value:
                return value["path"]
            return {k: simple(v, top=False) for k, v in value.items()}
        if isinstance(value, list):
            return [simple(v, top) for v in value]
        return value

    return {name: simple(jsonable(value, root=root)) for name, value in values.items()}


def _uris(values: Mapping[str, Any]) -> dict[str, Any]:
    """Where the media outputs are kept in object storage (``--media-store``): the
    manifest's ``uris``, shaped like its ``outputs``; empty when nothing is stored."""

    def find(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("type") in ("image", "audio", "video"):
                return value.get("uri")
            found = {k: v for k, v in ((k, find(v)) for k, v in value.items()) if v}
            return found or None
        if isinstance(value, list):
            items = [find(v) for v in value]
            return items if any(items) else None
        return None

    found = {name: find(jsonable(value)) for name, value in values.items()}
    return {k: v for k, v in found.items() if v}


def busy_time(records: Iterable[Mapping[str, Any]]) -> float:
    """Seconds during which at least one of ``records`` was running (the union of their
    ``started_at``..``ended_at``): the wall time of the runs that wrote them, without the
    pauses between a run and its ``--resume``."""
    spans: list[tuple[float, float]] = []
    for record in records:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            start, end = (
                datetime.fromisoformat(str(record[k]).replace("Z", "+00:00")).timestamp()
                for k in ("started_at", "ended_at")
            )
            if end >= start:
                spans.append((start, end))
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _first_image(outputs: Mapping[str, Any], folder: str) -> str | None:
    """Path (relative to OUT) of the item's first image output, for a thumbnail."""
    for value in outputs.values():
        if (
            isinstance(value, str)
            and value.startswith(folder + "/")
            and value.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif"))
        ):
            return value
    return None


def _summary(batch: _Batch, report: Path | None, error: BatchInputError | None) -> BatchSummary:
    s = batch.stats
    failures: Counter[str] = Counter()
    for record in batch.records.values():
        err = record.get("error")
        if record.get("status") == "failed" and isinstance(err, dict):
            where = f" at {err['node']}" if err.get("node") else ""
            failures[f"{err.get('class')}{where}"] += 1
    return BatchSummary(
        flow=batch.plan.spec.name,
        out_dir=batch.out,
        manifest=batch.manifest.path,
        report=report,
        total=s.ok + s.failed + s.not_started,
        ok=s.ok,
        failed=s.failed,
        skipped=s.skipped,
        ran=s.ran,
        not_started=[i for i, _ in batch.not_started],
        cost=s.spent,
        cost_this_run=s.spent_this_run,
        unpriced=s.unpriced,
        calls=dict(s.calls),
        rate_limited=dict(s.rate_limited),
        wall_time=s.elapsed,
        budget=batch.budget,
        budget_stopped=bool(batch.budget_message),
        budget_message=batch.budget_message,
        failures=dict(failures.most_common()),
        input_error=str(error) if error is not None else None,
    )
