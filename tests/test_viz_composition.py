"""Seeing composition: maps, switches and subflows in every drawing, the report and the CLI.

The storyboard (a map of the ``illustrate_scene`` subflow, itself using the ``illustrate``
subflow) and a small switch flow are drawn, run against the simulator, reported and opened in
headless Chromium (where it is installed).
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from calliope_graph.flow import Flow, FlowSpec, NodeExecution, Trace, load_spec
from calliope_graph.simulate import Simulator
from calliope_graph.viz import FORMATS, draw, render_report, to_networkx
from calliope_graph.viz._report._data import aggregate, lane_parent

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

SWITCH_YAML = """
name: switchy
description: a switch on the text
inputs:
  text: {type: text}
nodes:
  pick:
    kind: switch
    params:
      cases:
        - when: "contains(@, 'fox')"
          goto: foxy
      default: plain
    inputs: {value: inputs.text}
  foxy:
    kind: prompt_template
    params: {template: "A fox: {text}"}
    inputs: {text: inputs.text}
  plain:
    kind: prompt_template
    params: {template: "Plain: {text}"}
    inputs: {text: inputs.text}
  story:
    kind: text_to_text
    model: openai-gpt-4o
    inputs: {text: [foxy.text, plain.text]}
outputs:
  story: story.text
  branch: pick.branch
"""


def storyboard() -> FlowSpec:
    return load_spec(ROOT / "graphs" / "storyboard.yaml")


def switchy(tmp_path: Path) -> Path:
    path = tmp_path / "switchy.yaml"
    path.write_text(SWITCH_YAML, encoding="utf-8")
    return path


def _classes(el: ET.Element) -> set[str]:
    return set((el.get("class") or "").split())


def _run(flow: Flow, inputs: dict[str, Any], out: Path) -> Any:
    # In its own thread: a sync playwright in the same test owns this thread's event loop.
    def go() -> Any:
        return asyncio.run(flow.ainvoke(inputs, out_dir=out, simulator=Simulator()))

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(go).result(timeout=120)


# -- the drawable graph -------------------------------------------------------------------------
def test_graph_has_map_switch_and_subflow_clusters(tmp_path: Path) -> None:
    graph = to_networkx(storyboard())
    scenes = graph.nodes["scenes"]
    assert scenes["map"] == {"over": "story.object.scenes", "as": "scene", "max_parallel": 4}
    assert scenes["subflow"] == "illustrate_scene"
    assert all(p["many"] for p in scenes["outputs"])  # a map's outputs are lists
    edge = graph.edges["story", "scenes"]
    assert edge["kind"] == "map" and edge["label"] == "for each scene (≤4 at once)"
    inner = scenes["cluster"]
    assert {"scenes/illustration", "scenes/frame", "scenes/inputs.text"} <= set(inner.nodes)
    deeper = inner.nodes["scenes/illustration"]["cluster"]
    assert "scenes/illustration/image" in deeper
    assert deeper.edges["scenes/illustration/image", "scenes/illustration/fallback_image"][
        "kind"
    ] == ("fallback")

    switch = to_networkx(load_spec(switchy(tmp_path)))
    assert switch.edges["pick", "foxy"]["kind"] == "switch"
    assert switch.edges["pick", "foxy"]["label"] == "contains(@, 'fox')"
    assert switch.edges["pick", "plain"]["label"] == "default"
    assert switch.nodes["plain"]["switch_of"] == ["pick"]
    assert switch.nodes["plain"]["error_only"] is False  # chosen, not an error route


def test_mermaid_has_subgraphs_and_condition_labels(tmp_path: Path) -> None:
    text = str(draw(storyboard(), "mermaid"))
    assert len(re.findall(r"^\s*subgraph n\d+ \[", text, re.M)) == 2  # scenes, illustration
    assert len(re.findall(r"^\s*end$", text, re.M)) == 2
    assert "for each scene ×N · ≤4 at once" in text
    assert '|"for each scene (≤4 at once)"|' in text
    switch = str(draw(load_spec(switchy(tmp_path)), "mermaid"))
    assert "-. \"contains(@, 'fox')\" .->" in switch
    assert '-. "default" .->' in switch
    assert "stroke:#0f8a6c" in switch  # the switch edge style


def test_dot_has_nested_clusters_joined_at_their_borders() -> None:
    text = str(draw(storyboard(), "dot"))
    assert "compound=true" in text
    assert 'subgraph "cluster_scenes" {' in text
    assert 'subgraph "cluster_scenes/illustration" {' in text
    # The map edge ends on the cluster's border, at the child input it feeds.
    assert re.search(r'"story"[^\n]* -> "scenes/[^"]+" \[[^\n]*lhead="cluster_scenes"', text)
    assert re.search(r'ltail="cluster_scenes"', text)


def test_svg_draws_clusters_map_stacks_and_switch_edges(tmp_path: Path) -> None:
    root = ET.fromstring(str(draw(storyboard(), "svg")))
    clusters = {g.get("data-node"): g for g in root.iter(f"{SVG}g") if "cluster" in _classes(g)}
    assert set(clusters) == {"scenes", "scenes/illustration"}
    assert "map" in _classes(clusters["scenes"])
    assert len([r for r in clusters["scenes"].iter(f"{SVG}rect") if "stack" in _classes(r)]) >= 2
    body = next(g for g in clusters["scenes"] if "cluster-body" in _classes(g))
    inside = {g.get("data-node") for g in body.iter(f"{SVG}g") if "node" in _classes(g)}
    assert {"scenes/frame", "scenes/illustration", "scenes/illustration/image"} <= inside
    assert not any("cluster-toggle" in _classes(g) for g in root.iter(f"{SVG}g"))  # report only
    edges = [g for g in root.iter(f"{SVG}g") if "edge-map" in _classes(g)]
    assert [(g.get("data-source"), g.get("data-target")) for g in edges] == [("story", "scenes")]

    switch = ET.fromstring(str(draw(load_spec(switchy(tmp_path)), "svg")))
    branches = [g for g in switch.iter(f"{SVG}g") if "edge-switch" in _classes(g)]
    assert {g.get("data-target") for g in branches} == {"foxy", "plain"}
    labels = ["".join(t.itertext()) for t in switch.iter(f"{SVG}text")]
    assert "contains(@, 'fox')" in labels and "default" in labels


def test_ascii_indents_the_subflow_and_writes_the_branches(tmp_path: Path) -> None:
    text = str(draw(storyboard(), "ascii"))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "⧉ once per item of story.object.scenes (≤4 at once)" in text
    assert re.search(r"^│ ┌─ illustration ", text, re.M)  # the child, inside the scenes box
    assert re.search(r"^│ │ ┌─ image ", text, re.M)  # the grandchild, one level deeper
    switch = str(draw(load_spec(switchy(tmp_path)), "ascii"))
    assert "⑂ when contains(@, 'fox') → foxy" in switch
    assert "⑂ otherwise → plain" in switch
    assert "when chosen by pick" in switch


def test_png_of_a_flow_with_clusters() -> None:
    png = draw(storyboard(), "png")
    assert isinstance(png, bytes)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.height > image.width > 600


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_or_self_reaching_child_flow_still_draws(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "loop.yaml").write_text(
        "name: loop\nnodes:\n  again: {kind: flow, params: {flow: loop.yaml}}\n", encoding="utf-8"
    )
    path = tmp_path / "parent.yaml"
    path.write_text(
        "name: parent\nnodes:\n"
        "  lost: {kind: flow, params: {flow: nowhere.yaml}}\n"
        "  looped: {kind: flow, params: {flow: loop.yaml}}\n",
        encoding="utf-8",
    )
    spec = load_spec(path)
    graph = to_networkx(spec)
    assert graph.nodes["lost"]["cluster"] is None
    assert "not loaded" in graph.nodes["lost"]["note"]
    looped = graph.nodes["looped"]["cluster"]  # loop.yaml is drawn once, then stops
    assert looped is not None
    assert "reaches itself" in looped.nodes["looped/again"]["note"]
    out = draw(spec, fmt)
    assert out


# -- the run report ----------------------------------------------------------------------------
class _Tree(HTMLParser):
    """The report's HTML as an ElementTree (the standard library has no HTML DOM)."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr", "source", "col", "wbr"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = ET.Element("document")
        self.stack = [self.root]
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = ET.SubElement(self.stack[-1], tag, {k: v or "" for k, v in attrs})
        if tag not in self.VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ET.SubElement(self.stack[-1], tag, {k: v or "" for k, v in attrs})

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        el = self.stack[-1]
        if len(el):
            el[-1].tail = (el[-1].tail or "") + data
        else:
            el.text = (el.text or "") + data


def sel(root: ET.Element, tag: str | None = None, *classes: str, **attrs: str) -> list[ET.Element]:
    """Elements under ``root`` of ``tag`` having ``classes`` and ``attrs`` (``data_node`` is
    ``data-node``)."""
    wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
    return [
        el
        for el in root.iter(tag)
        if set(classes) <= _classes(el) and all(el.get(k) == v for k, v in wanted.items())
    ]


def one(root: ET.Element, tag: str | None = None, *classes: str, **attrs: str) -> ET.Element:
    found = sel(root, tag, *classes, **attrs)
    assert found, (tag, classes, attrs)
    return found[0]


def text_of(el: ET.Element) -> str:
    return " ".join("".join(el.itertext()).split())


def _page(path: Path) -> ET.Element:
    return _Tree(path.read_text(encoding="utf-8")).root


@pytest.fixture(scope="module")
def storyboard_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("storyboard")
    result = _run(Flow.load("storyboard"), {"premise": "a fox"}, out)
    return render_report(result.trace, out / "report.html")


def test_report_nests_map_items_and_subflow_lanes(storyboard_report: Path) -> None:
    timeline = one(_page(storyboard_report), "section", id="timeline")
    rows = {g.get("data-lane"): g for g in sel(timeline, "g", "lane-row")}
    items = sorted(k for k in rows if k and re.fullmatch(r"scenes\[\d+\]", k))
    assert len(items) >= 1
    assert rows["scenes"].get("data-parent") is None
    for item in items:
        assert rows[item].get("data-parent") == "scenes"
        assert rows[f"{item}/illustration"].get("data-parent") == item
        image = rows[f"{item}/illustration/image"]
        assert image.get("data-parent") == f"{item}/illustration"
        assert image.get("data-depth") == "3"
        assert sel(image, "rect", "bar", "status-ok")
    assert sel(rows["scenes"], "rect", "envelope", "status-ok")  # the map's lane spans items
    order = list(rows)  # parents before children, items in order
    assert order.index("scenes") < order.index(items[0]) < order.index(f"{items[0]}/frame")


def test_report_drawing_colours_clusters_and_counts_items(storyboard_report: Path) -> None:
    page = _page(storyboard_report)
    n = len(sel(one(page, "section", id="timeline"), "g", "lane-row", data_parent="scenes"))
    drawing = one(page, "section", id="drawing")
    cluster = one(drawing, "g", "cluster", data_node="scenes")
    assert "status-ok" in _classes(cluster)
    assert sel(cluster, "g", "cluster-toggle")
    inner = one(drawing, "g", "node", data_node="scenes/illustration/image")
    assert "status-ok" in _classes(inner)
    notes = {g.get("data-node"): text_of(g) for g in sel(drawing, "g", "node-note")}
    assert notes["scenes"] == f"{n} items"
    assert notes["scenes/frame"] == f"×{n}"  # once per item
    taken = {(g.get("data-source"), g.get("data-target")) for g in sel(drawing, "g", "taken")}
    assert ("story", "scenes") in taken
    assert ("scenes/illustration/inputs.text", "scenes/illustration/image") in taken


def test_report_details_group_items_and_subflow_executions(storyboard_report: Path) -> None:
    page = _page(storyboard_report)
    article = one(page, "article", "node-detail", data_node="scenes")
    links = sel(article, "a", "item-link")
    assert links and all(sel(a, "span", "badge", "status-ok") for a in links)
    item = one(article, "details", "nested-detail", data_node="scenes[0]")
    image = one(item, "details", "nested-detail", data_node="scenes[0]/illustration/image")
    assert image.get("data-base") == "scenes/illustration/image"
    assert sel(image, "img", "thumb")
    # Nested executions are not separate top-level articles, nor counted as the flow's nodes.
    assert [a.get("data-node") for a in sel(page, "article", "node-detail")] == [
        "prompt",
        "story",
        "scenes",
    ]
    assert "ok ×3" in text_of(one(page, "section", id="summary"))


def test_report_shows_the_branch_taken_and_greys_the_other(tmp_path: Path) -> None:
    result = _run(Flow.load(str(switchy(tmp_path))), {"text": "a fox"}, tmp_path / "run")
    page = _page(render_report(result.trace, tmp_path / "run" / "report.html"))
    drawing = one(page, "section", id="drawing")
    assert "status-not_taken" in _classes(one(drawing, "g", "node", data_node="plain"))
    assert "status-ok" in _classes(one(drawing, "g", "node", data_node="foxy"))
    edges = {g.get("data-target"): _classes(g) for g in sel(drawing, "g", "edge-switch")}
    assert "taken" in edges["foxy"] and "not-taken" in edges["plain"]
    summary = one(page, "section", id="summary")
    branches = text_of(one(summary, "ul", "branches"))
    assert "pick → foxy" in branches and "contains(@, 'fox')" in branches
    assert "not taken: plain" in branches
    assert "switch:" not in text_of(summary)  # a branch not taken is not a fallback
    plain = one(page, "article", data_node="plain")
    assert text_of(one(plain, "div", "branch-note")) == "Branch not taken: switch pick chose foxy."
    assert text_of(one(one(page, "article", data_node="pick"), "b", "branch")) == "foxy"


def test_a_failed_item_makes_the_map_failed() -> None:
    def e(node: str, item: int | None, status: Any) -> NodeExecution:
        return NodeExecution(node=node, kind="flow", started_at=1.0, status=status, item=item)

    items = [e("scenes", 0, "ok"), e("scenes", 1, "failed"), e("scenes", 2, "ok")]
    assert aggregate(items) == "failed"
    assert aggregate(items[::2]) == "ok"
    assert lane_parent("scenes[1]") == "scenes"
    assert lane_parent("scenes[1]/illustration/image") == "scenes[1]/illustration"
    assert lane_parent("scenes") is None
    trace = Trace(flow="storyboard", thread_id="t", started_at=1.0, status="failed")
    trace.executions = items
    trace.spec = storyboard()
    from calliope_graph.viz._report._data import drawing_state

    status, _ = drawing_state(trace, to_networkx(trace.spec))
    assert status["scenes"] == "failed"
    assert status["prompt"] == "not_run"


# -- in a real browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("headless Chromium is missing: run `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def test_report_folds_lanes_and_clusters_in_the_browser(
    browser: Any, storyboard_report: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(storyboard_report.resolve().as_uri())
        page.wait_for_load_state("load")
        assert errors == []
        row = page.locator('#timeline g.lane-row[data-lane="scenes[0]/illustration/image"]')
        assert row.is_visible()
        height = page.evaluate("document.querySelector('svg.timeline').viewBox.baseVal.height")
        page.locator('#timeline g.lane-row[data-lane="scenes"] .tl-toggle').click()
        assert not row.is_visible()
        assert page.locator('#timeline g.lane-row[data-lane="scenes"]').is_visible()
        folded = page.evaluate("document.querySelector('svg.timeline').viewBox.baseVal.height")
        assert folded < height  # the rest moved up
        page.locator('#timeline g.lane-row[data-lane="scenes"] .tl-toggle').click()
        assert row.is_visible()

        inner = page.locator('#drawing g.node[data-node="scenes/illustration/image"]')
        assert inner.is_visible()
        page.locator(
            '#drawing g.cluster[data-node="scenes"] > .cluster-frame .cluster-toggle'
        ).click()
        assert not inner.is_visible()
        assert page.locator('#drawing g.cluster.collapsed[data-node="scenes"]').count() == 1
        page.locator(
            '#drawing g.cluster[data-node="scenes"] > .cluster-frame .cluster-toggle'
        ).click()
        assert inner.is_visible()

        # A node inside the map opens its first item's details, not the cluster's article.
        inner.click()
        opened = page.locator('details.nested-detail[data-node="scenes[0]/illustration/image"]')
        page.wait_for_function(
            "() => document.querySelector("
            "'details.nested-detail[data-node=\"scenes[0]/illustration/image\"]').open"
        )
        assert opened.is_visible()
        assert errors == []
    finally:
        page.close()


# -- the CLI's progress lines --------------------------------------------------------------------
def test_progress_lines_say_which_item_of_which_map(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from calliope_graph.cli.progress import RunProgress

    buffer = io.StringIO()
    progress = RunProgress(console=Console(file=buffer, width=200, color_system=None))

    class Event:
        def __init__(self, kind: str, execution: NodeExecution) -> None:
            self.kind, self.node, self.execution = kind, execution.node, execution

    def run(event: str, **fields: Any) -> str:
        buffer.seek(0)
        buffer.truncate()
        progress(Event(event, NodeExecution(started_at=1.0, **fields)))
        return buffer.getvalue()

    line = run("started", node="scenes", kind="flow", item=2)
    assert "scenes[2] (flow, item 2 of map scenes) started" in line
    line = run("finished", node="scenes[2]/illustration/image", kind="text_to_image", ended_at=2.0)
    assert "scenes[2]/illustration/image (text_to_image) finished" in line
    line = run(
        "finished",
        node="pick",
        kind="switch",
        ended_at=1.0,
        status="ok",
        outputs={"branch": "foxy"},
    )
    assert "→ chose foxy" in line
    line = run("skipped", node="plain", kind="switch", status="skipped", branch="switch:pick→foxy")
    assert "plain (switch) not taken (pick chose foxy)" in line


def test_progress_lines_call_a_candidate_a_candidate_not_a_map_item() -> None:
    from rich.console import Console

    from calliope_graph.cli.progress import RunProgress

    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    progress = RunProgress(console=console, candidates={"sheet"})

    class Event:
        def __init__(self, execution: NodeExecution) -> None:
            self.kind, self.node, self.execution = "started", execution.node, execution

    progress(Event(NodeExecution(node="sheet", kind="text_to_image", started_at=1.0, item=1)))
    assert "sheet[1] (text_to_image, candidate 1 of sheet) started" in buffer.getvalue()
