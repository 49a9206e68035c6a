"""The choose node (nodes/choose.py): first_ok, rule (JMESPath over each candidate or its
view), judge (a chat model's structured scores, shown in the trace) and human (a LangGraph
interrupt whose payload lists the candidates; resumed with an index or {node: index})."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from typing_extensions import TypedDict

from calliope_graph.context import RunContext
from calliope_graph.errors import ConfigurationError, FlowSpecError
from calliope_graph.flow import Flow, load_spec
from calliope_graph.flow.validate import check
from calliope_graph.media import ImageAnalysis
from calliope_graph.nodes import Choose
from calliope_graph.nodes.choose import resume_index
from calliope_graph.simulate import Simulator

ANALYSES = [
    ImageAnalysis(description="a beach", tags=["sand", "sea"]),
    None,
    ImageAnalysis(description="a forest", tags=["tree", "moss"]),
    ImageAnalysis(description="a park", tags=["tree", "grass"]),
]


async def test_first_ok_skips_missing_candidates(ctx: RunContext) -> None:
    out = await Choose(name="pick").run(ctx, candidates=[None, "b", "c"])
    assert out == {"item": "b", "index": 1, "scores": None}


async def test_rule_picks_the_first_candidate_whose_analysis_holds(ctx: RunContext) -> None:
    node = Choose(name="pick", by="rule", rule="contains(tags, 'tree')")
    out = await node.run(ctx, candidates=ANALYSES)
    assert out["index"] == 2 and out["item"] is ANALYSES[2]
    views_first = Choose(name="pick", by="rule", rule="contains(tags, 'grass')")
    out = await views_first.run(ctx, candidates=["a", None, "c", "d"], views=ANALYSES)
    assert out["item"] == "d" and out["index"] == 3
    never = Choose(name="pick", by="rule", rule="contains(tags, 'snow')")
    with pytest.raises(ConfigurationError, match="holds for no candidate"):
        await never.run(ctx, candidates=ANALYSES)


def test_params_name_what_each_way_of_choosing_needs() -> None:
    with pytest.raises(ConfigurationError, match="needs 'rule'"):
        Choose(name="pick", by="rule")
    with pytest.raises(ConfigurationError, match="invalid JMESPath"):
        Choose(name="pick", by="rule", rule="tags[")
    with pytest.raises(ConfigurationError, match="needs 'criteria'"):
        Choose(name="pick", by="judge", model="openai-gpt-6-luna")
    with pytest.raises(ConfigurationError, match="needs a model"):
        Choose(name="pick", by="judge", criteria="calm")
    with pytest.raises(ConfigurationError, match="only by: judge uses a model"):
        Choose("openai-gpt-6-luna", name="pick")


JUDGED = """
name: judged
inputs:
  premise: {type: text}
nodes:
  story:
    kind: text_to_text
    model: openai-gpt-6-luna
    candidates: 3
    inputs: {text: inputs.premise}
  pick:
    kind: choose
    model: openai-gpt-6-luna
    params: {by: judge, criteria: the calmest story for a bedtime}
    inputs: {candidates: story.text}
outputs:
  story: pick.item
  index: pick.index
  scores: pick.scores
"""


def test_a_judge_scores_every_candidate_and_the_best_wins(tmp_path: Path) -> None:
    from calliope_graph.context import RetrySettings

    simulator = Simulator()
    flow = Flow.from_spec(load_spec("judged.yaml", text=JUDGED))
    out = tmp_path / "out"
    ctx = RunContext.create(
        out,
        keys=simulator.keys(),
        transport=simulator.transport(),
        retry=RetrySettings(max_attempts=1),
    )

    async def go() -> Any:
        try:
            return await flow.ainvoke({"premise": "a lighthouse keeper"}, out_dir=out, ctx=ctx)
        finally:
            await ctx.aclose()

    result = asyncio.run(go())
    scores = result.outputs["scores"]
    assert [s["index"] for s in scores] == [0, 1, 2]
    assert all(0 <= s["score"] <= 10 and s["reason"] for s in scores)
    best = max(range(3), key=lambda i: (scores[i]["score"], -i))
    assert result.outputs["index"] == best
    assert simulator.count("openai") == 4  # three stories, one judge
    (judged,) = [e for e in result.trace.executions if e.node == "pick"]
    assert judged.outputs["scores"] == scores  # in the trace (and so the report)


class _State(TypedDict, total=False):
    out: Any


def test_human_pauses_with_the_candidates_and_resumes_with_the_choice(
    ctx: RunContext, tmp_path: Path
) -> None:
    node = Choose(name="pick", by="human")
    candidates = ["calm", None, "stormy"]

    async def choose(state: _State) -> _State:
        return {"out": await node.run(ctx, candidates=candidates)}

    graph: StateGraph[_State, None, _State, _State] = StateGraph(_State)
    graph.add_node("pick", choose)
    graph.add_edge(START, "pick")
    graph.add_edge("pick", END)
    compiled = graph.compile(checkpointer=InMemorySaver())

    async def go() -> tuple[Any, Any, Any]:
        config: Any = {"configurable": {"thread_id": "t"}}
        paused = await compiled.ainvoke({}, config)
        resumed = await compiled.ainvoke(Command(resume={"pick": 2}), config)
        return paused, resumed, config

    paused, resumed, _ = asyncio.run(go())
    (pause,) = paused["__interrupt__"]
    assert pause.value["node"] == "pick"
    assert pause.value["candidates"] == ["calm", None, "stormy"]
    assert resumed["out"] == {"item": "stormy", "index": 2, "scores": None}


def test_a_resume_value_is_checked_against_the_candidates() -> None:
    present = [True, False, True]
    assert resume_index("pick", 0, 3, present) == 0
    assert resume_index("pick", "2", 3, present) == 2
    assert resume_index("pick", {"pick": 2}, 3, present) == 2
    with pytest.raises(ConfigurationError, match="from 0 to 2"):
        resume_index("pick", 3, 3, present)
    with pytest.raises(ConfigurationError, match=r"present: \[0, 2\]"):
        resume_index("pick", 1, 3, present)
    with pytest.raises(ConfigurationError, match="not 'pick'"):
        resume_index("pick", {"other": 0}, 3, present)
    with pytest.raises(ConfigurationError, match="not a candidate"):
        resume_index("pick", True, 3, present)


def test_choose_reads_a_list_and_refuses_one_value(tmp_path: Path) -> None:
    text = JUDGED.replace("    candidates: 3\n", "")
    with pytest.raises(FlowSpecError, match=r"not a list: give .story. .candidates: N."):
        check(load_spec("judged.yaml", text=text))


def test_a_vision_judge_sees_the_candidate_pictures(tmp_path: Path) -> None:
    import httpx
    from _support import Recorder

    from calliope_graph.context import RetrySettings

    text = """
name: judged_pictures
inputs: {prompt: {type: text}}
nodes:
  picture: {kind: text_to_image, model: stability-core, candidates: 2,
            inputs: {prompt: inputs.prompt}}
  pick:
    kind: choose
    model: openai-gpt-6-luna
    params: {by: judge, criteria: a whole figure on a plain background}
    inputs: {candidates: picture.image}
outputs: {chosen: pick.item, scores: pick.scores}
"""
    simulator = Simulator()
    recorder = Recorder(simulator)
    out = tmp_path / "out"
    ctx = RunContext.create(
        out,
        keys=simulator.keys(),
        transport=httpx.MockTransport(recorder),
        retry=RetrySettings(max_attempts=1),
    )
    flow = Flow.from_spec(load_spec("judged_pictures.yaml", text=text))

    async def go() -> Any:
        try:
            return await flow.ainvoke({"prompt": "a knight"}, out_dir=out, ctx=ctx)
        finally:
            await ctx.aclose()

    result = asyncio.run(go())
    assert len(result.outputs["scores"]) == 2
    (judge,) = [r for r in recorder.requests if r.url.host == "api.openai.com"]
    assert judge.content.count(b"data:image/") == 2
