"""The published JSON Schema of flow files, with each node kind's ``params`` typed.

``FlowSpec.params`` is a free mapping in the pydantic model (a node kind's ``Params`` model
checks it when the flow is validated), so pydantic's schema alone leaves ``params`` untyped
and editors stop completing there. This adds, for every registered kind, its ``Params``
model's own schema (``<kind>.params`` in ``$defs``) and an ``if kind is K then params is
<K.params>`` rule on the node, discriminated on ``kind`` — so an editor completes and checks
``params`` per kind, from the same models validation uses (nothing kept by hand). ``kind``
lists the registered kinds for completion and still allows any other name (a kind a package
registers through the entry point). The inline model shapes are described as
:mod:`~calliope_graph.flow._inline_model` accepts them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["typed_params"]


def _merge_defs(defs: dict[str, Any], more: dict[str, Any], kind: str) -> dict[str, str]:
    """Add a params model's own ``$defs`` to the flow's; a name taken by a different
    definition is renamed ``<kind>.<name>``. Returns the renames."""
    renames: dict[str, str] = {}
    for name, body in more.items():
        if name in defs and defs[name] != body:
            renames[name] = f"{kind}.{name}"
            defs[renames[name]] = body
        else:
            defs[name] = body
    return renames


def _renamed(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _renamed(v, renames) for k, v in value.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            out["$ref"] = "#/$defs/" + renames.get(name, name)
        return out
    if isinstance(value, list):
        return [_renamed(v, renames) for v in value]
    return value


def _published(module: str) -> bool:
    """Whether a kind defined in ``module`` belongs in the schema: the library's own kinds
    and those of packages registered through the entry point — not a kind a script or a
    test registered in passing (the schema is the same in every process)."""
    from importlib.metadata import entry_points

    roots = ["calliope_graph"]
    roots += [ep.value.split(":")[0] for ep in entry_points(group="calliope_graph.nodes")]
    return any(module == root or module.startswith(root + ".") for root in roots)


def typed_params(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (pydantic's schema of ``FlowSpec``) with per-kind params and the inline
    model shapes; changed in place and returned."""
    from calliope_graph.flow._inline_model import inline_model_schema
    from calliope_graph.flow.construct import constructs
    from calliope_graph.nodes import node_kinds, params_schema

    constructs()  # loads the construct modules: the subflow's registers the `flow` kind
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    node = defs["NodeSpec"]
    rules: list[dict[str, Any]] = []
    kinds = {k: c for k, c in node_kinds().items() if _published(c.__module__)}
    for kind, cls in kinds.items():
        params = params_schema(cls)
        renames = _merge_defs(defs, params.pop("$defs", {}), kind)
        params = _renamed(params, renames)
        params["title"] = f"params of {kind}"
        if cls.description:
            params["description"] = cls.description
        defs[f"{kind}.params"] = params
        rules.append(
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"properties": {"params": {"$ref": f"#/$defs/{kind}.params"}}},
            }
        )
    node["properties"]["kind"] = {
        "description": "the node kind (`calliope-graph nodes` lists them; "
        "`calliope-graph nodes KIND` shows one's ports and params)",
        "anyOf": [{"enum": list(kinds)}, {"type": "string"}],
    }
    node["properties"]["params"]["description"] = (
        "the kind's parameters (typed per kind: `calliope-graph nodes KIND`)"
    )
    node["properties"]["model"] = inline_model_schema(defs)
    node["allOf"] = rules
    return schema
