"""Which provider fakes the simulator has: one module each, found by name.

Its own module, below both ``_core`` (the simulator) and ``_limits`` (whose limit keys must
name a fake), so neither imports the other to ask (docs/architecture.md, "Layers"). The fake
modules themselves are imported by name when first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calliope_graph.simulate._core import ProviderFake

__all__ = ["FAKE_MODULES", "fake_classes", "fake_names"]

#: Simulator modules that each define one provider fake (``FAKE = <class>``).
FAKE_MODULES = (
    "openai",
    "azure_vision",
    "stability",
    "replicate",
    "hugging_face",
    "runway",
    "anthropic",
    "elevenlabs",
    "fal",
    "luma",
    "google",
)


def fake_classes() -> list[type[ProviderFake]]:
    """The provider fakes, one per module in :data:`FAKE_MODULES`."""
    classes = []
    for module_name in FAKE_MODULES:
        module = importlib.import_module(f"calliope_graph.simulate.{module_name}")
        fake_cls: type[ProviderFake] | None = getattr(module, "FAKE", None)
        if fake_cls is not None:
            classes.append(fake_cls)
    return classes


def fake_names() -> list[str]:
    """The provider names a fault's ``@provider`` can name (one per fake)."""
    return [fake_cls.name for fake_cls in fake_classes()]
