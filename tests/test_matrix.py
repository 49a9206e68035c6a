"""The engine registry: a miss names the providers that serve the conversion, the README's
support matrix is the registry's, and the command that prints it works."""

from __future__ import annotations

from pathlib import Path

import pytest

from calliope_graph.config import InferenceModelProvider
from calliope_graph.engines import Conversion, get_engine, supported
from calliope_graph.engines.__main__ import main
from calliope_graph.engines._registry import (
    MATRIX_END,
    MATRIX_START,
    markdown_matrix,  # the README generator itself
    matrix_section,
    write_matrix,
)
from calliope_graph.errors import ConfigurationError

README = Path(__file__).resolve().parents[1] / "README.md"
REGENERATE = "python -m calliope_graph.engines --write-readme README.md"


def test_supported_lists_every_conversion_and_only_real_engines() -> None:
    table = supported()
    assert list(table) == list(Conversion)
    for conversion, providers in table.items():
        for provider in providers:
            assert callable(get_engine(conversion, provider))
    assert InferenceModelProvider.ANTHROPIC in table[Conversion.MESSAGES_TO_OBJECT]
    assert InferenceModelProvider.LANGCHAIN in table[Conversion.TEXT_TO_TEXT]


def test_markdown_matrix_has_a_row_per_conversion_and_a_tick_per_engine() -> None:
    lines = markdown_matrix().strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["conversion", *(p.value for p in InferenceModelProvider)]
    rows = {line.strip("|").split("|")[0].strip(): line for line in lines[2:]}
    assert set(rows) == {c.value for c in Conversion}
    for conversion, providers in supported().items():
        cells = [c.strip() for c in rows[conversion.value].strip("|").split("|")[1:]]
        ticked = [p for p, cell in zip(InferenceModelProvider, cells, strict=True) if cell == "✓"]
        assert ticked == providers


def test_readme_matrix_matches_the_registry() -> None:
    section = matrix_section(README.read_text(encoding="utf-8"))
    assert section is not None, f"README.md lacks the {MATRIX_START} / {MATRIX_END} markers"
    assert markdown_matrix().strip() in section, (
        "README.md's provider matrix is out of date with the engine registry; regenerate it "
        f"with `{REGENERATE}`"
    )


def test_write_readme_rewrites_only_the_marked_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "README.md"
    path.write_text(f"# Title\n\n{MATRIX_START}\nold table\n{MATRIX_END}\n\nAfter.\n")
    assert main(["--write-readme", str(path)]) == 0
    text = path.read_text()
    assert text.startswith("# Title\n\n") and text.endswith(f"{MATRIX_END}\n\nAfter.\n")
    assert "old table" not in text and markdown_matrix() in text
    assert write_matrix(text) == text  # idempotent
    assert main([]) == 0
    assert capsys.readouterr().out.endswith(markdown_matrix())
    path.write_text("no markers here")
    assert main(["--write-readme", str(path)]) == 1
    with pytest.raises(ConfigurationError, match="matrix:start"):
        write_matrix("no markers")


def test_registry_miss_lists_serving_providers() -> None:
    with pytest.raises(ConfigurationError, match="No image_and_text_to_video engine"):
        get_engine(Conversion.IMAGE_AND_TEXT_TO_VIDEO, "openai")
    with pytest.raises(ConfigurationError, match="Unknown provider"):
        get_engine(Conversion.TEXT_TO_TEXT, "nope")
