"""One offline switch (issue 24, items 2, 4 and 7): ``CALLIOPE_SIMULATE=1`` (with
``CALLIOPE_FAULTS`` and ``CALLIOPE_SIMULATE_LIMITS``) is read in one place
(``session.OfflineSwitch``) and honoured by sessions made without keys — so ``Flow.invoke``,
``ainvoke``, ``astream``, ``batch``, the seed's functional API, the DBOS worker and the server
— and by the CLI; every command the CLI prints runs as printed; runs say they were simulated.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from calliope_graph import KeysModel, catalog
from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.cli.common import Simulation, continue_command
from calliope_graph.errors import ConfigurationError
from calliope_graph.flow import Flow, FlowResult, Trace
from calliope_graph.inference import text_to_text_inference
from calliope_graph.serve import ServeSettings
from calliope_graph.session import OfflineSwitch, Session, default_session
from calliope_graph.viz import render_report

KEY_VARS = ("OPENAI_API_KEY", "STABILITY_API_KEY", "ANTHROPIC_API_KEY", "AZURE_VISION_KEY")

ONE_NODE = """\
name: story_two
inputs:
  text: {type: text}
nodes:
  story:
    kind: text_to_text
    model: openai-gpt-6-luna
    inputs: {text: inputs.text}
outputs:
  text: story.text
"""


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def switch_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLIOPE_SIMULATE", "1")


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def printed(text: str, label: str) -> list[str]:
    """The command printed after ``label`` (one line), as the shell would split it."""
    line = next(line for line in text.splitlines() if label in line)
    command = line.split(label, 1)[1].strip()
    command = command.split(" (the password", 1)[0]
    words = shlex.split(command)
    assert words[0] == "calliope-graph", command
    return words[1:]


# -- the switch, read once -------------------------------------------------------------------
def test_the_switch_reads_its_three_variables() -> None:
    switch = OfflineSwitch.from_env(
        {
            "CALLIOPE_SIMULATE": "1",
            "CALLIOPE_FAULTS": "content_policy@stability",
            "CALLIOPE_SIMULATE_LIMITS": "openai:rpm=500",
        }
    )
    sim = switch.simulator()
    assert sim is not None
    assert [(f.kind, f.provider) for f in sim.faults] == [("content_policy", "stability")]
    assert "openai" in sim.limits
    assert OfflineSwitch.from_env({}).simulator() is None
    assert OfflineSwitch.from_env({"CALLIOPE_SIMULATE": "off"}).simulator() is None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CALLIOPE_SIMULATE": "maybe"}, "CALLIOPE_SIMULATE='maybe'"),
        ({"CALLIOPE_SIMULATE": "1", "CALLIOPE_FAULTS": "rate_limit@nowhere"}, "CALLIOPE_FAULTS"),
        (
            {"CALLIOPE_SIMULATE": "1", "CALLIOPE_SIMULATE_LIMITS": "openai:"},
            "CALLIOPE_SIMULATE_LIMITS",
        ),
        ({"CALLIOPE_FAULTS": "auth@openai"}, "CALLIOPE_FAULTS applies only to the simulator"),
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        OfflineSwitch.from_env(env).simulator()
    assert named in str(caught.value)


def test_a_session_made_without_keys_follows_the_switch(switch_on: None) -> None:
    assert Session().simulator is not None
    assert default_session().simulator is not None
    keys = KeysModel()
    assert Session(keys=keys).simulator is None  # given keys: the caller decides
    assert Session(simulate=False).simulator is None
    assert Session(transport=httpx.MockTransport(lambda r: httpx.Response(200))).simulator is None
    # with the switch on, keys given to a run do not take its calls away from the simulator
    assert default_session().derive(keys=keys) is default_session()


def test_the_server_takes_the_switch_with_its_faults() -> None:
    settings = ServeSettings.from_env(
        {"CALLIOPE_SIMULATE": "yes", "CALLIOPE_FAULTS": "auth@openai", "CALLIOPE_MEDIA_ROOT": "m"}
    )
    assert settings.simulate and settings.session.simulator is not None
    assert [f.kind for f in settings.session.simulator.faults] == ["auth"]
    with pytest.raises(ConfigurationError, match="CALLIOPE_SIMULATE="):
        ServeSettings.from_env({"CALLIOPE_SIMULATE": "sure"})


# -- the Python API --------------------------------------------------------------------------
def test_invoke_astream_and_batch_run_offline_with_only_the_switch(
    switch_on: None, tmp_path: Path
) -> None:
    flow = Flow.load("illustrate")
    result = flow.invoke({"text": "a fox in the snow"}, out_dir=tmp_path / "one")
    assert Path(result.outputs["image"].path).is_file()
    assert result.trace.simulated
    assert Trace.load(tmp_path / "one" / "trace.json").simulated

    async def streamed() -> FlowResult:
        found = None
        async for item in flow.astream({"text": "an owl"}, out_dir=tmp_path / "two"):
            found = item if isinstance(item, FlowResult) else found
        assert found is not None
        return found

    import asyncio

    assert asyncio.run(streamed()).trace.simulated
    inputs = tmp_path / "prompts.jsonl"
    inputs.write_text('{"text": "a kite"}\n{"text": "a boat"}\n', encoding="utf-8")
    summary = flow.batch(inputs, out_dir=tmp_path / "batch", concurrency=2)
    assert (summary.ok, summary.failed) == (2, 0)
    lines = (tmp_path / "batch" / "batch.jsonl").read_text().splitlines()
    assert all(json.loads(line)["simulated"] for line in lines)
    assert "badge simulated" in (tmp_path / "batch" / "batch.html").read_text()


def test_faults_from_the_environment_apply_to_a_plain_invoke(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CALLIOPE_SIMULATE", "1")
    monkeypatch.setenv("CALLIOPE_FAULTS", "content_policy@stability")
    result = Flow.load("illustrate").invoke({"text": "a fox"}, out_dir=tmp_path)
    assert "fallback_image" in result.trace.path()  # stability refused, OpenAI stood in


async def test_the_seed_functional_api_runs_offline_with_only_the_switch(
    switch_on: None,
) -> None:
    async with httpx.AsyncClient() as client:  # never used: the switch sends calls elsewhere
        text = await text_to_text_inference(
            client, "a fox", catalog.get("openai-gpt-6-luna"), KeysModel()
        )
    assert text.strip()


def test_the_report_shows_a_simulated_badge(switch_on: None, tmp_path: Path) -> None:
    result = Flow.load("illustrate").invoke({"text": "a fox"}, out_dir=tmp_path)
    page = render_report(result.trace, tmp_path / "r.html").read_text()
    assert 'class="badge simulated"' in page
    real = result.trace.model_copy(update={"simulated": False})
    assert 'class="badge simulated"' not in render_report(real, tmp_path / "x.html").read_text()


# -- the CLI ---------------------------------------------------------------------------------
def test_the_cli_runs_offline_with_only_the_switch_and_says_so(
    switch_on: None, tmp_path: Path
) -> None:
    result = cli("run", "illustrate", "--input", "text=a fox", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "simulated: every provider call goes to the offline simulator" in result.stderr
    assert "(simulated)" in result.stdout
    assert json.loads((tmp_path / "trace.json").read_text())["simulated"] is True


def test_without_the_switch_the_cli_says_nothing_about_simulation(tmp_path: Path) -> None:
    result = cli("run", "illustrate", "--input", "text=a fox", "--out", str(tmp_path))
    assert result.exit_code == EXIT_CODES["configuration"]  # keys missing: named
    assert "simulated" not in result.stderr


@pytest.mark.parametrize(
    ("var", "value"),
    [("CALLIOPE_SIMULATE", "maybe"), ("CALLIOPE_FAULTS", "nonsense@openai")],
)
def test_the_cli_names_a_bad_switch_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str, value: str
) -> None:
    monkeypatch.setenv("CALLIOPE_SIMULATE", "1")
    monkeypatch.setenv(var, value)
    result = cli("run", "illustrate", "--input", "text=a fox", "--out", str(tmp_path))
    assert result.exit_code == EXIT_CODES["configuration"], result.output
    assert var in result.stderr


def test_faults_on_the_command_line_apply_with_the_switch(switch_on: None, tmp_path: Path) -> None:
    result = cli(
        "run", "illustrate", "--input", "text=a fox", "--out", str(tmp_path),
        "--faults", "content_policy@stability",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # not "--faults only applies with --simulate"
    assert "fallback_image" in Trace.load(tmp_path / "trace.json").path()


# -- hints that paste ------------------------------------------------------------------------
def test_continue_command_keeps_the_simulation_and_quotes() -> None:
    simulation = Simulation(
        simulate=True,
        faults_text="hang@openai:seconds=2;rate_limit@stability",
        simulate_limits_text="openai:rpm=5",
        limits="stability:rpm=60",
    )
    command = continue_command(
        "run", "my flows/story.yaml", "--out", "out", "--resume", "t1", simulation=simulation
    )
    assert shlex.split(command) == [
        "calliope-graph", "run", "my flows/story.yaml", "--out", "out", "--resume", "t1",
        "--simulate", "--faults", "hang@openai:seconds=2;rate_limit@stability",
        "--simulate-limits", "openai:rpm=5", "--limits", "stability:rpm=60",
    ]  # fmt: skip
    switched = Simulation(switch=OfflineSwitch(simulate=True, faults="auth@openai"))
    assert continue_command("run", "f", simulation=switched).endswith(
        "--simulate --faults auth@openai"
    )


def test_the_printed_resume_command_of_a_yaml_flow_runs_as_printed(tmp_path: Path) -> None:
    flow = tmp_path / "story_two.yaml"
    flow.write_text(ONE_NODE)
    out = tmp_path / "out"
    first = cli(
        "run", str(flow), "--input", "text=a fox", "--simulate", "--faults", "auth@openai",
        "--out", str(out),
    )  # fmt: skip
    assert first.exit_code == EXIT_CODES["run_failed"], first.output
    words = printed(first.stderr, "resume without re-running what completed:")
    assert words[:2] == ["run", str(flow)]  # the file, not the flow's name
    assert "--simulate" in words and "auth@openai" in words
    thread = words[words.index("--resume") + 1]
    again = cli(*words)
    # the same run resumed (its fault still given: it fails the same way, not "No flow")
    assert again.exit_code == EXIT_CODES["run_failed"], again.output
    assert f"resuming story_two  thread {thread}" in again.stderr
    # without the fault, the printed command minus it finishes the run
    fixed = words[: words.index("--faults")] + words[words.index("--faults") + 2 :]
    done = cli(*fixed)
    assert done.exit_code == 0, done.output


def test_the_printed_batch_commands_run_as_printed(tmp_path: Path) -> None:
    flow = tmp_path / "story_two.yaml"
    flow.write_text(ONE_NODE)
    inputs = tmp_path / "prompts.jsonl"
    inputs.write_text('{"id": "a", "text": "a fox"}\n{"id": "b", "text": "an owl"}\n')
    out = tmp_path / "out"
    first = cli(
        "batch", str(flow), "--inputs", str(inputs), "--out", str(out), "--simulate",
        "--faults", "auth@openai", "--budget", "5",
    )  # fmt: skip
    assert first.exit_code == EXIT_CODES["run_failed"], first.output
    words = printed(first.stdout, "retry the failed items:")
    assert words[:2] == ["batch", str(flow)]
    assert {"--simulate", "--retry-failed", "--budget", "auth@openai"} <= set(words)
    again = cli(*words)
    assert again.exit_code == EXIT_CODES["run_failed"], again.output  # the fault again
    assert "2 failed" in again.stdout
    fixed = words[: words.index("--faults")] + words[words.index("--faults") + 2 :]
    done = cli(*fixed)
    assert done.exit_code == 0, done.output
    assert "2 ok" in done.stdout


def test_environment_faults_apply_with_the_simulate_option_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CALLIOPE_FAULTS", "content_policy@stability")
    args = ["run", "illustrate", "--input", "text=a fox", "--out", str(tmp_path)]
    result = cli(*args, "--simulate", "--simulate-limits", "openai:rpm=500")
    assert result.exit_code == 0, result.output
    assert "fallback_image" in Trace.load(tmp_path / "trace.json").path()
    refused = cli(*args)  # the faults without any simulation: named, not ignored
    assert refused.exit_code == EXIT_CODES["configuration"]
    assert "CALLIOPE_FAULTS applies only to the simulator" in refused.stderr
