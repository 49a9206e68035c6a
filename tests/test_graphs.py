"""The shipped flows, end to end against the simulator, including their branches under faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _support import never

from calliope_graph.context import PollSettings, RetrySettings, RunContext
from calliope_graph.errors import FlowRunError
from calliope_graph.flow import Flow
from calliope_graph.graphs.scene import Scene
from calliope_graph.media import Image, ImageAnalysis, Video
from calliope_graph.simulate import Simulator, parse_faults
from calliope_graph.testing import image_bytes, mp4_info, wav_bytes

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"
SHIPPED = (
    "webcam_story",
    "voice_story",
    "illustrate",
    "image_to_video_story",
    "structured_scene",
    "continuous_story",
)


async def run(
    flow: str | Flow, inputs: dict[str, Any], out: Path, faults: str = "", **kwargs: Any
) -> tuple[Any, Simulator]:
    """Run a shipped flow on the simulator with instant backoffs; return (result, simulator)."""
    sim = Simulator(faults=parse_faults(faults))

    async def instant(seconds: float) -> None:
        return None

    sim.sleep = instant
    ctx = RunContext.create(
        out,
        keys=sim.keys(),
        transport=sim.transport(),
        sleep=instant,
        retry=RetrySettings(max_attempts=3, initial_wait=0.0, max_wait=0.0, jitter=0.0),
        poll=PollSettings(interval=0.1, timeout=30.0),
    )
    loaded = Flow.load(flow) if isinstance(flow, str) else flow
    try:
        result = await loaded.ainvoke(inputs, out_dir=out, ctx=ctx, **kwargs)
    finally:
        await ctx.aclose()
    return result, sim


def executions(result: Any, node: str) -> list[Any]:
    return [e for e in result.trace.executions if e.node == node]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_flows_load_by_name_and_validate(name: str) -> None:
    flow = Flow.load(name)
    flow.validate()
    assert flow.spec.name == name


# -- webcam_story ------------------------------------------------------------------------------


async def test_webcam_story_makes_a_frame_from_both_analyses(tmp_path: Path) -> None:
    result, sim = await run("webcam_story", {"image": WEBCAM}, tmp_path)
    frame = result.outputs["frame"]
    assert frame.text.strip()
    assert isinstance(frame.image, Image) and Path(frame.image.path).is_file()
    analysis = result.outputs["analysis"]
    assert isinstance(analysis, ImageAnalysis)
    assert sim.count("azure_vision") >= 1 and sim.count("stability") == 1
    assert json.loads((tmp_path / "frame.json").read_text())["text"] == frame.text
    path = result.trace.path()
    assert path.index("merge") > max(path.index("azure_analysis"), path.index("llm_analysis"))
    assert "openai_illustration" not in path and "censor" not in path


async def test_webcam_story_continues_with_azure_alone_when_llm_vision_hangs(
    tmp_path: Path,
) -> None:
    result, _ = await run(
        "webcam_story", {"image": WEBCAM}, tmp_path, "hang@openai:endpoint=chat,first_n=3"
    )
    (llm,) = executions(result, "llm_analysis")
    assert llm.status == "skipped" and llm.error_class == "timeout"
    assert llm.branch == "continue"
    assert result.outputs["frame"].text.strip()
    assert result.outputs["analysis"].tags  # Azure's tags made it through the merge


@pytest.mark.real_timeout
async def test_webcam_story_node_timeout_bounds_a_slow_llm(tmp_path: Path) -> None:
    """The node's LangGraph ``timeout`` cuts off an LLM call that never answers (only the
    timeout can end it, so nothing depends on the machine's speed) and the flow continues."""
    flow = Flow.load("webcam_story")
    spec = flow.spec.model_copy(deep=True)
    spec.nodes["llm_analysis"].timeout = 0.05
    slow = Flow.from_spec(spec)
    sim = Simulator(
        latency=lambda _p, _e, request: 1.0 if b"image_url" in request.content else 0.0,
        sleep=never,
    )
    result = await slow.ainvoke({"image": WEBCAM}, out_dir=tmp_path, simulator=sim)
    (llm,) = executions(result, "llm_analysis")
    assert llm.status == "skipped" and llm.error_class == "timeout"
    assert llm.branch == "continue" and "timeout" in (llm.error or "")
    assert result.outputs["analysis"].tags  # Azure's analysis made it through the merge
    assert result.outputs["frame"].image is not None


async def test_webcam_story_censors_and_retries_then_succeeds(tmp_path: Path) -> None:
    result, sim = await run(
        "webcam_story", {"image": WEBCAM}, tmp_path, "content_policy@stability:first_n=1"
    )
    runs = executions(result, "illustration")
    assert [e.status for e in runs] == ["fallback", "ok"]
    assert runs[0].error_class == "content_policy" and runs[0].branch == "rewrite:censor"
    assert len(executions(result, "censor")) == 1
    assert sim.count("stability") == 2
    assert "openai_illustration" not in result.trace.path()


async def test_webcam_story_falls_back_to_openai_after_three_refusals(tmp_path: Path) -> None:
    result, sim = await run("webcam_story", {"image": WEBCAM}, tmp_path, "content_policy@stability")
    assert len(executions(result, "illustration")) == 4  # the first try + 3 censored retries
    assert len(executions(result, "censor")) == 3
    (fallback,) = executions(result, "openai_illustration")
    assert fallback.status == "ok"
    assert sim.count("stability") == 4 and sim.count("openai", "images") == 1
    assert result.outputs["frame"].image is not None
    assert result.trace.fallbacks()


async def test_webcam_story_falls_back_when_stability_is_down(tmp_path: Path) -> None:
    result, _ = await run("webcam_story", {"image": WEBCAM}, tmp_path, "unavailable@stability")
    (first,) = executions(result, "illustration")
    assert first.status == "fallback" and first.branch == "fallback:openai_illustration"
    assert first.retries >= 1  # the engine retried the 503s before the edge was taken
    assert Path(result.outputs["image"].path).is_file()


async def test_webcam_story_fails_clearly_when_every_analysis_fails(tmp_path: Path) -> None:
    with pytest.raises(FlowRunError) as info:
        await run(
            "webcam_story", {"image": WEBCAM}, tmp_path, "server_error@azure_vision;auth@openai"
        )
    assert "llm_analysis" in str(info.value) or "merge" in str(info.value)
    assert (tmp_path / "trace.json").is_file()


async def test_webcam_story_accepts_an_image_value(tmp_path: Path) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(image_bytes("a cat on a red sofa", 320, 240))
    result, _ = await run("webcam_story", {"image": Image.open(picture)}, tmp_path / "out")
    assert result.outputs["story"].strip()


# -- the other shipped flows --------------------------------------------------------------------


async def test_voice_story(tmp_path: Path) -> None:
    audio = tmp_path / "said.wav"
    audio.write_bytes(wav_bytes("once upon a time"))
    result, sim = await run("voice_story", {"audio": audio}, tmp_path / "out")
    assert result.outputs["transcript"].strip()
    assert result.outputs["story"].strip()
    assert Path(result.outputs["image"].path).is_file()
    assert sim.count("openai", "transcriptions") == 1


async def test_illustrate_happy_path_and_fallback(tmp_path: Path) -> None:
    ok, _ = await run("illustrate", {"text": "a lighthouse at dawn"}, tmp_path / "a")
    assert Path(ok.outputs["image"].path).read_bytes()[:4] == b"\x89PNG"
    assert ok.trace.path() == ["image"]
    refused, sim = await run(
        "illustrate", {"text": "a lighthouse at dawn"}, tmp_path / "b", "content_policy@stability"
    )
    assert "fallback_image" in refused.trace.path()
    assert sim.count("stability") == 4


async def test_image_to_video_story(tmp_path: Path) -> None:
    result, sim = await run(
        "image_to_video_story", {"image": WEBCAM, "text": "the cat leaps"}, tmp_path
    )
    video = result.outputs["video"]
    assert isinstance(video, Video) and Path(video.path).suffix == ".mp4"
    assert mp4_info(Path(video.path).read_bytes())
    assert sim.count("runway") >= 2  # the task was created, then polled


async def test_structured_scene(tmp_path: Path) -> None:
    result, _ = await run(
        "structured_scene",
        {"messages": "A knight and a dragon share tea in a misty forest."},
        tmp_path,
    )
    scene = result.outputs["scene"]
    assert isinstance(scene, Scene)
    assert scene.setting in result.outputs["prompt"]
    assert Path(result.outputs["image"].path).is_file()


async def test_continuous_story_continues(tmp_path: Path) -> None:
    result, _ = await run(
        "continuous_story",
        {"previous_text": "The fox found a lantern.", "situation": "It starts to snow."},
        tmp_path,
    )
    assert result.outputs["text"].strip()
    assert result.trace.path()[:2] == ["continuation_prompt", "continuation"]


async def test_continuous_story_retries_an_empty_continuation_with_a_seed_prompt(
    tmp_path: Path,
) -> None:
    result, _ = await run(
        "continuous_story",
        {"situation": "It starts to snow."},
        tmp_path,
        "empty@openai:first_n=1",
    )
    runs = executions(result, "continuation")
    assert [e.status for e in runs] == ["fallback", "ok"]
    assert runs[0].error_class == "empty"
    assert "seed_prompt" in result.trace.path()
    assert result.outputs["text"].strip()


async def test_continuous_story_falls_back_to_the_situation(tmp_path: Path) -> None:
    result, _ = await run(
        "continuous_story", {"situation": "It starts to snow."}, tmp_path, "empty@openai"
    )
    assert result.outputs["text"] == "It starts to snow."
    assert "situation_text" in result.trace.path()
    assert Path(result.outputs["image"].path).is_file()
