"""The node contract: a small class with typed ports and ``async run(ctx, **inputs)``.

A node kind declares its input and output :class:`Port`\\ s (each with a
:class:`PortType`), an optional :class:`~calliope_graph.engines.Conversion` (which
providers can serve it is then checked before a flow runs), and a pydantic ``Params`` model
for its parameters. ``run`` returns a dict from output port name to value.

Kinds register with :func:`register_node`; third-party packages expose theirs through the
``calliope_graph.nodes`` entry-point group (the entry point names a module whose import
registers its kinds), so YAML flows can name them.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion
from calliope_graph.errors import ConfigurationError

__all__ = [
    "NoParams",
    "Node",
    "Port",
    "PortType",
    "get_node_kind",
    "node_kinds",
    "register_node",
]


class PortType(StrEnum):
    """The modality a port carries."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    ANALYSIS = "analysis"
    MESSAGES = "messages"
    OBJECT = "object"
    ANY = "any"

    def accepts(self, source: PortType) -> bool:
        """Whether a value of type ``source`` may be wired into a port of this type."""
        if PortType.ANY in (self, source) or self is source:
            return True
        # A plain string becomes one user message.
        return self is PortType.MESSAGES and source is PortType.TEXT


@dataclass(frozen=True)
class Port:
    """A named, typed input or output. ``many`` inputs gather several sources into a list.

    ``schema`` is the JSON Schema of an ``object`` value when known (validation checks field
    references against it); ``is_list`` marks a list of ``type`` values (a map node's outputs).
    """

    name: str
    type: PortType
    required: bool = True
    many: bool = False
    description: str = ""
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    is_list: bool = False


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Node(ABC):
    """Base of every node kind."""

    #: The name flows use for this kind (``text_to_image``).
    kind: ClassVar[str]
    #: One line for ``calliope-graph nodes`` and drawings.
    description: ClassVar[str] = ""
    #: The conversion the model config's provider must serve, if any.
    conversion: ClassVar[Conversion | None] = None
    #: Whether a model config is required.
    needs_model: ClassVar[bool] = False
    #: Default model config name when none is given.
    default_model: ClassVar[str | None] = None
    #: Parameters accepted in a flow (validated; unknown names are errors).
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Ports, unless an instance computes its own (see ``input_ports``).
    inputs: ClassVar[tuple[Port, ...]] = ()
    outputs: ClassVar[tuple[Port, ...]] = ()

    def __init__(
        self, model: ModelConfig | str | None = None, *, name: str | None = None, **params: Any
    ) -> None:
        self.name = name or self.kind
        self.model = model if model is not None else self.default_model
        try:
            self.params: Any = self.Params(**params)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            allowed = ", ".join(self.Params.model_fields) or "none"
            raise ConfigurationError(
                f"Node {self.name!r} ({self.kind}): parameter {loc!r}: {err['msg']}. "
                f"Parameters of {self.kind}: {allowed}."
            ) from None
        if self.needs_model and self.model is None:
            raise ConfigurationError(
                f"Node {self.name!r} ({self.kind}) needs a model config: pass model= "
                "(a catalog name such as 'openai-gpt-6-luna', or a ModelConfig)."
            )

    def __repr__(self) -> str:
        model = self.model if isinstance(self.model, str) else getattr(self.model, "slug", None)
        return f"{type(self).__name__}(name={self.name!r}, model={model!r})"

    @property
    def input_ports(self) -> tuple[Port, ...]:
        return self.inputs

    @property
    def output_ports(self) -> tuple[Port, ...]:
        return self.outputs

    def input_port(self, name: str) -> Port | None:
        return next((p for p in self.input_ports if p.name == name), None)

    def output_port(self, name: str) -> Port | None:
        return next((p for p in self.output_ports if p.name == name), None)

    def model_config_for(self, ctx: RunContext) -> ModelConfig:
        """The node's model config, resolving a catalog name against ``ctx.catalog``."""
        if isinstance(self.model, ModelConfig):
            return self.model
        if self.model is None:
            raise ConfigurationError(f"Node {self.name!r} ({self.kind}) has no model config.")
        return ctx.catalog.get(self.model)

    def answer_bytes(self, ctx: RunContext, inputs: Mapping[str, Any]) -> int:
        """About the most bytes this node's answer writes into its output folder: the run
        checks the disk has that room before the provider is paid (``flow/_room.py``).
        Here an image per image output (its ``width`` × ``height``, else the model config's
        ``size``, else 1024², at 3 bytes a pixel); 0 for text, and for video, whose
        download the output journal keeps as the provider's URL when the disk is full. A
        kind whose answer is larger (speech) says so."""
        images = sum(1 for port in self.output_ports if port.type is PortType.IMAGE)
        if not images or self.model is None:
            return 0
        width = getattr(self.params, "width", None)
        height = getattr(self.params, "height", None)
        if not (width and height):
            size = str(self.model_config_for(ctx).parameters.get("size") or "")
            found = re.fullmatch(r"(\d+)\s*[xX\u00d7]\s*(\d+)", size.strip())
            width, height = (int(found[1]), int(found[2])) if found else (1024, 1024)
        return images * int(width) * int(height) * 3

    def output_stem(self) -> str:
        """A file-name stem for media this node writes."""
        return re.sub(r"[^A-Za-z0-9_-]+", "_", self.name) or self.kind

    @abstractmethod
    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        """Run once on ``inputs`` (by input port name); return outputs by port name."""


N = TypeVar("N", bound=type[Node])

_KINDS: dict[str, type[Node]] = {}
_entry_points_loaded = False


def register_node(cls: N) -> N:
    """Class decorator: make the kind available to flows by ``cls.kind``."""
    existing = _KINDS.get(cls.kind)
    if existing is not None and existing is not cls:
        raise ConfigurationError(
            f"Node kind {cls.kind!r} is registered twice ({existing.__module__}."
            f"{existing.__qualname__} and {cls.__module__}.{cls.__qualname__}): rename one."
        )
    _KINDS[cls.kind] = cls
    return cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="calliope_graph.nodes"):
        ep.load()


def node_kinds() -> dict[str, type[Node]]:
    """Every registered kind, by name (built-ins and entry points)."""
    _load_entry_points()
    return dict(sorted(_KINDS.items()))


def get_node_kind(kind: str) -> type[Node]:
    _load_entry_points()
    try:
        return _KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(_KINDS))
        raise ConfigurationError(
            f"Unknown node kind {kind!r}. Known kinds: {known}. Third-party kinds register "
            "through the 'calliope_graph.nodes' entry point."
        ) from None
