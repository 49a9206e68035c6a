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
routes directly. Each construct owns its fields and edges (``on_error``: ``flow/routes.py``;
``map``: ``flow/map.py``; a switch's branches: ``flow/switch.py``); the core names
(``INPUTS``, ``Ref``, ``Edge``...) live in ``flow/_spec_core.py``; all are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from calliope_graph._yaml import DocumentBoundsError, SafeLoader, check_document
from calliope_graph.config import ModelConfig
from calliope_graph.errors import FlowSpecError
from calliope_graph.flow._inline_model import inline_model
from calliope_graph.flow._spec_core import (
    CONTINUE,
    INPUTS,
    Edge,
    EdgeKind,
    ErrorClassName,
    Ref,
    _classes,
    _Model,
    parse_ref,
)
from calliope_graph.flow.map import MapSpec
from calliope_graph.flow.routes import ErrorRoute, RewriteSpec

__all__ = [
    "CONTINUE",
    "INPUTS",
    "CacheSpec",
    "Edge",
    "EdgeKind",
    "ErrorClassName",
    "ErrorRoute",
    "FlowSpec",
    "InputSpec",
    "InputTypeName",
    "ItemTypeName",
    "MapSpec",
    "NodeSpec",
    "Ref",
    "RetrySpec",
    "RewriteSpec",
    "load_spec",
    "parse_ref",
    "shipped_flows",
]

PortTypeName = Literal["text", "image", "audio", "video", "analysis", "messages", "object", "any"]
InputTypeName = Literal[
    "text", "image", "audio", "video", "analysis", "messages", "object", "any", "list"
]
ItemTypeName = Literal["text", "image", "audio", "video", "object", "any"]


class InputSpec(_Model):
    """A flow input: its type, and a default when it may be omitted.

    ``type: list`` takes a list whose items are ``items`` (``{type: list, items: text}``;
    default ``any``): a map can run over it, and the CLI and CSV cells give it as JSON."""

    type: InputTypeName = "text"
    items: ItemTypeName | None = Field(
        default=None, description="With type: list, the type of each item (default any)."
    )
    description: str = ""
    required: bool = True
    default: Any = None

    @model_validator(mode="after")
    def _items_only_for_lists(self) -> InputSpec:
        if self.items is not None and self.type != "list":
            raise ValueError(
                f"'items' declares a list's item type, but this input is {self.type}: "
                f"write {{type: list, items: {self.items}}}, or drop 'items'."
            )
        return self

    @property
    def is_list(self) -> bool:
        """Whether the input takes a list (``type: list``)."""
        return self.type == "list"

    def check(self, name: str, value: Any) -> Any:
        """``value`` for this input (called ``name``) as a run takes it: a list or object
        given as JSON text parsed, a list's items checked; an
        :class:`~calliope_graph.errors.ConfigurationError` naming the shape expected (``a
        list of text``) and how to give it when it does not fit. Other types pass as given."""
        from calliope_graph.flow._input_values import check_value

        return check_value(name, self, value)

    @property
    def shape(self) -> str:
        """The value's shape as messages name it: ``text``, ``a list of text``, ``an object``."""
        from calliope_graph.flow._input_values import expected_shape

        return expected_shape(self)

    @property
    def element(self) -> PortTypeName:
        """The port type of the value (of each item, for a list): what wiring checks."""
        if self.type == "list":
            return self.items or "any"
        return self.type


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


class NodeSpec(_Model):
    """One node of a flow."""

    kind: str
    model: str | ModelConfig | None = None
    """A catalog name, or inline (see :mod:`calliope_graph.flow._inline_model`)."""
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
    candidates: int | None = Field(default=None, json_schema_extra={"minimum": 1, "maximum": 8})
    """Run N times in parallel (1–8; distinct seeds where the model takes one): every output
    port becomes a list of N (see :mod:`calliope_graph.flow.candidates`)."""

    _inline_model = field_validator("model", mode="before")(inline_model)


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
    _lines: dict[str, int] = {}  # noqa: RUF012 (a pydantic private attribute: copied per model)

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
                try:
                    ref = parse_ref(text)
                except FlowSpecError as exc:  # located: the file and line of the input
                    raise self.error(
                        f"Node {name!r}: input {port!r}: {exc}", "nodes", name, "inputs", port
                    ) from None
                yield port, ref

    def edges(self) -> list[Edge]:
        """Every edge: per node, the edges its constructs draw into it (a map's) and its data
        edges; then per node, the edges its constructs draw out of it (switch branches,
        error routes). Constructs are asked through the registry (flow/construct.py)."""
        from calliope_graph.flow.construct import constructs

        registered = constructs()
        edges: list[Edge] = []
        items = {n.map.as_ for n in self.nodes.values() if n.map is not None} - set(self.nodes)
        for name, node in self.nodes.items():
            for construct in registered:
                if construct.input_edges is not None:
                    edges += construct.input_edges(name, node)
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
            for construct in registered:
                if construct.edges is not None:
                    edges += construct.edges(name, node)
        return edges

    # -- serialisation --------------------------------------------------------------------
    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_defaults=True)
        data.setdefault("nodes", {})
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The published schema (``flow.schema.json``): each kind's params typed."""
        from calliope_graph.flow._flow_schema import typed_params

        schema = typed_params(cls.model_json_schema())
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = "calliope-graph flow"
        return schema


# -- loading ---------------------------------------------------------------------------------
class _LineLoader(SafeLoader):  # type: ignore[misc,valid-type]
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
            data = yaml.load(text, Loader=SafeLoader)  # safe: PyYAML's SafeLoader on libyaml
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
            f"{'.'.join(keep) or dotted}: {err['msg'].removeprefix('Value error, ')}{hint}",
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


def shipped_flows() -> list[str]:
    """Names of the flows shipped in ``calliope_graph.graphs``."""
    from importlib import resources

    folder = resources.files("calliope_graph.graphs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
