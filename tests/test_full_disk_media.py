"""A full disk while a provider's audio, video or downloaded media is written: one clear
message and exit 4, and the resume after freeing space calls no provider again.

The answer was paid for before the write failed, so the bytes are kept with the node's
outputs in the output journal (as for images, see ``test_full_disk.py``) and a resume
writes the file from there. Each test runs ``calliope-graph run`` in-process with ``ENOSPC``
injected at the atomic writer for the media file, then frees the space (the injection ends)
and resumes: over both runs the simulator answers exactly the requests of a clean run, and
the resume answers none.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from conftest import Clock
from test_full_disk import assert_one_clear_error, disk_full_at, requests

import calliope_graph.simulate as simulate
from calliope_graph import _files
from calliope_graph.cli import main
from calliope_graph.context import RunContext
from calliope_graph.errors import DiskFullError
from calliope_graph.flow import Trace
from calliope_graph.flow._journal import Journal
from calliope_graph.media import MediaStore, Video
from calliope_graph.media._store import UNWRITTEN
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes

KEY_VARS = (
    "OPENAI_API_KEY",
    "ELEVENLABS_API_KEY",
    "RUNWAYML_API_SECRET",
    "STABILITY_API_KEY",
    "FAL_KEY",
)


@pytest.fixture
def sims(monkeypatch: pytest.MonkeyPatch) -> list[Simulator]:
    return recording_simulators(monkeypatch)


def recording_simulators(monkeypatch: pytest.MonkeyPatch) -> list[Simulator]:
    """Every simulator the CLI makes, on one virtual clock shared with the run context (a
    Runway task is polled: nothing sleeps for real)."""
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    clock = Clock()
    create = RunContext.create.__func__  # type: ignore[attr-defined]

    def with_clock(cls: type[RunContext], *args: Any, **kwargs: Any) -> RunContext:
        kwargs["sleep"] = clock
        return create(cls, *args, **kwargs)  # type: ignore[no-any-return]

    made: list[Simulator] = []

    def make(*args: Any, **kwargs: Any) -> Simulator:
        sim = Simulator(*args, sleep=clock, clock=lambda: clock.now, **kwargs)
        for earlier in made:  # a provider's CDN URLs stay valid between runs, as they do
            for url, response in earlier.state("download").items():
                sim.serve_download(url, response)
        made.append(sim)
        return sim

    monkeypatch.setattr(RunContext, "create", classmethod(with_clock))
    monkeypatch.setattr(simulate, "Simulator", make)
    return made


def speech_flow(tmp_path: Path) -> Path:
    """Text → story (OpenAI) → narration (ElevenLabs speech: audio bytes in the answer)."""
    flow = {
        "name": "spoken_story",
        "inputs": {"text": {"type": "text"}},
        "nodes": {
            "story": {
                "kind": "text_to_text",
                "model": "openai-gpt-6-luna",
                "inputs": {"text": "inputs.text"},
            },
            "speech": {
                "kind": "text_to_speech",
                "model": "elevenlabs-multilingual-v2",
                "params": {"output_name": "narration.wav"},
                "inputs": {"text": "story.text"},
            },
        },
        "outputs": {"audio": "speech.audio"},
    }
    path = tmp_path / "spoken_story.json"
    path.write_text(json.dumps(flow), encoding="utf-8")
    return path


def fal_image_flow(tmp_path: Path) -> Path:
    """Text → picture (fal FLUX: a URL in the answer, downloaded afterwards)."""
    flow = {
        "name": "fal_picture",
        "inputs": {"text": {"type": "text"}},
        "nodes": {
            "picture": {
                "kind": "text_to_image",
                "model": "fal-flux-schnell",
                "params": {"output_name": "picture.png"},
                "inputs": {"prompt": "inputs.text"},
            }
        },
        "outputs": {"image": "picture.image"},
    }
    path = tmp_path / "fal_picture.json"
    path.write_text(json.dumps(flow), encoding="utf-8")
    return path


def run(flow: str | Path, out: Path, inputs: dict[str, str], *extra: str) -> Result:
    args = ["run", str(flow), "--simulate", "--out", str(out), *extra]
    if "--resume" not in extra:
        for name, value in inputs.items():
            args += ["--input", f"{name}={value}"]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def full_then_resumed(
    tmp_path: Path,
    sims: list[Simulator],
    monkeypatch: pytest.MonkeyPatch,
    flow: str | Path,
    inputs: dict[str, str],
    hit: Callable[[Path], bool],
    message: str = "media file",
) -> tuple[Path, Result]:
    """A clean run, then a run whose disk is full where ``hit`` says, then the resume:
    over the last two, the clean run's requests exactly; in the resume, none."""
    clean = run(flow, tmp_path / "clean", inputs)
    assert clean.exit_code == 0, clean.output
    expected = requests(sims)
    sims.clear()
    out = tmp_path / "out"
    with disk_full_at(monkeypatch, lambda p: p.parent == out and hit(p)):
        first = run(flow, out, inputs)
    assert_one_clear_error(first, out)
    assert message in first.stderr.replace("\n", " ")
    assert sum(requests(sims).values()) > 0  # paid before the write failed
    before = requests(sims)
    thread = Trace.load(out / "trace.json").thread_id
    resumed = run(flow, out, inputs, "--resume", thread)
    assert resumed.exit_code == 0, resumed.output
    after = requests(sims)
    assert after == before, "the resume called a provider again"
    assert after == expected  # over both runs: each request once, as in a clean run
    assert Trace.load(out / "trace.json").status == "ok"
    return out, resumed


def test_full_disk_at_the_speech_audio_write_exits_4_and_the_resume_pays_nothing_again(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, resumed = full_then_resumed(
        tmp_path,
        sims,
        monkeypatch,
        speech_flow(tmp_path),
        {"text": "a fox finds a lantern"},
        lambda p: p.suffix == ".wav",
    )
    assert (out / "narration.wav").read_bytes()[:4] == b"RIFF"
    assert "finished earlier" in resumed.stderr


def test_full_disk_at_the_downloaded_video_exits_4_and_the_resume_pays_nothing_again(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    picture = tmp_path / "kite.png"
    picture.write_bytes(image_bytes("a red kite over a harbour", 320, 180))
    out, _ = full_then_resumed(
        tmp_path,
        sims,
        monkeypatch,
        "image_to_video_story",
        {"image": str(picture), "text": "the kite climbs"},
        lambda p: p.suffix == ".mp4",
    )
    video = Video.open(out / "clip.mp4")  # a real, probed MP4
    assert video.duration and video.duration > 0


def test_a_video_too_large_for_the_journal_keeps_its_url_and_the_resume_fetches_it(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real full disk has no room for a video's MBs in the journal either (its reserve is
    256 KiB): the provider's URL is journaled instead, and the resume downloads it again."""
    original = Journal._put

    def put(self: Journal, key: str, node: str, outputs: Any, calls: Any, files: Any, *rest: Any):
        if files and any(len(blob) for blob in files.values()):  # no room for the bytes
            raise sqlite3.OperationalError("database or disk is full")
        return original(self, key, node, outputs, calls, files, *rest)

    picture = tmp_path / "kite.png"
    picture.write_bytes(image_bytes("a red kite over a harbour", 320, 180))
    with monkeypatch.context() as patch:
        patch.setattr(Journal, "_put", put)
        out, _ = full_then_resumed(
            tmp_path,
            sims,
            monkeypatch,
            "image_to_video_story",
            {"image": str(picture), "text": "the kite climbs"},
            lambda p: p.suffix == ".mp4",
            message="provider's URL",
        )
    assert Video.open(out / "clip.mp4").duration


def test_full_disk_at_a_downloaded_image_exits_4_and_the_resume_pays_nothing_again(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = full_then_resumed(
        tmp_path,
        sims,
        monkeypatch,
        fal_image_flow(tmp_path),
        {"text": "a lighthouse at dusk"},
        lambda p: p.suffix in (".png", ".jpg", ".jpeg", ".webp"),
    )
    assert [p.name for p in out.glob("picture.*")]


# -- the store, below the CLI --------------------------------------------------------------------
class _FillsUp:
    """A file whose disk fills after ``room`` bytes (the write that crosses it fails)."""

    def __init__(self, fh: Any, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return int(self.fh.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def __enter__(self) -> _FillsUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


@pytest.fixture
def fills_up(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = _files._atomic_writer

    def writer(target: Path, durable: bool) -> Any:
        import contextlib

        @contextlib.contextmanager
        def wrapped() -> Iterator[Any]:
            with original(target, durable) as fh:
                yield _FillsUp(fh, 1000)

        return wrapped()

    monkeypatch.setattr(_files, "_atomic_writer", writer)
    yield


async def test_a_download_the_disk_fills_during_is_kept_whole_in_a_provider_node(
    tmp_path: Path, fills_up: None
) -> None:
    body = bytes(range(256)) * 40  # 10 KiB: the disk fills after the first 1000 bytes
    requested: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        requested[str(request.url)] += 1
        return httpx.Response(200, content=body)

    store = MediaStore(tmp_path)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(DiskFullError) as outside:  # outside a provider node: fails
            await store.download(client, "https://cdn.example.com/a.bin", "a.bin")
        assert str(tmp_path) in str(outside.value)
        kept: dict[str, bytes] = {}
        token = UNWRITTEN.set(kept)
        try:
            path = await store.download(client, "https://cdn.example.com/b.bin", "b.bin")
        finally:
            UNWRITTEN.reset(token)
    assert not path.exists() and kept == {str(path): body}  # whole, for the journal
    assert not list(tmp_path.glob(".*.part"))  # no temporary file left behind
    assert requested["https://cdn.example.com/b.bin"] == 2  # fetched again into memory


def test_sqlites_disk_io_error_on_a_nearly_full_disk_is_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full tmpfs SQLite says "disk I/O error" when it cannot grow its WAL index: that
    was a failed run of class ``any`` (exit 1); on a disk with little room left it is the
    full disk (exit 4), and elsewhere still an I/O error."""
    import calliope_graph.errors as errors

    io_error = sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(errors, "NEARLY_FULL", 1 << 62)  # every disk is nearly full
    full = errors.disk_full(io_error, tmp_path / "not" / "made")
    assert isinstance(full, DiskFullError) and str(tmp_path) in str(full)
    monkeypatch.setattr(errors, "NEARLY_FULL", 0)  # no disk is
    assert errors.disk_full(io_error, tmp_path) is None


def test_a_small_disk_still_gets_a_smaller_journal_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on a 224 KiB tmpfs: no room for the 256 KiB reserve meant no reserve at all,
    and a paid node's outputs (a 9 KiB picture, a story) were lost with the journal commit."""
    from calliope_graph.flow import _journal

    room = 150 << 10

    def small_disk(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = open(path, mode, *args, **kwargs)  # noqa: SIM115 (handed to the journal)
        if "w" in mode:
            return _FillsUp(fh, room)
        return fh

    monkeypatch.setattr(_journal, "open", small_disk, raising=False)
    db = _journal.JournalDB(tmp_path / _journal.JOURNAL_NAME)
    try:
        reserve = tmp_path / (_journal.JOURNAL_NAME + "-reserve")
        assert reserve.stat().st_size == _journal.RESERVE // 2  # 128 KiB fits, 256 did not
        assert db.release_reserve() and not reserve.exists()
    finally:
        db.close()


def test_a_disk_too_full_for_the_runs_inputs_says_to_run_again_and_pays_nothing(
    tmp_path: Path, sims: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on a 160 KiB tmpfs: the run stopped before any call (right), but told the
    user to resume a thread that was saved nowhere ("Cannot resume thread …")."""
    import contextlib

    from calliope_graph.flow._journal import JournalDB

    @contextlib.contextmanager
    def unsynced(self: JournalDB) -> Iterator[None]:
        raise sqlite3.OperationalError("database or disk is full")
        yield

    flow, out = speech_flow(tmp_path), tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(JournalDB, "unsynced", unsynced)
        first = run(flow, out, {"text": "a fox"})
    assert_one_clear_error(first, out)
    assert "Nothing was paid for yet" in first.stderr and "run it again" in first.stderr
    assert "resume" not in first.stderr
    assert sum(requests(sims).values()) == 0
    again = run(flow, out, {"text": "a fox"})
    assert again.exit_code == 0, again.output
