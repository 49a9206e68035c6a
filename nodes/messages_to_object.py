"""MessagesToObject[T]: a chat model fills a pydantic model (structured output)."""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph._messages import as_messages
from calliope_graph._schema import model_from_schema
from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.errors import ConfigurationError
from calliope_graph.nodes._base import Node, Port, PortType, register_node

T = TypeVar("T", bound=BaseModel)


def import_model(path: str) -> type[BaseModel]:
    """``package.module:ClassName`` → the pydantic model class."""
    module_name, _, attr = path.partition(":")
    if not attr:
        module_name, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigurationError(
            f"Cannot import response model {path!r}: write it as 'package.module:ClassName' "
            "and make sure the module is importable."
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise ConfigurationError(f"Response model {path!r} is not a pydantic BaseModel class.")
    return obj


class MessagesToObjectParams(BaseModel):
    """The params a flow gives (the constructor checks that exactly one is given)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)

    response_model: str | None = Field(default=None, examples=["my_package.models:Scene"])
    """A pydantic class as ``package.module:ClassName`` (or one of ``schema``)."""
    inline_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        examples=[
            {
                "type": "object",
                "properties": {"title": {"type": "string"}, "mood": {"type": "string"}},
                "required": ["title", "mood"],
            }
        ],
    )
    """An inline JSON Schema of the object (or one of ``response_model``)."""


@register_node
class MessagesToObject(Node, Generic[T]):
    """Chat messages → an object: a pydantic class (``response_model``) or an inline JSON
    Schema (``schema``, see :mod:`calliope_graph._schema`). With an inline schema the value
    is a plain dict validated against it (so checkpoints need no class to restore it)."""

    kind = "messages_to_object"
    description = "Turn chat messages into a validated object (structured output)"
    conversion = Conversion.MESSAGES_TO_OBJECT
    needs_model = True
    default_model = "openai-gpt-6-luna"
    Params = MessagesToObjectParams
    inputs = (Port("messages", PortType.MESSAGES, description="chat messages or a string"),)

    def __init__(
        self,
        model: ModelConfig | str | None = None,
        *,
        response_model: type[T] | str | None = None,
        schema: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(model, name=name)
        if (response_model is None) == (schema is None):
            raise ConfigurationError(
                f"Node {self.name!r} (messages_to_object): give exactly one of 'response_model' "
                "(a pydantic class, 'package.module:Class') or 'schema' (an inline JSON Schema)."
            )
        self.inline_schema = schema
        if schema is not None:
            model_cls = model_from_schema(schema, name=str(schema.get("title") or self.name))
            self.response_model: type[T] = model_cls  # type: ignore[assignment]
        else:
            self.response_model = (
                import_model(response_model)  # type: ignore[assignment]
                if isinstance(response_model, str)
                else response_model
            )
        self._schema = schema if schema is not None else self.response_model.model_json_schema()

    @property
    def output_ports(self) -> tuple[Port, ...]:
        return (Port("object", PortType.OBJECT, schema=self._schema),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.MESSAGES_TO_OBJECT, config.provider)
        obj = await engine(ctx, as_messages(inputs["messages"]), config, self.response_model)
        if self.inline_schema is not None:
            return {"object": obj.model_dump(mode="json")}
        return {"object": obj}
