"""What ``calliope-graph models`` shows: every catalog model, and what the providers list.

:func:`model_rows` describes each catalog model (provider, node kinds, provider model name,
price, lifecycle status, shutdown date, replacement). :func:`check_providers` asks each
provider the user has a key for which models it offers — through ``list_models(ctx)``, an
optional function of an engine module — and reports the catalog models it no longer lists
and the listed ones the catalog lacks.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from calliope_graph.config import InferenceModelProvider, ModelCatalog, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.errors import CalliopeError, ConfigurationError
from calliope_graph.lifecycle import status

__all__ = [
    "CheckReport",
    "ProviderCheck",
    "check_providers",
    "is_listed",
    "kinds_of",
    "model_rows",
    "node_kind_names",
]

#: The keys of each ``models --json`` object, in order (a contract: keep exactly).
JSON_KEYS = (
    "name",
    "provider",
    "kinds",
    "provider_model_name",
    "price",
    "status",
    "shutdown_on",
    "replacement",
)


def node_kind_names() -> list[str]:
    """Node kinds that call a model (those with a conversion)."""
    from calliope_graph.nodes import node_kinds

    return sorted(k for k, cls in node_kinds().items() if cls.conversion is not None)


def kinds_of(config: ModelConfig) -> list[str]:
    """The node kinds ``config`` can serve: those whose conversion its provider has an
    engine for, narrowed to the model's own ``kinds`` (conversions) when the catalog says."""
    from calliope_graph.engines import supported
    from calliope_graph.nodes import node_kinds

    served = {conv.value for conv, providers in supported().items() if config.provider in providers}
    if config.model.kinds is not None:
        served &= set(config.model.kinds)
    return sorted(
        kind
        for kind, cls in node_kinds().items()
        if cls.conversion is not None and cls.conversion.value in served
    )


def model_rows(
    catalog: ModelCatalog,
    *,
    provider: str | None = None,
    kind: str | None = None,
    on: date | None = None,
) -> list[dict[str, Any]]:
    """One dict per catalog model (keys :data:`JSON_KEYS`), filtered by provider and kind."""
    rows: list[dict[str, Any]] = []
    for name, config in catalog.items():
        model = config.model
        if provider is not None and model.provider.value != provider:
            continue
        kinds = kinds_of(config)
        if kind is not None and kind not in kinds:
            continue
        price = (
            model.price.model_dump(exclude_none=True, exclude={"source"}) if model.price else None
        )
        rows.append(
            {
                "name": name,
                "provider": model.provider.value,
                "kinds": kinds,
                "provider_model_name": model.provider_model_name,
                "price": price or None,
                "status": status(model, on),
                "shutdown_on": model.shutdown_on.isoformat() if model.shutdown_on else None,
                "replacement": model.replacement,
            }
        )
    return rows


def is_listed(provider_model_name: str, listed: Iterable[str]) -> bool:
    """Whether a provider's list names the model: the same id, or a dated snapshot of an
    alias (``claude-haiku-4-5`` is listed as ``claude-haiku-4-5-20251001``)."""
    snapshot = re.compile(re.escape(provider_model_name) + r"-\d{8}")
    return any(item == provider_model_name or snapshot.fullmatch(item) for item in listed)


@dataclass
class ProviderCheck:
    """What one provider said (or why it was not asked)."""

    provider: str
    skipped: str | None = None
    error: str | None = None
    listed: list[str] = field(default_factory=list)
    #: Catalog names the provider no longer lists (the catalog thinks them usable).
    missing: list[str] = field(default_factory=list)
    #: Catalog names not listed, already marked retired in the catalog (expected).
    retired: list[str] = field(default_factory=list)
    #: Listed model ids no catalog entry names.
    lacking: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    providers: list[ProviderCheck]

    @property
    def missing(self) -> list[str]:
        return [name for p in self.providers for name in p.missing]

    def to_dict(self) -> dict[str, Any]:
        return {
            "providers": [
                {
                    "provider": p.provider,
                    "skipped": p.skipped,
                    "error": p.error,
                    "missing": p.missing,
                    "retired": p.retired,
                    "lacking": p.lacking,
                }
                for p in self.providers
            ],
            "missing": self.missing,
        }


ListModels = Callable[[RunContext], Awaitable[list[str]]]

#: Why a provider without ``list_models`` is not asked (printed by ``models --check``).
NO_LIST = {
    "azure_vision": "no list endpoint (Image Analysis has fixed API versions, not models)",
    "stability": "no list of its v2beta models (/v1/engines/list covers only the v1 engines)",
    "replicate": "its model list is every public model on Replicate, not checked",
    "hugging_face": "no list of the models its inference router serves",
    "runway": "no list endpoint",
    "langchain": "local chat models, nothing to ask",
}


def list_function(provider: InferenceModelProvider) -> ListModels | None:
    """The engine module's ``list_models``, or None when the provider has no list endpoint."""
    try:
        module = importlib.import_module(f"calliope_graph.engines.{provider.value}")
    except ImportError:
        return None
    fn = getattr(module, "list_models", None)
    return fn if callable(fn) else None


async def check_providers(
    ctx: RunContext, catalog: ModelCatalog, *, provider: str | None = None
) -> CheckReport:
    """Ask each catalog provider that has a key and a list endpoint which models it offers.

    Models with their own ``base_url`` (a local server) are not the provider's to list and
    are left out. A provider that cannot be asked (an error) is reported, not raised.
    """
    by_provider: dict[InferenceModelProvider, list[tuple[str, ModelConfig]]] = {}
    for name, config in catalog.items():
        if config.model.base_url or (provider and config.provider.value != provider):
            continue
        by_provider.setdefault(config.provider, []).append((name, config))
    checks: list[ProviderCheck] = []
    for prov in sorted(by_provider, key=lambda p: p.value):
        check = ProviderCheck(prov.value)
        checks.append(check)
        fn = list_function(prov)
        if fn is None:
            check.skipped = NO_LIST.get(prov.value, "no list endpoint")
            continue
        try:
            ctx.keys.require(prov)
        except ConfigurationError:
            check.skipped = f"no key (set {ctx.keys.env_var(prov)})"
            continue
        try:
            check.listed = sorted(await fn(ctx))
        except CalliopeError as exc:
            check.error = str(exc)
            continue
        known = [config.model.provider_model_name for _, config in by_provider[prov]]
        for name, config in by_provider[prov]:
            if is_listed(config.model.provider_model_name, check.listed):
                continue
            target = check.retired if status(config.model) == "retired" else check.missing
            target.append(name)
        check.lacking = [
            item for item in check.listed if not any(is_listed(k, [item]) for k in known)
        ]
    return CheckReport(checks)
