"""The package's imports against the layers docs/architecture.md draws ("Layers").

Every module (``calliope_graph/``, ``nodes/`` as ``calliope_graph.nodes``, ``graphs/`` as
``calliope_graph.graphs``) is parsed with ``ast`` and every import is collected at any depth:
module level, inside functions and methods (a deferred import is still a dependency), and
``importlib.import_module("…")`` with a literal name. Imports under ``if TYPE_CHECKING:`` are
types only and left out, except in a package ``__init__``, where they are the package's lazy
exports (``calliope_graph/_lazy.py``) and so what ``package.Name`` imports.

The floors are read from the table on that page, so the drawing is the rule: a module it
does not place, an import of a higher floor, or a circle of imports fails, naming the imports.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PACKAGE = "calliope_graph"
#: The source folders and the package each is imported as (pyproject's package-dir).
FOLDERS = {
    PACKAGE: ROOT / "calliope_graph",
    f"{PACKAGE}.nodes": ROOT / "nodes",
    f"{PACKAGE}.graphs": ROOT / "graphs",
}

#: Imports in a circle that are known and owned elsewhere, each with why it is still here.
#: Empty this as they go: the test fails when one no longer exists, so none outlives its fix.
KNOWN_CIRCLES: dict[tuple[str, str], str] = {
    # Recursion, not layering: a subflow's child is a flow, validated and compiled by the same
    # kernel that is validating or compiling its parent (each import is inside the function
    # that recurses).
    (f"{PACKAGE}.flow.subflow", f"{PACKAGE}.flow.validate"): "the child is validated by check()",
    (f"{PACKAGE}.flow._lower_subflow", f"{PACKAGE}.flow.compile"): "the child is compiled by "
    "compile_plan()",
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the package's own modules only)
    line: int
    deferred: bool  # inside a function

    def __str__(self) -> str:
        where = " (inside a function)" if self.deferred else ""
        return f"{self.source}:{self.line} imports {self.target}{where}"


# -- the modules and their imports -------------------------------------------------------------
def modules() -> dict[str, Path]:
    """Every module of the package by its import name."""
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(
    node: ast.AST, *, deferred: bool, types_count: bool
) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under ``node`` with whether it runs inside a function; the body of
    ``if TYPE_CHECKING:`` only when ``types_count``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child) and not types_count:
            for branch in child.orelse:
                yield branch, deferred
                yield from _statements(branch, deferred=deferred, types_count=types_count)
            continue
        yield child, deferred
        inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _statements(child, deferred=inner, types_count=types_count)


def _named(name: str, known: dict[str, Path]) -> str | None:
    """The package's module ``name`` is, or is in (``a.b.Name`` → ``a.b``)."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in known else None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """The imports of the package's own modules that ``module`` makes."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def add(name: str, node: ast.AST, deferred: bool) -> None:
        target = _named(name, known)
        if target is not None and target != module:
            found.append(Import(module, target, getattr(node, "lineno", 0), deferred))

    for node, deferred in _statements(tree, deferred=False, types_count=is_package):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, deferred)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module if is_package else module.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    parent = parent.rsplit(".", 1)[0]
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                name = f"{base}.{alias.name}"
                add(name if name in known else base, node, deferred)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value, node, deferred)
    return found


def import_graph() -> nx.DiGraph:
    known = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for module, path in known.items():
        for imp in imports_of(module, path, known):
            if not graph.has_edge(imp.source, imp.target):
                graph.add_edge(imp.source, imp.target, imports=[])
            graph.edges[imp.source, imp.target]["imports"].append(imp)
    return graph


# -- the floors, as docs/architecture.md draws them ------------------------------------------------
def layer_table() -> dict[str, int]:
    """``{"flow": 5, "calliope_graph": 9, …}`` from the table under "## Layers"."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    floors: dict[str, int] = {}
    for row in re.findall(r"^\|\s*(\d+)\s*\|([^|]*)\|", section, flags=re.MULTILINE):
        for name in re.findall(r"`([^`]+)`", row[1]):
            assert name not in floors, f"docs/architecture.md places {name!r} twice"
            floors[name] = int(row[0])
    assert floors, "docs/architecture.md has no layer table under '## Layers'"
    return floors


def floor_of(module: str, floors: dict[str, int]) -> tuple[str, int] | None:
    """The table's name covering ``module`` (the longest that does) and its floor."""
    if module == PACKAGE:
        return (PACKAGE, floors[PACKAGE]) if PACKAGE in floors else None
    best = None
    for name, floor in floors.items():
        full = f"{PACKAGE}.{name}"
        if (module == full or module.startswith(full + ".")) and (
            best is None or len(name) > len(best[0])
        ):
            best = (name, floor)
    return best


# -- the tests -------------------------------------------------------------------------------------
def test_every_module_is_on_a_floor() -> None:
    floors = layer_table()
    missing = sorted(m for m in modules() if floor_of(m, floors) is None)
    assert not missing, (
        f"{', '.join(missing)}: on no floor of docs/architecture.md's 'Layers' table; add each "
        "to the row of the floor it belongs on (it may import that floor and those below)"
    )
    unused = sorted(
        name
        for name in floors
        if not any(floor_of(m, floors) == (name, floors[name]) for m in modules())
    )
    assert not unused, f"docs/architecture.md's 'Layers' table names no module: {unused}"


def test_no_import_points_up_a_floor() -> None:
    floors, graph = layer_table(), import_graph()
    upward = []
    for source, target, data in graph.edges(data=True):
        (name, floor), (target_name, target_floor) = (
            floor_of(source, floors) or ("?", -1),
            floor_of(target, floors) or ("?", -1),
        )
        if target_floor > floor >= 0:
            upward += [
                f"{imp}: floor {floor} ({name}) → floor {target_floor} ({target_name})"
                for imp in data["imports"]
            ]
    assert not upward, "imports pointing up a floor (docs/architecture.md, 'Layers'):\n" + (
        "\n".join(sorted(upward))
    )


def _chain(graph: nx.DiGraph, cycle: list[tuple[str, str]]) -> str:
    steps = [str(graph.edges[a, b]["imports"][0]) for a, b in cycle]
    return "\n  → ".join(steps)


def test_no_import_circles() -> None:
    graph = import_graph()
    stale = [edge for edge in KNOWN_CIRCLES if not graph.has_edge(*edge)]
    assert not stale, f"no longer imported, delete from KNOWN_CIRCLES: {stale}"
    graph.remove_edges_from(KNOWN_CIRCLES)
    circles = [
        _chain(graph, nx.find_cycle(graph.subgraph(component)))
        for component in nx.strongly_connected_components(graph)
        if len(component) > 1
    ]
    assert not circles, "circles of imports (each goes back to where it starts):\n" + (
        "\n".join(f"  {chain}" for chain in circles)
    )


def test_known_circles_are_still_circles() -> None:
    """An entry of KNOWN_CIRCLES that no longer closes a circle is an allowance to delete."""
    graph = import_graph()
    for source, target in KNOWN_CIRCLES:
        assert nx.has_path(graph, target, source), (
            f"{source} → {target} no longer closes a circle: delete it from KNOWN_CIRCLES"
        )


def test_the_layers_hold_what_the_issue_named() -> None:
    """flow/ imports neither batch/ nor viz/; config and limits, and the simulator's core and
    limits, do not import each other (issue 23, item 3)."""
    graph = import_graph()
    for source, target in [("flow", "batch"), ("flow", "viz"), ("limits", "config")]:
        assert not [
            (a, b)
            for a, b in graph.edges
            if a.startswith(f"{PACKAGE}.{source}") and b.startswith(f"{PACKAGE}.{target}")
        ], f"{source} imports {target}"
    assert not graph.has_edge(f"{PACKAGE}.simulate._limits", f"{PACKAGE}.simulate._core")


# -- the lazy exports ------------------------------------------------------------------------------
def _packages() -> list[str]:
    return sorted(m for m, path in modules().items() if path.name == "__init__.py")


def _lazy_table(path: Path) -> tuple[dict[str, str], dict[str, str]] | None:
    """A package ``__init__``'s exports twice: ``{name: module}`` from its ``if TYPE_CHECKING:``
    imports and from its ``exports(__name__, {...})`` table; None if it is not lazy."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if not (isinstance(node, ast.If) and _is_type_checking(node)):
            continue
        typed = {
            (alias.asname or alias.name): str(imp.module)
            for imp in node.body
            if isinstance(imp, ast.ImportFrom)
            for alias in imp.names
        }
        table: dict[str, str] = {}
        for call in ast.walk(ast.Module(body=node.orelse, type_ignores=[])):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "exports":
                listed = call.args[1]
                assert isinstance(listed, ast.Dict)
                for key, names in zip(listed.keys, listed.values, strict=True):
                    assert isinstance(key, ast.Constant) and isinstance(names, ast.List)
                    table |= {ast.literal_eval(n): key.value for n in names.elts}
        return (typed, table) if table else None
    return None


@pytest.mark.parametrize("package", _packages())
def test_lazy_exports_agree_and_resolve(package: str) -> None:
    """A lazy ``__init__`` lists the same names for mypy (``TYPE_CHECKING``) and for Python
    (``exports``); every name of ``__all__`` is importable and is the object it names."""
    tables = _lazy_table(modules()[package])
    module = importlib.import_module(package)
    if tables is not None:
        typed, table = tables
        assert typed == table, f"{package}: TYPE_CHECKING imports and exports(...) differ"
        for name, source in table.items():
            assert getattr(module, name) is getattr(importlib.import_module(source), name)
        assert set(table) <= set(getattr(module, "__all__", ())), f"{package}: __all__"
        assert set(table) <= set(dir(module))
    for name in getattr(module, "__all__", ()):
        assert hasattr(module, name), f"{package}.{name} is in __all__ but not importable"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = module.no_such_name


def test_the_parser_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Module level, deferred, relative, ``import_module("…")``; not ``TYPE_CHECKING`` types."""
    source = tmp_path / "builder.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "from calliope_graph.errors import ConfigurationError\n"
        "from . import spec\n"
        "if TYPE_CHECKING:\n"
        "    from calliope_graph.batch import BatchOptions\n"
        "class Flow:\n"
        "    def draw(self):\n"
        "        from calliope_graph.viz import draw\n"
        "        return importlib.import_module('calliope_graph.batch._local')\n"
    )
    known = dict.fromkeys(
        [
            f"{PACKAGE}.errors",
            f"{PACKAGE}.flow",
            f"{PACKAGE}.flow.spec",
            f"{PACKAGE}.flow.builder",
            f"{PACKAGE}.batch",
            f"{PACKAGE}.batch._local",
            f"{PACKAGE}.viz",
        ],
        source,
    )
    found = {
        (i.target, i.line, i.deferred) for i in imports_of(f"{PACKAGE}.flow.builder", source, known)
    }
    assert found == {
        (f"{PACKAGE}.errors", 3, False),
        (f"{PACKAGE}.flow.spec", 4, False),
        (f"{PACKAGE}.viz", 9, True),
        (f"{PACKAGE}.batch._local", 10, True),
    }
