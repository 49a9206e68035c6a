"""The simulator limits like the providers, in process and as a loopback HTTP server.

In process everything runs on a virtual clock (the simulator's ``clock`` and the run's
``sleep`` are one fake), so a 60 s Retry-After costs nothing. The server tests use real
sockets on 127.0.0.1 and bound every wait.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.config import KeysModel
from calliope_graph.context import PollSettings, RetrySettings, RunContext
from calliope_graph.errors import ConfigurationError
from calliope_graph.flow import Flow
from calliope_graph.limits import parse_duration, parse_rfc3339
from calliope_graph.nodes import TextToImage, TextToText
from calliope_graph.simulate import Fault, Simulator, parse_simulate_limits
from calliope_graph.simulate.server import SimulatorServer
from calliope_graph.testing import image_bytes

OPENAI = "https://api.openai.com/v1"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
STABILITY = "https://api.stability.ai/v2beta/stable-image/generate/core"
REPLICATE = "https://api.replicate.com/v1"
RUNWAY = "https://api.dev.runwayml.com/v1"
AZURE = "https://calliope-sim.cognitiveservices.azure.com/vision/v3.2/analyze"
HF = "https://router.huggingface.co/hf-inference/models/runwayml/stable-diffusion-v1-5"
WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z
png_bytes = image_bytes("a kite", 64, 64)


class VirtualClock:
    """The simulator's clock and the run's sleep in one: sleeping moves time on at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limited(limits: Any, clock: VirtualClock, **kwargs: Any) -> Simulator:
    return Simulator(
        limits=limits, clock=clock, sleep=clock.sleep, wall_clock=lambda: WALL + clock(), **kwargs
    )


def auth(sim: Simulator, provider: str) -> dict[str, str]:
    if provider == "anthropic":
        return {"x-api-key": sim.key_for(provider), "anthropic-version": "2023-06-01"}
    if provider == "azure_vision":
        return {"ocp-apim-subscription-key": sim.key_for(provider)}
    headers = {"authorization": f"Bearer {sim.key_for(provider)}"}
    if provider == "runway":
        headers["x-runway-version"] = "2024-11-06"
    return headers


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Tell me a story"}]}


# -- OpenAI --------------------------------------------------------------------------------------
async def test_openai_answers_429_with_its_envelope_and_headers_say_what_is_left() -> None:
    clock = VirtualClock()
    sim = limited({"openai": {"rpm": 2, "tpm": 200_000}}, clock)
    async with sim.client(headers=auth(sim, "openai")) as client:
        first = await client.post(f"{OPENAI}/chat/completions", json=CHAT)
        clock.now = 15.0
        second = await client.post(f"{OPENAI}/chat/completions", json=CHAT)
        clock.now = 20.0
        refused = await client.post(f"{OPENAI}/chat/completions", json=CHAT)
        clock.now = 60.0  # the first request leaves the window: exactly the Retry-After
        again = await client.post(f"{OPENAI}/chat/completions", json=CHAT)

    assert [r.status_code for r in (first, second, refused, again)] == [200, 200, 429, 200]
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert parse_duration(second.headers["x-ratelimit-reset-requests"]) == 60.0
    assert first.headers["x-ratelimit-limit-tokens"] == "200000"
    used = 200_000 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert 0 < used < 100  # the prompt's estimate
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 200_000 - 2 * used

    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert error["param"] is None
    assert error["message"].startswith(
        "Rate limit reached for gpt-4o in organization org-calliope-sim on requests per min "
        "(RPM): Limit 2, Used 2, Requested 1. Please try again in 40s."
    )
    assert refused.headers["retry-after"] == "40"
    assert refused.headers["retry-after-ms"] == "40000"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-request-id"].startswith("req_")
    assert sim.rate_limited("openai") == 1 and sim.rate_limited() == 1
    assert sim.count("openai", "chat") == 4  # refused calls are still calls


async def test_openai_token_limit_names_tokens_and_the_tokens_asked_for() -> None:
    clock = VirtualClock()
    sim = limited("openai:tpm=1000", clock)
    body = {**CHAT, "max_tokens": 700}
    async with sim.client(headers=auth(sim, "openai")) as client:
        ok = await client.post(f"{OPENAI}/chat/completions", json=body)
        refused = await client.post(f"{OPENAI}/chat/completions", json=body)
    assert ok.status_code == 200 and refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "tokens"
    assert "on tokens per min (TPM): Limit 1000, Used 7" in error["message"]
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["x-ratelimit-limit-tokens"] == "1000"


async def test_a_model_limit_applies_to_that_model_only() -> None:
    clock = VirtualClock()
    sim = limited("openai/gpt-4o:rpm=1", clock)
    async with sim.client(headers=auth(sim, "openai")) as client:
        codes = [
            (await client.post(f"{OPENAI}/chat/completions", json={**CHAT, "model": m})).status_code
            for m in ("gpt-4o", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o")
        ]
    assert codes == [200, 200, 200, 429]


async def test_requests_in_flight_over_concurrency_get_429() -> None:
    clock = VirtualClock()
    sim = limited("openai:concurrency=1", clock)
    sim.add_fault(Fault(kind="latency", provider="openai", seconds=1.0))
    async with sim.client(headers=auth(sim, "openai")) as client:
        slow, refused = await asyncio.gather(
            client.post(f"{OPENAI}/chat/completions", json=CHAT),
            client.post(f"{OPENAI}/chat/completions", json=CHAT),
        )
        after = await client.post(f"{OPENAI}/chat/completions", json=CHAT)
    assert (slow.status_code, refused.status_code, after.status_code) == (200, 429, 200)
    assert "concurrent requests" in refused.json()["error"]["message"]


# -- Anthropic -----------------------------------------------------------------------------------
async def test_anthropic_429_and_its_ratelimit_headers_with_rfc3339_resets() -> None:
    clock = VirtualClock()
    sim = limited({"anthropic": {"rpm": 1, "tpm": 40_000}}, clock)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": CHAT["messages"]}
    async with sim.client(headers=auth(sim, "anthropic")) as client:
        ok = await client.post(ANTHROPIC, json=body)
        clock.now = 30.0
        refused = await client.post(ANTHROPIC, json=body)

    assert ok.status_code == 200 and refused.status_code == 429
    assert ok.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert ok.headers["anthropic-ratelimit-requests-reset"] == "2026-01-01T00:01:00Z"
    assert parse_rfc3339(ok.headers["anthropic-ratelimit-tokens-reset"]) == WALL + 60
    assert ok.headers["anthropic-ratelimit-tokens-limit"] == "40000"
    assert int(ok.headers["anthropic-ratelimit-tokens-remaining"]) < 40_000 - 100
    assert refused.json() == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization "
            "(calliope-sim) of 1 requests per minute. For details, refer to: "
            "https://docs.anthropic.com/en/api/rate-limits. You can see the response headers "
            "for current usage. Please reduce the prompt length or the maximum tokens "
            "requested, or try again later.",
        },
        "request_id": refused.headers["request-id"],
    }
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["anthropic-ratelimit-requests-reset"] == "2026-01-01T00:01:00Z"


async def test_without_limits_the_fakes_answer_as_before() -> None:
    sim = Simulator()
    async with sim.client(headers=auth(sim, "anthropic")) as client:
        body = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": CHAT["messages"]}
        response = await client.post(ANTHROPIC, json=body)
    assert response.status_code == 200
    assert not any(k.startswith("anthropic-ratelimit") for k in response.headers)
    assert sim.counts()["limits"] == {} and sim.rate_limited() == 0


# -- Stability -----------------------------------------------------------------------------------
async def stability_post(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(
        STABILITY, files={"prompt": (None, "a fox")}, headers={"accept": "image/*"}
    )


async def test_stability_refuses_everything_for_60_s_after_its_first_429() -> None:
    clock = VirtualClock()
    sim = limited("stability:requests=2/10s", clock)
    async with sim.client(headers=auth(sim, "stability")) as client:
        codes = [(await stability_post(client)).status_code for _ in range(2)]
        refused = await stability_post(client)
        clock.now = 15.0  # the 10 s window has room again, but the block holds
        still = await stability_post(client)
        clock.now = 60.0
        free = await stability_post(client)

    assert codes == [200, 200] and free.status_code == 200
    assert refused.status_code == still.status_code == 429
    body = refused.json()
    assert body["name"] == "rate_limit_exceeded" and set(body) == {"id", "name", "errors"}
    assert body["errors"] == [
        "You have exceeded the rate limit of 2 requests within a 10 second period, and have "
        "been timed out for 60 seconds."
    ]
    assert refused.headers["retry-after"] == "60"
    assert still.headers["retry-after"] == "45"
    assert sim.rate_limited("stability") == 2


async def test_a_request_counts_when_it_arrives_not_when_it_is_answered() -> None:
    """A slow request (2 s to answer) sent first, then two fast ones 1.5 s later, under a
    limit of 2 a second: every one arrived within the limit, so none is refused. (The fake
    used to count a request after its latency, refusing the slow one.)"""
    clock = VirtualClock()
    delays = iter([2.0, 0.0, 0.0])
    sim = limited(
        "stability:rps=2;stability:block=0.001", clock, latency=lambda p, e, r: next(delays)
    )

    async def later(seconds: float) -> httpx.Response:
        await clock.sleep(seconds)
        return await stability_post(client)

    async with sim.client(headers=auth(sim, "stability")) as client:
        answers = await asyncio.gather(stability_post(client), later(1.5), later(1.5))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert sim.rate_limited("stability") == 0


async def test_the_block_is_configurable() -> None:
    clock = VirtualClock()
    sim = limited("stability:rps=1,block=5s", clock)
    async with sim.client(headers=auth(sim, "stability")) as client:
        await stability_post(client)
        refused = await stability_post(client)
        clock.now = 5.0
        free = await stability_post(client)
    assert refused.headers["retry-after"] == "5" and free.status_code == 200


# -- Replicate, Azure, Hugging Face ----------------------------------------------------------------
async def test_replicate_throttles_creates_with_its_bare_detail_and_polls_do_not_count() -> None:
    clock = VirtualClock()
    sim = limited("replicate:rpm=1", clock)
    create = f"{REPLICATE}/models/black-forest-labs/flux-schnell/predictions"
    body = {"input": {"prompt": "a fox"}}
    async with sim.client(headers=auth(sim, "replicate")) as client:
        first = await client.post(create, json=body)
        poll = await client.get(f"{REPLICATE}/predictions/{first.json()['id']}")
        clock.now = 30.0
        refused = await client.post(create, json=body)
    assert first.status_code == 201 and poll.status_code == 200
    assert refused.status_code == 429
    assert refused.json() == {"detail": "Request was throttled. Your rate limit resets in ~30s."}
    assert refused.headers["retry-after"] == "30"


async def test_azure_answers_429_with_retry_after() -> None:
    clock = VirtualClock()
    sim = limited("azure:rpm=1", clock)
    headers = {**auth(sim, "azure_vision"), "content-type": "application/octet-stream"}
    async with sim.client(headers=headers) as client:
        ok = await client.post(AZURE, params={"visualFeatures": "Tags"}, content=png_bytes)
        refused = await client.post(AZURE, params={"visualFeatures": "Tags"}, content=png_bytes)
    assert ok.status_code == 200 and refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "429" and "Please retry after 60 seconds." in error["message"]
    assert refused.headers["retry-after"] == "60"


async def test_hugging_face_429_carries_the_ratelimit_headers_of_the_limit() -> None:
    clock = VirtualClock()
    sim = limited("huggingface:requests=5/5m", clock)
    async with sim.client(headers=auth(sim, "hugging_face")) as client:
        for _ in range(5):
            assert (await client.post(HF, json={"inputs": "a boat"})).status_code == 200
        refused = await client.post(HF, json={"inputs": "a boat"})
    assert refused.status_code == 429 and "Rate limit reached" in refused.json()["error"]
    assert refused.headers["ratelimit"] == '"api";r=0;t=300'
    assert refused.headers["ratelimit-policy"] == '"fixed window";"api";q=5;w=300'


# -- Runway ---------------------------------------------------------------------------------------
def runway_body() -> dict[str, Any]:
    from base64 import b64encode

    image = "data:image/png;base64," + b64encode(png_bytes).decode()
    return {"model": "gen4_turbo", "promptImage": image, "ratio": "1280:720", "duration": 5}


async def test_runway_tasks_over_the_concurrency_wait_throttled_then_succeed() -> None:
    clock = VirtualClock()
    sim = limited("runway:concurrency=1", clock)
    async with sim.client(headers=auth(sim, "runway")) as client:
        a = (await client.post(f"{RUNWAY}/image_to_video", json=runway_body())).json()["id"]
        b = (await client.post(f"{RUNWAY}/image_to_video", json=runway_body())).json()["id"]

        async def status(task: str) -> str:
            return str((await client.get(f"{RUNWAY}/tasks/{task}")).json()["status"])

        b_waiting = [await status(b), await status(b)]
        a_runs = [await status(a) for _ in range(3)]
        b_runs = [await status(b) for _ in range(3)]
    assert b_waiting == ["THROTTLED", "THROTTLED"]
    assert a_runs == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert b_runs == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert sim.rate_limited("runway") == 0  # Runway queues, it does not refuse


async def test_runway_cancelling_a_running_task_frees_its_slot() -> None:
    clock = VirtualClock()
    sim = limited("runway:concurrency=1", clock)
    async with sim.client(headers=auth(sim, "runway")) as client:
        a = (await client.post(f"{RUNWAY}/image_to_video", json=runway_body())).json()["id"]
        b = (await client.post(f"{RUNWAY}/image_to_video", json=runway_body())).json()["id"]
        before = (await client.get(f"{RUNWAY}/tasks/{b}")).json()["status"]
        await client.delete(f"{RUNWAY}/tasks/{a}")
        after = (await client.get(f"{RUNWAY}/tasks/{b}")).json()["status"]
    assert (before, after) == ("THROTTLED", "PENDING")


async def test_runway_answers_429_past_the_daily_cap() -> None:
    clock = VirtualClock()
    sim = limited("runway:daily=1", clock)
    async with sim.client(headers=auth(sim, "runway")) as client:
        ok = await client.post(f"{RUNWAY}/image_to_video", json=runway_body())
        poll = await client.get(f"{RUNWAY}/tasks/{ok.json()['id']}")
        refused = await client.post(f"{RUNWAY}/image_to_video", json=runway_body())
    assert ok.status_code == 200 and poll.status_code == 200
    assert refused.status_code == 429
    assert refused.json()["error"].startswith("You have exceeded your daily generation limit of 1")
    assert refused.headers["retry-after"] == "86400"


# -- configuration ---------------------------------------------------------------------------------
def test_limits_parse_from_the_cli_syntax_and_a_dict() -> None:
    text = parse_simulate_limits("stability:rpm=60;openai:rpm=500,tpm=200k")
    mapping = parse_simulate_limits({"stability": {"rpm": 60}, "openai": "rpm=500,tpm=200000"})
    assert text == mapping
    assert text["openai"].tpm == 200_000 and text["stability"].rpm == 60


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("openai:rpm=lots", "rpm"),
        ("openai:speed=3", "unknown limit field 'speed'"),
        ("opnai:rpm=3", "unknown provider 'opnai'"),
        ("langchain:rpm=3", "no 'langchain' provider"),
        ("openai rpm=3", "PROVIDER[/MODEL]:FIELD=VALUE"),
    ],
)
def test_bad_limits_say_what_is_wrong(value: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match="--simulate-limits") as caught:
        parse_simulate_limits(value)
    assert named in str(caught.value)


def test_cli_rejects_bad_simulate_limits_as_usage_errors() -> None:
    runner = CliRunner()
    bad = runner.invoke(
        main, ["run", "webcam_story", "--simulate", "--simulate-limits", "openai:rpm=x"]
    )
    assert bad.exit_code == EXIT_CODES["usage"]
    assert "--simulate-limits" in bad.output and "rpm" in bad.output
    alone = runner.invoke(main, ["run", "webcam_story", "--simulate-limits", "openai:rpm=5"])
    assert alone.exit_code == EXIT_CODES["usage"]
    assert "--simulate-limits only applies with --simulate" in alone.output
    served = runner.invoke(main, ["simulate", "--limits", "stability:rpm=0"])
    assert served.exit_code == EXIT_CODES["usage"] and "--limits" in served.output


def test_run_hands_simulate_limits_to_its_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calliope_graph.simulate as simulate

    made: list[Simulator] = []

    class Recording(Simulator):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

    monkeypatch.setattr(simulate, "Simulator", Recording)
    args = ["run", "illustrate", "--input", "text=a fox", "--out", str(tmp_path), "--simulate"]
    result = CliRunner().invoke(main, [*args, "--simulate-limits", "stability:rpm=100"])
    assert result.exit_code == 0, result.output
    (sim,) = made
    assert sim.limits["stability"].rpm == 100
    assert sim.count("stability") == 1 and sim.rate_limited() == 0


# -- a flow under limits ---------------------------------------------------------------------------
async def test_a_flow_waits_out_the_429s_and_succeeds(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = limited({"openai": {"rpm": 1}, "stability": {"rpm": 1}}, clock)
    flow = Flow("limited")
    text = flow.input("text")
    story = flow.add("story", TextToText("openai-gpt-4o"), {"text": text})
    title = flow.add("title", TextToText("openai-gpt-4o-mini"), {"text": story["text"]})
    image = flow.add("image", TextToImage("stability-core"), {"prompt": title["text"]})
    again = flow.add("again", TextToImage("stability-core"), {"prompt": title["text"]})
    flow.output("title", title["text"])
    flow.output("image", image["image"])
    flow.output("again", again["image"])
    ctx = RunContext.create(
        tmp_path,
        keys=sim.keys(),
        transport=sim.transport(),
        sleep=clock.sleep,
        retry=RetrySettings(max_attempts=4, initial_wait=0.0, max_wait=0.0, jitter=0.0),
    )
    try:
        result = await flow.ainvoke({"text": "a fox"}, out_dir=tmp_path, ctx=ctx)
    finally:
        await ctx.aclose()
    assert result.outputs["title"] and Path(result.outputs["image"].path).is_file()
    assert sim.rate_limited("openai") == 1  # the second call waited the 60 s it was told
    assert sim.rate_limited("stability") >= 1
    assert 60.0 in clock.waits
    assert sum(e.retries for e in result.trace.executions) == sim.rate_limited()


# -- the loopback server ---------------------------------------------------------------------------
async def test_the_project_runs_against_the_server_through_its_base_urls(tmp_path: Path) -> None:
    """Replicate's poll URL and its output's CDN URL come back pointing at the server."""
    sim = Simulator(limits="replicate:rpm=100")
    sim.state("replicate")["cold_start"] = 1  # not done within Prefer: wait, so it is polled
    sim.state("replicate")["step_seconds"] = 1000
    async with SimulatorServer(sim) as server:
        keys = KeysModel.from_env(server.environment())
        assert keys.base_url("replicate") == f"{server.url}/replicate"

        async def instant(seconds: float) -> None:
            await asyncio.sleep(0)

        client = httpx.AsyncClient(trust_env=False, timeout=10.0)
        ctx = RunContext.create(
            tmp_path, keys=keys, client=client, sleep=instant, poll=PollSettings(0.01, 10.0)
        )
        flow = Flow("served")
        text = flow.input("text")
        image = flow.add("image", TextToImage("replicate-flux-schnell"), {"prompt": text})
        flow.output("image", image["image"])
        try:
            result = await asyncio.wait_for(
                flow.ainvoke({"text": "a fox"}, out_dir=tmp_path, ctx=ctx), 60
            )
        finally:
            await ctx.aclose()
        async with httpx.AsyncClient(trust_env=False) as plain:
            counts = (await plain.get(f"{server.url}/_sim/counts")).json()
            missing = await plain.get(f"{server.url}/nowhere/v1")
    assert Path(result.outputs["image"].path).stat().st_size > 0
    assert counts["calls"]["replicate"]["models.predictions.create"] == 1
    assert counts["calls"]["replicate"]["predictions.get"] >= 1
    assert counts["limits"] == {"replicate": "rpm=100"}
    assert missing.status_code == 404 and "/openai" in missing.json()["error"]


SERVE_ARGS = ("--port", "0", "--limits", "openai:rpm=3")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``calliope-graph simulate --port 0`` in a subprocess: its exported variables."""
    yield from _serve(tmp_path, SERVE_ARGS)


def _serve(tmp_path: Path, args: tuple[str, ...]) -> Generator[dict[str, str], None, None]:
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    errors = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "calliope_graph.cli", "simulate", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    exports: dict[str, str] = {}
    try:
        while True:
            line = lines.get(timeout=60).strip()
            if line == "# ready":
                break
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                exports[name] = value
        yield exports
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # it did not stop on SIGTERM: fail, after killing it
            proc.kill()
            code = proc.wait(timeout=15)
        errors.close()
    assert code == 0, (tmp_path / "stderr.txt").read_text()


CLIENT = """
import json, sys, httpx
base, key = sys.argv[1], sys.argv[2]
body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a story"}]}
with httpx.Client(trust_env=False, timeout=20) as client:
    r = client.post(base + "/chat/completions", json=body,
                    headers={"authorization": "Bearer " + key})
print(r.status_code)
"""


def test_server_is_shared_by_processes_and_the_official_sdk(served: dict[str, str]) -> None:
    import anthropic
    import openai

    base, key = served["OPENAI_BASE_URL"], served["OPENAI_API_KEY"]
    root = base.removesuffix("/openai/v1")
    assert base.startswith("http://127.0.0.1:") and base.endswith("/openai/v1")
    assert served["ANTHROPIC_BASE_URL"] == f"{root}/anthropic"
    assert served["HF_BASE_URL"] == f"{root}/hugging_face/hf-inference"
    assert served["STABILITY_API_KEY"] == "sim-stability-key-0000"

    sdk = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=20)
    fox = [{"role": "user", "content": "a fox"}]
    story = sdk.chat.completions.create(model="gpt-4o", messages=fox)  # type: ignore[arg-type]
    assert story.choices[0].message.content

    children = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, base, key], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    codes = [child.communicate(timeout=60)[0].strip() for child in children]
    assert codes == ["200", "200"]

    with pytest.raises(openai.RateLimitError) as caught:  # the 4th call in the minute
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(caught.value.response.headers["retry-after"]) > 0
    assert caught.value.code == "rate_limit_exceeded"

    claude = anthropic.Anthropic(
        base_url=served["ANTHROPIC_BASE_URL"], api_key=served["ANTHROPIC_API_KEY"], max_retries=0
    )
    message = claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "a fox"}]
    )
    assert message.content and message.stop_reason in ("end_turn", "max_tokens")

    with httpx.Client(trust_env=False, timeout=10) as client:
        counts = client.get(f"{root}/_sim/counts").json()
    assert counts["calls"]["openai"]["chat.completions"] == 4
    assert counts["totals"]["openai"] == 4
    assert counts["rate_limited"] == {"openai": 1}
    assert counts["calls"]["anthropic"] == {"messages": 1}
    assert json.dumps(counts)  # JSON all the way


DRAW_FLOW = """\
name: draw
inputs: {text: {type: text}}
nodes:
  image: {kind: text_to_image, model: stability-core, inputs: {prompt: inputs.text}}
outputs: {image: image.image}
"""


def test_two_batch_processes_sharing_a_limit_get_no_429(tmp_path: Path) -> None:
    """Two real ``calliope-graph batch`` processes on one key, each given ``share=2`` of the
    provider's 10 requests per 2 s, against the loopback simulator enforcing exactly that
    (and Stability's 60-s block after a 429): the provider refuses nothing."""
    flow = tmp_path / "draw.yaml"
    flow.write_text(DRAW_FLOW, encoding="utf-8")
    served = _serve(tmp_path, ("--port", "0", "--limits", "stability:requests=10/2s"))
    exports = next(served)
    try:
        env = {**os.environ, **exports, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        batches = []
        for name in ("a", "b"):
            rows = "".join(json.dumps({"id": f"{name}{n}", "text": f"a fox {n}"}) + "\n"
                           for n in range(8))  # fmt: skip
            (tmp_path / f"{name}.jsonl").write_text(rows, encoding="utf-8")
            args = ["batch", str(flow), "--inputs", str(tmp_path / f"{name}.jsonl")]
            args += ["--out", str(tmp_path / f"out-{name}"), "--json"]
            args += ["--limits", "stability:requests=10/2s,share=2"]
            command = [sys.executable, "-m", "calliope_graph.cli", *args]
            pipe = subprocess.PIPE
            batches.append(
                subprocess.Popen(command, cwd=tmp_path, env=env, stdout=pipe, stderr=pipe)
            )
        outcomes = [proc.communicate(timeout=240) for proc in batches]
        assert [proc.returncode for proc in batches] == [0, 0], [err for _, err in outcomes]
        root = exports["STABILITY_BASE_URL"].split("/stability")[0]
        with httpx.Client(trust_env=False, timeout=10) as client:
            counts = client.get(f"{root}/_sim/counts").json()
        assert counts["totals"]["stability"] == 16
        assert counts["rate_limited"] == {}
    finally:
        served.close()
