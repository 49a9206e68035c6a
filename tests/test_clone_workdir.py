"""Python started in the clone's root imports the package as installed (issue 24, item 1).

The top-level ``nodes/`` and ``graphs/`` folders are ``calliope_graph.nodes`` and
``calliope_graph.graphs``: installed through ``[tool.setuptools.package-dir]``, and in the
clone's root (where the source folder ``calliope_graph/`` shadows the installed package)
through the finder in ``calliope_graph/_layout.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from calliope_graph._layout import CloneFolderFinder, clone_root

ROOT = Path(__file__).resolve().parent.parent


def python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_import_nodes_and_graphs_works_from_the_clone_root() -> None:
    done = python(
        "-c",
        "import calliope_graph, calliope_graph.nodes, calliope_graph.graphs\n"
        "print(calliope_graph.__file__)\n"
        "print(calliope_graph.nodes.__file__)\n"
        "print(calliope_graph.graphs.__file__)\n"
        "from calliope_graph.nodes import TextToImage\n"
        "from calliope_graph.nodes.switch import expression_fields\n",
    )
    assert done.returncode == 0, done.stderr
    package, nodes, graphs = done.stdout.split()
    # the source folder is the one imported (it shadows the installed package here) ...
    assert Path(package) == ROOT / "calliope_graph" / "__init__.py"
    # ... and the mapped packages are the clone's top-level folders
    assert Path(nodes) == ROOT / "nodes" / "__init__.py"
    assert Path(graphs) == ROOT / "graphs" / "__init__.py"


def test_python_dash_m_engines_runs_from_the_clone_root() -> None:
    done = python("-m", "calliope_graph.engines", "--help")
    assert done.returncode == 0, done.stderr
    assert "--write-readme" in done.stdout


def test_a_shipped_flow_loads_and_validates_from_the_clone_root() -> None:
    done = python(
        "-c",
        "from calliope_graph.flow import Flow\n"
        "from calliope_graph.flow.builder import shipped_flows\n"
        "flow = Flow.load('webcam_story'); flow.validate()\n"
        "print(len(shipped_flows()))\n",
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 10  # graphs/*.yaml read as package data of calliope_graph.graphs


def test_the_cli_module_runs_from_the_clone_root() -> None:
    done = python("-m", "calliope_graph.cli", "nodes")
    assert done.returncode == 0, done.stderr
    assert "text_to_image" in done.stdout


def test_python_dash_m_pytest_runs_from_the_clone_root() -> None:
    done = python(
        "-m", "pytest", "-v", "-p", "no:cacheprovider",
        "tests/test_clone_workdir.py::test_installed_packages_are_not_redirected",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_outside_the_clone_the_installed_package_is_used_without_the_finder() -> None:
    done = python(
        "-c",
        "import sys, calliope_graph.nodes\n"
        "from calliope_graph._layout import CloneFolderFinder\n"
        "print(any(isinstance(f, CloneFolderFinder) for f in sys.meta_path))\n"
        "print(calliope_graph.nodes.__file__)\n",
        cwd=Path("/"),
    )
    assert done.returncode == 0, done.stderr
    finder_used, nodes = done.stdout.split()
    assert finder_used == "False"
    # the strict editable install links nodes/ inside its calliope_graph/ folder
    assert Path(nodes).parent.parent.name == "calliope_graph"


def test_installed_packages_are_not_redirected(tmp_path: Path) -> None:
    installed = tmp_path / "site-packages" / "calliope_graph"
    for folder in ("nodes", "graphs"):
        (installed / folder).mkdir(parents=True)
    assert clone_root(installed) is None


def test_a_source_folder_beside_nodes_and_graphs_is_a_clone(tmp_path: Path) -> None:
    (tmp_path / "calliope_graph").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for folder in ("nodes", "graphs"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    assert clone_root(tmp_path / "calliope_graph") == tmp_path
    spec = CloneFolderFinder(tmp_path).find_spec("calliope_graph.nodes", None)
    assert spec is not None and spec.submodule_search_locations == [str(tmp_path / "nodes")]
    assert CloneFolderFinder(tmp_path).find_spec("calliope_graph.tests", None) is None
