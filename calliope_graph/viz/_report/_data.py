"""Data preparation: what the run did, per node and edge, before anything is drawn."""

from __future__ import annotations

import contextlib
import mimetypes
import time
from pathlib import Path
from typing import Any

from calliope_graph.flow.trace import NodeExecution, Trace
from calliope_graph.viz._graph import edge_list
from calliope_graph.viz._report._format import node_slug

__all__ = ["RunData", "drawing_state", "node_outcomes", "spec_fallbacks"]


def _last(executions: list[NodeExecution]) -> NodeExecution:
    return max(executions, key=lambda e: (e.iteration, e.started_at))


def node_outcomes(trace: Trace) -> dict[str, str]:
    """Each executed node's outcome: its last execution's status (``running`` wins)."""
    out: dict[str, str] = {}
    for name, executions in trace.by_node().items():
        if any(e.status == "running" for e in executions):
            out[name] = "running"
        else:
            out[name] = _last(executions).status
    return out


def drawing_state(trace: Trace, graph: Any) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """(outcome per drawing node, taken edges as (source, target, kind)) for a run's trace."""
    by_node = trace.by_node()
    outcomes = node_outcomes(trace)
    spec = trace.spec
    started = bool(trace.executions)

    def input_given(name: str) -> bool:
        if trace.inputs.get(name) is not None:
            return True
        given = spec.inputs.get(name) if spec is not None else None
        return started and given is not None and (given.default is not None or not given.required)

    status: dict[str, str] = {}
    for node, attrs in graph.nodes(data=True):
        role = attrs["role"]
        _, _, rest = node.partition(".")
        if role == "node":
            status[node] = outcomes.get(node, "not_run")
        elif role == "input":
            status[node] = "ok" if input_given(rest) else "not_run"
        elif role == "output":
            status[node] = "ok" if trace.outputs.get(rest) is not None else "not_run"
        elif role == "continue":
            skipped = any(e.branch == "continue" for e in by_node.get(rest, []))
            status[node] = "ok" if skipped else "not_run"

    def branches(node: str) -> set[str]:
        return {e.branch for e in by_node.get(node, []) if e.branch}

    def produced(node: str, seen: frozenset[str] = frozenset()) -> bool:
        if node in seen:
            return False
        if graph.nodes[node]["role"] == "input":
            return status.get(node) == "ok"
        for execution in by_node.get(node, []):
            if execution.status in ("ok", "cache_hit"):
                return True
            branch = execution.branch or ""
            if branch.startswith("fallback:") and produced(branch[9:], seen | {node}):
                return True  # the fallback's outputs stand in for this node's
        return False

    def ran(node: str) -> bool:
        role = graph.nodes[node]["role"]
        if role == "node":
            return node in by_node
        return status.get(node) == "ok"

    taken: set[tuple[str, str, str]] = set()
    for u, v, attrs in edge_list(graph):
        kind = attrs["kind"]
        hit = False
        if kind == "data":
            hit = produced(u) and ran(v)
        elif kind == "fallback":
            hit = f"fallback:{v}" in branches(u)
        elif kind == "continue":
            hit = "continue" in branches(u)
        elif kind == "rewrite":
            hit = f"rewrite:{v}" in branches(u)
        elif kind == "rewrite_back":
            hit = produced(u) and any(e.iteration > 1 for e in by_node.get(v, []))
        if hit:
            taken.add((u, v, kind))
    return status, taken


def spec_fallbacks(spec: Any) -> set[str]:
    try:
        return set(spec.fallback_nodes())
    except Exception:
        return set()


class RunData:
    """What the report shows of one trace, computed once: node ids, times, critical path."""

    def __init__(self, trace: Trace, out_path: Path) -> None:
        self.trace = trace
        self.report_dir = out_path.parent.resolve()
        root = Path(trace.out_dir) if trace.out_dir else self.report_dir
        self.media_root = root if root.is_absolute() else (Path.cwd() / root)
        self.now = time.time()
        self.running = trace.status == "running"
        self._latest: float | None = None
        self.ids: dict[str, str] = {}
        used: set[str] = set()
        for name in self.node_names():
            self.ids[name] = node_slug(name, used)
        self.critical: tuple[float, list[str]] = (0.0, [])
        with contextlib.suppress(Exception):  # a trace from another version still renders
            self.critical = trace.critical_path()

    def node_names(self) -> list[str]:
        names = list(self.trace.spec.nodes) if self.trace.spec is not None else []
        for execution in self.trace.executions:
            if execution.node not in names:
                names.append(execution.node)
        return names

    def end_of(self, execution: NodeExecution) -> float:
        if execution.ended_at is not None:
            return execution.ended_at
        return max(self.latest(), execution.started_at)

    def latest(self) -> float:
        """The last moment the trace knows of (now, for a live run that is not stale)."""
        if self._latest is None:
            self._latest = self._compute_latest()
        return self._latest

    def _compute_latest(self) -> float:
        times = [self.trace.started_at]
        if self.trace.ended_at is not None:
            times.append(self.trace.ended_at)
        for e in self.trace.executions:
            times.append(e.started_at)
            if e.ended_at is not None:
                times.append(e.ended_at)
            times += [b for _, b in e.retry_times]
        known = max(times)
        live = self.running or any(e.ended_at is None for e in self.trace.executions)
        if live and 0 <= self.now - known < 6 * 3600:
            return self.now
        return known

    def wall_time(self) -> float:
        if self.trace.ended_at is not None:
            return self.trace.wall_time
        return max(self.latest() - self.trace.started_at, 0.0)

    def typed_inputs(self) -> dict[str, Any]:
        """The flow inputs, with a media input given as a bare path shown as that medium."""
        out = dict(self.trace.inputs)
        spec = self.trace.spec
        if spec is None:
            return out
        for name, value in out.items():
            declared = spec.inputs.get(name)
            kind = declared.type if declared is not None else None
            if kind in ("image", "audio", "video") and isinstance(value, str) and value:
                mime = mimetypes.guess_type(value)[0] or ""
                out[name] = {"type": kind, "path": value, "mime": mime}
        return out
