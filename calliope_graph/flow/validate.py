"""Validation: everything that can be wrong with a flow is found before anything runs.

:func:`check` turns a :class:`FlowSpec` into a :class:`Plan` — the node instances and the
structure the compiler needs (who stands in for whom, who may be skipped, who consumes
what) — or raises a :class:`FlowSpecError` naming the node or edge, what to do about it,
and the YAML line when the spec came from a file.
"""

from __future__ import annotations

import re
from pathlib import Path

from calliope_graph.config import ModelCatalog, ModelConfig, catalog
from calliope_graph.engines._registry import Conversion, config_problem, supported
from calliope_graph.engines._sizes import size_problem
from calliope_graph.errors import ConfigurationError, FlowSpecError, MediaError
from calliope_graph.flow._plan import Plan, item_name_of
from calliope_graph.flow._types import ValueType, typed, value_type
from calliope_graph.flow.construct import run_checks
from calliope_graph.flow.spec import CONTINUE, INPUTS, FlowSpec, Ref, parse_ref
from calliope_graph.flow.subflow import Subflow, identity, load_child, loading
from calliope_graph.lifecycle import check_config
from calliope_graph.media import MediaStore
from calliope_graph.nodes import Node, Port, PortType, get_node_kind

__all__ = ["RESERVED", "Plan", "ValueType", "check", "instantiate", "value_type"]

#: Names a node may not take.
RESERVED = frozenset({INPUTS, CONTINUE, "START", "END", "__start__", "__end__"})


def instantiate(spec: FlowSpec, name: str) -> Node:
    """Build node ``name`` from its spec; a bad kind or parameter is a FlowSpecError."""
    node_spec = spec.nodes[name]
    if node_spec.kind == Subflow.kind:
        child = load_child(spec, name)
        try:
            return Subflow(name=name, plan=child, **node_spec.params)
        except ConfigurationError as exc:
            raise spec.error(str(exc), "nodes", name, "params") from None
    try:
        cls = get_node_kind(node_spec.kind)
    except ConfigurationError as exc:
        raise spec.error(f"Node {name!r}: {exc}", "nodes", name, "kind") from None
    try:
        return cls(node_spec.model, name=name, **node_spec.params)
    except ConfigurationError as exc:
        raise spec.error(str(exc), "nodes", name, "params") from None
    except (TypeError, AttributeError, ValueError) as exc:
        # A parameter of the wrong shape that the node's constructor did not check (an
        # inline schema given as a string): refused here, located, never a traceback.
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


def _located(spec: FlowSpec, who: str, *path: str) -> str:
    """``who`` prefixed with the file and line of ``path`` (for a ConfigurationError, which
    keeps its own exit code but, like a FlowSpecError, names where the flow says it)."""
    line = spec.line_of(*path)
    where = ", ".join(p for p in (spec.source, f"line {line}" if line else None) if p)
    return f"{where}: {who}" if where else who


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
    where = _located(spec, f"node {name!r}", "nodes", name, "model")
    check_config(model if isinstance(model, str) else config.slug, config, where=where)
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
    if node.conversion is Conversion.TEXT_TO_IMAGE:  # a size the model cannot make
        size = (getattr(node.params, "width", None), getattr(node.params, "height", None))
        if problem := size_problem(config, *size):
            raise spec.error(f"Node {name!r} ({node.kind}): {problem}.", "nodes", name, "params")
    # What the engine needs that the config alone shows (engines._registry.register_check).
    wired = spec.nodes[name].inputs  # a consistency port needs a model that `takes` it
    entries = ((n, models.get(n)) for n in models)
    if problem := config_problem(node.conversion, config, wired=wired, models=entries):
        raise ConfigurationError(f"{where}: {problem}.")


def check(spec: FlowSpec) -> Plan:
    """Validate ``spec``; return the plan the compiler needs.

    The phases run in order, each on what the previous ones established: names, node kinds
    and models, the constructs' ``structure`` checks (error routes: who stands in for whom,
    who may be skipped; switches; maps), wiring and port types, the constructs' ``wiring``
    checks (what fallbacks must produce), templates, data-edge order (no cycles), the
    constructs' ``order`` checks (switch conditions), output names of files, the flow's
    outputs, and reachability.
    """
    _check_names(spec)
    models = _catalog(spec)
    token = loading.set((*loading.get(), identity(spec)))
    try:
        nodes = {name: instantiate(spec, name) for name in spec.nodes}
    finally:
        loading.reset(token)
    plan = Plan(spec=spec, nodes=nodes, catalog=models, routed=spec.fallback_nodes())
    for name, node in nodes.items():
        _check_model(spec, name, node, models)
    run_checks(plan, "structure")  # routes, switches, maps (flow/construct.py)
    _check_wiring(plan)
    run_checks(plan, "wiring")
    _check_templates(plan)
    plan.order = _order(spec, plan)
    run_checks(plan, "order")
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
            refs = list(spec.refs(name))  # a malformed one is located there
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
                typed(  # a SchemaPathError here names the missing field
                    plan,
                    ref.model_copy(update={"fields": (*ref.fields, *fields)}),
                    name,
                    where,
                    f"Node {name!r}: template variable {path!r} reads",
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
    found = typed(plan, ref, None, place, f"Output {name!r} reads") or ValueType(PortType.ANY)
    plan.output_ports[name] = Port(name, found.type, schema=found.schema, is_list=found.is_list)


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
    """``ref`` read by ``name``'s input ``port`` exists, has a type the port takes, and is
    produced on every path (unless the port reads ``whichever`` of several sources ran)."""
    _check_source(spec, plan, name, port, ref, where)
    _check_read_type(plan, name, port, ref, where)
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


def _check_source(
    spec: FlowSpec, plan: Plan, name: str, port: Port, ref: Ref, where: tuple[str, ...]
) -> None:
    """What ``ref`` names exists: the current map item, a declared flow input, or an output
    port of another node that is not a fallback."""
    item = item_name_of(plan, name)
    if ref.node == item:
        pass  # the current item of a map: typed by _check_read_type
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


def _check_read_type(plan: Plan, name: str, port: Port, ref: Ref, where: tuple[str, ...]) -> None:
    """The port takes what ``ref`` reads: its type, and one value or a list."""
    spec = plan.spec
    source = typed(plan, ref, name, where, f"Node {name!r}: input {port.name!r} reads")
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
