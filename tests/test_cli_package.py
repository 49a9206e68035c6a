"""The CLI package (issue 23, item 5): a module per command family that imports only public
names of the library, option groups declared once and shared, small modules and functions,
and ``calliope-graph -h`` that loads nothing of the library beyond what it needs."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest

from calliope_graph.cli import main

CLI = Path(__file__).resolve().parent.parent / "calliope_graph" / "cli"
MODULES = sorted(CLI.glob("*.py"))


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) of every ``from calliope_graph... import name``, deferred ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("calliope_graph"):
            found += [(node.module or "", alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [
                (alias.name, "", node.lineno)
                for alias in node.names
                if alias.name.startswith("calliope_graph")
            ]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_the_cli_imports_only_public_names(path: Path) -> None:
    for module, name, line in _imports(path):
        where = f"{path.name}:{line}: {module} {name}"
        assert not any(part.startswith("_") for part in module.split(".")), where
        assert not name.startswith("_"), where
        exported = getattr(importlib.import_module(module), "__all__", None)
        if name and exported is not None and not module.startswith("calliope_graph.cli"):
            assert name in exported, f"{where}: not in {module}.__all__"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_cli_modules_and_functions_are_small(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 600, path.name
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 80, f"{path.name}: {node.name} is {length} lines"


def _option(command: str, name: str) -> click.Parameter:
    return next(p for p in main.commands[command].params if p.name == name)


@pytest.mark.parametrize("name", ["simulate", "faults", "simulate_limits", "limits", "media_store"])
def test_run_batch_and_worker_share_one_declaration_of_each_option(name: str) -> None:
    declared = [_option(command, name) for command in ("run", "batch", "worker")]
    for option in declared:
        assert isinstance(option, click.Option)
        assert (option.opts, option.help, option.callback) == (
            declared[0].opts,
            declared[0].help,
            declared[0].callback,
        ), name


def test_every_command_has_one_debug_option_spelled_alike() -> None:
    helps = {
        p.help for command in main.commands.values() for p in command.params if p.name == "debug"
    }
    assert helps == {"Print tracebacks."}


def test_calliope_graph_dash_h_loads_no_more_of_the_library_than_its_package_does() -> None:
    """``-h`` imports the CLI's modules and click/rich, nothing heavy beyond what
    ``import calliope_graph`` itself loads (flows, engines, batches, the simulator load when a
    command runs)."""
    code = (
        "import sys; import calliope_graph; before = set(sys.modules)\n"
        "from calliope_graph.cli import main\n"
        "try:\n"
        "    main(['-h'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print('--modules--', *sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    usage, _, modules = done.stdout.partition("--modules--")
    assert "Usage:" in usage
    added = modules.split()
    library = [m for m in added if m.startswith("calliope_graph.")]
    allowed = ("calliope_graph.cli", "calliope_graph.errors")
    assert all(m.startswith(allowed) for m in library), library
    heavy = ("langgraph", "langchain_core", "PIL", "av", "httpx", "dbos")
    assert not [m for m in added if m.split(".")[0] in heavy], added
