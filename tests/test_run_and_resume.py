"""Running a flow: the compiled graph and how it is invoked, checkpoints on and off, and the
failure cases a new user hit (fallback cycles, resume mistakes, stale cache, traces, secrets
echoed, a stopped run)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from calliope_graph.cli import main
from calliope_graph.errors import (
    CalliopeError,
    ConfigurationError,
    FlowRunError,
    FlowSpecError,
)
from calliope_graph.flow import Flow, Trace
from calliope_graph.nodes import PromptTemplate, TextToImage, TextToText
from calliope_graph.simulate import Simulator, parse_faults

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# -- compiling and invoking --------------------------------------------------------------------


def test_a_port_named_like_a_node_option_is_wired_not_swallowed() -> None:
    flow = Flow("f")
    text = flow.input("text")
    node = flow.add(
        "t",
        PromptTemplate(template="{description} {model}"),
        {"description": text, "model": text},
        description="the node's own description",
    )
    spec = flow.spec.nodes["t"]
    assert spec.inputs == {"description": "inputs.text", "model": "inputs.text"}
    assert spec.description == "the node's own description" and spec.model is None
    assert node["text"] == "t.text"


def test_compile_returns_langgraph_compiled_graph() -> None:
    from langgraph.graph.state import CompiledStateGraph

    graph = Flow.load("illustrate").compile()
    assert isinstance(graph, CompiledStateGraph)


async def test_invoke_inside_a_running_loop_says_to_await_ainvoke(tmp_path: Path) -> None:
    flow = Flow.load("illustrate")
    with pytest.raises(CalliopeError, match=r"await flow\.ainvoke"):
        flow.invoke({"text": "x"}, out_dir=tmp_path, simulator=Simulator())
    with pytest.raises(CalliopeError, match=r"astream"):
        next(iter(flow.stream({"text": "x"}, out_dir=tmp_path, simulator=Simulator())))


def test_checkpointer_false_means_no_checkpoint_file(tmp_path: Path) -> None:
    result = Flow.load("illustrate").invoke(
        {"text": "x"}, out_dir=tmp_path, simulator=Simulator(), checkpointer=False
    )
    assert result.outputs["image"] and not (tmp_path / "checkpoints.sqlite").exists()


def test_scene_lives_beside_its_flow_not_in_the_serializer() -> None:
    import calliope_graph.nodes as nodes
    from calliope_graph.flow.run import checkpoint_serializer
    from calliope_graph.graphs.scene import Scene

    assert not hasattr(nodes, "Scene")
    plan = Flow.load("structured_scene").plan()
    allowed = checkpoint_serializer(plan)
    assert Scene in allowed._allowed_msgpack_modules or any(
        m == (Scene.__module__, Scene.__name__) for m in allowed._allowed_msgpack_modules
    )
    other = checkpoint_serializer(Flow.load("illustrate").plan())
    assert not any("Scene" in str(m) for m in other._allowed_msgpack_modules)


# -- fallback cycles ---------------------------------------------------------------------------


def cyclic() -> Flow:
    flow = Flow("cyclic")
    text = flow.input("text")
    a = flow.add("a", TextToText("openai-gpt-4o"), {"text": text})
    b = flow.add("b", TextToText("openai-gpt-4o"), {"text": text})
    flow.fallback(a, to=b)
    flow.fallback(b, to=a)
    flow.output("text", a["text"])
    return flow


def test_a_fallback_cycle_is_a_spec_error_naming_both_nodes(tmp_path: Path) -> None:
    with pytest.raises(FlowSpecError, match=r"'a' and 'b' fall back to each other"):
        cyclic().validate()
    path = tmp_path / "cyclic.yaml"
    path.write_text(cyclic().to_yaml())
    result = cli("validate", str(path))
    assert result.exit_code == 3 and "'a' and 'b'" in result.output
    result = cli("run", str(path), "--simulate", "--input", "text=x", "--out", str(tmp_path))
    assert result.exit_code == 3


# -- resuming the wrong thread -----------------------------------------------------------------


def failed_illustrate(out: Path) -> str:
    down = Simulator(faults=parse_faults("auth@stability;auth@openai"))
    with pytest.raises(FlowRunError) as info:
        Flow.load("illustrate").invoke({"text": "a fox"}, out_dir=out, simulator=down)
    assert info.value.thread_id
    return info.value.thread_id


def test_resume_of_an_unknown_thread_lists_the_known_ones_and_touches_nothing(
    tmp_path: Path,
) -> None:
    thread = failed_illustrate(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}
    sim = Simulator()
    result = cli(
        "run", "illustrate", "--simulate", "--out", str(tmp_path), "--resume", "nosuchthread"
    )
    assert result.exit_code == 4, result.output
    assert "'nosuchthread'" in result.output and "not in the checkpoint store" in result.output
    assert thread in result.output and "illustrate" in result.output
    assert "EmptyInputError" not in result.output and "None" not in result.output
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k in before} == before  # trace, report kept
    assert sim.count("openai") == 0


def test_resume_with_a_thread_of_another_flow_is_refused(tmp_path: Path) -> None:
    thread = failed_illustrate(tmp_path)
    sim = Simulator()
    with pytest.raises(ConfigurationError, match=r"run of flow 'illustrate', not 'webcam_story'"):
        Flow.load("webcam_story").invoke(
            None, out_dir=tmp_path, simulator=sim, thread_id=thread, resume=True
        )
    assert sim.count("openai") == 0 and sim.count("azure_vision") == 0


# -- a cache hit whose media was deleted -------------------------------------------------------


def test_a_cache_hit_whose_image_was_deleted_runs_the_node_again(tmp_path: Path) -> None:
    flow = Flow.load("illustrate")
    first = Simulator()
    result = flow.invoke({"text": "a fox"}, out_dir=tmp_path, simulator=first, cache=True)
    image = Path(result.outputs["image"].path)
    assert first.count("stability") == 1
    again = Simulator()
    hit = flow.invoke({"text": "a fox"}, out_dir=tmp_path, simulator=again, cache=True)
    assert again.count("stability") == 0 and hit.trace.executions[0].cache_hit
    image.unlink()
    third = Simulator()
    rerun = flow.invoke({"text": "a fox"}, out_dir=tmp_path, simulator=third, cache=True)
    assert third.count("stability") == 1
    assert Path(rerun.outputs["image"].path).is_file()


def test_a_cache_hit_raises_no_unregistered_type_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = Flow.load("illustrate")
    for _ in range(2):
        flow.invoke({"text": "a fox"}, out_dir=tmp_path, simulator=Simulator(), cache=True)
    assert "unregistered type" not in caplog.text.lower()


# -- traces, checkpoints, secrets, stopping ----------------------------------------------------


def test_output_name_is_checked_before_anything_runs() -> None:
    for bad, why in [
        ("/tmp/owned.png", "absolute path"),
        ("../up.png", "no '..'"),
        ("trace.json", "files calliope-graph keeps"),
        ("checkpoints.sqlite", "files calliope-graph keeps"),
    ]:
        flow = Flow("f")
        text = flow.input("text")
        image = flow.add(
            "image", TextToImage("stability-core"), {"prompt": text}, params={"output_name": bad}
        )
        flow.output("image", image["image"])
        with pytest.raises(FlowSpecError, match=why) as info:
            flow.validate()
        assert "'image'" in str(info.value) and "output_name" in str(info.value)


def test_the_thread_id_is_printed_when_the_run_starts(tmp_path: Path) -> None:
    result = cli(
        "run", "illustrate", "--simulate", "--input", "text=x", "--out", str(tmp_path),
        "--faults", "auth@stability;auth@openai",
    )  # fmt: skip
    assert result.exit_code == 1
    first_line = result.output.splitlines()[0]
    trace = Trace.load(tmp_path / "trace.json")
    assert first_line.startswith("running illustrate") and trace.thread_id in first_line


def test_a_resumed_trace_has_no_stale_running_execution_nor_cache_hits(tmp_path: Path) -> None:
    thread = failed_illustrate(tmp_path)
    stale = Trace.load(tmp_path / "trace.json")
    stale.executions[0].status = "running"  # as a killed run leaves it
    stale.save(tmp_path / "trace.json")
    result = Flow.load("illustrate").invoke(
        None, out_dir=tmp_path, simulator=Simulator(), thread_id=thread, resume=True
    )
    statuses = [e.status for e in result.trace.executions]
    assert "running" not in statuses and "cache_hit" not in statuses
    path = result.trace.path()
    assert len(path) == len(set(path))


def test_relative_input_paths_are_checkpointed_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cam.jpg").write_bytes(WEBCAM.read_bytes())
    monkeypatch.chdir(tmp_path / "in")
    down = Simulator(faults=parse_faults("auth@stability;auth@openai:endpoint=images"))
    with pytest.raises(FlowRunError) as info:
        Flow.load("webcam_story").invoke(
            {"image": "cam.jpg"}, out_dir=tmp_path / "out", simulator=down
        )
    monkeypatch.chdir(tmp_path)  # resume from elsewhere
    result = Flow.load("webcam_story").invoke(
        None,
        out_dir=tmp_path / "out",
        simulator=Simulator(),
        thread_id=info.value.thread_id,
        resume=True,
    )
    assert Path(result.outputs["image"].path).is_file()


def test_a_secret_echoed_in_an_answer_is_redacted_everywhere(tmp_path: Path) -> None:
    sim = Simulator()
    secret = sim.keys().openai_api_key
    assert secret is not None
    key = secret.get_secret_value()

    async def echo(request: httpx.Request) -> httpx.Response:
        response = await sim.handle(request)
        if request.url.path.endswith("/chat/completions"):
            await response.aread()
            body = json.loads(response.content)
            body["choices"][0]["message"]["content"] = f"the key is {key}"
            return httpx.Response(200, json=body, headers={"content-type": "application/json"})
        return response

    from calliope_graph.context import RunContext

    ctx = RunContext.create(tmp_path, keys=sim.keys(), transport=httpx.MockTransport(echo))
    flow = Flow("echo")
    text = flow.input("text")
    story = flow.add("story", TextToText("openai-gpt-4o"), {"text": text})
    flow.output("story", story["text"])
    result = asyncio.run(flow.ainvoke({"text": "x"}, out_dir=tmp_path, ctx=ctx, cache=True))
    assert key not in result.outputs["story"] and "the key is" in result.outputs["story"]
    for path in tmp_path.iterdir():
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path.name


async def test_stopping_a_run_marks_the_running_node_interrupted_not_timed_out(
    tmp_path: Path,
) -> None:
    flow = Flow("slow")
    text = flow.input("text")
    story = flow.add("story", TextToText("openai-gpt-4o"), {"text": text})
    flow.output("story", story["text"])
    started = asyncio.Event()
    sim = Simulator(latency={"openai": 60.0})  # never answers before the run is stopped
    task = asyncio.create_task(
        flow.ainvoke(
            {"text": "x"},
            out_dir=tmp_path,
            simulator=sim,
            on_event=lambda e: started.set() if e.kind == "started" else None,
        )
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    execution = Trace.load(tmp_path / "trace.json").executions[0]
    assert execution.status == "interrupted" and execution.error_class != "timeout"


async def test_nothing_rewrites_the_trace_after_the_run_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trace.json is rewritten, throttled, as nodes finish; a rewrite still scheduled when
    the run ends is dropped (it used to fire after ``ainvoke`` returned, writing into a folder
    the caller may already be reusing, moving or deleting)."""
    from calliope_graph._files import Throttled
    from calliope_graph.flow import _runtime

    throttles: list[Throttled] = []

    class Spy(Throttled):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            throttles.append(self)

    monkeypatch.setattr(_runtime, "Throttled", Spy)
    flow = Flow("two")
    text = flow.input("text")
    story = flow.add("story", TextToText("openai-gpt-4o"), {"text": text})
    image = flow.add("image", TextToImage("stability-core"), {"prompt": story["text"]})
    flow.output("image", image["image"])
    await flow.ainvoke({"text": "x"}, out_dir=tmp_path, simulator=Simulator())
    assert throttles and not any(t.pending for t in throttles)
    assert Trace.load(tmp_path / "trace.json").status == "ok"


async def test_trace_rows_beside_the_checkpoints_wait_until_after_the_finishing_node() -> None:
    """The row of a finished node is written a moment later (``AFTER_NODE_DELAY``), not in the
    node's own step, where LangGraph's next step would wait for the commit; rows finished
    meanwhile share one write, and closing the log writes what is still pending at once."""
    from calliope_graph.flow._checkpoints import TraceLog
    from calliope_graph.flow.trace import NodeExecution

    writes: list[list[int]] = []
    written = asyncio.Event()

    class Backend:
        async def put(self, thread: str, rows: list[Any], *, clear: bool = False) -> None:
            writes.append([n for _, n, _ in rows])
            written.set()

        async def load(self, thread: str) -> list[Any]:
            return []

        async def delete(self, thread: str) -> None:
            return None

    def done(node: str) -> NodeExecution:
        return NodeExecution(node=node, kind="text_to_text", started_at=0.0, status="ok")

    log = TraceLog(Backend(), "thread-1")
    log.record(done("a"))
    for _ in range(3):  # the loop turns (LangGraph's next step): nothing written yet
        await asyncio.sleep(0)
    assert writes == []
    log.record(done("b"))
    await asyncio.wait_for(written.wait(), 10)
    assert writes == [[1, 2]]
    log.record(done("c"))
    await log.aclose()
    assert writes == [[1, 2], [3]]
