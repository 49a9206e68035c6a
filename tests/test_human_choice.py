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

from calliope_graph.errors import ConfigurationError, WaitingForChoice
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
    _flow(tmp_path)
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


def test_bad_choices_are_refused_before_anything_runs(tmp_path: Path) -> None:
    flow, _ = _flow(tmp_path)
    out, sim = tmp_path / "out", Simulator()
    _paused(flow, out, sim)
    resume: dict[str, Any] = {"out_dir": out, "simulator": sim, "thread_id": "t1", "resume": True}
    with pytest.raises(ConfigurationError, match=r"not waiting for a choice at node 'pik'"):
        flow.invoke(None, **resume, choices={"pik": 1})
    with pytest.raises(ConfigurationError, match=r"index from 0 to 2"):
        flow.invoke(None, **resume, choices={"pick": 3})
    with pytest.raises(ConfigurationError, match=r"waiting for a choice at 'pick'.*--choose"):
        flow.invoke(None, **resume)
    with pytest.raises(ConfigurationError, match="resume=True"):
        flow.invoke({}, out_dir=tmp_path / "other", simulator=sim, choices={"pick": 0})
    assert sim.count() == 3  # nothing ran again
    result = flow.invoke(None, **resume, choices={"pick": 2})
    assert result.outputs["index"] == 2 and sim.count() == 3


def test_the_cli_refuses_a_malformed_choice_or_one_without_resume(tmp_path: Path) -> None:
    _, path = _flow(tmp_path)
    out = str(tmp_path / "out")
    bad = _cli("run", str(path), "--out", out, "--simulate", "--resume", "t", "--choose", "pick")
    assert bad.exit_code == 2 and "NODE=INDEX" in bad.output
    alone = _cli("run", str(path), "--out", out, "--simulate", "--choose", "pick=1")
    assert alone.exit_code == 2 and "--resume" in alone.output


def test_the_report_lists_the_candidates_with_thumbnails(tmp_path: Path) -> None:
    from calliope_graph.flow import Trace
    from calliope_graph.viz import render_report

    flow, _ = _flow(tmp_path)
    out = tmp_path / "out"
    _paused(flow, out, Simulator())
    trace = Trace.load(out / "trace.json")
    assert trace.status == "waiting" and len(trace.waiting["pick"]) == 3
    assert [e.status for e in trace.executions if e.node == "pick"] == ["waiting"]
    page = render_report(trace, out / "report.html").read_text()
    section = page[page.index('id="choice"') : page.index('id="summary"')]
    assert section.count('<img class="thumb" src="image/') == 3
    assert "--choose pick=INDEX" in section and "waiting for a choice" in page


def test_the_printed_command_keeps_every_option_that_makes_it_run() -> None:
    from calliope_graph.commands import continue_command

    line = continue_command(
        "my flows/pick.yaml",
        "out dir",
        "t1",
        checkpoint="postgresql://me:***@db/calliope",
        options=["--simulate", "--faults", "rate_limit@stability:first_n=1;hang@openai"],
        choose={"pick": 1},
    )
    assert shlex.split(line) == [
        "calliope-graph", "run", "my flows/pick.yaml", "--out", "out dir",
        "--checkpoint", "postgresql://me:***@db/calliope",
        "--simulate", "--faults", "rate_limit@stability:first_n=1;hang@openai",
        "--resume", "t1", "--choose", "pick=1",
    ]  # fmt: skip


# -- LangGraph Server ---------------------------------------------------------------------------
async def test_the_served_graph_resumes_with_a_resume_command_naming_the_node(
    tmp_path: Path, simulators: list[Simulator]
) -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    from calliope_graph.serve import ServeContext, ServeSettings, serve_graph

    flow, _ = _flow(tmp_path)
    graph = serve_graph(flow, ServeSettings(media_root=tmp_path / "media", simulate=True))
    graph.checkpointer = InMemorySaver()
    config: Any = {"configurable": {"thread_id": "t-1"}}
    paused = await graph.ainvoke({}, config, context=ServeContext())
    (stop,) = paused["__interrupt__"]
    assert stop.value["node"] == "pick" and len(stop.value["candidates"]) == 3
    assert sum(s.count() for s in simulators) == 3
    done = await graph.ainvoke(Command(resume={"pick": 1}), config, context=ServeContext())
    assert done["index"] == 1 and "/image/1/image.png?" in done["image"]["url"]
    assert sum(s.count() for s in simulators) == 3  # nothing paid again


# -- issue 20's "done means", with the real constructs (skipped until they are merged) ---------
def _choose_kind() -> type[Node]:
    from calliope_graph.flow.spec import NodeSpec
    from calliope_graph.nodes import get_node_kind

    assert "candidates" in NodeSpec.model_fields
    return get_node_kind("choose")


def test_done_three_candidates_a_human_choice_exit_6_and_the_second_kept(
    tmp_path: Path, simulators: list[Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    choose = _choose_kind()
    listed = next(p.name for p in choose.inputs)
    chosen = next(p.name for p in choose.outputs if p.name != "index")
    (tmp_path / "three.yaml").write_text(
        f"""
name: three
nodes:
  prompt:
    kind: constant
    params: {{value: a lighthouse at dawn}}
  image:
    kind: text_to_image
    model: stability-core
    candidates: 3
    inputs: {{prompt: prompt.value}}
  pick:
    kind: choose
    params: {{by: human}}
    inputs: {{{listed}: image.image}}
outputs:
  image: pick.{chosen}
"""
    )
    monkeypatch.chdir(tmp_path)
    first = _cli("run", "three.yaml", "--out", "out", "--simulate")
    assert first.exit_code == 6, first.output
    report = (tmp_path / "out" / "report.html").read_text()
    assert report.count('class="candidate"') == 3
    command = next(line.strip() for line in first.output.splitlines() if "pick=1" in line)
    second = _cli(*shlex.split(command)[1:])
    assert second.exit_code == 0, second.output
    assert simulators[0].count() == 3 and simulators[1].count() == 0
    from calliope_graph.flow import Trace

    trace = Trace.load(tmp_path / "out" / "trace.json")
    assert trace.status == "ok" and not trace.waiting
    picked = [e for e in trace.executions if e.node == "pick" and e.status == "ok"]
    assert picked and picked[-1].outputs.get("index") in (None, 1)


# -- inside a subflow ----------------------------------------------------------------------------
CHILD = """
name: pick_in_child
inputs:
  prompt: {type: text}
nodes:
  image:
    kind: text_to_image
    model: stability-core
    candidates: 3
    inputs: {prompt: inputs.prompt}
  pick:
    kind: choose
    params: {by: human}
    inputs: {candidates: image.image}
outputs:
  image: pick.item
"""

PARENT = """
name: parent_of_a_choice
inputs:
  prompt: {type: text, required: false, default: a lighthouse}
nodes:
  sub:
    kind: flow
    params: {flow: pick_in_child.yaml}
    inputs: {prompt: inputs.prompt}
outputs:
  image: sub.image
"""


def test_a_choice_inside_a_subflow_resumes_without_making_its_candidates_again(
    tmp_path: Path,
) -> None:
    (tmp_path / "pick_in_child.yaml").write_text(CHILD)
    (tmp_path / "parent.yaml").write_text(PARENT)
    flow, out, sim = Flow.load(tmp_path / "parent.yaml"), tmp_path / "out", Simulator()
    waiting = _paused(flow, out, sim)
    assert waiting.nodes == ["pick"] and len(waiting.candidates["pick"]) == 3
    assert sim.count() == 3
    result = flow.invoke(
        None, out_dir=out, simulator=sim, thread_id="t1", resume=True, choices={"pick": 2}
    )
    assert sim.count() == 3  # the child resumed inside: no candidate made again
    assert Path(result.outputs["image"].path).parent.name == "2"
