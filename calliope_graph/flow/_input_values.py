"""The shape of a flow input's value: what a ``list`` or ``object`` input takes, JSON text
parsed for them, and an error naming the expected shape and the fix when a value does not fit.

Every way a run gets its inputs goes through :func:`check_value`: ``flow.invoke`` (through
``prepare_inputs``), the CLI's ``--input NAME='[...]'`` / ``NAME=@file.json`` (text, parsed
here), a batch's CSV cells (text) and JSONL values, and the server. Lists and objects given
as text are parsed as JSON, so the text-only doors (a command line, a CSV cell) can pass
them; a ``text`` input is never parsed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from calliope_graph.errors import ConfigurationError
from calliope_graph.media import Audio, Image, Video

if TYPE_CHECKING:
    from calliope_graph.flow.spec import InputSpec

__all__ = ["check_value", "expected_shape", "json_kind"]

_ITEMS: dict[str, tuple[str, str, str]] = {
    # item type: (its name in "a list of ...", one JSON example, what each item is)
    "text": ("text", '["a fox in the snow", "an owl at dusk"]', "a string"),
    "image": ("images", '["cat.jpg", "dog.png"]', "an image file path"),
    "audio": ("audio files", '["take1.wav", "take2.mp3"]', "an audio file path"),
    "video": ("videos", '["clip1.mp4", "clip2.mp4"]', "a video file path"),
    "object": ("objects", '[{"title": "Dawn"}, {"title": "Dusk"}]', "a JSON object"),
    "any": ("values", '["a", 2, {"b": 3}]', "any JSON value"),
}
_MEDIA: dict[str, type[Image] | type[Audio] | type[Video]] = {
    "image": Image,
    "audio": Audio,
    "video": Video,
}


def expected_shape(declared: InputSpec) -> str:
    """How the value of ``declared`` is described to a user: ``a list of text``, ``an object``."""
    if declared.type == "list":
        return f"a list of {_ITEMS[declared.element][0]}"
    if declared.type == "object":
        return "an object"
    return declared.type


def _example(declared: InputSpec) -> str:
    if declared.type == "object":
        return '{"title": "Dawn", "mood": "calm"}'
    return _ITEMS[declared.element][1]


def _fix(name: str, declared: InputSpec) -> str:
    example = _example(declared)
    return (
        f"Give it as JSON, e.g. {example} — on the command line --input {name}='{example}' or "
        f"--input {name}=@{name}.json (a file holding the JSON); in a CSV cell the same JSON "
        f"text; from Python a {'list' if declared.is_list else 'dict'}."
    )


def json_kind(value: Any) -> str:
    """What a JSON value is, for messages: "a list", "an object", ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def check_value(name: str, declared: InputSpec, value: Any) -> Any:
    """``value`` for input ``name`` as the run takes it: JSON text parsed for a list or object
    input, a list's items checked against its item type (numbers given for text become text;
    media items stay paths: :func:`prepare_inputs` opens them). Other inputs pass unchanged.
    A value of another shape is a ConfigurationError (exit 4 on the command line) naming the
    input, the shape expected, what was given and how to give it."""
    if declared.type not in ("list", "object"):
        return value
    shape = expected_shape(declared)
    if isinstance(value, str | bytes):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise ConfigurationError(
                f"Input {name!r} must be {shape}, but the text given ({shown!r}) is not JSON "
                f"({exc.msg} at column {exc.colno}). {_fix(name, declared)}"
            ) from None
    if declared.type == "object":
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"Input {name!r} must be {shape}, not {json_kind(value)}. {_fix(name, declared)}"
            )
        return dict(value)
    if not isinstance(value, list | tuple):
        raise ConfigurationError(
            f"Input {name!r} must be {shape}, not {json_kind(value)}. {_fix(name, declared)}"
        )
    return [_item(name, declared, index, item) for index, item in enumerate(value)]


def _item(name: str, declared: InputSpec, index: int, item: Any) -> Any:
    kind = declared.element
    if kind == "any":
        return item
    if kind == "text" and isinstance(item, int | float) and not isinstance(item, bool):
        return str(item)
    media = _MEDIA.get(kind)
    if (
        (kind == "text" and isinstance(item, str))
        or (kind == "object" and isinstance(item, Mapping | BaseModel))
        or (media is not None and isinstance(item, str | PathLike | media))
    ):
        return dict(item) if isinstance(item, Mapping) else item
    raise ConfigurationError(
        f"Input {name!r} must be {expected_shape(declared)}: its item {index} (from 0) is "
        f"{json_kind(item)}, "
        f"but each item is {_ITEMS[kind][2]}. {_fix(name, declared)}"
    )
