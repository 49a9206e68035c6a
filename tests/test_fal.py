"""The fal engine against the fal fake: the queue, polling, cancelling, content policy,
faults, secrets, and one-node flows (in Python and from the command line)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder, assert_secrets_absent, failures_under_faults, make_ctx, never

from calliope_graph.config import (
    InferenceModel,
    InferenceModelProvider,
    KeysModel,
    ModelConfig,
    catalog,
)
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines import fal as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.flow import Flow
from calliope_graph.media import Image, MediaStore, Video
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_info

QUEUE = "https://queue.fal.run"
SCHNELL = catalog.get("fal-flux-schnell")
KLING = catalog.get("fal-kling-video")
SEEDANCE = catalog.get("fal-seedance-video")


def fal_config(app: str, **params: Any) -> ModelConfig:
    return ModelConfig(
        slug="test-fal",
        model_parameters=params,
        model=InferenceModel(
            slug="t", provider=InferenceModelProvider.FAL, provider_model_name=app
        ),
    )


class FalRecorder(Recorder):
    """Records fal's requests and the fake's answers."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim, host="queue.fal.run")
        self.responses: list[httpx.Response] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        response = await super().__call__(request)
        await response.aread()
        self.responses.append(response)
        return response

    def paths(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.requests if r.url.host == "queue.fal.run"]


@pytest.fixture
def rec(sim: Simulator) -> FalRecorder:
    return FalRecorder(sim)


@pytest.fixture
def kite(tmp_path: Path) -> Image:
    path = tmp_path / "kite.png"
    path.write_bytes(image_bytes("a red kite over a harbour", 320, 240))
    return Image.open(path)


def test_fal_serves_images_and_video() -> None:
    assert get_engine(Conversion.TEXT_TO_IMAGE, "fal") is engine.text_to_image
    assert get_engine(Conversion.IMAGE_AND_TEXT_TO_VIDEO, "fal") is engine.image_and_text_to_video


# -- text to image ---------------------------------------------------------------------------
async def test_flux_image_goes_through_the_queue_and_is_downloaded(
    rctx: RunContext, rec: FalRecorder, sim: Simulator
) -> None:
    image = await engine.text_to_image(
        rctx, "a lighthouse at dusk", SCHNELL, output_name="light.png", width=512, height=384
    )
    assert (image.width, image.height) == (512, 384)
    assert image.mime == "image/jpeg" and image.path.endswith(".jpg")  # the real format
    submit = json.loads(rec.requests[0].content)
    assert rec.requests[0].headers["authorization"] == f"Key {sim.key_for('fal')}"
    assert submit["prompt"] == "a lighthouse at dusk"
    assert submit["image_size"] == {"width": 512, "height": 384} and submit["num_images"] == 1
    methods = rec.paths()
    assert methods[0] == ("POST", "/fal-ai/flux/schnell")
    # Status and result live under owner/alias, without the sub-path (fal's queue docs).
    request_id = json.loads(rec.responses[0].content)["request_id"]
    assert ("GET", f"/fal-ai/flux/requests/{request_id}/status") in methods
    assert methods[-1] == ("GET", f"/fal-ai/flux/requests/{request_id}")


async def test_queue_states_are_waited_through_on_the_virtual_clock(
    rctx: RunContext, rec: FalRecorder, sim: Simulator, clock: Any
) -> None:
    sim.poll_steps = 4
    await engine.text_to_image(rctx, "a fox", SCHNELL, output_name="fox.png")
    states = [
        json.loads(r.content)["status"] for r in rec.responses if r.url.path.endswith("/status")
    ]
    assert states == ["IN_QUEUE", "IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert clock.now == pytest.approx(4 * 0.5)  # one interval before each poll, never real time


async def test_parameters_pass_through_as_model_input(rctx: RunContext, rec: FalRecorder) -> None:
    config = fal_config(
        "fal-ai/flux/dev",
        num_inference_steps=20,
        guidance_scale=4.5,
        seed=7,
        output_format="png",
        poll_timeout=60,
        extra_body={"enable_safety_checker": False},
    )
    image = await engine.text_to_image(rctx, "x", config, output_name="dev.png")
    sent = json.loads(rec.requests[0].content)
    assert sent["num_inference_steps"] == 20 and sent["guidance_scale"] == 4.5
    assert sent["seed"] == 7 and sent["enable_safety_checker"] is False
    assert "poll_timeout" not in sent
    assert image.mime == "image/png"


async def test_flagged_image_is_a_content_policy_error_and_not_kept(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="content_policy", provider="fal", pattern="blood")
    with pytest.raises(ContentPolicyError, match="safety checker") as info:
        await engine.text_to_image(ctx, "blood on the moon", SCHNELL, output_name="x.png")
    assert info.value.code == "content_policy_violation"
    assert not list(Path(ctx.store.root).glob("x.*"))


async def test_an_image_request_without_images_is_empty(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="empty", provider="fal")
    with pytest.raises(EmptyOutputError, match="images"):
        await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")


# -- image and text to video -----------------------------------------------------------------
async def test_kling_video_from_image_and_text(
    rctx: RunContext, rec: FalRecorder, kite: Image
) -> None:
    video = await engine.image_and_text_to_video(
        rctx, kite, "the kite dives", KLING, output_name="clip"
    )
    assert isinstance(video, Video) and video.path.endswith("clip.mp4")
    info = mp4_info(Path(video.path).read_bytes())
    assert info["codec"] == "avc1" and info["width"] == 640 and info["height"] == 480  # 480p
    sent = json.loads(rec.requests[0].content)
    assert sent["image_url"].startswith("data:image/png;base64,")
    assert sent["prompt"] == "the kite dives" and sent["duration"] == "5"
    assert rec.paths()[0] == ("POST", "/fal-ai/kling-video/v2.5-turbo/standard/image-to-video")
    assert rec.paths()[1][1].startswith("/fal-ai/kling-video/requests/")


async def test_seedance_video_takes_its_resolution(
    rctx: RunContext, rec: FalRecorder, kite: Image
) -> None:
    await engine.image_and_text_to_video(rctx, kite, "waves", SEEDANCE, output_name="s.mp4")
    sent = json.loads(rec.requests[0].content)
    assert sent["resolution"] == "720p" and sent["duration"] == "5"


async def test_a_refused_video_prompt_is_a_content_policy_error(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    sim.add_fault(kind="content_policy", provider="fal")
    with pytest.raises(ContentPolicyError, match="flagged by a content checker"):
        await engine.image_and_text_to_video(ctx, kite, "a fight", KLING, output_name="x.mp4")


async def test_a_bad_input_is_an_invalid_request_naming_the_field(
    ctx: RunContext, kite: Image
) -> None:
    config = fal_config(KLING.model.provider_model_name, duration=7)
    with pytest.raises(InvalidRequestError, match="duration") as info:
        await engine.image_and_text_to_video(ctx, kite, "x", config, output_name="x.mp4")
    assert info.value.status == 422 and info.value.code == "enum"


async def test_an_unknown_app_is_refused_as_fal_refuses_it(ctx: RunContext) -> None:
    with pytest.raises(InvalidRequestError, match="not found") as info:
        await engine.text_to_image(ctx, "x", fal_config("fal-ai/nope/v9"), output_name="x.png")
    assert info.value.status == 404


def test_an_app_id_that_is_not_one_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="fal-ai/flux/schnell"):
        engine.app_id("flux")
    assert engine.app_id("fal-ai/flux/dev").queue == "fal-ai/flux"
    assert engine.app_id("workflows/me/flow/run").queue == "workflows/me/flow"


async def test_a_failed_request_maps_its_error_type(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    sim.state("fal")["fail"] = "runner_server_error"
    with pytest.raises(TransientProviderError) as info:
        await engine.image_and_text_to_video(ctx, kite, "x", KLING, output_name="x.mp4")
    assert info.value.code == "runner_server_error" and info.value.status == 500
    assert sim.calls[("fal", "result")] == 1  # a failed request's result is asked once


# -- bounds and cancelling -------------------------------------------------------------------
async def test_a_request_past_the_bound_is_cancelled_and_named(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.poll_steps = 10**6
    with pytest.raises(ProviderTimeoutError, match="was cancelled") as info:
        await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")
    assert info.value.job_id and info.value.job_id in str(info.value)
    assert clock.now == pytest.approx(30.0)  # ctx.poll.timeout, on the virtual clock
    assert sim.calls[("fal", "cancel")] == 1
    status = await ctx.client.get(
        f"{QUEUE}/fal-ai/flux/requests/{info.value.job_id}/status",
        headers={"Authorization": f"Key {sim.key_for('fal')}"},
    )
    assert status.json()["error_type"] == "client_cancelled"


async def test_cancel_on_timeout_can_be_turned_off(ctx: RunContext, sim: Simulator) -> None:
    sim.poll_steps = 10**6
    config = fal_config("fal-ai/flux/schnell", cancel_on_timeout=False, poll_timeout=2)
    with pytest.raises(ProviderTimeoutError, match="may still finish"):
        await engine.text_to_image(ctx, "x", config, output_name="x.png")
    assert sim.calls[("fal", "cancel")] == 0


async def test_a_run_cancelled_while_waiting_cancels_the_fal_request(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.poll_steps = 10**6
    ctx = make_ctx(sim.transport(), sim.keys(), never, tmp_path)  # polls wait forever
    try:
        task = asyncio.create_task(engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png"))
        while sim.calls[("fal", "submit")] == 0:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await ctx.aclose()
    assert sim.calls[("fal", "cancel")] == 1


async def test_a_request_cancelled_elsewhere_is_reported(
    sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    sim.poll_steps = 3

    async def cancel_after_submit(request: httpx.Request) -> httpx.Response:
        response = await sim.handle(request)
        if request.method == "POST":  # someone cancels it on the dashboard meanwhile
            cancel = httpx.Request("PUT", response.json()["cancel_url"], headers=request.headers)
            await sim.handle(cancel)
        return response

    ctx = make_ctx(httpx.MockTransport(cancel_after_submit), sim.keys(), clock, tmp_path)
    try:
        with pytest.raises(ProviderError, match="was cancelled") as info:
            await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")
    finally:
        await ctx.aclose()
    assert info.value.code == "cancelled"


async def test_requests_past_the_account_concurrency_wait_in_the_queue(
    clock: Any, tmp_path: Path
) -> None:
    sim = Simulator(sleep=clock, limits={"fal": {"concurrency": 1}}, poll_steps=4)
    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    try:
        images = await asyncio.gather(
            *(
                engine.text_to_image(ctx, f"p{i}", SCHNELL, output_name=f"i{i}.png")
                for i in range(3)
            )
        )
    finally:
        await ctx.aclose()
    assert len(images) == 3
    assert sim.rate_limited("fal") == 0  # fal queues, it never refuses for concurrency
    assert sim.count("fal", "status") > 3 * 4  # the later ones waited IN_QUEUE for a slot


# -- faults, keys, secrets -------------------------------------------------------------------
async def test_rate_limit_is_retried_then_succeeds(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="rate_limit", provider="fal", first_n=1, retry_after=0.2)
    await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")
    assert sim.calls[("fal", "submit")] == 2


async def test_rate_limit_every_time_is_a_rate_limit_error(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="rate_limit", provider="fal", endpoint="submit")
    with pytest.raises(RateLimitError):
        await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "overloaded", "malformed"])
async def test_transient_faults_are_retried(ctx: RunContext, sim: Simulator, kind: str) -> None:
    sim.add_fault(kind=kind, provider="fal", first_n=2)
    await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")


async def test_overload_names_the_request_error_type(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="overloaded", provider="fal")
    with pytest.raises(TransientProviderError, match="runner_scheduling_failure"):
        await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")


async def test_hang_becomes_a_timeout(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="hang", provider="fal")
    with pytest.raises(ProviderTimeoutError):
        await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")


async def test_a_wrong_key_is_an_authentication_error_not_retried(
    sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    ctx = make_ctx(sim.transport(), sim.keys(fal_api_key="wrong"), clock, tmp_path)
    try:
        with pytest.raises(AuthenticationError, match="Unauthorized"):
            await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")
    finally:
        await ctx.aclose()
    assert sim.count("fal") == 1


async def test_missing_key_names_fal_key(sim: Simulator, tmp_path: Path) -> None:
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="FAL_KEY"):
            await engine.text_to_image(ctx, "x", SCHNELL, output_name="x.png")
    assert sim.count() == 0


def test_keys_and_base_url_come_from_the_environment() -> None:
    keys = KeysModel.from_env({"FAL_KEY": "k", "FAL_BASE_URL": "https://fal.example/"})
    assert keys.require("fal") == "k" and keys.base_url("fal") == "https://fal.example"
    assert KeysModel().base_url("fal") == QUEUE


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, kite: Image, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "fal-" + "cd34" * 16
    right = sim.key_for("fal")
    bad = make_ctx(sim.transport(), sim.keys(fal_api_key=wrong), clock, tmp_path)
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    failures: list[Exception] = []
    try:
        for call in (
            lambda c: engine.text_to_image(c, "x", SCHNELL, output_name="x.png"),
            lambda c: engine.image_and_text_to_video(c, kite, "x", KLING, output_name="x"),
        ):
            failures += await failures_under_faults(sim, "fal", bad, good, call)
            assert isinstance(failures[-1], ContentPolicyError)
        sim.poll_steps = 10**6
        with pytest.raises(ProviderTimeoutError) as stuck:
            await engine.text_to_image(good, "x", SCHNELL, output_name="x.png")
        failures.append(stuck.value)
    finally:
        await bad.aclose()
        await good.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)


# -- the fake's own answers ------------------------------------------------------------------
async def test_fake_cancel_answers_as_fal_documents(sim: Simulator) -> None:
    headers = {"Authorization": f"Key {sim.key_for('fal')}"}
    sim.poll_steps = 1
    async with sim.client() as http:
        missing = await http.post(f"{QUEUE}/fal-ai/flux/schnell", json={"prompt": "x"})
        assert missing.status_code == 401 and missing.json() == {"detail": "Unauthorized"}
        bad = await http.post(f"{QUEUE}/fal-ai/flux/schnell", json={}, headers=headers)
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "prompt"]
        sub = (
            await http.post(f"{QUEUE}/fal-ai/flux/schnell", json={"prompt": "x"}, headers=headers)
        ).json()
        assert sub["status"] == "IN_QUEUE" and sub["queue_position"] == 0
        done = await http.get(sub["status_url"], headers=headers)
        assert done.json()["status"] == "COMPLETED" and done.json()["logs"] is None
        again = await http.put(sub["cancel_url"], headers=headers)
        assert again.status_code == 400 and again.json() == {"status": "ALREADY_COMPLETED"}
        gone = await http.put(f"{QUEUE}/fal-ai/flux/requests/nope/cancel", headers=headers)
        assert gone.status_code == 404 and gone.json() == {"status": "NOT_FOUND"}
        run = await http.post(
            "https://fal.run/fal-ai/flux/schnell", json={"prompt": "y"}, headers=headers
        )
        assert run.status_code == 200 and run.json()["images"][0]["url"].startswith(
            "https://v3.fal.media/"
        )


# -- flows -----------------------------------------------------------------------------------
async def test_one_node_flows_run_on_fal(
    ctx: RunContext, sim: Simulator, kite: Image, tmp_path: Path
) -> None:
    flow = Flow("fal_image")
    text = flow.input("text", "text")
    draw = flow.add("draw", "text_to_image", {"prompt": text}, model="fal-flux-schnell")
    flow.output("image", draw["image"])
    result = await flow.ainvoke({"text": "a quiet harbour"}, out_dir=tmp_path / "a", ctx=ctx)
    assert isinstance(result.outputs["image"], Image)

    video_flow = Flow("fal_video")
    image = video_flow.input("image", "image")
    line = video_flow.input("text", "text")
    clip = video_flow.add(
        "clip", "image_and_text_to_video", {"image": image, "text": line}, model="fal-kling-video"
    )
    video_flow.output("video", clip["video"])
    out = await video_flow.ainvoke(
        {"image": kite, "text": "it flies"}, out_dir=tmp_path / "b", ctx=ctx
    )
    assert isinstance(out.outputs["video"], Video)
    assert sim.count("fal", "submit") == 2


# -- the seed's functional API ---------------------------------------------------------------
async def test_the_functional_api_draws_and_animates_on_fal(
    sim: Simulator, clock: Any, tmp_path: Path, kite: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calliope_graph import inference

    real = inference._context

    def on_clock(*args: Any, **kwargs: Any) -> RunContext:
        ctx = real(*args, **kwargs)
        ctx.sleep = clock  # the functional API's own context waits on the virtual clock
        return ctx

    monkeypatch.setattr(inference, "_context", on_clock)
    async with sim.client() as client:
        picture = await inference.text_to_image_file_inference(
            client, "a harbour", str(tmp_path / "pic.png"), SCHNELL, sim.keys(), 512, 512
        )
        clip = await inference.image_and_text_to_video_file_inference(
            client, kite.path, "it flies", str(tmp_path / "clip.mp4"), KLING, sim.keys()
        )
    assert picture is not None and Path(picture).is_file() and picture.endswith(".jpg")
    assert clip == str(tmp_path / "clip.mp4")
    assert mp4_info(Path(clip).read_bytes())["codec"] == "avc1"


# -- the model list --------------------------------------------------------------------------
async def test_list_models_reads_every_page_of_fals_model_search(
    ctx: RunContext, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calliope_graph.simulate.fal import APPS

    monkeypatch.setattr(engine, "PAGE_SIZE", 3)
    ids = await engine.list_models(ctx)
    assert sorted(ids) == sorted(APPS) and "fal-ai/flux/schnell" in ids
    assert sim.calls[("fal", "models")] == -(-len(APPS) // 3)  # every page, 3 apps a page


async def test_the_fal_key_is_never_sent_over_plain_http_even_if_fal_names_such_urls(
    clock: Any, tmp_path: Path
) -> None:
    """The submit answer's status/result URLs are used only on the configured origin: an
    ``http://`` URL on fal's host (a downgrade) is replaced by the https one fal-client builds."""
    secret = "fal-real-key"
    sent: list[tuple[str, str | None]] = []
    request_id = "req-1"
    app = f"{QUEUE}/fal-ai/flux/requests/{request_id}"
    insecure = app.replace("https://", "http://")

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((str(request.url), request.headers.get("authorization")))
        url = str(request.url)
        if request.method == "POST":
            return httpx.Response(
                200,
                json={
                    "request_id": request_id,
                    "status_url": f"{insecure}/status",
                    "response_url": insecure,
                    "cancel_url": f"{insecure}/cancel",
                },
            )
        if url.endswith("/status"):
            return httpx.Response(200, json={"status": "COMPLETED"})
        if url == app:
            picture = "https://v3.fal.media/files/a.png"
            return httpx.Response(200, json={"images": [{"url": picture}]})
        if url.startswith("https://v3.fal.media/"):
            return httpx.Response(200, content=image_bytes("a fox", 64, 64))
        return httpx.Response(404)

    ctx = make_ctx(
        httpx.MockTransport(handler), KeysModel(fal_api_key=secret), clock, tmp_path / "o"
    )
    try:
        image = await engine.text_to_image(ctx, "a fox", SCHNELL, output_name="fox.png")
    finally:
        await ctx.aclose()
    assert Path(image.path).exists()
    assert not [url for url, auth in sent if auth and not url.startswith("https://")], sent


async def test_a_failed_requests_error_text_never_shows_the_key(clock: Any, tmp_path: Path) -> None:
    """fal's status carries the model's free-text error; a key echoed there is masked."""
    secret = "fal-real-key-123456"
    base = f"{QUEUE}/fal-ai/flux/requests/req-9"

    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if request.method == "POST":
            return httpx.Response(200, json={"request_id": "req-9"})
        if url.endswith("/status"):
            error = f"runner crashed while calling upstream with {secret}"
            return httpx.Response(
                200, json={"status": "COMPLETED", "error": error, "error_type": "runner_error"}
            )
        if url == base:
            return httpx.Response(200, json={})
        return httpx.Response(404)

    ctx = make_ctx(
        httpx.MockTransport(handler), KeysModel(fal_api_key=secret), clock, tmp_path / "o"
    )
    try:
        with pytest.raises(TransientProviderError) as info:
            await engine.text_to_image(ctx, "a fox", SCHNELL, output_name="fox.png")
    finally:
        await ctx.aclose()
    assert "runner crashed" in str(info.value) and secret not in str(info.value)


async def test_a_model_list_failure_reads_the_platform_apis_error(
    ctx: RunContext, sim: Simulator
) -> None:
    """The Platform APIs answer ``{"error": {"type", "message"}}`` (not the queue's
    ``detail``): the error names fal's message and type."""
    sim.add_fault(kind="server_error", provider="fal", first_n=10)
    with pytest.raises(TransientProviderError, match=r"\(server_error\): Internal server error"):
        await engine.list_models(ctx)
