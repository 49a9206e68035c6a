"""The examples run (as a user would run them) and print what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo(tmp_path: Path) -> None:
    out = run("examples/demo.py", "--out", str(tmp_path))
    assert "Story frame:" in out and "trace:" in out
    assert (tmp_path / "trace.json").is_file()
    assert (tmp_path / "report.html").is_file()
    assert "Consistent storyboard" in out and "the judge scored the three" in out
    assert (tmp_path / "consistent" / "report.html").is_file()
    assert len(list((tmp_path / "consistent" / "scenes").glob("*/scene.png"))) >= 1


def test_seed_functional_api(tmp_path: Path) -> None:
    out = run("examples/seed_functional_api.py", str(tmp_path))
    assert "image:" in out
    assert any(tmp_path.glob("frame*"))


def test_builder_flow(tmp_path: Path) -> None:
    out = run("examples/builder_flow.py", str(tmp_path))
    assert "flowchart" in out
    assert "path taken: censor → image" in out
    assert (tmp_path / "image.png").is_file()


def test_python_flows() -> None:
    out = run("examples/python_flows.py", "storyboard")
    assert "storyboard: the same as graphs/storyboard.yaml" in out
    assert "DIFFERS" not in out
    assert "map:\n      over: story.object.scenes" in out


EXAMPLES_README = ROOT / "examples" / "README.md"


def test_the_examples_readme_says_what_every_example_and_sample_file_is() -> None:
    text = EXAMPLES_README.read_text()
    examples = sorted(p.name for p in (ROOT / "examples").iterdir() if p.suffix == ".py")
    examples += sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())
    media = sorted(p.name for p in (ROOT / "examples" / "media").iterdir())
    for name in [*examples, *media]:
        assert f"`{name}" in text, f"examples/README.md does not mention {name}"
    # and every example script is run by a test in this file
    here = Path(__file__).read_text()
    for name in examples:
        if name.endswith(".py"):
            assert f'"examples/{name}"' in here, f"no test runs examples/{name}"


def test_the_sample_audio_is_a_small_playable_speech_clip() -> None:
    import wave

    clip = ROOT / "examples" / "media" / "voice.wav"
    assert clip.stat().st_size < 200_000
    with wave.open(str(clip)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        assert 1.0 < w.getnframes() / w.getframerate() < 5.0
        frames = w.readframes(w.getnframes())
    assert any(frames[i] for i in range(0, len(frames), 97))  # not silence


def _readme_commands() -> list[list[str]]:
    import shlex

    text = EXAMPLES_README.read_text()
    blocks = text.split("```sh\n")[1:]
    lines = [line for block in blocks for line in block.split("```")[0].splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("calliope-graph ")]


def test_the_examples_readme_has_a_command_for_each_sample_file() -> None:
    commands = [" ".join(command) for command in _readme_commands()]
    assert any("examples/media/webcam.jpg" in command for command in commands)
    assert any("examples/media/voice.wav" in command for command in commands)


@pytest.mark.parametrize(
    "command", _readme_commands(), ids=lambda command: command[2] if len(command) > 2 else "?"
)
def test_each_command_in_the_examples_readme_runs_as_written(
    command: list[str], tmp_path: Path
) -> None:
    # as written, from the clone's root, except that the output folder is a scratch one
    args = list(command[1:])
    args[args.index("-o") + 1] = str(tmp_path)
    out = run("-m", "calliope_graph.cli", *args)
    assert "trace:" in out or (tmp_path / "trace.json").is_file()
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert trace["status"] == "ok"
