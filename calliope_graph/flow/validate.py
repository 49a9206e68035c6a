"""Validation: everything that can be wrong with a flow is found before anything runs.

:func:`check` turns a :class:`FlowSpec` into a :class:`Plan` — the node instances and the
structure the compiler needs (who stands in for whom, who may be skipped, who consumes
what) — or raises a :class:`FlowSpecError` naming the node or edge, what to do about it,
and the YAML line when the spec came from a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from calliope_graph.config import ModelCatalog, ModelConfig, catalog
from calliope_graph.engines import supported
from calliope_graph.errors import ConfigurationError, FlowSpecError, MediaError
from calliope_graph.flow.spec import CONTINUE, INPUTS, FlowSpec, Ref, RewriteSpec, parse_ref
from calliope_graph.media import MediaStore
from calliope_graph.nodes import Node, Port, PortType, get_node_kind

__all__ = ["RESERVED", "Plan", "check", "instantiate"]

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

    def root(self, name: str) -> str:
        """The node whose outputs ``name`` publishes (itself unless it is a fallback)."""
        for _ in range(len(self.stands_in) + 1):  # bounded: validation refuses cycles
            if name not in self.stands_in:
                return name
            name = self.stands_in[name]
        raise FlowSpecError(f"Fallbacks of {name!r} form a cycle.", where=name)

    def has_routes(self, name: str) -> bool:
        return bool(self.spec.nodes[name].on_error)

    def rewrite_port(self, via: str) -> str | None:
        """The input port of a ``via`` node that receives the refused value (its unwired
        one); None when ``via`` rewrites for no node."""
        if via not in self.rewrites_for:
            return None
        node = self.nodes[via]
        wired = set(self.spec.nodes[via].inputs)
        return next((p.name for p in node.input_ports if p.name not in wired), None)


def instantiate(spec: FlowSpec, name: str) -> Node:
    """Build node ``name`` from its spec; a bad kind or parameter is a FlowSpecError."""
    node_spec = spec.nodes[name]
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


def _source_port(spec: FlowSpec, nodes: dict[str, Node], ref: Ref) -> PortType | None:
    """The type of what ``ref`` reads (None when it does not exist)."""
    if ref.is_input:
        declared = spec.inputs.get(ref.port)
        return PortType(declared.type) if declared is not None else None
    port = nodes[ref.node].output_port(ref.port)
    return port.type if port is not None else None


def check(spec: FlowSpec) -> Plan:
    """Validate ``spec``; return the plan the compiler needs.

    The phases run in order, each on what the previous ones established: names, node kinds
    and models, error routes (who stands in for whom, who may be skipped), wiring and port
    types, what fallbacks must produce, data-edge order (no cycles), output names of files,
    the flow's outputs, and reachability.
    """
    _check_names(spec)
    models = _catalog(spec)
    nodes = {name: instantiate(spec, name) for name in spec.nodes}
    plan = Plan(spec=spec, nodes=nodes, catalog=models, routed=spec.fallback_nodes())
    for name, node in nodes.items():
        _check_model(spec, name, node, models)
    _check_routes(plan)
    _check_wiring(plan)
    _check_stand_ins(plan)
    plan.order = _order(spec, plan)
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
            if isinstance(value, list) and not port.many:
                raise spec.error(
                    f"Node {name!r}: input {port_name!r} takes one source, not a list.", *where
                )
            try:
                refs = list(spec.refs(name))
            except FlowSpecError as exc:
                raise spec.error(f"Node {name!r}: {exc}", *where) from None
            for ref in (r for p, r in refs if p == port_name):
                _check_ref(spec, plan, name, port, ref, where)
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
        if ref.node in plan.skippable:
            raise spec.error(
                f"Output {out_name!r} is not produced on every path: {ref.node!r} may be "
                "skipped (goto: continue). Output something downstream of the merge instead, "
                "or give it a fallback.",
                *place,
            )


def _check_reachable(plan: Plan) -> None:
    spec = plan.spec
    used = {ref.node for w in plan.wiring.values() for _, ref in w}
    used |= {t.partition(".")[0] for t in spec.outputs.values()}
    for name in spec.nodes:
        if name not in used and name not in plan.routed:
            raise spec.error(
                f"Node {name!r} cannot be reached from the flow's outputs: nothing reads its "
                "outputs and no route sends it work. Wire it, list it in 'outputs', or remove "
                "it.",
                "nodes",
                name,
            )


def _check_ref(
    spec: FlowSpec, plan: Plan, name: str, port: Port, ref: Ref, where: tuple[str, ...]
) -> None:
    if ref.is_input:
        if ref.port not in spec.inputs:
            declared = ", ".join(spec.inputs) or "none"
            raise spec.error(
                f"Node {name!r}: input {port.name!r} reads flow input {ref.port!r}, which is not "
                f"declared (inputs: {declared}). Add it under 'inputs'.",
                *where,
            )
    else:
        if ref.node not in plan.nodes:
            raise spec.error(
                f"Node {name!r}: input {port.name!r} reads {str(ref)!r}, but there is no node "
                f"{ref.node!r}. Nodes: {', '.join(plan.nodes)}.",
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
    source = _source_port(spec, plan.nodes, ref)
    if source is not None and not port.type.accepts(source):
        raise spec.error(
            f"Type mismatch: {str(ref)!r} is {source.value}, but {name}.{port.name} takes "
            f"{port.type.value}. Insert a node that converts it (e.g. a prompt_template for "
            "text, analyze_image for an image).",
            *where,
        )
    if (
        not ref.is_input
        and ref.node in plan.skippable
        and not port.many
        and port.required
        and name not in plan.routed
    ):
        raise spec.error(
            f"Node {name!r} needs {str(ref)!r}, but {ref.node!r} may be skipped (goto: "
            "continue): read it through a merge ('many' input) or give it a fallback.",
            *where,
        )


def _order(spec: FlowSpec, plan: Plan) -> list[str]:
    """Topological order of the data edges; a cycle is an error naming its nodes."""
    deps = {
        name: {plan.root(ref.node) for _, ref in plan.wiring[name] if not ref.is_input}
        for name in spec.nodes
    }
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
