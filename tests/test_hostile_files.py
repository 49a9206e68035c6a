"""Flow and catalog files built to exhaust the reader are refused quickly, naming the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from calliope_graph import ModelCatalog
from calliope_graph.cli import main
from calliope_graph.errors import ConfigurationError, FlowSpecError
from calliope_graph.flow import load_spec

GOOD = """\
name: tiny
inputs: {prompt: {type: text}}
nodes:
  image: &draw {kind: text_to_image, model: stability-core, inputs: {prompt: inputs.prompt}}
  again: *draw
outputs: {image: image.image}
"""


def alias_bomb() -> str:
    """The "billion laughs": nine levels, each nine aliases of the one before (9⁹ values)."""
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\nname: bomb\n"


def deep_mapping(levels: int) -> str:
    return "{a: " * levels + "1" + "}" * levels + "\n"


def deep_block(levels: int) -> str:
    return "".join("  " * i + "a:\n" for i in range(levels)) + "  " * levels + "b: 1\n"


HOSTILE = {
    "alias_bomb.yaml": (alias_bomb(), "alias"),
    "deep_mapping.yaml": (deep_mapping(2000), "nested more than"),
    "deep_block.yaml": (deep_block(200), "nested more than"),
    "brackets.yaml": ("[" * 10_000, "nested more than"),
    "brackets.json": ("[" * 10_000 + "]" * 10_000, "nested more than"),
    "nested.json": ("[" * 100 + "]" * 100, "nested more than"),
}


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_validate_refuses_a_hostile_flow_file_with_exit_3_naming_it(
    tmp_path: Path, name: str
) -> None:
    text, reason = HOSTILE[name]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    code, output = cli("validate", str(path))
    assert code == 3, output
    assert str(path) in output and reason in output
    assert "Traceback" not in output and "RecursionError" not in output


def test_run_refuses_an_alias_bomb_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    code, output = cli("run", str(path), "--simulate", "--out", str(tmp_path / "out"))
    assert code == 3, output
    assert "alias" in output and not (tmp_path / "out" / "trace.json").exists()


def test_an_alias_bomb_is_refused_by_a_separate_process_without_hanging(tmp_path: Path) -> None:
    """The whole CLI, as a user runs it: it answers (the timeout only guards the suite)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    script = "from calliope_graph.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", script, "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 3, done.stderr
    assert "alias" in done.stderr + done.stdout


def test_a_flow_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000 + GOOD, encoding="utf-8")
    with pytest.raises(FlowSpecError, match="byte limit"):
        load_spec(path)


def test_a_flow_with_a_few_aliases_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(GOOD, encoding="utf-8")
    spec = load_spec(path)
    assert spec.name == "tiny" and spec.nodes["again"] == spec.nodes["image"]


def test_a_catalog_alias_bomb_is_a_configuration_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"catalog\.yaml, line .*alias"):
        ModelCatalog().load_yaml(path)
