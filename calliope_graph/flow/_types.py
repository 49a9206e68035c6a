"""What a reference reads: the value types validation checks wiring, maps, templates and
outputs against (port types, object schemas, lists). Nothing here imports LangGraph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from calliope_graph._schema import SchemaPathError, describe_type, field_schema, resolve
from calliope_graph.media import ImageAnalysis
from calliope_graph.nodes import Port, PortType

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow.spec import Ref

__all__ = ["ValueType", "typed", "value_type"]


class ValueType(NamedTuple):
    """What a reference reads: a port type, the object schema when known, a list or not."""

    type: PortType
    schema: dict[str, Any] | None = None
    is_list: bool = False

    def describe(self) -> str:
        base = describe_type(self.schema) if self.schema else self.type.value
        return f"list of {base}" if self.is_list else base


_ANALYSIS_SCHEMA = ImageAnalysis.model_json_schema()


def _schema_value(schema: dict[str, Any], root: dict[str, Any]) -> ValueType:
    schema = resolve(schema, root)
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        element = _schema_value(items, root) if isinstance(items, dict) else ValueType(PortType.ANY)
        return ValueType(element.type, element.schema, True)
    if kind == "string":
        return ValueType(PortType.TEXT, schema)
    if kind == "object" or "properties" in schema:
        return ValueType(PortType.OBJECT, {**schema, "$defs": root.get("$defs", {})})
    return ValueType(PortType.ANY, schema or None)


def _port_value(plan: Plan, node: str, port: Port) -> ValueType:
    schema = port.schema
    if schema is None and port.type is PortType.ANALYSIS:
        schema = _ANALYSIS_SCHEMA
    is_list = port.is_list or node in plan.item_types or node in plan.candidates
    return ValueType(port.type, schema, is_list)


def value_type(plan: Plan, ref: Ref, *, reader: str | None = None) -> ValueType | None:
    """The type of what ``ref`` reads (None when the node or port does not exist). Inside
    a mapped node (``reader``), its item name reads the current item; a SchemaPathError
    says which field of an object does not exist."""
    spec = plan.spec
    scope = plan.item_scope(reader) if reader is not None else None
    mapping = plan.spec.nodes[scope].map if scope is not None else None
    if scope is not None and ref.node == (mapping.as_ if mapping is not None else "item"):
        base = plan.item_types[scope]
        return _fields(base, tuple(f for f in (ref.port, *ref.fields) if f), str(ref))
    if ref.is_input:
        declared = spec.inputs.get(ref.port)
        if declared is None:
            return None
        base = ValueType(PortType(declared.element), None, declared.is_list)
        return _fields(base, ref.fields, str(ref))
    node = plan.nodes.get(ref.node)
    port = node.output_port(ref.port) if node is not None else None
    if port is None:
        return None
    return _fields(_port_value(plan, ref.node, port), ref.fields, str(ref))


def _fields(base: ValueType, fields: tuple[str, ...], text: str) -> ValueType:
    if not fields:
        return base
    if base.is_list:
        raise SchemaPathError(fields[0], [], f"{text} (a list has no fields: map over it)")
    if base.schema is None or base.type not in (PortType.OBJECT, PortType.ANALYSIS):
        return ValueType(PortType.ANY)  # no schema known: checked at run time
    return _schema_value(field_schema(base.schema, fields), base.schema)


def typed(
    plan: Plan, ref: Ref, reader: str | None, where: tuple[str, ...], what: str
) -> ValueType | None:
    try:
        return value_type(plan, ref, reader=reader)
    except SchemaPathError as exc:
        known = f" (its fields: {', '.join(exc.known)})" if exc.known else ""
        at = f" of {exc.where}" if exc.where else ""
        raise plan.spec.error(
            f"{what} {str(ref)!r}: there is no field {exc.name!r}{at}{known}.", *where
        ) from None
