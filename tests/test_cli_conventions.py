"""CLI conventions a user expects (issue 24, item 8): ``-h`` everywhere, ``-o``/``--out`` for
every output, and each retry reported once."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from calliope_graph.cli import main
from calliope_graph.engines import _http

ROOT = Path(__file__).resolve().parent.parent

#: commands that write files or folders (their output option is -o/--out)
WRITERS = ("run", "batch", "worker", "draw", "report")


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "STABILITY_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def test_dash_h_prints_the_help_of_calliope_graph() -> None:
    result = cli("-h")
    assert result.exit_code == 0, result.output
    assert "Usage: calliope-graph" in result.output or "Usage: main" in result.output
    assert "-h, --help" in result.output


@pytest.mark.parametrize("command", sorted(main.commands))
def test_dash_h_prints_the_help_of_every_command(command: str) -> None:
    result = cli(command, "-h")
    assert result.exit_code == 0, result.output
    assert f" {command} [OPTIONS]" in result.output
    assert "-h, --help" in result.output


def _output_option(command: click.Command) -> click.Option | None:
    for param in command.params:
        if isinstance(param, click.Option) and {"-o", "--out", "--output"} & set(param.opts):
            return param
    return None


def test_every_command_that_writes_files_takes_dash_o_and_dash_dash_out() -> None:
    commands = main.commands
    for name in WRITERS:
        option = _output_option(commands[name])
        assert option is not None, f"{name} has no output option"
        assert {"-o", "--out"} <= set(option.opts), f"{name}: {option.opts}"
    for name, command in commands.items():  # and no command spells it differently
        option = _output_option(command)
        if option is not None:
            assert {"-o", "--out"} <= set(option.opts), f"{name}: {option.opts}"


def test_run_dash_o_writes_into_that_folder(tmp_path: Path) -> None:
    out = tmp_path / "made"
    result = cli("run", "illustrate", "-i", "text=a red kite", "--simulate", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "image.png").is_file()
    assert (out / "trace.json").is_file()


def test_draw_takes_dash_o_dash_dash_out_and_the_old_dash_dash_output(tmp_path: Path) -> None:
    for flag in ("-o", "--out", "--output"):
        target = tmp_path / f"drawing{flag.replace('-', '_')}.svg"
        result = cli("draw", "illustrate", flag, str(target))
        assert result.exit_code == 0, result.output
        assert target.read_text().lstrip().startswith("<")


def test_report_takes_dash_dash_out(tmp_path: Path) -> None:
    run = cli("run", "illustrate", "-i", "text=a red kite", "--simulate", "-o", str(tmp_path))
    assert run.exit_code == 0, run.output
    target = tmp_path / "again.html"
    result = cli("report", str(tmp_path / "trace.json"), "--out", str(target))
    assert result.exit_code == 0, result.output
    assert "<html" in target.read_text().lower()


def test_a_retried_provider_call_is_reported_once_by_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # no backoff wait (tests never sleep); the retry itself is the simulator's 500
    monkeypatch.setattr(_http, "_wait", lambda _ctx: lambda _state: 0.0)
    caplog.set_level(logging.WARNING)
    result = cli(
        "run", "illustrate", "-i", "text=a red kite", "--simulate", "--no-cache",
        "--faults", "server_error@stability:first_n=1", "-o", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = result.stderr + "\n".join(record.getMessage() for record in caplog.records)
    assert result.stderr.count("↻") == 1  # the progress line, naming the node
    assert "attempt 1 failed" not in shown  # and not the engine's log line as well
    assert "1 retries" in result.stderr


def test_the_python_api_still_logs_each_retry_after_a_cli_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from calliope_graph.flow import Flow
    from calliope_graph.simulate import Simulator, parse_faults

    monkeypatch.setattr(_http, "_wait", lambda _ctx: lambda _state: 0.0)
    cli("run", "illustrate", "-i", "text=a red kite", "--simulate", "-o", str(tmp_path / "cli"))
    caplog.set_level(logging.WARNING)
    Flow.load("illustrate").invoke(
        {"text": "a red kite"},
        out_dir=tmp_path / "api",
        simulator=Simulator(faults=parse_faults("server_error@stability:first_n=1")),
        cache=False,
    )
    retries = [r for r in caplog.records if r.name == "calliope_graph.engines.retries"]
    assert len(retries) == 1 and "attempt 1 failed" in retries[0].getMessage()
