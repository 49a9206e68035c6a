"""A run killed with SIGKILL at any moment re-pays, on resume, only the calls in flight.

A *zygote* subprocess imports calliope-graph once, then forks one child per run (a fork is
a real process: ``kill -9`` ends it with no cleanup, exactly like a crash, but costs
milliseconds instead of a Python start-up). Each child runs a small flow against the
simulator with injected latency — a fan (``a`` ∥ ``b``), a chain (``a → c``), a join and
a last provider node (``d``) — and writes one line per event to its stdout, unbuffered:
``call N`` when node N's provider request reaches the simulator (paid from that moment),
``started N``, ``finished N`` (after the node returned), ``replayed N`` (a resumed run took
N's outputs from the journal) and finally ``done {...}``.

Kill points come from the run's own progress, not from wall time: a child is told to *freeze*
right after writing its k-th line (its event loop stops dead there, so the kill lands at that
exact point), for every k of a clean run; and, at every ``finished`` line, the parent kills a
child that keeps running (the kill lands a moment later, racing LangGraph's background
checkpoint writes). Each killed run is resumed in another child, and the test checks exactly
what "re-pays only calls that were in flight" means: a node whose ``finished`` line was
written before the kill makes no provider call on resume; every other node's calls add up
to one clean run's; and the resumed story equals the clean run's.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
#: Seconds each node's provider call takes (a ∥ b, then c after a, then d after the join).
LATENCY = {"a": 0.03, "b": 0.09, "c": 0.03, "d": 0.03}
PROVIDER_NODES = tuple(LATENCY)
#: Longest a zygote may stay silent before the test gives up (a stuck child, not a timing).
SILENCE_LIMIT = 120.0


def _flow() -> Any:
    from calliope_graph.flow import Flow
    from calliope_graph.nodes import PromptTemplate, TextToText

    flow = Flow("durable")
    topic = flow.input("topic", "text")
    a = flow.add("a", TextToText("openai-gpt-4o-mini"), {"text": topic})
    b = flow.add("b", TextToText("openai-gpt-4o-mini"), {"text": topic})
    c = flow.add("c", TextToText("openai-gpt-4o-mini"), {"text": a["text"]})
    joined = flow.add(
        "joined", PromptTemplate(template="{x} / {y}"), {"x": b["text"], "y": c["text"]}
    )
    d = flow.add("d", TextToText("openai-gpt-4o-mini"), {"text": joined["text"]})
    flow.output("story", d["text"])
    return flow


# -- the subprocess side ------------------------------------------------------------------------
def _write(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write() per line: atomic on a pipe, no buffer


def _zygote() -> None:
    """Read jobs (JSON lines) on stdin; run each in a forked child; report its exit."""
    import tempfile

    flow = _flow()
    with tempfile.TemporaryDirectory() as warm:  # import everything once, before forking
        _child(flow, {"out": warm, "thread": "warm", "resume": False}, write=lambda line: None)
    _write("ready")
    while line := sys.stdin.readline():
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _child(flow, job)
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        _write(f"child {pid}")
        _, status = os.waitpid(pid, 0)
        _write(f"exit {pid} {status}")


def _child(flow: Any, job: dict[str, Any], *, write: Any = _write) -> None:
    import asyncio

    from langgraph.config import get_config

    from calliope_graph.simulate import Simulator

    freeze_at: int | None = job.get("freeze_at")
    written = 0

    def emit(line: str) -> None:
        nonlocal written
        write(line)
        written += 1
        if written == freeze_at:
            while True:  # stop dead right here; the parent kills this process
                signal.pause()

    def latency(provider: str, endpoint: str, request: Any) -> float:
        node = get_config()["metadata"]["langgraph_node"]
        emit(f"call {node}")
        return LATENCY[node]

    def on_event(event: Any) -> None:
        if event.kind == "started":
            emit(f"started {event.node}")
        elif event.kind == "finished":
            emit(f"{'replayed' if event.execution.resumed else 'finished'} {event.node}")

    async def main() -> None:
        simulator = Simulator(latency=latency)
        runner = flow.runner(out_dir=job["out"], simulator=simulator)
        try:
            result = await runner.ainvoke(
                None if job["resume"] else {"topic": "a lighthouse keeper's cat"},
                thread_id=job["thread"],
                resume=job["resume"],
                on_event=on_event,
            )
        finally:
            await runner.aclose()
        emit("done " + json.dumps({"story": result.outputs.get("story")}))

    asyncio.run(main())


# -- the test side ---------------------------------------------------------------------------------
class Zygote:
    """The parent's handle on the zygote subprocess."""

    def __init__(self) -> None:
        code = (
            f"import sys; sys.path.insert(0, {str(HERE)!r}); "
            "import test_durability; test_durability._zygote()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=HERE,  # not the repo root, whose calliope_graph/ lacks the mapped packages
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin
        self._fd = self.proc.stdout.fileno()
        self._buffer = b""
        assert self._line() == "ready"

    def _line(self) -> str:
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._fd], [], [], SILENCE_LIMIT)
            assert ready, "the zygote went silent"
            chunk = os.read(self._fd, 65536)
            assert chunk, f"the zygote exited ({self.proc.wait()})"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def run(
        self,
        out: Path,
        *,
        resume: bool = False,
        freeze_at: int | None = None,
        kill_at: int | None = None,
    ) -> tuple[list[str], bool]:
        """One run in a fresh child: its lines, and whether it was killed.

        ``freeze_at``: the child stops dead after its k-th line and is killed there.
        ``kill_at``: the child is killed as soon as its k-th line is read (it runs on).
        """
        job = {"out": str(out), "thread": "t1", "resume": resume, "freeze_at": freeze_at}
        self._in.write((json.dumps(job) + "\n").encode())
        self._in.flush()
        lines: list[str] = []
        pid: int | None = None
        trigger = freeze_at or kill_at
        killed = False
        while True:
            line = self._line()
            if line.startswith("child "):
                pid = int(line.split()[1])
            elif line.startswith("exit "):
                status = int(line.split()[2])
                if killed:
                    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                else:
                    assert status == 0, f"the run failed: {lines}"
                return lines, killed
            else:
                lines.append(line)
            if not killed and pid is not None and trigger and len(lines) >= trigger:
                os.kill(pid, signal.SIGKILL)
                killed = True

    def close(self) -> None:
        self._in.close()
        self.proc.wait(timeout=60)


def _calls(lines: list[str]) -> Counter[str]:
    return Counter(line.split()[1] for line in lines if line.startswith("call "))


def _done(lines: list[str]) -> dict[str, Any]:
    assert lines and lines[-1].startswith("done "), lines
    result: dict[str, Any] = json.loads(lines[-1][len("done ") :])
    return result


def test_a_killed_run_repays_only_the_calls_in_flight(tmp_path: Path) -> None:
    zygote = Zygote()
    try:
        clean_lines, _ = zygote.run(tmp_path / "clean")
        clean = _calls(clean_lines)
        assert clean == Counter(dict.fromkeys(PROVIDER_NODES, 1))
        story = _done(clean_lines)["story"]
        assert story

        points = [("freeze", k) for k in range(1, len(clean_lines))]
        points += [
            ("kill", k)
            for k, line in enumerate(clean_lines, 1)
            if line.startswith("finished ") and k < len(clean_lines)
        ]
        replayed_total = 0
        for how, k in points:
            out = tmp_path / f"{how}-{k}"
            freeze = how == "freeze"
            killed_lines, killed = zygote.run(
                out, freeze_at=k if freeze else None, kill_at=None if freeze else k
            )
            if not killed:  # the run finished before the kill landed: nothing to resume
                assert _done(killed_lines)["story"] == story
                continue
            resumed_lines, _ = zygote.run(out, resume=True)
            where = f"killed at line {k} ({how}) after {killed_lines}; resumed: {resumed_lines}"
            finished = {line.split()[1] for line in killed_lines if line.startswith("finished ")}
            paid_before, paid_after = _calls(killed_lines), _calls(resumed_lines)
            repaid = {node for node in paid_after if paid_before[node]}
            # The promise: a node that had finished is never paid for again ...
            assert not (set(paid_after) & finished), where
            # ... so only calls in flight at the kill (a call made, its node not finished)
            # are made twice, and every other call is made exactly once overall.
            for node in PROVIDER_NODES:
                if node in repaid:
                    assert node not in finished and paid_after[node] == clean[node], where
                else:
                    assert paid_before[node] + paid_after[node] == clean[node], where
            assert _done(resumed_lines)["story"] == story, where
            replayed_total += sum(line.startswith("replayed ") for line in resumed_lines)
        # The kills did land after nodes finished and before LangGraph had saved them.
        assert replayed_total > 0
    finally:
        zygote.close()


def test_the_journal_is_emptied_when_a_run_completes(tmp_path: Path) -> None:
    """A completed run's checkpoint holds everything: its journal entries are dropped."""
    import sqlite3

    from calliope_graph.simulate import Simulator

    async def instant(seconds: float) -> None:
        return None

    flow = _flow()
    result = flow.invoke({"topic": "owls"}, out_dir=tmp_path, simulator=Simulator(sleep=instant))
    assert result.outputs["story"]
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        assert db.execute("select count(*) from outputs").fetchone() == (0,)


def test_a_failed_run_keeps_its_journal_without_secrets_and_resumes(tmp_path: Path) -> None:
    from calliope_graph.errors import FlowRunError
    from calliope_graph.simulate import Fault, Simulator

    async def instant(seconds: float) -> None:
        return None

    flow = _flow()
    refusing = Simulator(
        sleep=instant, faults=[Fault(kind="content_policy", provider="openai", pattern=" / ")]
    )
    with pytest.raises(FlowRunError) as info:
        flow.invoke({"topic": "owls"}, out_dir=tmp_path, simulator=refusing, thread_id="t9")
    assert info.value.node == "d"
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite*"))
    assert stored  # a, b and c were journaled as they finished
    for secret in refusing.keys().secrets():
        assert secret.encode() not in stored
    fixed = Simulator(sleep=instant)
    result = flow.invoke(None, out_dir=tmp_path, simulator=fixed, thread_id="t9", resume=True)
    assert result.outputs["story"] and fixed.count() == 1  # only d


def test_resuming_a_thread_that_never_ran_says_so(tmp_path: Path) -> None:
    from calliope_graph.errors import ConfigurationError
    from calliope_graph.simulate import Simulator

    sim = Simulator()
    with pytest.raises(ConfigurationError, match="Cannot resume thread 'nope': it is not in"):
        _flow().invoke(None, out_dir=tmp_path, simulator=sim, thread_id="nope", resume=True)
    assert sim.count() == 0


def test_paid_outputs_are_on_disk_before_the_next_paid_call_and_before_the_run_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's flush (fdatasync of its WAL) runs beside the next steps, not between
    them: but no provider call starts while an earlier paid output is unflushed, and the run
    returns only once the last one is flushed."""
    import httpx

    from calliope_graph.flow._journal import Journal, JournalDB
    from calliope_graph.simulate import Simulator

    async def instant(seconds: float) -> None:
        return None

    log: list[str] = []
    put, sync = Journal.put, JournalDB.sync

    def logged_put(self: Journal, key: str, node: str, *args: Any, **kwargs: Any) -> None:
        log.append(f"commit {node}")
        put(self, key, node, *args, **kwargs)

    def logged_sync(self: JournalDB) -> None:
        sync(self)
        log.append("flushed")

    def latency(provider: str, endpoint: str, request: httpx.Request) -> float:
        log.append("call")
        return 0.0

    monkeypatch.setattr(Journal, "put", logged_put)
    monkeypatch.setattr(JournalDB, "sync", logged_sync)
    sim = Simulator(sleep=instant, latency=latency)
    result = _flow().invoke({"topic": "owls"}, out_dir=tmp_path, simulator=sim)
    log.append("returned")
    assert result.outputs["story"]
    assert log.count("call") == 4 and log.count("flushed") >= 4, log
    for i, entry in enumerate(log):
        if entry not in ("call", "returned"):
            continue
        commits = [j for j in range(i) if log[j].startswith("commit ")]
        if commits:  # the last paid output committed before this point is flushed by now
            assert "flushed" in log[commits[-1] : i], (i, log)
