"""Lists in and out (issue 24, item 5): a ``list`` input with an item type, given as JSON on
the command line (``--input NAME='[...]'`` or ``NAME=@file.json``), in a JSONL value or a
CSV cell, from Python and to the server; a map runs over it; a value of another shape is
refused naming the input, the shape expected and how to give it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from calliope_graph.batch import BatchInputError, iter_items
from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.errors import ConfigurationError, FlowSpecError, MediaError
from calliope_graph.flow import Flow, load_spec
from calliope_graph.flow.run import prepare_inputs
from calliope_graph.media import Image
from calliope_graph.simulate import Simulator

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"

#: A first YAML flow as a newcomer writes it: a list input, a template and a map.
FIRST_FLOW = """\
name: postcards
inputs:
  places: {type: list, items: text, description: where the postcards come from}
  season: {type: text, required: false, default: winter}
nodes:
  caption:
    kind: prompt_template
    params: {template: "Greetings from {place} in {season}"}
    inputs: {place: place, season: inputs.season}
    map: {over: inputs.places, as: place}
  picture:
    kind: text_to_image
    model: openai-gpt-image-2
    inputs: {prompt: line}
    map: {over: caption.text, as: line, max_parallel: 2}
outputs:
  captions: caption.text
  pictures: picture.image
"""

#: No provider at all: what the flow returns is exactly what it was given.
ECHO_FLOW = """\
name: echo
inputs:
  places: {type: list, items: text}
  title: {type: text, required: false, default: ""}
  meta: {type: object, required: false}
nodes:
  line:
    kind: prompt_template
    params: {template: "{title}: {place}"}
    inputs: {place: place, title: inputs.title}
    map: {over: inputs.places, as: place}
outputs:
  lines: line.text
"""


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def first_flow(tmp_path: Path) -> Path:
    path = tmp_path / "postcards.yaml"
    path.write_text(FIRST_FLOW)
    return path


@pytest.fixture
def echo_flow(tmp_path: Path) -> Path:
    path = tmp_path / "echo.yaml"
    path.write_text(ECHO_FLOW)
    return path


# -- the done-means: a first YAML flow with a list input, a template and a map, from the CLI --
@pytest.mark.parametrize("offline", ["--simulate", "CALLIOPE_SIMULATE=1"])
def test_a_first_yaml_flow_with_a_list_a_template_and_a_map_runs_from_the_cli(
    first_flow: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: str
) -> None:
    if offline.startswith("CALLIOPE"):
        monkeypatch.setenv("CALLIOPE_SIMULATE", "1")
    flags = ["--simulate"] if offline == "--simulate" else []
    assert cli("validate", str(first_flow)).exit_code == 0
    out = tmp_path / "out"
    given = '["Lisbon", "Oslo", "Kyoto"]'
    result = cli("run", str(first_flow), "--input", f"places={given}", *flags, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Greetings from Oslo in winter" in result.stdout
    for index in range(3):
        assert (out / "picture" / str(index) / "picture.png").read_bytes().startswith(b"\x89PNG")
    trace = json.loads((out / "trace.json").read_text())
    assert trace["status"] == "ok" and trace["inputs"]["places"] == ["Lisbon", "Oslo", "Kyoto"]


def test_input_at_a_json_file_reads_the_list_from_the_file(echo_flow: Path, tmp_path: Path) -> None:
    places = tmp_path / "places.json"
    places.write_text(json.dumps(["Lisbon", "Oslo"]))
    result = cli(
        "run", str(echo_flow), "--input", f"places=@{places}", "--input", "title=From",
        "--simulate", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "['From: Lisbon', 'From: Oslo']" in result.stdout


def test_a_text_input_given_json_stays_the_text_typed(echo_flow: Path, tmp_path: Path) -> None:
    result = cli(
        "run", str(echo_flow), "--input", 'places=["x"]', "--input", 'title=["not", "a list"]',
        "--simulate", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert """['["not", "a list"]: x']""" in result.stdout


# -- what a user sees when the value does not fit ----------------------------------------------
@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("a fox", "but the text given ('a fox') is not JSON (Expecting value at column 1)"),
        ('["a fox", "an owl"', "is not JSON"),
        ('{"a": "fox"}', "must be a list of text, not an object"),
        ("42", "must be a list of text, not a number"),
        ('["a fox", {"b": 1}]', "its item 1 (from 0) is an object, but each item is a string"),
        ('["a fox", ["nested"]]', "its item 1 (from 0) is a list"),
    ],
)
def test_a_list_input_that_is_not_a_list_of_text_says_the_shape_and_how_to_give_it(
    echo_flow: Path, tmp_path: Path, given: str, says: str
) -> None:
    out = tmp_path / "out"
    result = cli(
        "run", str(echo_flow), "--input", f"places={given}", "--simulate", "--out", str(out)
    )
    assert result.exit_code == EXIT_CODES["configuration"]
    assert "Input 'places' must be a list of text" in result.stderr
    assert says in result.stderr
    assert "--input places='[" in result.stderr and "--input places=@places.json" in result.stderr
    assert "running" not in result.stderr  # refused before the run started
    assert not (out / "trace.json").exists()


def test_an_object_input_given_as_json_is_parsed_and_a_list_for_it_refused(
    echo_flow: Path, tmp_path: Path
) -> None:
    args = ("--input", 'places=["x"]', "--simulate", "--out", str(tmp_path / "out"))
    ok = cli("run", str(echo_flow), "--input", 'meta={"by": "me"}', *args)
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "out" / "trace.json").read_text())["inputs"]["meta"] == {
        "by": "me"
    }
    refused = cli("run", str(echo_flow), "--input", "meta=[1, 2]", *args)
    assert refused.exit_code == EXIT_CODES["configuration"]
    assert "Input 'meta' must be an object, not a list" in refused.stderr


def test_a_missing_json_file_is_named_with_the_bad_media_exit(
    echo_flow: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.json"
    result = cli("run", str(echo_flow), "--input", f"places=@{missing}", "--simulate")
    assert result.exit_code == EXIT_CODES["media"]
    assert "--input places: cannot read" in result.stderr and "nope.json" in result.stderr


# -- the flow language and the builder -----------------------------------------------------------
def test_the_builder_declares_the_same_list_input_as_yaml() -> None:
    flow = Flow("echo")
    places = flow.input("places", "list", items="text")
    assert places == "inputs.places"
    yaml = load_spec("echo.yaml", text=ECHO_FLOW)
    assert flow.spec.inputs["places"] == yaml.inputs["places"]
    assert yaml.inputs["places"].shape == "a list of text"
    assert load_spec("e.yaml", text=ECHO_FLOW.replace(", items: text", "")).inputs[
        "places"
    ].shape == ("a list of values")


def test_items_on_an_input_that_is_not_a_list_says_what_to_write() -> None:
    with pytest.raises(FlowSpecError, match=r"write \{type: list, items: text\}, or drop 'items'"):
        load_spec("e.yaml", text=ECHO_FLOW.replace("{type: list, items: text}", "{items: text}"))
    with pytest.raises(FlowSpecError, match="items"):
        Flow("x").input("places", "text", items="text")
    with pytest.raises(FlowSpecError, match="items"):
        load_spec("e.yaml", text=ECHO_FLOW.replace("items: text", "items: number"))


def test_a_list_input_wired_into_a_one_value_port_says_to_map_over_it(tmp_path: Path) -> None:
    text = FIRST_FLOW.replace(
        "inputs: {prompt: line}\n    map: {over: caption.text, as: line, max_parallel: 2}",
        "inputs: {prompt: inputs.places}",
    )
    flow = Flow.load(_write(tmp_path, text))
    with pytest.raises(
        FlowSpecError, match=r"list of text, but picture\.prompt takes one text: map"
    ):
        flow.validate()


# -- Python --------------------------------------------------------------------------------------
def test_invoke_takes_a_list_and_refuses_a_string_naming_the_shape(tmp_path: Path) -> None:
    flow = Flow.load(_write(tmp_path, ECHO_FLOW))
    result = flow.invoke(
        {"places": ("Lisbon", 7), "title": "To"}, out_dir=tmp_path / "a", simulator=Simulator()
    )
    assert result.outputs["lines"] == ["To: Lisbon", "To: 7"]  # numbers given for text: text
    with pytest.raises(ConfigurationError, match="Input 'places' must be a list of text") as bad:
        flow.invoke({"places": "Lisbon"}, out_dir=tmp_path / "b", simulator=Simulator())
    assert "from Python a list" in str(bad.value)
    with pytest.raises(ConfigurationError, match=r"needs input 'places' \(a list of text\)"):
        flow.invoke({}, out_dir=tmp_path / "c", simulator=Simulator())


def test_a_list_of_images_opens_each_file_and_names_a_bad_one(tmp_path: Path) -> None:
    flow = Flow("album")
    photos = flow.input("photos", "list", items="image")
    item = flow.item("photo")
    flow.map(
        "look", "analyze_image", {"image": item}, over=photos, item=item, model="azure-vision-4.0"
    )
    flow.output("looks", "look.analysis")
    plan = flow.plan()
    state = prepare_inputs(plan, {"photos": [str(WEBCAM), WEBCAM]})
    (values,) = state.values()
    assert [type(v) for v in values] == [Image, Image] and values[0].width > 0
    with pytest.raises(MediaError, match=r"missing\.png"):
        prepare_inputs(plan, {"photos": [str(WEBCAM), str(tmp_path / "missing.png")]})
    with pytest.raises(
        ConfigurationError, match=r"a list of images: its item 0 \(from 0\) is a number"
    ):
        prepare_inputs(plan, {"photos": [3]})
    result = flow.invoke(
        {"photos": [WEBCAM, WEBCAM]}, out_dir=tmp_path / "o", simulator=Simulator()
    )
    assert len(result.outputs["looks"]) == 2


# -- batch ---------------------------------------------------------------------------------------
def test_a_batch_column_holds_a_list_as_a_json_array_or_a_csv_cell(tmp_path: Path) -> None:
    spec = load_spec("echo.yaml", text=ECHO_FLOW)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"id": "a", "places": ["Lisbon", "Oslo"]}\n')
    csv = tmp_path / "rows.csv"
    csv.write_text('id,places\nb,"[""Kyoto"", ""Lima""]"\n')
    items = [*iter_items(jsonl, spec), *iter_items(csv, spec)]
    assert [i.inputs["places"] for i in items] == [["Lisbon", "Oslo"], ["Kyoto", "Lima"]]
    csv.write_text("id,places\nb,Kyoto\n")
    with pytest.raises(
        BatchInputError, match=r"rows\.csv:2: Input 'places' must be a list of text"
    ):
        list(iter_items(csv, spec))
    jsonl.write_text('{"id": "a", "places": "Lisbon"}\n')
    with pytest.raises(BatchInputError, match=r"rows\.jsonl:1: .*is not JSON"):
        list(iter_items(jsonl, spec))


def test_a_batch_from_the_cli_runs_each_rows_list(echo_flow: Path, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text('id,places,title\none,"[""Lisbon"", ""Oslo""]",To\ntwo,"[]",To\n')
    out = tmp_path / "out"
    result = cli("batch", str(echo_flow), "--inputs", str(rows), "--out", str(out), "--simulate")
    assert result.exit_code == 0, result.output
    lines = json.loads((out / "one" / "trace.json").read_text())
    assert lines["inputs"]["places"] == ["Lisbon", "Oslo"]


# -- the server ----------------------------------------------------------------------------------
async def test_the_server_publishes_a_list_input_as_an_array_and_checks_its_items(
    tmp_path: Path,
) -> None:
    from calliope_graph.serve import ServeContext, ServeSettings, serve_graph

    settings = ServeSettings(media_root=tmp_path / "m", simulate=True)
    graph = serve_graph(_write(tmp_path, ECHO_FLOW), settings)
    schema = graph.get_input_jsonschema()["properties"]["places"]
    assert schema["type"] == "array" and schema["items"] == {"type": "string"}
    config: Any = {"configurable": {"thread_id": "t-1"}}
    for given, says in (
        ("Lisbon", "a list of text (a JSON array), not a string"),
        (
            ["Lisbon", 3],
            "a list of text: its item 1 (from 0) is a number, but each item must be text",
        ),
    ):
        with pytest.raises(
            ConfigurationError, match=re.escape(f"'places' of flow 'echo' must be {says}")
        ):
            await graph.ainvoke({"places": given}, config, context=ServeContext())
    out = await graph.ainvoke({"places": ["Lisbon"], "title": "To"}, config, context=ServeContext())
    assert out["lines"] == ["To: Lisbon"]


def _write(folder: Path, text: str) -> str:
    path = folder / "flow.yaml"
    path.write_text(text)
    return str(path)


def test_the_critical_path_of_a_map_of_instant_items_ends() -> None:
    """Two items of one map that took no time each ended "before" the other started (within
    the 1 ms tolerance): the critical path once walked between them for ever, hanging the
    report of a first flow whose template node maps over a list."""
    from calliope_graph.flow import NodeExecution, Trace

    trace = Trace(flow="echo", thread_id="t", started_at=100.0)
    trace.executions = [
        NodeExecution(node="line", kind="prompt_template", started_at=100.0, ended_at=100.0),
        NodeExecution(node="line", kind="prompt_template", started_at=100.0, ended_at=100.0),
    ]
    assert trace.critical_path() == (0.0, ["line", "line"])


async def test_the_server_makes_each_item_of_a_list_of_images_a_file_of_the_run(
    tmp_path: Path,
) -> None:
    import base64

    from calliope_graph.serve import ServeContext, ServeSettings, serve_graph

    flow = Flow("album")
    photos = flow.input("photos", "list", items="image")
    item = flow.item("photo")
    look = flow.map(
        "look", "analyze_image", {"image": item}, over=photos, item=item, model="azure-vision-4.0"
    )
    flow.output("looks", look.analysis)
    root = tmp_path / "media"
    graph = serve_graph(flow, ServeSettings(media_root=root, simulate=True))
    photo = "data:image/jpeg;base64," + base64.b64encode(WEBCAM.read_bytes()).decode()
    config: Any = {"configurable": {"thread_id": "t-1"}}
    out = await graph.ainvoke({"photos": [photo, photo]}, config, context=ServeContext())
    assert len(out["looks"]) == 2
    assert len(list((root / "t-1").rglob("inputs/*.jpg"))) == 2
    with pytest.raises(MediaError, match=r"its item 0 \(from 0\) is a number"):
        await graph.ainvoke({"photos": [7]}, config, context=ServeContext())
