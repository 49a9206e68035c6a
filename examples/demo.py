"""`make demo`: the webcam story and a narrated story video, offline, against the simulator.

webcam image → (Azure analysis ∥ LLM vision, which may time out and be skipped) → merge →
story continuation → illustration (censor-and-retry, Stability falling back to OpenAI) →
frame. Then a narrated storyboard: premise → Story → every scene illustrated and narrated
in parallel → one MP4 (``out/narrated/story.mp4``). Then a consistent storyboard: three
character sheets of the hero, a vision model judging them, and every scene drawn with the
chosen sheet as its reference image (``out/consistent/``). No keys and no network: every
provider call goes to ``calliope_graph.simulate``.

    python examples/demo.py --out out [--faults "content_policy@stability:first_n=1"]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from calliope_graph.flow import Flow
from calliope_graph.simulate import Simulator, parse_faults
from calliope_graph.viz import render_report

HERE = Path(__file__).parent


async def main(out: Path, faults: str) -> None:
    flow = Flow.load("webcam_story")
    sim = Simulator(faults=parse_faults(faults))
    result = await flow.ainvoke(
        {"image": HERE / "media" / "webcam.jpg"}, out_dir=out, simulator=sim
    )
    render_report(result.trace, out / "report.html")
    frame = result.outputs["frame"]
    print("Story frame:")
    print(f"  {frame.text}\n")
    print(f"image:      {frame.image.path if frame.image else '(none)'}")
    print(f"trace:      {out / 'trace.json'}")
    print(f"report:     {out / 'report.html'}")
    print(f"checkpoint: {out / 'checkpoints.sqlite'} (thread {result.thread_id})")
    path = " → ".join(result.trace.path())
    print(f"path taken: {path}")

    narrated = await Flow.load("narrated_storyboard").ainvoke(
        {"premise": "a fox who collects lost keys"},
        out_dir=out / "narrated",
        simulator=Simulator(faults=parse_faults(faults)),
    )
    render_report(narrated.trace, out / "narrated" / "report.html")
    video = narrated.outputs["video"]
    print(f"\nNarrated story {narrated.outputs['title']!r}: {video.path} ({video.duration:.1f} s)")
    print(f"report:     {out / 'narrated' / 'report.html'}")
    await consistent_storyboard(out / "consistent", faults)


async def consistent_storyboard(out: Path, faults: str) -> None:
    """The hero stays the same: sheets judged, each scene drawn from the chosen one."""
    result = await Flow.load("consistent_storyboard").ainvoke(
        {"premise": "a fox who collects lost keys"},
        out_dir=out,
        simulator=Simulator(faults=parse_faults(faults)),
    )
    render_report(result.trace, out / "report.html")
    outputs = result.outputs
    scores = ", ".join(str(s["score"]) for s in outputs["sheet_scores"])
    print(f"\nConsistent storyboard {outputs['title']!r}:")
    print(f"sheet:      {outputs['sheet'].path} (the judge scored the three: {scores})")
    for number, frame in enumerate(outputs["frames"], 1):
        print(f"frame {number}:    {frame.image.path if frame.image else '(none)'}")
    print(f"report:     {out / 'report.html'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--faults", default="", help="simulator faults, e.g. 'hang@openai'")
    args = parser.parse_args()
    asyncio.run(main(args.out, args.faults))
