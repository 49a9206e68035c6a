"""PostgreSQL as the checkpoint store, against a real server the tests start themselves.

A throwaway cluster (Debian's ``postgresql`` binaries: ``make postgres`` installs them where
it runs as root) is initialised in a temporary folder and listens on a free loopback port for
the session; each test gets a database of its own. Where the binaries are missing, only these
tests skip, saying how to enable them.

What a user of a shared store needs: a run fails, and a resume from another process with
another output directory continues it without paying again for what completed, with the
complete trace; strict msgpack works for every checkpointer (ours and the ones passed in);
processes setting up an empty database at once all succeed; two processes resuming one
thread never both run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _postgres import cluster, free_port
from click.testing import CliRunner

from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.errors import ConfigurationError, FlowRunError
from calliope_graph.flow import Flow, Trace
from calliope_graph.simulate import Simulator, parse_faults

psycopg = pytest.importorskip(
    "psycopg", reason="psycopg is missing: pip install 'calliope-graph[postgres]'"
)

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"
#: webcam_story fails at the illustration: Stability refuses, then GPT Image (its fallback) too.
DOWN = "auth@stability;auth@openai:endpoint=images"
#: Child processes start outside the repository, so they import the installed package (the
#: source folder calliope_graph/ lacks the mapped nodes/ and graphs/).
OUTSIDE = tempfile.gettempdir()


# -- the server ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT`` of a cluster that lives for the session."""
    with cluster(max_connections=60) as url:
        yield url


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A new, empty database of the session's server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{pg_server}/{name}"


def _python(script: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``script`` in another Python process; its last stdout line, parsed as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
        cwd=OUTSIDE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


RESUME = """
import asyncio, json, sys
from calliope_graph.flow import Flow
from calliope_graph.simulate import Simulator

async def main():
    out, thread, url = sys.argv[1:4]
    sim = Simulator()
    result = await Flow.load("webcam_story").ainvoke(
        None, out_dir=out, simulator=sim, thread_id=thread, resume=True, checkpointer=url
    )
    print(json.dumps({"calls": {f"{p}:{e}": n for (p, e), n in sim.calls.items()},
                      "image": str(result.outputs["image"].path)}))

asyncio.run(main())
"""


# -- resuming elsewhere ---------------------------------------------------------------------
async def test_resume_from_another_process_and_output_directory(
    pg_url: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "machine-a", tmp_path / "machine-b"
    down = Simulator(faults=parse_faults(DOWN))
    with pytest.raises(FlowRunError) as info:
        await Flow.load("webcam_story").ainvoke(
            {"image": WEBCAM}, out_dir=first, simulator=down, checkpointer=pg_url
        )
    thread = info.value.thread_id
    assert thread is not None
    assert down.count("azure") == 1 and down.count("openai", "chat") == 2  # vision + story
    # the hint names the store, so the command it prints resumes this run
    assert f"--checkpoint {pg_url}" in str(info.value)

    # Another process, another output directory (no trace.json, no journal there), strict
    # msgpack: only the pending fallback is paid for.
    done = _python(RESUME, str(second), thread, pg_url, env={"LANGGRAPH_STRICT_MSGPACK": "true"})
    calls = done["calls"]
    assert sum(n for k, n in calls.items() if k.startswith("azure")) == 0
    assert sum(n for k, n in calls.items() if k.startswith("openai") and "chat" in k) == 0
    assert sum(n for k, n in calls.items() if k.startswith("stability")) == 0
    assert sum(n for k, n in calls.items() if "images" in k) == 1
    assert Path(done["image"]).is_file() and Path(done["image"]).is_relative_to(second)

    # Its trace is complete: what the first attempt did comes from the checkpoint store.
    trace = Trace.load(second / "trace.json")
    assert trace.status == "ok" and trace.resumed_from == thread
    resumed = {e.node for e in trace.executions if e.resumed}
    assert {"azure_analysis", "llm_analysis", "story"} <= resumed
    before = {e.node: e for e in Trace.load(first / "trace.json").executions if e.status == "ok"}
    story = next(e for e in trace.executions if e.node == "story" and e.resumed)
    assert story.calls == before["story"].calls and story.attempts == before["story"].attempts
    fresh = [e.node for e in trace.executions if not e.resumed]
    assert "story" not in fresh and "azure_analysis" not in fresh
    assert trace.inputs == Trace.load(first / "trace.json").inputs


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_checkpoint_option_and_printed_resume_command(pg_url: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    failed = _cli(
        "run", "webcam_story", "--input", f"image={WEBCAM}", "--simulate", "--faults", DOWN,
        "--out", str(first), "--checkpoint", pg_url,
    )  # fmt: skip
    assert failed.exit_code == EXIT_CODES["run_failed"], failed.output
    assert "Traceback" not in failed.stderr
    printed = " ".join(failed.stderr.split())  # the hint may be wrapped
    start = printed.index("calliope-graph run webcam_story")
    command = shlex.split(printed[start:].split(" --resume ")[0])
    thread = printed[start:].split(" --resume ")[1].split()[0].rstrip(".")
    assert command[command.index("--checkpoint") + 1] == pg_url

    # The printed command, from another process, with another --out (and --simulate).
    command[command.index("--out") + 1] = str(second)
    done = subprocess.run(
        [sys.executable, "-m", "calliope_graph.cli", *command[1:], "--resume", thread,
         "--simulate"],
        capture_output=True, text=True, timeout=300, cwd=OUTSIDE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "finished earlier" not in done.stderr or "story" in done.stderr
    trace = Trace.load(second / "trace.json")
    assert trace.status == "ok"
    fresh = {e.node: e for e in trace.executions if not e.resumed}
    assert set(fresh) & {"azure_analysis", "llm_analysis", "story"} == set()
    assert sum(sum(e.calls.values()) for e in fresh.values()) == 1  # the fallback's one image
    assert {"azure_analysis", "llm_analysis", "story"} <= {
        e.node for e in trace.executions if e.resumed
    }
    report = (second / "report.html").read_text()
    assert "azure_analysis" in report


def test_checkpoint_url_from_the_environment(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLIOPE_CHECKPOINT_URL", pg_url)
    failed = _cli(
        "run", "illustrate", "--input", "text=a lighthouse", "--simulate", "--faults", DOWN,
        "--out", str(tmp_path / "a"),
    )  # fmt: skip
    assert failed.exit_code == EXIT_CODES["run_failed"], failed.output
    assert "--checkpoint" in " ".join(failed.stderr.split())
    trace = Trace.load(tmp_path / "a" / "trace.json")
    assert not (tmp_path / "a" / "checkpoints.sqlite").exists()  # they went to PostgreSQL
    resumed = _cli("run", "illustrate", "--simulate", "--out", str(tmp_path / "b"),
                   "--resume", trace.thread_id)  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert Trace.load(tmp_path / "b" / "trace.json").status == "ok"


def test_a_bad_url_is_one_clear_message_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://someone:s3cret-pw@127.0.0.1:{free_port()}/nowhere"
    result = _cli(
        "run", "illustrate", "--input", "text=x", "--simulate", "--out", str(tmp_path),
        "--checkpoint", url,
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["configuration"], result.output
    assert "Cannot use the checkpoint store postgresql://someone:***@127.0.0.1" in result.stderr
    assert "s3cret-pw" not in result.output and "Traceback" not in result.stderr


# -- the serializer on every checkpointer ------------------------------------------------------
STRICT = """
import asyncio, json, sys
from langgraph.checkpoint.memory import InMemorySaver
from calliope_graph.errors import FlowRunError
from calliope_graph.flow import Flow
from calliope_graph.simulate import Simulator, parse_faults

async def resumed(saver, out):
    flow = Flow.load("webcam_story")
    down = Simulator(faults=parse_faults(sys.argv[2]))
    try:
        await flow.ainvoke({"image": sys.argv[3]}, out_dir=out + "/1", simulator=down,
                           checkpointer=saver)
    except FlowRunError as exc:
        thread = exc.thread_id
    up = Simulator()
    result = await flow.ainvoke(None, out_dir=out + "/2", simulator=up, thread_id=thread,
                                resume=True, checkpointer=saver)
    return {"azure": up.count("azure"), "chat": up.count("openai", "chat"),
            "frame": result.outputs["frame"].text,
            "resumed": [e.node for e in result.trace.executions if e.resumed]}

async def main():
    import aiosqlite
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    out = sys.argv[1]
    found = {"memory": await resumed(InMemorySaver(), out + "/memory")}
    async with aiosqlite.connect(out + "/given.sqlite") as conn:
        found["sqlite"] = await resumed(AsyncSqliteSaver(conn), out + "/sqlite")
    async with AsyncPostgresSaver.from_conn_string(sys.argv[4]) as saver:
        await saver.setup()
        found["postgres"] = await resumed(saver, out + "/postgres")
    print(json.dumps(found))

asyncio.run(main())
"""


def test_strict_msgpack_resumes_with_every_checkpointer(pg_url: str, tmp_path: Path) -> None:
    """Savers the caller opened get the flow's allow-list too: under LangGraph's strict
    msgpack, resuming at a node that reads a checkpointed image used to fail ('dict' object
    has no attribute 'data_url') for each of them."""
    vision_down = "auth@openai:endpoint=chat"  # llm_analysis fails; it reads the input image
    found = _python(
        STRICT, str(tmp_path), vision_down, str(WEBCAM), pg_url,
        env={"LANGGRAPH_STRICT_MSGPACK": "true"},
    )  # fmt: skip
    for kind in ("memory", "sqlite", "postgres"):
        assert found[kind]["azure"] == 0 and found[kind]["chat"] == 2, kind  # vision + story
        assert found[kind]["frame"], kind
    # Another output directory: the earlier attempt's executions come from the store (its
    # azure_analysis finished in the step that failed, so it is in no checkpoint's history).
    for kind in ("sqlite", "postgres"):
        assert "azure_analysis" in found[kind]["resumed"], kind


# -- setting up and sharing one database ---------------------------------------------------
async def test_four_concurrent_setups_of_an_empty_database_all_succeed(pg_url: str) -> None:
    from calliope_graph.flow._checkpoints import checkpointer_from_url

    plan = Flow.load("illustrate").plan()

    async def open_one() -> int:
        async with checkpointer_from_url(pg_url, plan) as saver:
            return len([t async for t in saver.alist(None)])

    assert await asyncio.gather(*(open_one() for _ in range(4))) == [0, 0, 0, 0]
    with psycopg.connect(pg_url) as conn:
        applied = conn.execute("SELECT count(*), count(DISTINCT v) FROM checkpoint_migrations")
        total, distinct = applied.fetchone()
        assert total == distinct > 0  # every migration applied exactly once


async def test_workers_creating_the_trace_table_at_the_same_moment_all_succeed(
    pg_server: str,
) -> None:
    """PostgreSQL's CREATE TABLE IF NOT EXISTS races with itself ("type calliope_trace
    already exists" failed a DBOS worker starting beside another): creators take turns."""
    from calliope_graph.flow._postgres_trace import _create_trace_table

    for _ in range(4):  # fresh databases: the race is at the first creation
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        conns = [
            await psycopg.AsyncConnection.connect(f"{pg_server}/{name}", autocommit=True)
            for _ in range(12)
        ]
        try:
            await asyncio.gather(*(_create_trace_table(c) for c in conns))
        finally:
            for c in conns:
                await c.close()


async def test_two_resumes_of_one_thread_exactly_one_runs(pg_url: str, tmp_path: Path) -> None:
    flow = Flow.load("webcam_story")
    with pytest.raises(FlowRunError) as info:
        await flow.ainvoke(
            {"image": WEBCAM}, out_dir=tmp_path / "a", simulator=Simulator(
                faults=parse_faults(DOWN)), checkpointer=pg_url,
        )  # fmt: skip
    thread = info.value.thread_id
    assert thread is not None

    # The first resume holds its provider call open until the second has been refused.
    entered, release = asyncio.Event(), asyncio.Event()

    async def gate(seconds: float) -> None:
        entered.set()
        await release.wait()

    holder = Simulator(latency=lambda provider, endpoint, request: 1.0, sleep=gate)
    first = asyncio.create_task(
        flow.ainvoke(None, out_dir=tmp_path / "b", simulator=holder, thread_id=thread,
                     resume=True, checkpointer=pg_url)
    )  # fmt: skip
    waiting = asyncio.create_task(entered.wait())
    await asyncio.wait([first, waiting], return_when=asyncio.FIRST_COMPLETED)
    assert entered.is_set(), first.exception() if first.done() else None

    # Another process resuming the same thread (another --out) is refused, paying nothing.
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "calliope_graph.cli", "run", "webcam_story", "--simulate",
        "--out", str(tmp_path / "c"), "--checkpoint", pg_url, "--resume", thread,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=OUTSIDE,
    )  # fmt: skip
    _, err = await other.communicate()
    text = " ".join(err.decode().split())
    assert other.returncode == EXIT_CODES["configuration"], text
    assert f"Thread {thread!r} is being run by another process" in text
    assert f"pid {os.getpid()}" in text  # who holds it
    assert not (tmp_path / "c" / "trace.json").exists()  # nothing ran there

    # In this process too (a second runner, its own connection): refused.
    bystander = Simulator()
    with pytest.raises(ConfigurationError, match="being run by another process"):
        await flow.ainvoke(None, out_dir=tmp_path / "d", simulator=bystander, thread_id=thread,
                           resume=True, checkpointer=pg_url)  # fmt: skip
    assert bystander.count() == 0

    release.set()
    result = await first
    assert result.outputs["frame"].text
    assert holder.count("openai", "images") == 1 and holder.count("azure") == 0
    # Released at the end of the run: the thread can be resumed again (nothing is pending).
    with contextlib.suppress(FlowRunError):
        await flow.ainvoke(None, out_dir=tmp_path / "e", simulator=Simulator(),
                           thread_id=thread, resume=True, checkpointer=pg_url)  # fmt: skip


def test_a_shared_sqlite_file_resumes_with_another_out_and_the_whole_trace(tmp_path: Path) -> None:
    """--checkpoint also names a SQLite file (no server needed): the same guarantees of a
    complete trace hold when the resume uses another output directory."""
    store = tmp_path / "shared" / "checkpoints.sqlite"
    failed = _cli(
        "run", "webcam_story", "--input", f"image={WEBCAM}", "--simulate", "--faults", DOWN,
        "--out", str(tmp_path / "a"), "--checkpoint", str(store),
    )  # fmt: skip
    assert failed.exit_code == EXIT_CODES["run_failed"], failed.output
    assert f"--checkpoint {store}" in " ".join(failed.stderr.split())
    thread = Trace.load(tmp_path / "a" / "trace.json").thread_id
    resumed = _cli(
        "run", "webcam_story", "--simulate", "--out", str(tmp_path / "b"),
        "--checkpoint", str(store), "--resume", thread,
    )  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    trace = Trace.load(tmp_path / "b" / "trace.json")
    assert {"azure_analysis", "llm_analysis", "story"} <= {
        e.node for e in trace.executions if e.resumed
    }
    assert {e.node for e in trace.executions if not e.resumed} & {
        "story",
        "azure_analysis",
    } == set()
