"""Lazy exports for the package ``__init__`` files (PEP 562), so that importing a package
costs only what is used.

Each package ``__init__`` names its exports twice, side by side: as imports under ``if
TYPE_CHECKING:`` (what mypy and readers see) and, in the ``else:`` branch, as this module's
table of where each name lives (what Python runs)::

    if TYPE_CHECKING:
        from calliope_graph.flow.builder import Flow
    else:
        __getattr__, __dir__ = exports(__name__, {"calliope_graph.flow.builder": ["Flow"]})

The first access to ``package.Flow`` (or ``from package import Flow``) imports the module
and keeps the value in the package's namespace, so later accesses are plain attribute
reads. ``tests/test_import_layers.py`` checks that both lists agree in every package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(
    package: str, modules: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, which exports the names listed
    under each module of ``modules`` (``{"calliope_graph.media": ["Image", "Video"]}``)."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            # Also how `from package import submodule` falls back to importing the submodule.
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
