"""The flow JSON Schema types each kind's params, so an editor completes and checks them
(issue 24, item 6): every shipped flow is valid against it, a wrong param is not."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from calliope_graph.nodes import node_kinds

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "calliope_graph" / "flow" / "flow.schema.json").read_text())
VALIDATOR = jsonschema_rs.Draft202012Validator(SCHEMA)


def errors(flow: dict[str, Any]) -> list[str]:
    return [f"{list(e.instance_path)}: {e.message}" for e in VALIDATOR.iter_errors(flow)]


@pytest.mark.parametrize("path", sorted((ROOT / "graphs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_flow_is_valid_against_the_schema(path: Path) -> None:
    assert errors(yaml.safe_load(path.read_text())) == []


def yaml_flows(markdown: Path) -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", markdown.read_text(), re.S)
    loaded = [yaml.safe_load(b) for b in blocks]
    return [b for b in loaded if isinstance(b, dict) and "nodes" in b]


def test_every_flow_in_the_readme_and_the_cookbook_is_valid_against_the_schema() -> None:
    flows = yaml_flows(ROOT / "README.md") + yaml_flows(ROOT / "docs" / "cookbook.md")
    assert len(flows) >= 10
    for flow in flows:
        assert errors(flow) == [], flow.get("name")


def image_flow(**params: Any) -> dict[str, Any]:
    return {
        "name": "pic",
        "inputs": {"text": {"type": "text"}},
        "nodes": {
            "image": {
                "kind": "text_to_image",
                "model": "openai-gpt-image-2",
                "params": params,
                "inputs": {"prompt": "inputs.text"},
            }
        },
        "outputs": {"image": "image.image"},
    }


def test_a_wrong_param_type_for_a_kind_is_refused() -> None:
    assert errors(image_flow(width=1024, height=1024, output_name="a.png")) == []
    wrong = errors(image_flow(width="big"))
    assert wrong and any("width" in e for e in wrong), wrong
    assert errors(image_flow(widht=1024))  # a misspelt param: not one of the kind's
    assert errors(image_flow(width=0))  # out of the model's bounds (gt=0)


def test_allowed_values_and_required_params_are_in_the_schema() -> None:
    flow = image_flow()
    flow["nodes"]["pick"] = {"kind": "choose", "params": {"by": "vote"}, "inputs": {}}
    assert any("vote" in e for e in errors(flow))
    flow["nodes"]["pick"]["params"] = {"by": "judge", "criteria": "the clearest"}
    assert errors(flow) == []
    flow["nodes"]["sub"] = {"kind": "flow", "params": {}}  # `flow` is required
    assert any("flow" in e for e in errors(flow))


def test_each_registered_kind_has_its_params_and_others_stay_open() -> None:
    defs = SCHEMA["$defs"]
    for kind, cls in node_kinds().items():
        if cls.__module__.startswith("calliope_graph."):  # not a test's own kinds
            assert f"{kind}.params" in defs, kind
    assert "flow.params" in defs
    flow = image_flow()
    flow["nodes"]["mine"] = {"kind": "my_package_kind", "params": {"anything": [1, 2]}}
    assert errors(flow) == []  # a kind from another package: its params are its own


def test_the_inline_model_shapes_are_in_the_schema() -> None:
    flow = image_flow()
    node = flow["nodes"]["image"]
    for model in (
        {"provider": "openai", "provider_model_name": "gpt-image-2"},
        {
            "description": "a catalog entry",
            "model_parameters": {"quality": "low"},
            "model": {"provider": "openai", "provider_model_name": "gpt-image-2"},
        },
    ):
        node["model"] = copy.deepcopy(model)
        assert errors(flow) == [], model
    node["model"] = {"provider": "openai"}
    assert errors(flow)


def test_a_kind_registered_in_passing_is_not_in_the_schema() -> None:
    from calliope_graph.flow import FlowSpec
    from calliope_graph.nodes import Node, register_node

    @register_node
    class _Passing(Node):
        kind = "test_schema_passing"

        async def run(self, ctx: Any, **inputs: Any) -> dict[str, Any]:
            return {}

    assert "test_schema_passing" in node_kinds()
    assert FlowSpec.json_schema() == SCHEMA  # the same schema in every process
