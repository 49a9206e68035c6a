"""Model parameters into request fields, the same way for every engine.

A model config's merged parameters (the model's, then the config's) hold both what the
engine reads itself (``system_prompt``, ``poll_timeout``...) and what the provider's API
takes (``temperature``, ``seed``, ``steps``...). :func:`pick` chooses the latter, one rule
for every engine: only the named parameters, ``None`` meaning "not set", optional renames to
the provider's spelling. :func:`with_extra_body` then merges the ``extra_body`` parameter —
a dict of provider-specific fields calliope-graph does not know — into the request body,
last, so it can add or override anything (nested dicts merge key by key, as a JSON body
would be patched). Engines whose body is a form or a query string take it through
:func:`form_fields`, which writes each value as text.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from calliope_graph.errors import ConfigurationError

__all__ = ["EXTRA_BODY", "extra_body", "form_fields", "form_value", "pick", "with_extra_body"]

#: The parameter holding provider-specific request fields.
EXTRA_BODY = "extra_body"


def pick(
    params: Mapping[str, Any],
    names: Collection[str] | None,
    *,
    exclude: Collection[str] = (),
    renames: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The parameters a provider takes: those in ``names`` (every one when None, minus
    ``exclude``), without unset (None) values, renamed per ``renames`` (``{"max_output_tokens":
    "max_tokens"}``; a parameter given under both names keeps the provider's own).

    ``extra_body`` is never picked: it goes through :func:`with_extra_body`.
    """
    renames = renames or {}
    picked: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or key == EXTRA_BODY or key in exclude:
            continue
        if names is not None and key not in names and key not in renames:
            continue
        wire = renames.get(key, key)
        if wire in picked and wire != key:
            continue  # the provider's own spelling, set explicitly, wins over an alias
        picked[wire] = value
    return picked


def extra_body(params: Mapping[str, Any], where: str = "model config") -> dict[str, Any]:
    """The ``extra_body`` parameter (a dict; empty when unset), or a ConfigurationError."""
    extra = params.get(EXTRA_BODY)
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise ConfigurationError(
            f"extra_body of {where} is a {type(extra).__name__}, not a mapping: write it as "
            "a dict of request fields, e.g. extra_body: {top_k: 20}."
        )
    return dict(extra)


def _merged(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def with_extra_body(
    body: dict[str, Any], params: Mapping[str, Any], where: str = "model config"
) -> dict[str, Any]:
    """``body`` with the ``extra_body`` parameter merged in (it wins; dicts merge key by
    key). ``body`` itself is not changed."""
    extra = extra_body(params, where)
    return _merged(body, extra) if extra else body


def form_value(value: Any) -> str:
    """A parameter as a form field or query value: booleans as ``true``/``false``, lists
    and dicts as JSON, everything else as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def form_fields(values: Mapping[str, Any]) -> dict[str, str]:
    """``values`` as form fields (see :func:`form_value`), unset (None) ones left out."""
    return {key: form_value(value) for key, value in values.items() if value is not None}
