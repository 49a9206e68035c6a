"""A full disk and answers that have no URL to fall back on (issue 22, item 1, the rest).

- A speech clip larger than the free space plus the journal's reserve was lost when the
  disk refused it, and the resume paid for it again: a provider node now does not start
  when its output folder has no room for its answer (``flow/_room.py``), so it stops with
  the same one error (exit 4) *before* paying.
- Two nodes finding the disk full at the same moment shared one reserve (the first commit
  freed all of it, the second found none): the reserve is now freed a slice per failing
  commit, so both answers are kept.

The disk is simulated, deterministically: ``os.statvfs`` tells the free space, the atomic
writer refuses the file, and the journal refuses what does not fit where the real disk
would. Then the space is freed and the run resumed: over both runs every provider request
is made once, as in a clean run (the simulator counts them).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_full_disk import assert_one_clear_error, disk_full_at, requests
from test_full_disk_media import recording_simulators, run, speech_flow

from calliope_graph.engines._speech import speech_bytes
from calliope_graph.flow import Trace
from calliope_graph.flow._journal import RESERVE, Journal, JournalDB
from calliope_graph.simulate import Simulator

TEXT = "a fox finds a lantern in the snow and follows its light to the sea"
FULL = "database or disk is full"


@pytest.fixture
def sims(monkeypatch: pytest.MonkeyPatch) -> list[Simulator]:
    return recording_simulators(monkeypatch)


@contextlib.contextmanager
def free_space(monkeypatch: pytest.MonkeyPatch, folder: Path, free: int) -> Iterator[None]:
    """``os.statvfs`` says the disk of ``folder`` has ``free`` bytes left (until the end)."""
    real = os.statvfs

    def statvfs(path: Any) -> Any:
        if not Path(os.fspath(path)).is_relative_to(folder):
            return real(path)
        return SimpleNamespace(f_fsid=4242, f_bavail=free // 4096, f_frsize=4096)

    with monkeypatch.context() as patch:
        patch.setattr(os, "statvfs", statvfs)
        yield


def clean(tmp_path: Path, sims: list[Simulator], flow: Path) -> Any:
    result = run(flow, tmp_path / "clean", {"text": TEXT})
    assert result.exit_code == 0, result.output
    expected = requests(sims)
    sims.clear()
    return expected


def resumed(flow: Path, out: Path, sims: list[Simulator], expected: Any) -> Any:
    """Resume the thread in ``out`` with room: no provider answered twice over both runs."""
    before = requests(sims)
    thread = Trace.load(out / "trace.json").thread_id
    again = run(flow, out, {}, "--resume", thread)
    assert again.exit_code == 0, again.output
    assert requests(sims) == expected, "a paid request was made again"
    assert Trace.load(out / "trace.json").status == "ok"
    return before


def test_a_speech_clip_larger_than_the_free_space_and_the_reserve_is_not_paid_for_twice(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = speech_flow(tmp_path)
    expected = clean(tmp_path, sims, flow)
    clip = (tmp_path / "clean" / "narration.wav").stat().st_size
    free = clip // 2  # the clip fits neither there nor into the 256 KiB reserve
    assert clip > RESERVE and free < clip
    out = tmp_path / "out"
    original = Journal._put

    def put(self: Journal, key: str, node: str, outputs: Any, calls: Any, files: Any, *rest: Any):
        if sum(len(blob) for blob in (files or {}).values()) > RESERVE:  # no room for it
            raise sqlite3.OperationalError(FULL)
        return original(self, key, node, outputs, calls, files, *rest)

    with (
        free_space(monkeypatch, out, free),
        disk_full_at(monkeypatch, lambda p: p.parent == out and p.suffix == ".wav"),
        monkeypatch.context() as patch,
    ):
        patch.setattr(Journal, "_put", put)
        first = run(flow, out, {"text": TEXT})
    assert_one_clear_error(first, out)
    paid = resumed(flow, out, sims, expected)
    assert 0 < sum(paid.values()) < sum(expected.values())  # the story, not the speech
    assert "not paid for yet" in first.stderr.replace("\n", " ")
    assert (out / "narration.wav").read_bytes()[:4] == b"RIFF"


def test_the_room_a_speech_node_checks_for_follows_the_text_and_the_audio_format() -> None:
    """Measured: the simulator's 623 KiB WAV (24 kHz) of a 186-character story."""
    story = "x" * 186
    wav = speech_bytes(story, "wav_24000")
    assert 623 << 10 < wav < 2 * (623 << 10)  # errs long, not wildly
    assert speech_bytes(story, ".wav") == wav == speech_bytes(story, "pcm")
    assert speech_bytes(story, "mp3_44100_128") < wav // 2
    assert speech_bytes(story, "wav_44100") > wav
    assert speech_bytes(story, "wav_24000", speed=2.0) < wav


def two_stories(tmp_path: Path) -> Path:
    """Two provider nodes that run at the same moment (both read the input), then a node
    that joins them (it does not start once the disk is full)."""
    node = {"kind": "text_to_text", "model": "openai-gpt-6-luna", "inputs": {"text": "inputs.text"}}
    both = {
        "kind": "prompt_template",
        "params": {"template": "{left} / {right}"},
        "inputs": {"left": "left.text", "right": "right.text"},
    }
    flow = {
        "name": "two_stories",
        "inputs": {"text": {"type": "text"}},
        "nodes": {"left": node, "right": node, "both": both},
        "outputs": {"text": "both.text"},
    }
    path = tmp_path / "two_stories.json"
    path.write_text(json.dumps(flow), encoding="utf-8")
    return path


def reserve_is_the_only_room(reserve: Path) -> Callable[[JournalDB], Any]:
    """A journal commit (of paid outputs) finds the disk full unless the reserve shrank
    since the last one: the space it freed is all the room there is, and a commit takes it."""
    original = JournalDB.transaction
    last = [RESERVE]

    @contextlib.contextmanager
    def transaction(self: JournalDB) -> Iterator[None]:
        with original(self):
            yield
            size = reserve.stat().st_size if reserve.exists() else 0
            if size >= last[0]:
                raise sqlite3.OperationalError(FULL)
            last[0] = size

    return transaction


def test_two_nodes_finding_the_disk_full_at_once_both_keep_their_answers(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    import calliope_graph.simulate as simulate

    make = simulate.Simulator  # recording_simulators's: a latency lets both be in flight
    monkeypatch.setattr(simulate, "Simulator", lambda *a, **k: make(*a, latency={"openai": 1}, **k))
    flow = two_stories(tmp_path)
    expected = clean(tmp_path, sims, flow)
    assert sum(expected.values()) == 2
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(
            JournalDB, "transaction", reserve_is_the_only_room(out / "journal.sqlite-reserve")
        )
        first = run(flow, out, {"text": TEXT})
    assert_one_clear_error(first, out)
    assert requests(sims) == expected  # both were paid before the disk was full
    assert "kept in the journal's reserve" in first.stderr.replace("\n", " ")
    resumed(flow, out, sims, expected)


def test_a_node_refused_for_room_whose_failure_was_not_checkpointed_resumes(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on a 608 KiB tmpfs: the speech node was refused (no room), then the disk
    refused the checkpoint of its error route's answer too. LangGraph keeps a task's error
    only as text, so the resumed route was handed a string: exit 1, "AttributeError: 'str'
    object has no attribute '__cause__'". The node runs again instead."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    flow = speech_flow(tmp_path)
    expected = clean(tmp_path, sims, flow)
    out = tmp_path / "out"
    put_writes, put = SqliteSaver.put_writes, SqliteSaver.put
    failed: list[bool] = []

    def writes(self: Any, config: Any, items: Any, *args: Any, **kwargs: Any) -> Any:
        if failed:  # the disk filled after the node's error was saved
            raise sqlite3.OperationalError(FULL)
        if any(channel == "__error__" for channel, _ in items):
            failed.append(True)
        return put_writes(self, config, items, *args, **kwargs)

    def checkpoint(self: Any, *args: Any, **kwargs: Any) -> Any:
        if failed:
            raise sqlite3.OperationalError(FULL)
        return put(self, *args, **kwargs)

    with free_space(monkeypatch, out, 64 << 10), monkeypatch.context() as patch:
        patch.setattr(SqliteSaver, "put_writes", writes)
        patch.setattr(SqliteSaver, "put", checkpoint)
        first = run(flow, out, {"text": TEXT})
    assert failed, "the node's error was never saved"
    assert_one_clear_error(first, out)
    thread = first.stderr.split("thread ", 1)[1].split()[0]
    again = run(flow, out, {}, "--resume", thread)
    assert again.exit_code == 0, again.output
    assert "AttributeError" not in again.output
    assert requests(sims) == expected
