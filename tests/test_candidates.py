"""Candidates (flow/candidates.py): a generation node run N times in parallel, with distinct
seeds where its model takes one; its ports become lists of N; each candidate's failure is
handled by the node's routes alone; validation and drawings."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder

from calliope_graph.errors import FlowRunError, FlowSpecError
from calliope_graph.flow import Flow, load_spec
from calliope_graph.flow._lower_candidates import candidate_seeds
from calliope_graph.flow.construct import node_shapes
from calliope_graph.flow.validate import check
from calliope_graph.media import Image
from calliope_graph.simulate import Simulator, parse_faults
from calliope_graph.viz import draw, to_networkx

SVG = "{http://www.w3.org/2000/svg}"
CANDIDATES = """
name: three_pictures
inputs:
  prompt: {type: text}
nodes:
  picture:
    kind: text_to_image
    model: stability-core
    candidates: 3
    inputs: {prompt: inputs.prompt}
  pick:
    kind: choose
    inputs: {candidates: picture.image}
outputs:
  pictures: picture.image
  chosen: pick.item
  index: pick.index
"""


def sim(faults: str = "") -> Simulator:
    simulator = Simulator(faults=parse_faults(faults))

    async def instant(seconds: float) -> None:
        return None

    simulator.sleep = instant
    return simulator


def run(
    flow: Flow, inputs: dict[str, Any] | None, out: Path, simulator: Simulator, **kw: Any
) -> tuple[Any, Recorder]:
    from calliope_graph.context import RetrySettings, RunContext

    recorder = Recorder(simulator)
    ctx = RunContext.create(
        out,
        keys=simulator.keys(),
        transport=httpx.MockTransport(recorder),
        sleep=simulator.sleep,
        retry=RetrySettings(max_attempts=1, initial_wait=0.0, max_wait=0.0, jitter=0.0),
    )

    async def go() -> Any:
        try:
            return await flow.ainvoke(inputs, out_dir=out, ctx=ctx, **kw)
        finally:
            await ctx.aclose()

    return asyncio.run(go()), recorder


def from_yaml(text: str, tmp_path: Path) -> Flow:
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    return Flow.from_spec(load_spec(path))


def seeds_sent(recorder: Recorder) -> list[int]:
    found = [re.search(rb'name="seed"\r\n\r\n(\d+)', r.content) for r in recorder.requests]
    return [int(m.group(1)) for m in found if m]


def test_three_candidates_run_three_calls_with_distinct_seeds(tmp_path: Path) -> None:
    simulator = sim()
    result, recorder = run(
        from_yaml(CANDIDATES, tmp_path), {"prompt": "a lighthouse"}, tmp_path / "out", simulator
    )
    pictures = result.outputs["pictures"]
    assert len(pictures) == 3 and all(isinstance(p, Image) for p in pictures)
    assert len({p.path for p in pictures}) == 3  # each in its own folder
    assert simulator.count("stability") == 3
    seeds = seeds_sent(recorder)
    assert len(seeds) == 3 and len(set(seeds)) == 3
    assert sorted(seeds) == candidate_seeds(min(seeds), 3) or len(set(seeds)) == 3
    assert result.outputs["chosen"] == pictures[0] and result.outputs["index"] == 0
    runs = [e for e in result.trace.executions if e.node == "picture"]
    assert sorted(e.item for e in runs) == [0, 1, 2]
    assert all(e.status == "ok" for e in runs)


def test_a_wired_seed_is_the_base_of_the_candidates_seeds(tmp_path: Path) -> None:
    text = CANDIDATES.replace(
        "inputs: {prompt: inputs.prompt}", "inputs: {prompt: inputs.prompt, seed: inputs.seed}"
    )
    text = text.replace("  prompt: {type: text}\n", "  prompt: {type: text}\n  seed: {type: any}\n")
    _, recorder = run(
        from_yaml(text, tmp_path), {"prompt": "an owl", "seed": 40}, tmp_path / "out", sim()
    )
    assert sorted(seeds_sent(recorder)) == [40, 41, 42]


def test_a_failed_candidate_is_dropped_by_a_continue_route_and_first_ok_skips_it(
    tmp_path: Path,
) -> None:
    text = CANDIDATES.replace(
        "    candidates: 3\n",
        "    candidates: 3\n    on_error:\n      - {when: [content_policy], goto: continue}\n",
    )
    simulator = sim("content_policy@stability:first_n=1")
    result, _ = run(from_yaml(text, tmp_path), {"prompt": "a fox"}, tmp_path / "out", simulator)
    pictures = result.outputs["pictures"]
    assert len(pictures) == 3 and pictures.count(None) == 1
    first_ok = next(i for i, p in enumerate(pictures) if p is not None)
    assert result.outputs["index"] == first_ok and result.outputs["chosen"] == pictures[first_ok]
    skipped = [e for e in result.trace.executions if e.node == "picture" and e.branch]
    assert [(e.status, e.branch) for e in skipped] == [("skipped", "continue")]


def test_a_failed_candidate_falls_back_alone(tmp_path: Path) -> None:
    text = CANDIDATES.replace(
        "    candidates: 3\n",
        "    candidates: 3\n    on_error:\n      - {when: [content_policy], goto: backup}\n",
    ).replace(
        "  pick:\n",
        "  backup:\n    kind: text_to_image\n    model: openai-gpt-image-2\n"
        "    inputs: {prompt: inputs.prompt}\n  pick:\n",
    )
    simulator = sim("content_policy@stability:first_n=1")
    result, _ = run(from_yaml(text, tmp_path), {"prompt": "a fox"}, tmp_path / "out", simulator)
    assert None not in result.outputs["pictures"]
    assert simulator.count("openai", "images") == 1
    assert simulator.count("stability") == 3


def test_a_failure_no_route_takes_fails_the_node_and_resume_pays_only_for_it(
    tmp_path: Path,
) -> None:
    flow = from_yaml(CANDIDATES, tmp_path)
    down = sim("content_policy@stability:first_n=1")
    with pytest.raises(FlowRunError) as info:
        run(flow, {"prompt": "a harbour"}, tmp_path / "out", down)
    assert down.count("stability") == 3  # the siblings finished
    up = sim()
    result, _ = run(flow, None, tmp_path / "out", up, thread_id=info.value.thread_id, resume=True)
    assert up.count("stability") == 1  # the journal answered for the two that were paid
    assert len(result.outputs["pictures"]) == 3 and None not in result.outputs["pictures"]


def test_builder_spelling_equals_the_yaml(tmp_path: Path) -> None:
    flow = Flow("three_pictures")
    prompt = flow.input("prompt")
    picture = flow.add(
        "picture", "text_to_image", {"prompt": prompt}, model="stability-core", candidates=3
    )
    pick = flow.add("pick", "choose", {"candidates": picture["image"]})
    flow.output("pictures", picture["image"])
    flow.output("chosen", pick["item"])
    flow.output("index", pick["index"])
    assert flow.spec.nodes == load_spec("f.yaml", text=CANDIDATES).nodes
    assert "candidates: 3" in flow.spec.to_yaml()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("candidates: 3", "candidates: 9"), "candidates must be a whole number from 1 to 8"),
        (("candidates: 3", "candidates: 0"), "candidates must be a whole number from 1 to 8"),
        (
            ("    kind: choose\n    inputs: {candidates: picture.image}",
             "    kind: text_to_image\n    model: stability-core\n"
             "    inputs: {prompt: picture.image}"),
            "pick one first with a choose node",
        ),
    ],
)  # fmt: skip
def test_validation_refuses(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    text = CANDIDATES.replace(*change)
    if "prompt: picture.image" in text:
        text = text.replace("  chosen: pick.item\n  index: pick.index\n", "")
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    with pytest.raises(FlowSpecError, match=expected) as info:
        check(load_spec(path))
    assert info.value.line is not None


def test_candidates_only_on_a_node_that_calls_a_model(tmp_path: Path) -> None:
    text = CANDIDATES.replace("    kind: choose\n", "    kind: choose\n    candidates: 2\n")
    with pytest.raises(FlowSpecError, match="calls no model"):
        check(load_spec("f.yaml", text=text))


def test_a_candidates_node_is_drawn_as_a_stack() -> None:
    spec = load_spec("f.yaml", text=CANDIDATES)
    assert node_shapes("picture", spec.nodes["picture"]) == ("stack",)
    assert "stack" in to_networkx(spec).nodes["picture"]["shape"]
    assert "picture" in draw(spec, "ascii")
    svg = ET.fromstring(str(draw(spec, "svg")))
    (picture,) = [g for g in svg.iter(f"{SVG}g") if g.get("data-node") == "picture"]
    assert len([r for r in picture.iter(f"{SVG}rect") if "stack" in (r.get("class") or "")]) >= 2


def test_candidates_in_a_lane_beside_other_work(tmp_path: Path) -> None:
    text = CANDIDATES.replace(
        "  pick:\n",
        "  other:\n    kind: text_to_text\n    model: openai-gpt-6-luna\n"
        "    inputs: {text: inputs.prompt}\n  pick:\n",
    ).replace("  index: pick.index\n", "  index: pick.index\n  other: other.text\n")
    simulator = sim()
    result, _ = run(from_yaml(text, tmp_path), {"prompt": "a kite"}, tmp_path / "out", simulator)
    assert len(result.outputs["pictures"]) == 3 and result.outputs["other"]
    assert simulator.count("stability") == 3


def test_a_map_over_the_candidates_feeds_a_rule(tmp_path: Path) -> None:
    text = CANDIDATES.replace(
        "  pick:\n    kind: choose\n    inputs: {candidates: picture.image}\n",
        "  looks:\n    kind: analyze_image\n    model: azure-vision-3.2\n"
        "    map: {over: picture.image, as: one}\n    inputs: {image: one}\n"
        "  pick:\n    kind: choose\n"
        "    params: {by: rule, rule: \"description != ''\"}\n"
        "    inputs: {candidates: picture.image, views: looks.analysis}\n",
    )
    simulator = sim()
    result, _ = run(from_yaml(text, tmp_path), {"prompt": "a kite"}, tmp_path / "out", simulator)
    assert result.outputs["index"] == 0
    assert result.outputs["chosen"] == result.outputs["pictures"][0]
    looks = [e for e in result.trace.executions if e.node == "looks"]
    assert sorted(e.item for e in looks) == [0, 1, 2]
