"""PromptTemplate: fill a langchain-core prompt template from upstream values.

Input ports are the template's variables. A string template outputs ``text``; a chat
template (``messages: [[role, text], ...]``) outputs ``messages``. An
:class:`~calliope_graph.media.ImageAnalysis` fed to an f-string variable is rendered as a
readable summary; in a mustache template its fields are addressable
(``{{analysis.description}}``).

``template_format`` is detected when not set (:func:`~._template_vars.detect_format`):
``{{name}}`` / ``{{story.title}}`` templates are mustache, ``{name}`` ones f-strings (where
``{{`` is an escaped brace); set it to say otherwise.

The template's variables are read without LangChain (``nodes/_template_vars.py``), so
validating a flow does not load it; the LangChain template is built when the node first runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from calliope_graph.context import RunContext
from calliope_graph.errors import ConfigurationError
from calliope_graph.media import ImageAnalysis
from calliope_graph.nodes._base import Node, Port, PortType, register_node
from calliope_graph.nodes._template_vars import detect_format, template_variables

if TYPE_CHECKING:
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.prompts import PromptTemplate as LCPromptTemplate


class PromptParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    template: str | None = Field(
        default=None,
        description="the text, with {{name}} (mustache) or {name} (f-string) variables",
        examples=["A picture of {{story.title}}: {{story.summary}}"],
    )
    messages: list[tuple[str, str]] | None = Field(
        default=None,
        description="a chat template instead: [role, text] pairs (outputs messages)",
        examples=[[["system", "You tell short stories."], ["user", "A story about {{topic}}"]]],
    )
    template_format: Literal["f-string", "mustache"] | None = Field(
        default=None,
        description="how variables are written; default: detected ({{x}} mustache, {x} f-string)",
    )
    defaults: dict[str, str] = Field(
        default={},
        description="values for variables that are not wired (they become optional ports)",
        examples=[{"style": "watercolour"}],
    )

    @model_validator(mode="after")
    def _one_of(self) -> PromptParams:
        if (self.template is None) == (self.messages is None):
            raise ValueError("give exactly one of 'template' (a string) or 'messages'")
        if self.template_format is None:
            texts = (
                [self.template]
                if self.template is not None
                else [t for _, t in self.messages or []]
            )
            self.template_format = "mustache" if detect_format(texts) == "mustache" else "f-string"
            # Detected, not given: a flow built from this node says no more than its YAML.
            self.__pydantic_fields_set__.discard("template_format")
        return self


def render_analysis(analysis: ImageAnalysis) -> str:
    parts = [analysis.description or ", ".join(analysis.captions)]
    if analysis.all_tags_and_objects:
        parts.append(f"Things seen: {analysis.all_tags_and_objects}.")
    if analysis.text:
        parts.append(f"Text in the image: {analysis.text}.")
    return " ".join(p for p in parts if p)


@register_node
class PromptTemplate(Node):
    kind = "prompt_template"
    description = "Fill a langchain-core prompt template from upstream values"
    Params = PromptParams

    def __init__(self, model: Any = None, *, name: str | None = None, **params: Any) -> None:
        super().__init__(model, name=name, **params)
        p = self.params
        try:
            self._variables = template_variables(p.template, p.messages, p.template_format)
        except ValueError as exc:
            raise ConfigurationError(
                f"Node {self.name!r}: invalid prompt template: {exc}"
            ) from None
        self._built: LCPromptTemplate | ChatPromptTemplate | None = None

    @property
    def variables(self) -> list[str]:
        return list(self._variables)

    def _prompt(self) -> LCPromptTemplate | ChatPromptTemplate:
        """The LangChain template, built (and LangChain imported) when the node first runs."""
        if self._built is None:
            from langchain_core.prompts import ChatPromptTemplate
            from langchain_core.prompts import PromptTemplate as LCPromptTemplate

            p = self.params
            try:
                if p.template is not None:
                    self._built = LCPromptTemplate.from_template(
                        p.template, template_format=p.template_format
                    )
                else:
                    self._built = ChatPromptTemplate.from_messages(
                        p.messages or [], template_format=p.template_format
                    )
            except (ValueError, KeyError) as exc:
                raise ConfigurationError(
                    f"Node {self.name!r}: invalid prompt template: {exc}"
                ) from None
        return self._built

    @property
    def input_ports(self) -> tuple[Port, ...]:
        return tuple(
            Port(v, PortType.ANY, required=v not in self.params.defaults) for v in self.variables
        )

    @property
    def output_ports(self) -> tuple[Port, ...]:
        if self.params.template is not None:
            return (Port("text", PortType.TEXT),)
        return (Port("messages", PortType.MESSAGES),)

    def _value(self, value: Any) -> Any:
        if isinstance(value, ImageAnalysis):
            if self.params.template_format == "mustache":
                return {**value.model_dump(), "summary": render_analysis(value)}
            return render_analysis(value)
        if isinstance(value, BaseModel):
            return value.model_dump() if self.params.template_format == "mustache" else str(value)
        return value

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        values = {**self.params.defaults, **{k: self._value(v) for k, v in inputs.items()}}
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise ConfigurationError(
                f"Node {self.name!r}: template variables {missing} have no value: wire them "
                "or give defaults."
            )
        prompt = self._prompt()
        from langchain_core.prompts import ChatPromptTemplate  # loaded by _prompt()

        if isinstance(prompt, ChatPromptTemplate):
            return {"messages": await prompt.aformat_messages(**values)}
        return {"text": await prompt.aformat(**values)}
