"""`make demo` as a newcomer meets it: installs once, quietly, and says what to type next.

The project's Makefile runs in a scratch copy of the layout whose ``.venv/bin/python`` is a
small script that records how it was called (and prints a banner like setuptools' on
install), so the tests see exactly what make would run, in milliseconds and offline.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="needs GNU make (apt-get install make)")

FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../../calls.log"
case "$*" in
  *"pip install"*) echo "Strict editable installation performed using the auxiliary" >&2 ;;
  *demo.py*) echo "Story frame:" ;;
esac
"""


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'calliope-graph'\n")
    for folder in ("calliope_graph", "nodes", "graphs", "examples"):
        (tmp_path / folder).mkdir()
    (tmp_path / "calliope_graph" / "__init__.py").write_text("")
    (tmp_path / "nodes" / "__init__.py").write_text("")
    (tmp_path / "graphs" / "__init__.py").write_text("")
    (tmp_path / "examples" / "demo.py").write_text("")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def make(clone: Path, *targets: str) -> tuple[str, list[str]]:
    """make's output (stdout and stderr) and the interpreter calls it made."""
    log = clone / "calls.log"
    log.unlink(missing_ok=True)
    done = subprocess.run(
        [str(MAKE), "--no-print-directory", *targets],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    return done.stdout + done.stderr, calls


def installs(calls: list[str]) -> list[str]:
    return [call for call in calls if "pip install" in call]


def later(path: Path) -> None:
    """Give ``path`` a modification time clearly after every stamp make wrote."""
    future = time.time() + 5
    os.utime(path, (future, future))


def test_make_demo_ends_by_saying_how_to_put_calliope_graph_on_the_path(clone: Path) -> None:
    output, calls = make(clone, "demo")
    assert "source .venv/bin/activate" in output
    assert ".venv/bin/calliope-graph" in output
    assert "calliope-graph run webcam_story" in output and "--simulate" in output
    assert any("examples/demo.py" in call for call in calls)


def test_make_demo_installs_the_package_alone_and_hides_pips_banner(clone: Path) -> None:
    output, calls = make(clone, "demo")
    assert len(installs(calls)) == 1
    assert "-e . " in installs(calls)[0] + " "  # no extras: the demo needs none
    assert "Strict editable installation" not in output
    assert "Strict editable installation" in (clone / ".venv" / "install.log").read_text()


def test_a_second_make_demo_with_nothing_changed_does_not_reinstall(clone: Path) -> None:
    make(clone, "demo")
    output, calls = make(clone, "demo")
    assert installs(calls) == []
    assert "installing" not in output
    assert any("examples/demo.py" in call for call in calls)  # the demo itself runs again


def test_make_demo_reinstalls_after_pyproject_changes(clone: Path) -> None:
    make(clone, "demo")
    later(clone / "pyproject.toml")
    _, calls = make(clone, "demo")
    assert len(installs(calls)) == 1


def test_make_demo_reinstalls_after_a_module_is_added_not_after_one_is_edited(
    clone: Path,
) -> None:
    make(clone, "demo")
    (clone / "nodes" / "__init__.py").write_text("# edited\n")
    later(clone / "nodes" / "__init__.py")
    _, calls = make(clone, "demo")
    assert installs(calls) == []  # an edit is seen through the editable install's links
    (clone / "nodes" / "new_kind.py").write_text("")
    _, calls = make(clone, "demo")
    assert len(installs(calls)) == 1  # a new file needs the strict install redone


def test_make_lint_and_test_still_reinstall_every_time(clone: Path) -> None:
    make(clone, "demo")
    for target in ("lint", "test"):
        done = subprocess.run(
            [str(MAKE), "-n", target], cwd=clone, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "pip install -q -e '.[test," in done.stdout, target


def test_make_demo_after_make_install_does_not_install_again(clone: Path) -> None:
    _, calls = make(clone, "install")
    assert len(installs(calls)) == 1
    _, calls = make(clone, "demo")
    assert installs(calls) == []
