"""Distributed batches on DBOS: ``batch --engine dbos`` follows items run by ``worker``s.

The main test is the one the issue asks for: three worker processes on one real PostgreSQL
(a throwaway cluster the test starts; Debian's ``postgresql`` binaries, ``make postgres``),
all calling one loopback simulator server that limits Stability like the real provider; one
worker and the follower are killed with SIGKILL mid-batch, the follower is started again.
Every item must be ok exactly once in the manifest, the server must never have seen the
combined rate pass its limit, and no call the server had answered before the kill may be
made again (calls in flight at the kill may be). The simulator server logs every request
with the item it belongs to (the flow puts the item's tag into each provider prompt).

Then DBOS on SQLite, the single-machine default: the same commands without Postgres.
Everything runs in subprocesses (the real engines over HTTP, real time there); the test
itself only polls files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _postgres import cluster

pytest.importorskip("dbos", reason="dbos is missing: pip install 'calliope-graph[dbos]'")

OUTSIDE = tempfile.gettempdir()  # children import the installed package, not the source tree
EXE = shutil.which("calliope-graph", path=str(Path(sys.executable).parent)) or "calliope-graph"

#: The provider's limit (the simulator server) and the one the workers share. The workers'
#: window admits requests; the server counts them when they arrive, later by a delay that
#: varies with load. At 2 per 2 s, any 2 s of arrivals were admitted within 2 s + that delay,
#: so the server sees at most 4 (under its 5) whenever the delay varies by less than 2 s.
SERVER_LIMIT = (5, 2.0)
WORKER_LIMITS = "stability:requests=2/2s"
ITEMS = 12

FLOW = """\
name: tagged_story
description: text → story (OpenAI) → image (Stability); each prompt carries the item's tag.
inputs:
  text: {type: text}
nodes:
  story:
    kind: text_to_text
    model: openai-gpt-4o-mini
    inputs: {text: inputs.text}
  prompt:
    kind: prompt_template
    params: {template: "{tag} {story}"}
    inputs: {tag: inputs.text, story: story.text}
  image:
    kind: text_to_image
    model: stability-core
    params: {output_name: image.png}
    inputs: {prompt: prompt.text}
outputs:
  image: image.image
"""

#: The loopback simulator server, logging each request (start, end, provider, item tag).
SERVER = """\
import asyncio, json, re, sys, time
from calliope_graph.simulate import Simulator, parse_faults
from calliope_graph.simulate.server import serve

log = open(sys.argv[1], "a", buffering=1)
sim = Simulator(limits=sys.argv[2], faults=parse_faults(sys.argv[3]))
handle = sim.handle
tag = re.compile(rb"tag-(item\\d+)")

async def logged(request):
    found = tag.search(request.content)
    entry = {"start": time.time(), "item": found.group(1).decode() if found else None}
    response = await handle(request)
    entry.update(end=time.time(), provider=request.url.host, status=response.status_code)
    log.write(json.dumps(entry) + "\\n")
    return response

sim.handle = logged
asyncio.run(serve(sim, 0, echo=lambda line: print(line, flush=True)))
"""


# -- PostgreSQL ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of a throwaway cluster."""
    with cluster(max_connections=200) as url:
        yield f"{url}/postgres"


# -- helpers ---------------------------------------------------------------------------------------
class Procs:
    """Child processes, each killed at the end whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.all: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        err = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, cwd=OUTSIDE, env=env, stdout=subprocess.PIPE, stderr=err, start_new_session=True
        )
        self.all.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.all:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(t) for t in path.read_text().splitlines() if t.strip().endswith("}")]


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def max_in_window(times: list[float], seconds: float) -> int:
    times = sorted(times)
    best, left = 0, 0
    for right, t in enumerate(times):
        while t - times[left] >= seconds:
            left += 1
        best = max(best, right - left + 1)
    return best


def _running(url: str, workers: dict[int, Any]) -> tuple[str, set[str]] | None:
    """A live worker's executor id and the items it runs now (DBOS PENDING workflows)."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT executor_id, workflow_uuid FROM dbos.workflow_status WHERE status = 'PENDING'"
        ).fetchall()
    running: dict[str, set[str]] = defaultdict(set)
    for executor, workflow in rows:
        running[executor].add(workflow.rpartition("-")[2])
    for executor, items in running.items():
        pid = int(executor.split("-")[-2])
        if pid in workers and workers[pid].poll() is None:
            return executor, items
    return None


# -- three workers on PostgreSQL -------------------------------------------------------------------
def test_three_workers_on_postgres_one_killed_every_item_ok_once(
    pg_url: str, tmp_path: Path
) -> None:
    flow = tmp_path / "tagged_story.yaml"
    flow.write_text(FLOW)
    inputs = tmp_path / "items.jsonl"
    inputs.write_text(
        "".join(
            json.dumps({"id": f"item{n:02d}", "text": f"tag-item{n:02d} a small scene"}) + "\n"
            for n in range(ITEMS)
        )
    )
    shared = tmp_path / "shared"
    log = tmp_path / "requests.jsonl"
    procs = Procs(tmp_path)
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    limit, window = SERVER_LIMIT
    try:
        server = procs.start(
            "simulator",
            [sys.executable, "-c", SERVER, str(log), f"stability:requests={limit}/{window:g}s",
             "latency@stability:seconds=0.6"],
            base_env,
        )  # fmt: skip
        env = dict(base_env)
        assert server.stdout is not None
        for raw in server.stdout:
            text = raw.decode().strip()
            if text.startswith("export "):
                key, _, value = text[len("export ") :].partition("=")
                env[key] = value
            if text == "# ready":
                break
        db = ["--db", pg_url, "--out", str(shared)]
        worker_args = [EXE, "worker", *db, "--limits", WORKER_LIMITS, "--concurrency", "2"]
        worker_args += ["--dead-after", "2"]
        workers = [procs.start(f"worker{i}", worker_args, env) for i in range(3)]
        follow = [EXE, "batch", str(flow), "--inputs", str(inputs), "--engine", "dbos", *db]
        follow += ["--concurrency", "6", "--json"]
        follower = procs.start("follower", follow, env)

        manifest = shared / "batch.jsonl"
        wait_for(lambda: len(lines(manifest)) >= 2, "two finished items", timeout=90)
        # Kill a worker while it runs items (DBOS says which), and the follower with it.
        by_pid = {proc.pid: proc for proc in workers}
        busy = wait_for(lambda: _running(pg_url, by_pid), "a worker running items")
        victim_id, victim_items = busy
        victim = by_pid[int(victim_id.split("-")[-2])]
        victim.send_signal(signal.SIGKILL)
        killed_at = time.time()
        follower.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        follower.wait(timeout=10)
        assert len(lines(manifest)) < ITEMS, "the batch finished before the kill"

        again = procs.start("follower2", follow, env)  # stopping and restarting loses nothing
        out, _ = again.communicate(timeout=120)
        assert again.returncode == 0, (tmp_path / "follower2.log").read_text()[-3000:]
        summary = json.loads(out.decode().splitlines()[-1])
        for proc in (workers[0], workers[2]):
            proc.send_signal(signal.SIGTERM)
        for proc in (workers[0], workers[2]):
            proc.wait(timeout=30)
        counts = json.loads(
            subprocess.run(
                [sys.executable, "-c", "import httpx,sys; print(httpx.get(sys.argv[1]).text)",
                 env["STABILITY_BASE_URL"].split("/stability")[0] + "/_sim/counts"],
                capture_output=True, check=True, cwd=OUTSIDE,
            ).stdout
        )  # fmt: skip
    finally:
        procs.close()

    # Every item ok, exactly once.
    records = lines(manifest)
    ids = [r["id"] for r in records]
    assert sorted(ids) == [f"item{n:02d}" for n in range(ITEMS)], Counter(ids)
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    assert summary["ok"] == ITEMS and summary["failed"] == 0
    assert (shared / "batch.html").is_file()
    workers_seen = {r.get("worker") for r in records}
    assert len(workers_seen) >= 2
    recovered = [r for r in records if r["id"] in victim_items]
    assert recovered and all(r["worker"] != victim_id for r in recovered)

    # The combined rate the provider saw stayed within its limit: no 429, no window over it.
    requests = lines(log)
    stability = [e for e in requests if e["provider"] == "api.stability.ai"]
    assert counts["rate_limited"].get("stability", 0) == 0
    peak = max_in_window([e["start"] for e in stability], window)
    assert peak <= limit

    # Per item: each provider paid once, except calls in flight at the kill. A call the server
    # had answered (well) before the kill was a completed node: never paid again.
    per: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in requests:
        per[(entry["item"], entry["provider"])].append(entry)
    repeated = completed_repeated = 0
    for (item, provider), calls in per.items():
        assert item is not None, f"a {provider} call without an item tag"
        calls.sort(key=lambda e: e["start"])
        for earlier in calls[:-1]:
            repeated += 1
            if earlier["end"] < killed_at - 0.5:
                completed_repeated += 1
    assert completed_repeated == 0
    assert repeated <= 2 * 2  # at most the killed worker's in-flight items, both providers
    assert len(stability) == ITEMS + sum(
        len(c) - 1 for (_, p), c in per.items() if p == "api.stability.ai"
    )
    print(
        f"\nDBOS three-worker batch: {len(records)} items ok exactly once "
        f"(workers {len(workers_seen)}, {len(recovered)} recovered from the killed one); "
        f"stability peak {peak} requests in {window:g}s against the server's limit {limit} "
        f"({counts['rate_limited'].get('stability', 0)} 429s); calls repeated after the kill: "
        f"{repeated} (completed ones: {completed_repeated})"
    )


# -- one machine: DBOS on SQLite -------------------------------------------------------------------
def test_sqlite_single_machine_same_commands(tmp_path: Path) -> None:
    inputs = tmp_path / "items.jsonl"
    inputs.write_text(
        "".join(json.dumps({"id": f"s{n}", "text": f"picture {n}"}) + "\n" for n in range(4))
    )
    out = tmp_path / "out"
    procs = Procs(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        worker = procs.start(
            "worker", [EXE, "worker", "--out", str(out), "--simulate", "--concurrency", "2"], env
        )
        follow = [EXE, "batch", "illustrate", "--inputs", str(inputs), "--engine", "dbos"]
        follower = procs.start("follower", [*follow, "--out", str(out), "--json"], env)
        stdout, _ = follower.communicate(timeout=120)
        assert follower.returncode == 0, (tmp_path / "follower.log").read_text()[-3000:]
        events = [json.loads(t) for t in stdout.decode().splitlines()]
        # Following again (a restart) finds everything finished and appends nothing.
        second = procs.start("follower2", [*follow, "--out", str(out), "--json"], env)
        stdout2, _ = second.communicate(timeout=120)
        assert second.returncode == 0
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        assert worker.returncode == 0
    finally:
        procs.close()
    summary = events[-1]
    assert summary["event"] == "summary" and summary["ok"] == 4 and summary["ran"] == 4
    records = lines(out / "batch.jsonl")
    assert sorted(r["id"] for r in records) == ["s0", "s1", "s2", "s3"]
    assert all(r["status"] == "ok" and (out / r["outputs"]["image"]).is_file() for r in records)
    assert json.loads(stdout2.decode().splitlines()[-1])["skipped"] == 4
    assert (out / "dbos.sqlite").is_file() and (out / "batch.html").is_file()
    assert re.search(r"s0", (out / "batch.html").read_text())


def test_dbos_engine_refuses_options_that_belong_to_workers(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from calliope_graph.cli import main

    args = ["batch", "illustrate", "--inputs", str(tmp_path / "x.jsonl"), "--out", str(tmp_path)]
    result = CliRunner().invoke(main, [*args, "--engine", "dbos", "--simulate"])
    assert result.exit_code == 2 and "calliope-graph worker" in result.output
    result = CliRunner().invoke(main, [*args, "--db", "postgresql://x"])
    assert result.exit_code == 2 and "--engine dbos" in result.output


# -- dead workers: slots, certain death, nothing stranded (issue 22 item 6) ----------------------
def _tagged_items(tmp_path: Path, count: int) -> tuple[Path, Path]:
    flow = tmp_path / "tagged_story.yaml"
    flow.write_text(FLOW)
    inputs = tmp_path / "items.jsonl"
    inputs.write_text(
        "".join(
            json.dumps({"id": f"item{n:02d}", "text": f"tag-item{n:02d} a small scene"}) + "\n"
            for n in range(count)
        )
    )
    return flow, inputs


def _sqlite_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    import sqlite3

    if not path.is_file():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        return list(conn.execute(query).fetchall())
    except sqlite3.OperationalError:  # the tables are not there yet
        return []
    finally:
        conn.close()


def _owners(rows: list[tuple[Any, ...]]) -> dict[str, set[str]]:
    """executor → the items it runs (PENDING workflows)."""
    owners: dict[str, set[str]] = defaultdict(set)
    for executor, workflow in rows:
        owners[str(executor)].add(str(workflow).rpartition("-")[2])
    return owners


def _pid(executor: str) -> int:
    return int(executor.split("-")[-2])


PENDING_SQL = "SELECT executor_id, workflow_uuid FROM workflow_status WHERE status = 'PENDING'"
#: Longer than any test waits: a worker these tests kill is never found dead by its heartbeat's
#: age, only by its lock (certain death).
NEVER = "600"


def test_killed_sqlite_worker_frees_its_queue_slots_at_once(tmp_path: Path) -> None:
    """A worker killed while it holds the slots of the queue's global concurrency: the other
    worker takes its items over at once (its lock is gone), not after --dead-after."""
    flow, inputs = _tagged_items(tmp_path, 8)
    out = tmp_path / "out"
    procs = Procs(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = [EXE, "worker", "--out", str(out), "--simulate", "--concurrency", "4"]
    worker += ["--faults", "latency@stability:seconds=4", "--dead-after", NEVER]
    follow = [EXE, "batch", str(flow), "--inputs", str(inputs), "--engine", "dbos"]
    follow += ["--out", str(out), "--concurrency", "4", "--json"]
    dbos_file, shared = out / "dbos.sqlite", out / "dbos.shared.sqlite"
    try:
        workers = {p.pid: p for p in (procs.start(f"w{i}", worker, env) for i in range(2))}
        wait_for(
            lambda: len(_sqlite_rows(shared, "SELECT executor_id FROM calliope_workers")) == 2,
            "two heartbeats", timeout=120,
        )  # fmt: skip
        started = time.monotonic()
        follower = procs.start("follower", follow, env)
        held = wait_for(
            lambda: _owners(_sqlite_rows(dbos_file, PENDING_SQL)), "items running", timeout=120
        )
        victim_id, _ = max(held.items(), key=lambda kv: len(kv[1]))
        workers[_pid(victim_id)].send_signal(signal.SIGKILL)
        workers[_pid(victim_id)].wait(timeout=10)
        killed = time.monotonic()
        still = _owners(_sqlite_rows(dbos_file, PENDING_SQL)).get(victim_id, set())
        assert still, "the worker finished its items before the kill"

        def taken_over() -> bool:
            owners = _owners(_sqlite_rows(dbos_file, PENDING_SQL))
            return victim_id not in owners and bool(owners)

        wait_for(taken_over, "the killed worker's slots taken by the other", timeout=60)
        handed_back = time.monotonic() - killed
        stdout, _ = follower.communicate(timeout=120)
        wall = time.monotonic() - started
        assert follower.returncode == 0, (tmp_path / "follower.log").read_text()[-3000:]
        for pid, proc in workers.items():
            if pid != _pid(victim_id):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    finally:
        procs.close()
    records = lines(out / "batch.jsonl")
    assert sorted(r["id"] for r in records) == [f"item{n:02d}" for n in range(8)]
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    assert all(r["worker"] != victim_id for r in records if r["id"] in still)
    assert json.loads(stdout.decode().splitlines()[-1])["ok"] == 8
    print(
        f"\nSQLite, a worker killed holding {len(still)} of the 4 slots: its items running again "
        f"on the other worker {handed_back:.1f} s after the kill; batch of 8 in {wall:.1f} s"
    )


def _pg_rows(url: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        try:
            return list(conn.execute(query).fetchall())
        except psycopg.errors.UndefinedTable:
            return []


def test_a_paused_worker_on_postgres_is_not_taken_for_dead_no_item_runs_twice(
    pg_url: str, tmp_path: Path
) -> None:
    """A worker whose heartbeat is late (SIGSTOP stands for a loaded machine) while it runs
    items keeps them: its life lock is held, so the other worker does not hand them to the
    queue (which ran them twice: the second run met the first's thread lock and failed, and the
    restarted follower exited 1)."""
    import psycopg

    db_name = "paused"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db_name}")
    url = pg_url.rpartition("/")[0] + f"/{db_name}"
    flow, inputs = _tagged_items(tmp_path, 6)
    out = tmp_path / "out"
    procs = Procs(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    db = ["--db", url, "--out", str(out)]
    worker = [EXE, "worker", *db, "--simulate", "--concurrency", "2", "--dead-after", "2"]
    worker += ["--faults", "latency@stability:seconds=1.5"]
    follow = [EXE, "batch", str(flow), "--inputs", str(inputs), "--engine", "dbos", *db]
    follow += ["--concurrency", "4", "--json"]
    beats = "SELECT executor_id, beat FROM calliope_workers"
    pending = PENDING_SQL.replace("workflow_status", "dbos.workflow_status")
    try:
        workers = {p.pid: p for p in (procs.start(f"w{i}", worker, env) for i in range(2))}
        follower = procs.start("follower", follow, env)
        wait_for(lambda: len(_pg_rows(url, beats)) == 2, "two heartbeats", timeout=120)
        paused = None
        for _ in range(5):  # pause a worker that runs items, not inside a heartbeat transaction
            owners = wait_for(
                lambda: _owners(_pg_rows(url, pending)), "a worker running items", timeout=120
            )
            paused_id, paused_items = next(iter(owners.items()))
            workers[_pid(paused_id)].send_signal(signal.SIGSTOP)
            before = dict(_pg_rows(url, beats))
            paused_beat = float(before[paused_id])
            survivor_id = next(e for e in before if e != paused_id)
            target = paused_beat + 2 + 1.5  # --dead-after, then a beat and its sweep after that

            def swept(survivor: str = survivor_id, when: float = target) -> bool:
                return float(dict(_pg_rows(url, beats)).get(survivor, 0.0)) >= when

            with contextlib.suppress(AssertionError):
                wait_for(swept, "the other worker's sweep after the pause", timeout=30)
                paused = paused_id
                break
            workers[_pid(paused_id)].send_signal(signal.SIGCONT)
        assert paused is not None, "the other worker never beat while one was paused"
        after = _owners(_pg_rows(url, pending))
        workers[_pid(paused)].send_signal(signal.SIGCONT)
        assert paused_items <= after.get(paused, set()), (paused_items, after)
        follower.communicate(timeout=180)
        assert follower.returncode == 0, (tmp_path / "follower.log").read_text()[-3000:]
        for proc in workers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        procs.close()
    records = lines(out / "batch.jsonl")
    assert sorted(r["id"] for r in records) == [f"item{n:02d}" for n in range(6)]
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    assert {r["worker"] for r in records if r["id"] in paused_items} == {paused}


#: Each victim worker is stopped at one moment of its life: (signal, seconds after it first holds
#: items; None: at once, before it has started).
MOMENTS: list[tuple[signal.Signals, float | None]] = [
    (signal.SIGKILL, None),
    (signal.SIGKILL, 0.0),
    (signal.SIGTERM, 0.0),
    (signal.SIGKILL, 0.7),
    (signal.SIGTERM, 1.2),
    (signal.SIGKILL, 1.6),
]


def test_workers_stopped_or_killed_at_any_moment_leave_no_item_stranded(tmp_path: Path) -> None:
    """Workers one after another, each stopped (SIGTERM) or killed (SIGKILL) at another moment
    of its life — before it starts, as it takes items, in the middle of them, as they finish —
    then one that lives: every item ends ok, exactly once. A clean stop with items running left
    them PENDING under an executor nobody would recover (it had left the heartbeat table)."""
    flow, inputs = _tagged_items(tmp_path, 10)
    out = tmp_path / "out"
    procs = Procs(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = [EXE, "worker", "--out", str(out), "--simulate", "--concurrency", "2"]
    worker += ["--faults", "latency@stability:seconds=1.5", "--dead-after", NEVER]
    follow = [EXE, "batch", str(flow), "--inputs", str(inputs), "--engine", "dbos"]
    follow += ["--out", str(out), "--concurrency", "4", "--json"]
    dbos_file = out / "dbos.sqlite"
    interrupted: list[set[str]] = []
    try:
        follower = procs.start("follower", follow, env)
        for n, (sig, after) in enumerate(MOMENTS):
            victim = procs.start(f"victim{n}", worker, env)
            if after is not None:
                mine = wait_for(
                    lambda p=victim.pid: next(
                        (i for e, i in _owners(_sqlite_rows(dbos_file, PENDING_SQL)).items()
                         if _pid(e) == p), None),
                    f"victim {n} holding items", timeout=120,
                )  # fmt: skip
                interrupted.append(mine)
                deadline = time.monotonic() + after
                while time.monotonic() < deadline:
                    time.sleep(0.05)
            victim.send_signal(sig)
            victim.wait(timeout=60)
        assert len(lines(out / "batch.jsonl")) < 10, "the batch finished before the last stop"
        survivor = procs.start("survivor", worker, env)
        stdout, _ = follower.communicate(timeout=180)
        assert follower.returncode == 0, (tmp_path / "follower.log").read_text()[-3000:]
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=30)
    finally:
        procs.close()
    records = lines(out / "batch.jsonl")
    assert sorted(r["id"] for r in records) == [f"item{n:02d}" for n in range(10)]
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    assert json.loads(stdout.decode().splitlines()[-1])["ok"] == 10
    print(f"\n{len(MOMENTS)} workers stopped or killed; items they held: {interrupted}")


def test_dbos_recovery_method_is_the_one_this_version_pins() -> None:
    """The recovery calls DBOS's private ``DBOS._recover_pending_workflows`` (see
    ``calliope_graph.batch._dbos.recover_pending_workflows`` for why): when a dbos upgrade
    changes it, this fails and says what to check, before any batch strands its items."""
    import inspect
    from importlib.metadata import version

    from dbos import DBOS
    from dbos._sys_db import SystemDatabase

    installed = version("dbos")
    assert installed.startswith("3.4."), (
        f"dbos {installed} is installed; calliope-graph pins dbos>=3.4,<3.5. Before widening the "
        "pin, check that DBOS._recover_pending_workflows(executor_ids) still re-enqueues only "
        "workflows PENDING under those executors, on their own queue (SystemDatabase."
        "reenqueue_for_recovery), or switch to a public recovery API if dbos now has one."
    )
    method = getattr(DBOS, "_recover_pending_workflows", None)
    assert method is not None, "DBOS._recover_pending_workflows is gone: see this test's docstring"
    assert list(inspect.signature(method).parameters) == ["executor_ids"]
    source = inspect.getsource(SystemDatabase.reenqueue_for_recovery)
    assert "executor_id.in_(executor_ids)" in source, "the dead-executor guard changed"
    assert "coalesce" in source and "queue_name" in source, "the re-enqueue leaves the queue"
