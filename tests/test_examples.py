"""The examples run (as a user would run them) and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_seed_functional_api(tmp_path: Path) -> None:
    out = run("examples/seed_functional_api.py", str(tmp_path))
    assert "image:" in out
    assert any(tmp_path.glob("frame*"))


def test_builder_flow(tmp_path: Path) -> None:
    out = run("examples/builder_flow.py", str(tmp_path))
    assert "flowchart" in out
    assert "path taken: censor → image" in out
    assert (tmp_path / "image.png").is_file()
