"""The run report in a real headless Chromium: no network, no console error, media load.

Needs Debian's ``chromium`` (``apt-get install chromium``, or ``make browser``) and
playwright-python; without them only these tests skip.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _viz_sample import FLOW_NODES, sample_trace

from calliope_graph.viz import render_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOW = "headless Chromium is missing: run `apt-get install chromium` (or `make browser`)"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=HOW)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # a test dependency: always installed

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


class Visit:
    """A page opened on a report, with everything it logged and requested."""

    def __init__(self, browser: Any, report: Path) -> None:
        self.console: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on(
            "console",
            lambda m: (
                self.console.append(f"{m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("requestfailed", lambda r: self.console.append(f"failed: {r.url}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(report.resolve().as_uri())
        self.page.wait_for_load_state("load")

    def count(self, selector: str) -> int:
        return int(self.page.locator(selector).count())


def test_report_opens_offline_with_media(browser: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    report = render_report(sample_trace(out), out / "report.html")
    visit = Visit(browser, report)
    page = visit.page
    try:
        assert visit.console == []
        assert visit.requests, "the page itself was requested"
        assert all(url.startswith("file://") for url in visit.requests), visit.requests
        for name in FLOW_NODES:
            assert visit.count(f'svg .node[data-node="{name}"]') == 1, name
        assert visit.count('svg .node.status-ok[data-node="story"]') == 1
        assert visit.count("svg .edge.taken") > 5
        assert visit.count('.bar[data-node="story"]') == 3
        assert visit.count('.bar[data-node="illustration"]') == 2
        thumbs = page.locator("img.thumb")
        assert thumbs.count() >= 2
        widths = page.eval_on_selector_all(
            "img.thumb",
            "els => Promise.all(els.map(el => el.decode().then(() => el.naturalWidth)))",
        )
        assert widths and all(w > 0 for w in widths), widths
        assert page.title()
        # Clicking a node of the drawing leads to its details.
        page.locator('svg .node[data-node="story"]').click()
        assert page.locator('.node-detail[data-node="story"]').is_visible()
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert visit.console == []
    finally:
        page.close()


def test_running_report_renders_and_reloads(browser: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    report = render_report(sample_trace(out, status="running"), out / "report.html")
    visit = Visit(browser, report)
    try:
        assert visit.console == []
        assert all(url.startswith("file://") for url in visit.requests), visit.requests
        assert visit.count('.bar.status-running[data-node="story"]') == 1
        assert visit.count('svg .node.status-not_run[data-node="frame"]') == 1
        assert visit.count('meta[http-equiv="refresh"]') == 1
        visit.page.screenshot(path=str(tmp_path / "running.png"))
    finally:
        visit.page.close()


def test_report_of_a_simulated_webcam_story_run(browser: Any, tmp_path: Path) -> None:
    import asyncio

    from calliope_graph.flow import Flow
    from calliope_graph.simulate import Simulator

    root = Path(__file__).resolve().parent.parent
    image = root / "examples" / "media" / "webcam.jpg"
    out = tmp_path / "out"
    flow = Flow.load("webcam_story")

    def run() -> Any:  # in its own thread: sync playwright owns this thread's event loop
        return asyncio.run(flow.ainvoke({"image": str(image)}, out_dir=out, simulator=Simulator()))

    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(run).result(timeout=60)
    report = render_report(result.trace, out / "report.html")
    visit = Visit(browser, report)
    try:
        assert visit.console == []
        assert all(url.startswith("file://") for url in visit.requests), visit.requests
        for name in ("azure_analysis", "llm_analysis", "merge", "story", "illustration", "frame"):
            assert visit.count(f'svg .node.status-ok[data-node="{name}"]') == 1, name
            assert visit.count(f'.bar[data-node="{name}"]') >= 1, name
        assert visit.count('svg .node.status-not_run[data-node="censor"]') == 1
        widths = visit.page.eval_on_selector_all(
            "img.thumb",
            "els => Promise.all(els.map(el => el.decode().then(() => el.naturalWidth)))",
        )
        assert len(widths) >= 2 and all(w > 0 for w in widths), widths
        visit.page.screenshot(path=str(tmp_path / "webcam_story_report.png"), full_page=True)
    finally:
        visit.page.close()


def test_report_of_a_run_with_a_retry_and_a_rewrite_loop(
    browser: Any, tmp_path: Path, clock: Any
) -> None:
    """A real simulated run where OpenAI rate-limits once and Stability refuses once."""
    import asyncio

    from _support import make_ctx

    from calliope_graph.flow import Flow
    from calliope_graph.simulate import Simulator, parse_faults

    root = Path(__file__).resolve().parent.parent
    image = root / "examples" / "media" / "webcam.jpg"
    out = tmp_path / "out"
    faults = "rate_limit@openai:first_n=1,retry_after=0.01;content_policy@stability:first_n=1"
    simulator = Simulator(faults=parse_faults(faults))
    flow = Flow.load("webcam_story")

    async def go() -> Any:  # the retry's backoff waits on the virtual clock
        ctx = make_ctx(simulator.transport(), simulator.keys(), clock, out)
        try:
            return await flow.ainvoke({"image": str(image)}, out_dir=out, ctx=ctx)
        finally:
            await ctx.aclose()

    def run() -> Any:  # in its own thread: sync playwright owns this thread's event loop
        return asyncio.run(go())

    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(run).result(timeout=60)
    report = render_report(result.trace, out / "report.html")
    visit = Visit(browser, report)
    try:
        assert visit.console == []
        assert all(url.startswith("file://") for url in visit.requests), visit.requests
        # The censor ran, the loop edges were taken, the illustration ran twice.
        assert visit.count('svg .node.status-ok[data-node="censor"]') == 1
        assert visit.count('svg .edge.taken[data-kind="rewrite"]') == 1
        assert visit.count('svg .edge.taken[data-kind="rewrite_back"]') == 1
        assert visit.count('svg .edge.taken[data-kind="fallback"]') == 0
        assert visit.count('.bar[data-node="illustration"]') == 2
        assert visit.count(".bar.status-retry") == 1  # the rate-limited attempt
        assert visit.count('.bar.status-fallback[data-node="illustration"]') == 1
        text = visit.page.locator("#summary").inner_text()
        assert "rewrite:censor" in text
        visit.page.screenshot(path=str(tmp_path / "retry_and_rewrite.png"), full_page=True)
        assert visit.console == []
    finally:
        visit.page.close()
