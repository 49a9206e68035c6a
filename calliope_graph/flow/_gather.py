"""How a compiled node reads its inputs from the flow's state (and its cache key).

Shared by the kernel and every construct's lowering; nothing here imports LangGraph.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calliope_graph._schema import get_field
from calliope_graph.errors import FlowRunError
from calliope_graph.flow._names import ITEM_KEY, input_key, override_key, port_key
from calliope_graph.flow.trace import jsonable
from calliope_graph.media import Audio, Image, Video

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow.spec import Ref

__all__ = ["Gather", "cache_key", "read_ref"]

_MISSING = object()


class Gather:
    """Reads a node's inputs from state: field paths into objects, the current map item,
    ``many`` ports gathering present values (a map's list extends them), and a list of
    sources into a one-value port taking whichever produced (a switch's branches)."""

    def __init__(self, plan: Plan, name: str) -> None:
        node = plan.nodes[name]
        self.many = {p.name for p in node.input_ports if p.many}
        self.required = {p.name for p in node.input_ports if p.required}
        scope = plan.item_scope(name)
        spec = plan.spec.nodes[scope].map if scope is not None else None
        item = spec.as_ if spec is not None else None
        self.sources: list[tuple[str, str, tuple[str, ...]]] = []
        for port, ref in plan.wiring[name]:
            if item is not None and ref.node == item:
                path = tuple(f for f in (ref.port, *ref.fields) if f)
                self.sources.append((port, ITEM_KEY, path))
            elif ref.is_input:
                self.sources.append((port, input_key(ref.port), ref.fields))
            else:
                self.sources.append((port, port_key(ref.node, ref.port), ref.fields))
        self.overrides = [
            (route.rewrite.port, override_key(name, route.rewrite.port))
            for route in plan.spec.nodes[name].on_error
            if route.rewrite is not None
        ]
        self.name = name
        # The common case read at a tenth of the cost: whole values of single-value ports
        # (no field path, no map item, no ``many`` port, no rewrite override).
        plain = not self.many and not self.overrides
        plain = plain and all(not f and k != ITEM_KEY for _, k, f in self.sources)
        self._plain = [(p, k) for p, k, _ in self.sources] if plain else None
        self._needed = {p for p, _, _ in self.sources} & self.required

    def _read(self, state: dict[str, Any], key: str, fields: tuple[str, ...]) -> Any:
        value = state.get(key, _MISSING)
        if key == ITEM_KEY and isinstance(value, dict):
            value = value.get("value", _MISSING)
        for name in fields:
            if value is _MISSING or value is None:
                return value
            try:
                value = get_field(value, name)
            except KeyError as exc:
                raise FlowRunError(
                    f"Node {self.name!r}: cannot read {'.'.join(fields)!r} of {key!r}: "
                    f"{exc.args[0]}.",
                    node=self.name,
                ) from None
        return value

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        if self._plain is not None:
            inputs: dict[str, Any] = {}
            for port, key in self._plain:
                if port not in inputs:  # the first present source wins
                    value = state.get(key)
                    if value is not None:
                        inputs[port] = value
            if self._needed.issubset(inputs):
                return inputs
        return self._gather(state)  # (a missing input is raised there)

    def _gather(self, state: dict[str, Any]) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for port, key, fields in self.sources:
            value = self._read(state, key, fields)
            present = value is not _MISSING and value is not None
            if port in self.many:
                bucket = inputs.setdefault(port, [])
                if present:
                    bucket.extend(value) if isinstance(value, list) else bucket.append(value)
            elif present and port not in inputs:  # first present source wins
                inputs[port] = value
        for port, key in self.overrides:
            value = state.get(key)
            if value is not None:
                inputs[port] = value
        wired = {p for p, _, _ in self.sources}
        for port in sorted((wired & self.required) - set(inputs) - self.many):
            keys = [k for p, k, _ in self.sources if p == port]
            raise FlowRunError(
                f"Node {self.name!r}: input {port!r} has no value ({' or '.join(keys)} was not "
                "produced: its node was skipped).",
                node=self.name,
            )
        return inputs


def cache_key(gather: Gather) -> Callable[[Any], str]:
    def key(state: Any) -> str:
        try:
            inputs = gather(dict(state))
        except FlowRunError:
            return "missing"
        summary = jsonable(inputs)
        for value in inputs.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Image | Audio | Video) and Path(item.path).exists():
                    stat = Path(item.path).stat()
                    summary[f"~{item.path}"] = [stat.st_size, stat.st_mtime_ns]
        text = json.dumps(summary, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    return key


def read_ref(state: dict[str, Any], ref: Ref) -> Any:
    """What ``ref`` reads in a flow's state (None when it was not produced)."""
    key = input_key(ref.port) if ref.is_input else port_key(ref.node, ref.port)
    value = state.get(key)
    for field_name in ref.fields:
        value = get_field(value, field_name) if value is not None else None
    return value
