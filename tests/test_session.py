"""The session: one object owns what a process role shares, passed down, never a global.

Two flows in one process keep their own limits; the batch runner, the DBOS worker and the
server each take (or make) one session and hand it to every run; the options types are one
per concern (``BatchOptions`` and ``RunOptions`` share ``SessionOptions``; the worker and the
follower extend ``BatchOptions``).
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

from calliope_graph import limits as limits_module
from calliope_graph import session as session_module
from calliope_graph.batch import BatchOptions, FollowOptions, WorkerOptions, run_batch
from calliope_graph.flow import Flow
from calliope_graph.flow.run import FlowRunner, RunnerOptions, RunOptions
from calliope_graph.limits import Limits
from calliope_graph.session import Session, SessionOptions, default_session
from calliope_graph.simulate import Simulator

GRAPHS = Path(__file__).resolve().parents[1] / "graphs"


def _sim(clock: Any) -> Simulator:
    return Simulator(sleep=clock)


def _flow_with_catalog_limits(tmp_path: Path, name: str, limits: str) -> Flow:
    """``illustrate`` with a catalog of its own whose ``limits:`` section is ``limits``."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "catalog.yaml").write_text(f"limits:\n  {limits}\n", encoding="utf-8")
    text = (GRAPHS / "illustrate.yaml").read_text(encoding="utf-8")
    (folder / "flow.yaml").write_text(text + "catalog: catalog.yaml\n", encoding="utf-8")
    return Flow.load(folder / "flow.yaml")


def test_no_process_wide_limits_global_is_left() -> None:
    assert not hasattr(limits_module, "shared") and not hasattr(limits_module, "_shared")


async def test_two_sessions_in_one_process_keep_their_own_limits(
    tmp_path: Path, clock: Any
) -> None:
    slow = Session(simulator=_sim(clock), limits="stability:rpm=10")
    fast = Session(simulator=_sim(clock), limits="stability:rpm=600")
    flow = Flow.load("illustrate")
    await asyncio.gather(
        flow.ainvoke({"text": "a fox"}, out_dir=tmp_path / "slow", session=slow),
        flow.ainvoke({"text": "an owl"}, out_dir=tmp_path / "fast", session=fast),
    )
    assert slow.limits.spec("stability").rpm == 10
    assert fast.limits.spec("stability").rpm == 600
    # each run waited on its own session's limiter, and on no other
    assert slow.limits.stats()["stability"].calls == 1
    assert fast.limits.stats()["stability"].calls == 1
    assert session_module._default is None  # nobody needed (or wrote) the default session


async def test_two_flows_with_different_catalog_limits_each_keep_their_own(
    tmp_path: Path, clock: Any
) -> None:
    one = _flow_with_catalog_limits(tmp_path, "one", "stability: {rpm: 10}")
    two = _flow_with_catalog_limits(tmp_path, "two", "stability: {rpm: 20}")
    session = Session(simulator=_sim(clock), limits="stability:concurrency=3")
    runners = [
        FlowRunner(f.plan(), out_dir=tmp_path / f"out{i}", session=session)
        for i, f in enumerate((one, two))
    ]
    seen = [runner._context().limits for runner in runners]
    assert seen[0] is not seen[1]
    assert [lim.spec("stability").rpm for lim in seen] == [10, 20]
    # the session's own limits under each flow's, and unchanged by either
    assert [lim.spec("stability").concurrency for lim in seen] == [3, 3]
    assert session.limits.spec("stability").rpm is None
    # a flow with the same catalog limits shares the overlay (one budget)
    again = FlowRunner(one.plan(), out_dir=tmp_path / "again", session=session)
    assert again._context().limits is seen[0]
    await runners[0].ainvoke({"text": "a fox"})
    assert seen[0].stats()["stability"].calls == 1
    assert "stability" not in seen[1].stats()
    for runner in (*runners, again):
        await runner.aclose()


async def test_a_plain_invoke_uses_the_default_session_made_on_first_use(
    tmp_path: Path, clock: Any
) -> None:
    assert session_module._default is None
    flow = Flow.load("illustrate")
    await flow.ainvoke({"text": "a fox"}, out_dir=tmp_path, simulator=_sim(clock))
    made = session_module._default
    assert made is not None and made is default_session()
    assert made.limits.stats()["stability"].calls == 1  # keys=/simulator= share its limits
    assert made.simulator is None  # and the default session itself is not changed


async def test_a_batch_passes_its_session_to_every_item(tmp_path: Path, clock: Any) -> None:
    session = Session(simulator=_sim(clock), limits="stability:rpm=100")
    items = [{"id": f"i{n}", "text": f"picture {n}"} for n in range(3)]
    summary = await run_batch(
        Flow.load("illustrate"), items, tmp_path / "out", session=session, report=False
    )
    assert summary.ok == 3
    assert session.limits.stats()["stability"].calls == 3
    assert session_module._default is None


def test_the_cli_makes_one_session_per_command_and_writes_no_global(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from calliope_graph.cli import main

    made: list[Session] = []
    real = Session.__init__

    def init(self: Session, **kwargs: Any) -> None:
        real(self, **kwargs)
        made.append(self)

    monkeypatch.setattr(Session, "__init__", init)
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "text": "a fox"}\n', encoding="utf-8")
    args = ["batch", "illustrate", "--inputs", str(path), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [*args, "--simulate", "--limits", "stability:rpm=42"])
    assert result.exit_code == 0, result.output
    assert len(made) == 1
    assert made[0].limits.spec("stability").rpm == 42
    assert made[0].limits.stats()["stability"].calls == 1
    assert session_module._default is None


async def test_the_worker_runs_in_one_session_sharing_windows_through_the_database(
    tmp_path: Path, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calliope_graph.batch import _dbos
    from calliope_graph.batch._shared import SharedWindows

    class FakeDBOS:  # the queue itself is what test_dbos runs for real, in processes
        def __init__(self, config: Any) -> None:
            pass

        @staticmethod
        def launch() -> None:
            pass

        @staticmethod
        def destroy(workflow_completion_timeout_sec: int = 0) -> None:
            pass

    monkeypatch.setattr(_dbos, "DBOS", FakeDBOS)
    session = Session(simulator=_sim(clock), limits="stability:rpm=100")
    plan = Flow.load("illustrate").plan()
    seen: dict[str, Any] = {}
    stop = asyncio.Event()

    def echo(line: str) -> None:
        worker = _dbos._WORKER
        assert worker is not None
        ctx = worker.ctx_for(plan)
        seen["limits"] = ctx.limits
        seen["shared"] = session.limits._shared
        stop.set()

    await _dbos.run_worker(tmp_path / "out", session=session, stop=stop, echo=echo)
    assert seen["limits"] is session.limits  # every item's context: the worker's session
    assert isinstance(seen["shared"], SharedWindows)  # its windows: the batch database's
    assert session.limits._shared is None  # given back when the worker stopped
    assert session_module._default is None

    # Given no session, the worker makes one of its own (never the process default's).
    stop.clear()
    seen.clear()

    def echo_own(line: str) -> None:
        worker = _dbos._WORKER
        assert worker is not None
        seen["limits"] = worker.ctx_for(plan).limits
        stop.set()

    await _dbos.run_worker(tmp_path / "out", simulator=_sim(clock), stop=stop, echo=echo_own)
    assert isinstance(seen["limits"], Limits) and seen["limits"] is not session.limits
    assert session_module._default is None


async def test_the_server_makes_one_session_and_every_run_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calliope_graph.serve import ServeContext, ServeSettings, serve_graph

    monkeypatch.setenv("LANGGRAPH_API_URL", "http://127.0.0.1:9")
    settings = ServeSettings.from_env(
        {"CALLIOPE_MEDIA_ROOT": str(tmp_path), "CALLIOPE_SIMULATE": "1"}
    )
    assert isinstance(settings.session, Session)
    graph = serve_graph("illustrate", settings)
    config: Any = {"configurable": {"thread_id": "t-1"}}
    for text in ("a fox", "an owl"):
        await graph.ainvoke({"text": text}, config, context=ServeContext())
    assert settings.session.limits.stats()["stability"].calls == 2
    assert session_module._default is None
    await settings.session.aclose()


def test_options_types_are_one_per_concern() -> None:
    shared = _all(SessionOptions)
    assert shared == {"session", "keys", "simulator", "ctx", "media_store"}
    for options in (RunnerOptions, RunOptions, BatchOptions, WorkerOptions, FollowOptions):
        assert shared <= _all(options)  # TypedDict inheritance: declared once, in the base
    # a run's setup and a batch each add their own keys over the session's, and share none
    # but ``durability`` (when checkpoints are saved: a run's default "async", a batch's "exit")
    assert (_all(RunnerOptions) - shared) & (_all(BatchOptions) - shared) == {"durability"}
    assert _all(RunnerOptions) <= _all(RunOptions)
    # the worker and the follower take the batch's options, plus their own
    assert _all(BatchOptions) < _all(WorkerOptions)
    assert _all(BatchOptions) < _all(FollowOptions)
    from calliope_graph.batch import _dbos, _follow

    worker = inspect.signature(_dbos.run_worker).parameters["options"]
    follow = inspect.signature(_follow.follow_batch).parameters["options"]
    assert "Unpack[WorkerOptions]" in str(worker.annotation)
    assert "Unpack[FollowOptions]" in str(follow.annotation)


def _all(options: Any) -> set[str]:
    return set(options.__required_keys__ | options.__optional_keys__)
