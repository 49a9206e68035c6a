"""Builder parity: everything a YAML flow says, Python says.

Every shipped flow (``graphs/*.yaml``) has a Python twin in ``examples/python_flows.py``; each
twin's FlowSpec equals the YAML's (field by field and node order), serialises to the same
YAML, validates to the same plan and compiles to the same LangGraph graph. A new YAML without
a twin fails here. A flow setting every field of the flow language has a Python twin too
(a new spec field fails until it has a spelling). Then the builder's construct methods (map,
switch, subflow) on their own: they run, and misuse names the problem and the fix.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import pytest
from pydantic import BaseModel
from yaml import safe_load

from calliope_graph.config import ModelConfig
from calliope_graph.errors import ConfigurationError, FlowSpecError
from calliope_graph.flow import Flow, FlowSpec, shipped_flows
from calliope_graph.simulate import Simulator

ROOT = Path(__file__).resolve().parent.parent
YAML_FLOWS = sorted(p.stem for p in (ROOT / "graphs").glob("*.yaml"))


@cache
def twins() -> ModuleType:
    """examples/python_flows.py, imported from its file (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("python_flows", ROOT / "examples/python_flows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("python_flows", module)
    spec.loader.exec_module(module)
    return module


def twin(name: str) -> Flow:
    flows: dict[str, Any] = twins().PYTHON_FLOWS
    assert name in flows, (
        f"graphs/{name}.yaml has no Python twin: add a function building it with Flow to "
        "examples/python_flows.py and list it in PYTHON_FLOWS."
    )
    flow = flows[name]()
    assert isinstance(flow, Flow)
    return flow


def test_the_shipped_flows_are_the_yaml_files_and_each_has_one_twin() -> None:
    assert YAML_FLOWS and shipped_flows() == YAML_FLOWS
    assert sorted(twins().PYTHON_FLOWS) == YAML_FLOWS, "a twin without a YAML, or the reverse"


@pytest.mark.parametrize("name", YAML_FLOWS)
def test_the_python_twin_is_the_yaml_flow(name: str) -> None:
    python, yaml = twin(name), Flow.load(name)
    assert twins().differences(python, yaml) == []
    assert python.spec.model_dump(mode="json") == yaml.spec.model_dump(mode="json")
    assert list(python.spec.nodes) == list(yaml.spec.nodes)
    # the same YAML (up to the order of a node's params: an instance dumps them in its order)
    assert safe_load(python.to_yaml()) == safe_load(yaml.to_yaml())
    # the Python spec round-trips through YAML unchanged (what to_yaml writes, load_spec reads)
    again = Flow.from_spec(FlowSpec.model_validate(python.spec.model_dump(mode="json")))
    assert again.spec.model_dump() == python.spec.model_dump()


def _graph(flow: Flow) -> tuple[list[str], list[tuple[str, str, bool]]]:
    graph = flow.compile().get_graph(xray=True)
    edges = sorted((e.source, e.target, e.conditional) for e in graph.edges)
    return sorted(graph.nodes), edges


@pytest.mark.parametrize("name", YAML_FLOWS)
def test_both_validate_to_the_same_plan_and_compile_to_the_same_graph(name: str) -> None:
    python, yaml = twin(name), Flow.load(name)
    a, b = python.plan(), yaml.plan()
    assert a.output_ports == b.output_ports
    assert (a.switches, a.switched, a.item_types) == (b.switches, b.switched, b.item_types)
    assert _graph(python) == _graph(yaml)
    assert python.spec.edges() == yaml.spec.edges()
    assert python.draw("mermaid") == yaml.draw("mermaid")


def test_the_example_checks_every_twin(capsys: pytest.CaptureFixture[str]) -> None:
    assert twins().main(["illustrate"]) == 0
    out = capsys.readouterr().out
    for name in YAML_FLOWS:
        assert f"{name}: the same as graphs/{name}.yaml" in out
    assert "rewrite:" in out and "via: censor" in out  # the YAML of the one asked for


# -- the constructs, built in Python, run ----------------------------------------------------
def test_a_map_built_in_python_runs_once_per_item(tmp_path: Path) -> None:
    flow = Flow("words")
    words = flow.input("words", "any")
    word = flow.item("word")
    shout = flow.map(
        "shout",
        "prompt_template",
        {"word": word},
        over=words,
        item=word,
        max_parallel=2,
        params={"template": "{word}!"},
    )
    flow.output("shouted", shout.text)
    assert flow.spec.nodes["shout"].map is not None
    assert flow.spec.nodes["shout"].map.model_dump() == {
        "over": "inputs.words",
        "as": "word",
        "max_parallel": 2,
    }
    result = flow.invoke({"words": ["a", "b", "c"]}, out_dir=tmp_path, simulator=Simulator())
    assert result.outputs["shouted"] == ["a!", "b!", "c!"]


def test_a_switch_built_in_python_runs_the_branch_it_chooses(tmp_path: Path) -> None:
    flow = Flow("pick")
    mood = flow.input("mood", "text")
    dark = flow.add("dark", "prompt_template", {"m": mood}, params={"template": "night: {m}"})
    bright = flow.add("bright", "prompt_template", {"m": mood}, params={"template": "day: {m}"})
    pick = flow.switch("pick", mood, cases=[("@ == 'dark'", dark)], default=bright)
    flow.add("line", "passthrough", {"value": [dark.text, bright.text]})
    flow.output("line", "line.value")
    flow.output("branch", pick.branch)
    params = flow.spec.nodes["pick"].params
    assert params == {"cases": [{"when": "@ == 'dark'", "goto": "dark"}], "default": "bright"}
    for value, line, branch in (("dark", "night: dark", "dark"), ("warm", "day: warm", "bright")):
        result = flow.invoke({"mood": value}, out_dir=tmp_path / value, simulator=Simulator())
        assert (result.outputs["line"], result.outputs["branch"]) == (line, branch)


def test_a_subflow_by_name_path_or_loaded_flow_is_one_spec(tmp_path: Path) -> None:
    specs = []
    path = ROOT / "graphs" / "illustrate.yaml"
    for child in ("illustrate", Flow.load("illustrate"), str(path), Flow.load(path)):
        flow = Flow("parent")
        flow.subflow("art", child, {"text": flow.input("text")})
        specs.append(flow.spec.nodes["art"])
    assert [s.params["flow"] for s in specs] == ["illustrate", "illustrate", str(path), str(path)]
    assert {s.kind for s in specs} == {"flow"}
    flow = Flow("parent")
    art = flow.subflow("art", str(path), {"text": flow.input("text")})
    flow.output("image", art.image)
    flow.validate()  # a path is read relative to the working directory: absolute here


def test_node_handles_read_ports_and_fields() -> None:
    story = Flow("f").add("story", "passthrough")
    assert story["object", "scenes"] == "story.object.scenes"
    assert story["text"] == story.text == "story.text"
    item = Flow("f").item("scene")
    assert (item.text, item["image_prompt"], repr(item)) == (
        "scene.text",
        "scene.image_prompt",
        "MapItem('scene')",
    )


def test_a_flow_names_its_model_catalog(tmp_path: Path) -> None:
    assert Flow("f", catalog="models.yaml").spec.catalog == "models.yaml"
    assert Flow("f").spec.catalog is None


# -- misuse names the problem and the fix ----------------------------------------------------
def _mapped(**kw: Any) -> None:
    flow = Flow("f")
    flow.map("m", "passthrough", {"value": "item"}, **{"over": "inputs.xs", **kw})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"over": Flow("g").add("story", "passthrough")}, "over= takes a list-typed value"),
        ({"max_parallel": 0}, "max_parallel=0 must be a whole number ≥ 1"),
        ({"max_parallel": 5000}, "max_parallel is at most 1000"),
        ({"item": "two words"}, "item= names the current item"),
    ],
)
def test_a_misused_map_says_what_to_write(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(FlowSpecError, match=re.escape(message)):
        _mapped(**kw)


def test_misused_items_switches_and_subflows_say_what_to_write() -> None:
    flow = Flow("f")
    with pytest.raises(FlowSpecError, match="must be an identifier"):
        flow.item("a.b")
    with pytest.raises(FlowSpecError, match="cannot be called 'inputs'"):
        flow.item("inputs")
    with pytest.raises(FlowSpecError, match="pass cases as a mapping from a JMESPath condition"):
        flow.switch("s", "inputs.x", cases={}, default="b")
    with pytest.raises(FlowSpecError, match="pass cases as a mapping"):
        flow.switch("s", "inputs.x", cases=["@ == 1"], default="b")  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="invalid JMESPath expression"):
        flow.switch("s", "inputs.x", cases={"@ ==": "a"}, default="b")
    with pytest.raises(FlowSpecError, match=r"Wire a port, not a node: write a\['<port>'\]"):
        flow.switch("s", flow.add("a", "passthrough"), cases={"@": "a"}, default="b")  # type: ignore[arg-type]
    built = Flow("child")
    with pytest.raises(FlowSpecError, match=r"built in Python.*save it first"):
        flow.subflow("c", built)
    with pytest.raises(FlowSpecError, match="name a shipped flow"):
        flow.subflow("c", 3)  # type: ignore[arg-type]
    assert "s" not in flow.spec.nodes and "c" not in flow.spec.nodes  # nothing half-added


# -- the README's "Flows in Python" runs as written ------------------------------------------
def test_the_readmes_python_flow_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Flows in Python", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(found[1], "README.md", "exec"), namespace)
    assert "map:\n      over: inputs.lines\n      as: line" in capsys.readouterr().out
    flow: Flow = namespace["flow"]
    inputs = {"title": "a fox's journey", "lines": ["a fox", "an owl"], "mood": "dark"}
    result = flow.invoke(inputs, out_dir=tmp_path / "out", simulator=Simulator())
    assert len(result.outputs["frames"]) == 2
    assert result.outputs["caption"] == "By night, dark."
    assert Path(result.outputs["cover"].path).is_file()


# -- every field a flow file may set has a Python spelling -----------------------------------
#: A flow setting every field of the flow language (not meant to validate: only its shape).
EVERY_FIELD = """\
name: every_field
description: every field a flow file may set
version: 1
catalog: models.yaml
inputs:
  text: {type: text, description: what to tell, required: false, default: a fox}
  lines: {type: list, items: text}
nodes:
  story:
    kind: text_to_text
    model: openai-gpt-6-luna
    params: {empty_is_error: true}
    inputs: {text: inputs.text}
    description: tells the story
    timeout: 30
    retry:
      max_attempts: 3
      initial_interval: 0.1
      backoff_factor: 3
      max_interval: 5
      jitter: false
      when: [transient]
    cache: {ttl: 60}
    on_error:
      - when: [content_policy]
        rewrite: {via: censor, port: text, output: text, max_attempts: 2}
        label: soften it
      - when: [timeout]
        goto: continue
        label: go on
      - when: [any]
        goto: backup
        label: the other one
  censor: {kind: censor_text, model: openai-gpt-6-luna}
  backup: {kind: text_to_text, model: openai-gpt-6-luna, inputs: {text: inputs.text}}
  each:
    kind: prompt_template
    params: {template: "{line}!"}
    inputs: {line: line}
    map: {over: inputs.lines, as: line, max_parallel: 2}
  pictures:
    {kind: text_to_image, model: stability-core, candidates: 3, inputs: {prompt: story.text}}
outputs:
  story: story.text
  each: each.text
"""


def every_field_in_python() -> Flow:
    from calliope_graph.flow.spec import CacheSpec, RetrySpec

    flow = Flow("every_field", "every field a flow file may set", catalog="models.yaml")
    text = flow.input("text", "text", description="what to tell", required=False, default="a fox")
    lines = flow.input("lines", "list", items="text")
    retry = RetrySpec(
        max_attempts=3,
        initial_interval=0.1,
        backoff_factor=3,
        max_interval=5,
        jitter=False,
        when=["transient"],
    )
    story = flow.add(
        "story",
        "text_to_text",
        {"text": text},
        model="openai-gpt-6-luna",
        params={"empty_is_error": True},
        description="tells the story",
        timeout=30,
        retry=retry,
        cache=CacheSpec(ttl=60),
    )
    flow.rewrite(story, via="censor", port="text", output="text", max_attempts=2, label="soften it")
    flow.continue_on(story, when=["timeout"], label="go on")
    flow.fallback(story, to="backup", label="the other one")
    flow.add("censor", "censor_text", model="openai-gpt-6-luna")
    flow.add("backup", "text_to_text", {"text": text}, model="openai-gpt-6-luna")
    line = flow.item("line")
    each = flow.map(
        "each",
        "prompt_template",
        {"line": line},
        over=lines,
        item=line,
        max_parallel=2,
        params={"template": "{line}!"},
    )
    flow.add(
        "pictures", "text_to_image", {"prompt": story.text}, model="stability-core", candidates=3
    )
    flow.output("story", story.text)
    flow.output("each", each.text)
    return flow


def _fields(model: type[BaseModel], seen: set[str]) -> set[str]:
    """Every ``Model.field`` reachable from ``model`` (a ModelConfig is one value: the
    builder takes it whole, as ``model=``)."""
    out: set[str] = set()
    for name, info in model.model_fields.items():
        out.add(f"{model.__name__}.{name}")
        for inner in _models_in(info.annotation):
            if inner.__name__ not in seen and inner is not ModelConfig:
                seen.add(inner.__name__)
                out |= _fields(inner, seen)
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _set_fields(value: Any) -> set[str]:
    """Every ``Model.field`` a loaded value sets (recursively)."""
    if isinstance(value, BaseModel) and not isinstance(value, ModelConfig):
        out = {f"{type(value).__name__}.{name}" for name in value.model_fields_set}
        for name in value.model_fields_set:
            out |= _set_fields(getattr(value, name))
        return out
    if isinstance(value, dict):
        return {f for v in value.values() for f in _set_fields(v)}
    if isinstance(value, list):
        return {f for v in value for f in _set_fields(v)}
    return set()


def test_every_field_of_the_flow_language_has_a_python_spelling() -> None:
    """EVERY_FIELD sets every field the spec models declare (a new field fails here until it
    is added there and to its Python twin), and the builder says the same flow."""
    from calliope_graph.flow import load_spec

    yaml = load_spec("every_field.yaml", text=EVERY_FIELD)
    missing = _fields(FlowSpec, {"FlowSpec"}) - _set_fields(yaml)
    assert not missing, f"EVERY_FIELD does not set {sorted(missing)}: add them, and to Python"
    python = every_field_in_python()
    assert python.spec.model_dump(mode="json") == yaml.model_dump(mode="json")
    assert list(python.spec.nodes) == list(yaml.nodes)
