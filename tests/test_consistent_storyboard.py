"""The shipped ``consistent_storyboard`` flow offline (issue 20, item 5): premise → Story (hero,
scenes) → three character sheets judged by a vision model → every scene illustrated with the
chosen sheet as its reference image → frames in order.

The requests the simulator received are checked: three sheet requests with distinct seeds, one
judge request that saw the three pictures, and one illustration request per scene carrying the
chosen sheet's bytes. Validation refusing ``reference_images`` on a model that cannot take them
is ``tests/test_consistency.py::test_reference_images_on_a_model_that_cannot_take_them_is_refused``;
here the shipped subflow with such a model is refused too.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder

from calliope_graph.context import RetrySettings, RunContext
from calliope_graph.errors import ConfigurationError, FlowSpecError
from calliope_graph.flow import Flow, load_spec
from calliope_graph.graphs import __file__ as graphs_init
from calliope_graph.simulate import Simulator
from calliope_graph.viz import render_report

PREMISE = {"premise": "a fox who collects lost keys"}
GRAPHS = Path(graphs_init).parent


def _run(flow: Flow, out: Path, clock: Any) -> tuple[Any, Recorder, Simulator]:
    simulator = Simulator(sleep=clock)
    recorder = Recorder(simulator)
    ctx = RunContext.create(
        out,
        keys=simulator.keys(),
        transport=httpx.MockTransport(recorder),
        sleep=clock,
        retry=RetrySettings(max_attempts=1),
    )

    async def go() -> Any:
        try:
            return await flow.ainvoke(PREMISE, out_dir=out, ctx=ctx)
        finally:
            await ctx.aclose()

    return asyncio.run(go()), recorder, simulator


def _image_requests(recorder: Recorder) -> list[dict[str, Any]]:
    """The JSON bodies of the Gemini image requests, in the order they were sent."""
    return [
        json.loads(r.content)
        for r in recorder.requests
        if r.url.host == "generativelanguage.googleapis.com" and "image" in r.url.path
    ]


def _references(body: dict[str, Any]) -> list[bytes]:
    parts = body["contents"][0]["parts"]
    return [base64.b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p]


def test_it_runs_offline_judges_the_sheets_and_draws_every_scene_from_the_chosen_one(
    tmp_path: Path, clock: Any
) -> None:
    result, recorder, simulator = _run(Flow.load("consistent_storyboard"), tmp_path / "out", clock)
    outputs = result.outputs
    assert result.trace.status == "ok" and outputs["title"]

    # three sheets, drawn with distinct seeds and no reference (nothing to copy yet)
    bodies = _image_requests(recorder)
    sheets = [b for b in bodies if not _references(b)]
    assert len(sheets) == 3
    assert len({b["generationConfig"]["seed"] for b in sheets}) == 3

    # the judge saw the three pictures and scored each; the scores are in the trace
    (judge,) = [e for e in result.trace.executions if e.node == "pick_sheet"]
    scores = judge.outputs["scores"]
    assert [s["index"] for s in scores] == [0, 1, 2]
    assert all(0 <= s["score"] <= 10 and s["reason"] for s in scores)
    best = max(range(3), key=lambda i: (scores[i]["score"], -i))
    assert judge.outputs["index"] == best and outputs["sheet_scores"] == scores
    report = render_report(result.trace, result.out_dir / "report.html").read_text()
    assert all(f'<span class="text">{s["reason"]}</span>' in report for s in scores)
    judged = [r for r in recorder.requests if r.url.host == "api.openai.com"]
    assert sum(r.content.count(b"data:image/") for r in judged) == 3
    sheet = Path(outputs["sheet"].path)
    assert sheet.parent.name == str(best) and sheet.is_file()

    # one illustration per scene, each request carrying the chosen sheet as its reference
    (story,) = [e for e in result.trace.executions if e.node == "story"]
    scenes = story.outputs["object"]["scenes"]
    illustrations = [b for b in bodies if _references(b)]
    assert len(illustrations) == len(scenes) >= 1
    assert all(_references(b) == [sheet.read_bytes()] for b in illustrations)

    # frames in the scenes' order, each with its own picture
    frames = outputs["frames"]
    assert [f.text for f in frames] == [s["text"] for s in scenes]
    assert [Path(f.image.path).relative_to(result.out_dir).parts[:2] for f in frames] == [
        ("scenes", str(i)) for i in range(len(scenes))
    ]
    assert simulator.count("google") == 3 + len(scenes) and simulator.count("openai") == 2


def test_the_python_twin_runs_the_same(tmp_path: Path, clock: Any) -> None:
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("python_flows", root / "examples/python_flows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    twin = module.PYTHON_FLOWS["consistent_storyboard"]()
    result, _, _ = _run(twin, tmp_path / "py", clock)
    yaml, _, _ = _run(Flow.load("consistent_storyboard"), tmp_path / "yaml", clock)
    assert result.outputs["title"] == yaml.outputs["title"]
    assert result.outputs["sheet_scores"] == yaml.outputs["sheet_scores"]
    assert [f.text for f in result.outputs["frames"]] == [f.text for f in yaml.outputs["frames"]]


def test_the_cli_runs_it_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from calliope_graph.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["run", "consistent_storyboard", "--input", "premise=a lighthouse keeper"]
    args += ["--simulate", "--out", "out"]
    done = CliRunner().invoke(main, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "sheet_scores:" in done.output and "frames:" in done.output
    assert (tmp_path / "out" / "report.html").is_file()
    assert len(list((tmp_path / "out" / "sheet").glob("*/sheet.png"))) == 3


def test_the_scene_refuses_a_model_that_cannot_take_reference_images() -> None:
    text = (GRAPHS / "consistent_scene.yaml").read_text()
    assert "model: google-gemini-image" in text
    changed = text.replace("model: google-gemini-image", "model: fal-flux-schnell")
    with pytest.raises((ConfigurationError, FlowSpecError)) as info:
        Flow.from_spec(load_spec("consistent_scene.yaml", text=changed)).plan()
    message = str(info.value)
    assert "'illustration'" in message and "'fal-flux-schnell'" in message
    assert "reference_images" in message and "google-gemini-image" in message


async def test_the_served_graph_returns_the_frames_and_the_scores(tmp_path: Path) -> None:
    from calliope_graph.serve import ServeContext, ServeSettings, serve_graph

    settings = ServeSettings(media_root=tmp_path / "media", simulate=True)
    graph = serve_graph("consistent_storyboard", settings)
    done = await graph.ainvoke(PREMISE, context=ServeContext())
    assert len(done["sheet_scores"]) == 3 and "/sheet/" in done["sheet"]["url"]
    assert done["frames"] and len(done["frames"]) == len(done["images"])
    assert all("/scenes/" in image["url"] for image in done["images"])
