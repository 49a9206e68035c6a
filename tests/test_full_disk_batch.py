"""A full disk during ``calliope-graph batch``: one clear error (exit 4, the folder and the
space named), a manifest of whole lines for the items that finished, nothing paid lost, and
``batch --resume`` after freeing space pays for nothing again.

The disk fills at one write (``ENOSPC`` injected at the atomic writer for an item's media, or
at the manifest line of an item); the space is then freed (the injection ends) and the batch
resumed. Over both runs the simulator answers exactly the requests of a clean batch.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_full_disk import assert_one_clear_error, disk_full_at, requests
from test_full_disk_media import recording_simulators, speech_flow

from calliope_graph.batch import _manifest
from calliope_graph.cli import main
from calliope_graph.simulate import Simulator

ITEMS = [
    {"id": "a", "text": "a fox finds a lantern"},
    {"id": "b", "text": "an owl reads the stars"},
    {"id": "c", "text": "a whale sings to a ship"},
]


@pytest.fixture
def sims(monkeypatch: pytest.MonkeyPatch) -> list[Simulator]:
    return recording_simulators(monkeypatch)


def batch(tmp_path: Path, out: Path, *extra: str) -> Result:
    rows = tmp_path / "items.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ITEMS), encoding="utf-8")
    flow = speech_flow(tmp_path)
    args = ["batch", str(flow), "--inputs", str(rows), "--out", str(out), "--simulate"]
    args += ["--concurrency", "1", *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def lines(out: Path) -> list[dict[str, Any]]:
    text = (out / "batch.jsonl").read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")  # whole lines only
    return [json.loads(line) for line in text.splitlines()]


def clean_batch(tmp_path: Path, made: list[Simulator]) -> Any:
    clean = batch(tmp_path, tmp_path / "clean")
    assert clean.exit_code == 0, clean.output
    expected = requests(made)
    made.clear()
    return expected


def resumed_pays_nothing_again(
    tmp_path: Path, out: Path, made: list[Simulator], expected: Any
) -> None:
    before = requests(made)
    resumed = batch(tmp_path, out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert requests(made) == expected, "a paid request was made again"
    assert sum(before.values()) > 0
    assert {r["id"]: r["status"] for r in lines(out)} == {"a": "ok", "b": "ok", "c": "ok"}
    for item in "abc":
        assert (out / item / "narration.wav").read_bytes()[:4] == b"RIFF"


def test_full_disk_in_a_batch_item_exits_4_and_batch_resume_pays_nothing_again(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = clean_batch(tmp_path, sims)
    out = tmp_path / "out"
    with disk_full_at(monkeypatch, lambda p: p == out / "b" / "narration.wav"):
        first = batch(tmp_path, out)
    assert_one_clear_error(first, out / "b")
    assert [(r["id"], r["status"]) for r in lines(out)] == [("a", "ok")]  # b unfinished
    assert "--resume" in first.stdout  # the summary says how to run the rest
    assert "1 ok" in first.stdout and "2 not started" in first.stdout
    resumed_pays_nothing_again(tmp_path, out, sims, expected)


def test_full_disk_at_a_manifest_line_exits_4_keeps_whole_lines_and_resume_pays_nothing(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = clean_batch(tmp_path, sims)
    out = tmp_path / "out"
    original = _manifest._write_all

    def write_all(fd: int, data: bytes) -> None:
        if b'"id":"b"' in data:  # half of b's line is written, then the disk is full
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(fd, data)

    with monkeypatch.context() as patch:
        patch.setattr(_manifest, "_write_all", write_all)
        first = batch(tmp_path, out)
    assert_one_clear_error(first, out)
    assert "batch.jsonl" in first.stderr
    assert [(r["id"], r["status"]) for r in lines(out)] == [("a", "ok")]  # cut back off
    resumed_pays_nothing_again(tmp_path, out, sims, expected)


def test_full_disk_at_the_batch_views_only_warns_and_the_batch_completes(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    expected = clean_batch(tmp_path, sims)
    out = tmp_path / "out"
    views = ("batch.html", "report.html", "trace.json")
    with caplog.at_level(logging.WARNING), disk_full_at(monkeypatch, lambda p: p.name in views):
        result = batch(tmp_path, out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert requests(sims) == expected
    assert [r["status"] for r in lines(out)] == ["ok", "ok", "ok"]
