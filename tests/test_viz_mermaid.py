"""The Mermaid drawings parse and render with Mermaid itself, in headless Chromium.

Mermaid is JavaScript and is not vendored: point ``CALLIOPE_MERMAID_JS`` at a local
``mermaid.min.js`` (``npm install mermaid`` puts it in ``node_modules/mermaid/dist/``) to run
this check; without it (or without Chromium) the test skips. Nothing is fetched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from _viz_sample import sample_spec

from calliope_graph.flow import load_spec
from calliope_graph.viz import draw

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MERMAID_JS = os.environ.get("CALLIOPE_MERMAID_JS") or str(
    ROOT / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
)

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="headless Chromium is missing: run `apt-get install chromium` (or `make browser`)",
    ),
    pytest.mark.skipif(
        not Path(MERMAID_JS).is_file(),
        reason="set CALLIOPE_MERMAID_JS to a local mermaid.min.js (npm install mermaid)",
    ),
]

RENDER = """async (source) => {
  try {
    const out = await mermaid.render("d" + Math.floor(Math.random() * 1e9), source);
    const holder = document.createElement("div");
    holder.innerHTML = out.svg;
    return [...holder.querySelectorAll(".edgeLabel")].map((e) => e.textContent).join("\\n");
  } catch (err) {
    return "ERROR " + (err && err.message ? err.message : err);
  }
}"""


def test_every_mermaid_drawing_renders(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "mermaid.html"
    page_file.write_text(
        f'<!DOCTYPE html><html><body><script src="{Path(MERMAID_JS).resolve().as_uri()}">'
        "</script></body></html>",
        encoding="utf-8",
    )
    sources = {"sample": draw(sample_spec(), "mermaid")}
    for path in sorted((ROOT / "graphs").glob("*.yaml")):
        sources[path.stem] = draw(load_spec(path), "mermaid")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page: Any = browser.new_page()
            page.goto(page_file.as_uri())
            page.evaluate("mermaid.initialize({startOnLoad: false, securityLevel: 'strict'})")
            for name, source in sources.items():
                labels = page.evaluate(RENDER, source)
                assert not labels.startswith("ERROR"), f"{name}: {labels}"
                if name == "webcam_story":
                    assert "on Stability fails → OpenAI" in labels
                    assert "retry prompt ≤3" in labels
        finally:
            browser.close()
