"""The input and output schemas of a served flow: the flow's own inputs and outputs, typed.

LangGraph Server publishes them (``GET /assistants/{id}/schemas``, Studio's input form) and
the graph takes and returns exactly these keys; its internal state keys stay hidden.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, Required

from pydantic import Field
from typing_extensions import TypedDict

from calliope_graph.flow.validate import Plan
from calliope_graph.nodes import PortType

__all__ = [
    "MEDIA_INPUT",
    "AudioOutput",
    "ImageOutput",
    "VideoOutput",
    "input_schema",
    "output_schema",
]

#: How every media input is described in the published schema.
MEDIA_INPUT = (
    "a data: URL (data:image/png;base64,...), an http(s) URL the server downloads (at most "
    "50 MB), or a path under the server's media root (CALLIOPE_MEDIA_ROOT); a media output of "
    "another run ({'url': ...}) is accepted too"
)


class ImageOutput(TypedDict, total=False):
    """An image the run made: GET ``url`` from the same server."""

    url: Required[str]
    path: str
    mime: str
    width: int
    height: int


class AudioOutput(TypedDict, total=False):
    """An audio file the run made: GET ``url`` from the same server."""

    url: Required[str]
    path: str
    mime: str
    duration_s: float | None


class VideoOutput(TypedDict, total=False):
    """A video the run made: GET ``url`` from the same server."""

    url: Required[str]
    path: str
    mime: str


_INPUT_TYPES: dict[str, Any] = {
    "text": str,
    "image": str,
    "audio": str,
    "video": str,
    "messages": str | list[dict[str, Any]],
    "analysis": dict[str, Any],
    "object": dict[str, Any],
    "any": Any,
}
_OUTPUT_TYPES: dict[PortType, Any] = {
    PortType.TEXT: str,
    PortType.IMAGE: ImageOutput,
    PortType.AUDIO: AudioOutput,
    PortType.VIDEO: VideoOutput,
    PortType.MESSAGES: list[dict[str, Any]],
    PortType.ANALYSIS: dict[str, Any],
    PortType.OBJECT: dict[str, Any],
    PortType.ANY: Any,
}


# Schemas built at run time from a flow's spec: the typing constructs are used as values.
_typed_dict: Any = TypedDict
_annotated: Any = Annotated
_required: Any = Required
_not_required: Any = NotRequired
_list: Any = list


def _type_name(plan: Plan, suffix: str) -> str:
    return "".join(p.capitalize() for p in plan.spec.name.replace("-", "_").split("_")) + suffix


def input_schema(plan: Plan) -> type[Any]:
    """The flow's inputs: media as strings (see :data:`MEDIA_INPUT`), required ones required."""
    keys: dict[str, Any] = {}
    for name, spec in plan.spec.inputs.items():
        description = spec.description
        if spec.type in ("image", "audio", "video"):
            description = f"{description} — {spec.type}: {MEDIA_INPUT}".lstrip(" —")
        if spec.default not in (None, ""):
            description += f" (default {spec.default!r})"
        typed = _annotated[_INPUT_TYPES[spec.type], Field(description=description)]
        keys[name] = _required[typed] if spec.required else _not_required[typed]
    schema: type[Any] = _typed_dict(_type_name(plan, "Input"), keys)
    schema.__doc__ = f"The inputs of flow {plan.spec.name!r}: {plan.spec.description}"
    return schema


def output_schema(plan: Plan) -> type[Any]:
    """The flow's outputs; media as ``{url, path, mime, width, height}`` objects."""
    keys: dict[str, Any] = {}
    for name, port in plan.output_ports.items():
        typed = _OUTPUT_TYPES.get(port.type, Any)
        keys[name] = _not_required[_list[typed] if port.is_list else typed]
    schema: type[Any] = _typed_dict(_type_name(plan, "Output"), keys)
    schema.__doc__ = (
        f"The outputs of flow {plan.spec.name!r}; media carry a url served by the same server."
    )
    return schema
