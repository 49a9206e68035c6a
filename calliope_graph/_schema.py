"""Object schemas: what validation knows about ``object`` values, and inline JSON Schemas.

An ``object`` port carries a JSON Schema — from a pydantic class (``model_json_schema()``)
or written inline in a flow file. Validation walks it to check field references
(``story.object.scenes``), map sources (a list) and template variables before anything
runs. :func:`model_from_schema` turns an inline schema into a pydantic model, so an inline
schema gets the same structured output, local re-validation and re-ask as a class.

Written here rather than taken from a library: the only well-kept JSON Schema → pydantic
tool (datamodel-code-generator) generates source code at build time; we need a model at run
time from a small, documented subset (object, array, string, number, integer, boolean,
enum, ``required``, ``description``, ``$ref`` into ``$defs``) and its validation keywords
(``minItems``/``maxItems``, ``minLength``/``maxLength``/``pattern``, ``minimum``/``maximum``/
``exclusiveMinimum``/``exclusiveMaximum``/``multipleOf``). Those become pydantic constraints: the
provider sees them in the structured-output schema (pydantic writes them back into
``model_json_schema()``; OpenAI's strict mode accepts them:
https://platform.openai.com/docs/guides/structured-outputs#supported-properties) and the local
re-validation enforces them. A keyword outside the subset is refused, not silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from calliope_graph.errors import ConfigurationError

__all__ = [
    "SchemaPathError",
    "describe_type",
    "field_schema",
    "get_field",
    "model_from_schema",
    "resolve",
]

Schema = dict[str, Any]


class SchemaPathError(Exception):
    """A field path does not exist in a schema (``name``: the missing field, ``known``)."""

    def __init__(self, name: str, known: list[str], where: str) -> None:
        super().__init__(name)
        self.name, self.known, self.where = name, known, where


def resolve(schema: Schema, root: Schema) -> Schema:
    """``schema`` with a local ``$ref`` (``#/$defs/X``) replaced by its target; ``anyOf``
    with ``null`` (pydantic's ``X | None``) narrowed to ``X``."""
    for _ in range(32):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = target if isinstance(target, dict) else {}
            continue
        options = schema.get("anyOf")
        if isinstance(options, list):
            real = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
            if len(real) == 1:
                schema = real[0]
                continue
        return schema
    return schema


def field_schema(schema: Schema, fields: tuple[str, ...], *, root: Schema | None = None) -> Schema:
    """The schema of ``fields`` inside ``schema``; a SchemaPathError names the first field
    that does not exist and the ones that do."""
    root = schema if root is None else root
    current = resolve(schema, root)
    walked: list[str] = []
    for name in fields:
        props = current.get("properties")
        if not isinstance(props, dict) or name not in props:
            known = sorted(props) if isinstance(props, dict) else []
            raise SchemaPathError(name, known, ".".join(walked))
        current = resolve(props[name], root)
        walked.append(name)
    return current


def describe_type(schema: Schema) -> str:
    """A short human name for a schema (``list of object``, ``string``)."""
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        return f"list of {describe_type(items) if isinstance(items, dict) else 'any'}"
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    return "any"


def get_field(value: Any, name: str) -> Any:
    """Field ``name`` of an object value (a dict, a pydantic model, an analysis)."""
    if isinstance(value, dict):
        if name in value:
            return value[name]
    elif hasattr(value, name):
        return getattr(value, name)
    known = sorted(value) if isinstance(value, dict) else sorted(getattr(value, "__dict__", {}))
    raise KeyError(f"{type(value).__name__} has no field {name!r} (it has {', '.join(known)})")


# -- inline schemas → pydantic --------------------------------------------------------------------
_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}

# JSON Schema validation keyword → pydantic ``Field`` constraint, per type.
_CONSTRAINTS: dict[str, dict[str, str]] = {
    "array": {"minItems": "min_length", "maxItems": "max_length"},
    "string": {"minLength": "min_length", "maxLength": "max_length", "pattern": "pattern"},
    "number": {
        "minimum": "ge",
        "maximum": "le",
        "exclusiveMinimum": "gt",
        "exclusiveMaximum": "lt",
        "multipleOf": "multiple_of",
    },
}
_CONSTRAINTS["integer"] = _CONSTRAINTS["number"]
# Keywords that describe rather than constrain, or that the subset reads itself.
_ANNOTATIONS = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "enum",
        "title",
        "description",
        "examples",
        "default",
        "$comment",
        "$defs",
        "definitions",
        "$schema",
        "$id",
        "$ref",
        "additionalProperties",
        "anyOf",
    }
)


def _constrained(annotation: Any, schema: Schema, where: str) -> Any:
    """``annotation`` with the schema's validation keywords as pydantic constraints; a keyword
    outside the subset is a ConfigurationError naming it (it would otherwise be dropped)."""
    kind = schema.get("type")
    known = _CONSTRAINTS.get(kind, {}) if isinstance(kind, str) else {}
    constraints: dict[str, Any] = {}
    for key, value in schema.items():
        if key in known:
            if key == "pattern" and not isinstance(value, str):
                raise ConfigurationError(f"Inline schema field {where!r}: 'pattern' must be text.")
            if key != "pattern" and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ConfigurationError(
                    f"Inline schema field {where!r}: {key!r} must be a number, not {value!r}."
                )
            constraints[known[key]] = value
        elif key not in _ANNOTATIONS:
            allowed = ", ".join(known) or "none"
            raise ConfigurationError(
                f"Inline schema field {where!r}: keyword {key!r} is not supported for type "
                f"{kind!r} (supported constraints: {allowed}); remove it or describe the rule "
                "in 'description'."
            )
    return Annotated[annotation, Field(**constraints)] if constraints else annotation


def model_from_schema(schema: Schema, name: str | None = None) -> type[BaseModel]:
    """A pydantic model for an inline JSON Schema of ``type: object`` (see module docstring).

    A ConfigurationError names the part of the schema that is outside the subset.
    """
    if resolve(schema, schema).get("type") != "object":
        raise ConfigurationError(
            f"An inline schema must be 'type: object' at the top, not {describe_type(schema)!r}."
        )
    title = name or str(schema.get("title") or "InlineObject")
    return _model(resolve(schema, schema), schema, title, "")


def _model(schema: Schema, root: Schema, title: str, where: str) -> type[BaseModel]:
    props = schema.get("properties") or {}
    if not isinstance(props, dict):
        raise ConfigurationError(f"Inline schema at {where or 'top'}: 'properties' must be a map.")
    required = set(schema.get("required") or props)  # unlisted: every field is required
    fields: dict[str, Any] = {}
    for field, sub in props.items():
        if not isinstance(sub, dict):
            raise ConfigurationError(f"Inline schema field {where + field!r} must be a mapping.")
        annotation = _annotation(resolve(sub, root), root, f"{where}{field}", title)
        description = sub.get("description")
        if field in required:
            fields[field] = (annotation, Field(description=description))
        else:
            fields[field] = (annotation | None, Field(default=None, description=description))
    model: type[BaseModel] = create_model(
        _class_name(title),
        __config__=ConfigDict(extra="forbid"),
        __doc__=schema.get("description"),
        **fields,
    )
    return model


def _annotation(schema: Schema, root: Schema, where: str, title: str) -> Any:
    if "enum" in schema:
        values = tuple(schema["enum"])
        if not values or not all(isinstance(v, str | int | float | bool) for v in values):
            raise ConfigurationError(f"Inline schema field {where!r}: 'enum' needs plain values.")
        return Literal[values]
    kind = schema.get("type")
    if isinstance(kind, str) and kind in _SCALARS:
        return _constrained(_SCALARS[kind], schema, where)
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, dict):
            raise ConfigurationError(f"Inline schema field {where!r}: an array needs 'items'.")
        item = _annotation(resolve(items, root), root, where + "[]", title)
        return _constrained(list[item], schema, where)  # type: ignore[valid-type]
    if kind == "object" or "properties" in schema:
        sub_title = str(schema.get("title") or f"{title}_{where.replace('.', '_')}")
        return _model(schema, root, sub_title, where + ".")
    raise ConfigurationError(
        f"Inline schema field {where!r}: type {kind!r} is not supported (use string, integer, "
        "number, boolean, enum, array with items, or object with properties)."
    )


def _class_name(title: str) -> str:
    cleaned = "".join(part[:1].upper() + part[1:] for part in _words(title))
    return cleaned or "InlineObject"


def _words(text: str) -> list[str]:
    word, out = "", []
    for ch in text:
        if ch.isalnum():
            word += ch
        elif word:
            out.append(word)
            word = ""
    if word:
        out.append(word)
    return out
