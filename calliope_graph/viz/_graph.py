"""The one graph every drawing is derived from: a FlowSpec as a ``networkx.DiGraph``.

Graph nodes are the flow's nodes (by name) plus three kinds of pseudo-node whose ids contain
a dot, so they can never collide with a node name: ``inputs.<name>`` (a flow input),
``outputs.<name>`` (a flow output) and ``continue.<node>`` (the terminal a ``continue`` route
goes to). Node attributes: ``role`` (node/input/output/continue), ``kind``, ``provider``,
``model``, ``model_name``, ``inputs``/``outputs`` (ports as dicts), ``category``,
``fallback_only``, ``timeout``, ``retry``, ``cache``, ``description``.

**Shapes, not constructs.** Every node has ``shape``: a tuple from the closed vocabulary of
:mod:`calliope_graph.flow.construct` — ``node``, ``stack`` (runs several times at once: a
mapped node), ``cluster`` (holds a flow's own drawing: a subflow), ``branch`` (chooses where
the run goes: a switch) — given by the constructs that apply to it; every edge has ``shape``
``edge`` or ``loop`` (goes back up: a rewrite's way back). The renderers draw shapes and the
edge styles of :data:`~calliope_graph.viz._style.EDGE_STYLES`; they never test a construct.

Composition: a mapped node has ``map`` (``{"over", "as", "max_parallel"}``) and list-valued
output ports (``many``); a switch's branches have ``switch_of`` (the switches choosing them); a
``cluster`` node (``kind: flow``) has ``subflow`` (the child flow's name) and ``cluster``: the
child flow's own graph, built the same way, with node ids qualified by the parent node
(``scenes/illustration/image``, matching the trace's names without map item indices); a child
that cannot be loaded leaves ``cluster`` None (and no ``cluster`` shape) and says why in
``note``.

Edge attributes: ``kind`` (data/fallback/continue/rewrite/rewrite_back/map/switch),
``shape``, ``label``, ``when``, ``bound``, ``ports`` (a list of (source port, target port)),
``source_ref`` (what the edge reads: ``story.object.scenes``), ``parallel`` (a data edge of a
fan-out whose branches can run in the same superstep), ``merge`` (a data edge into a
``many`` port). A DiGraph keeps one edge per ordered pair; when a flow has two edges of
different kinds between the same nodes, the extra ones are kept in the ``extra`` attribute
(:func:`edge_list` flattens them; which one is drawn is the style's ``priority``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import networkx as nx

from calliope_graph.config import ModelConfig, catalog
from calliope_graph.flow.construct import edge_shape, node_shapes
from calliope_graph.flow.spec import CONTINUE, INPUTS, Edge, FlowSpec, NodeSpec, parse_ref
from calliope_graph.viz._style import EDGE_STYLES

__all__ = ["CATEGORIES", "edge_list", "to_networkx", "walk", "walk_edges"]

#: Node category → (fill, stroke) used by every drawing.
CATEGORIES: dict[str, tuple[str, str]] = {
    "input": ("#eef2f7", "#5b6b7f"),
    "output": ("#eef2f7", "#5b6b7f"),
    "continue": ("#f4f4f4", "#9a9a9a"),
    "llm": ("#e8f0fe", "#3b6fd8"),
    "vision": ("#e6f6f4", "#1f8a7a"),
    "image": ("#fdf0e6", "#c8651b"),
    "video": ("#f6e9f7", "#9146a3"),
    "audio": ("#fbf6e0", "#a3861a"),
    "guard": ("#fdeaea", "#c0392b"),
    "helper": ("#f3f3f3", "#6d6d6d"),
    "model": ("#eef0ff", "#5a5fc4"),
    "route": ("#e7f6f1", "#0f8a6c"),
    "subflow": ("#f7f3fc", "#7b3fbf"),
}

_KIND_CATEGORY = {
    "text_to_text": "llm",
    "messages_to_object": "llm",
    "analyze_image": "vision",
    "text_to_image": "image",
    "image_and_text_to_video": "video",
    "audio_to_text": "audio",
    "censor_text": "guard",
    "prompt_template": "helper",
    "merge_analyses": "helper",
    "passthrough": "helper",
    "constant": "helper",
    "frame": "helper",
    "switch": "route",
    "classify": "route",
    "choose": "route",
    "flow": "subflow",
}

#: How deep subflow clusters nest in a drawing (a flow reaching itself stops here).
MAX_DEPTH = 6


def _port(name: str, type_: str, required: bool = True, many: bool = False) -> dict[str, Any]:
    return {"name": name, "type": type_, "required": required, "many": many}


def _node_info(name: str, node: NodeSpec) -> dict[str, Any]:
    """Kind metadata (ports, provider, model, category), tolerant of unknown kinds/configs."""
    info: dict[str, Any] = {
        "role": "node",
        "kind": node.kind,
        "provider": None,
        "model": None,
        "model_name": None,
        "inputs": [],
        "outputs": [],
        "category": _KIND_CATEGORY.get(node.kind, "helper"),
        "description": node.description,
        "timeout": node.timeout,
        "retry": node.retry.max_attempts if node.retry else None,
        "cache": bool(node.cache),
    }
    cls: Any = None
    try:
        from calliope_graph.nodes import get_node_kind

        cls = get_node_kind(node.kind)
    except Exception:  # an unknown kind still draws, with the ports its wiring implies
        cls = None
    model: str | ModelConfig | None = node.model
    if cls is not None:
        if node.kind not in _KIND_CATEGORY:
            info["category"] = "model" if getattr(cls, "conversion", None) else "helper"
        if not info["description"]:
            info["description"] = getattr(cls, "description", "")
        if model is None and getattr(cls, "needs_model", False):
            model = getattr(cls, "default_model", None)
        ports_in = getattr(cls, "inputs", ())
        ports_out = getattr(cls, "outputs", ())
        try:  # instance ports (prompt_template's come from its template)
            instance = cls(None, name=name, **node.params)
            ports_in, ports_out = instance.input_ports, instance.output_ports
        except Exception:
            pass
        info["inputs"] = [_port(p.name, str(p.type), p.required, p.many) for p in ports_in]
        info["outputs"] = [_port(p.name, str(p.type)) for p in ports_out]
    if isinstance(model, ModelConfig):
        info["provider"] = str(model.provider)
        info["model"] = model.model.provider_model_name
        info["model_name"] = model.slug
    elif isinstance(model, str):
        info["model_name"] = model
        try:
            config = catalog.get(model)
        except Exception:
            info["model"] = model
        else:
            info["provider"] = str(config.provider)
            info["model"] = config.model.provider_model_name
    # Ports wired in the spec but unknown to the kind still appear (typed "any").
    known_in = {p["name"] for p in info["inputs"]}
    for port, value in node.inputs.items():
        if port not in known_in:
            info["inputs"].append(_port(port, "any", many=isinstance(value, list)))
            known_in.add(port)
    return info


def _add_edge(graph: nx.DiGraph, u: str, v: str, attrs: dict[str, Any]) -> None:
    if not graph.has_edge(u, v):
        graph.add_edge(u, v, **attrs, extra=[])
        return
    current = graph.edges[u, v]
    if current["kind"] == attrs["kind"]:
        current["ports"] = current["ports"] + attrs["ports"]
        current["when"] = current["when"] + [w for w in attrs["when"] if w not in current["when"]]
        if attrs["label"] and attrs["label"] not in current["label"].split(", "):
            current["label"] = ", ".join(x for x in (current["label"], attrs["label"]) if x)
        current["merge"] = current.get("merge", False) or attrs.get("merge", False)
        return
    if _priority(attrs) < _priority(current):
        kept = {k: val for k, val in current.items() if k != "extra"}
        extra = current["extra"]
        graph.remove_edge(u, v)
        graph.add_edge(u, v, **attrs, extra=[*extra, kept])
    else:
        current["extra"] = [*current["extra"], attrs]


def _priority(attrs: dict[str, Any]) -> int:
    style = EDGE_STYLES.get(str(attrs["kind"]))
    return style.priority if style is not None else 9


def _data_label(ports: list[tuple[str | None, str | None]]) -> str:
    parts = []
    for src, dst in ports:
        if src and dst and src != dst:
            parts.append(f"{src} → {dst}")
        else:
            parts.append(src or dst or "")
    return ", ".join(p for p in parts if p)


def to_networkx(spec: Any) -> nx.DiGraph:
    """The flow as a DiGraph with the attributes every drawing reads (see the module doc).

    ``spec`` is a :class:`~calliope_graph.flow.FlowSpec` or anything with a ``.spec`` that
    is one (a built flow). Subflows are loaded from the spec alone (a flow that does not
    validate still draws; a child that cannot be loaded is drawn as a plain node with a note).
    """
    return _build(_as_spec(spec), ())


def _identity(spec: FlowSpec) -> str:
    return spec.source or spec.name


def _load_child(reference: Any, parent: FlowSpec) -> FlowSpec:
    """The child flow of a ``kind: flow`` node, loaded the way validation loads it."""
    from importlib import resources

    from calliope_graph.flow.spec import load_spec
    from calliope_graph.flow.subflow import resolve_flow

    if not isinstance(reference, str) or not reference:
        raise ValueError("no params.flow")
    target = resolve_flow(reference, parent.source)
    if isinstance(target, str):
        text = resources.files("calliope_graph.graphs").joinpath(f"{target}.yaml")
        return load_spec(f"{target}.yaml", text=text.read_text(encoding="utf-8"))
    return load_spec(target)


def _subflow(name: str, node: NodeSpec, spec: FlowSpec, chain: tuple[str, ...]) -> dict[str, Any]:
    """``subflow``, ``cluster`` (the child's graph, qualified) and ports of a subflow node."""
    reference = node.params.get("flow")
    out: dict[str, Any] = {"subflow": str(reference or "?"), "cluster": None, "note": ""}
    try:
        child = _load_child(reference, spec)
    except Exception as exc:  # drawn as a plain node: the drawing never fails on a child
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        out["note"] = f"flow {reference!r} not loaded: {first}"
        return out
    out["subflow"] = child.name
    identity = _identity(child)
    if identity in chain or len(chain) >= MAX_DEPTH:
        out["note"] = f"flow {child.name!r} reaches itself: not expanded"
        return out
    inner = _build(child, (*chain, identity))
    out["cluster"] = _qualify(inner, name)
    out["inputs"] = [_port(n, i.type, i.required) for n, i in child.inputs.items()]
    out["outputs"] = [
        _port(a["label"], a["inputs"][0]["type"] if a["inputs"] else "any")
        for _, a in inner.nodes(data=True)
        if a["role"] == "output"
    ]
    return out


def _qualify(graph: nx.DiGraph, prefix: str) -> nx.DiGraph:
    """``graph`` with every node id (at every nesting level) prefixed by ``prefix/``."""
    qualified: nx.DiGraph = nx.relabel_nodes(graph, {n: f"{prefix}/{n}" for n in graph.nodes})
    for _, attrs in qualified.nodes(data=True):
        if attrs.get("cluster") is not None:
            attrs["cluster"] = _qualify(attrs["cluster"], prefix)
    return qualified


def _build(spec: FlowSpec, chain: tuple[str, ...]) -> nx.DiGraph:
    chain = chain or (_identity(spec),)
    graph = nx.DiGraph(name=spec.name, description=spec.description)
    for name, input_spec in spec.inputs.items():
        attrs = _pseudo("input", name, input_spec.description)
        attrs["outputs"] = [_port(name, input_spec.type, input_spec.required)]
        graph.add_node(f"{INPUTS}.{name}", **attrs)
    edges = spec.edges()
    _add_nodes(graph, spec, edges, chain)
    for edge in edges:
        _add_spec_edge(graph, edge)
    _add_outputs(graph, spec)
    for (u, v), _ in list(_mark_parallel(graph).items()):
        graph.edges[u, v]["parallel"] = True
    return graph


def _pseudo(role: str, label: str, description: str) -> dict[str, Any]:
    """The attributes of a pseudo-node (a flow input or output, a ``continue`` terminal)."""
    return {
        "role": role,
        "kind": role,
        "label": label,
        "shape": ("node",),
        "provider": None,
        "model": None,
        "model_name": None,
        "inputs": [],
        "outputs": [],
        "category": role,
        "description": description,
        "fallback_only": False,
    }


def _add_nodes(
    graph: nx.DiGraph, spec: FlowSpec, edges: list[Edge], chain: tuple[str, ...]
) -> None:
    """The flow's nodes, each with its shapes (from the constructs that apply to it), the
    switches choosing it, whether it runs only on error, and a subflow's cluster."""
    fallback_only = spec.fallback_nodes()
    chosen_by: dict[str, list[str]] = {}
    for edge in edges:
        if edge.kind == "switch" and edge.target:
            chosen_by.setdefault(edge.target, []).append(edge.source)
    error_targets = fallback_only - set(chosen_by)
    for node in spec.nodes.values():
        for route in node.on_error:
            if route.goto and route.goto != CONTINUE:
                error_targets.add(route.goto)
            if route.rewrite:
                error_targets.add(route.rewrite.via)
    for name, node in spec.nodes.items():
        info = _node_info(name, node)
        info["map"] = None
        info["switch_of"] = list(dict.fromkeys(chosen_by.get(name, [])))
        info["error_only"] = name in error_targets
        shapes = node_shapes(name, node)
        if "cluster" in shapes:
            info.update(_subflow(name, node, spec, chain))
            if info["cluster"] is None:  # not loaded: drawn as a plain box with a note
                shapes = tuple(s for s in shapes if s != "cluster") or ("node",)
        if node.map is not None:
            info["map"] = {
                "over": node.map.over,
                "as": node.map.as_,
                "max_parallel": node.map.max_parallel,
            }
        if "stack" in shapes:  # it runs several times: every output becomes a list
            info["outputs"] = [{**p, "many": True} for p in info["outputs"]]
        info["shape"] = shapes
        graph.add_node(name, label=name, fallback_only=name in fallback_only, **info)


def _add_spec_edge(graph: nx.DiGraph, edge: Edge) -> None:
    """One edge of :meth:`FlowSpec.edges`, with its label, shape and ports."""
    source = edge.source
    if edge.source == INPUTS:
        source = f"{INPUTS}.{(edge.source_port or '').split('.')[0]}"
    if source not in graph:
        graph.add_node(source, **_missing(source))
    if edge.kind == "continue":
        target = f"{CONTINUE}.{edge.source}"
        graph.add_node(
            target, **_pseudo("continue", "continue", "go on without this node's outputs")
        )
    else:
        target = edge.target or ""
        if target not in graph:
            graph.add_node(target, **_missing(target))
    ports = [(edge.source_port, edge.target_port)]
    label = _data_label(ports) if edge.kind == "data" else edge.label
    if edge.kind == "rewrite_back" and edge.bound:
        label = f"{label} ≤{edge.bound}"
    if edge.kind == "map" and edge.bound:
        label = f"{label} (≤{edge.bound} at once)"
    merge = False
    if edge.kind == "data":
        for port in graph.nodes[target].get("inputs", []):
            if port["name"] == edge.target_port and port["many"]:
                merge = True
    attrs = {
        "kind": edge.kind,
        "shape": edge_shape(edge.kind),
        "label": label,
        "when": list(edge.when),
        "bound": edge.bound,
        "ports": ports,
        "source_ref": ".".join(p for p in (edge.source, edge.source_port) if p),
        "parallel": False,
        "merge": merge,
    }
    _add_edge(graph, source, target, attrs)


def _add_outputs(graph: nx.DiGraph, spec: FlowSpec) -> None:
    """A pseudo-node per flow output, fed by the port it reads."""
    for out_name, ref_text in spec.outputs.items():
        target = f"outputs.{out_name}"
        try:
            ref = parse_ref(ref_text)
        except Exception:
            continue
        source = f"{INPUTS}.{ref.port}" if ref.is_input else ref.node
        if source not in graph:
            graph.add_node(source, **_missing(source))
        port_type = "any"
        for port in graph.nodes[source].get("outputs", []):
            if port["name"] == ref.port:
                port_type = port["type"]
        attrs = _pseudo("output", out_name, f"flow output ← {ref_text}")
        attrs["inputs"] = [_port(out_name, port_type)]
        graph.add_node(target, **attrs)
        edge = {
            "kind": "data",
            "shape": "edge",
            "label": ref.port,
            "when": [],
            "bound": None,
            "ports": [(ref.port, out_name)],
            "source_ref": ref_text,
            "parallel": False,
            "merge": False,
        }
        _add_edge(graph, source, target, edge)


def _missing(name: str) -> dict[str, Any]:
    """Attributes for a node a reference names but the spec lacks (validation reports it)."""
    return {
        "role": "node",
        "kind": "?",
        "label": name,
        "shape": ("node",),
        "provider": None,
        "model": None,
        "model_name": None,
        "inputs": [],
        "outputs": [],
        "category": "helper",
        "description": "not defined in this flow",
        "fallback_only": False,
    }


def _mark_parallel(graph: nx.DiGraph) -> dict[tuple[str, str], bool]:
    """Data edges of a fan-out whose targets do not depend on each other (same superstep)."""
    data = nx.DiGraph()
    data.add_nodes_from(graph.nodes)
    data.add_edges_from((u, v) for u, v, d in graph.edges(data=True) if d["kind"] == "data")
    acyclic = nx.is_directed_acyclic_graph(data)
    marked: dict[tuple[str, str], bool] = {}
    for u in graph.nodes:
        targets = [
            v
            for v in data.successors(u)
            if graph.nodes[v]["role"] == "node" and not graph.nodes[v]["fallback_only"]
        ]
        if len(targets) < 2:
            continue
        for v in targets:
            for w in targets:
                if v == w:
                    continue
                if acyclic and (nx.has_path(data, v, w) or nx.has_path(data, w, v)):
                    continue
                marked[(u, v)] = True
                break
    return marked


def edge_list(graph: nx.DiGraph) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every edge (u, v, attrs), including the extra ones a DiGraph pair had to fold in."""
    for u, v, attrs in graph.edges(data=True):
        yield u, v, attrs
        for extra in attrs.get("extra", []):
            yield u, v, extra


def _as_spec(spec: Any) -> FlowSpec:
    if isinstance(spec, FlowSpec):
        return spec
    inner = getattr(spec, "spec", None)
    if isinstance(inner, FlowSpec):
        return inner
    if callable(inner):
        inner = inner()
        if isinstance(inner, FlowSpec):
            return inner
    raise TypeError(
        f"Expected a FlowSpec or a flow with a .spec, got {type(spec).__name__}: load one with "
        "calliope_graph.flow.load_spec(path)."
    )


def node_subtitle(attrs: dict[str, Any]) -> str:
    """``kind · provider/model`` (or the input/output type) for a node's second line."""
    role = attrs["role"]
    if role == "input":
        ports = attrs["outputs"]
        return f"input · {ports[0]['type']}" if ports else "input"
    if role == "output":
        ports = attrs["inputs"]
        return f"output · {ports[0]['type']}" if ports else "output"
    if role == "continue":
        return ""
    parts = [attrs["kind"]]
    if attrs.get("subflow"):
        parts.append(str(attrs["subflow"]))
    if attrs.get("provider") and attrs.get("model"):
        parts.append(f"{attrs['provider']}/{attrs['model']}")
    elif attrs.get("model"):
        parts.append(str(attrs["model"]))
    return " · ".join(parts)


def port_lines(attrs: dict[str, Any]) -> list[str]:
    """``in  a:text, b:image`` / ``out c:text`` lines for a flow node (empty for pseudo-nodes)."""
    if attrs["role"] != "node":
        return []
    lines = []
    ins = [f"{p['name']}:{p['type']}{'[]' if p['many'] else ''}" for p in attrs["inputs"]]
    outs = [f"{p['name']}:{p['type']}{'[]' if p.get('many') else ''}" for p in attrs["outputs"]]
    if ins:
        lines.append("in  " + ", ".join(ins))
    if outs:
        lines.append("out " + ", ".join(outs))
    return lines


def map_text(attrs: dict[str, Any]) -> str:
    """``for each scene ×N · ≤4 at once`` for a mapped node (empty otherwise)."""
    spec = attrs.get("map")
    if not spec:
        return ""
    text = f"for each {spec['as']} ×N"
    if spec.get("max_parallel"):
        text += f" · ≤{spec['max_parallel']} at once"
    return text


def node_flags(attrs: dict[str, Any]) -> list[str]:
    """Short notes: map, switch branch, fallback-only, timeout, retries, cache, load problems."""
    flags = []
    if attrs.get("map"):
        flags.append(map_text(attrs))
    if attrs.get("switch_of"):
        flags.append(f"when chosen by {', '.join(attrs['switch_of'])}")
    if attrs.get("error_only", attrs.get("fallback_only")):
        flags.append("on error only")
    if attrs.get("timeout"):
        flags.append(f"timeout {attrs['timeout']:g}s")
    if attrs.get("retry"):
        flags.append(f"retry ×{attrs['retry']}")
    if attrs.get("cache"):
        flags.append("cached")
    if attrs.get("note"):
        flags.append(str(attrs["note"]))
    return flags


def walk(graph: nx.DiGraph) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of ``graph`` and of its subflow clusters, at every depth (parents first)."""
    for node, attrs in graph.nodes(data=True):
        yield node, attrs
        if attrs.get("cluster") is not None:
            yield from walk(attrs["cluster"])


def walk_edges(graph: nx.DiGraph) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every edge of ``graph`` and of its subflow clusters (see :func:`edge_list`)."""
    yield from edge_list(graph)
    for _, attrs in graph.nodes(data=True):
        if attrs.get("cluster") is not None:
            yield from walk_edges(attrs["cluster"])
