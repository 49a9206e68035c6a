"""The run trace: what each node execution did, serialised to ``trace.json``.

A trace carries the flow description too, so a report can be drawn from the trace alone
(``calliope-graph report trace.json``). Values are summarised as JSON-native data by
:func:`jsonable`: text (truncated), media as references ``{"type": "image", "path": ...,
"mime": ..., "width": ...}`` with paths relative to the output directory where possible,
pydantic objects as dicts, and a typed placeholder — never a ``repr`` — for a value it does
not know. The runner redacts every summary before it lands here (``calliope_graph._secrets``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import numbers
import os
from pathlib import Path, PurePath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph._files import write_atomic
from calliope_graph._usage import ProviderCall
from calliope_graph.flow.spec import FlowSpec
from calliope_graph.media import Audio, Image, ImageAnalysis, Video

__all__ = ["NodeExecution", "NodeStatus", "Trace", "jsonable", "own_item"]

NodeStatus = Literal[
    "running", "ok", "failed", "skipped", "fallback", "cache_hit", "interrupted", "waiting"
]
"""``ok``: produced its outputs. ``failed``: raised and no route caught it (the run failed).
``skipped``: failed and a ``continue`` route went on without it. ``fallback``: failed and a
fallback or rewrite route took over. ``cache_hit``: outputs came from the cache.
``interrupted``: stopped from outside before it finished (the run was stopped).
``waiting``: paused for a person's choice (a ``choose`` node, ``by: human``); a resumed run
runs it again with the choice."""


class NodeExecution(BaseModel):
    """One execution of one node (a node re-run by a rewrite loop has several)."""

    model_config = ConfigDict(extra="ignore")

    node: str
    kind: str
    provider: str | None = None
    model: str | None = None
    started_at: float
    """Seconds since the epoch."""
    ended_at: float | None = None
    status: NodeStatus = "running"
    iteration: int = 1
    """1 for the first execution of this node in the run, 2 after one rewrite, ..."""
    item: int | None = None
    """The map item (0-based) this execution worked on, for a mapped node or inside one.
    ``node`` is qualified inside subflows: ``illustrate/image``, ``scenes[2]/image``."""
    attempts: int = 0
    """Provider requests made (including the engine's own retries)."""
    retries: int = 0
    """Engine-level retries (429/5xx/timeouts) within this execution."""
    retry_times: list[tuple[float, float]] = Field(default_factory=list)
    """(start, end) of each attempt, for timelines where each retry is its own bar."""
    calls: dict[str, int] = Field(default_factory=dict)
    """Provider → requests made."""
    limit_wait: float = 0.0
    """Seconds this execution waited on the shared per-provider rate limiter."""
    error_class: str | None = None
    error: str | None = None
    """Redacted message."""
    branch: str | None = None
    """The route taken on failure: ``fallback:<node>``, ``continue``, ``rewrite:<node>``."""
    cache_hit: bool = False
    resumed: bool = False
    """Ran in an earlier attempt of this thread (a resumed run carries it over)."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    provider_calls: list[ProviderCall] = Field(default_factory=list)
    """Each request sent to a provider (retries included): usage, reported or estimated,
    and its cost (see calliope_graph/_usage.py)."""
    cost_usd: float | None = 0.0
    """What the execution's requests cost at list price (None: its model has no price)."""
    unbilled: bool = False
    """Carried over (``resumed``) from an earlier attempt that no batch manifest line
    counted — killed or stopped before its item finished: its cost counts once, in this
    attempt's (set by the batch, calliope_graph/batch/_local.py)."""

    @property
    def own_item(self) -> int | None:
        """The map item when this execution is one of a mapped node's own (``scenes`` item
        2: shown ``scenes[2]``); None inside a mapped subflow, whose qualified name already
        says the item (``scenes[2]/image``)."""
        return own_item(self.node, self.item)

    @property
    def duration(self) -> float:
        return 0.0 if self.ended_at is None else max(self.ended_at - self.started_at, 0.0)


class Trace(BaseModel):
    """Everything a run did, in order."""

    model_config = ConfigDict(extra="ignore")

    flow: str
    thread_id: str
    started_at: float
    ended_at: float | None = None
    status: Literal["running", "ok", "failed", "waiting"] = "running"
    """``waiting``: paused for a person's choice (see ``waiting``)."""
    error: str | None = None
    waiting: dict[str, list[Any]] = Field(default_factory=dict)
    """While ``status`` is ``waiting``: each node waiting for a choice → its candidates,
    summarised like outputs (the report shows them; a resume picks one by index)."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    executions: list[NodeExecution] = Field(default_factory=list)
    spec: FlowSpec | None = None
    out_dir: str | None = None
    resumed_from: str | None = None
    """On a resumed run, the thread id it continued (the same as ``thread_id``); else None."""
    simulated: bool = False
    """Every provider call went to the simulator (``--simulate``, ``CALLIOPE_SIMULATE=1``):
    nothing was paid, and the media are the simulator's drawings."""

    @property
    def wall_time(self) -> float:
        end = self.ended_at if self.ended_at is not None else self.started_at
        return max(end - self.started_at, 0.0)

    def path(self) -> list[str]:
        """Node names that finished (ok or cache hit), once each, in order of completion."""
        done = [e for e in self.executions if e.status in ("ok", "cache_hit")]
        ordered = sorted(done, key=lambda e: e.ended_at or e.started_at)
        return list(dict.fromkeys(e.node for e in ordered))  # once each (a resume re-lists)

    def by_node(self) -> dict[str, list[NodeExecution]]:
        out: dict[str, list[NodeExecution]] = {}
        for execution in self.executions:
            out.setdefault(execution.node, []).append(execution)
        return out

    def calls_per_provider(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for execution in self.executions:
            for provider, n in execution.calls.items():
                total[provider] = total.get(provider, 0) + n
        return total

    def retries_per_provider(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for execution in self.executions:
            if execution.provider and execution.retries:
                total[execution.provider] = total.get(execution.provider, 0) + execution.retries
        return total

    def fallbacks(self) -> list[NodeExecution]:
        return [e for e in self.executions if e.branch]

    def critical_path(self) -> tuple[float, list[str]]:
        """The chain of dependent executions that ended last: (seconds, node names).

        Walking back from the execution that ended last, each step takes the latest-ending
        execution it waited for (a data source, the node a fallback stood in for, the
        rewriter of a loop, or an earlier attempt of the same node). The chain's executions
        never overlap, so its length is at most the wall time; the rest is scheduling.
        """
        done = [e for e in self.executions if e.ended_at is not None and not e.resumed]
        if not done:
            return (0.0, [])
        deps: dict[str, set[str]] = {}
        if self.spec is not None:
            for edge in self.spec.edges():
                if edge.target is not None:
                    deps.setdefault(edge.target, set()).add(edge.source)
        # Executions per node with their position in the trace (ties go to the earlier one).
        by_node: dict[str, list[tuple[int, NodeExecution]]] = {}
        for position, e in enumerate(done):
            by_node.setdefault(e.node, []).append((position, e))

        def latest(candidates: list[tuple[int, NodeExecution]]) -> NodeExecution:
            return max(candidates, key=lambda pe: (pe[1].ended_at or 0.0, -pe[0]))[1]

        current = latest(list(enumerate(done)))
        chain = [current]
        # Each execution once: two instant ones (a map's items, within the 1 ms tolerance)
        # would otherwise each count as the other's predecessor, for ever.
        seen = {id(current)}
        while True:
            waited = deps.get(current.node, set()) | {current.node}
            earlier = [
                (position, e)
                for node in waited
                for position, e in by_node.get(node, [])
                if id(e) not in seen and (e.ended_at or 0.0) <= current.started_at + 1e-3
            ]
            if not earlier:
                break
            current = latest(earlier)
            seen.add(id(current))
            chain.append(current)
        chain.reverse()
        return (sum(e.duration for e in chain), [e.node for e in chain])

    # -- files ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``trace.json`` atomically (a watcher never sees half a file). Not fsynced:
        a power cut can cost its latest rewrite, never a paid output (those are in the
        output journal, which syncs fully); a killed process loses nothing of it."""
        return write_atomic(path, self.model_dump_json(indent=2), durable=False)

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


_TEXT_LIMIT = 4000


def own_item(node: str, item: int | None) -> int | None:
    """``item`` unless the qualified ``node`` already says it (see NodeExecution.own_item)."""
    if item is None or node.endswith("]") or f"[{item}]/" in node:
        return None
    return item


def _relative(path: str | os.PathLike[str], root: str | Path | None) -> str:
    """``path`` relative to ``root`` where it can be (not across Windows drives)."""
    text = os.fspath(path)
    if root is not None:
        with contextlib.suppress(ValueError):
            return os.path.relpath(text, root)
    return text


def jsonable(value: Any, *, root: str | Path | None = None) -> Any:
    """A JSON-native summary of a port value: what ``json.dumps`` takes as it is.

    Text is truncated past a limit; media become references ``{"type": "image", "path":
    ...}`` and paths strings, both relative to ``root`` where possible; pydantic objects
    dicts; tuples and sets lists; enums their value; datetimes ISO 8601 strings; bytes
    ``{"type": "bytes", "size": n}``. Anything else becomes ``{"type": "unserializable",
    "class": "module.Qualname"}`` — never its ``repr``, which could carry anything.
    """
    vtype = type(value)
    if vtype is str:  # the common cases first: this runs twice per node execution
        return value if len(value) <= _TEXT_LIMIT else value[:_TEXT_LIMIT] + "…"
    if vtype is dict:  # short text values taken as they are: no call per value
        summary: dict[str, Any] = {}
        for k, v in value.items():
            short = type(v) is str and len(v) <= _TEXT_LIMIT
            summary[k if type(k) is str else str(k)] = v if short else jsonable(v, root=root)
        return summary
    if value is None or vtype is bool or vtype is int or vtype is float:
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value, root=root)
    if isinstance(value, str):
        text = str.__str__(value)
        return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "…"
    if isinstance(value, numbers.Integral):  # int subclasses, numpy integers and the like
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Image | Audio | Video):
        kind = {Image: "image", Audio: "audio", Video: "video"}[type(value)]
        data = value.model_dump(mode="json")
        data["type"] = kind
        data["path"] = _relative(value.path, root)
        return data
    if isinstance(value, PurePath):
        return _relative(value, root)
    if isinstance(value, ImageAnalysis):
        return {"type": "analysis", **value.to_dict()}
    if isinstance(value, BaseModel):
        data = value.model_dump(mode="python")
        for key, dumped in data.items():  # media inside (a frame's image) stay references
            if isinstance(dumped, dict | list | tuple):
                data[key] = getattr(value, key, dumped)
        return jsonable(data, root=root)
    if isinstance(value, dict):
        return {str(k): jsonable(v, root=root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, root=root) for v in value]
    if isinstance(value, set | frozenset):
        items = [jsonable(v, root=root) for v in value]
        with contextlib.suppress(TypeError):  # a stable order when the items compare
            items.sort()
        return items
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return {
            "type": "bytes",
            "size": value.nbytes if isinstance(value, memoryview) else len(value),
        }
    content = getattr(value, "content", None)  # langchain-core messages
    if content is not None:
        kind = getattr(value, "type", "message")
        return {
            "type": kind if isinstance(kind, str) else "message",
            "content": jsonable(content, root=root),
        }
    return {"type": "unserializable", "class": f"{vtype.__module__}.{vtype.__qualname__}"}
