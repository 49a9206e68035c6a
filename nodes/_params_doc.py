"""What a node kind's params are, read from its own ``Params`` model — never a second table.

:func:`params_schema` is the JSON Schema of a kind's params (its pydantic ``Params`` model's),
which the flow schema embeds per kind (editors complete ``params`` from it) and
:func:`param_docs` turns into one :class:`ParamDoc` per param for ``calliope-graph nodes
KIND``: its type, bounds, default, allowed values and one example. The example is the
field's own (``Field(examples=[...])``), else its default, else its first allowed value,
else one made from its type and bounds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calliope_graph.nodes._base import Node

__all__ = ["ParamDoc", "param_docs", "params_schema", "shown"]


@dataclass(frozen=True)
class ParamDoc:
    """One param of a node kind, as ``calliope-graph nodes KIND`` shows it."""

    name: str
    type: str
    required: bool
    default: Any
    allowed: tuple[Any, ...]
    example: Any
    description: str = ""
    bounds: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": self.default,
            "allowed": list(self.allowed),
            "example": self.example,
            "description": self.description,
            "bounds": self.bounds,
        }


def params_schema(cls: type[Node]) -> dict[str, Any]:
    """The JSON Schema of ``cls``'s params (its ``Params`` model, by alias)."""
    return cls.Params.model_json_schema(by_alias=True)


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return dict(defs.get(ref.rsplit("/", 1)[-1], {}))
    return schema


def _choices(schema: dict[str, Any], defs: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The non-null alternatives of a property, and whether null is one."""
    options = schema.get("anyOf") or schema.get("oneOf")
    if not isinstance(options, list):
        return [_resolve(schema, defs)], False
    kept = [_resolve(o, defs) for o in options if o.get("type") != "null"]
    return kept, len(kept) < len(options)


def _type_name(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    kind = schema.get("type")
    if "enum" in schema:
        return kind if isinstance(kind, str) else "value"
    if "const" in schema:
        return f"exactly {json.dumps(schema['const'])}"
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(_type_name(i, defs) for i in schema["prefixItems"]) + "]"
        items = _resolve(schema.get("items", {}), defs)
        return f"list of {_type_name(items, defs)}" if items else "list"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if isinstance(props, dict) and props:
            inner = ", ".join(
                f"{k}: {_type_name(_resolve(v, defs), defs)}" for k, v in props.items()
            )
            return "{" + inner + "}"
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values:
            return f"mapping of name → {_type_name(_resolve(values, defs), defs)}"
        return "mapping"
    if isinstance(kind, str):
        return kind
    return "any value"


_BOUNDS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("pattern", "matching {}"),
)


def _bounds(schema: dict[str, Any]) -> str:
    return ", ".join(text.format(schema[key]) for key, text in _BOUNDS if key in schema)


def _made_example(schema: dict[str, Any]) -> Any:
    """An example from the type and bounds alone (a field without examples or default)."""
    kind = schema.get("type")
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
        return max(int(low), 1)
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "array":
        item = _made_example(schema.get("items", {}))
        return [item] * max(int(schema.get("minItems", 1)), 1)
    if kind == "object":
        return {}
    return "..."


def param_docs(cls: type[Node]) -> list[ParamDoc]:
    """One :class:`ParamDoc` per param of ``cls``, in the order its model declares them."""
    schema = params_schema(cls)
    defs: dict[str, Any] = schema.get("$defs", {})
    required = set(schema.get("required", []))
    docs: list[ParamDoc] = []
    for name, prop in schema.get("properties", {}).items():
        choices, nullable = _choices(prop, defs)
        main = choices[0] if choices else {}
        allowed: list[Any] = []
        for choice in choices:
            allowed += choice.get("enum", [])
        type_name = " or ".join(_type_name(c, defs) for c in choices) or "any value"
        if nullable:
            type_name += " (or null)"
        default = prop.get("default")
        examples = prop.get("examples") or main.get("examples")
        if examples:
            example = examples[0]
        elif default not in (None, {}, []):
            example = default
        elif allowed:
            example = allowed[0]
        else:
            example = _made_example(main)
        docs.append(
            ParamDoc(
                name=name,
                type=type_name,
                required=name in required,
                default=default,
                allowed=tuple(allowed),
                example=example,
                description=" ".join(
                    str(prop.get("description") or main.get("description") or "").split()
                ).replace("``", "`"),
                bounds=", ".join(b for b in map(_bounds, choices) if b),
            )
        )
    return docs


def shown(value: Any) -> str:
    """A value as it is written in a flow file (YAML flow style, JSON-compatible)."""
    text = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value and value.replace("_", "").replace("-", "").isalnum():
        return value if not value[0].isdigit() else text
    return text
