"""What the CLI prints when things go wrong: each line says what happened, in user terms."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner, Result

from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.cli.common import err_console
from calliope_graph.cli.progress import RunProgress

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


HANGING = """\
name: hanging
inputs:
  text: {type: text}
nodes:
  story:
    kind: text_to_text
    model: openai-gpt-6-luna
    timeout: 0.3
    inputs: {text: inputs.text}
outputs:
  story: story.text
"""


@pytest.mark.real_timeout
def test_a_node_past_its_timeout_says_timed_out_after_n_seconds(tmp_path: Path) -> None:
    flow = tmp_path / "hanging.yaml"
    flow.write_text(HANGING, encoding="utf-8")
    result = cli(
        "run", str(flow), "--input", "text=a fox", "--simulate", "--out", str(tmp_path / "out"),
        "--faults", "hang@openai:seconds=600",
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["run_failed"]
    assert "story (text_to_text, openai-gpt-6-luna) timed out after 0.3 s" in result.stderr
    assert "(None)" not in result.stderr
    assert "Traceback" not in result.output


def _line(progress: RunProgress, node: str, ran: float) -> str:
    execution = SimpleNamespace(
        item=None,
        kind="text_to_text",
        model="m",
        error_class=None,
        status="interrupted",
        started_at=time.time() - ran,
    )
    with err_console.capture() as captured:
        progress(SimpleNamespace(kind="failed", node=node, execution=execution))
    return captured.get()


def test_a_node_stopped_by_ctrl_c_says_interrupted_not_failed_none() -> None:
    progress = RunProgress({"story": 30.0})
    line = _line(progress, "story", ran=2.0)  # cancelled long before its timeout
    assert line.rstrip().endswith("story (text_to_text, m) interrupted")
    assert "None" not in line
    assert "interrupted" in _line(RunProgress(), "image", ran=100.0)  # no timeout: Ctrl-C
    assert "timed out after 30 s" in _line(progress, "scenes[2]/story", ran=30.1)


def test_resuming_a_copied_out_folder_prints_the_copys_paths(tmp_path: Path) -> None:
    import shutil

    first, copy = tmp_path / "first", tmp_path / "copy"
    run = ("run", "illustrate", "--input", "text=a fox", "--simulate")
    assert cli(*run, "--out", str(first), "--thread-id", "t-copy").exit_code == 0
    shutil.copytree(first, copy)
    shutil.rmtree(first)  # moved, in effect: only the copy is left
    result = cli(*run, "--out", str(copy), "--resume", "t-copy")
    assert result.exit_code == 0, result.output
    assert f"image: {copy / 'image.png'} (image/png)" in result.stdout
    assert str(first) not in result.output


def test_the_faults_example_in_run_help_hangs_for_seconds_not_minutes() -> None:
    import re

    from calliope_graph.simulate import parse_faults

    text = " ".join(cli("run", "--help").output.split())
    example = re.search(r"Simulator faults, e\.g\. '([^']+)'", text)
    assert example is not None
    faults = parse_faults(example.group(1).replace(" ", ""))
    hang = next(f for f in faults if f.kind == "hang")
    assert hang.seconds is not None and hang.seconds <= 5
