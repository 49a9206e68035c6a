"""Data preparation: what the run did, per node and edge, before anything is drawn."""

from __future__ import annotations

import contextlib
import mimetypes
import re
import time
from pathlib import Path
from typing import Any

from calliope_graph.flow.trace import NodeExecution, Trace
from calliope_graph.viz._graph import edge_list
from calliope_graph.viz._report._format import node_slug

__all__ = [
    "RunData",
    "aggregate",
    "base_name",
    "by_base",
    "drawing_state",
    "lane_key",
    "lane_parent",
    "node_outcomes",
    "outcome",
    "spec_fallbacks",
    "switch_choices",
]

_ITEM = re.compile(r"\[\d+\]")


def base_name(node: str) -> str:
    """A trace name without map item indices: ``scenes[2]/illustration/image`` →
    ``scenes/illustration/image`` (the id the drawing gives that node)."""
    return _ITEM.sub("", node)


def lane_key(e: NodeExecution) -> str:
    """Where an execution belongs: its qualified name, with ``[item]`` for a mapped node's
    own executions (``scenes[2]``)."""
    return f"{e.node}[{e.item}]" if e.own_item is not None else e.node


def lane_parent(key: str) -> str | None:
    """The lane a lane is nested under: ``scenes[2]`` → ``scenes`` (the map),
    ``scenes[2]/frame`` → ``scenes[2]`` (its item), ``illustration/image`` → ``illustration``."""
    last = key.rsplit("/", 1)[-1]
    if last.endswith("]") and "[" in last:
        return key[: key.rindex("[")]
    if "/" in key:
        return key.rsplit("/", 1)[0]
    return None


def outcome(e: NodeExecution) -> str:
    """An execution's outcome as the report shows it: a switch's branch that was not taken
    is ``not_taken`` (greyed), not ``skipped``."""
    if e.status == "skipped" and (e.branch or "").startswith("switch:"):
        return "not_taken"
    return str(e.status)


_SEVERITY = [
    "running",
    "waiting",
    "failed",
    "interrupted",
    "fallback",
    "skipped",
    "ok",
    "cache_hit",
]


def aggregate(executions: list[NodeExecution]) -> str:
    """One outcome for many executions (a mapped node's items, a node inside a map): each
    instance's last execution, then the most telling of those (running, failed, … ok)."""
    if not executions:
        return "not_run"
    last: dict[str, NodeExecution] = {}
    for e in executions:
        key = lane_key(e)
        if key not in last or (e.iteration, e.started_at) >= (
            last[key].iteration,
            last[key].started_at,
        ):
            last[key] = e
    if any(e.status == "running" for e in executions):
        return "running"
    found = {outcome(e) for e in last.values()}
    if found == {"not_taken"}:
        return "not_taken"
    for status in _SEVERITY:
        if status in found:
            return status
    return sorted(found)[0]


def switch_choices(trace: Trace) -> list[tuple[NodeExecution, str, str, list[str]]]:
    """(switch execution, chosen node, the condition that held or ``default``, nodes not
    taken) for every switch that ran, in order."""
    out: list[tuple[NodeExecution, str, str, list[str]]] = []
    skipped: dict[str, list[str]] = {}
    for e in trace.executions:
        branch = e.branch or ""
        if e.status == "skipped" and branch.startswith("switch:"):
            skipped.setdefault(branch, []).append(e.node.rsplit("/", 1)[-1])
    for e in trace.executions:
        if e.kind != "switch" or e.status not in ("ok", "cache_hit"):
            continue
        chosen = e.outputs.get("branch")
        if not isinstance(chosen, str):
            continue
        condition = "default"
        params = e.params or {}
        spec = trace.spec
        if not params and spec is not None and e.node in spec.nodes:
            params = spec.nodes[e.node].params
        for case in params.get("cases") or []:
            if isinstance(case, dict) and case.get("goto") == chosen:
                condition = str(case.get("when", ""))
                break
        local = e.node.rsplit("/", 1)[-1]
        out.append((e, chosen, condition, skipped.get(f"switch:{local}→{chosen}", [])))
    return out


def _last(executions: list[NodeExecution]) -> NodeExecution:
    return max(executions, key=lambda e: (e.iteration, e.started_at))


def node_outcomes(trace: Trace) -> dict[str, str]:
    """Each executed node's outcome: its last execution's status (``running`` wins; a
    mapped node's items are summed up by :func:`aggregate`; a branch a switch did not take
    is ``not_taken``)."""
    out: dict[str, str] = {}
    for name, executions in trace.by_node().items():
        if any(e.status == "running" for e in executions):
            out[name] = "running"
        elif any(e.own_item is not None for e in executions):
            out[name] = aggregate(executions)
        else:
            out[name] = outcome(_last(executions))
    return out


def by_base(trace: Trace) -> dict[str, list[NodeExecution]]:
    """Executions by drawing id (trace names without map item indices)."""
    out: dict[str, list[NodeExecution]] = {}
    for e in trace.executions:
        out.setdefault(base_name(e.node), []).append(e)
    return out


def drawing_state(trace: Trace, graph: Any) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """(outcome per drawing node, taken edges as (source, target, kind)) for a run's trace.

    Subflow clusters are coloured too: their nodes' ids are the trace's names without map
    item indices, so a node inside a map sums up its items (:func:`aggregate`)."""
    executions = by_base(trace)
    spec = trace.spec
    started = bool(trace.executions)

    def input_given(name: str) -> bool:
        if trace.inputs.get(name) is not None:
            return True
        given = spec.inputs.get(name) if spec is not None else None
        return started and given is not None and (given.default is not None or not given.required)

    status: dict[str, str] = {}
    taken: set[tuple[str, str, str]] = set()
    _level(trace, graph, None, executions, input_given, status, taken)
    return status, taken


def _level(
    trace: Trace,
    graph: Any,
    parent: str | None,
    by_node: dict[str, list[NodeExecution]],
    input_given: Any,
    status: dict[str, str],
    taken: set[tuple[str, str, str]],
) -> None:
    """Status and taken edges of one flow level (the top, or one subflow's cluster)."""
    for node, attrs in graph.nodes(data=True):
        role = attrs["role"]
        local = node.rsplit("/", 1)[-1] if parent is not None else node
        _, _, rest = local.partition(".")
        if role == "node":
            status[node] = aggregate(by_node.get(node, []))
        elif role == "input":
            if parent is None:
                status[node] = "ok" if input_given(rest) else "not_run"
            else:
                entered = any(e.status != "skipped" for e in by_node.get(parent, []))
                status[node] = "ok" if entered else "not_run"
        elif role == "continue":
            owner = node[: -len(local)] + rest if parent is not None else rest
            skipped = any(e.branch == "continue" for e in by_node.get(owner, []))
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
            if branch.startswith("fallback:"):
                prefix = node[: -len(node.rsplit("/", 1)[-1])] if parent is not None else ""
                if prefix + branch[9:] in graph and produced(prefix + branch[9:], seen | {node}):
                    return True  # the fallback's outputs stand in for this node's
        return False

    def ran(node: str) -> bool:
        role = graph.nodes[node]["role"]
        if role == "node":
            return any(outcome(e) != "not_taken" for e in by_node.get(node, []))
        return status.get(node) == "ok"

    for node, attrs in graph.nodes(data=True):
        if attrs["role"] == "output":
            fed = any(produced(u) for u in graph.predecessors(node))
            if parent is None:
                _, _, rest = node.partition(".")
                fed = trace.outputs.get(rest) is not None
            status[node] = "ok" if fed else "not_run"

    for u, v, attrs in edge_list(graph):
        kind = attrs["kind"]
        hit = False
        target = v.rsplit("/", 1)[-1] if parent is not None else v
        if kind in ("data", "map"):
            hit = produced(u) and ran(v)
        elif kind == "fallback":
            hit = f"fallback:{target}" in branches(u)
        elif kind == "continue":
            hit = "continue" in branches(u)
        elif kind == "rewrite":
            hit = f"rewrite:{target}" in branches(u)
        elif kind == "rewrite_back":
            hit = produced(u) and any(e.iteration > 1 for e in by_node.get(v, []))
        elif kind == "switch":
            hit = any(e.outputs.get("branch") == target for e in by_node.get(u, []))
        if hit:
            taken.add((u, v, kind))
    for node, attrs in graph.nodes(data=True):
        if attrs.get("cluster") is not None:
            _level(trace, attrs["cluster"], node, by_node, input_given, status, taken)


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
