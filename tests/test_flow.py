"""Flows: builder ≡ YAML, validation errors, compiled branches, running, resume and cache."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from _support import Rendezvous

from calliope_graph.errors import ConfigurationError, FlowRunError, FlowSpecError, MediaError
from calliope_graph.flow import Flow, FlowEvent, FlowResult, Trace, load_spec
from calliope_graph.nodes import (
    AnalyzeImage,
    CensorText,
    Frame,
    MergeAnalyses,
    Passthrough,
    PromptTemplate,
    TextToImage,
    TextToText,
)
from calliope_graph.simulate import Simulator, parse_faults

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"


def illustrate() -> Flow:
    flow = Flow("illustrate")
    text = flow.input("text", "text")
    image = flow.add("image", TextToImage("stability-core"), {"prompt": text})
    censor = flow.add("censor", CensorText("openai-gpt-4o-mini"))
    fallback = flow.add("fallback_image", TextToImage("openai-gpt-image-2"), {"prompt": text})
    flow.rewrite(image, via=censor, port="prompt", when=["content_policy"], max_attempts=2)
    flow.fallback(image, to=fallback, when=["any"])
    flow.output("image", image["image"])
    return flow


def sim(faults: str = "", **kwargs: Any) -> Simulator:
    simulator = Simulator(faults=parse_faults(faults), **kwargs)

    async def instant(seconds: float) -> None:
        return None

    simulator.sleep = instant
    return simulator


async def run(flow: Flow, inputs: dict[str, Any], out: Path, simulator: Simulator, **kw: Any):
    from calliope_graph.context import RetrySettings, RunContext

    ctx = RunContext.create(
        out,
        keys=simulator.keys(),
        transport=simulator.transport(),
        sleep=simulator.sleep,
        retry=RetrySettings(max_attempts=2, initial_wait=0.0, max_wait=0.0, jitter=0.0),
    )
    try:
        return await flow.ainvoke(inputs, out_dir=out, ctx=ctx, **kw)
    finally:
        await ctx.aclose()


# -- one description, two front doors -------------------------------------------------------------


def test_builder_and_yaml_produce_the_same_spec(tmp_path: Path) -> None:
    built = illustrate()
    path = tmp_path / "illustrate.yaml"
    path.write_text(built.to_yaml())
    loaded = Flow.load(path)
    assert loaded.spec.model_dump() == built.spec.model_dump()
    loaded.validate()


def test_handles_wire_ports() -> None:
    flow = Flow("f")
    text = flow.input("text")
    story = flow.add("story", TextToText("openai-gpt-4o"), {"text": text})
    assert story["text"] == story.text == "story.text"
    with pytest.raises(FlowSpecError, match="Wire a port"):
        flow.add("other", TextToText("openai-gpt-4o"), {"text": story})


# -- validation ------------------------------------------------------------------------------------

BASE = """\
name: t
inputs:
  text: {type: text}
  photo: {type: image}
nodes:
  story:
    kind: text_to_text
    model: openai-gpt-4o
    inputs: {text: inputs.text}
outputs:
  story: story.text
"""


def invalid(yaml_text: str, tmp_path: Path) -> FlowSpecError:
    path = tmp_path / "flow.yaml"
    path.write_text(yaml_text)
    with pytest.raises(FlowSpecError) as info:
        Flow.load(path).validate()
    return info.value


@pytest.mark.parametrize(
    ("change", "expected", "line"),
    [
        (("kind: text_to_text", "kind: text_to_txt"), "nknown node kind 'text_to_txt'", 7),
        (("model: openai-gpt-4o", "model: no-such-model"), "unknown model config", 8),
        (("model: openai-gpt-4o", "model: stability-core"), "cannot do", 8),
        (("{text: inputs.text}", "{text: inputs.txt}"), "flow input 'txt'", 9),
        (("{text: inputs.text}", "{text: nowhere.text}"), "no node 'nowhere'", 9),
        (("{text: inputs.text}", "{text: inputs.photo}"), "Type mismatch", 9),
        (("{text: inputs.text}", "{prompt: inputs.text}"), "no input port 'prompt'", 9),
        (("story: story.text", "story: story.image"), "has no output 'image'", 11),
        (("{text: inputs.text}", "{text: inputstext}"), "Malformed reference", 9),
    ],
)
def test_validation_errors_name_the_place(
    change: tuple[str, str], expected: str, line: int, tmp_path: Path
) -> None:
    error = invalid(BASE.replace(*change), tmp_path)
    assert expected in str(error)
    assert error.line == line, str(error)
    assert "flow.yaml, line" in str(error)


def test_required_input_left_unconnected(tmp_path: Path) -> None:
    error = invalid(BASE.replace("    inputs: {text: inputs.text}\n", ""), tmp_path)
    assert "required input 'text' is not connected" in str(error)


def test_unreachable_node(tmp_path: Path) -> None:
    extra = (
        "  orphan:\n    kind: text_to_text\n    model: openai-gpt-4o\n"
        "    inputs: {text: inputs.text}\n"
    )
    error = invalid(BASE.replace("outputs:", extra + "outputs:"), tmp_path)
    assert "'orphan' cannot be reached" in str(error)


def test_output_not_produced_on_every_path(tmp_path: Path) -> None:
    routes = "    on_error:\n      - {when: [timeout], goto: continue}\n"
    error = invalid(BASE.replace("outputs:", routes + "outputs:"), tmp_path)
    assert "not produced on every path" in str(error)


def test_loop_without_a_bound(tmp_path: Path) -> None:
    extra = (
        "    on_error:\n      - when: [content_policy]\n"
        "        rewrite: {via: censor, port: text}\n"
        "  censor:\n    kind: censor_text\n    model: openai-gpt-4o-mini\n"
    )
    error = invalid(BASE.replace("outputs:", extra + "outputs:"), tmp_path)
    assert "no bound" in str(error) and "max_attempts" in str(error)


def test_duplicate_names(tmp_path: Path) -> None:
    twice = BASE.replace("outputs:", "  story:\n    kind: text_to_text\noutputs:")
    error = invalid(twice, tmp_path)
    assert "defined twice (lines 6 and 10)" in str(error) and error.line == 10
    flow = Flow("f")
    flow.add("a", Passthrough(), {"value": "inputs.x"})
    with pytest.raises(FlowSpecError, match="added twice"):
        flow.add("a", Passthrough(), {"value": "inputs.x"})


def test_data_cycle(tmp_path: Path) -> None:
    flow = Flow("cycle")
    flow.add("a", Passthrough(), {"value": "b.value"})
    flow.add("b", Passthrough(), {"value": "a.value"})
    flow.output("v", "b.value")
    with pytest.raises(FlowSpecError, match="loop"):
        flow.validate()


def test_fallback_must_cover_the_ports_read(tmp_path: Path) -> None:
    flow = Flow("f")
    text = flow.input("text")
    image = flow.add("image", TextToImage("stability-core"), {"prompt": text})
    story = flow.add("story", TextToText("openai-gpt-4o"), {"text": text})
    flow.fallback(image, to=story)
    flow.output("image", image["image"])
    with pytest.raises(FlowSpecError, match="must produce 'image'"):
        flow.validate()


def test_goto_missing_node(tmp_path: Path) -> None:
    routes = "    on_error:\n      - {when: [any], goto: nobody}\n"
    error = invalid(BASE.replace("outputs:", routes + "outputs:"), tmp_path)
    assert "'nobody', which is not a node" in str(error)


def test_broken_yaml_syntax_has_a_line(tmp_path: Path) -> None:
    error = invalid(BASE.replace("inputs: {text: inputs.text}", "inputs: {text: [}"), tmp_path)
    assert error.line is not None


# -- compilation ------------------------------------------------------------


def test_langgraph_graph_shows_the_branches() -> None:
    drawing = Flow.load("webcam_story").compile().get_graph().draw_mermaid()
    assert "illustration -. " in drawing and "censor" in drawing
    assert "openai_illustration" in drawing
    assert "continue with Azure alone" in drawing
    assert "llm_analysis__done --> merge" in drawing


async def test_a_routed_node_nothing_reads_ends_the_run_without_a_join(
    sim: Simulator, ctx: Any, tmp_path: Path
) -> None:
    """A join is a superstep on every run: ``illustrate``'s image ends the run itself (and
    so does its fallback); a routed node that another node reads keeps its join."""
    illustrate = Flow.load("illustrate")
    assert not [n for n in illustrate.compile().nodes if n.endswith("__done")]
    assert "llm_analysis__done" in Flow.load("webcam_story").compile().nodes
    sim.faults.extend(parse_faults("server_error@stability:first_n=99"))
    result = await illustrate.ainvoke({"text": "a lighthouse"}, out_dir=tmp_path, ctx=ctx)
    assert result.outputs["image"].path.endswith("image.png")  # OpenAI stood in, and ended it
    assert [e.node for e in result.trace.executions if e.status == "ok"] == ["fallback_image"]
    assert sim.count("openai") == 1


def framed(route: str) -> Flow:
    """A story, its picture (``route``: ``fallback``, ``continue`` or ``strict``: a fallback
    for content-policy refusals only) and a frame of both: the frame reads the story too,
    but the story is done before the picture starts, so the frame waits on the picture."""
    flow = Flow("framed")
    text = flow.input("text", "text")
    story = flow.add("story", TextToText("openai-gpt-6-luna"), {"text": text})
    image = flow.add("image", TextToImage("stability-core"), {"prompt": story["text"]})
    if route == "continue":
        flow.continue_on(image)
    else:
        other = flow.add("other_image", TextToImage("openai-gpt-image-2"), {"prompt": text})
        flow.fallback(image, to=other, when=["content_policy"] if route == "strict" else ["any"])
    frame = flow.add("frame", Frame(), {"text": story["text"], "image": image["image"]})
    flow.output("frame", frame["frame"])
    return flow


def test_a_routed_node_its_consumers_wait_on_alone_has_no_join() -> None:
    """A join is a superstep on every run: the picture's paths (its success, its fallback, a
    ``continue``) go straight to the frame. The webcam story's merge reads two analyses that
    run side by side, so they keep their joins."""
    for route in ("fallback", "continue", "strict"):
        assert not [n for n in framed(route).compile().nodes if n.endswith("__done")]
    webcam = Flow.load("webcam_story").compile().nodes
    assert "illustration__done" not in webcam and "llm_analysis__done" in webcam


async def test_the_frame_gets_the_fallback_picture_without_a_join(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    result = await run(
        framed("fallback"),
        {"text": "a lighthouse"},
        tmp_path,
        sim("server_error@stability:first_n=99"),
        on_event=lambda e: events.append((e.kind, e.node)),
    )
    done = [(e.node, e.status) for e in result.trace.executions]
    assert done == [
        ("story", "ok"), ("image", "fallback"), ("other_image", "ok"), ("frame", "ok")
    ]  # fmt: skip
    frame = result.outputs["frame"]
    assert frame.image is not None and Path(frame.image.path).is_file()
    assert events.index(("started", "frame")) > events.index(("finished", "other_image"))


async def test_the_frame_goes_on_without_a_picture_that_continued(tmp_path: Path) -> None:
    result = await run(
        framed("continue"), {"text": "a lighthouse"}, tmp_path, sim("auth@stability")
    )
    assert [(e.node, e.status) for e in result.trace.executions] == [
        ("story", "ok"), ("image", "skipped"), ("frame", "ok")
    ]  # fmt: skip
    assert result.outputs["frame"].image is None and result.outputs["frame"].text


async def test_a_joinless_node_that_stops_resumes_into_its_consumer(tmp_path: Path) -> None:
    """No route takes the failure: the run stops at the picture (the frame does not run
    without it), and the resumed run draws it, then frames it, paying nothing twice."""
    flow = framed("strict")
    with pytest.raises(FlowRunError) as info:
        await run(flow, {"text": "a lighthouse"}, tmp_path, sim("auth@stability"))
    assert info.value.node == "image"
    assert not (tmp_path / "frame.json").exists()
    up = sim()
    result = await flow.ainvoke(
        None, out_dir=tmp_path, simulator=up, thread_id=info.value.thread_id, resume=True
    )
    assert result.outputs["frame"].image is not None
    assert up.count("openai") == 0 and up.count("stability") == 1  # the story was kept
    assert (tmp_path / "frame.json").is_file()


# -- running ---------------------------------------------------------------------------------------


async def test_parallel_branches_overlap_and_merge_waits(tmp_path: Path) -> None:
    flow = Flow("parallel")
    photo = flow.input("photo", "image")
    azure = flow.add("azure_vision", AnalyzeImage("azure-vision-4.0"), {"image": photo})
    llm = flow.add("llm", AnalyzeImage("openai-gpt-4o"), {"image": photo})
    merged = flow.add("merge", MergeAnalyses(), {"analyses": [azure["analysis"], llm["analysis"]]})
    flow.output("analysis", merged["analysis"])
    # Each provider call waits until both are in flight: run one after the other, they
    # could never both arrive, and the rendezvous fails the test.
    together = Rendezvous(parties=2)
    simulator = Simulator(latency=lambda *_: 1.0, sleep=together)
    events: list[tuple[str, str]] = []
    result = await flow.ainvoke(
        {"photo": WEBCAM},
        out_dir=tmp_path,
        simulator=simulator,
        on_event=lambda e: events.append((e.kind, e.node)),
    )
    assert together.arrived == 2 and result.outputs["analysis"].tags
    started = {events.index(("started", n)) for n in ("azure_vision", "llm")}
    finished = {events.index(("finished", n)) for n in ("azure_vision", "llm")}
    assert max(started) < min(finished)  # both were running at once
    assert events.index(("started", "merge")) > max(finished)  # the merge waited for both


async def test_continue_lets_the_merge_proceed(tmp_path: Path) -> None:
    flow = Flow("parallel")
    photo = flow.input("photo", "image")
    azure = flow.add("azure_vision", AnalyzeImage("azure-vision-4.0"), {"image": photo})
    llm = flow.add("llm", AnalyzeImage("openai-gpt-4o"), {"image": photo})
    flow.continue_on(llm, when=["auth"])
    merged = flow.add("merge", MergeAnalyses(), {"analyses": [azure["analysis"], llm["analysis"]]})
    flow.output("analysis", merged["analysis"])
    result = await run(flow, {"photo": WEBCAM}, tmp_path, sim("auth@openai"))
    assert result.outputs["analysis"].tags
    (skipped,) = result.trace.by_node()["llm"]
    assert skipped.status == "skipped" and skipped.error_class == "auth"


async def test_rewrite_bound_exhausted_then_fallback(tmp_path: Path) -> None:
    result = await run(
        illustrate(), {"text": "a dragon"}, tmp_path, sim("content_policy@stability")
    )
    statuses = [e.status for e in result.trace.by_node()["image"]]
    assert statuses == ["fallback", "fallback", "fallback"]  # first try + 2 rewrites
    branches = [e.branch for e in result.trace.by_node()["image"]]
    assert branches == ["rewrite:censor", "rewrite:censor", "fallback:fallback_image"]
    assert Path(result.outputs["image"].path).is_file()


async def test_rewrite_exhausted_without_fallback_is_a_flow_run_error(tmp_path: Path) -> None:
    flow = Flow("strict")
    text = flow.input("text")
    image = flow.add("image", TextToImage("stability-core"), {"prompt": text})
    censor = flow.add("censor", CensorText("openai-gpt-4o-mini"))
    flow.rewrite(image, via=censor, port="prompt", max_attempts=2)
    flow.output("image", image["image"])
    with pytest.raises(FlowRunError) as info:
        await run(flow, {"text": "a dragon"}, tmp_path, sim("content_policy@stability"))
    error = info.value
    assert error.node == "image" and error.cause_class == "content_policy"
    assert "--resume" in str(error)
    trace = Trace.load(tmp_path / "trace.json")
    assert trace.status == "failed" and len(trace.by_node()["image"]) == 3


async def test_fallback_on_rate_limit(tmp_path: Path) -> None:
    result = await run(illustrate(), {"text": "a fox"}, tmp_path, sim("rate_limit@stability"))
    (first,) = result.trace.by_node()["image"]
    assert first.error_class == "rate_limit" and first.retries == 1
    assert first.branch == "fallback:fallback_image"


async def test_node_retry_policy(tmp_path: Path) -> None:
    flow = Flow("retry")
    text = flow.input("text")
    story = flow.add(
        "story",
        TextToText("openai-gpt-4o", empty_is_error=True),
        {"text": text},
        retry={"max_attempts": 2, "initial_interval": 0.0, "when": ["empty"], "jitter": False},
    )
    flow.output("story", story["text"])
    events: list[FlowEvent] = []
    result = await run(
        flow, {"text": "go"}, tmp_path, sim("empty@openai:first_n=1"), on_event=events.append
    )
    assert result.outputs["story"].strip()
    assert [e.kind for e in events] == ["started", "failed", "retried", "started", "finished"]


async def test_invoke_and_stream_from_sync_code(tmp_path: Path) -> None:
    flow = illustrate()

    def sync() -> tuple[FlowResult, list[Any]]:
        result = flow.invoke({"text": "a fox"}, out_dir=tmp_path / "a", simulator=Simulator())
        items = list(flow.stream({"text": "a fox"}, out_dir=tmp_path / "b", simulator=Simulator()))
        return result, items

    result, items = await asyncio.to_thread(sync)
    assert Path(result.outputs["image"].path).is_file()
    assert isinstance(items[-1], FlowResult)
    assert [i.kind for i in items[:-1]] == ["started", "finished"]


async def test_astream_yields_events_then_the_result(tmp_path: Path) -> None:
    items = [
        item
        async for item in illustrate().astream(
            {"text": "a fox"}, out_dir=tmp_path, simulator=Simulator()
        )
    ]
    assert isinstance(items[0], FlowEvent) and items[0].kind == "started"
    assert isinstance(items[-1], FlowResult)


async def test_bad_inputs_are_clear(tmp_path: Path) -> None:
    flow = Flow.load("webcam_story")
    with pytest.raises(ConfigurationError, match="needs input 'image'"):
        await flow.ainvoke({}, out_dir=tmp_path, simulator=Simulator())
    with pytest.raises(ConfigurationError, match="no input 'picture'"):
        await flow.ainvoke({"picture": WEBCAM}, out_dir=tmp_path, simulator=Simulator())
    with pytest.raises(MediaError, match=r"missing\.jpg"):
        await flow.ainvoke(
            {"image": tmp_path / "missing.jpg"}, out_dir=tmp_path, simulator=Simulator()
        )


async def test_no_secret_in_trace_or_checkpoint(tmp_path: Path) -> None:
    simulator = Simulator()
    keys = simulator.keys()
    await Flow.load("webcam_story").ainvoke(
        {"image": WEBCAM}, out_dir=tmp_path, simulator=simulator
    )
    blobs = [(tmp_path / "trace.json").read_bytes(), (tmp_path / "checkpoints.sqlite").read_bytes()]
    for secret in keys.secrets():
        for blob in blobs:
            assert secret.encode() not in blob


# -- resume and cache ------------------------------------------------------------


async def test_resume_reruns_only_what_did_not_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = Flow.load("webcam_story")
    down = Simulator(faults=parse_faults("auth@stability;auth@openai:endpoint=images"))
    with pytest.raises(FlowRunError) as info:
        await flow.ainvoke({"image": WEBCAM}, out_dir=tmp_path, simulator=down)
    thread = info.value.thread_id
    assert thread is not None
    assert down.count("azure_vision") == 1 and down.count("openai", "chat") == 2  # vision + story

    up = Simulator()
    result = await flow.ainvoke(None, out_dir=tmp_path, simulator=up, thread_id=thread, resume=True)
    assert up.count("azure_vision") == 0 and up.count("openai", "chat") == 0  # not re-run
    # it continues where it stopped: the fallback that failed runs again, nothing else
    assert up.count("stability") == 0 and up.count("openai", "images") == 1
    assert Path(result.outputs["image"].path).is_file()
    assert result.outputs["story"]  # read back from the checkpoint
    assert result.trace.resumed_from == thread
    assert {e.node for e in result.trace.executions if e.resumed} >= {"azure_analysis", "story"}
    assert "unregistered type" not in caplog.text  # our value types are allow-listed
    with sqlite3.connect(tmp_path / "checkpoints.sqlite") as db:
        assert db.execute("select count(*) from checkpoints").fetchone()[0] > 0


async def test_cache_reruns_only_what_depends_on_a_changed_input(tmp_path: Path) -> None:
    flow = Flow("two")
    a = flow.input("a")
    b = flow.input("b")
    story_a = flow.add("story_a", TextToText("openai-gpt-4o"), {"text": a})
    story_b = flow.add("story_b", TextToText("openai-gpt-4o"), {"text": b})
    joined = flow.add(
        "joined",
        PromptTemplate(template="{x} / {y}"),
        {"x": story_a["text"], "y": story_b["text"]},
    )
    flow.output("text", joined["text"])
    first = Simulator()
    await flow.ainvoke({"a": "fox", "b": "owl"}, out_dir=tmp_path, simulator=first, cache=True)
    assert first.count("openai") == 2
    second = Simulator()
    result = await flow.ainvoke(
        {"a": "fox", "b": "bear"}, out_dir=tmp_path, simulator=second, cache=True
    )
    assert second.count("openai") == 1  # story_a came from the cache
    hits = [e.node for e in result.trace.executions if e.status == "cache_hit"]
    assert hits == ["story_a"]


async def test_yaml_flow_loaded_from_text(tmp_path: Path) -> None:
    spec = load_spec("inline.yaml", text=BASE)
    result = await Flow.from_spec(spec).ainvoke(
        {"text": "hello", "photo": WEBCAM}, out_dir=tmp_path, simulator=Simulator()
    )
    assert result.outputs["story"]


async def test_critical_path_is_a_chain_of_executions_one_after_another(tmp_path: Path) -> None:
    simulator = Simulator(faults=parse_faults("content_policy@stability:first_n=1"))
    events: list[FlowEvent] = []
    result = await Flow.load("webcam_story").ainvoke(
        {"image": WEBCAM}, out_dir=tmp_path, simulator=simulator, on_event=events.append
    )
    seconds, chain = result.trace.critical_path()
    assert chain[-1] == "frame" and "story" in chain
    # the rewrite loop is on the path: refused, censored, drawn again
    assert chain[chain.index("illustration") :][:3] == ["illustration", "censor", "illustration"]
    # Each link ended (by the run's own event order) before the next began, so the chain
    # never overlaps itself and its length is the sum of its links.
    links, rest = [], list(result.trace.executions)
    for name in chain:
        link = next(e for e in rest if e.node == name)
        rest = rest[rest.index(link) + 1 :]
        links.append(link)
    begun = {id(e.execution): i for i, e in enumerate(events) if e.kind == "started"}
    ended = {id(e.execution): i for i, e in enumerate(events) if e.kind in ("finished", "failed")}
    for before, after in itertools.pairwise(links):
        assert ended[id(before)] < begun[id(after)], (before.node, after.node)
    assert seconds == pytest.approx(sum(link.duration for link in links))


async def test_resume_after_a_failure_no_route_took(tmp_path: Path) -> None:
    """llm_analysis has routes (timeout → continue), but an auth failure matches none: the
    run stops with the node pending, and resuming runs it — and only it — again."""
    flow = Flow.load("webcam_story")
    down = Simulator(faults=parse_faults("auth@openai:endpoint=chat"))
    with pytest.raises(FlowRunError) as info:
        await flow.ainvoke({"image": WEBCAM}, out_dir=tmp_path, simulator=down)
    assert info.value.node == "llm_analysis" and info.value.cause_class == "auth"
    up = Simulator()
    result = await flow.ainvoke(
        None, out_dir=tmp_path, simulator=up, thread_id=info.value.thread_id, resume=True
    )
    assert up.count("azure_vision") == 0  # finished before the failure: not run again
    assert up.count("openai", "chat") == 2  # the vision analysis again, then the story
    assert result.outputs["frame"].text
    fresh = [e.node for e in result.trace.executions if not e.resumed]
    assert fresh[0] == "llm_analysis"


async def test_events_arrive_on_the_event_loop_thread(tmp_path: Path) -> None:
    """Fallback events come from error handlers; they must not arrive from a worker thread
    (a CLI or UI callback is not thread-safe)."""
    import threading

    threads: set[int] = set()
    await run(
        illustrate(),
        {"text": "a fox"},
        tmp_path,
        sim("content_policy@stability:first_n=1"),
        on_event=lambda event: threads.add(threading.get_ident()),
    )
    assert threads == {threading.get_ident()}


async def test_a_failure_counts_the_attempts_of_every_retry_of_the_node(tmp_path: Path) -> None:
    """A node retried by its ``retry`` policy (2 runs) whose engine tried twice each time made
    4 provider attempts, and the failure says 4, not the last run's 2."""
    flow = Flow("story_only")
    text = flow.input("text", "text")
    story = flow.add(
        "story",
        "text_to_text",
        {"text": text},
        model="openai-gpt-6-luna",
        retry={"max_attempts": 2, "when": ["transient"], "initial_interval": 0, "jitter": False},
    )
    flow.output("story", story["text"])
    with pytest.raises(FlowRunError) as failed:
        await run(flow, {"text": "a fox"}, tmp_path, sim("server_error@openai"))
    assert failed.value.attempts == 4
    assert "4 provider attempts" in str(failed.value)


def test_running_a_flow_again_does_not_compile_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Flow.invoke`` makes a runner per call; the graph is compiled once per flow (tens of
    milliseconds before the first node, every run, otherwise)."""
    import calliope_graph.flow.run as run

    compiled: list[str] = []
    compile_plan = run.compile_plan  # type: ignore[attr-defined]

    def counted(plan: Any, **options: Any) -> Any:
        compiled.append(plan.spec.name)
        return compile_plan(plan, **options)

    monkeypatch.setattr(run, "compile_plan", counted)
    flow = Flow.load("illustrate")
    sim = Simulator()
    for i, checkpointer in enumerate((True, False, True)):
        result = flow.invoke(
            {"text": "a fox"}, out_dir=tmp_path / str(i), simulator=sim, checkpointer=checkpointer
        )
        assert result.trace.status == "ok"
    assert compiled == ["illustrate"]
