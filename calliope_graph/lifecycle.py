"""Model lifecycles: which catalog models still work, and what to use instead.

Catalog entries carry ``deprecated_on``, ``shutdown_on`` and ``replacement`` (taken from
the providers' own deprecation pages; see the comments in ``catalog.yaml``). From them a
model is ``current``, ``deprecated`` (retirement announced) or ``retired`` (past its
shutdown date: the provider refuses it). Validation refuses a retired model as a
:class:`ConfigurationError` naming the replacement, and warns — one line, once per model
and date — when a model shuts down within :data:`WARN_DAYS` days.

The warning is a :class:`ModelLifecycleWarning` (a ``FutureWarning``, so Python shows it by
default), so it can be filtered, or turned into an error in CI with
``-W error::calliope_graph.lifecycle.ModelLifecycleWarning``.
"""

from __future__ import annotations

import os
import warnings
from datetime import date
from typing import Literal

from calliope_graph.config import InferenceModel, ModelConfig
from calliope_graph.errors import ConfigurationError

__all__ = [
    "WARN_DAYS",
    "ModelLifecycleWarning",
    "Status",
    "check_config",
    "describe_replacement",
    "status",
    "today",
]

#: A model shutting down within this many days is warned about.
WARN_DAYS = 90

Status = Literal["current", "deprecated", "retired"]

#: Lifecycle warnings already given: each text once per process (a flow resolves its models
#: on load, validate, compile and per batch item; several nodes may share a model). Kept
#: here rather than in a ``warnings`` registry, which is cleared whenever any library
#: touches the warning filters (importing the engines does).
_SHOWN: set[str] = set()


class ModelLifecycleWarning(FutureWarning):
    """A model the flow uses shuts down soon (the message names the date and replacement)."""


def today() -> date:
    """Today's date, or the one ``CALLIOPE_TODAY`` (``YYYY-MM-DD``) names: to see what a flow
    will meet on a later day, and to pin the test suite to the day its catalog was read."""
    pinned = os.environ.get("CALLIOPE_TODAY", "").strip()
    if not pinned:
        return date.today()
    try:
        return date.fromisoformat(pinned)
    except ValueError:
        raise ConfigurationError(
            f"CALLIOPE_TODAY={pinned!r} is not a date: write it as YYYY-MM-DD, or unset it."
        ) from None


def status(model: InferenceModel, on: date | None = None) -> Status:
    """``retired`` from the shutdown date on; ``deprecated`` once retirement is announced
    (or a shutdown date is set); else ``current``."""
    on = on or today()
    if model.shutdown_on is not None and on >= model.shutdown_on:
        return "retired"
    if model.deprecated_on is not None or model.shutdown_on is not None:
        return "deprecated"
    return "current"


def describe_replacement(model: InferenceModel) -> str:
    return f"use {model.replacement!r} instead" if model.replacement else "no replacement named"


def check_config(
    name: str, config: ModelConfig, *, where: str = "", on: date | None = None
) -> None:
    """Refuse a retired model, warn (one line) about one shutting down within WARN_DAYS.

    ``name`` is the catalog name (or the inline config's slug); ``where`` says who uses it
    (``node 'story'``) for the messages.
    """
    model = config.model
    on = on or today()
    shutdown = model.shutdown_on
    if shutdown is None:
        return
    who = f"{where}: " if where else ""
    label = f"model {name!r} ({model.provider.value} {model.provider_model_name})"
    if on >= shutdown:
        raise ConfigurationError(
            f"{who}{label} was shut down by the provider on {shutdown.isoformat()}; "
            f"{describe_replacement(model)}."
        )
    days = (shutdown - on).days
    if days <= WARN_DAYS:
        message = (
            f"{label} shuts down on {shutdown.isoformat()} (in {days} days); "
            f"{describe_replacement(model)}."
        )
        if message in _SHOWN:
            return
        _SHOWN.add(message)
        # No source line to quote, so Python prints the warning on one line.
        warnings.warn_explicit(
            message,
            ModelLifecycleWarning,
            filename="calliope-graph",
            lineno=0,
            module="calliope_graph.lifecycle",
        )
