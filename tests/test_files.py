"""Files and secrets: one atomic writer with one permission policy, one redaction module, a
JSON-native trace, and one throttle for the files rewritten during a run."""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from calliope_graph._files import FILE_MODE, Throttled, atomic_writer, write_atomic
from calliope_graph._secrets import REDACTED, redact, redact_tree
from calliope_graph.cli import main
from calliope_graph.flow import Flow, Trace
from calliope_graph.flow.trace import jsonable
from calliope_graph.media import Image

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"
UMASK = 0o027
EXPECTED_MODE = FILE_MODE & ~UMASK  # 0o640


@pytest.fixture
def umask() -> Iterator[int]:
    """A umask unlike the usual 022, to show written files follow it."""
    old = os.umask(UMASK)
    try:
        yield UMASK
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.part"))


# -- the atomic writer ---------------------------------------------------------------------------
def test_write_atomic_writes_text_and_bytes_with_the_umask_mode(tmp_path: Path, umask: int) -> None:
    text = write_atomic(tmp_path / "deep" / "er" / "a.txt", "héllo")
    data = write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert text.read_text(encoding="utf-8") == "héllo"
    assert data.read_bytes() == b"\x00\x01"
    assert mode(text) == mode(data) == EXPECTED_MODE
    write_atomic(data, b"new")  # replacing keeps the policy, and the content is replaced
    assert data.read_bytes() == b"new" and mode(data) == EXPECTED_MODE
    assert leftovers(tmp_path) == []


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_atomic(tmp_path / "trace.json", '{"old": true}')

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("calliope_graph._files.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, '{"new": true}')
    assert target.read_text(encoding="utf-8") == '{"old": true}'
    assert leftovers(tmp_path) == []


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_atomic(tmp_path / "video.mp4", b"old video")
    with pytest.raises(RuntimeError, match="stream broke"), atomic_writer(target) as fh:
        fh.write(b"half a new vid")
        raise RuntimeError("stream broke")
    assert target.read_bytes() == b"old video"
    assert leftovers(tmp_path) == []


def test_every_file_a_run_writes_has_the_same_mode(tmp_path: Path, umask: int) -> None:
    """Media, frame, trace and report (and drawings) — before, media and trace.json were 0600
    and report.html 0644 whatever the umask."""
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["run", "webcam_story", "-i", f"image={WEBCAM}", "--simulate", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    drawn = runner.invoke(main, ["draw", "webcam_story", "-o", str(out / "flow.svg")])
    assert drawn.exit_code == 0, drawn.output
    written = {p.relative_to(out).as_posix(): mode(p) for p in out.rglob("*") if p.is_file()}
    assert {"trace.json", "report.html", "frame.json", "illustration.png", "flow.svg"} <= set(
        written
    )
    assert {name: m for name, m in written.items() if m != EXPECTED_MODE} == {}
    assert leftovers(out) == []


# -- redaction -----------------------------------------------------------------------------------
SECRET = "s3cr3t-value-42"


class Inner(BaseModel):
    note: str
    count: int = 1


class Outer(BaseModel):
    title: str
    inner: Inner
    tags: tuple[str, ...] = ()
    api_key: str = ""


def test_redact_masks_known_secrets_and_key_shaped_strings() -> None:
    text = redact(f"failed with {SECRET} and sk-abcdefghijkl", [SECRET])
    assert SECRET not in text and "sk-abcdefghijkl" not in text
    assert text == "failed with *** and ***"
    # the engines' import keeps working and is the same function
    from calliope_graph.engines._http import redact as engines_redact

    assert engines_redact is redact


def test_redact_tree_walks_dicts_lists_tuples_and_models() -> None:
    value: dict[str, Any] = {
        "prompt": f"use {SECRET}",
        "list": [f"a {SECRET}", 3, None, (f"{SECRET}!", 2.5)],
        "model": Outer(title=f"t {SECRET}", inner=Inner(note=SECRET), tags=(SECRET, "ok")),
        "image": Image(path=f"/out/{SECRET}.png", mime="image/png", width=1, height=1),
    }
    out = redact_tree(value, [SECRET])
    assert SECRET not in json.dumps(jsonable(out))
    assert out["list"][1:3] == [3, None] and isinstance(out["list"][3], tuple)
    assert out["model"].inner.note == "***" and out["model"].inner.count == 1
    assert out["model"].tags == ("***", "ok")
    assert isinstance(out["image"], Image) and out["image"].path == "/out/***.png"
    # a copy: the original is untouched, and what has nothing to redact comes back as itself
    assert value["model"].inner.note == SECRET
    clean = Inner(note="nothing here")
    assert redact_tree(clean, [SECRET]) is clean


def test_strict_redaction_masks_secret_names_and_bearer_tokens() -> None:
    value: dict[str, Any] = {
        "max_tokens": 300,
        "api_key": "abc123",
        "empty_token": "",
        "headers": {"Authorization": "Bearer qwertyuiopasdfgh"},
        "note": "sent Bearer zxcvbnmasdfghjkl1",
        "model": Outer(title="x", inner=Inner(note="y"), api_key="plain"),
    }
    out = redact_tree(value, strict=True)
    assert out["max_tokens"] == 300 and out["empty_token"] == ""
    assert out["api_key"] == REDACTED and out["headers"]["Authorization"] == REDACTED
    assert "zxcvbnm" not in out["note"] and out["note"].startswith("sent Bearer")
    assert out["model"].api_key == REDACTED
    # without strict, names are not a reason to mask (a trace keeps what is not a secret)
    assert redact_tree(value)["api_key"] == "abc123"


def test_trace_summaries_are_redacted_with_the_run_keys(tmp_path: Path) -> None:
    from calliope_graph.config import KeysModel

    flow = Flow("echo")
    flow.output("text", flow.add("echo", "passthrough", {"value": flow.input("text")}).value)
    keys = KeysModel(openai_api_key=SECRET)
    result = flow.invoke({"text": f"the key is {SECRET}"}, out_dir=tmp_path, keys=keys)
    saved = (tmp_path / "trace.json").read_text(encoding="utf-8")
    assert result.outputs["text"] == f"the key is {SECRET}"  # the value itself is untouched
    assert SECRET not in saved and "the key is ***" in saved


# -- JSON-native trace values --------------------------------------------------------------------
class Colour(enum.Enum):
    RED = "red"


class Opaque:
    def __repr__(self) -> str:
        return "Opaque(token=sk-abcdefghijklmnop)"


def test_jsonable_is_json_native_and_never_a_repr(tmp_path: Path) -> None:
    root = tmp_path / "out"
    value = {
        "path": root / "media" / "in.jpg",
        "elsewhere": Path("/somewhere/else.png"),
        "when": dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC),
        "day": dt.date(2026, 12, 1),
        "raw": b"\x00" * 10,
        "tags": {"b", "a"},
        "pair": (1, "x"),
        "colour": Colour.RED,
        "opaque": Opaque(),
    }
    out = jsonable(value, root=root)
    assert json.loads(json.dumps(out)) == out  # plain JSON all the way down
    assert out["path"] == os.path.join("media", "in.jpg")
    assert out["elsewhere"] == os.path.relpath("/somewhere/else.png", root)
    assert out["when"] == "2026-12-01T10:30:00+00:00" and out["day"] == "2026-12-01"
    assert out["raw"] == {"type": "bytes", "size": 10}
    assert out["tags"] == ["a", "b"] and out["pair"] == [1, "x"]
    assert out["colour"] == "red"
    assert out["opaque"] == {"type": "unserializable", "class": f"{__name__}.Opaque"}
    assert "sk-" not in json.dumps(out) and "Opaque(" not in json.dumps(out)


def test_a_path_input_is_a_path_in_trace_json(tmp_path: Path) -> None:
    """Before: ``"image": "PosixPath('.../webcam.jpg')"``."""
    flow = Flow("look")
    flow.output(
        "image", flow.add("keep", "passthrough", {"value": flow.input("image", "image")}).value
    )
    flow.invoke({"image": WEBCAM}, out_dir=tmp_path / "out")
    trace = json.loads((tmp_path / "out" / "trace.json").read_text(encoding="utf-8"))
    assert trace["inputs"]["image"] == os.path.relpath(WEBCAM, (tmp_path / "out").resolve())
    assert "PosixPath" not in json.dumps(trace)
    assert Trace.load(tmp_path / "out" / "trace.json").inputs == trace["inputs"]


# -- the throttle --------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_throttled_writes_at_most_every_interval_and_flush_always_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("calliope_graph._files.time.monotonic", clock)
    writes: list[float] = []
    throttled = Throttled(lambda: writes.append(clock.now), 0.5, cost_factor=0)

    throttled.request()  # the first write happens at once
    assert writes == [1000.0] and not throttled.pending
    for _ in range(100):  # asked for again and again within the interval: one write, later
        throttled.request()
    assert writes == [1000.0] and throttled.pending
    throttled.flush()  # the final write always happens, and replaces the pending one
    assert writes == [1000.0, 1000.0] and not throttled.pending
    clock.now += 0.5
    throttled.request()  # the interval is up: at once again
    assert len(writes) == 3 and not throttled.pending
    throttled.request()
    throttled.cancel()
    assert len(writes) == 3 and not throttled.pending


async def test_throttled_waits_longer_after_a_costly_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("calliope_graph._files.time.monotonic", clock)
    writes: list[float] = []

    def slow_write() -> None:
        writes.append(clock.now)
        clock.now += 1.0  # this write took a second

    throttled = Throttled(slow_write, 0.1, cost_factor=4)
    throttled.request()
    clock.now += 2.0  # past the interval, not past 4 x the write's cost
    throttled.request()
    assert len(writes) == 1 and throttled.pending
    clock.now += 2.0
    throttled.cancel()
    throttled.request()
    assert len(writes) == 2
    throttled.cancel()


def test_throttled_without_an_event_loop_writes_at_once() -> None:
    writes: list[int] = []
    throttled = Throttled(lambda: writes.append(1), 3600)
    throttled.request()
    throttled.request()  # no loop to come back on: not lost
    assert writes == [1, 1]


def test_trace_json_is_rewritten_during_a_run_through_the_throttle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calliope_graph.flow._runtime as run_module

    saves: list[int] = []
    real_save = Trace.save

    def counting(self: Trace, path: Any) -> Path:
        saves.append(len(self.executions))
        return real_save(self, path)

    monkeypatch.setattr(Trace, "save", counting)
    monkeypatch.setattr(run_module, "SAVE_INTERVAL", 3600.0)
    flow = Flow("chain")
    prev = flow.input("text")
    for i in range(30):
        prev = flow.add(f"n{i}", "passthrough", {"value": prev}).value
    flow.output("text", prev)
    flow.invoke({"text": "hi"}, out_dir=tmp_path)
    # the first finished node, then the final trace (30 nodes finished in between)
    assert len(saves) <= 3 and saves[-1] == 30
    assert Trace.load(tmp_path / "trace.json").status == "ok"


# -- temporary files a killed writer leaves ---------------------------------------------------
_WRITER = """
import sys
from calliope_graph._files import atomic_writer
with atomic_writer(sys.argv[1]) as fh:
    fh.write(b"half a video")
    fh.flush()
    print("writing", flush=True)
    sys.stdin.read()  # blocks until the test kills it (or closes stdin)
"""


def _writer(target: Path) -> Any:
    """A real writer process, stopped halfway through writing ``target``."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd="/",
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"writing\n"
    return proc


def _parts(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*.part"))


def _age(paths: list[Path], seconds: float = 60) -> None:
    for path in paths:
        past = path.stat().st_mtime - seconds
        os.utime(path, (past, past))


@pytest.mark.skipif(os.name == "nt", reason="needs flock (POSIX) to tell live writers apart")
def test_a_killed_writers_part_file_goes_when_the_target_is_written_again_a_live_ones_stays(
    tmp_path: Path,
) -> None:
    import signal

    target = tmp_path / "story.mp4"
    killed = _writer(target)
    (stale,) = _parts(target)
    # Started while the first is alive: a writer removes stale part files when it starts, and
    # a start slower than STALE_AFTER (a loaded machine) would otherwise take the dead one.
    live = _writer(target)  # another process, still writing
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    try:
        both = _parts(target)
        assert stale in both and len(both) == 2
        _age(both)
        write_atomic(target, b"the whole video")
        assert _parts(target) == [p for p in both if p != stale]  # the live one is kept
        assert target.read_bytes() == b"the whole video"
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait()
    assert target.read_bytes() == b"half a video" and _parts(target) == []


@pytest.mark.skipif(os.name == "nt", reason="needs flock (POSIX) to tell live writers apart")
def test_resuming_into_an_output_directory_removes_the_part_files_a_killed_run_left(
    tmp_path: Path,
) -> None:
    import signal

    from calliope_graph._outdir import OutDirLock

    target = tmp_path / "out" / "scenes" / "story.mp4"
    killed = _writer(target)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    fresh = tmp_path / "out" / ".cover.png.0123456789ab.part"
    fresh.write_bytes(b"just created")  # too new to judge: its writer may not hold it yet
    _age(_parts(target))
    lock = OutDirLock(tmp_path / "out", thread_id="t1")
    lock.acquire()
    try:
        assert _parts(target) == [] and fresh.exists()
    finally:
        lock.release()


def test_the_memo_of_cleaned_targets_stays_bounded_however_many_files_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long batch or server writes new files without end: what the writer remembers about
    them (which targets it already cleaned of stale temporary files) must not grow with it."""
    from calliope_graph import _files

    monkeypatch.setattr(_files, "_CLEANED_MAX", 64)  # the bound's size does not matter here
    for n in range(_files._CLEANED_MAX + 50):
        _, fd = _files._temp_path(tmp_path / f"f{n}.bin")
        os.close(fd)
    assert len(_files._CLEANED) <= _files._CLEANED_MAX
