"""The Luma engine against the Luma fake: Photon images, Ray videos from a public image URL,
polling, moderation, faults, secrets, and one-node flows (in Python and from the CLI)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder, assert_secrets_absent, failures_under_faults, make_ctx
from click.testing import CliRunner

from calliope_graph.cli import main
from calliope_graph.config import (
    InferenceModel,
    InferenceModelProvider,
    KeysModel,
    ModelConfig,
    catalog,
)
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines import luma as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.flow import Flow
from calliope_graph.media import Image, MediaStore, Video
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_info

API = "https://api.lumalabs.ai/dream-machine/v1"
MEDIA = "https://media.example.com/story"
PHOTON = catalog.get("luma-photon")
RAY = catalog.get("luma-ray-2").with_parameters(image_base_url=MEDIA)


def luma_config(model: str, **params: Any) -> ModelConfig:
    return ModelConfig(
        slug="test-luma",
        model_parameters=params,
        model=InferenceModel(
            slug="t", provider=InferenceModelProvider.LUMA, provider_model_name=model
        ),
    )


@pytest.fixture
def kite(ctx: RunContext) -> Image:
    """A picture inside the output directory, served by the 'public' host MEDIA."""
    data = image_bytes("a red kite over a harbour", 320, 180)
    path = ctx.store.write_bytes("frames/kite.png", data)
    return Image.open(path)


@pytest.fixture
def served(sim: Simulator, kite: Image) -> str:
    url = f"{MEDIA}/frames/kite.png"
    content = Path(kite.path).read_bytes()
    sim.serve_download(
        url, httpx.Response(200, content=content, headers={"content-type": "image/png"})
    )
    return url


def test_luma_serves_images_and_video() -> None:
    assert get_engine(Conversion.TEXT_TO_IMAGE, "luma") is engine.text_to_image
    assert get_engine(Conversion.IMAGE_AND_TEXT_TO_VIDEO, "luma") is engine.image_and_text_to_video


async def test_photon_image_is_polled_and_downloaded(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    image = await engine.text_to_image(
        rctx, "a lighthouse at dusk", PHOTON, output_name="light.png", width=1024, height=576
    )
    assert image.mime == "image/jpeg" and (image.width, image.height) == (1024, 576)
    create = rec.requests[0]
    assert (create.method, create.url.path) == ("POST", "/dream-machine/v1/generations/image")
    assert create.headers["authorization"] == f"Bearer {sim.key_for('luma')}"
    assert json.loads(create.content) == {
        "model": "photon-1",
        "prompt": "a lighthouse at dusk",
        "aspect_ratio": "16:9",
    }
    api = [r for r in rec.requests[1:] if r.url.host == "api.lumalabs.ai"]
    assert api and all(r.method == "GET" for r in api)
    assert rec.requests[-1].url.host == "storage.cdn-luma.com"  # then the image is fetched


async def test_generation_states_are_waited_through_on_the_virtual_clock(
    rctx: RunContext, rec: Recorder, sim: Simulator, clock: Any
) -> None:
    sim.poll_steps = 4
    answers: list[str] = []

    def keep(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method == "GET" and "/generations/" in request.url.path:
            answers.append(response.json()["state"])
        return response

    rec.rewrite = keep
    rec.host = "api.lumalabs.ai"
    await engine.text_to_image(rctx, "a fox", luma_config("photon-flash-1"), output_name="f")
    assert answers == ["queued", "queued", "dreaming", "completed"]
    assert clock.now == pytest.approx(4 * 0.5)


async def test_ray_video_starts_on_the_image_at_its_public_url(
    rctx: RunContext, rec: Recorder, served: str, kite: Image
) -> None:
    video = await engine.image_and_text_to_video(rctx, kite, "the kite dives", RAY, output_name="c")
    assert isinstance(video, Video) and video.path.endswith("c.mp4")
    assert mp4_info(Path(video.path).read_bytes())["codec"] == "avc1"
    body = json.loads(rec.requests[0].content)
    assert rec.requests[0].url.path == "/dream-machine/v1/generations/video"
    assert body["keyframes"] == {"frame0": {"type": "image", "url": served}}
    assert body["model"] == "ray-2" and body["aspect_ratio"] == "16:9"
    assert body["duration"] == "5s" and body["resolution"] == "720p"


async def test_a_video_without_a_public_image_url_fails_before_any_call(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    with pytest.raises(ConfigurationError, match="image_base_url"):
        await engine.image_and_text_to_video(
            ctx, kite, "x", catalog.get("luma-ray-2"), output_name="x"
        )
    with pytest.raises(ConfigurationError, match="https"):
        config = RAY.with_parameters(image_base_url="http://media.example.com/")
        await engine.image_and_text_to_video(ctx, kite, "x", config, output_name="x")
    assert sim.count() == 0


async def test_an_image_luma_cannot_fetch_is_an_invalid_request(
    ctx: RunContext, kite: Image
) -> None:
    config = RAY.with_parameters(image_base_url="https://127.0.0.1/")
    with pytest.raises(InvalidRequestError, match="Failed to read user input frames"):
        await engine.image_and_text_to_video(ctx, kite, "a kite", config, output_name="x")


async def test_integer_durations_become_lumas_strings(
    rctx: RunContext, rec: Recorder, kite: Image
) -> None:
    config = RAY.with_parameters(duration=9, loop=True)
    await engine.image_and_text_to_video(rctx, kite, "x y z", config, output_name="x")
    body = json.loads(rec.requests[0].content)
    assert body["duration"] == "9s" and body["loop"] is True


async def test_moderation_is_a_content_policy_error(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    sim.add_fault(kind="content_policy", provider="luma")
    with pytest.raises(ContentPolicyError, match="moderation failed"):
        await engine.image_and_text_to_video(ctx, kite, "a fight", RAY, output_name="x")
    with pytest.raises(ContentPolicyError):
        await engine.text_to_image(ctx, "a fight", PHOTON, output_name="x")


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        ("Contains blacklisted words", ContentPolicyError),
        ("Frame moderation failed", ContentPolicyError),
        ("Failed to read user input frames", InvalidRequestError),
        ("Prompt processing failed", TransientProviderError),
    ],
)
async def test_failure_reasons_map_to_the_taxonomy(
    ctx: RunContext, sim: Simulator, reason: str, error: type[Exception]
) -> None:
    sim.state("luma")["fail"] = reason
    with pytest.raises(error, match=reason):
        await engine.text_to_image(ctx, "a quiet sea", PHOTON, output_name="x")


async def test_a_too_short_prompt_is_refused_as_luma_refuses_it(ctx: RunContext) -> None:
    with pytest.raises(InvalidRequestError, match="Prompt is too short") as info:
        await engine.text_to_image(ctx, "ab", PHOTON, output_name="x")
    assert info.value.status == 400


async def test_an_unknown_model_is_refused(ctx: RunContext) -> None:
    with pytest.raises(InvalidRequestError, match="photon-1"):
        await engine.text_to_image(ctx, "a sea", luma_config("photon-9"), output_name="x")


async def test_completed_without_assets_is_empty(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="empty", provider="luma")
    with pytest.raises(EmptyOutputError, match="image URL"):
        await engine.text_to_image(ctx, "a sea", PHOTON, output_name="x")


async def test_a_generation_past_the_bound_times_out_naming_it(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.poll_steps = 10**6
    with pytest.raises(ProviderTimeoutError, match="may still finish") as info:
        await engine.text_to_image(
            ctx, "a sea", PHOTON.with_parameters(poll_timeout=5), output_name="x"
        )
    assert info.value.job_id and info.value.code in ("queued", "dreaming")
    assert clock.now == pytest.approx(5.0)


async def test_concurrent_generations_past_the_limit_are_refused_with_429(
    clock: Any, tmp_path: Path
) -> None:
    sim = Simulator(sleep=clock, limits={"luma": {"concurrency": 1}})
    async with sim.client() as http:
        headers = {"Authorization": f"Bearer {sim.key_for('luma')}"}
        body = {"model": "photon-1", "prompt": "a sea"}
        first = await http.post(f"{API}/generations/image", json=body, headers=headers)
        second = await http.post(f"{API}/generations/image", json=body, headers=headers)
    assert first.status_code == 201 and second.status_code == 429
    assert "concurrent" in second.json()["detail"]


async def test_rate_limit_is_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="rate_limit", provider="luma", first_n=1, retry_after=0.2)
    await engine.text_to_image(ctx, "a sea", PHOTON, output_name="x")
    assert sim.calls[("luma", "generations.image")] == 2


async def test_rate_limit_every_time_is_a_rate_limit_error(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="rate_limit", provider="luma")
    with pytest.raises(RateLimitError):
        await engine.text_to_image(ctx, "a sea", PHOTON, output_name="x")


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "overloaded", "malformed"])
async def test_transient_faults_are_retried(ctx: RunContext, sim: Simulator, kind: str) -> None:
    sim.add_fault(kind=kind, provider="luma", first_n=2)
    await engine.text_to_image(ctx, "a sea", PHOTON, output_name="x")


async def test_hang_becomes_a_timeout(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="hang", provider="luma")
    with pytest.raises(ProviderTimeoutError):
        await engine.text_to_image(ctx, "a sea", PHOTON, output_name="x")


async def test_missing_key_names_lumaai_api_key(sim: Simulator, tmp_path: Path) -> None:
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="LUMAAI_API_KEY"):
            await engine.text_to_image(ctx, "a sea", PHOTON, output_name="x")
    assert sim.count() == 0


def test_keys_and_base_url_come_from_the_environment() -> None:
    keys = KeysModel.from_env({"LUMAAI_API_KEY": "k", "LUMAAI_BASE_URL": "https://l.example/v1/"})
    assert keys.require("luma") == "k" and keys.base_url("luma") == "https://l.example/v1"
    assert KeysModel().base_url("luma") == API


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "luma-" + "ef56" * 16
    right = sim.key_for("luma")
    bad = make_ctx(sim.transport(), sim.keys(luma_api_key=wrong), clock, tmp_path)
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    frame = Image.open(good.store.write_bytes("f.png", image_bytes("x", 64, 64)))
    failures: list[Exception] = []
    try:
        for call in (
            lambda c: engine.text_to_image(c, "a sea", PHOTON, output_name="x"),
            lambda c: engine.image_and_text_to_video(c, frame, "a sea", RAY, output_name="x"),
        ):
            failures += await failures_under_faults(sim, "luma", bad, good, call)
            assert isinstance(failures[-1], ContentPolicyError)
    finally:
        await bad.aclose()
        await good.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)


# -- flows -----------------------------------------------------------------------------------
async def test_one_node_flows_run_on_luma(
    ctx: RunContext, sim: Simulator, kite: Image, served: str, tmp_path: Path
) -> None:
    flow = Flow("luma_image")
    text = flow.input("text", "text")
    draw = flow.add("draw", "text_to_image", {"prompt": text}, model="luma-photon")
    flow.output("image", draw["image"])
    result = await flow.ainvoke({"text": "a quiet harbour"}, out_dir=tmp_path / "a", ctx=ctx)
    assert isinstance(result.outputs["image"], Image)

    video_flow = Flow("luma_video")
    image = video_flow.input("image", "image")
    line = video_flow.input("text", "text")
    clip = video_flow.add(
        "clip", "image_and_text_to_video", {"image": image, "text": line}, model=RAY
    )
    video_flow.output("video", clip["video"])
    out = await video_flow.ainvoke(
        {"image": kite, "text": "it flies"}, out_dir=tmp_path / "b", ctx=ctx
    )
    assert isinstance(out.outputs["video"], Video)
    assert sim.count("luma", "generations.video") == 1


# -- the seed's functional API ---------------------------------------------------------------
async def test_the_functional_api_draws_and_animates_on_luma(
    sim: Simulator, clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calliope_graph import inference

    real = inference._context

    def on_clock(*args: Any, **kwargs: Any) -> RunContext:
        ctx = real(*args, **kwargs)
        ctx.sleep = clock  # the functional API's own context waits on the virtual clock
        return ctx

    monkeypatch.setattr(inference, "_context", on_clock)
    frame = tmp_path / "frame.png"
    frame.write_bytes(image_bytes("a kite", 160, 90))
    async with sim.client() as client:
        picture = await inference.text_to_image_file_inference(
            client, "a harbour at night", str(tmp_path / "pic.png"), PHOTON, sim.keys()
        )
        clip = await inference.image_and_text_to_video_file_inference(
            client, str(frame), "it flies", str(tmp_path / "clip.mp4"), RAY, sim.keys()
        )
    assert picture is not None and Path(picture).is_file()
    assert clip == str(tmp_path / "clip.mp4")
    assert mp4_info(Path(clip).read_bytes())["codec"] == "avc1"
    videos = [g for g in sim.state("luma")["generations"].values() if g.kind == "video"]
    # an image outside the output directory goes by its file name under image_base_url
    assert videos[0].request["keyframes"]["frame0"]["url"] == f"{MEDIA}/frame.png"


@pytest.mark.parametrize(
    ("params", "said"),
    [("", "set the image_base_url"), (", image_base_url: http://x.test/", "https")],
)
def test_validate_refuses_a_ray_node_without_a_public_https_image_url(
    tmp_path: Path, params: str, said: str
) -> None:
    """`calliope-graph validate` (and so run and batch, before anything is paid) says what
    Luma needs, instead of a node failing mid-run."""
    spec = tmp_path / "ray.yaml"
    spec.write_text(
        "name: ray\ninputs:\n  image: {type: image}\n  text: {type: text}\n"
        "nodes:\n  clip:\n    kind: image_and_text_to_video\n"
        "    inputs: {image: inputs.image, text: inputs.text}\n"
        f"    model: {{slug: luma-ray-2, model_parameters: {{duration: 5s{params}}},\n"
        f"            model: {catalog.get('luma-ray-2').model.model_dump_json()}}}\n"
        "outputs:\n  video: clip.video\n"
    )
    result = CliRunner().invoke(main, ["validate", str(spec)], catch_exceptions=False)
    assert result.exit_code == 4, result.output
    assert "node 'clip'" in result.output and said in result.output
    with pytest.raises(ConfigurationError, match=said):
        Flow.load(spec).validate()
    fixed = spec.read_text().replace("duration: 5s", f"duration: 5s, image_base_url: '{MEDIA}'")
    fixed = fixed.replace(", image_base_url: http://x.test/", "")
    spec.write_text(fixed)
    assert CliRunner().invoke(main, ["validate", str(spec)]).exit_code == 0


async def test_a_start_image_from_outside_the_output_directory_is_copied_into_it(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    """A flow input (a webcam photo elsewhere on disk) is not in the served output directory:
    it is copied there (``frames/``) first, so the URL Luma is given names a file that the
    served directory holds, instead of a bare file name that resolves to nothing."""
    outside = tmp_path / "elsewhere" / "webcam.png"
    outside.parent.mkdir()
    outside.write_bytes(image_bytes("a fox at the window", 320, 180))
    await engine.image_and_text_to_video(
        rctx, Image.open(outside), "the fox jumps", RAY, output_name="clip"
    )
    url = json.loads(rec.requests[0].content)["keyframes"]["frame0"]["url"]
    assert url.startswith(f"{MEDIA}/frames/")
    copied = rctx.store.root / url.removeprefix(f"{MEDIA}/")
    assert copied.read_bytes() == outside.read_bytes()
