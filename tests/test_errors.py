"""The error tree: every ``when:`` name is an error class the classifier knows, the classifier
orders a failure's classes from the most specific to ``any``, and a route for a class catches
its subclasses."""

from __future__ import annotations

import typing
from pathlib import Path

from calliope_graph import errors
from calliope_graph.errors import (
    ProviderError,
    ProviderTimeoutError,
    error_class,
    error_class_names,
    error_classes,
)
from calliope_graph.flow import Flow
from calliope_graph.flow.spec import ErrorClassName
from calliope_graph.nodes import PromptTemplate, TextToText
from calliope_graph.simulate import Simulator, parse_faults


def test_every_error_class_is_a_when_name_and_the_literal_matches_the_classifier() -> None:
    names = set(error_class_names())
    assert set(typing.get_args(ErrorClassName)) == names
    for cls in (errors.ProviderError, errors.FlowSpecError, errors.FlowRunError):
        assert cls.error_class in names  # provider, flow_spec, flow_run are catchable
    assert not hasattr(errors, "ERROR_CLASSES") and not hasattr(errors, "error_class_of")


def test_classifier_orders_specific_to_general() -> None:
    timeout = ProviderTimeoutError("slow", provider="runway")
    assert error_classes(timeout) == ("timeout", "transient", "provider", "any")
    assert error_class(timeout) == "timeout"
    assert error_classes(TimeoutError()) == ("timeout", "transient", "any")
    assert error_classes(KeyError("x")) == ("any",)
    cancelled = ProviderError("prediction was canceled", provider="replicate", code="canceled")
    assert "provider" in error_classes(cancelled)


def test_a_when_provider_route_catches_any_provider_failure(tmp_path: Path) -> None:
    flow = Flow("f")
    text = flow.input("text")
    story = flow.add("story", TextToText("openai-gpt-4o"), {"text": text})
    backup = flow.add("backup", PromptTemplate(template="{text}"), {"text": text})
    flow.fallback(story, to=backup, when=["provider"])
    flow.output("text", story["text"])
    sim = Simulator(faults=parse_faults("auth@openai"))
    result = flow.invoke({"text": "a fox"}, out_dir=tmp_path, simulator=sim)
    assert result.outputs["text"] == "a fox"
    assert result.trace.by_node()["story"][0].branch == "fallback:backup"
