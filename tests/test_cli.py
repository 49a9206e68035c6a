"""The command line as a user meets it: exit codes, messages, files written, progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.flow import FlowSpec, Trace

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"
KEY_VARS = (
    "OPENAI_API_KEY",
    "AZURE_VISION_KEY",
    "AZURE_VISION_ENDPOINT",
    "STABILITY_API_KEY",
    "REPLICATE_API_TOKEN",
    "HF_TOKEN",
    "RUNWAYML_API_SECRET",
    "ANTHROPIC_API_KEY",
)


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def webcam_run(out: Path, *extra: str) -> Result:
    return cli(
        "run", "webcam_story", "--input", f"image={WEBCAM}", "--simulate", "--out", str(out),
        *extra,
    )  # fmt: skip


def test_run_webcam_story_offline_writes_frame_trace_report_and_checkpoint(
    tmp_path: Path,
) -> None:
    result = webcam_run(tmp_path)
    assert result.exit_code == 0, result.output
    assert "done" in result.stdout
    assert "frame" in result.stdout
    # live progress, per node, on stderr
    assert "azure_analysis" in result.stderr and "started" in result.stderr
    assert "finished" in result.stderr
    frame = json.loads((tmp_path / "frame.json").read_text())
    assert frame["text"].strip()
    assert (tmp_path / "illustration.png").read_bytes().startswith(b"\x89PNG")
    trace = Trace.load(tmp_path / "trace.json")
    assert trace.status == "ok"
    assert {"azure_analysis", "llm_analysis", "merge", "story", "illustration", "frame"} <= set(
        trace.path()
    )
    assert (tmp_path / "checkpoints.sqlite").is_file()
    report = (tmp_path / "report.html").read_text()
    assert "illustration" in report


def test_progress_shows_fallback_and_continue(tmp_path: Path) -> None:
    # Every Stability call refused → censor-and-retry 3 times → GPT Image stands in.
    result = webcam_run(tmp_path, "--faults", "content_policy@stability")
    assert result.exit_code == 0, result.output
    assert "openai_illustration" in result.stderr
    assert "→" in result.stderr  # the fallback line names the branch taken
    trace = Trace.load(tmp_path / "trace.json")
    illustration = [e for e in trace.executions if e.node == "illustration"]
    assert len(illustration) == 4  # first try + 3 rewrites
    assert (tmp_path / "illustration.png").is_file()


def test_failed_run_exits_1_names_the_node_and_resumes(tmp_path: Path) -> None:
    failed = webcam_run(tmp_path, "--faults", "auth@stability;auth@openai:endpoint=images")
    assert failed.exit_code == EXIT_CODES["run_failed"], failed.output
    assert "illustration" in failed.stderr
    assert "Traceback" not in failed.stderr
    trace = Trace.load(tmp_path / "trace.json")
    assert trace.status == "failed"
    assert (tmp_path / "report.html").is_file()  # the report shows the failure too

    resumed = cli(
        "run", "webcam_story", "--simulate", "--out", str(tmp_path), "--resume", trace.thread_id
    )
    assert resumed.exit_code == 0, resumed.output
    again = Trace.load(tmp_path / "trace.json")
    assert again.status == "ok"
    assert again.resumed_from == trace.thread_id or again.thread_id == trace.thread_id
    # the analyses and the story completed before the failure: not run again
    rerun = {e.node for e in again.executions if not e.resumed}
    assert "azure_analysis" not in rerun and "story" not in rerun


def test_missing_keys_name_the_variable_and_suggest_simulate(tmp_path: Path) -> None:
    result = cli("run", "webcam_story", "--input", f"image={WEBCAM}", "--out", str(tmp_path))
    assert result.exit_code == EXIT_CODES["configuration"]
    assert "OPENAI_API_KEY" in result.stderr
    assert "STABILITY_API_KEY" in result.stderr
    assert "--simulate" in result.stderr


def test_missing_input_file_is_a_media_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    result = cli(
        "run", "webcam_story", "--input", f"image={missing}", "--simulate", "--out",
        str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["media"], result.output
    assert "nope.jpg" in result.stderr


def test_corrupt_input_image_is_a_media_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = cli(
        "run", "webcam_story", "--input", f"image={bad}", "--simulate", "--out",
        str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["media"]
    assert "broken.jpg" in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cli("run", "webcam_story", "--input", "no-equals-sign", "--simulate").exit_code == 2
    result = cli("run", "webcam_story", "--faults", "hang@openai")
    assert result.exit_code == 2
    assert "--simulate" in result.output


def test_validate_shipped_flows() -> None:
    for name in (
        "webcam_story",
        "voice_story",
        "illustrate",
        "image_to_video_story",
        "structured_scene",
        "continuous_story",
    ):
        result = cli("validate", name)
        assert result.exit_code == 0, result.output
        assert name in result.stdout


def test_validate_broken_yaml_names_the_place(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: broken\n"
        "inputs:\n"
        "  text: {type: text}\n"
        "nodes:\n"
        "  image:\n"
        "    kind: text_to_imagee\n"
        "    inputs: {prompt: inputs.text}\n"
        "outputs:\n"
        "  image: image.image\n"
    )
    result = cli("validate", str(broken))
    assert result.exit_code == EXIT_CODES["invalid_flow"]
    assert "text_to_imagee" in result.stderr
    assert "line 6" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_flow_name_lists_the_shipped_ones() -> None:
    result = cli("validate", "webcam_storyy")
    assert result.exit_code == EXIT_CODES["invalid_flow"]
    assert "webcam_story" in result.stderr


def test_debug_prints_the_traceback(tmp_path: Path) -> None:
    result = cli("validate", "no_such_flow", "--debug")
    assert result.exit_code == EXIT_CODES["invalid_flow"]
    assert "Traceback" in result.stderr


def test_nodes_lists_kinds_ports_and_providers() -> None:
    result = cli("nodes")
    assert result.exit_code == 0
    for kind in ("text_to_image", "analyze_image", "merge_analyses", "censor_text"):
        assert kind in result.stdout
    assert "stability" in result.stdout and "azure_vision" in result.stdout


def test_schema_is_the_committed_one() -> None:
    result = cli("schema")
    assert result.exit_code == 0
    printed = json.loads(result.stdout)
    assert printed == FlowSpec.json_schema()
    committed = ROOT / "calliope_graph" / "flow" / "flow.schema.json"
    assert json.loads(committed.read_text()) == printed, "run `make schema` and commit it"


def test_report_from_a_saved_trace(tmp_path: Path) -> None:
    assert webcam_run(tmp_path).exit_code == 0
    (tmp_path / "report.html").unlink()
    target = tmp_path / "again.html"
    result = cli("report", str(tmp_path / "trace.json"), "-o", str(target))
    assert result.exit_code == 0, result.output
    assert "<html" in target.read_text().lower()
    missing = cli("report", str(tmp_path / "missing.json"))
    assert missing.exit_code == EXIT_CODES["media"]
    assert "missing.json" in missing.stderr
