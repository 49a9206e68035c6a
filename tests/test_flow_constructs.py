"""The construct registry of flow/ (flow/construct.py): every construct is registered with its
checks, shapes and lowering; every edge kind a flow can have is drawn from one style row; the
drawings see shapes, never constructs; generated names never collide."""

from __future__ import annotations

import importlib
import typing

import pytest

from calliope_graph.flow import _names, shipped_flows
from calliope_graph.flow.construct import (
    CONSTRUCT_MODULES,
    EDGE_SHAPES,
    NODE_SHAPES,
    constructs,
    edge_shape,
    node_shapes,
)
from calliope_graph.flow.spec import EdgeKind, NodeSpec, load_spec
from calliope_graph.viz import to_networkx
from calliope_graph.viz._style import EDGE_STYLES


def test_every_construct_module_registers_one_construct_with_its_lowering() -> None:
    names = [c.name for c in constructs()]
    assert names[: len(CONSTRUCT_MODULES)] == [
        "routes",
        "switch",
        "candidates",
        "map",
        "subflow",
        "lanes",
    ]
    for construct in constructs():
        assert construct.lowering is not None
        importlib.import_module(construct.lowering)  # the kernel imports it when compiling


def test_every_edge_kind_has_a_style_and_a_shape() -> None:
    for kind in typing.get_args(EdgeKind):
        assert kind in EDGE_STYLES, kind
        assert edge_shape(kind) in EDGE_SHAPES
    assert edge_shape("rewrite_back") == "loop"
    assert edge_shape("data") == "edge"


def test_node_shapes_come_from_the_constructs() -> None:
    assert node_shapes("a", NodeSpec(kind="text_to_text")) == ("node",)
    assert node_shapes("a", NodeSpec(kind="switch")) == ("branch",)
    assert node_shapes("a", NodeSpec(kind="flow", params={"flow": "illustrate"})) == ("cluster",)
    mapped = NodeSpec.model_validate({"kind": "flow", "map": {"over": "inputs.xs"}})
    assert set(node_shapes("a", mapped)) == {"stack", "cluster"}


@pytest.mark.parametrize("name", shipped_flows())
def test_drawings_of_shipped_flows_carry_shapes_from_the_vocabulary(name: str) -> None:
    from importlib import resources

    text = resources.files("calliope_graph.graphs").joinpath(f"{name}.yaml").read_text("utf-8")
    spec = load_spec(f"{name}.yaml", text=text)
    graph = to_networkx(spec)
    for node, attrs in graph.nodes(data=True):
        assert attrs["shape"] and set(attrs["shape"]) <= set(NODE_SHAPES), node
        if node in spec.nodes and spec.nodes[node].map is not None:
            assert "stack" in attrs["shape"]
        if "cluster" in attrs["shape"]:
            assert attrs["cluster"] is not None
    for _, _, attrs in graph.edges(data=True):
        assert attrs["shape"] in EDGE_SHAPES


def test_generated_names_never_collide_with_each_other() -> None:
    names = [
        _names.port_key("n", "p"),
        _names.input_key("n"),
        _names.rewrites_key("n"),
        _names.override_key("n", "p"),
        _names.request_key("n"),
        _names.HALT_KEY,
        _names.map_key("n"),
        _names.done_name("n"),
        _names.fan_name("n"),
        _names.gather_name("n"),
        _names.lane_name("n"),
        _names.ITEM_KEY,
        _names.FAILED,
        _names.TYPES_KEY,
        _names.IO_INPUTS,
        _names.IO_OUTPUTS,
    ]
    assert len(set(names)) == len(names)
    # A node name cannot contain '.' or ':' and never starts with '~', so no generated key
    # or node is a node's name.
    assert all("." in n or "~" in n or "__" in n for n in names)
