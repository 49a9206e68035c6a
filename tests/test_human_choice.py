"""A run that pauses for a person's choice and resumes with it (issue 20, item 2).

The ``choose`` node kind is built elsewhere; these tests use a stand-in node kind that asks
the way ``choose: {by: human}`` does — LangGraph's ``interrupt({"node": ..., "candidates":
[...]})`` — and returns the chosen item, after a map that makes three images (three paid
provider calls) as the candidates.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from langgraph.types import interrupt

from calliope_graph.errors import WaitingForChoice
from calliope_graph.flow import Flow
from calliope_graph.nodes import Node, Port, PortType, register_node
from calliope_graph.simulate import Simulator


@register_node
class _HumanPick(Node):
    """Stand-in for ``choose: {by: human}``: pause with the candidates, return the one chosen
    (the resume value is an index, or ``{node: index}``)."""

    kind = "test_human_pick"
    description = "Pause for a person's choice among a list (test stand-in)"
    inputs = (Port("items", PortType.ANY),)
    outputs = (Port("item", PortType.ANY), Port("index", PortType.ANY))

    async def run(self, ctx: Any, **inputs: Any) -> dict[str, Any]:
        items = list(inputs["items"])
        name = self.name
        answer = interrupt({"node": name, "candidates": items})
        index = answer[name] if isinstance(answer, dict) else answer
        return {"item": items[int(index)], "index": int(index)}


FLOW = """
name: pick_one
inputs:
  subject: {type: text, required: false, default: a lighthouse}
nodes:
  prompts:
    kind: constant
    params: {value: ["a lighthouse at dawn", "a lighthouse at noon", "a lighthouse at night"]}
  image:
    kind: text_to_image
    model: stability-core
    map: {over: prompts.value, as: prompt, max_parallel: 3}
    inputs: {prompt: prompt}
  pick:
    kind: test_human_pick
    inputs: {items: image.image}
outputs:
  image: pick.item
  index: pick.index
"""


def _flow(tmp_path: Path) -> tuple[Flow, Path]:
    path = tmp_path / "pick_one.yaml"
    path.write_text(FLOW)
    return Flow.load(path), path


def _paused(flow: Flow, out: Path, sim: Simulator) -> WaitingForChoice:
    with pytest.raises(WaitingForChoice) as caught:
        flow.invoke({}, out_dir=out, simulator=sim, thread_id="t1")
    return caught.value


def test_a_run_pauses_with_the_candidates_and_resumes_with_the_choice(tmp_path: Path) -> None:
    flow, _ = _flow(tmp_path)
    out, sim = tmp_path / "out", Simulator()
    waiting = _paused(flow, out, sim)
    assert waiting.thread_id == "t1" and waiting.nodes == ["pick"]
    candidates = waiting.candidates["pick"]
    assert len(candidates) == 3 and all(c["type"] == "image" for c in candidates)
    assert sim.count() == 3
    assert "--resume t1 --choose pick=1" in waiting.commands["pick"][1]
    result = flow.invoke(
        None, out_dir=out, simulator=sim, thread_id="t1", resume=True, choices={"pick": 1}
    )
    assert sim.count() == 3  # nothing paid again: no candidate regenerated
    assert result.outputs["index"] == 1
    assert Path(result.outputs["image"].path).name == Path(candidates[1]["path"]).name
    assert result.trace.status == "ok" and not result.trace.waiting


# -- the command line --------------------------------------------------------------------------
def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from calliope_graph.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def simulators(monkeypatch: pytest.MonkeyPatch) -> list[Simulator]:
    """Every simulator ``--simulate`` makes, in order (to count each command's calls)."""
    import calliope_graph.simulate as simulate

    made: list[Simulator] = []

    class Counted(Simulator):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(simulate, "Simulator", Counted)
    return made


def test_the_cli_exits_6_and_the_printed_command_finishes_with_the_choice(
    tmp_path: Path, simulators: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = _flow(tmp_path)
    monkeypatch.chdir(tmp_path)
    first = _cli(
        "run", "pick_one.yaml", "--out", "out", "--simulate", "--limits", "stability:rps=50"
    )
    assert first.exit_code == 6, first.output
    assert "waiting for a choice" in first.output and simulators[0].count() == 3
    commands = [line.strip() for line in first.output.splitlines() if "--choose" in line]
    assert len(commands) == 3 and commands[1].endswith("--choose pick=1")
    words = shlex.split(commands[1])
    assert words[:3] == ["calliope-graph", "run", "pick_one.yaml"]
    assert "--simulate" in words and "stability:rps=50" in words
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Waiting for a choice" in report and report.count('class="candidate"') == 3
    second = _cli(*words[1:])
    assert second.exit_code == 0, second.output
    assert simulators[1].count() == 0  # the resumed run paid for nothing
    assert "index: 1" in second.output and "image/1/image.png" in second.output
