"""Composition: map over lists, switch branches, subflows, typed objects and field references,
validated before anything runs, run against the simulator, resumable per item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from calliope_graph.errors import FlowRunError, FlowSpecError
from calliope_graph.flow import Flow, load_spec
from calliope_graph.simulate import Simulator, parse_faults

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"


def sim(faults: str = "") -> Simulator:
    simulator = Simulator(faults=parse_faults(faults))

    async def instant(seconds: float) -> None:
        return None

    simulator.sleep = instant
    return simulator


def run(
    flow: Flow, inputs: dict[str, Any] | None, out: Path, simulator: Simulator, **kw: Any
) -> Any:
    from calliope_graph.context import RetrySettings, RunContext

    ctx = RunContext.create(
        out,
        keys=simulator.keys(),
        transport=simulator.transport(),
        sleep=simulator.sleep,
        retry=RetrySettings(max_attempts=2, initial_wait=0.0, max_wait=0.0, jitter=0.0),
    )
    import asyncio

    async def go() -> Any:
        try:
            return await flow.ainvoke(inputs, out_dir=out, ctx=ctx, **kw)
        finally:
            await ctx.aclose()

    return asyncio.run(go())


def from_yaml(text: str, tmp_path: Path, name: str = "flow.yaml") -> Flow:
    path = tmp_path / name
    path.write_text(text)
    return Flow.from_spec(load_spec(path))


ILLUSTRATE_EACH = """
name: illustrate_each
inputs:
  prompts: {type: any, description: a list of image prompts}
nodes:
  image:
    kind: text_to_image
    model: stability-core
    map: {over: inputs.prompts, as: prompt, max_parallel: 3}
    inputs: {prompt: prompt}
    on_error:
      - when: [content_policy]
        goto: fallback
  fallback:
    kind: text_to_image
    model: openai-gpt-image-2
    inputs: {prompt: prompt}
outputs:
  images: image.image
"""


# -- map -------------------------------------------------------------------------------------


def test_storyboard_illustrates_every_scene_in_order(tmp_path: Path) -> None:
    simulator = sim()
    result = run(Flow.load("storyboard"), {"premise": "a fox"}, tmp_path, simulator)
    frames, images = result.outputs["frames"], result.outputs["images"]
    assert result.outputs["title"]
    assert len(frames) == len(images) >= 1
    assert [f.image.path for f in frames] == [i.path for i in images]
    assert len({i.path for i in images}) == len(images)  # one file per scene, none clobbered
    assert all(Path(i.path).is_file() for i in images)
    assert simulator.count("stability") == len(images)
    # each scene ran the illustrate subflow, nested under its item in the trace
    nodes = {e.node for e in result.trace.executions}
    for index in range(len(images)):
        assert f"scenes[{index}]/illustration/image" in nodes
    assert sorted(e.item for e in result.trace.executions if e.node == "scenes") == list(
        range(len(images))
    )


@pytest.mark.parametrize("count", [0, 20])
def test_a_map_of_zero_and_of_twenty_items(tmp_path: Path, count: int) -> None:
    flow = Flow("words")
    words = flow.input("words", "any")
    shout = flow.add("shout", "prompt_template", {"word": "word"}, params={"template": "{word}!"})
    flow.spec.nodes["shout"].map = load_spec_map(words, "word", 5)
    flow.output("shouted", shout["text"])
    items = [f"w{i}" for i in range(count)]
    result = run(flow, {"words": items}, tmp_path, sim())
    assert result.outputs.get("shouted", []) == [f"{w}!" for w in items]


def load_spec_map(over: str, name: str, bound: int | None) -> Any:
    from calliope_graph.flow.spec import MapSpec

    return MapSpec.model_validate({"over": over, "as": name, "max_parallel": bound})


def test_one_refused_item_falls_back_alone(tmp_path: Path) -> None:
    flow = from_yaml(ILLUSTRATE_EACH, tmp_path)
    simulator = sim("content_policy@stability:pattern=dragon")
    prompts = ["a lighthouse", "a red dragon", "an owl"]
    result = run(flow, {"prompts": prompts}, tmp_path / "out", simulator)
    assert len(result.outputs["images"]) == 3
    routed = [e for e in result.trace.executions if e.branch]
    assert [(e.node, e.item, e.branch) for e in routed] == [("image", 1, "fallback:fallback")]
    assert simulator.count("openai", "images") == 1  # only the dragon went to OpenAI
    assert simulator.count("stability") == 3


def test_a_resume_reruns_only_the_item_that_failed(tmp_path: Path) -> None:
    spec = ILLUSTRATE_EACH.replace(
        "    on_error:\n      - when: [content_policy]\n        goto: fallback\n", ""
    )
    spec = spec.replace("  fallback:\n    kind: text_to_image\n    model: openai-gpt-image-2\n"
                        "    inputs: {prompt: prompt}\n", "")  # fmt: skip
    flow = from_yaml(spec, tmp_path)
    down = sim("content_policy@stability:pattern=owl")
    prompts = ["a lighthouse", "a harbour", "an owl", "a fox"]
    with pytest.raises(FlowRunError) as info:
        run(flow, {"prompts": prompts}, tmp_path / "out", down)
    assert down.count("stability") == 4
    up = sim()
    result = run(flow, None, tmp_path / "out", up, thread_id=info.value.thread_id, resume=True)
    assert up.count("stability") == 1  # the owl alone
    assert len(result.outputs["images"]) == 4


def test_map_items_run_at_most_max_parallel_at_once(tmp_path: Path) -> None:
    import asyncio

    from calliope_graph.nodes import Node, Port, PortType, register_node

    state = {"now": 0, "peak": 0}

    @register_node
    class Probe(Node):
        kind = "test_probe_parallel"
        inputs = (Port("value", PortType.ANY),)
        outputs = (Port("value", PortType.ANY),)

        async def run(self, ctx: Any, **inputs: Any) -> dict[str, Any]:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            for _ in range(2000):  # wait (a bounded number of turns) for a second item
                if state["now"] >= 2:
                    break
                await asyncio.sleep(0)
            for _ in range(20):  # stay a little: a third item would show up now
                await asyncio.sleep(0)
            state["now"] -= 1
            return {"value": inputs["value"]}

    flow = Flow("bounded")
    flow.input("xs", "any")
    probe = flow.add("probe", "test_probe_parallel", {"value": "x"})
    flow.spec.nodes["probe"].map = load_spec_map("inputs.xs", "x", 2)
    flow.output("xs", probe["value"])
    result = run(flow, {"xs": list(range(7))}, tmp_path, sim())
    assert result.outputs["xs"] == list(range(7)) and state["peak"] == 2


# -- switch ----------------------------------------------------------------------------------

SWITCH = """
name: branchy
inputs:
  mood: {type: text}
nodes:
  pick:
    kind: switch
    params:
      cases:
        - when: "@ == 'dark'"
          goto: gloomy
        - when: "contains(@, 'sun')"
          goto: sunny
      default: plain
    inputs: {value: inputs.mood}
  gloomy:
    kind: prompt_template
    params: {template: "night falls: {mood}"}
    inputs: {mood: inputs.mood}
  sunny:
    kind: prompt_template
    params: {template: "bright day: {mood}"}
    inputs: {mood: inputs.mood}
  plain:
    kind: prompt_template
    params: {template: "an ordinary day: {mood}"}
    inputs: {mood: inputs.mood}
  told:
    kind: passthrough
    inputs: {value: [gloomy.text, sunny.text, plain.text]}
outputs:
  text: told.value
  branch: pick.branch
"""


@pytest.mark.parametrize(
    ("mood", "branch", "text"),
    [
        ("dark", "gloomy", "night falls: dark"),
        ("sunny", "sunny", "bright day: sunny"),
        ("grey", "plain", "an ordinary day: grey"),  # no case holds: the default
    ],
)
def test_a_switch_runs_one_branch_and_skips_the_others(
    tmp_path: Path, mood: str, branch: str, text: str
) -> None:
    result = run(from_yaml(SWITCH, tmp_path), {"mood": mood}, tmp_path / "out", sim())
    assert result.outputs == {"text": text, "branch": branch}
    skipped = {e.node for e in result.trace.executions if e.status == "skipped"}
    assert skipped == {"gloomy", "sunny", "plain"} - {branch}


def test_webcam_branch_takes_the_landscape_branch_without_a_person(tmp_path: Path) -> None:
    result = run(Flow.load("webcam_branch"), {"image": WEBCAM}, tmp_path, sim())
    # the simulator sees no person in the example webcam frame
    assert result.outputs["branch"] == "landscape_prompt"
    skipped = [e for e in result.trace.executions if e.status == "skipped"]
    assert [e.node for e in skipped] == ["character_prompt"]
    assert Path(result.outputs["image"].path).is_file() and result.outputs["scene"]


# -- validation names the place ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("      default: plain\n", ""), "would fall through: add 'default"),
        (("goto: sunny", "goto: nowhere"), "goes to 'nowhere', which is not a node"),
    ],
)
def test_switch_validation_errors(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    with pytest.raises(FlowSpecError, match=expected) as info:
        from_yaml(SWITCH.replace(*change), tmp_path).validate()
    assert info.value.line is not None


def test_a_switch_condition_on_a_missing_field_is_refused_with_its_line(tmp_path: Path) -> None:
    text = """
name: wb
inputs:
  image: {type: image}
nodes:
  analysis:
    kind: analyze_image
    model: openai-gpt-4o
    inputs: {image: inputs.image}
  seen:
    kind: switch
    params:
      cases:
        - when: "contains(people, 'me')"
          goto: a
      default: b
    inputs: {value: analysis.analysis}
  a: {kind: passthrough, inputs: {value: analysis.analysis}}
  b: {kind: passthrough, inputs: {value: analysis.analysis}}
  out: {kind: passthrough, inputs: {value: [a.value, b.value]}}
outputs:
  v: out.value
"""
    with pytest.raises(FlowSpecError, match="reads field 'people'") as info:
        from_yaml(text, tmp_path).validate()
    assert "tags" in str(info.value) and info.value.line == 14


def test_a_map_over_a_non_list_is_refused_with_its_line(tmp_path: Path) -> None:
    text = ILLUSTRATE_EACH.replace("prompts: {type: any", "prompts: {type: text")
    with pytest.raises(FlowSpecError, match="which is text, not a list") as info:
        from_yaml(text, tmp_path).validate()
    assert info.value.line == 9


def test_a_field_that_the_object_schema_lacks_is_refused(tmp_path: Path) -> None:
    storyboard = (ROOT / "graphs" / "storyboard.yaml").read_text()
    text = storyboard.replace("image_prompt: scene.image_prompt", "image_prompt: scene.picture")
    with pytest.raises(FlowSpecError, match="no field 'picture'") as info:
        from_yaml(text, tmp_path).validate()
    assert "image_prompt" in str(info.value) and info.value.line is not None


def test_an_unwired_subflow_input_is_refused(tmp_path: Path) -> None:
    storyboard = (ROOT / "graphs" / "storyboard.yaml").read_text()
    text = storyboard.replace(
        "inputs: {text: scene.text, image_prompt: scene.image_prompt}", "inputs: {text: scene.text}"
    )
    with pytest.raises(FlowSpecError, match="required input 'image_prompt' is not connected"):
        from_yaml(text, tmp_path).validate()


def test_subflows_that_include_each_other_are_refused(tmp_path: Path) -> None:
    a = """
name: a
inputs: {text: {type: text}}
nodes:
  inner: {kind: flow, params: {flow: b.yaml}, inputs: {text: inputs.text}}
outputs: {text: inner.text}
"""
    b = """
name: b
inputs: {text: {type: text}}
nodes:
  inner: {kind: flow, params: {flow: a.yaml}, inputs: {text: inputs.text}}
outputs: {text: inner.text}
"""
    (tmp_path / "b.yaml").write_text(b)
    with pytest.raises(FlowSpecError, match="leads back to itself"):
        from_yaml(a, tmp_path, "a.yaml").validate()


def test_every_new_shipped_flow_validates() -> None:
    for name in ("storyboard", "illustrate_scene", "webcam_branch"):
        Flow.load(name).validate()


def test_a_template_field_the_schema_lacks_is_refused(tmp_path: Path) -> None:
    storyboard = (ROOT / "graphs" / "storyboard.yaml").read_text()
    text = storyboard.replace(
        "  scenes:\n    kind: flow",
        "  titled:\n    kind: prompt_template\n    params:\n      template_format: mustache\n"
        "      template: 'The story {{story.subtitle}}'\n    inputs: {story: story.object}\n\n"
        "  scenes:\n    kind: flow",
    ).replace("  title: story.object.title", "  title: titled.text")
    with pytest.raises(FlowSpecError, match=r"template variable 'story\.subtitle'") as info:
        from_yaml(text, tmp_path).validate()
    assert "no field 'subtitle'" in str(info.value) and "scenes" in str(info.value)


def test_classify_picks_one_of_its_labels_and_a_switch_routes_on_it(tmp_path: Path) -> None:
    text = """
name: moody
inputs:
  story: {type: text}
nodes:
  tone:
    kind: classify
    model: openai-gpt-4o-mini
    params: {labels: [dark, bright]}
    inputs: {text: inputs.story}
  pick:
    kind: switch
    params:
      cases: [{when: "@ == 'dark'", goto: night}]
      default: day
    inputs: {value: tone.label}
  night: {kind: prompt_template, params: {template: "night: {s}"}, inputs: {s: inputs.story}}
  day: {kind: prompt_template, params: {template: "day: {s}"}, inputs: {s: inputs.story}}
  told: {kind: passthrough, inputs: {value: [night.text, day.text]}}
outputs:
  label: tone.label
  text: told.value
"""
    simulator = sim()
    result = run(from_yaml(text, tmp_path), {"story": "a fox"}, tmp_path / "out", simulator)
    label = result.outputs["label"]
    assert label in ("dark", "bright")
    assert result.outputs["text"] == ("night: a fox" if label == "dark" else "day: a fox")
    assert simulator.count("openai", "chat") == 1
