"""Switch and classify: value-based branches.

``switch`` routes to one of several nodes by conditions on an upstream value, written in
JMESPath (a safe, well-kept query language — never ``eval``); the first case that holds
wins, else ``default``. The nodes it routes to run only when chosen; the others are skipped
the way ``continue`` skips a node, so joins after them go on. ``classify`` lets a chat model
pick one label of a fixed set (structured output), for routing on meaning.
"""

from __future__ import annotations

from typing import Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from calliope_graph._messages import as_messages
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.errors import ConfigurationError
from calliope_graph.media import ImageAnalysis
from calliope_graph.nodes._base import Node, Port, PortType, register_node

__all__ = ["Case", "Classify", "Switch", "expression_fields", "to_query_value"]


class Case(BaseModel):
    """``when`` (a JMESPath expression over the value) holds → ``goto`` runs."""

    model_config = ConfigDict(extra="forbid")

    when: str
    goto: str

    @field_validator("when")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            jmespath.compile(value)
        except JMESPathError as exc:
            raise ValueError(f"invalid JMESPath expression {value!r}: {exc}") from None
        return value


class SwitchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    cases: list[Case] = Field(
        min_length=1, examples=[[{"when": "label == 'scary'", "goto": "soften"}]]
    )
    """Tried in order: the first whose ``when`` holds chooses the node its ``goto`` names."""
    default: str | None = Field(default=None, examples=["tell"])
    """Where values no case holds for go (required: validation says so when missing)."""


def to_query_value(value: Any) -> Any:
    """A value as JMESPath sees it: objects as dicts, analyses with their fields."""
    if isinstance(value, ImageAnalysis):
        return {**value.to_dict(), "all_tags_and_objects": value.all_tags_and_objects}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_query_value(v) for v in value]
    return value


def expression_fields(expression: str) -> list[str]:
    """The fields an expression reads from the value itself (its top level), for validation
    against the value's schema: ``contains(tags, 'person') && mood == 'dark'`` → tags, mood."""
    found: list[str] = []

    def walk(node: Any, at_root: bool) -> None:
        kind = str(node.get("type") or "")
        children = [c for c in node.get("children", []) if isinstance(c, dict)]
        if kind == "field":
            if at_root:
                found.append(str(node.get("value")))
            return
        if kind in ("subexpression", "index_expression") or kind.endswith("projection"):
            if children:
                walk(children[0], at_root)
            for child in children[1:]:
                walk(child, False)
            return
        for child in children:
            walk(child, at_root)

    walk(jmespath.compile(expression).parsed, True)
    return list(dict.fromkeys(found))


@register_node
class Switch(Node):
    kind = "switch"
    description = "Route to one node by conditions on a value (JMESPath); the others are skipped"
    Params = SwitchParams
    inputs = (Port("value", PortType.ANY, description="the value the conditions test"),)
    outputs = (
        Port("value", PortType.ANY, description="the value, unchanged"),
        Port("branch", PortType.TEXT, description="the node chosen"),
    )

    def __init__(self, model: Any = None, *, name: str | None = None, **params: Any) -> None:
        super().__init__(model, name=name, **params)
        self._compiled = [(jmespath.compile(c.when), str(c.goto)) for c in self.params.cases]

    @property
    def targets(self) -> list[str]:
        """Every node this switch may choose, cases first, then the default."""
        out = [c.goto for c in self.params.cases]
        if self.params.default is not None:
            out.append(self.params.default)
        return list(dict.fromkeys(out))

    def choose(self, value: Any) -> str:
        """The node to run for ``value``; a ConfigurationError when nothing holds and there
        is no default (validation insists on one)."""
        data = to_query_value(value)
        for expression, goto in self._compiled:
            try:
                if _truthy(expression.search(data)):
                    return goto
            except JMESPathError as exc:
                raise ConfigurationError(
                    f"Switch {self.name!r}: condition {expression.expression!r} failed on the "
                    f"value: {exc}"
                ) from None
        if self.params.default is None:
            raise ConfigurationError(f"Switch {self.name!r}: no case holds and no default.")
        return str(self.params.default)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        value = inputs["value"]
        return {"value": value, "branch": self.choose(value)}


def _truthy(result: Any) -> bool:
    # JMESPath's own truthiness: false, null, empty string/list/object are false.
    return result not in (None, False, "", [], {})


class ClassifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    labels: list[str] = Field(min_length=2, examples=[["happy", "scary"]])
    """The labels the model chooses from (its ``label`` output is one of them)."""
    instructions: str = "Pick the one label that fits best."
    """What the model is told besides the labels."""


@register_node
class Classify(Node):
    kind = "classify"
    description = "A chat model picks one label of a fixed set (for routing on meaning)"
    conversion = Conversion.MESSAGES_TO_OBJECT
    needs_model = True
    default_model = "openai-gpt-6-luna"
    Params = ClassifyParams
    inputs = (Port("text", PortType.ANY, description="what to classify"),)

    def __init__(self, model: Any = None, *, name: str | None = None, **params: Any) -> None:
        super().__init__(model, name=name, **params)
        labels = tuple(self.params.labels)
        if len(set(labels)) != len(labels):
            raise ConfigurationError(f"Node {self.name!r} (classify): labels must be distinct.")
        label_type: Any = Literal[labels]
        self._choice: type[BaseModel] = create_model(
            "Choice", label=(label_type, Field(description="the label that fits"))
        )

    @property
    def output_ports(self) -> tuple[Port, ...]:
        schema = {"type": "string", "enum": list(self.params.labels)}
        return (Port("label", PortType.TEXT, schema=schema),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.MESSAGES_TO_OBJECT, config.provider)
        text = inputs["text"]
        shown = text if isinstance(text, str) else str(to_query_value(text))
        prompt = f"{self.params.instructions}\nLabels: {', '.join(self.params.labels)}.\n\n{shown}"
        choice = await engine(ctx, as_messages(prompt), config, self._choice)
        return {"label": str(choice.label)}  # type: ignore[attr-defined]
