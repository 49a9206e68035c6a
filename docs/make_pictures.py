"""Regenerate the README's pictures from the real code (``make pictures``).

- ``docs/images/webcam_story.svg`` and ``.png``: the shipped ``webcam_story`` flow, drawn
  offline by :func:`calliope_graph.viz.draw`.
- ``docs/images/report.png``: a headless-Chromium screenshot (summary, drawing, timeline) of
  the HTML report of a ``webcam_story`` run against the simulator, with a few injected faults
  so a retry and the censor-and-retry loop show (no network, no key). If the flow runner cannot
  run here, the report of the viz tests' sample trace is used instead, and this says so.

Needs Debian's ``chromium`` and playwright-python for the screenshot; without them the
drawings are still written and the screenshot is skipped with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
#: The report sections in the screenshot, top to bottom.
PICTURED = ("summary", "drawing", "timeline")


def draw_flow(out: Path) -> list[Path]:
    from calliope_graph.flow import load_spec
    from calliope_graph.viz import draw

    spec = load_spec(ROOT / "graphs" / "webcam_story.yaml")
    svg = out / "webcam_story.svg"
    png = out / "webcam_story.png"
    svg_text = draw(spec, "svg")
    png_bytes = draw(spec, "png")
    assert isinstance(svg_text, str) and isinstance(png_bytes, bytes)
    svg.write_text(svg_text, encoding="utf-8")
    png.write_bytes(png_bytes)
    return [svg, png]


#: Faults for the pictured run, so the report shows what it is for: the two analyses
#: overlapping, a rate-limited call retried, and Stability refusing a prompt once (the censor
#: rewrites it and the illustration runs again).
FAULTS = (
    "latency@azure_vision:seconds=0.35;latency@openai:seconds=0.12;"
    "rate_limit@openai:first_n=1,retry_after=0.1;content_policy@stability:first_n=1"
)


def _simulated_run(work: Path) -> Any:
    """The trace of a real ``webcam_story`` run against the simulator (with :data:`FAULTS`)."""
    from calliope_graph.flow import Flow
    from calliope_graph.simulate import Simulator, parse_faults

    flow = Flow.load("webcam_story")
    image = ROOT / "examples" / "media" / "webcam.jpg"
    simulator = Simulator(faults=parse_faults(FAULTS))
    result = asyncio.run(flow.ainvoke({"image": str(image)}, out_dir=work, simulator=simulator))
    return result.trace


def _sample_run(work: Path) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    import importlib

    sample = importlib.import_module("_viz_sample")
    return sample.sample_trace(work)


def make_report(work: Path) -> Path:
    from calliope_graph.viz import render_report

    try:
        trace = _simulated_run(work)
    except Exception as exc:  # the runner is young: still show a report
        print(f"note: simulated run failed ({type(exc).__name__}: {exc}); using the sample trace")
        trace = _sample_run(work)
    return render_report(trace, work / "report.html")


def screenshot(report: Path, target: Path) -> bool:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("skipped report.png: chromium is missing (apt-get install chromium, or make browser)")
        return False
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped report.png: playwright-python is missing (pip install playwright)")
        return False
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            remote = [u for u in requests if not u.startswith("file://")]
            if remote:
                raise RuntimeError(f"the report requested {remote}: it must be self-contained")
            # The part a reader of the README cares about: summary, drawing and timeline.
            boxes = [page.locator(f"#{part}").bounding_box() for part in PICTURED]
            top = min(b["y"] for b in boxes if b) - 12
            bottom = max(b["y"] + b["height"] for b in boxes if b) + 12
            page.screenshot(
                path=str(target),
                full_page=True,
                clip={"x": 0, "y": max(top, 0), "width": 1280, "height": bottom - max(top, 0)},
            )
        finally:
            browser.close()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=IMAGES, help="folder for the pictures")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for path in draw_flow(out):
        print(f"wrote {path}")
    with tempfile.TemporaryDirectory(prefix="calliope-pictures-") as tmp:
        report = make_report(Path(tmp))
        if screenshot(report, out / "report.png"):
            print(f"wrote {out / 'report.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
