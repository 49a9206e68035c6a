"""Google, fal and Luma from the command line, as a user runs them: a one-node flow for each
provider and each node kind it serves runs with ``calliope-graph run --simulate``; faults are
retried (rate limits, server errors) or routed (content policy → the flow's fallback edge);
``--simulate-limits`` makes the provider answer its own 429s, which a batch waits out.

Waits (polls, retries, rate limits) run on one virtual clock shared by the run context and
the simulator the CLI builds, so nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import Clock

import calliope_graph.cli as cli
import calliope_graph.simulate as simulate
from calliope_graph.config import catalog
from calliope_graph.context import RunContext
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, wav_bytes

#: Luma fetches Ray's start frame from a public https URL (see engines/luma.py).
MEDIA = "https://media.example.com/story"
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "mood": {"type": "string"}},
    "required": ["title", "mood"],
}
#: (provider, node kind, catalog model, {port: input}, output port, fallback model)
PAIRS: list[tuple[str, str, str, dict[str, str], str, str]] = [
    ("google", "text_to_text", "google-gemini-flash", {"text": "text"}, "text",
     "openai-gpt-6-luna"),
    ("google", "analyze_image", "google-gemini-flash", {"image": "image"}, "analysis",
     "openai-gpt-6-luna"),
    ("google", "messages_to_object", "google-gemini-flash", {"messages": "messages"}, "object",
     "openai-gpt-6-luna"),
    ("google", "audio_to_text", "google-gemini-flash", {"audio": "audio"}, "text",
     "openai-gpt-transcribe"),
    ("google", "text_to_image", "google-gemini-image", {"prompt": "text"}, "image",
     "openai-gpt-image-2"),
    ("google", "image_and_text_to_video", "google-veo", {"image": "image", "text": "text"},
     "video", "runway-gen4-turbo"),
    ("google", "text_to_speech", "google-gemini-tts", {"text": "text"}, "audio",
     "elevenlabs-multilingual-v2"),
    ("fal", "text_to_image", "fal-flux-schnell", {"prompt": "text"}, "image",
     "openai-gpt-image-2"),
    ("fal", "image_and_text_to_video", "fal-kling-video", {"image": "image", "text": "text"},
     "video", "runway-gen4-turbo"),
    ("luma", "text_to_image", "luma-photon", {"prompt": "text"}, "image", "openai-gpt-image-2"),
    ("luma", "image_and_text_to_video", "luma-ray-2", {"image": "image", "text": "text"},
     "video", "runway-gen4-turbo"),
]  # fmt: skip
IDS = [f"{p[0]}-{p[1]}" for p in PAIRS]


@pytest.fixture
def virtual(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """One virtual clock for the run context's waits and the CLI's simulator."""
    clock = Clock()
    create = RunContext.create.__func__  # type: ignore[attr-defined]

    def with_clock(cls: type[RunContext], *args: Any, **kwargs: Any) -> RunContext:
        kwargs["sleep"] = clock
        return create(cls, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(RunContext, "create", classmethod(with_clock))
    # the CLI imports the Simulator from the package when --simulate is given
    monkeypatch.setattr(
        simulate,
        "Simulator",
        lambda *a, **k: Simulator(*a, sleep=clock, clock=lambda: clock.now, **k),
    )
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "FAL_KEY", "LUMAAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return clock


def model_ref(model: str) -> Any:
    """The catalog name, or (Luma Ray) the catalog entry with its public image URL set."""
    if model != "luma-ray-2":
        return model
    return catalog.get(model).with_parameters(image_base_url=MEDIA).model_dump(mode="json")


def flow_file(
    path: Path, kind: str, model: str, ports: dict[str, str], out: str, fallback: str | None
) -> Path:
    """A flow of one node (plus, with ``fallback``, the node a content_policy error goes to)."""

    def node(model_name: str) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "kind": kind,
            "model": model_ref(model_name),
            "inputs": {port: f"inputs.{port}" for port in ports},
        }
        if kind == "messages_to_object":
            spec["params"] = {"schema": SCHEMA}
        return spec

    nodes = {"step": node(model)}
    if fallback:
        nodes["step"]["on_error"] = [{"when": ["content_policy"], "goto": "fallback"}]
        nodes["fallback"] = node(fallback)
    spec = {
        "name": f"one_{kind}",
        "inputs": {port: {"type": ptype} for port, ptype in ports.items()},
        "nodes": nodes,
        "outputs": {"result": f"step.{out}"},
    }
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def run(tmp_path: Path, flow: Path, ports: dict[str, str], *extra: str) -> Result:
    picture = tmp_path / "kite.png"
    picture.write_bytes(image_bytes("a red kite over a harbour", 320, 180))
    voice = tmp_path / "voice.wav"
    voice.write_bytes(wav_bytes("the harbour at dawn", seconds=1.0))
    values = {
        "text": "a fox finds a lantern by the sea",
        "messages": "a fox and a raven meet at the harbour",
        "image": str(picture),
        "audio": str(voice),
    }
    args = ["run", str(flow), "--simulate", "--out", str(tmp_path / "out"), *extra]
    for port, ptype in ports.items():
        args += ["--input", f"{port}={values[ptype]}"]
    return CliRunner().invoke(cli.main, args, catch_exceptions=False)


@pytest.mark.parametrize(("provider", "kind", "model", "ports", "out", "fallback"), PAIRS, ids=IDS)
def test_each_new_provider_and_kind_runs_from_the_cli_retrying_a_rate_limit(
    provider: str,
    kind: str,
    model: str,
    ports: dict[str, str],
    out: str,
    fallback: str,
    tmp_path: Path,
    virtual: Clock,
) -> None:
    flow = flow_file(tmp_path / "flow.json", kind, model, ports, out, None)
    result = run(tmp_path, flow, ports, "--faults", f"rate_limit@{provider}:first_n=1")
    assert result.exit_code == 0, result.output
    assert f"({kind}, " in result.output and "retried (rate_limit" in result.output
    assert "result:" in result.stdout


@pytest.mark.parametrize(("provider", "kind", "model", "ports", "out", "fallback"), PAIRS, ids=IDS)
def test_a_content_policy_refusal_of_each_new_provider_takes_the_fallback_edge(
    provider: str,
    kind: str,
    model: str,
    ports: dict[str, str],
    out: str,
    fallback: str,
    tmp_path: Path,
    virtual: Clock,
) -> None:
    flow = flow_file(tmp_path / "flow.json", kind, model, ports, out, fallback)
    result = run(tmp_path, flow, ports, "--faults", f"content_policy@{provider}")
    assert result.exit_code == 0, result.output
    assert "failed (content_policy)" in result.output
    assert f"fallback ({kind}, {fallback})" in result.output


@pytest.mark.parametrize("provider", ["google", "fal", "luma"])
def test_a_server_error_of_each_new_provider_is_retried(
    provider: str, tmp_path: Path, virtual: Clock
) -> None:
    _, kind, model, ports, out, _ = next(p for p in PAIRS if p[0] == provider)
    flow = flow_file(tmp_path / "flow.json", kind, model, ports, out, None)
    result = run(tmp_path, flow, ports, "--faults", f"server_error@{provider}:first_n=1")
    assert result.exit_code == 0, result.output
    assert "retried (transient" in result.output


@pytest.mark.parametrize(
    ("provider", "model"),
    [("google", "google-gemini-image"), ("fal", "fal-flux-schnell"), ("luma", "luma-photon")],
)
def test_a_batch_waits_out_each_new_providers_simulated_429s(
    provider: str, model: str, tmp_path: Path, virtual: Clock
) -> None:
    flow = flow_file(tmp_path / "flow.json", "text_to_image", model, {"prompt": "text"}, "image",
                     None)  # fmt: skip
    inputs = tmp_path / "prompts.jsonl"
    inputs.write_text(
        "".join(json.dumps({"prompt": f"a {animal} at the harbour"}) + "\n"
                for animal in ("fox", "raven", "whale")),
        encoding="utf-8",
    )  # fmt: skip
    out = tmp_path / "batch"
    result = CliRunner().invoke(
        cli.main,
        ["batch", str(flow), "--inputs", str(inputs), "--out", str(out), "--simulate",
         "--simulate-limits", f"{provider}:rpm=1", "--concurrency", "3"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(line["status"] == "ok" for line in lines)
    assert sum(line["rate_limits"].get(provider, 0) for line in lines) >= 1
    # each image is priced from the catalog (none of these is billed by compute time)
    price = catalog.get(model).price
    assert price is not None
    assert [line["cost"] for line in lines] == [pytest.approx(price.image()) for _ in lines]
    assert 60.0 in virtual.waits or any(w >= 55 for w in virtual.waits)  # the 429's minute


@pytest.mark.parametrize(
    ("provider", "model"),
    [("google", "google-gemini-image"), ("fal", "fal-flux-schnell"), ("luma", "luma-photon")],
)
async def test_a_run_and_a_batch_pointed_at_the_loopback_simulator_work_for_each_new_provider(
    provider: str, model: str, tmp_path: Path, virtual: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `calliope-graph simulate` prints, pasted into a shell: `run` and `batch` without
    --simulate then talk to the loopback server (and only to it)."""
    from calliope_graph.simulate.server import SimulatorServer

    sim = Simulator()
    flow = flow_file(tmp_path / "flow.json", "text_to_image", model, {"prompt": "text"}, "image",
                     None)  # fmt: skip
    inputs = tmp_path / "prompts.jsonl"
    inputs.write_text('{"prompt": "a fox"}\n{"prompt": "a raven"}\n', encoding="utf-8")
    async with SimulatorServer(sim, port=0) as server:
        for var, value in server.environment().items():
            monkeypatch.setenv(var, value)
        runner = CliRunner()
        ran = await asyncio.to_thread(
            runner.invoke,
            cli.main,
            ["run", str(flow), "--input", "prompt=a fox at sea", "--out", str(tmp_path / "r")],
        )
        batched = await asyncio.to_thread(
            runner.invoke,
            cli.main,
            ["batch", str(flow), "--inputs", str(inputs), "--out", str(tmp_path / "b")],
        )
    assert ran.exit_code == 0, ran.output
    assert batched.exit_code == 0, batched.output
    assert "2 ok, 0 failed" in batched.output
    assert sim.count(provider) >= 3  # the run's and both items' requests reached the server
