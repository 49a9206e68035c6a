"""Two resumes of one thread sharing a SQLite checkpoint file: exactly one runs and pays.

PostgreSQL keeps them apart with an advisory lock (tests/test_postgres.py); a SQLite file
gets the same guarantee from a record lock in ``<file>.lock`` that dies with its process."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

import pytest

from calliope_graph.cli import EXIT_CODES
from calliope_graph.errors import ConfigurationError, FlowRunError
from calliope_graph.flow import Flow
from calliope_graph.simulate import Simulator, parse_faults

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"
DOWN = "auth@stability;auth@openai:endpoint=images"
#: Child processes start outside the repository, so they import the installed package.
OUTSIDE = tempfile.gettempdir()


async def test_two_resumes_of_one_thread_on_one_sqlite_file_pay_once(tmp_path: Path) -> None:
    flow = Flow.load("webcam_story")
    db = str(tmp_path / "checkpoints.sqlite")
    with pytest.raises(FlowRunError) as info:
        await flow.ainvoke(
            {"image": WEBCAM}, out_dir=tmp_path / "a", checkpointer=db,
            simulator=Simulator(faults=parse_faults(DOWN)),
        )  # fmt: skip
    thread = info.value.thread_id
    assert thread is not None

    # The first resume holds its provider call open until the others have been refused.
    entered, release = asyncio.Event(), asyncio.Event()

    async def gate(seconds: float) -> None:
        entered.set()
        await release.wait()

    holder = Simulator(latency=lambda provider, endpoint, request: 1.0, sleep=gate)
    first = asyncio.create_task(
        flow.ainvoke(None, out_dir=tmp_path / "b", simulator=holder, thread_id=thread,
                     resume=True, checkpointer=db)
    )  # fmt: skip
    waiting = asyncio.create_task(entered.wait())
    await asyncio.wait([first, waiting], return_when=asyncio.FIRST_COMPLETED)
    assert entered.is_set(), first.exception() if first.done() else None

    # Another process resuming the same thread from the CLI (another --out): refused at once.
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "calliope_graph.cli", "run", "webcam_story", "--simulate",
        "--out", str(tmp_path / "c"), "--checkpoint", db, "--resume", thread,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=OUTSIDE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(other.communicate(), timeout=120)
    text = " ".join(err.decode().split())
    assert other.returncode == EXIT_CODES["configuration"], text
    assert f"Thread {thread!r} is being run by another process" in text
    assert "checkpoints.sqlite.lock" in text
    assert not (tmp_path / "c" / "trace.json").exists()  # nothing ran there

    # A second run in this process is refused too, and calls no provider.
    bystander = Simulator()
    with pytest.raises(ConfigurationError, match="being run by another run"):
        await flow.ainvoke(None, out_dir=tmp_path / "d", simulator=bystander, thread_id=thread,
                           resume=True, checkpointer=db)  # fmt: skip
    assert bystander.count() == 0

    release.set()
    result = await first
    assert result.outputs["frame"].text
    assert holder.count("openai", "images") == 1 and holder.count("stability") == 0
    # Released at the end of the run: the thread can be resumed again (nothing is pending).
    again = Simulator()
    with contextlib.suppress(FlowRunError):
        await flow.ainvoke(None, out_dir=tmp_path / "e", simulator=again, thread_id=thread,
                           resume=True, checkpointer=db)  # fmt: skip
    assert again.count() == 0


async def test_a_killed_run_does_not_block_its_resume(tmp_path: Path) -> None:
    db = tmp_path / "checkpoints.sqlite"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from calliope_graph.flow._thread_lock import sqlite_thread_lock\n"
        "with sqlite_thread_lock(Path(sys.argv[1]), 'T', 'the file'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(db), stdout=asyncio.subprocess.PIPE, cwd=OUTSIDE
    )
    assert child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), timeout=60) == b"locked\n"
    from calliope_graph.flow._thread_lock import sqlite_thread_lock

    with (
        pytest.raises(ConfigurationError, match="being run by another process"),
        sqlite_thread_lock(db, "T", "the file"),
    ):
        pass
    with sqlite_thread_lock(db, "U", "the file"):  # another thread of the same file: free
        pass
    child.kill()  # as kill -9: the operating system drops the lock with the process
    await child.wait()
    with sqlite_thread_lock(db, "T", "the file"):
        pass
