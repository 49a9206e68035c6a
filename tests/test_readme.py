"""Every README snippet runs as written, offline, with the offline switch set (issue 24).

The README's fenced blocks are read in order. A ``python`` block runs as a script (a fresh
interpreter, so none can lean on another's state or use a top-level ``await``); a ``sh``
block's ``calliope-graph …`` commands run one after the other (in this process, on the
suite's virtual clock), each in the block's own scratch folder, with ``CALLIOPE_SIMULATE=1``
and no provider key. The only word filled in is ``THREAD_ID``: the thread of the run whose
``--out`` the command names. A block marked ``<!-- readme-test: file NAME -->`` is written as
``NAME`` into every scratch folder (the README's ``my_flow.yaml``, ``prompts.jsonl``), and
``examples/`` is there as in a clone. A block that cannot run here (it installs, starts a
server, needs PostgreSQL) says so with ``<!-- readme-test: skip (why, and what tests it) -->``
on the line before it; anything else in a ``sh`` block fails this test, so a new snippet is
either runnable or marked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from calliope_graph.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- readme-test: (.*?) -->")
#: At most this many blocks may be skipped (keep the exceptions few).
MOST_SKIPPED = 10
KEY_VARS = [name for name in os.environ if name.endswith(("_API_KEY", "_TOKEN", "_SECRET"))]


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    marker: str | None

    @property
    def id(self) -> str:
        return f"README.md:{self.line}-{self.lang}"


def blocks() -> list[Block]:
    """Every fenced block of the README, with the marker on the line before it (if any)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```") and stripped != "```":
            indent = len(lines[i]) - len(lines[i].lstrip())
            start, lang, body = i, stripped[3:].strip(), []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i][indent:])
                i += 1
            before = lines[start - 1].strip() if start else ""
            marker = MARKER.fullmatch(before)
            found.append(Block(start + 1, lang, "\n".join(body) + "\n", marker and marker[1]))
        i += 1
    return found


def runnable(lang: str) -> list[Block]:
    return [b for b in blocks() if b.lang == lang and not (b.marker or "").startswith("skip")]


def files() -> dict[str, str]:
    marked = [(b.marker or "", b.body) for b in blocks()]
    return {marker.split()[1]: body for marker, body in marked if marker.startswith("file ")}


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder like the clone's root: the README's files and ``examples/``."""
    for name, text in files().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def test_every_python_and_shell_snippet_is_run_or_marked_with_a_reason() -> None:
    every = blocks()
    assert len(runnable("python")) >= 5 and len(runnable("sh")) >= 4
    skipped = [b for b in every if (b.marker or "").startswith("skip")]
    for block in skipped:
        assert re.fullmatch(r"skip \(.+\)", block.marker or ""), block.id  # says why
        assert block.lang in ("sh", "python"), block.id
    assert len(skipped) <= MOST_SKIPPED, [b.id for b in skipped]
    for block in every:
        assert block.marker is None or re.fullmatch(r"skip \(.+\)|file \S+", block.marker), block.id
    assert {"my_flow.yaml", "prompts.jsonl"} <= set(files())


def test_the_readme_says_where_the_offline_switch_is_needed() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Getting started")
    assert start < text.index("## Two commands") < text.index("## A flow in YAML")
    section = text[start : text.index("## Two commands")]
    assert "export CALLIOPE_SIMULATE=1" in section
    for name in ("CALLIOPE_FAULTS", "CALLIOPE_SIMULATE_LIMITS", "--simulate"):
        assert name in section
    for step in ("make demo", "source .venv/bin/activate", "pip install", "calliope-graph run"):
        assert step in section, step
    assert "await " not in "".join(
        b.body for b in blocks() if b.lang == "python" and "async def" not in b.body
    )


@pytest.mark.parametrize("block", runnable("python"), ids=lambda b: b.id)
def test_a_python_snippet_runs_as_a_script(block: Block, scratch: Path) -> None:
    script = scratch / "snippet.py"
    script.write_text(block.body, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    env["CALLIOPE_SIMULATE"] = "1"
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{block.id}\n{done.stdout}\n{done.stderr}"


def commands(body: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line for line in joined.splitlines() if shlex.split(line, comments=True)]


@pytest.mark.parametrize("block", runnable("sh"), ids=lambda b: b.id)
def test_a_shell_snippet_runs_as_written(
    block: Block, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(scratch)
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALLIOPE_SIMULATE", "1")
    for command in commands(block.body):
        words = shlex.split(command, comments=True)
        if words[0] == "export":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                monkeypatch.setenv(name, value)
            continue
        while re.fullmatch(r"[A-Z_]+=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            monkeypatch.setenv(name, value)
        assert words[0] == "calliope-graph", (
            f"{block.id}: {command!r} is not a calliope-graph command; make it one, or mark "
            "the block <!-- readme-test: skip (why) -->"
        )
        if "THREAD_ID" in words:
            out = words[words.index("--out") + 1]
            thread = json.loads((scratch / out / "trace.json").read_text())["thread_id"]
            words = [thread if w == "THREAD_ID" else w for w in words]
        # A command that ends in a documented exit code says so: `# exits 6`.
        expected = re.search(r"#\s*exits\s+(\d+)\s*$", command)
        result = CliRunner().invoke(main, words[1:], catch_exceptions=False)
        code = int(expected.group(1)) if expected else 0
        assert result.exit_code == code, f"{block.id}: {command}\n{result.output}"
