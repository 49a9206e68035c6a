"""The output directory as a user meets it: a bad ``--out`` is one clear message before any
provider is paid, and two runs never share a directory (the second is refused up front)."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from calliope_graph import _outdir
from calliope_graph._outdir import OutDirLock, prepare_out_dir
from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.errors import CalliopeError, ConfigurationError
from calliope_graph.flow import Durability, Flow
from calliope_graph.nodes import TextToText
from calliope_graph.simulate import Simulator


async def _instant(seconds: float) -> None:
    await asyncio.sleep(0)


def _flow() -> Flow:
    flow = Flow("one_call")
    topic = flow.input("topic", "text")
    story = flow.add("story", TextToText("openai-gpt-4o-mini"), {"text": topic})
    flow.output("story", story["text"])
    return flow


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request any simulator answers in this test (the CLI makes its own)."""
    seen: list[str] = []
    answer = Simulator.handle

    async def counted(self: Simulator, request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return await answer(self, request)

    monkeypatch.setattr(Simulator, "handle", counted)
    return seen


def _read_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``path`` as a directory nobody may write in.

    chmod is enough for an ordinary user; root ignores it, so when a write still succeeds
    the probe write is made to fail the way a read-only directory fails it.
    """
    path.mkdir()
    path.chmod(0o500)
    try:
        (path / "try").write_bytes(b"")
    except PermissionError:
        return path  # chmod took effect
    (path / "try").unlink()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(_outdir, "_probe", refuse)
    return path


@pytest.fixture
def restore_mode(tmp_path: Path) -> Iterator[None]:
    yield
    for path in tmp_path.iterdir():
        path.chmod(0o700)


Case = Callable[[Path, pytest.MonkeyPatch], tuple[Path, str]]


def _a_file(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    (tmp / "taken").write_text("not a directory")
    return tmp / "taken", "is an existing file"


def _under_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    (tmp / "notes.txt").write_text("a file")
    return tmp / "notes.txt" / "run1", f"{str(tmp / 'notes.txt')!r} is a file"


def _not_writable(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[Path, str]:
    return _read_only(tmp / "locked", mp), "is not writable"


CASES = pytest.mark.parametrize(
    "case", [_a_file, _under_a_file, _not_writable], ids=["file", "under-file", "read-only"]
)


# -- B3: a bad output directory ------------------------------------------------------------------
@CASES
@pytest.mark.usefixtures("restore_mode")
async def test_python_api_refuses_a_bad_out_dir_before_any_call(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[str]
) -> None:
    out, expected = case(tmp_path, monkeypatch)
    with pytest.raises(ConfigurationError) as info:
        await _flow().ainvoke({"topic": "owls"}, out_dir=out, simulator=Simulator(sleep=_instant))
    assert isinstance(info.value, CalliopeError)
    message = str(info.value)
    assert str(out) in message and expected in message
    assert "out_dir=" in message  # says how to fix it
    assert calls == []


@CASES
@pytest.mark.usefixtures("restore_mode")
def test_cli_bad_out_is_one_message_exit_4_before_any_call(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[str]
) -> None:
    out, expected = case(tmp_path, monkeypatch)
    result = CliRunner().invoke(
        main,
        ["run", "webcam_story", "--input", "image=x.jpg", "--simulate", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == EXIT_CODES["configuration"] == 4, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error (ConfigurationError)" in lines[0], result.stderr
    text = " ".join(result.stderr.split())  # rich wraps long lines
    assert expected in text and "--out" in text
    assert calls == []


def test_a_missing_out_dir_is_created(tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []  # the probe file is gone


# -- B8: one run per output directory ------------------------------------------------------------
async def test_a_second_concurrent_run_on_one_out_dir_is_refused_before_any_call(
    tmp_path: Path,
) -> None:
    first_sim, second_sim = Simulator(sleep=_instant), Simulator(sleep=_instant)
    flow = _flow()
    first = flow.runner(out_dir=tmp_path, simulator=first_sim)
    second = flow.runner(out_dir=tmp_path, simulator=second_sim)
    try:
        done, refused = await asyncio.gather(
            first.ainvoke({"topic": "owls"}, thread_id="first"),
            second.ainvoke({"topic": "bears"}, thread_id="second"),
            return_exceptions=True,
        )
    finally:
        await first.aclose()
        await second.aclose()
    assert not isinstance(done, BaseException) and done.outputs["story"]
    assert isinstance(refused, ConfigurationError)
    message = str(refused)
    assert f"pid {os.getpid()}, thread first" in message and str(tmp_path) in message
    assert "another output directory" in message
    assert first_sim.count() == 1 and second_sim.count() == 0
    # the refused run wrote nothing of its own: the trace is the first run's
    assert '"thread_id":"first"' in (tmp_path / "trace.json").read_text().replace(" ", "")
    # the directory is free again once the first run is over
    again = await flow.ainvoke({"topic": "bears"}, out_dir=tmp_path, simulator=second_sim)
    assert again.outputs["story"] and second_sim.count() == 1


def test_cli_refuses_an_out_dir_another_process_holds(tmp_path: Path, calls: list[str]) -> None:
    with OutDirLock(tmp_path, thread_id="busy1"):
        result = CliRunner().invoke(
            main, ["run", "webcam_story", "--simulate", "--out", str(tmp_path)]
        )
    assert result.exit_code == 4, result.output
    text = " ".join(result.stderr.split())
    assert "Another run" in text and "thread busy1" in text and "--out" in text
    assert calls == []
    assert not (tmp_path / "trace.json").exists()


async def test_a_reader_of_the_checkpoints_never_fails_a_run(tmp_path: Path) -> None:
    """A report, sqlite3 or Studio reading checkpoints.sqlite while a run writes it."""
    sim = Simulator(sleep=_instant)
    flow = _flow()
    await flow.ainvoke({"topic": "owls"}, out_dir=tmp_path, simulator=sim)
    reader = sqlite3.connect(tmp_path / "checkpoints.sqlite")
    try:
        reader.execute("BEGIN")
        assert reader.execute("select count(*) from checkpoints").fetchone()[0] > 0
        result = await flow.ainvoke({"topic": "bears"}, out_dir=tmp_path, simulator=sim)
    finally:
        reader.close()
    assert result.outputs["story"] and sim.count() == 2


async def test_reading_the_checkpoint_history_while_a_run_writes_does_not_hang(
    tmp_path: Path,
) -> None:
    """The SQLite saver runs on the loop's thread: listing checkpoints must not hold its
    lock across an ``await`` (a run writing meanwhile, on the same thread, would wait for
    ever)."""
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    from calliope_graph.flow._checkpoints import open_sqlite

    class State(TypedDict, total=False):
        n: int

    async def bump(state: State) -> State:
        return {"n": state.get("n", 0) + 1}

    class StrictLock:
        """The saver's lock, refusing to wait (a wait here would be the hang)."""

        def __init__(self) -> None:
            self._lock = threading.Lock()

        def __enter__(self) -> None:
            if not self._lock.acquire(blocking=False):
                raise AssertionError("the saver's lock is held across an await")

        def __exit__(self, *exc: object) -> None:
            self._lock.release()

    graph = StateGraph(State)
    graph.add_node("bump", bump)
    graph.add_edge(START, "bump")
    graph.add_edge("bump", END)
    async with open_sqlite(tmp_path / "checkpoints.sqlite", None) as saver:
        saver.lock = StrictLock()  # type: ignore[attr-defined]
        compiled = graph.compile(checkpointer=saver)
        await compiled.ainvoke({"n": 0}, {"configurable": {"thread_id": "a"}})
        seen = 0
        async for _ in saver.alist({"configurable": {"thread_id": "a"}}):
            seen += 1
            await compiled.ainvoke({"n": 0}, {"configurable": {"thread_id": f"b{seen}"}})
    assert seen >= 2


# -- checkpoint writes a moment after LangGraph hands them over ------------------------------
def _saved_rows(path: Path) -> tuple[int, int]:
    """(checkpoints, writes) another connection finds committed in ``path``."""
    conn = sqlite3.connect(path)
    try:
        checkpoints, writes = (
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("checkpoints", "writes")
        )
        return checkpoints, writes
    finally:
        conn.close()


async def _one_step(saver: Any, thread: str = "t") -> tuple[Any, str]:
    """What LangGraph hands a saver for one step: its checkpoint, then a task's writes."""
    from langgraph.checkpoint.base import empty_checkpoint

    checkpoint = empty_checkpoint()
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    saved = await saver.aput(config, checkpoint, {"source": "loop", "step": 1}, {})
    await saver.aput_writes(saved, [("story.text", "Once upon a time")], "task-1")
    return saved, checkpoint["id"]


async def test_a_steps_checkpoint_is_written_a_moment_later_not_before_the_next_node(
    tmp_path: Path,
) -> None:
    """LangGraph hands a step's checkpoint and writes over and starts the next node; they
    are committed together ``AFTER_NODE_DELAY`` later (typically while that node waits on its
    provider), not in between."""
    from calliope_graph.flow._checkpoints import open_sqlite

    path = tmp_path / "checkpoints.sqlite"
    async with open_sqlite(path, None) as saver:
        drained = asyncio.Event()
        drain = saver._drain  # type: ignore[attr-defined]

        def drain_and_say() -> None:
            drain()
            drained.set()

        saver._drain = drain_and_say  # type: ignore[attr-defined]
        await _one_step(saver)  # (handing over gives the loop no turn: no timer can fire)
        assert _saved_rows(path) == (0, 0)
        await asyncio.wait_for(drained.wait(), 10)
        assert _saved_rows(path) == (1, 1)


async def test_reading_the_checkpoints_sees_the_writes_handed_over_before(
    tmp_path: Path,
) -> None:
    from calliope_graph.flow._checkpoints import open_sqlite

    async with open_sqlite(tmp_path / "checkpoints.sqlite", None) as saver:
        saved, checkpoint_id = await _one_step(saver)
        found = await saver.aget_tuple(saved)
        assert found is not None and found.checkpoint["id"] == checkpoint_id
        assert [write[1:] for write in found.pending_writes or []] == [
            ("story.text", "Once upon a time")
        ]
        assert [t.checkpoint["id"] async for t in saver.alist(saved)] == [checkpoint_id]


async def test_closing_the_checkpoint_store_writes_what_is_still_waiting(tmp_path: Path) -> None:
    from calliope_graph.flow._checkpoints import open_sqlite

    path = tmp_path / "checkpoints.sqlite"
    async with open_sqlite(path, None) as saver:
        await _one_step(saver)
    assert _saved_rows(path) == (1, 1)


async def test_a_checkpoint_write_that_fails_later_still_fails_the_run(tmp_path: Path) -> None:
    """A write that fails after LangGraph went on is raised when the store closes (at the
    latest), as a failed background save failed the run."""
    from calliope_graph.flow._checkpoints import open_sqlite

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        async with open_sqlite(tmp_path / "checkpoints.sqlite", None) as saver:
            await _one_step(saver)
            saver.conn.execute("DROP TABLE writes")  # type: ignore[attr-defined]


async def test_with_durability_sync_each_steps_checkpoint_is_written_before_the_next(
    tmp_path: Path,
) -> None:
    from calliope_graph.flow._checkpoints import open_sqlite

    path = tmp_path / "checkpoints.sqlite"
    async with open_sqlite(path, None, defer=False) as saver:
        await _one_step(saver)
        assert _saved_rows(path) == (1, 1)
    flow = Flow("one")
    story = flow.add(
        "story", TextToText("openai-gpt-6-luna"), {"text": flow.input("prompt", "text")}
    )
    flow.output("story", story["text"])
    durabilities: list[tuple[Durability, bool]] = [("sync", False), ("async", True), ("exit", True)]
    for durability, deferred in durabilities:
        runner = flow.runner(out_dir=tmp_path / durability, durability=durability)
        runner.out_dir.mkdir()
        async with runner._graph_for_run("t", fresh=True) as (graph, _):
            assert (graph.checkpointer.queued is not None) is deferred  # type: ignore[union-attr]


async def test_a_stores_allow_listed_copy_queues_into_the_stores_own_writes(
    tmp_path: Path,
) -> None:
    """A batch runs its items on the flow's allow-listed copy of the store it opened
    (``with_allowlist``): closing the store writes what the copy handed over too."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from calliope_graph.flow._checkpoints import open_sqlite

    path = tmp_path / "checkpoints.sqlite"
    serde = JsonPlusSerializer(allowed_msgpack_modules=[("calliope_graph.media", "Image")])
    async with open_sqlite(path, serde) as saver:
        copy = saver.with_allowlist({("calliope_graph.media", "Audio")})
        assert copy is not saver
        await _one_step(copy)
        assert _saved_rows(path) == (0, 0)
    assert _saved_rows(path) == (1, 1)
