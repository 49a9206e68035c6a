"""Structure drawings: every format, on the shipped webcam_story flow and the viz sample."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from _viz_sample import FLOW_NODES, sample_spec
from PIL import Image

from calliope_graph.errors import ConfigurationError
from calliope_graph.flow import FlowSpec, load_spec
from calliope_graph.viz import FORMATS, draw, to_networkx

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"


def webcam() -> FlowSpec:
    return load_spec(ROOT / "graphs" / "webcam_story.yaml")


SPECS = {"webcam_story": webcam, "sample": sample_spec}


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> FlowSpec:
    return SPECS[request.param]()


def _classes(el: ET.Element) -> set[str]:
    return set((el.get("class") or "").split())


def _svg(spec: FlowSpec) -> ET.Element:
    text = draw(spec, "svg")
    assert isinstance(text, str)
    return ET.fromstring(text)


# -- networkx --------------------------------------------------------------------------------
def test_networkx_graph_carries_kinds_providers_ports_and_edge_kinds() -> None:
    graph = to_networkx(webcam())
    assert isinstance(graph, nx.DiGraph)
    story = graph.nodes["story"]
    assert story["kind"] == "text_to_text"
    assert story["provider"] == "openai"
    assert story["model"] == "gpt-6-luna"
    assert {p["name"] for p in story["inputs"]} == {"text"}
    assert story["outputs"][0] == {"name": "text", "type": "text", "required": True, "many": False}
    assert graph.nodes["inputs.image"]["role"] == "input"
    assert graph.nodes["outputs.frame"]["role"] == "output"
    assert graph.nodes["censor"]["fallback_only"] is True
    assert graph.nodes["openai_illustration"]["fallback_only"] is True

    fallback = graph.edges["illustration", "openai_illustration"]
    assert fallback["kind"] == "fallback"
    assert fallback["label"] == "Stability fails → OpenAI"
    assert fallback["when"] == ["any"]
    rewrite = graph.edges["illustration", "censor"]
    assert rewrite["kind"] == "rewrite" and rewrite["bound"] == 3
    back = graph.edges["censor", "illustration"]
    assert back["kind"] == "rewrite_back" and "≤3" in back["label"]
    assert graph.edges["azure_analysis", "continue.azure_analysis"]["kind"] == "continue"
    assert graph.edges["azure_analysis", "merge"]["merge"] is True
    # The two analyses fan out from the image in the same superstep.
    assert graph.edges["inputs.image", "azure_analysis"]["parallel"] is True
    assert graph.edges["inputs.image", "llm_analysis"]["parallel"] is True


def test_draw_and_to_networkx_accept_a_flow_with_a_spec_attribute() -> None:
    class Holder:
        spec = sample_spec()

    assert set(FLOW_NODES) <= set(to_networkx(Holder()).nodes)
    assert draw(Holder(), "mermaid") == draw(sample_spec(), "mermaid")
    with pytest.raises(TypeError, match="FlowSpec"):
        to_networkx(object())


def test_unknown_format_says_which_exist() -> None:
    with pytest.raises(ConfigurationError, match="mermaid, dot, ascii, svg, png"):
        draw(sample_spec(), "jpeg")


# -- Mermaid ---------------------------------------------------------------------------------
def _mermaid_ids(text: str) -> dict[str, str]:
    """Mermaid id → the flow node named in its label (rectangles only: not inputs/outputs)."""
    return {m.group(1): m.group(2) for m in re.finditer(r'^\s+(n\d+)\["<b>([^<]+)</b>', text, re.M)}


def test_mermaid_has_distinct_labelled_fallback_and_rewrite_edges() -> None:
    text = draw(webcam(), "mermaid")
    assert isinstance(text, str)
    assert "flowchart TB" in text
    ids = {name: nid for nid, name in _mermaid_ids(text).items()}
    ill, dalle, censor = ids["illustration"], ids["openai_illustration"], ids["censor"]
    assert f'{ill} -. "on Stability fails → OpenAI" .-> {dalle}' in text
    assert f'{ill} == "content policy → censor, retry (≤3)" ==> {censor}' in text
    assert f'{censor} == "retry prompt ≤3" ==> {ill}' in text
    assert re.search(rf'{ids["story"]} -->\|"text → prompt"\| {ill}', text)
    assert "on timeout → continue with Azure alone" in text
    # Nodes show kind, provider/model and typed ports.
    assert "text_to_image · stability/" in text
    assert "<i>in</i> prompt: text" in text
    # Every link has a style, and none is rendered by a web service.
    links = [ln for ln in text.splitlines() if re.search(r"(-->|\.->|==>)", ln)]
    indices = {
        int(i)
        for ln in text.splitlines()
        if ln.strip().startswith("linkStyle")
        for i in ln.split()[1].split(",")
    }
    assert indices == set(range(len(links)))
    assert "http" not in text.replace("http://www.w3.org", "")


def test_mermaid_escapes_user_text() -> None:
    text = draw(sample_spec(), "mermaid")
    assert isinstance(text, str)
    # Labels are double-quoted; no raw quote, backtick or angle bracket from user text leaks in.
    for line in text.splitlines():
        for label in re.findall(r'"([^"]*)"', line):
            stripped = re.sub(r"</?(b|i|br/?)>", "", label)
            assert not set(stripped) & set('"`<>'), line


# -- DOT -------------------------------------------------------------------------------------
def test_dot_is_balanced_with_styled_edges(spec: FlowSpec) -> None:
    text = draw(spec, "dot")
    assert isinstance(text, str)
    assert text.startswith("digraph ")
    body = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # quoted strings may hold anything
    assert body.count("{") == body.count("}")
    assert body.count("<") == body.count(">") - body.count("->")
    assert "style=dashed" in text  # fallback
    assert "style=dotted" in text  # continue
    assert "style=bold" in text  # rewrite
    assert 'style="bold,dashed"' in text  # rewrite_back
    for name in spec.nodes:
        assert f'"{name}"' in text


# -- ASCII -----------------------------------------------------------------------------------
def test_ascii_names_every_node_and_route(spec: FlowSpec) -> None:
    text = draw(spec, "ascii")
    assert isinstance(text, str)
    for name in spec.nodes:
        assert f"─ {name} " in text or f"┄ {name} " in text
    assert "⟲" in text  # censor-and-retry
    assert "⇢" in text  # fallback / continue
    assert "runs only on error" in text


# -- SVG -------------------------------------------------------------------------------------
def test_svg_parses_with_nodes_edges_and_labels(spec: FlowSpec) -> None:
    root = _svg(spec)
    assert root.tag == f"{SVG}svg"
    groups = list(root.iter(f"{SVG}g"))
    nodes = {g.get("data-node"): g for g in groups if "node" in _classes(g)}
    assert set(spec.nodes) <= set(nodes)
    for name in spec.nodes:
        texts = "".join(t.text or "" for t in nodes[name].iter(f"{SVG}text"))
        assert name in texts
        assert spec.nodes[name].kind in texts
    edges = [g for g in groups if "edge" in _classes(g)]
    kinds = {g.get("data-kind") for g in edges}
    assert kinds == {"data", "fallback", "continue", "rewrite", "rewrite_back"}
    styles = set().union(*(_classes(g) for g in edges))
    assert {"edge-fallback", "edge-rewrite", "edge-continue", "edge-parallel", "edge-merge"} <= (
        styles
    )
    labels = [
        "".join(t.text or "" for t in g.iter(f"{SVG}text"))
        for g in groups
        if "edge-label" in _classes(g)
    ]
    assert any("≤3" in lab for lab in labels)
    # Dash patterns tell the edge kinds apart even in greyscale.
    dashes = {g.get("data-kind"): next(g.iter(f"{SVG}path")).get("stroke-dasharray") for g in edges}
    assert dashes["data"] is None
    assert len({dashes["fallback"], dashes["continue"], dashes["rewrite_back"]}) == 3


def test_svg_labels_for_webcam_story_routes() -> None:
    text = draw(webcam(), "svg")
    assert isinstance(text, str)
    root = ET.fromstring(text)
    labels = {
        g.get("data-edge"): "".join(t.text or "" for t in g.iter(f"{SVG}text"))
        for g in root.iter(f"{SVG}g")
        if "edge-label" in _classes(g)
    }
    assert labels["illustration|openai_illustration|fallback"].endswith("Stability fails → OpenAI")
    assert "≤3" in labels["illustration|censor|rewrite"]
    assert "http" not in text.replace("http://www.w3.org/2000/svg", "")


def test_svg_colours_nodes_by_status_and_marks_taken_edges() -> None:
    from calliope_graph.viz._layout import layout
    from calliope_graph.viz._svg import render_svg

    text = render_svg(
        layout(to_networkx(sample_spec())),
        status={"story": "ok", "illustration": "fallback"},
        taken={("story", "illustration", "data")},
    )
    root = ET.fromstring(text)
    nodes = {g.get("data-node"): _classes(g) for g in root.iter(f"{SVG}g") if g.get("data-node")}
    assert "status-ok" in nodes["story"]
    assert "status-fallback" in nodes["illustration"]
    assert "status-not_run" in nodes["censor"]
    edges = [g for g in root.iter(f"{SVG}g") if "edge" in _classes(g)]
    taken = [g for g in edges if "taken" in _classes(g)]
    assert [(g.get("data-source"), g.get("data-target")) for g in taken] == [
        ("story", "illustration")
    ]


# -- PNG -------------------------------------------------------------------------------------
def test_png_opens_in_pillow(spec: FlowSpec) -> None:
    data = draw(spec, "png")
    assert isinstance(data, bytes)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    assert image.width > 300 and image.height > 300
    # Not a blank canvas: it has coloured node fills and dark text.
    colours: Any = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_draws_every_shipped_flow(fmt: str) -> None:
    for path in sorted((ROOT / "graphs").glob("*.yaml")):
        out = draw(load_spec(path), fmt)
        assert out, path.name
