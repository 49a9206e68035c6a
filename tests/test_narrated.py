"""Narrated story videos end to end against the simulator: premise → Story → per scene
picture ∥ narration (ElevenLabs Multilingual v2, Flash v2.5 when it fails) ∥ a clip when it moves →
one MP4 held to the narrations; resumable; played by the run report in Chromium."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import av
import pytest

from calliope_graph.errors import FlowRunError, MediaError
from calliope_graph.flow import Flow
from calliope_graph.simulate import Simulator, parse_faults
from calliope_graph.viz import render_report

PREMISE = {"premise": "a fox who collects lost keys"}


def sim(faults: str = "") -> Simulator:
    simulator = Simulator(faults=parse_faults(faults))

    async def instant(seconds: float) -> None:
        return None

    simulator.sleep = instant
    return simulator


def run(out: Path, simulator: Simulator, **kw: Any) -> Any:
    from calliope_graph.context import PollSettings, RetrySettings, RunContext

    ctx = RunContext.create(
        out,
        keys=simulator.keys(),
        transport=simulator.transport(),
        sleep=simulator.sleep,
        retry=RetrySettings(max_attempts=2, initial_wait=0.0, max_wait=0.0, jitter=0.0),
        poll=PollSettings(interval=0.01, timeout=600.0),
    )

    async def go() -> Any:
        try:
            inputs = None if kw.get("resume") else PREMISE
            return await Flow.load("narrated_storyboard").ainvoke(
                inputs, out_dir=out, ctx=ctx, **kw
            )
        finally:
            await ctx.aclose()

    return asyncio.run(go())


def streams(path: Path) -> tuple[list[str], float]:
    with av.open(str(path)) as container:
        kinds = [str(s.type) for s in container.streams]
        assert container.duration is not None
        return kinds, container.duration / 1_000_000


def test_the_story_video_is_held_to_its_narrations(tmp_path: Path) -> None:
    simulator = sim()
    result = run(tmp_path, simulator)
    video = Path(result.outputs["video"].path)
    assert video == tmp_path / "story.mp4"
    kinds, seconds = streams(video)
    assert sorted(kinds) == ["audio", "video"]
    narrations = result.outputs["narrations"]
    total = sum(n.duration for n in narrations)
    assert abs(seconds - total) <= 0.2
    assert simulator.count("elevenlabs", "text_to_speech") == len(narrations)
    assert simulator.count("openai", "speech") == 0


def test_a_refused_narration_falls_back_to_flash(tmp_path: Path) -> None:
    simulator = sim("content_policy@elevenlabs:first_n=1")
    result = run(tmp_path, simulator)
    narrations = result.outputs["narrations"]
    assert simulator.count("elevenlabs") == len(narrations) + 1 >= 2
    fell_back = [e for e in result.trace.executions if e.branch == "fallback:narration_backup"]
    assert len(fell_back) == 1
    assert Path(result.outputs["video"].path).is_file()


def test_a_failed_assembly_resumes_without_paying_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calliope_graph.nodes import assemble_video

    real = assemble_video.AssembleVideo.run

    async def broken(self: Any, ctx: Any, **inputs: Any) -> dict[str, Any]:
        raise MediaError("the encoder crashed")

    monkeypatch.setattr(assemble_video.AssembleVideo, "run", broken)
    first = sim()
    with pytest.raises(FlowRunError, match="video") as info:
        run(tmp_path, first)
    paid = first.count()
    assert paid > 0
    monkeypatch.setattr(assemble_video.AssembleVideo, "run", real)
    again = sim()
    result = run(tmp_path, again, thread_id=info.value.thread_id, resume=True)
    assert again.count() == 0  # every provider call was already paid for
    assert Path(result.outputs["video"].path).is_file()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is missing: `make browser`")
def test_the_report_plays_the_narrations_and_the_video(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    result = run(tmp_path, sim())
    report = render_report(result.trace, tmp_path / "report.html")
    total = sum(n.duration for n in result.outputs["narrations"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            assert page.locator("audio").count() >= len(result.outputs["narrations"])
            page.wait_for_function(
                "() => [...document.querySelectorAll('video')].some(v => v.readyState >= 1"
                " && v.currentSrc.endsWith('story.mp4'))",
                timeout=20_000,
            )
            duration = page.evaluate(
                "() => [...document.querySelectorAll('video')]"
                ".find(v => v.currentSrc.endsWith('story.mp4')).duration"
            )
            assert abs(float(duration) - total) <= 0.2
            assert errors == []
        finally:
            browser.close()
