"""The input and output schemas of a served flow: the flow's own inputs and outputs, typed.

LangGraph Server publishes them (``GET /assistants/{id}/schemas``, Studio's input form) and
the graph takes and returns exactly these keys; its internal state keys stay hidden.
:func:`check_input` holds a run's input to them: an unknown key, or a value of another JSON
type than the schema's (text given as a number, a list or an object), is refused — never
coerced — with a message naming the input and the type expected.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, Required

from pydantic import Field
from typing_extensions import TypedDict

from calliope_graph.errors import ConfigurationError, MediaError
from calliope_graph.flow._input_values import json_kind
from calliope_graph.flow.spec import InputSpec
from calliope_graph.flow.validate import Plan
from calliope_graph.nodes import PortType

__all__ = [
    "MEDIA_INPUT",
    "AudioOutput",
    "ImageOutput",
    "VideoOutput",
    "check_input",
    "input_schema",
    "output_schema",
]

MEDIA_TYPES = ("image", "audio", "video")

#: How every media input is described in the published schema.
MEDIA_INPUT = (
    "a data: URL (data:image/png;base64,...), an http(s) URL the server downloads (at most "
    "50 MB), the signed url of a media output of this server (any thread's, until it "
    "expires), or the path of a media output of the same thread ('<thread>/<run>/...'); a "
    "media output object ({'url': ..., 'path': ...}) is accepted as it is"
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


#: The JSON types each input type accepts (None: any), and how they are named to a client.
_JSON_TYPES: dict[str, tuple[tuple[type, ...] | None, str]] = {
    "text": ((str,), "text (a JSON string)"),
    "image": ((str, dict), "an image (a string: data: URL, URL or path; or a media object)"),
    "audio": ((str, dict), "audio (a string: data: URL, URL or path; or a media object)"),
    "video": ((str, dict), "a video (a string: data: URL, URL or path; or a media object)"),
    "messages": ((str, list), "messages (a string, or a list of message objects)"),
    "analysis": ((dict,), "an analysis (a JSON object)"),
    "object": ((dict,), "an object (a JSON object)"),
    "any": (None, "any JSON value"),
}


def _list_items(name: str, flow: str, declared: InputSpec, given: list[Any]) -> None:
    """Each item of list input ``name`` has its item type's JSON type (not converted)."""
    accepted, expected = _JSON_TYPES[declared.element]
    for index, item in enumerate(given):
        if accepted is None or isinstance(item, accepted):
            continue
        message = (
            f"Input {name!r} of flow {flow!r} must be {declared.shape}: its item {index} (from "
            f"0) is {json_kind(item)}, but each item must be {expected}; inputs are not "
            "converted: send it with the type the flow's input schema gives."
        )
        raise (MediaError if declared.element in MEDIA_TYPES else ConfigurationError)(message)


def check_input(plan: Plan, value: Any) -> Any:
    """``value`` (a run's input) unchanged when its keys are the flow's inputs and each value
    has the JSON type of the published schema; else a ConfigurationError (a MediaError for a
    media input) naming the input, the type expected and the type given. Inputs that are not
    a dict (a resume, a Command) pass: LangGraph handles them."""
    if not isinstance(value, dict):
        return value
    spec = plan.spec
    unknown = sorted(str(k) for k in value if k not in spec.inputs)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise ConfigurationError(
            f"Flow {spec.name!r} has no input {names}; its inputs: "
            f"{', '.join(spec.inputs) or 'none'}."
        )
    for name, given in value.items():
        declared = spec.inputs[name]
        accepted: tuple[type, ...] | None
        if declared.is_list:
            accepted, expected = (list,), f"{declared.shape} (a JSON array)"
        else:
            accepted, expected = _JSON_TYPES.get(declared.type, (None, ""))
        if isinstance(given, list) and declared.is_list:
            _list_items(name, spec.name, declared, given)
        if given is None or accepted is None or isinstance(given, accepted):
            continue
        error = MediaError if spec.inputs[name].type in ("image", "audio", "video") else None
        message = (
            f"Input {name!r} of flow {spec.name!r} must be {expected}, not {json_kind(given)}; "
            "inputs are not converted: send it with the type the flow's input schema gives."
        )
        raise (error or ConfigurationError)(message)
    return value


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
        if spec.is_list and spec.element in MEDIA_TYPES:
            description = f"{description} — each {spec.element}: {MEDIA_INPUT}".lstrip(" —")
        value = _list[_INPUT_TYPES[spec.element]] if spec.is_list else _INPUT_TYPES[spec.type]
        typed = _annotated[value, Field(description=description)]
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
