"""Make a clone's top-level ``nodes/`` and ``graphs/`` import as ``calliope_graph.nodes/.graphs``.

Installed (wheel or strict editable install) the two folders sit inside the package, mapped
there by ``[tool.setuptools.package-dir]``. But Python started in a clone's root (``python
-c``, ``python -m calliope_graph.engines``, ``python -m pytest``, a REPL, a script saved
there) puts the root first on ``sys.path``, so ``calliope_graph`` is imported from the source
folder ``calliope_graph/``, which lacks them. Only in that case this module appends a finder
to ``sys.meta_path`` that knows exactly those two names and points them at the top-level
folders; their submodules and data files are then found through the package's ``__path__``
as usual. Appended last, it answers only when no other finder (e.g. the finder of a default,
non-strict editable install, which maps the same folders) has. Why a finder and not
committed symlinks: see docs/architecture.md, "The clone is a working directory".
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

#: the subpackages mapped by ``[tool.setuptools.package-dir]`` and the folder each lives in
MAPPED = {"calliope_graph.nodes": "nodes", "calliope_graph.graphs": "graphs"}


class CloneFolderFinder(importlib.abc.MetaPathFinder):
    """Finds ``calliope_graph.nodes``/``.graphs`` in the top-level folders of a clone."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        folder = MAPPED.get(fullname)
        if folder is None:
            return None
        package = self.root / folder
        init = package / "__init__.py"
        if not init.is_file():
            return None
        return importlib.util.spec_from_file_location(
            fullname, init, submodule_search_locations=[str(package)]
        )


def clone_root(package_dir: Path) -> Path | None:
    """The clone's root when ``package_dir`` is a source folder lacking the mapped packages."""
    if all((package_dir / folder).is_dir() for folder in MAPPED.values()):
        return None  # installed: the mapped packages are inside
    root = package_dir.parent
    if not (root / "pyproject.toml").is_file():
        return None
    if not all((root / folder / "__init__.py").is_file() for folder in MAPPED.values()):
        return None
    return root


def install(package_dir: Path) -> None:
    """Append the finder once, when ``package_dir`` is a clone's source folder."""
    root = clone_root(package_dir)
    if root is None:
        return
    if any(isinstance(finder, CloneFolderFinder) for finder in sys.meta_path):
        return
    sys.meta_path.append(CloneFolderFinder(root))


install(Path(__file__).parent)
