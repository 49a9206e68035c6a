"""A full disk in a DBOS batch (``batch --engine dbos`` and a ``worker``, DBOS on SQLite)
stops and resumes like a local batch (``test_full_disk_batch.py``): the item that found the
disk full gets no manifest line, no item starts after it, the follower ends with the one
clear error (exit 4) after its summary, and ``batch --resume`` pays for nothing again.

Real processes, as in ``test_dbos.py``: the worker runs through a small wrapper that injects
``ENOSPC`` at the atomic writer for one item's audio (the disk is full there) and logs every
request its simulator answers; the space is freed by starting a worker without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_dbos import EXE, Procs, lines
from test_full_disk_batch import ITEMS
from test_full_disk_media import speech_flow

pytest.importorskip("dbos", reason="dbos is missing: pip install 'calliope-graph[dbos]'")

#: The worker, with the disk full at one file (``FULL_AT``) and its simulator's requests
#: logged (``CALLS_LOG``).
WORKER = """\
import errno, json, os, sys
from calliope_graph import _files
import calliope_graph.simulate as simulate

full_at, log_path = os.environ.get("FULL_AT"), os.environ["CALLS_LOG"]
temp_path = _files._temp_path

def full(path):
    if full_at and str(path) == full_at:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return temp_path(path)

class Logged(simulate.Simulator):
    async def handle(self, request):
        response = await super().handle(request)
        with open(log_path, "a") as fh:
            fh.write(json.dumps([request.url.host, response.status_code]) + "\\n")
        return response

_files._temp_path = full
simulate.Simulator = Logged
from calliope_graph.cli import main
sys.argv[0] = "calliope-graph"
main()
"""


def test_full_disk_in_a_dbos_batch_exits_4_and_batch_resume_pays_nothing_again(
    tmp_path: Path,
) -> None:
    flow = speech_flow(tmp_path)
    rows = tmp_path / "items.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ITEMS), encoding="utf-8")
    out, calls = tmp_path / "out", tmp_path / "calls.jsonl"
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CALLS_LOG": str(calls)}
    worker = [sys.executable, str(script), "worker", "--out", str(out), "--simulate"]
    follow = [EXE, "batch", str(flow), "--inputs", str(rows), "--engine", "dbos"]
    follow += ["--out", str(out), "--concurrency", "1", "--json"]
    procs = Procs(tmp_path)
    try:
        full = {**env, "FULL_AT": str(out / "b" / "narration.wav")}
        first_worker = procs.start("worker1", [*worker, "--concurrency", "1"], full)
        first = procs.start("follower1", follow, env)
        stdout, _ = first.communicate(timeout=180)
        assert stop(first_worker) == 0, (tmp_path / "worker1.log").read_text()[-3000:]
        logged = (tmp_path / "follower1.log").read_text()
        assert first.returncode == 4, logged[-3000:]
        assert "Fix the cause" not in logged  # the item's own DiskFullError, as run alone
        summary = json.loads(stdout.decode().splitlines()[-1])  # the summary, then the error
        assert "is full" in logged and str(out / "b") in logged.replace("\n", "")
        assert "Traceback" not in logged
        assert [(r["id"], r["status"]) for r in lines(out / "batch.jsonl")] == [("a", "ok")]
        assert summary["event"] == "summary" and summary["ok"] == 1
        assert summary["not_started"] == 2  # b unfinished, c never started
        assert not (out / "c").exists()
        paid = requested(calls)
        assert paid == Counter({"api.openai.com": 2, "api.elevenlabs.io": 2}), paid

        second_worker = procs.start("worker2", [*worker, "--concurrency", "1"], env)
        second = procs.start("follower2", [*follow, "--resume"], env)
        stdout, _ = second.communicate(timeout=180)
        assert stop(second_worker) == 0
        assert second.returncode == 0, (tmp_path / "follower2.log").read_text()[-3000:]
    finally:
        procs.close()
    assert {r["id"]: r["status"] for r in lines(out / "batch.jsonl")} == {
        "a": "ok",
        "b": "ok",
        "c": "ok",
    }
    for item in "abc":
        assert (out / item / "narration.wav").read_bytes()[:4] == b"RIFF"
    # Over both runs every request once, as in a clean batch: b's audio was not paid again.
    assert requested(calls) == Counter({"api.openai.com": 3, "api.elevenlabs.io": 3})


def stop(worker: subprocess.Popen[bytes]) -> int:
    worker.send_signal(signal.SIGTERM)
    return worker.wait(timeout=60)


def requested(log: Path) -> Counter[Any]:
    if not log.is_file():
        return Counter()
    return Counter(json.loads(t)[0] for t in log.read_text().splitlines() if t.strip())
