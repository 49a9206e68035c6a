"""An inline model in a flow: ``model:`` given as a mapping instead of a catalog name.

Three shapes are accepted, so what works in a catalog file works in a flow:

- a catalog entry (the README's ``my_models.yaml`` shape): ``{description, model_parameters,
  model: {provider, provider_model_name, ...}}`` — the slugs are optional;
- a full :class:`~calliope_graph.config.ModelConfig` (``slug`` and all);
- just the model: ``{provider, provider_model_name, model_parameters, base_url, ...}``.

A missing slug is the inner model's, else its ``provider_model_name`` (what the trace shows).
A mapping that is none of these is refused with what is wrong *and* the shape to write — not
pydantic's "Input should be a valid string" from the catalog-name branch of the union.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from calliope_graph.config import InferenceModel, ModelConfig

__all__ = ["INLINE_SHAPE", "inline_model", "inline_model_schema"]

#: How to write one, for error messages.
INLINE_SHAPE = (
    "write a catalog name (`calliope-graph models` lists them) or a mapping "
    "{provider: openai, provider_model_name: gpt-6-luna, model_parameters: {...}} "
    "(optionally wrapped as a catalog entry: {description, model_parameters, model: {...}})"
)


def inline_model(value: Any) -> Any:
    """``value`` as a :class:`ModelConfig` when it is a mapping (a ValueError naming the
    problem and the shape otherwise); anything else is returned for the field to check."""
    if not isinstance(value, dict):
        return value
    if "model" in value:  # a model config (catalog entry shape)
        body = dict(value)
        inner = body["model"]
        if isinstance(inner, dict):
            inner = {"slug": inner.get("provider_model_name"), **inner}
            body["model"] = inner
            body.setdefault("slug", inner.get("slug"))
    else:  # just the model: the config's own fields go outside it
        outer = {k: v for k, v in value.items() if k in ("description",)}
        inner = {k: v for k, v in value.items() if k not in outer}
        inner = {"slug": inner.get("provider_model_name"), **inner}
        body = {"slug": inner.get("slug"), **outer, "model": inner}
    if not isinstance(body.get("slug"), str):
        body["slug"] = "inline"
    inner = body.get("model")
    if isinstance(inner, dict):
        unknown = sorted(set(inner) - set(InferenceModel.model_fields))
        missing = [k for k in ("provider", "provider_model_name") if inner.get(k) is None]
        if unknown or missing:
            problem = "; ".join(
                ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"missing {' and '.join(missing)}"] if missing else [])
            )
            raise ValueError(f"inline model: {problem}; {INLINE_SHAPE}")
    try:
        return ModelConfig.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"inline model: {loc}: {err['msg']}; {INLINE_SHAPE}") from None


def inline_model_schema(defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of the inline shapes, for the flow schema: the config's and the
    model's slugs made optional, and the bare model as a third choice (``defs`` is the
    flow schema's ``$defs``, which holds ``ModelConfig`` and ``InferenceModel``)."""
    for name in ("ModelConfig", "InferenceModel"):
        if name in defs:
            required = [r for r in defs[name].get("required", []) if r != "slug"]
            defs[name]["required"] = required
    bare = InferenceModel.model_json_schema(ref_template="#/$defs/{model}")
    bare.pop("$defs", None)
    bare["properties"].pop("slug", None)
    bare["properties"]["description"] = {"type": "string"}
    bare["required"] = [r for r in bare.get("required", []) if r != "slug"]
    bare["title"] = "InlineModel"
    bare["additionalProperties"] = False
    defs["InlineModel"] = bare
    return {
        "anyOf": [
            {"type": "string", "description": "a catalog name (`calliope-graph models`)"},
            {"$ref": "#/$defs/ModelConfig"},
            {"$ref": "#/$defs/InlineModel"},
            {"type": "null"},
        ],
        "default": None,
    }
