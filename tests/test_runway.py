"""The Runway engine against the Runway fake: tasks, polling, failures, downloads, faults."""

from __future__ import annotations

import base64
import json
import logging
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder, assert_secrets_absent, failures_under_faults, make_ctx

from calliope_graph.config import (
    InferenceModel,
    InferenceModelProvider,
    KeysModel,
    ModelConfig,
    catalog,
)
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines import runway as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    MediaError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.media import Image, MediaStore, Video
from calliope_graph.nodes import ImageAndTextToVideo
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_info, read_boxes

API = "https://api.dev.runwayml.com"
GEN4 = catalog.get("runway-gen4-turbo")


class RunwayRecorder(Recorder):
    """Rewrites touch only Runway's API answers; reads the task requests back."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim, host="api.dev.runwayml.com")

    def created(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.path == "/v1/image_to_video"]

    def polls(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.startswith("/v1/tasks/")]


@pytest.fixture
def rec(sim: Simulator) -> RunwayRecorder:
    return RunwayRecorder(sim)


def runway_config(model: str = "gen4_turbo", **params: Any) -> ModelConfig:
    return ModelConfig(
        slug=f"test-{model}",
        model_parameters=params,
        model=InferenceModel(
            slug=model, provider=InferenceModelProvider.RUNWAY, provider_model_name=model
        ),
    )


def photo(path: Path, size: tuple[int, int] = (320, 240), fmt: str = "PNG") -> Image:
    path.write_bytes(image_bytes("a red kite over a harbour", *size, fmt))
    return Image.open(path)


@pytest.fixture
def kite(tmp_path: Path) -> Image:
    return photo(tmp_path / "kite.png")


def task_ids(sim: Simulator) -> list[str]:
    return list(sim.state("runway").get("tasks", {}))


# -- registration and request shape -------------------------------------------------------
def test_runway_serves_image_and_text_to_video() -> None:
    assert (
        get_engine(Conversion.IMAGE_AND_TEXT_TO_VIDEO, "runway") is engine.image_and_text_to_video
    )


async def test_video_from_image_and_text(
    rctx: RunContext, rec: RunwayRecorder, sim: Simulator, kite: Image, clock: Any
) -> None:
    video = await engine.image_and_text_to_video(
        rctx, kite, "the kite climbs into the wind", GEN4, output_name="clips/kite"
    )
    create = rec.requests[0]
    assert str(create.url) == f"{API}/v1/image_to_video"
    assert create.headers["authorization"] == f"Bearer {sim.key_for('runway')}"
    assert create.headers["x-runway-version"] == "2024-11-06"
    (body,) = rec.created()
    assert body == {
        "model": "gen4_turbo",
        "promptImage": kite.data_url(),
        "ratio": "1104:832",  # 320x240 is 4:3
        "duration": 5,
        "promptText": "the kite climbs into the wind",
    }
    (task_id,) = task_ids(sim)
    polls = rec.polls()
    assert [str(p.url) for p in polls] == [f"{API}/v1/tasks/{task_id}"] * 3
    assert all(p.headers["x-runway-version"] == "2024-11-06" for p in polls)
    assert clock.waits == [0.5, 0.5, 0.5]
    # The download goes to the CDN without the key.
    download = rec.requests[-1]
    assert download.url.host == "dnznrvs05pmza.cloudfront.net"
    assert "authorization" not in download.headers
    assert isinstance(video, Video) and video.mime == "video/mp4"
    assert video.path.endswith("clips/kite.mp4")
    assert sim.calls[("runway", "image_to_video")] == 1
    assert sim.calls[("runway", "tasks.retrieve")] == 3


async def test_the_mp4_is_well_formed(ctx: RunContext, kite: Image) -> None:
    video = await engine.image_and_text_to_video(ctx, kite, "waves", GEN4, output_name="w.mp4")
    data = Path(video.path).read_bytes()
    top = read_boxes(data)
    assert [b.kind for b in top] == ["ftyp", "moov", "mdat"]
    ftyp, moov, mdat = top
    assert ftyp.payload[:4] == b"isom" and b"avc1" in ftyp.payload
    stbl = moov.find("trak/mdia/minf/stbl")
    assert stbl is not None
    assert [b.kind for b in stbl.children] == ["stsd", "stts", "stsc", "stsz", "stco"]
    assert moov.find("trak/mdia/hdlr") is not None
    assert moov.find("trak/mdia/hdlr").payload[8:12] == b"vide"  # type: ignore[union-attr]
    (avc1,) = stbl.find("stsd").children  # type: ignore[union-attr]
    assert avc1.kind == "avc1" and b"avcC" in avc1.payload
    # The sample table points inside mdat and the sample sizes add up to it.
    chunk_offset = struct.unpack(">I", stbl.find("stco").payload[8:12])[0]  # type: ignore[union-attr]
    stsz = stbl.find("stsz").payload  # type: ignore[union-attr]
    count = struct.unpack(">I", stsz[8:12])[0]
    sizes = struct.unpack(f">{count}I", stsz[12 : 12 + 4 * count])
    assert chunk_offset == mdat.offset and sum(sizes) == len(mdat.payload)
    # The first sample is one length-prefixed IDR NAL unit (type 5); 24 frames a second.
    assert count == 5 * 24
    first = mdat.payload[: sizes[0]]
    assert struct.unpack(">I", first[:4])[0] == sizes[0] - 4 and first[4] & 0x1F == 5
    info = mp4_info(data)
    assert info == {
        "brand": "isom",
        "codec": "avc1",
        "width": 636,  # the 1104:832 ratio at 480p
        "height": 480,
        "duration": 5.0,
        "samples": count,
    }
    assert Video.open(video.path).mime == "video/mp4"


async def test_same_request_gives_the_same_video(ctx: RunContext, kite: Image) -> None:
    config = runway_config(seed=42)
    a = await engine.image_and_text_to_video(ctx, kite, "waves", config, output_name="a.mp4")
    b = await engine.image_and_text_to_video(ctx, kite, "waves", config, output_name="b.mp4")
    assert Path(a.path).read_bytes() == Path(b.path).read_bytes()


@pytest.mark.parametrize(
    ("size", "model", "ratio"),
    [
        ((1920, 1080), "gen4_turbo", "1280:720"),
        ((1080, 1920), "gen4_turbo", "720:1280"),
        ((1000, 1000), "gen4_turbo", "960:960"),
        ((2400, 1000), "gen4_turbo", "1584:672"),
        ((600, 800), "gen4_turbo", "832:1104"),
        ((800, 600), "gen4_turbo", "1104:832"),
        ((900, 1600), "veo3.1", "720:1280"),
    ],
)
def test_ratio_follows_the_image_shape(size: tuple[int, int], model: str, ratio: str) -> None:
    assert engine.nearest_ratio(*size, engine.MODELS[model].ratios) == ratio


@pytest.mark.parametrize(
    ("model", "params", "needle"),
    [
        ("gen4_turbo", {"ratio": "1280:768"}, "does not make '1280:768' videos"),
        ("veo3.1", {"duration": 7}, "4, 6, 8 seconds"),
        ("gen3a_turbo", {}, "retired .* use 'gen4_turbo'"),
        ("my-new-model", {}, "set the ratio model parameter"),
    ],
)
async def test_impossible_settings_fail_before_any_call(
    ctx: RunContext, sim: Simulator, kite: Image, model: str, params: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        await engine.image_and_text_to_video(
            ctx, kite, "x", runway_config(model, **params), output_name="x.mp4"
        )
    assert sim.count() == 0


async def test_explicit_parameters_are_sent(
    rctx: RunContext, rec: RunwayRecorder, kite: Image, sim: Simulator
) -> None:
    config = runway_config(
        "gen4_turbo", ratio="720:1280", duration=10, seed=7, public_figure_threshold="low"
    )
    video = await engine.image_and_text_to_video(rctx, kite, "  ", config, output_name="v")
    (body,) = rec.created()
    assert body["model"] == "gen4_turbo" and body["ratio"] == "720:1280"
    assert body["duration"] == 10 and body["seed"] == 7
    assert body["contentModeration"] == {"publicFigureThreshold": "low"}
    assert "promptText" not in body  # blank text is left out, not sent empty
    assert mp4_info(Path(video.path).read_bytes())["duration"] == 10.0


async def test_jpeg_is_sent_as_is_and_other_formats_become_png(
    rctx: RunContext, rec: RunwayRecorder, tmp_path: Path
) -> None:
    jpeg = photo(tmp_path / "a.jpg", fmt="JPEG")
    bmp = photo(tmp_path / "b.bmp", fmt="BMP")
    await engine.image_and_text_to_video(rctx, jpeg, "x", GEN4, output_name="a.mp4")
    await engine.image_and_text_to_video(rctx, bmp, "x", GEN4, output_name="b.mp4")
    first, second = rec.created()
    assert first["promptImage"].startswith("data:image/jpeg;base64,")
    assert second["promptImage"].startswith("data:image/png;base64,")


async def test_an_image_too_big_for_a_data_uri_is_fitted_or_a_media_error(
    rctx: RunContext, rec: RunwayRecorder, kite: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(kite.data_url()) > 3000
    monkeypatch.setattr(engine, "IMAGE_LIMITS", replace(engine.IMAGE_LIMITS, max_bytes=3000))
    await engine.image_and_text_to_video(rctx, kite, "x", GEN4, output_name="x.mp4")
    sent = rec.created()[0]["promptImage"]
    assert sent.startswith("data:image/jpeg;base64,") and len(sent) <= 3000
    # An image that cannot shrink to the limit is refused before any call.
    monkeypatch.setattr(engine, "IMAGE_LIMITS", replace(engine.IMAGE_LIMITS, max_bytes=100))
    with pytest.raises(MediaError, match="runway's limit of 100 characters") as info:
        await engine.image_and_text_to_video(rctx, kite, "x", GEN4, output_name="y.mp4")
    assert info.value.path == kite.path
    assert len(rec.created()) == 1


async def test_long_prompt_text_is_cut_to_1000_utf16_units(
    rctx: RunContext, rec: RunwayRecorder, kite: Image, caplog: pytest.LogCaptureFixture
) -> None:
    text = "🌊 waves " * 200  # the emoji counts as two UTF-16 units
    await engine.image_and_text_to_video(rctx, kite, text, GEN4, output_name="x.mp4")
    sent = rec.created()[0]["promptText"]
    assert text.startswith(sent) and not sent.endswith(" ")
    assert 950 < len(sent.encode("utf-16-le")) // 2 <= 1000
    assert any("promptText" in r.getMessage() for r in caplog.records)


# -- polling --------------------------------------------------------------------------------
async def test_task_goes_through_throttled_pending_running(
    rctx: RunContext, rec: RunwayRecorder, sim: Simulator, kite: Image
) -> None:
    sim.poll_steps = 4
    sim.state("runway")["throttled"] = 2
    seen: list[dict[str, Any]] = []

    def watch(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method == "GET":
            seen.append(response.json())
        return response

    rec.rewrite = watch
    await engine.image_and_text_to_video(rctx, kite, "x", GEN4, output_name="x.mp4")
    assert [s["status"] for s in seen] == [
        *("THROTTLED", "THROTTLED", "PENDING", "RUNNING", "RUNNING", "RUNNING"),
        "SUCCEEDED",
    ]
    assert [s.get("progress") for s in seen if s["status"] == "RUNNING"] == [0.25, 0.5, 0.75]
    assert seen[0]["estimatedCost"] == {"credits": 25}
    assert seen[-1]["cost"] == {"credits": 25}
    (url,) = seen[-1]["output"]
    assert url.startswith("https://dnznrvs05pmza.cloudfront.net/") and "?_jwt=" in url


async def test_a_task_that_never_finishes_times_out_naming_it(
    ctx: RunContext, sim: Simulator, kite: Image, clock: Any
) -> None:
    sim.poll_steps = 10**6
    with pytest.raises(ProviderTimeoutError) as info:
        await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    (task_id,) = task_ids(sim)
    assert info.value.job_id == task_id and task_id in str(info.value)
    assert "RUNNING" in str(info.value) and "poll_timeout" in str(info.value)
    assert clock.now == pytest.approx(30.0)
    assert sim.calls[("runway", "tasks.retrieve")] == 60


async def test_poll_parameters_override_the_context(
    ctx: RunContext, sim: Simulator, kite: Image, clock: Any
) -> None:
    sim.poll_steps = 10**6
    with pytest.raises(ProviderTimeoutError):
        await engine.image_and_text_to_video(
            ctx, kite, "x", runway_config(poll_interval=6, poll_timeout=20), output_name="x"
        )
    assert clock.waits == [6.0, 6.0, 6.0, 2.0]


# -- task failures --------------------------------------------------------------------------
async def test_moderation_failure_is_a_content_policy_error(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    sim.add_fault(kind="content_policy", provider="runway", pattern="explosion")
    assert await engine.image_and_text_to_video(ctx, kite, "calm", GEN4, output_name="a")
    with pytest.raises(ContentPolicyError) as info:
        await engine.image_and_text_to_video(ctx, kite, "an explosion", GEN4, output_name="b")
    assert info.value.code == "SAFETY.INPUT.TEXT"
    assert task_ids(sim)[-1] in str(info.value)
    assert sim.calls[("runway", "image_to_video")] == 2  # never resubmitted


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("SAFETY.INPUT.IMAGE", ContentPolicyError),
        ("SAFETY.OUTPUT.VIDEO", ContentPolicyError),
        ("INPUT_PREPROCESSING.SAFETY.TEXT", ContentPolicyError),
        ("ASSET.INVALID", InvalidRequestError),
        ("INTERNAL.BAD_OUTPUT.CODE01", TransientProviderError),
        ("INPUT_PREPROCESSING.INTERNAL", TransientProviderError),
        ("INTERNAL", TransientProviderError),
    ],
)
async def test_failure_codes_map_to_the_taxonomy(
    ctx: RunContext, sim: Simulator, kite: Image, code: str, error: type[Exception]
) -> None:
    sim.state("runway")["fail"] = code
    with pytest.raises(error) as info:
        await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    assert type(info.value) is error
    assert info.value.code == code  # type: ignore[attr-defined]
    assert code in str(info.value)


def test_output_moderation_is_named_as_such() -> None:
    err = engine.error_for_failure("t-1", "SAFETY.OUTPUT.VIDEO", "Output rejected")
    assert "refused the output" in str(err) and "t-1" in str(err)
    assert isinstance(engine.error_for_failure("t-2", None, ""), TransientProviderError)


async def test_a_cancelled_task_is_reported(
    sim: Simulator, kite: Image, clock: Any, tmp_path: Path
) -> None:
    async def cancel_on_first_poll(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/v1/tasks/"):
            async with sim.client() as client:
                await client.delete(
                    str(request.url),
                    headers={
                        "Authorization": request.headers["authorization"],
                        "X-Runway-Version": "2024-11-06",
                    },
                )
        return await sim.handle(request)

    ctx = make_ctx(httpx.MockTransport(cancel_on_first_poll), sim.keys(), clock, tmp_path)
    try:
        with pytest.raises(ProviderError, match="was cancelled") as info:
            await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    finally:
        await ctx.aclose()
    assert type(info.value) is ProviderError and info.value.code == "cancelled"
    assert sim.calls[("runway", "tasks.delete")] == 1


async def test_a_provider_400_names_the_offending_field(ctx: RunContext, kite: Image) -> None:
    # gen4.5 requires promptText; blank text is left out, so Runway's validator answers.
    with pytest.raises(InvalidRequestError) as info:
        await engine.image_and_text_to_video(
            ctx, kite, "", runway_config("gen4.5"), output_name="x.mp4"
        )
    assert info.value.status == 400
    assert "Validation of body failed" in str(info.value)
    assert "promptText: Invalid input: expected string, received undefined" in str(info.value)


# -- downloads ------------------------------------------------------------------------------
async def test_a_video_over_the_download_cap_is_refused(ctx: RunContext, kite: Image) -> None:
    with pytest.raises(MediaError, match="over the 1000-byte download cap"):
        await engine.image_and_text_to_video(
            ctx, kite, "x", runway_config(max_download_bytes=1000), output_name="big.mp4"
        )
    assert not list(ctx.store.root.glob("big*"))
    assert not list(ctx.store.root.glob(".big*"))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://cdn.example.com/v.mp4"])
async def test_an_output_url_that_is_not_http_is_refused(
    rctx: RunContext, rec: RunwayRecorder, kite: Image, url: str
) -> None:
    def swap(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        body = response.json() if response.content else None
        if isinstance(body, dict) and body.get("status") == "SUCCEEDED":
            return httpx.Response(200, json={**body, "output": [url]})
        return response

    rec.rewrite = swap
    with pytest.raises(MediaError, match="only http\\(s\\) URLs are fetched"):
        await engine.image_and_text_to_video(rctx, kite, "x", GEN4, output_name="x.mp4")


async def test_succeeded_without_output_is_empty(
    rctx: RunContext, rec: RunwayRecorder, kite: Image
) -> None:
    def strip(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        body = response.json() if response.content else None
        if isinstance(body, dict) and body.get("status") == "SUCCEEDED":
            return httpx.Response(200, json={**body, "output": []})
        return response

    rec.rewrite = strip
    with pytest.raises(EmptyOutputError, match="without an output URL"):
        await engine.image_and_text_to_video(rctx, kite, "x", GEN4, output_name="x.mp4")


async def test_an_expired_output_url_is_a_transient_error(
    rctx: RunContext, rec: RunwayRecorder, kite: Image
) -> None:
    def expire(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        body = response.json() if response.content else None
        if isinstance(body, dict) and body.get("status") == "SUCCEEDED":
            return httpx.Response(200, json={**body, "output": ["https://cdn.gone.example/v.mp4"]})
        return response

    rec.rewrite = expire
    with pytest.raises(TransientProviderError, match="HTTP 404"):
        await engine.image_and_text_to_video(rctx, kite, "x", GEN4, output_name="x.mp4")


# -- faults ---------------------------------------------------------------------------------
async def test_rate_limit_honours_retry_after(
    ctx: RunContext, sim: Simulator, kite: Image, clock: Any
) -> None:
    sim.add_fault(kind="rate_limit", provider="runway", endpoint="image_to_video", first_n=2,
                  retry_after=7)  # fmt: skip
    assert await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    assert clock.waits[:2] == [7.0, 7.0]
    assert sim.calls[("runway", "image_to_video")] == 3


async def test_rate_limit_every_time_is_a_rate_limit_error(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    sim.add_fault(kind="rate_limit", provider="runway", retry_after=1)
    with pytest.raises(RateLimitError, match="exceeded the rate limit"):
        await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    assert sim.count("runway") == ctx.retry.max_attempts


@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [
        ("server_error", "image_to_video"),
        ("unavailable", "tasks"),
        ("overloaded", "tasks"),
    ],
)
async def test_server_errors_are_retried(
    ctx: RunContext, sim: Simulator, kite: Image, kind: str, endpoint: str
) -> None:
    sim.add_fault(kind=kind, provider="runway", endpoint=endpoint, first_n=2)
    assert await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    assert sim.count("runway", endpoint) == (3 if endpoint == "image_to_video" else 5)


async def test_hang_becomes_a_timeout(ctx: RunContext, sim: Simulator, kite: Image) -> None:
    sim.add_fault(kind="hang", provider="runway")
    with pytest.raises(ProviderTimeoutError):
        await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    assert sim.count("runway") == ctx.retry.max_attempts


@pytest.mark.parametrize("endpoint", ["image_to_video", "tasks"])
async def test_malformed_answers_are_retried(
    ctx: RunContext, sim: Simulator, kite: Image, endpoint: str
) -> None:
    sim.add_fault(kind="malformed", provider="runway", endpoint=endpoint, first_n=1)
    video = await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    assert video.mime == "video/mp4"
    assert sim.calls[("runway", "image_to_video")] == (2 if endpoint == "image_to_video" else 1)


async def test_auth_failure_is_not_retried(ctx: RunContext, sim: Simulator, kite: Image) -> None:
    sim.add_fault(kind="auth", provider="runway")
    with pytest.raises(AuthenticationError, match="API key is not valid"):
        await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    assert sim.count("runway") == 1


async def test_missing_key_is_a_configuration_error(
    sim: Simulator, tmp_path: Path, kite: Image
) -> None:
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="RUNWAYML_API_SECRET"):
            await engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x.mp4")
    assert sim.count() == 0


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, kite: Image, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "key_" + "ab12" * 32
    right = sim.key_for("runway")
    bad = make_ctx(sim.transport(), sim.keys(runway_api_key=wrong), clock, tmp_path)
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    failures: list[Exception] = []
    try:
        failures += await failures_under_faults(
            sim,
            "runway",
            bad,
            good,
            lambda ctx: engine.image_and_text_to_video(ctx, kite, "x", GEN4, output_name="x"),
        )
        sim.poll_steps = 10**6
        with pytest.raises(ProviderTimeoutError) as stuck:
            await engine.image_and_text_to_video(good, kite, "x", GEN4, output_name="x")
        failures.append(stuck.value)
    finally:
        await bad.aclose()
        await good.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert isinstance(failures[-2], ContentPolicyError)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)


# -- the fake's own checks ------------------------------------------------------------------
def auth(sim: Simulator, version: str | None = "2024-11-06") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {sim.key_for('runway')}"}
    if version:
        headers["X-Runway-Version"] = version
    return headers


async def test_fake_requires_the_version_header_and_a_valid_key(sim: Simulator) -> None:
    body = {"model": "gen4_turbo", "promptImage": "https://x.example/a.png", "ratio": "960:960"}
    async with sim.client() as client:
        no_version = await client.post(
            f"{API}/v1/image_to_video", json=body, headers=auth(sim, None)
        )
        old = await client.post(
            f"{API}/v1/image_to_video", json=body, headers=auth(sim, "2023-01-01")
        )
        wrong = await client.post(
            f"{API}/v1/image_to_video",
            json=body,
            headers={"Authorization": "Bearer key_nope", "X-Runway-Version": "2024-11-06"},
        )
        unknown = await client.get(f"{API}/v1/tasks/0000", headers=auth(sim))
    assert no_version.status_code == 400
    assert "X-Runway-Version header is required" in no_version.json()["error"]
    assert old.status_code == 400 and "Unsupported X-Runway-Version" in old.json()["error"]
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "The provided API key is not valid."}
    assert unknown.status_code == 404 and unknown.json() == {"error": "Task not found."}


@pytest.mark.parametrize(
    ("change", "path", "needle"),
    [
        ({"ratio": "1280:768"}, ["ratio"], "expected one of '1280:720'|'720:1280'"),
        ({"duration": 11}, ["duration"], "Invalid option"),
        ({"promptText": "x" * 1001}, ["promptText"], "<=1000 characters"),
        ({"promptText": ""}, ["promptText"], ">=1 characters"),
        ({"promptImage": "http://cdn.example.com/a.png"}, ["promptImage"], "Only HTTPS"),
        ({"promptImage": "https://10.0.0.1/a.png"}, ["promptImage"], "not an IP address"),
        ({"promptImage": "https://cdn.example.com/a.png"}, ["promptImage"], "Failed to fetch"),
        ({"promptImage": "data:image/gif;base64,R0lG"}, ["promptImage"], "Unsupported asset"),
        ({"promptImage": "data:image/png;base64," + "A" * (5 * 1024 * 1024)}, ["promptImage"],
         "must be under 5242880 bytes"),
        ({"promptImage": None}, ["promptImage"], "expected string, received undefined"),
        ({"seed": -1}, ["seed"], "integer from 0 to 4294967295"),
    ],
)  # fmt: skip
async def test_fake_validates_like_runway(
    sim: Simulator, change: dict[str, Any], path: list[str], needle: str
) -> None:
    body = {
        "model": "gen4_turbo",
        "promptImage": "data:image/png;base64,"
        + base64.b64encode(image_bytes("x", 64, 64)).decode(),
        "ratio": "960:960",
        **change,
    }
    body = {k: v for k, v in body.items() if v is not None}
    async with sim.client() as client:
        response = await client.post(f"{API}/v1/image_to_video", json=body, headers=auth(sim))
    assert response.status_code == 400
    error = response.json()
    assert error["error"] == "Validation of body failed"
    assert error["docUrl"] == "https://docs.dev.runwayml.com/api"
    (issue,) = error["issues"]
    assert issue["path"] == path and needle in issue["message"]


async def test_fake_rejects_unknown_models_and_undecodable_images(sim: Simulator) -> None:
    sim.poll_steps = 0
    async with sim.client() as client:
        unknown = await client.post(
            f"{API}/v1/image_to_video",
            json={"model": "gen9", "promptImage": "x", "ratio": "1:1"},
            headers=auth(sim),
        )
        created = await client.post(
            f"{API}/v1/image_to_video",
            json={
                "model": "gen4_turbo",
                "promptImage": "data:image/png;base64,aGVsbG8=",
                "ratio": "960:960",
            },
            headers=auth(sim),
        )
        task = await client.get(f"{API}/v1/tasks/{created.json()['id']}", headers=auth(sim))
    assert unknown.status_code == 400
    assert unknown.json()["issues"][0]["note"] == "No matching discriminator"
    assert created.status_code == 200
    assert task.json()["status"] == "FAILED" and task.json()["failureCode"] == "ASSET.INVALID"


async def test_the_video_node_runs_on_runway_by_default(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    out = await ImageAndTextToVideo().run(ctx, image=kite, text="the kite dives")
    video = out["video"]
    assert isinstance(video, Video) and video.path.endswith(".mp4")
    assert mp4_info(Path(video.path).read_bytes())["codec"] == "avc1"
    assert sim.calls[("runway", "image_to_video")] == 1
