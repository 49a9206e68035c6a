"""Validation: everything that can be wrong with a flow is found before anything runs.

:func:`check` turns a :class:`FlowSpec` into a :class:`Plan` — the node instances and the
structure the compiler needs (who stands in for whom, who may be skipped, who consumes
what) — or raises a :class:`FlowSpecError` naming the node or edge, what to do about it,
and the YAML line when the spec came from a file.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from calliope_graph._schema import SchemaPathError, describe_type, field_schema, resolve
from calliope_graph.config import ModelCatalog, ModelConfig, catalog
from calliope_graph.engines._registry import config_problem, supported
from calliope_graph.errors import ConfigurationError, FlowSpecError, MediaError
from calliope_graph.flow._subflow import Subflow, loading, resolve_flow
from calliope_graph.flow.spec import (
    CONTINUE,
    INPUTS,
    FlowSpec,
    Ref,
    RewriteSpec,
    load_spec,
    parse_ref,
)
from calliope_graph.lifecycle import check_config
from calliope_graph.media import ImageAnalysis, MediaStore
from calliope_graph.nodes import Node, Port, PortType, Switch, get_node_kind
from calliope_graph.nodes.switch import expression_fields

__all__ = ["RESERVED", "Plan", "ValueType", "check", "instantiate", "value_type"]

#: Names a node may not take.
RESERVED = frozenset({INPUTS, CONTINUE, "START", "END", "__start__", "__end__"})


@dataclass
class Plan:
    """A validated flow, ready to compile."""

    spec: FlowSpec
    nodes: dict[str, Node]
    catalog: ModelCatalog
    #: Fallback node → the node whose outputs it publishes (resolved to the root).
    stands_in: dict[str, str] = field(default_factory=dict)
    #: Rewrite (``via``) node → the nodes it rewrites for.
    rewrites_for: dict[str, list[str]] = field(default_factory=dict)
    #: Nodes that run only when a route sends them work (``FlowSpec.fallback_nodes``).
    routed: set[str] = field(default_factory=set)
    #: Nodes that may end without outputs (a ``continue`` route, or standing in with one).
    skippable: set[str] = field(default_factory=set)
    #: Node → (input port, ref) list.
    wiring: dict[str, list[tuple[str, Ref]]] = field(default_factory=dict)
    #: Data-edge order (sources before consumers), routed nodes last.
    order: list[str] = field(default_factory=list)
    #: Switch node → the nodes it may choose; and each chosen node → its switch.
    switches: dict[str, list[str]] = field(default_factory=dict)
    switched: dict[str, str] = field(default_factory=dict)
    #: Mapped node → the type of one item of the list it maps over.
    item_types: dict[str, ValueType] = field(default_factory=dict)
    #: The flow's outputs as typed ports (what a subflow node offers its parent).
    output_ports: dict[str, Port] = field(default_factory=dict)

    def sources(self, name: str) -> set[str]:
        """The nodes ``name`` reads from: its wired sources and what it maps over; a switch
        also waits for what its branches read (so the branch it chooses can start at once)."""
        out = {ref.node for _, ref in self.wiring.get(name, []) if ref.node in self.nodes}
        for target in self.switches.get(name, []):
            out |= {
                ref.node
                for _, ref in self.wiring.get(target, [])
                if ref.node in self.nodes and ref.node != name
            }
        mapping = self.spec.nodes[name].map
        if mapping is not None:
            with contextlib.suppress(FlowSpecError):
                over = parse_ref(mapping.over)
                if over.node in self.nodes:
                    out.add(over.node)
        return out

    def item_scope(self, name: str) -> str | None:
        """The mapped node whose item ``name`` may read: itself, or the node it stands in
        for or rewrites for."""
        if name in self.item_types:
            return name
        root = self.root(name)
        if root in self.item_types:
            return root
        for target in self.rewrites_for.get(name, []):
            if target in self.item_types:
                return target
        return None

    def root(self, name: str) -> str:
        """The node whose outputs ``name`` publishes (itself unless it is a fallback)."""
        for _ in range(len(self.stands_in) + 1):  # bounded: validation refuses cycles
            if name not in self.stands_in:
                return name
            name = self.stands_in[name]
        raise FlowSpecError(f"Fallbacks of {name!r} form a cycle.", where=name)

    def has_routes(self, name: str) -> bool:
        """Whether consumers wait on a join node: ``name`` has error routes, or it runs only
        when a switch chooses it (so it may be skipped)."""
        return bool(self.spec.nodes[name].on_error) or name in self.switched

    def rewrite_port(self, via: str) -> str | None:
        """The input port of a ``via`` node that receives the refused value (its unwired
        one); None when ``via`` rewrites for no node."""
        if via not in self.rewrites_for:
            return None
        node = self.nodes[via]
        wired = set(self.spec.nodes[via].inputs)
        return next((p.name for p in node.input_ports if p.name not in wired), None)


def _identity(spec: FlowSpec) -> str:
    source = spec.source or spec.name
    path = Path(source)
    return str(path.resolve()) if path.exists() else source


def _load_subflow(spec: FlowSpec, name: str) -> Plan:
    """Load and validate the child flow of subflow node ``name`` (cycles refused)."""
    where = ("nodes", name, "params", "flow")
    reference = spec.nodes[name].params.get("flow")
    if not isinstance(reference, str) or not reference:
        raise spec.error(
            f"Node {name!r} (flow): set params.flow to a shipped flow's name or a flow file.",
            *where,
        )
    try:
        target = resolve_flow(reference, spec.source)
    except ConfigurationError as exc:
        raise spec.error(f"Node {name!r}: {exc}", *where) from None
    if isinstance(target, Path):
        child_spec = load_spec(target)
    else:
        text = resources.files("calliope_graph.graphs").joinpath(f"{target}.yaml")
        child_spec = load_spec(f"{target}.yaml", text=text.read_text(encoding="utf-8"))
    chain = loading.get()
    identity = _identity(child_spec)
    if identity in chain:
        cycle = [*chain[chain.index(identity) :], identity]
        raise spec.error(
            f"Node {name!r}: subflow {reference!r} leads back to itself "
            f"({' → '.join(Path(c).name for c in cycle)}): flows may not include themselves.",
            *where,
        )
    try:
        return check(child_spec)
    except FlowSpecError as exc:
        raise spec.error(f"Node {name!r}: in subflow {reference!r}: {exc}", *where) from None


def instantiate(spec: FlowSpec, name: str) -> Node:
    """Build node ``name`` from its spec; a bad kind or parameter is a FlowSpecError."""
    node_spec = spec.nodes[name]
    if node_spec.kind == Subflow.kind:
        child = _load_subflow(spec, name)
        return Subflow(name=name, plan=child, **node_spec.params)
    try:
        cls = get_node_kind(node_spec.kind)
    except ConfigurationError as exc:
        raise spec.error(f"Node {name!r}: {exc}", "nodes", name, "kind") from None
    try:
        return cls(node_spec.model, name=name, **node_spec.params)
    except ConfigurationError as exc:
        raise spec.error(str(exc), "nodes", name, "params") from None
    except TypeError as exc:
        raise spec.error(
            f"Node {name!r} ({node_spec.kind}): {exc}; check its params.", "nodes", name, "params"
        ) from None


def _catalog(spec: FlowSpec) -> ModelCatalog:
    if not spec.catalog:
        return catalog
    base = Path(spec.source).parent if spec.source else Path.cwd()
    path = base / spec.catalog
    try:
        return catalog.copy().load_yaml(path)
    except (OSError, ConfigurationError) as exc:
        raise spec.error(
            f"Cannot load the flow's model catalog {str(path)!r}: {exc}", "catalog"
        ) from None
    except Exception as exc:  # a malformed YAML catalog
        raise spec.error(f"The model catalog {str(path)!r} is invalid: {exc}", "catalog") from None


def _check_model(spec: FlowSpec, name: str, node: Node, models: ModelCatalog) -> None:
    model = node.model
    if model is None or node.conversion is None:
        return
    if isinstance(model, str):
        if model not in models:
            known = ", ".join(sorted(models))
            raise spec.error(
                f"Node {name!r}: unknown model config {model!r}. Use a catalog name ({known}) "
                "or an inline model config, or extend the catalog with 'catalog: my_models.yaml'.",
                "nodes",
                name,
                "model",
            )
        config = models.get(model)
    else:
        config = model
    assert isinstance(config, ModelConfig)
    # A retired model is refused (ConfigurationError, exit 4); one near shutdown warns.
    check_config(model if isinstance(model, str) else config.slug, config, where=f"node {name!r}")
    providers = supported().get(node.conversion, [])
    if config.provider not in providers:
        serving = ", ".join(p.value for p in providers)
        raise spec.error(
            f"Node {name!r} ({node.kind}) needs {node.conversion.value}, which provider "
            f"{config.provider.value!r} (model {config.slug!r}) cannot do. Providers that can: "
            f"{serving}.",
            "nodes",
            name,
            "model",
        )
    if problem := config.model.kind_problem(node.conversion.value):
        raise spec.error(f"Node {name!r} ({node.kind}): {problem}.", "nodes", name, "model")
    # What the engine needs that the config alone shows (engines._registry.register_check).
    wired = spec.nodes[name].inputs  # a consistency port needs a model that `takes` it
    entries = ((n, models.get(n)) for n in models)
    if problem := config_problem(node.conversion, config, wired=wired, models=entries):
        raise ConfigurationError(f"node {name!r}: {problem}.")


class ValueType(NamedTuple):
    """What a reference reads: a port type, the object schema when known, a list or not."""

    type: PortType
    schema: dict[str, Any] | None = None
    is_list: bool = False

    def describe(self) -> str:
        base = describe_type(self.schema) if self.schema else self.type.value
        return f"list of {base}" if self.is_list else base


_ANALYSIS_SCHEMA = ImageAnalysis.model_json_schema()


def _schema_value(schema: dict[str, Any], root: dict[str, Any]) -> ValueType:
    schema = resolve(schema, root)
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        element = _schema_value(items, root) if isinstance(items, dict) else ValueType(PortType.ANY)
        return ValueType(element.type, element.schema, True)
    if kind == "string":
        return ValueType(PortType.TEXT, schema)
    if kind == "object" or "properties" in schema:
        return ValueType(PortType.OBJECT, {**schema, "$defs": root.get("$defs", {})})
    return ValueType(PortType.ANY, schema or None)


def _port_value(plan: Plan, node: str, port: Port) -> ValueType:
    schema = port.schema
    if schema is None and port.type is PortType.ANALYSIS:
        schema = _ANALYSIS_SCHEMA
    return ValueType(port.type, schema, port.is_list or node in plan.item_types)


def value_type(plan: Plan, ref: Ref, *, reader: str | None = None) -> ValueType | None:
    """The type of what ``ref`` reads (None when the node or port does not exist). Inside
    a mapped node (``reader``), its item name reads the current item; a SchemaPathError
    says which field of an object does not exist."""
    spec = plan.spec
    scope = plan.item_scope(reader) if reader is not None else None
    if scope is not None and ref.node == _item_name(plan, scope):
        base = plan.item_types[scope]
        return _fields(base, tuple(f for f in (ref.port, *ref.fields) if f), str(ref))
    if ref.is_input:
        declared = spec.inputs.get(ref.port)
        if declared is None:
            return None
        return _fields(ValueType(PortType(declared.type)), ref.fields, str(ref))
    node = plan.nodes.get(ref.node)
    port = node.output_port(ref.port) if node is not None else None
    if port is None:
        return None
    return _fields(_port_value(plan, ref.node, port), ref.fields, str(ref))


def _fields(base: ValueType, fields: tuple[str, ...], text: str) -> ValueType:
    if not fields:
        return base
    if base.is_list:
        raise SchemaPathError(fields[0], [], f"{text} (a list has no fields: map over it)")
    if base.schema is None or base.type not in (PortType.OBJECT, PortType.ANALYSIS):
        return ValueType(PortType.ANY)  # no schema known: checked at run time
    return _schema_value(field_schema(base.schema, fields), base.schema)


def _item_name(plan: Plan, mapped: str) -> str:
    spec = plan.spec.nodes[mapped].map
    return spec.as_ if spec is not None else "item"


def check(spec: FlowSpec) -> Plan:
    """Validate ``spec``; return the plan the compiler needs.

    The phases run in order, each on what the previous ones established: names, node kinds
    and models, error routes (who stands in for whom, who may be skipped), wiring and port
    types, what fallbacks must produce, data-edge order (no cycles), output names of files,
    the flow's outputs, and reachability.
    """
    _check_names(spec)
    models = _catalog(spec)
    token = loading.set((*loading.get(), _identity(spec)))
    try:
        nodes = {name: instantiate(spec, name) for name in spec.nodes}
    finally:
        loading.reset(token)
    plan = Plan(spec=spec, nodes=nodes, catalog=models, routed=spec.fallback_nodes())
    for name, node in nodes.items():
        _check_model(spec, name, node, models)
    _check_routes(plan)
    _check_switches(plan)
    _check_maps(plan)
    _check_wiring(plan)
    _check_stand_ins(plan)
    _check_templates(plan)
    plan.order = _order(spec, plan)
    _check_switch_conditions(plan)
    _check_file_names(plan)
    _check_outputs(plan)
    _check_reachable(plan)
    return plan


def _check_names(spec: FlowSpec) -> None:
    if not spec.nodes:
        raise spec.error("The flow has no nodes: add at least one under 'nodes'.", "nodes")
    for name in spec.nodes:
        if name in RESERVED or "." in name or ":" in name:
            raise spec.error(
                f"Node name {name!r} is reserved or contains '.'/':': rename it "
                "(letters, digits, '_' and '-').",
                "nodes",
                name,
            )


def _check_routes(plan: Plan) -> None:
    """Each route is well formed; fallbacks stand in for one node; loops are bounded."""
    spec = plan.spec
    for name, node_spec in spec.nodes.items():
        for index, route in enumerate(node_spec.on_error):
            where = ("nodes", name, "on_error", str(index))
            if (route.goto is None) == (route.rewrite is None):
                raise spec.error(
                    f"Node {name!r}: each on_error route needs exactly one of 'goto' (a fallback "
                    "node or 'continue') or 'rewrite'.",
                    *where,
                )
            if route.goto is not None and route.goto != CONTINUE:
                _check_fallback(plan, name, route.goto, where)
            elif route.goto == CONTINUE:
                plan.skippable.add(name)
            if route.rewrite is not None:
                _check_rewrite(plan, name, route.rewrite, where)
    _check_fallback_cycles(plan)
    # A stand-in that may itself continue makes its root skippable.
    for fallback in plan.stands_in:
        if fallback in plan.skippable:
            plan.skippable.add(plan.root(fallback))


def _check_fallback(plan: Plan, name: str, goto: str, where: tuple[str, ...]) -> None:
    spec = plan.spec
    if goto not in spec.nodes:
        raise spec.error(
            f"Node {name!r}: on_error goes to {goto!r}, which is not a node. "
            f"Nodes: {', '.join(spec.nodes)}; or write 'goto: continue'.",
            *where,
            "goto",
        )
    if goto == name:
        raise spec.error(f"Node {name!r} falls back to itself: use 'retry' for that.", *where)
    other = plan.stands_in.get(goto)
    if other is not None and other != name:
        raise spec.error(
            f"Node {goto!r} is the fallback of both {other!r} and {name!r}: a fallback stands "
            "in for one node; declare a second node of the same kind.",
            *where,
            "goto",
        )
    plan.stands_in[goto] = name


def _check_rewrite(plan: Plan, name: str, rw: RewriteSpec, where: tuple[str, ...]) -> None:
    spec, nodes = plan.spec, plan.nodes
    if rw.via not in spec.nodes:
        raise spec.error(
            f"Node {name!r}: rewrite via {rw.via!r}, which is not a node.",
            *where,
            "rewrite",
            "via",
        )
    if rw.max_attempts is None:
        raise spec.error(
            f"Node {name!r}: the rewrite loop through {rw.via!r} has no bound: set "
            "'max_attempts' (the seed retries a censored prompt 3 times).",
            *where,
            "rewrite",
        )
    if nodes[name].input_port(rw.port) is None:
        ports = ", ".join(p.name for p in nodes[name].input_ports)
        raise spec.error(
            f"Node {name!r}: rewrite port {rw.port!r} is not one of its inputs ({ports}).",
            *where,
            "rewrite",
            "port",
        )
    via = nodes[rw.via]
    outputs = [p.name for p in via.output_ports]
    out = rw.output or (outputs[0] if outputs else None)
    if out is None or via.output_port(out) is None:
        raise spec.error(
            f"Node {name!r}: rewrite output {out!r} is not an output of {rw.via!r} "
            f"({', '.join(outputs) or 'none'}).",
            *where,
            "rewrite",
            "output",
        )
    plan.rewrites_for.setdefault(rw.via, []).append(name)


def _check_fallback_cycles(plan: Plan) -> None:
    """Fallbacks form chains (a → b → c), never a cycle (a → b → a)."""
    for start in plan.stands_in:
        chain = [start]
        while chain[-1] in plan.stands_in:
            nxt = plan.stands_in[chain[-1]]
            if nxt in chain:
                cycle = [*chain[chain.index(nxt) :], nxt]
                raise plan.spec.error(
                    f"Nodes {' and '.join(repr(n) for n in sorted(set(cycle)))} fall back to "
                    f"each other ({' → '.join(reversed(cycle))}): a fallback chain must end at "
                    "a node that is not itself a fallback. Break the cycle: remove one of the "
                    "on_error routes.",
                    "nodes",
                    nxt,
                    "on_error",
                )
            chain.append(nxt)


def _check_switches(plan: Plan) -> None:
    """A switch names existing nodes that nothing else routes to, and has a default."""
    spec = plan.spec
    for name, node in plan.nodes.items():
        if not isinstance(node, Switch):
            continue
        where = ("nodes", name, "params")
        if node.params.default is None:
            raise spec.error(
                f"Switch {name!r}: a value for which no case holds would fall through: add "
                "'default: <node>' (the node to run then).",
                *where,
                "cases",
            )
        for index, target in enumerate(node.targets):
            place = (*where, "cases", str(index)) if index < len(node.params.cases) else where
            if target not in spec.nodes:
                raise spec.error(
                    f"Switch {name!r} goes to {target!r}, which is not a node. Nodes: "
                    f"{', '.join(spec.nodes)}.",
                    *place,
                )
            if target == name:
                raise spec.error(f"Switch {name!r} routes to itself.", *place)
            other = plan.switched.get(target)
            by_route = target in plan.stands_in or target in plan.rewrites_for
            if by_route or (other is not None and other != name):
                raise spec.error(
                    f"Switch {name!r} goes to {target!r}, which another route already sends "
                    "work to: a node has one way in; declare a second node.",
                    *place,
                )
            plan.switched[target] = name
            plan.skippable.add(target)
        plan.switches[name] = node.targets
        plan.routed |= set(node.targets)


def _check_maps(plan: Plan) -> None:
    """A map goes over a list; its item name shadows no node."""
    spec = plan.spec
    for name, node_spec in spec.nodes.items():
        mapping = node_spec.map
        if mapping is None:
            continue
        where = ("nodes", name, "map")
        if name in plan.routed:
            raise spec.error(
                f"Node {name!r} only runs when routed to, so it cannot map: map the node "
                "it backs up instead (its routes then apply per item).",
                *where,
            )
        if mapping.as_ in spec.nodes or mapping.as_ == INPUTS:
            raise spec.error(
                f"Node {name!r}: map item name {mapping.as_!r} is also a node name: rename "
                "it ('as: scene').",
                *where,
                "as",
            )
        try:
            ref = parse_ref(mapping.over)
        except FlowSpecError as exc:
            raise spec.error(f"Node {name!r}: map over: {exc}", *where, "over") from None
        if ref.node == name:
            raise spec.error(f"Node {name!r} maps over its own output.", *where, "over")
        if not ref.is_input and ref.node not in plan.nodes:
            raise spec.error(
                f"Node {name!r} maps over {str(ref)!r}, but there is no node {ref.node!r}.",
                *where,
                "over",
            )
        source = _typed(plan, ref, None, (*where, "over"), f"Node {name!r}: map over")
        if source is None:
            raise spec.error(
                f"Node {name!r} maps over {str(ref)!r}, which does not exist.", *where, "over"
            )
        if not source.is_list and source.type is not PortType.ANY:
            raise spec.error(
                f"Node {name!r} maps over {str(ref)!r}, which is {source.describe()}, not a "
                "list: map over a list-typed value (e.g. a structured object's array field).",
                *where,
                "over",
            )
        plan.item_types[name] = ValueType(source.type, source.schema)
        plan.wiring.setdefault(name, [])


def _typed(
    plan: Plan, ref: Ref, reader: str | None, where: tuple[str, ...], what: str
) -> ValueType | None:
    try:
        return value_type(plan, ref, reader=reader)
    except SchemaPathError as exc:
        known = f" (its fields: {', '.join(exc.known)})" if exc.known else ""
        at = f" of {exc.where}" if exc.where else ""
        raise plan.spec.error(
            f"{what} {str(ref)!r}: there is no field {exc.name!r}{at}{known}.", *where
        ) from None


def _check_wiring(plan: Plan) -> None:
    """Every wired port exists, reads something that exists, of a type it accepts."""
    spec = plan.spec
    for name, node in plan.nodes.items():
        node_spec = spec.nodes[name]
        wiring: list[tuple[str, Ref]] = []
        for port_name, value in node_spec.inputs.items():
            where = ("nodes", name, "inputs", port_name)
            port = node.input_port(port_name)
            if port is None:
                ports = ", ".join(p.name for p in node.input_ports) or "none"
                raise spec.error(
                    f"Node {name!r} ({node.kind}) has no input port {port_name!r}; its inputs: "
                    f"{ports}.",
                    *where,
                )
            try:
                refs = list(spec.refs(name))
            except FlowSpecError as exc:
                raise spec.error(f"Node {name!r}: {exc}", *where) from None
            # A list into a one-value port reads whichever of them produced (a switch's
            # branches); into a ``many`` port, all that produced.
            whichever = isinstance(value, list) and not port.many
            for ref in (r for p, r in refs if p == port_name):
                _check_ref(spec, plan, name, port, ref, where, whichever=whichever)
                wiring.append((port_name, ref))
        fed = plan.rewrite_port(name)
        missing = [
            p.name
            for p in node.input_ports
            if p.required and p.name not in node_spec.inputs and p.name != fed
        ]
        if missing:
            raise spec.error(
                f"Node {name!r} ({node.kind}): required input {missing[0]!r} is not connected: "
                f"wire it to a flow input ('inputs.<name>') or another node's output "
                "('<node>.<port>').",
                "nodes",
                name,
                "inputs" if node_spec.inputs else "kind",
            )
        plan.wiring[name] = wiring


_MUSTACHE_PATH = re.compile(r"\{\{\s*[#^/]?\s*([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+)\s*\}\}")
_FSTRING_PATH = re.compile(r"(?<!\{)\{([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)\}(?!\})")


def _check_templates(plan: Plan) -> None:
    """A template's ``{{scene.image_prompt}}`` (mustache) or ``{scene.image_prompt}``
    (f-string) reads fields the wired value's schema has, where that schema is known."""
    for name, node in plan.nodes.items():
        params = getattr(node, "params", None)
        if node.kind != "prompt_template" or params is None:
            continue
        texts = [params.template] if params.template else [m for _, m in params.messages or []]
        pattern = _MUSTACHE_PATH if params.template_format == "mustache" else _FSTRING_PATH
        sources = dict(plan.wiring.get(name, []))
        for text in texts:
            for path in pattern.findall(text or ""):
                variable, *fields = path.split(".")
                ref = sources.get(variable)
                if ref is None:
                    continue  # an unwired variable (a default): nothing to check against
                where = ("nodes", name, "params", "template")
                _typed(  # a SchemaPathError here names the missing field
                    plan,
                    ref.model_copy(update={"fields": (*ref.fields, *fields)}),
                    name,
                    where,
                    f"Node {name!r}: template variable {path!r} reads",
                )


def _check_stand_ins(plan: Plan) -> None:
    """A fallback produces every port its failed node's consumers read."""
    spec, nodes = plan.spec, plan.nodes
    for fallback, failed in plan.stands_in.items():
        root = plan.root(failed)
        read = {ref.port for w in plan.wiring.values() for _, ref in w if ref.node == root}
        read |= {t.partition(".")[2] for t in spec.outputs.values() if t.startswith(root + ".")}
        for port_name in sorted(read):
            theirs = nodes[root].output_port(port_name)
            mine = nodes[fallback].output_port(port_name)
            if mine is None or (theirs is not None and not theirs.type.accepts(mine.type)):
                raise spec.error(
                    f"Fallback {fallback!r} must produce {port_name!r} to stand in for "
                    f"{root!r} (its consumers read {root}.{port_name}); it produces "
                    f"{', '.join(p.name for p in nodes[fallback].output_ports) or 'nothing'}.",
                    "nodes",
                    failed,
                    "on_error",
                )


def _check_switch_conditions(plan: Plan) -> None:
    """Conditions read fields the value has (where the value's schema is known)."""
    spec = plan.spec
    for name in plan.switches:
        node = plan.nodes[name]
        assert isinstance(node, Switch)
        refs = [ref for port, ref in plan.wiring.get(name, []) if port == "value"]
        value = _typed(plan, refs[0], name, ("nodes", name), "Switch") if refs else None
        props = (value.schema or {}).get("properties") if value is not None else None
        if isinstance(props, dict):
            for index, case in enumerate(node.params.cases):
                for field_name in expression_fields(case.when):
                    if field_name not in props:
                        raise spec.error(
                            f"Switch {name!r}: condition {case.when!r} reads field "
                            f"{field_name!r}, which {str(refs[0])!r} does not have (its "
                            f"fields: {', '.join(sorted(props))}).",
                            "nodes",
                            name,
                            "params",
                            "cases",
                            str(index),
                        )


def _item_name_of(plan: Plan, name: str) -> str | None:
    scope = plan.item_scope(name)
    return _item_name(plan, scope) if scope is not None else None


def _check_file_names(plan: Plan) -> None:
    """Files a node names (``output_name``) are safe and not the library's own, before any
    provider is paid for the work they would hold."""
    for name, node in plan.nodes.items():
        output_name = getattr(node.params, "output_name", None)
        if not isinstance(output_name, str):
            continue
        try:
            MediaStore.check_name(output_name)
        except MediaError as exc:
            raise plan.spec.error(
                f"Node {name!r}: params.output_name: {exc}", "nodes", name, "params"
            ) from None


def _check_outputs(plan: Plan) -> None:
    spec, nodes = plan.spec, plan.nodes
    if not spec.outputs:
        raise spec.error("The flow declares no outputs: add at least one under 'outputs'.")
    for out_name, target in spec.outputs.items():
        place = ("outputs", out_name)
        try:
            ref = parse_ref(target)
        except FlowSpecError as exc:
            raise spec.error(f"Output {out_name!r}: {exc}", *place) from None
        if ref.is_input:
            if ref.port not in spec.inputs:
                raise spec.error(f"Output {out_name!r}: no flow input {ref.port!r}.", *place)
            _output_port(plan, out_name, ref, place)
            continue
        if ref.node not in nodes:
            raise spec.error(
                f"Output {out_name!r} reads {ref.node!r}, which is not a node.", *place
            )
        if ref.node in plan.stands_in:
            raise spec.error(
                f"Output {out_name!r} reads fallback {ref.node!r}: read "
                f"'{plan.root(ref.node)}.{ref.port}' (the fallback publishes there).",
                *place,
            )
        if nodes[ref.node].output_port(ref.port) is None:
            raise spec.error(
                f"Output {out_name!r}: {ref.node!r} has no output {ref.port!r} (it has "
                f"{', '.join(p.name for p in nodes[ref.node].output_ports)}).",
                *place,
            )
        if ref.node in plan.skippable and ref.node not in plan.switched:
            raise spec.error(
                f"Output {out_name!r} is not produced on every path: {ref.node!r} may be "
                "skipped (goto: continue, or a switch not choosing it). Output something "
                "downstream of the merge instead, or give it a fallback.",
                *place,
            )
        _output_port(plan, out_name, ref, place)


def _output_port(plan: Plan, name: str, ref: Ref, place: tuple[str, ...]) -> None:
    typed = _typed(plan, ref, None, place, f"Output {name!r} reads")
    typed = typed or ValueType(PortType.ANY)
    plan.output_ports[name] = Port(name, typed.type, schema=typed.schema, is_list=typed.is_list)


def _check_reachable(plan: Plan) -> None:
    spec = plan.spec
    used = {source for name in plan.nodes for source in plan.sources(name)}
    used |= {t.partition(".")[0] for t in spec.outputs.values()}
    for name in spec.nodes:
        if name not in used and name not in plan.routed and name not in plan.switches:
            raise spec.error(
                f"Node {name!r} cannot be reached from the flow's outputs: nothing reads its "
                "outputs and no route sends it work. Wire it, list it in 'outputs', or remove "
                "it.",
                "nodes",
                name,
            )


def _check_ref(
    spec: FlowSpec,
    plan: Plan,
    name: str,
    port: Port,
    ref: Ref,
    where: tuple[str, ...],
    *,
    whichever: bool = False,
) -> None:
    item = _item_name_of(plan, name)
    if ref.node == item:
        pass  # the current item of a map: typed below
    elif not ref.port:
        raise spec.error(
            f"Node {name!r}: input {port.name!r}: Malformed reference {ref.node!r}: write "
            "'<node>.<port>' or 'inputs.<name>' (a bare name is only the item of a map, "
            "inside that node).",
            *where,
        )
    elif ref.is_input:
        if ref.port not in spec.inputs:
            declared = ", ".join(spec.inputs) or "none"
            raise spec.error(
                f"Node {name!r}: input {port.name!r} reads flow input {ref.port!r}, which is not "
                f"declared (inputs: {declared}). Add it under 'inputs'.",
                *where,
            )
    else:
        if ref.node not in plan.nodes:
            mapped = [n for n, m in spec.nodes.items() if m.map and m.map.as_ == ref.node]
            hint = (
                f" ({ref.node!r} is the item of the map of {mapped[0]!r}, readable only there)"
                if mapped
                else ""
            )
            raise spec.error(
                f"Node {name!r}: input {port.name!r} reads {str(ref)!r}, but there is no node "
                f"{ref.node!r}{hint}. Nodes: {', '.join(plan.nodes)}.",
                *where,
            )
        if ref.node == name:
            raise spec.error(f"Node {name!r} reads its own output {str(ref)!r}.", *where)
        if ref.node in plan.stands_in:
            raise spec.error(
                f"Node {name!r} reads fallback {ref.node!r} directly: read "
                f"'{plan.root(ref.node)}.{ref.port}' — the fallback publishes there.",
                *where,
            )
        if plan.nodes[ref.node].output_port(ref.port) is None:
            outs = ", ".join(p.name for p in plan.nodes[ref.node].output_ports) or "none"
            raise spec.error(
                f"Node {name!r}: {ref.node!r} has no output {ref.port!r} (its outputs: {outs}).",
                *where,
            )
    source = _typed(plan, ref, name, where, f"Node {name!r}: input {port.name!r} reads")
    if source is not None and not port.type.accepts(source.type):
        raise spec.error(
            f"Type mismatch: {str(ref)!r} is {source.describe()}, but {name}.{port.name} takes "
            f"{port.type.value}. Insert a node that converts it (e.g. a prompt_template for "
            "text, analyze_image for an image).",
            *where,
        )
    if (
        source is not None
        and source.is_list
        and not (port.many or port.is_list or port.type is PortType.ANY)
    ):
        raise spec.error(
            f"Type mismatch: {str(ref)!r} is a {source.describe()}, but {name}.{port.name} "
            f"takes one {port.type.value}: map {name!r} over it (map: {{over: {ref!s}}}) "
            "or read it in a 'many' input.",
            *where,
        )
    if (
        not whichever
        and not ref.is_input
        and ref.node in plan.skippable
        and not port.many
        and port.required
        and name not in plan.routed
    ):
        how = (
            f"it runs only when switch {plan.switched[ref.node]!r} chooses it: read "
            "whichever branch ran with a list of sources ([a.text, b.text])"
            if ref.node in plan.switched
            else "goto: continue: read it through a merge ('many' input) or give it a fallback"
        )
        raise spec.error(
            f"Node {name!r} needs {str(ref)!r}, but {ref.node!r} may be skipped ({how}).",
            *where,
        )


def _order(spec: FlowSpec, plan: Plan) -> list[str]:
    """Topological order of the data edges; a cycle is an error naming its nodes."""
    deps = {name: {plan.root(source) for source in plan.sources(name)} for name in spec.nodes}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*stack[stack.index(name) :], name]
            raise spec.error(
                f"Data edges form a loop: {' → '.join(cycle)}. Flows are acyclic; loops are "
                "declared as bounded 'rewrite' routes.",
                "nodes",
                name,
            )
        state[name] = 1
        for dep in sorted(deps[name]):
            visit(dep, [*stack, name])
        state[name] = 2
        order.append(name)

    for name in spec.nodes:
        visit(name, [])
    return order
