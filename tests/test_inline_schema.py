"""Inline JSON Schemas in flow files keep their constraints: the provider is asked for them in
its structured-output schema and the answer is re-validated against them locally."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from calliope_graph.engines.openai import strict_json_schema
from calliope_graph.errors import ConfigurationError, FlowSpecError
from calliope_graph.flow import Flow, load_spec
from calliope_graph.nodes.messages_to_object import MessagesToObject
from calliope_graph.simulate import Simulator

SEVEN_SCENES: dict[str, Any] = {
    "title": "Story",
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": 80},
        "mood": {"type": "integer", "minimum": 1, "maximum": 5},
        "scenes": {
            "type": "array",
            "minItems": 7,
            "maxItems": 7,
            "items": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    },
}


def story_node(schema: dict[str, Any]) -> Any:
    return MessagesToObject("openai-gpt-6-luna", schema=schema)


def scenes(n: int) -> list[dict[str, str]]:
    return [{"text": f"scene {i}"} for i in range(n)]


def test_a_story_demanding_seven_scenes_refuses_an_answer_with_two() -> None:
    model = story_node(SEVEN_SCENES).response_model
    with pytest.raises(ValidationError, match="at least 7 items"):
        model.model_validate({"title": "The Fox", "mood": 3, "scenes": scenes(2)})
    assert (
        len(model.model_validate({"title": "The Fox", "mood": 3, "scenes": scenes(7)}).scenes) == 7
    )


def test_string_and_number_constraints_are_enforced_too() -> None:
    model = story_node(SEVEN_SCENES).response_model
    with pytest.raises(ValidationError, match="at least 3 characters"):
        model.model_validate({"title": "Fo", "mood": 3, "scenes": scenes(7)})
    with pytest.raises(ValidationError, match="less than or equal to 5"):
        model.model_validate({"title": "The Fox", "mood": 9, "scenes": scenes(7)})


def test_the_provider_is_sent_the_constraints() -> None:
    schema = strict_json_schema(story_node(SEVEN_SCENES).response_model)
    scenes_schema = schema["properties"]["scenes"]
    assert (scenes_schema["minItems"], scenes_schema["maxItems"]) == (7, 7)
    assert schema["properties"]["mood"]["maximum"] == 5
    assert schema["properties"]["title"]["minLength"] == 3


def test_an_unsupported_keyword_is_refused_not_dropped() -> None:
    schema = {
        "type": "object",
        "properties": {
            "scenes": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}
        },
    }
    with pytest.raises(ConfigurationError, match=r"'uniqueItems' is not supported.*minItems"):
        story_node(schema)


def test_a_constraint_of_the_wrong_type_is_refused() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": "one"}}}
    with pytest.raises(ConfigurationError, match="'minimum' must be a number"):
        story_node(schema)


FLOW = """
name: seven
inputs: {premise: {type: text}}
nodes:
  story:
    kind: messages_to_object
    model: openai-gpt-6-luna
    params:
      schema:
        title: Story
        type: object
        properties:
          scenes:
            type: array
            minItems: 7
            maxItems: 7
            items: {type: object, properties: {text: {type: string}}}
    inputs: {messages: inputs.premise}
outputs: {story: story.object}
"""


def test_a_flow_asking_for_exactly_seven_scenes_gets_seven(tmp_path: Path) -> None:
    (tmp_path / "seven.yaml").write_text(FLOW)
    flow = Flow.from_spec(load_spec(tmp_path / "seven.yaml"))
    simulator = Simulator()

    async def instant(seconds: float) -> None:
        return None

    simulator.sleep = instant
    result = asyncio.run(
        flow.ainvoke({"premise": "a fox"}, out_dir=tmp_path / "out", simulator=simulator)
    )
    story = result.outputs["story"]
    found = story["scenes"] if isinstance(story, dict) else story.scenes
    assert len(found) == 7


def test_a_bad_keyword_in_a_flow_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "seven.yaml").write_text(FLOW.replace("maxItems: 7", "uniqueItems: true"))
    with pytest.raises((FlowSpecError, ConfigurationError), match="uniqueItems"):
        Flow.from_spec(load_spec(tmp_path / "seven.yaml")).validate()
