"""The flow description: one pydantic model behind both front doors (builder and YAML/JSON).

A flow has a ``name``, typed ``inputs``, named ``nodes`` and ``outputs`` (``<node>.<port>``),
and optionally a ``catalog`` (a YAML model catalog extending the built-in one). Each node
names a ``kind`` (a registered node kind), an optional ``model`` (a catalog name or an inline
:class:`~calliope_graph.config.ModelConfig`), ``params``, and where each input port comes
from: ``"inputs.<name>"`` (a flow input) or ``"<node>.<port>"`` (another node's output), or
a list of those for a ``many`` port. A node may also set ``timeout`` (seconds per attempt),
``retry`` (LangGraph's ``RetryPolicy``) and ``cache`` (LangGraph's ``CachePolicy``). What
happens when a node fails is part of the graph:

``on_error`` routes, tried in order, each for a set of error classes (``when:``, one or more
of ``content_policy``, ``rate_limit``, ``transient``, ``timeout``, ``auth``,
``invalid_request``, ``media``, ``configuration``, ``empty``, ``any``):

- ``goto: <node>`` — a **fallback edge**: the named node runs instead and *stands in* for the
  failed one (its outputs are published under the failed node's output names, so
  consumers need not change). A fallback node runs only when routed to.
- ``goto: continue`` — **continue without me**: the node is skipped; its outputs are absent.
  A ``many`` input (a merge) ignores absent values.
- ``rewrite: {via: <node>, port: <input port>, max_attempts: N}`` — a **rewrite loop**
  (censor-and-retry): the ``via`` node gets the failing input and its output (``output:``,
  default its first) replaces that input port, then the node runs again; at most N
  rewrites, then the next route applies (or the run fails with a FlowRunError).

Only the shape is checked here; :mod:`calliope_graph.flow.validate` checks the meaning.
:meth:`FlowSpec.edges` lists every edge of the graph with its kind, for the drawings and
the trace's critical path; the validator and the compiler read the nodes' wiring and
routes directly.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from calliope_graph._yaml import DocumentBoundsError, check_document
from calliope_graph.config import ModelConfig
from calliope_graph.errors import FlowSpecError

__all__ = [
    "CONTINUE",
    "INPUTS",
    "CacheSpec",
    "Edge",
    "EdgeKind",
    "ErrorRoute",
    "FlowSpec",
    "InputSpec",
    "MapSpec",
    "NodeSpec",
    "Ref",
    "RetrySpec",
    "RewriteSpec",
    "load_spec",
    "parse_ref",
]

#: The pseudo-node that names flow inputs in references (``inputs.image``).
INPUTS = "inputs"
#: The ``goto`` target meaning "skip this node and go on without its outputs".
CONTINUE = "continue"

ErrorClassName = Literal[
    "any",
    "configuration",
    "media",
    "provider",
    "auth",
    "invalid_request",
    "content_policy",
    "rate_limit",
    "transient",
    "timeout",
    "empty",
    "flow_spec",
    "flow_run",
]
"""The names a ``when:`` list may use: each error class's ``error_class`` (see
:func:`calliope_graph.errors.error_class_names`; a test keeps the two equal)."""


def _classes(*names: ErrorClassName) -> list[ErrorClassName]:
    return list(names)


PortTypeName = Literal["text", "image", "audio", "video", "analysis", "messages", "object", "any"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Model):
    """A flow input: its type, and a default when it may be omitted."""

    type: PortTypeName = "text"
    description: str = ""
    required: bool = True
    default: Any = None


class RetrySpec(_Model):
    """Node-level retries (compiled to LangGraph's ``RetryPolicy``), on top of the engine's."""

    max_attempts: int = Field(default=2, ge=1, le=20)
    initial_interval: float = Field(default=0.5, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    max_interval: float = Field(default=30.0, ge=0)
    jitter: bool = True
    when: list[ErrorClassName] = Field(default_factory=lambda: _classes("transient", "rate_limit"))


class CacheSpec(_Model):
    """Cache this node's results by its inputs (LangGraph ``CachePolicy``); ``ttl`` seconds."""

    ttl: float | None = None


class RewriteSpec(_Model):
    """Censor-and-retry: ``via`` rewrites input ``port``, then the node runs again."""

    via: str
    """The node that rewrites the failing input (e.g. a ``censor_text`` node)."""
    port: str
    """The input port of the failing node whose value is rewritten."""
    output: str | None = None
    """The ``via`` node's output port to use (default: its only/first output)."""
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    """How many rewrites at most. Required: a loop without a bound is an error."""


class ErrorRoute(_Model):
    """Where a failure of the given classes goes: a fallback node, ``continue``, or a rewrite."""

    when: list[ErrorClassName] = Field(default_factory=lambda: _classes("any"), min_length=1)
    """The error classes this route catches (YAML's bare ``on`` would read as a boolean)."""
    goto: str | None = None
    rewrite: RewriteSpec | None = None
    label: str | None = None
    """Shown on the edge in drawings (default: the error classes)."""


class NodeSpec(_Model):
    """One node of a flow."""

    kind: str
    model: str | ModelConfig | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    description: str = ""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds for one attempt of this node; past it, the error class is ``timeout``."""
    retry: RetrySpec | None = None
    cache: bool | CacheSpec = False
    on_error: list[ErrorRoute] = Field(default_factory=list)
    map: MapSpec | None = None
    """Run once per item of a list (see :class:`MapSpec`)."""


EdgeKind = Literal["data", "fallback", "continue", "rewrite", "rewrite_back", "map", "switch"]


class Edge(_Model):
    """One edge of the flow graph, as the compiler and the drawings see it.

    ``data``: ``source.source_port`` feeds ``target.target_port`` (``source`` may be
    ``inputs``). ``fallback``: ``source`` fails with ``when`` → ``target`` runs instead.
    ``continue``: ``source`` fails with ``when`` → skipped (``target`` is None).
    ``rewrite``: ``source`` fails with ``when`` → ``target`` rewrites its input
    (``bound`` times at most); ``rewrite_back``: the rewriter's output goes back into the
    failed node's input port and it runs again. ``map``: ``target`` runs once per item of
    ``source.source_port`` (``bound``: at most that many at once). ``switch``: the switch
    ``source`` chooses ``target`` when ``label`` (its condition, or ``default``) holds.
    """

    kind: EdgeKind
    source: str
    target: str | None
    source_port: str | None = None
    target_port: str | None = None
    when: list[str] = Field(default_factory=list)
    bound: int | None = None
    label: str = ""


class Ref(_Model):
    """A parsed reference: ``inputs.<name>``, ``<node>.<port>``, or either followed by a
    field path into an object (``story.object.scenes``, ``scene.image_prompt`` inside a
    map, where ``scene`` is the map's item name)."""

    node: str
    port: str
    fields: tuple[str, ...] = ()

    @property
    def is_input(self) -> bool:
        return self.node == INPUTS

    def __str__(self) -> str:
        return ".".join(p for p in (self.node, self.port, *self.fields) if p)


_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"


def parse_ref(text: str) -> Ref:
    """``"story.text"`` → Ref(node="story", port="text"); ``"story.object.scenes"`` adds a
    field path; a FlowSpecError if malformed."""
    parts = text.strip().split(".")
    if len(parts) == 1 and re.fullmatch(_NAME, parts[0]):
        return Ref(node=parts[0], port="")  # a map's item itself; validation checks that
    if len(parts) < 2 or not all(re.fullmatch(_NAME, p) for p in parts):
        raise FlowSpecError(
            f"Malformed reference {text!r}: write 'inputs.<name>' for a flow input, "
            "'<node>.<port>' for a node's output (e.g. 'story.text'), and '.<field>' after "
            "either to read a field of an object (e.g. 'story.object.title')."
        )
    return Ref(node=parts[0], port=parts[1], fields=tuple(parts[2:]))


class MapSpec(_Model):
    """Run the node once per item of a list, items in parallel, results gathered in order.

    Inside the node's ``inputs`` the current item is ``<as>`` (``item`` unless renamed) and
    its fields ``<as>.<field>``; every output port of the node becomes a list, in item order.
    """

    over: str
    """A list-typed value: ``<node>.<port>[.<field>...]`` or ``inputs.<name>``."""
    as_: str = Field(default="item", alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The name the current item goes by in the node's wiring."""
    max_parallel: int | None = Field(default=None, ge=1, le=1000)
    """Items running at once (default: all)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class FlowSpec(_Model):
    """A whole flow. Build it with :class:`~calliope_graph.flow.Flow` or load YAML/JSON."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    description: str = ""
    version: Literal[1] = 1
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    nodes: dict[str, NodeSpec]
    outputs: dict[str, str] = Field(default_factory=dict)
    """Flow output name → ``<node>.<port>``."""
    catalog: str | None = None
    """An optional YAML model catalog (path relative to this file) extending the built-in one."""

    # Where the spec came from, for error messages (not part of the schema).
    _source: str | None = None
    _lines: dict[str, int] = {}

    def line_of(self, *path: str) -> int | None:
        """The YAML line of ``nodes.<name>...`` (the deepest known prefix), if loaded from YAML."""
        for depth in range(len(path), 0, -1):
            line = self._lines.get(".".join(path[:depth]))
            if line is not None:
                return line
        return None

    @property
    def source(self) -> str | None:
        return self._source

    def error(self, message: str, *path: str) -> FlowSpecError:
        """A FlowSpecError at ``path`` (``"nodes", "story", "inputs", "text"``) with its line."""
        where = ".".join(path) or None
        return FlowSpecError(message, where=where, line=self.line_of(*path), source=self._source)

    # -- structure ----------------------------------------------------------------------------
    def fallback_nodes(self) -> set[str]:
        """Nodes that run only when a route sends them work (fallback and rewrite targets,
        and the branches of switches)."""
        out: set[str] = {e.target for e in self.edges() if e.kind == "switch" and e.target}
        for node in self.nodes.values():
            for route in node.on_error:
                if route.goto and route.goto != CONTINUE:
                    out.add(route.goto)
                if route.rewrite:
                    out.add(route.rewrite.via)
        return out

    def refs(self, name: str) -> Iterator[tuple[str, Ref]]:
        """(input port, reference) for every source wired into node ``name``."""
        for port, value in self.nodes[name].inputs.items():
            for text in value if isinstance(value, list) else [value]:
                yield port, parse_ref(text)

    def edges(self) -> list[Edge]:
        """Every edge: data edges from input wiring, then the error routes of each node."""
        edges: list[Edge] = []
        items = {n.map.as_ for n in self.nodes.values() if n.map is not None} - set(self.nodes)
        for name, node in self.nodes.items():
            if node.map is not None:
                with contextlib.suppress(FlowSpecError):
                    over = parse_ref(node.map.over)
                    edges.append(
                        Edge(
                            kind="map",
                            source=over.node,
                            source_port=".".join((over.port, *over.fields)),
                            target=name,
                            bound=node.map.max_parallel,
                            label=f"for each {node.map.as_}",
                        )
                    )
            for port, ref in self.refs(name):
                if ref.node in items:
                    continue  # the current map item, not a node
                edges.append(
                    Edge(
                        kind="data",
                        source=ref.node,
                        source_port=ref.port,
                        target=name,
                        target_port=port,
                    )
                )
        for name, node in self.nodes.items():
            if node.kind == "switch":
                edges.extend(_switch_edges(name, node))
            for route in node.on_error:
                label = route.label or " | ".join(route.when)
                if route.rewrite is not None:
                    rw = route.rewrite
                    bound = rw.max_attempts
                    text = f"{label} (≤{bound})" if bound else label
                    edges.append(
                        Edge(
                            kind="rewrite",
                            source=name,
                            target=rw.via,
                            target_port=rw.port,
                            when=list(route.when),
                            bound=bound,
                            label=text,
                        )
                    )
                    edges.append(
                        Edge(
                            kind="rewrite_back",
                            source=rw.via,
                            source_port=rw.output,
                            target=name,
                            target_port=rw.port,
                            bound=bound,
                            label=f"retry {rw.port}",
                        )
                    )
                elif route.goto == CONTINUE:
                    edges.append(
                        Edge(
                            kind="continue",
                            source=name,
                            target=None,
                            when=list(route.when),
                            label=label,
                        )
                    )
                elif route.goto:
                    edges.append(
                        Edge(
                            kind="fallback",
                            source=name,
                            target=route.goto,
                            when=list(route.when),
                            label=label,
                        )
                    )
        return edges

    # -- serialisation --------------------------------------------------------------------
    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_defaults=True)
        data.setdefault("nodes", {})
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        schema = cls.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = "calliope-graph flow"
        return schema


# -- loading ---------------------------------------------------------------------------------
def _switch_edges(name: str, node: NodeSpec) -> list[Edge]:
    """A switch's branches as edges labelled with their conditions (read loosely: a switch
    that does not validate is still drawn)."""
    out: list[Edge] = []
    cases = node.params.get("cases")
    for case in cases if isinstance(cases, list) else []:
        if isinstance(case, dict) and isinstance(case.get("goto"), str):
            label = str(case.get("when", ""))
            out.append(Edge(kind="switch", source=name, target=case["goto"], label=label))
    default = node.params.get("default")
    if isinstance(default, str):
        out.append(Edge(kind="switch", source=name, target=default, label="default"))
    return out


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key (by dotted path)."""


def _lines(node: yaml.Node, path: tuple[str, ...], out: dict[str, int], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value)
            here = (*path, name)
            dotted = ".".join(here)
            if dotted in out:
                raise FlowSpecError(
                    f"{dotted} is defined twice (lines {out[dotted]} and "
                    f"{key.start_mark.line + 1}): names must be unique; rename or merge one.",
                    where=dotted,
                    line=key.start_mark.line + 1,
                    source=source,
                )
            out[dotted] = key.start_mark.line + 1
            _lines(value, here, out, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            here = (*path, str(index))
            out[".".join(here)] = item.start_mark.line + 1
            _lines(item, here, out, source)


def load_spec(source: str | Path, *, text: str | None = None) -> FlowSpec:
    """Parse a YAML/JSON flow file (or ``text``) into a FlowSpec, keeping YAML line numbers.

    Only the *shape* is checked here (pydantic); :func:`calliope_graph.flow.validate` checks
    the meaning (kinds, references, types, reachability, bounds).
    """
    label = str(source)
    if text is None:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FlowSpecError(
                f"Flow file {label!r} does not exist: pass a path to a .yaml/.json flow or "
                "the name of a shipped flow (`calliope-graph validate --help`)."
            ) from None
        except UnicodeDecodeError:
            raise FlowSpecError(f"Flow file {label!r} is not UTF-8 text.") from None
    lines: dict[str, int] = {}
    try:
        check_document(text, is_json=label.endswith(".json"))
    except DocumentBoundsError as exc:
        raise FlowSpecError(f"Cannot read the flow: {exc}.", line=exc.line, source=label) from None
    try:
        if label.endswith(".json"):
            data = json.loads(text)
        else:
            root = yaml.compose(text, Loader=_LineLoader)
            if root is not None:
                _lines(root, (), lines, label)
            data = yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else getattr(exc, "lineno", None)
        raise FlowSpecError(
            f"Cannot parse the flow: {exc}".replace("\n", " "), line=line, source=label
        ) from None
    if not isinstance(data, dict):
        raise FlowSpecError(
            "A flow file must be a mapping with 'name', 'inputs', 'nodes' and 'outputs'.",
            source=label,
            line=1,
        )
    from pydantic import ValidationError

    try:
        spec = FlowSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        # Drop pydantic's union-branch markers (``str``, ``list[str]``...) from the path.
        keep = [p for p in loc if p in lines or ".".join(loc[: loc.index(p) + 1]) in lines]
        dotted = ".".join(loc)
        line = None
        for depth in range(len(loc), 0, -1):
            line = lines.get(".".join(loc[:depth]))
            if line is not None:
                break
        hint = _hint(err)
        raise FlowSpecError(
            f"{'.'.join(keep) or dotted}: {err['msg']}{hint}",
            where=dotted,
            line=line,
            source=label,
        ) from None
    spec._source = label
    spec._lines = lines
    return spec


def _hint(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return (
            " (unknown field: check its spelling against the flow schema, `calliope-graph schema`)"
        )
    if kind == "missing":
        return " (this field is required)"
    return ""
