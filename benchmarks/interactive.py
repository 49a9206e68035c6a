"""Interactive-story benchmarks (issue 20; ratios and counts measured in one run):

- ``time_to_first_token_ratio``: the shipped ``webcam_story`` under ``flow.astream`` against the
  simulator with fixed latencies (Azure 200 ms ∥ LLM vision 300 ms → merge → prompt → the story
  node streaming with a 400 ms time to first token): the time from the run's start (the
  ``astream`` call) to the story node's first ``token`` event, over the simulated TTFT plus the
  upstream critical path (0.3 + 0.4 s). What is above 1 is the library: start-up of the run,
  scheduling, checkpoints, the stream's plumbing. Target <= 1.05. ``flow.astream`` makes a
  runner, and so compiles the graph, per call; ``runner_time_to_first_token_ratio`` is the
  same through one ``flow.runner(...)`` kept across runs (compiled once). ``setup_s``: the
  part before the first node starts.
- ``choose_resume_calls``: three candidate images and a ``choose`` by a person; the run pauses,
  then resumes with ``choices={"pick": 1}``; the provider calls the simulator counted during
  the resume (no candidate regenerated, nothing paid again). Target 0.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from calliope_graph.context import PreviewEvent, TokenEvent
from calliope_graph.errors import WaitingForChoice
from calliope_graph.flow import Flow, FlowEvent, FlowResult
from calliope_graph.limits import Limits
from calliope_graph.nodes import Choose, TextToImage
from calliope_graph.session import Session
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes

#: Simulated latencies (seconds) on the way to the story's first token.
TTFT = 0.4
UPSTREAM = {"azure_vision": 0.2, "vision": 0.3}
EXPECTED_FIRST_TOKEN = max(UPSTREAM.values()) + TTFT


def upstream_latency(provider: str, endpoint: str, request: httpx.Request) -> float:
    """Azure 200 ms, LLM vision 300 ms; the story's wait is its TTFT; after it, nothing."""
    if provider == "azure_vision":
        return UPSTREAM["azure_vision"]
    if "chat" in endpoint and b"image_url" in request.content:
        return UPSTREAM["vision"]
    return 0.0


def _streaming_simulator() -> Simulator:
    sim = Simulator(latency=upstream_latency, image_scale=0.25)
    sim.latency.update({"openai:ttft": TTFT, "openai:token": 0.005})
    return sim


def _session(sim: Simulator) -> Session:
    """A session on ``sim`` with no rate limits: the latencies alone are measured (the
    default limits pace Azure's free tier at 20 a minute)."""
    return Session(simulator=sim, limits=Limits(defaults=False))


Events = AsyncIterator[FlowEvent | TokenEvent | PreviewEvent | FlowResult]


async def _first_token(events: Callable[[], Events]) -> tuple[float, float]:
    """Seconds from the ``astream`` call to the story node's first token, and to the first
    node's start (the run's setup: compilation, output folder, checkpoints, journal); the run
    is finished."""
    first: float | None = None
    setup: float | None = None
    start = time.perf_counter()
    async for item in events():
        now = time.perf_counter() - start
        if setup is None and isinstance(item, FlowEvent) and item.kind == "started":
            setup = now
        if isinstance(item, TokenEvent) and item.node == "story" and item.kind == "token":
            first = now if first is None else first
    if first is None or setup is None:
        raise RuntimeError("the story node streamed no token: is streaming on?")
    return first, setup


async def _by_flow(flow: Flow, inputs: dict[str, Any], out: Path) -> tuple[float, float]:
    """One ``flow.astream`` call, as a script makes it (a runner, so a compilation, per call)."""
    async with _session(_streaming_simulator()) as session:
        return await _first_token(lambda: flow.astream(inputs, out_dir=out, session=session))


def _figures(runs: list[tuple[float, float]], prefix: str = "") -> dict[str, float]:
    first = statistics.median(r[0] for r in runs)
    setup = statistics.median(r[1] for r in runs)
    return {
        f"{prefix}first_token_s": round(first, 4),
        f"{prefix}time_to_first_token_ratio": round(first / EXPECTED_FIRST_TOKEN, 4),
        # of the excess: the run's setup before its first node starts
        f"{prefix}setup_s": round(setup, 4),
    }


async def bench_time_to_first_token(repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "webcam.png"
        photo.write_bytes(image_bytes("a cat on a red sofa by a window", 640, 480))
        inputs = {"image": str(photo)}
        flow = Flow.load("webcam_story")
        await _by_flow(flow, inputs, Path(tmp) / "warm")  # imports, first compilation
        by_flow = [await _by_flow(flow, inputs, Path(tmp) / f"r{i}") for i in range(repeats)]
        # a live installation keeps one runner: compiled once, then only each run's setup
        async with _session(_streaming_simulator()) as session:
            runner = flow.runner(out_dir=Path(tmp) / "runner", session=session)
            try:
                await _first_token(lambda: runner.astream(inputs))
                by_runner = [await _first_token(lambda: runner.astream(inputs)) for _ in by_flow]
            finally:
                await runner.aclose()
    return {
        "repeats": repeats,
        "expected_s": round(EXPECTED_FIRST_TOKEN, 4),
        **_figures(by_flow),
        **_figures(by_runner, "runner_"),
    }


def human_choice_flow() -> Flow:
    """Three candidate pictures and a person's choice among them."""
    flow = Flow("pick_a_picture")
    prompt = flow.input("prompt", "text")
    picture = flow.add("picture", TextToImage("stability-core"), {"prompt": prompt}, candidates=3)
    pick = flow.add("pick", Choose(by="human"), {"candidates": picture.image})
    flow.output("chosen", pick.item)
    flow.output("index", pick.index)
    return flow


async def bench_choose_resume(repeats: int) -> dict[str, Any]:
    flow = human_choice_flow()
    before: list[int] = []
    during: list[int] = []
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            out, thread = Path(tmp) / f"r{i}", f"choice-{i}"
            sim = Simulator(image_scale=0.25)
            try:
                await flow.ainvoke(
                    {"prompt": "a lighthouse"}, out_dir=out, simulator=sim, thread_id=thread
                )
                raise RuntimeError("the run did not wait for a choice")
            except WaitingForChoice:
                before.append(sim.count())
            start = time.perf_counter()
            result = await flow.ainvoke(
                None,
                out_dir=out,
                simulator=sim,
                thread_id=thread,
                resume=True,
                choices={"pick": 1},
            )
            seconds.append(time.perf_counter() - start)
            during.append(sim.count() - before[-1])
            if result.outputs["index"] != 1:
                raise RuntimeError(f"resumed with choice 1, got {result.outputs['index']}")
    return {
        "repeats": repeats,
        "calls_before_the_choice": max(before),
        "choose_resume_calls": max(during),
        "resume_s": round(statistics.median(seconds), 4),
    }


async def run(repeats: int) -> dict[str, Any]:
    return {
        "time_to_first_token": await bench_time_to_first_token(repeats),
        "choose_resume": await bench_choose_resume(max(repeats // 2, 2)),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(asyncio.run(run(5)), indent=2))
