"""Start-up stays cheap: what a fresh interpreter has loaded after ``import calliope_graph`` and
after ``calliope-graph validate`` (docs/architecture.md, "Layers": start-up is lazy).

Each case runs in a subprocess (``sys.executable``), so nothing this test process imported
counts. LangGraph, LangChain, the provider engines and SDKs, Pillow and PyAV load when a flow
runs, draws or reads media, not before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The provider engines' modules (``calliope_graph.engines.<provider>``), and provider SDKs.
PROVIDERS = (
    "openai",
    "azure_vision",
    "stability",
    "replicate",
    "hugging_face",
    "runway",
    "anthropic",
    "elevenlabs",
    "google",
    "fal",
    "luma",
    "langchain",
)
SDKS = ("openai", "anthropic", "google.genai", "replicate", "runwayml", "elevenlabs", "lumaai")

#: What start-up must not load, by family: a module is in a family when its name is one of
#: these or starts with one and a dot.
HEAVY: dict[str, tuple[str, ...]] = {
    "langgraph": ("langgraph", "langchain_core", "langsmith"),
    "provider engines": (*(f"calliope_graph.engines.{p}" for p in PROVIDERS), *SDKS),
    "media libraries": ("PIL", "av"),
}

_DUMP = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def _loaded_after(code: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running ``code`` (in the repo root,
    as a clone's user runs it)."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{_DUMP}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names: list[str] = json.loads(done.stdout.splitlines()[-1])
    return names


def _heavy(loaded: list[str], family: str) -> list[str]:
    prefixes = HEAVY[family]
    return [m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes)]


@pytest.fixture(scope="module")
def after_import() -> list[str]:
    return _loaded_after("import calliope_graph")


#: ``calliope-graph validate`` as its console script runs it, without exiting the interpreter.
VALIDATE = """
import sys
from calliope_graph.cli import main
sys.argv = ["calliope-graph", "validate", "webcam_story"]
try:
    main()
except SystemExit as stop:
    assert not stop.code, stop.code
"""


@pytest.fixture(scope="module")
def after_validate() -> list[str]:
    return _loaded_after(VALIDATE)


@pytest.mark.parametrize("family", sorted(HEAVY))
def test_import_calliope_graph_loads_nothing_heavy(after_import: list[str], family: str) -> None:
    assert not _heavy(after_import, family), f"`import calliope_graph` loaded {family}"


def test_import_calliope_graph_loads_only_its_root(after_import: list[str]) -> None:
    """The root's lazy exports, its wiring and the errors the wiring names; nothing else."""
    ours = {m for m in after_import if m.split(".")[0] == "calliope_graph"}
    assert ours <= {
        "calliope_graph",
        "calliope_graph._layout",
        "calliope_graph._lazy",
        "calliope_graph._wiring",
        "calliope_graph.errors",
        "calliope_graph.flow",
        "calliope_graph.flow._entry",
    }, sorted(ours)


@pytest.mark.parametrize("family", sorted(HEAVY))
def test_validate_loads_nothing_heavy(after_validate: list[str], family: str) -> None:
    heavy = _heavy(after_validate, family)
    assert not heavy, f"`calliope-graph validate` loaded {family}: {heavy[:8]}"


def test_validate_builds_no_langgraph_graph(after_validate: list[str]) -> None:
    """Loading and checking a flow needs neither LangGraph nor the runner or compiler."""
    assert not [m for m in after_validate if m == "langgraph" or m.startswith("langgraph.")]
    assert "calliope_graph.flow.compile" not in after_validate
    assert "calliope_graph.flow.run" not in after_validate


def test_flow_entry_points_work_from_a_fresh_interpreter() -> None:
    """``flow.draw()`` (viz/, two floors up) works with nothing but ``import calliope_graph``:
    the package root wired it; flow/ does not import viz/."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import calliope_graph\n"
            "flow = calliope_graph.Flow.load('illustrate')\n"
            "print(flow.draw('mermaid').splitlines()[0])",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(("flowchart", "graph", "---", "%%")), done.stdout
