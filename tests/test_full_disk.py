"""A full disk, end to end from the CLI: one clear message and exit 4, nothing paid twice.

The disk fills at one write (an ``ENOSPC`` injected at the low-level writer, or SQLite's
"database or disk is full" at a commit); then the space is freed (the injection removed)
and ``--resume`` runs: over both runs every provider request is made once, as in a clean
run — the simulator counts them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from langgraph.checkpoint.sqlite import SqliteSaver

import calliope_graph.simulate
from calliope_graph import _files
from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.errors import error_class_names, error_classes
from calliope_graph.flow import Trace
from calliope_graph.flow._journal import RESERVE as JOURNAL_RESERVE
from calliope_graph.flow._journal import JournalDB

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"
KEY_VARS = ("OPENAI_API_KEY", "AZURE_VISION_KEY", "STABILITY_API_KEY", "ANTHROPIC_API_KEY")
FULL = "database or disk is full"


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def paid(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every simulator the CLI makes (its ``calls`` count the requests it answered)."""
    made: list[Any] = []
    original = calliope_graph.simulate.Simulator

    def make(*args: Any, **kwargs: Any) -> Any:
        sim = original(*args, **kwargs)
        made.append(sim)
        return sim

    monkeypatch.setattr(calliope_graph.simulate, "Simulator", make)
    yield made


def requests(sims: list[Any]) -> Counter[tuple[str, str]]:
    total: Counter[tuple[str, str]] = Counter()
    for sim in sims:
        total.update(sim.calls)
    return total


def run(out: Path, *extra: str) -> Result:
    args = ["run", "webcam_story", "--simulate", "--out", str(out), *extra]
    if "--resume" not in extra:
        args += ["--input", f"image={WEBCAM}"]
    return CliRunner().invoke(main, args, catch_exceptions=False)


@contextlib.contextmanager
def disk_full_at(monkeypatch: pytest.MonkeyPatch, hit: Callable[[Path], bool]) -> Iterator[None]:
    """``ENOSPC`` from the atomic writer for every target ``hit`` accepts (until the block
    ends: the space is freed)."""
    original = _files._temp_path

    def temp_path(path: Path) -> tuple[Path, int]:
        if hit(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return original(path)

    with monkeypatch.context() as patch:
        patch.setattr(_files, "_temp_path", temp_path)
        yield


def clean_requests(tmp_path: Path, sims: list[Any]) -> Counter[tuple[str, str]]:
    result = run(tmp_path / "clean")
    assert result.exit_code == 0, result.output
    counted = requests(sims)
    sims.clear()
    return counted


def assert_one_clear_error(result: Result, folder: Path) -> None:
    assert result.exit_code == EXIT_CODES["configuration"] == 4, result.output
    assert "Traceback" not in result.output
    assert "is full" in result.stderr
    assert str(folder) in result.stderr.replace("\n", "")
    assert "OSError" not in result.stderr and "OperationalError" not in result.stderr


def resume_pays_nothing_again(
    out: Path, first: Result, sims: list[Any], clean: Counter[tuple[str, str]]
) -> None:
    thread = Trace.load(out / "trace.json").thread_id if (out / "trace.json").exists() else None
    if thread is None:  # the thread id is printed first
        thread = first.stderr.split("thread ", 1)[1].split()[0]
    resumed = run(out, "--resume", thread)
    assert resumed.exit_code == 0, resumed.output
    assert requests(sims) == clean  # over both runs: each request once, as in a clean run
    assert (out / "illustration.png").read_bytes().startswith(b"\x89PNG")
    assert Trace.load(out / "trace.json").status == "ok"


def test_full_disk_at_the_image_write_exits_4_and_the_resume_pays_nothing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paid: list[Any]
) -> None:
    clean = clean_requests(tmp_path, paid)
    out = tmp_path / "out"
    with disk_full_at(monkeypatch, lambda p: p.suffix == ".png" and p.parent == out):
        first = run(out)
    assert_one_clear_error(first, out)
    assert "media file" in first.stderr
    assert not (out / "illustration.png").exists()
    assert sum(requests(paid).values()) > 0  # the image was paid for before the write
    resume_pays_nothing_again(out, first, paid, clean)


def test_full_disk_at_trace_json_only_warns_and_the_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paid: list[Any], caplog: Any
) -> None:
    clean = clean_requests(tmp_path, paid)
    out = tmp_path / "out"
    with (
        caplog.at_level(logging.WARNING),
        disk_full_at(monkeypatch, lambda p: p.name in ("trace.json", "report.html")),
    ):
        result = run(out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert (out / "illustration.png").is_file()
    assert requests(paid) == clean
    warned = [r for r in caplog.records if "trace.json" in r.getMessage()]
    assert len(warned) == 1 and "is full" in warned[0].getMessage()
    assert "report not updated" in result.stderr


def test_full_disk_at_a_journal_commit_exits_4_and_the_resume_pays_nothing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paid: list[Any]
) -> None:
    clean = clean_requests(tmp_path, paid)
    out = tmp_path / "out"
    original = JournalDB.transaction
    failed: list[int] = []

    @contextlib.contextmanager
    def transaction(self: JournalDB) -> Iterator[None]:
        with original(self):
            yield
            if not failed:  # the first paid node's commit: the disk is full
                failed.append(1)
                raise sqlite3.OperationalError(FULL)

    with monkeypatch.context() as patch:
        patch.setattr(JournalDB, "transaction", transaction)
        first = run(out)
    assert failed
    assert_one_clear_error(first, out)
    assert "reserve" in first.stderr  # the journal freed its reserve and kept the outputs
    assert (out / "journal.sqlite-reserve").stat().st_size < JOURNAL_RESERVE  # a slice freed
    resume_pays_nothing_again(out, first, paid, clean)
    assert (out / "journal.sqlite-reserve").is_file()  # made again once there is room


def test_full_disk_at_a_checkpoint_write_exits_4_and_the_resume_pays_nothing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paid: list[Any]
) -> None:
    clean = clean_requests(tmp_path, paid)
    out = tmp_path / "out"
    original = SqliteSaver.put_writes
    count: list[int] = []

    def put_writes(self: Any, *args: Any, **kwargs: Any) -> Any:
        count.append(1)
        if len(count) >= 3:  # a few nodes in: the disk fills
            raise sqlite3.OperationalError(FULL)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(SqliteSaver, "put_writes", put_writes)
        first = run(out)
    assert len(count) >= 3
    assert_one_clear_error(first, out)
    resume_pays_nothing_again(out, first, paid, clean)


def test_a_full_disk_is_never_caught_by_an_error_route() -> None:
    from calliope_graph.errors import DiskFullError

    full = DiskFullError(folder="/out", needed=2048)
    assert error_classes(full) == ("disk_full",)
    assert error_classes(OSError(errno.ENOSPC, "No space left on device")) == ("disk_full",)
    assert error_classes(sqlite3.OperationalError(FULL)) == ("disk_full",)
    assert "any" not in error_classes(full) and "disk_full" not in error_class_names()
    assert isinstance(full, OSError) and full.errno == errno.ENOSPC
    assert "/out" in str(full) and "2.0 KiB" in str(full)
