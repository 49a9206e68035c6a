"""`calliope-graph draw` and `calliope-graph report` as a user runs them (click's CliRunner)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from _viz_sample import FLOW_NODES, sample_trace
from click.testing import CliRunner, Result
from PIL import Image

from calliope_graph.cli import EXIT_CODES, main

SVG = "{http://www.w3.org/2000/svg}"

FLOW = """
name: tiny_story
description: a prompt becomes a story and its picture, with a fallback painter
inputs:
  idea: {type: text}
nodes:
  story:
    kind: text_to_text
    model: openai-gpt-4o
    inputs: {text: inputs.idea}
  picture:
    kind: text_to_image
    model: stability-core
    inputs: {prompt: story.text}
    on_error:
      - when: [content_policy]
        rewrite: {via: censor, port: prompt, max_attempts: 2}
      - {when: [any], goto: painter, label: "Stability down → DALL·E"}
  censor:
    kind: censor_text
    model: openai-gpt-4o-mini
  painter:
    kind: text_to_image
    model: openai-gpt-image-2
    inputs: {prompt: story.text}
outputs:
  story: story.text
  picture: picture.image
"""


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_story.yaml"
    path.write_text(FLOW, encoding="utf-8")
    return path


def test_draw_svg_to_a_file(flow_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "drawings" / "flow.svg"
    result = cli("draw", str(flow_file), "--format", "svg", "-o", str(target))
    assert result.exit_code == 0, result.output
    root = ET.fromstring(target.read_text(encoding="utf-8"))
    nodes = {g.get("data-node") for g in root.iter(f"{SVG}g") if g.get("data-node")}
    assert {"story", "picture", "censor", "painter"} <= nodes
    kinds = {g.get("data-kind") for g in root.iter(f"{SVG}g") if g.get("data-kind")}
    assert {"data", "fallback", "rewrite", "rewrite_back"} <= kinds
    labels = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "Stability down → DALL·E" in labels
    assert "≤2" in labels


def test_draw_png_to_a_file_and_format_from_the_extension(flow_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "flow.png"
    result = cli("draw", str(flow_file), "-o", str(target))  # no --format: from ".png"
    assert result.exit_code == 0, result.output
    image = Image.open(io.BytesIO(target.read_bytes()))
    assert image.format == "PNG"
    assert 300 < image.width < 6000 and 300 < image.height < 6000


def test_draw_png_needs_a_file(flow_file: Path) -> None:
    result = CliRunner().invoke(main, ["draw", str(flow_file), "--format", "png"])
    assert result.exit_code == EXIT_CODES["usage"]
    assert "-o FILE" in result.output


def test_draw_text_formats_to_stdout(flow_file: Path) -> None:
    mermaid = cli("draw", str(flow_file), "--format", "mermaid")
    assert mermaid.exit_code == 0
    assert "flowchart TB" in mermaid.output
    assert '-. "on Stability down → DALL·E" .->' in mermaid.output
    assert '== "retry prompt ≤2" ==>' in mermaid.output
    dot = cli("draw", str(flow_file), "--format", "dot")
    assert dot.output.startswith('digraph "tiny_story" {')
    ascii_ = cli("draw", str(flow_file))  # ascii by default
    assert "┌─ story " in ascii_.output
    assert max(len(line) for line in ascii_.output.splitlines()) <= 100


def test_draw_a_shipped_flow_by_name(tmp_path: Path) -> None:
    target = tmp_path / "webcam_story.svg"
    result = cli("draw", "webcam_story", "--format", "svg", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert 'data-node="illustration"' in target.read_text(encoding="utf-8")


def test_draw_a_broken_flow_still_draws_it(tmp_path: Path) -> None:
    """A flow that does not validate can still be looked at: that is how one debugs it."""
    path = tmp_path / "broken.yaml"
    path.write_text(
        "name: broken\nnodes:\n  a:\n    kind: no_such_kind\n    inputs: {x: ghost.out}\n",
        encoding="utf-8",
    )
    result = cli("draw", str(path), "--format", "mermaid")
    assert result.exit_code == 0, result.output
    assert "no_such_kind" in result.output and "ghost" in result.output


def test_draw_an_unknown_flow_is_an_invalid_flow(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["draw", str(tmp_path / "nope.yaml")])
    assert result.exit_code == EXIT_CODES["invalid_flow"]
    assert "does not exist" in result.output


def test_report_from_a_saved_trace(tmp_path: Path) -> None:
    trace = sample_trace(tmp_path / "run")
    saved = trace.save(tmp_path / "run" / "trace.json")
    result = cli("report", str(saved))
    assert result.exit_code == 0, result.output
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    for name in FLOW_NODES:
        assert f'data-node="{name}"' in html
    assert 'src="illustration.png"' in html

    elsewhere = tmp_path / "share" / "index.html"
    assert cli("report", str(saved), "-o", str(elsewhere)).exit_code == 0
    assert 'src="../run/illustration.png"' in elsewhere.read_text(encoding="utf-8")


def test_report_of_a_missing_or_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["report", str(tmp_path / "trace.json")])
    assert missing.exit_code == EXIT_CODES["media"]
    assert "does not exist" in missing.output
    foreign = tmp_path / "other.json"
    foreign.write_text('{"hello": "world"}', encoding="utf-8")
    result = CliRunner().invoke(main, ["report", str(foreign)])
    assert result.exit_code == EXIT_CODES["media"]
    assert "not a calliope-graph trace" in result.output


# -- the live report of `calliope-graph run` ------------------------------------------------------
def _chain(tmp_path: Path, length: int) -> Path:
    """A flow file: ``length`` passthrough nodes in a row (cheap, local, no provider)."""
    from calliope_graph.flow import Flow

    flow = Flow(f"chain_{length}")
    previous = flow.input("text")
    for i in range(length):
        previous = flow.add(f"n{i}", "passthrough", {"value": previous}).value
    flow.output("text", previous)
    path = tmp_path / "chain.json"
    path.write_text(flow.spec.model_dump_json(exclude_defaults=True), encoding="utf-8")
    return path


@pytest.fixture
def report_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each report.html the CLI writes, as the run status it showed (counted, not timed)."""
    import calliope_graph.viz as viz

    real = viz.render_report
    writes: list[str] = []

    def counting(trace: Any, out_path: Any) -> Path:
        writes.append(trace.status)
        return real(trace, out_path)

    monkeypatch.setattr(viz, "render_report", counting)
    # As if every event came within the interval: only the throttle's first write and the
    # final one may happen.
    monkeypatch.setattr("calliope_graph.cli.flows.REPORT_INTERVAL", 3600.0)
    return writes


def run_chain(tmp_path: Path, length: int) -> Result:
    return CliRunner().invoke(
        main,
        ["run", str(_chain(tmp_path, length)), "-i", "text=hello", "--simulate",
         "--out", str(tmp_path / "out")],
        catch_exceptions=False,
    )  # fmt: skip


def test_run_throttles_the_live_report_and_writes_the_final_one(
    tmp_path: Path, report_writes: list[str]
) -> None:
    """B9: the CLI re-rendered report.html on each of a 500-node chain's 1,000 events."""
    result = run_chain(tmp_path, 500)
    assert result.exit_code == 0, result.output
    assert report_writes == ["running", "ok"]  # not 1,001
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert all(f'id="node-n{i}"' in page for i in range(500))
    assert '<body class="run-ok">' in page


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, call: int, exc: BaseException) -> None:
    """The ``call``-th passthrough node to run raises ``exc``."""
    from calliope_graph.nodes.basic import Passthrough

    real = Passthrough.run
    calls: list[None] = []

    async def run(self: Passthrough, ctx: Any, **inputs: Any) -> dict[str, Any]:
        calls.append(None)
        if len(calls) == call:
            raise exc
        return await real(self, ctx, **inputs)

    monkeypatch.setattr(Passthrough, "run", run)


def test_a_failed_run_still_gets_its_final_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report_writes: list[str]
) -> None:
    _fail_on_call(monkeypatch, 4, ValueError("the fourth node broke"))
    result = run_chain(tmp_path, 10)
    assert result.exit_code == EXIT_CODES["run_failed"], result.output
    assert report_writes[-1] == "failed" and len(report_writes) <= 3
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert '<body class="run-failed">' in page and "the fourth node broke" in page


def test_an_interrupted_run_still_gets_its_final_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report_writes: list[str]
) -> None:
    _fail_on_call(monkeypatch, 4, KeyboardInterrupt())  # Ctrl-C while the fourth node runs
    result = run_chain(tmp_path, 10)
    assert result.exit_code == EXIT_CODES["interrupted"], result.output
    assert report_writes[-1] == "failed" and len(report_writes) <= 3
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert '<body class="run-failed">' in page and "interrupted" in page
    assert 'id="node-n2"' in page
