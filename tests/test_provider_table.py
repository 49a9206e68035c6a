"""The provider table (engines/_registry.py ``PROVIDER_ENGINES``) is what the engine modules
register: validation, the support matrix and ``calliope-graph models`` read the table instead
of importing every engine, so a table that drifted from the engines would answer wrongly."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calliope_graph.config import InferenceModelProvider
from calliope_graph.engines import _registry
from calliope_graph.engines._registry import ENGINE_MODULES, PROVIDER_ENGINES

ROOT = Path(__file__).resolve().parent.parent
ENGINES_DIR = ROOT / "calliope_graph" / "engines"


def _declared() -> set[tuple[str, str]]:
    return {(c.value, p.value) for p, row in PROVIDER_ENGINES.items() for c in row.serves}


def _built_in(table: Mapping[tuple[Any, Any], object]) -> set[tuple[str, str]]:
    """The keys of ``table`` whose function an engine module defines (not a test's stand-in)."""
    return {
        (str(c), str(p))
        for (c, p), fn in table.items()
        if getattr(fn, "__module__", "").startswith("calliope_graph.engines.")
    }


def test_every_provider_has_a_row_and_every_engine_module_a_provider() -> None:
    assert set(PROVIDER_ENGINES) == set(InferenceModelProvider)
    public = {p.stem for p in ENGINES_DIR.glob("*.py") if not p.stem.startswith("_")}
    assert set(ENGINE_MODULES) == public, "an engine module the table does not list"
    assert len(ENGINE_MODULES) == len(set(ENGINE_MODULES)), "a module listed twice"


def test_the_table_is_what_the_engine_modules_register() -> None:
    for name in ENGINE_MODULES:
        importlib.import_module(f"calliope_graph.engines.{name}")
    assert _built_in(_registry._ENGINES) == _declared(), (
        "engines/_registry.py PROVIDER_ENGINES differs from what the engine modules register "
        "(@register): update the table"
    )
    checks = {(c.value, p.value) for p, row in PROVIDER_ENGINES.items() for c in row.checks}
    assert _built_in(_registry._CHECKS) == checks, "a @register_check the table lacks"
    for (conversion, provider), fn in _registry._ENGINES.items():
        module = fn.__module__.rsplit(".", 1)[-1]
        if fn.__module__.startswith("calliope_graph.engines.") and not module.startswith("_"):
            assert module in PROVIDER_ENGINES[provider].modules, (conversion, provider, module)


#: In a fresh interpreter: load each provider alone (in the table's order) and say which of
#: its engines and checks are registered then, and which provider modules were imported.
_EACH_ALONE = """
import json, sys
from calliope_graph.engines import _registry as r
out = {}
for provider, row in r.PROVIDER_ENGINES.items():
    before = {m for m in sys.modules if m.startswith("calliope_graph.engines.")}
    r._load(provider)
    out[provider.value] = {
        "engines": sorted(c.value for (c, p) in r._ENGINES if p == provider),
        "checks": sorted(c.value for (c, p) in r._CHECKS if p == provider),
        "new": sorted(m.rsplit(".", 1)[-1] for m in sys.modules
                      if m.startswith("calliope_graph.engines.") and m not in before),
    }
print(json.dumps(out))
"""


def test_loading_one_provider_registers_all_its_engines_and_no_other_providers() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EACH_ALONE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    others = {p.value for p in InferenceModelProvider}
    for provider, row in PROVIDER_ENGINES.items():
        got = seen[provider.value]
        assert got["engines"] == sorted(c.value for c in row.serves), provider
        assert got["checks"] == sorted(c.value for c in row.checks), provider
        foreign = set(got["new"]) & (others - {provider.value}) - set(row.modules)
        assert not foreign, f"loading {provider.value} imported {sorted(foreign)}"


def test_supported_reads_the_table_without_importing_an_engine() -> None:
    code = (
        "import sys\n"
        "from calliope_graph.engines import Conversion, supported, supports\n"
        "assert supported()[Conversion.IMAGE_AND_TEXT_TO_VIDEO]\n"
        "assert supports(Conversion.TEXT_TO_IMAGE, 'luma')\n"
        "print(sorted(m for m in sys.modules if m.startswith('calliope_graph.engines.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['calliope_graph.engines._registry']"
