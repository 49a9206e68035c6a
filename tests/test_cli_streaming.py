"""``calliope-graph run`` on a terminal: story text shown as it is written, a discarded
attempt marked, partial images listed by path; off a terminal, nothing changes.

The run goes through the CLI's own ``_run`` with its progress console replaced by a
recording rich Console that says it is a terminal, and the simulator's time to first token
on the test's virtual clock.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder
from conftest import Clock
from rich.console import Console

from calliope_graph.cli import flows, progress
from calliope_graph.cli.common import Shared
from calliope_graph.context import RetrySettings
from calliope_graph.session import Session
from calliope_graph.simulate import Simulator, parse_faults

STORY = """\
name: tiny_story
inputs:
  text: {type: text}
nodes:
  story:
    kind: text_to_text
    model: openai-gpt-6-luna
    inputs: {text: inputs.text}
outputs:
  text: story.text
"""

PICTURE = """\
name: tiny_picture
inputs:
  text: {type: text}
nodes:
  picture:
    kind: text_to_image
    model: openai-gpt-image-2
    params: {previews: 2}
    inputs: {prompt: inputs.text}
outputs:
  image: picture.image
"""


def _run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sim: Simulator,
    flow: str = STORY,
    *,
    terminal: bool = True,
    rec: Recorder | None = None,
) -> tuple[str, Any]:
    """Run ``flow`` as ``calliope-graph run`` does; (what the progress console showed, the
    result)."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)  # colours for a log are no terminal
    buffer = io.StringIO()
    console = Console(
        file=buffer, force_terminal=terminal, width=200, color_system=None, record=True
    )
    monkeypatch.setattr(progress, "err_console", console)
    monkeypatch.setattr(flows, "err_console", console)
    path = tmp_path / "flow.yaml"
    path.write_text(flow, encoding="utf-8")
    # No backoff between attempts: a retried stream waits on nothing real.
    session = Session(
        simulator=sim,
        retry=RetrySettings(initial_wait=0.0, jitter=0.0),
        transport=httpx.MockTransport(rec) if rec is not None else None,
    )
    result = asyncio.run(
        flows._run(
            str(path),
            {"text": "A fox finds a lantern."},
            tmp_path / "out",
            Shared(session=session, keys=None),
            thread=(None, None),
            cache=False,
            checkpoint=None,
            media_store=None,
        )
    )
    return console.export_text(), result


def _lines(shown: str) -> list[str]:
    return [line for line in shown.splitlines() if line.strip()]


def test_the_story_text_appears_before_the_node_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    sim = Simulator(sleep=clock, latency={"openai:ttft": 0.4, "token": 0.01})
    shown, result = _run(tmp_path, monkeypatch, sim)
    lines = _lines(shown)
    text = [i for i, line in enumerate(lines) if line.lstrip().startswith("story │ ")]
    finished = [i for i, line in enumerate(lines) if "✓ story" in line and "finished" in line]
    started = [i for i, line in enumerate(lines) if "▶ story" in line]
    assert len(text) == 1 and len(finished) == 1 and started
    assert started[0] < text[0] < finished[0]
    # the whole text, as it arrived, on the node's labelled line
    assert lines[text[0]].lstrip().removeprefix("story │ ").strip() == result.outputs["text"]
    assert sim.stream_timing("openai")[0] == 0.4 and clock.now >= 0.4


def test_a_broken_stream_is_shown_discarded_and_the_retry_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    sim = Simulator(
        sleep=clock,
        latency={"openai:ttft": 0.2},
        faults=parse_faults("stream_break@openai:first_n=1"),
    )
    shown, result = _run(tmp_path, monkeypatch, sim)
    lines = _lines(shown)
    text = [i for i, line in enumerate(lines) if line.lstrip().startswith("story │ ")]
    (discard,) = [i for i, line in enumerate(lines) if "✗ story attempt 1 broke off" in line]
    assert "(transient)" in lines[discard] and "discarded" in lines[discard]
    assert len(text) == 2 and text[0] < discard < text[1]  # partial, marked, then the retry
    assert lines[text[1]].lstrip().removeprefix("story │ ").strip() == result.outputs["text"]
    partial = lines[text[0]].lstrip().removeprefix("story │ ").strip()
    assert partial and result.outputs["text"].startswith(partial)


def test_off_a_terminal_nothing_streams_and_the_lines_are_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    sim = Simulator(sleep=clock)
    rec = Recorder(sim)
    shown, result = _run(tmp_path, monkeypatch, sim, terminal=False, rec=rec)
    assert "│" not in shown and result.outputs["text"]
    (body,) = rec.bodies("/chat/completions")
    assert "stream" not in body  # the same request as before streaming


def test_previews_are_shown_as_lines_with_their_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    sim = Simulator(sleep=clock, latency={"openai:ttft": 0.3, "token": 0.1})
    shown, result = _run(tmp_path, monkeypatch, sim, PICTURE)
    lines = _lines(shown)
    previews = [line for line in lines if "◐ picture preview" in line]
    assert len(previews) == 2
    finished = next(i for i, line in enumerate(lines) if "✓ picture" in line)
    assert all(lines.index(p) < finished for p in previews)
    for number, line in enumerate(previews, start=1):
        path = Path(line.split(f"preview {number}: ", 1)[1].strip())
        assert path.is_file() and path.parent == (tmp_path / "out").resolve()
    assert Path(result.outputs["image"].path).is_file()


def test_force_color_alone_is_no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI sets FORCE_COLOR where the output is a pipe: colours, but no streamed text."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    piped = Console(file=io.StringIO())
    assert piped.is_terminal and not progress.on_terminal(piped)
    monkeypatch.delenv("FORCE_COLOR")
    assert progress.on_terminal(Console(file=io.StringIO(), force_terminal=True))
    assert not progress.on_terminal(Console(file=io.StringIO()))
