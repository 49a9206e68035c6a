"""The Stability engine against the Stability fake: v1 and v2beta, sizes, safety, faults."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder, assert_secrets_absent, failures_under_faults, make_ctx
from PIL import Image as PILImage

from calliope_graph.config import (
    InferenceModel,
    InferenceModelProvider,
    KeysModel,
    ModelConfig,
    catalog,
)
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines import stability as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    InvalidRequestError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.media import Image, MediaStore
from calliope_graph.nodes import TextToImage
from calliope_graph.simulate import Simulator
from calliope_graph.testing import multipart_form

API = "https://api.stability.ai"
CORE = catalog.get("stability-core")
ULTRA = catalog.get("stability-ultra")
SD3 = catalog.get("stability-sd3")
SDXL = catalog.get("stability-sdxl")


class StabilityRecorder(Recorder):
    """Also reads a request back as a multipart form or as JSON."""

    def form(self, index: int = -1) -> dict[str, str]:
        fields, files = multipart_form(self.requests[index])
        assert not files  # every field is a plain form field, no file part
        return fields

    def json(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


@pytest.fixture
def rec(sim: Simulator) -> StabilityRecorder:
    return StabilityRecorder(sim)


def stability(model: str, **params: Any) -> ModelConfig:
    return ModelConfig(
        slug=f"test-{model}",
        model_parameters=params,
        model=InferenceModel(
            slug=model, provider=InferenceModelProvider.STABILITY, provider_model_name=model
        ),
    )


def pixels(image: Image) -> tuple[str, tuple[int, int]]:
    with PILImage.open(image.path) as im:
        return str(im.format), im.size


# -- registration and the v2beta request ----------------------------------------------------
def test_stability_serves_text_to_image() -> None:
    assert get_engine(Conversion.TEXT_TO_IMAGE, "stability") is engine.text_to_image


async def test_core_sends_a_multipart_form_and_saves_the_png(
    rctx: RunContext, rec: StabilityRecorder, sim: Simulator
) -> None:
    image = await engine.text_to_image(
        rctx, "a lighthouse at dusk", CORE, output_name="frames/a.png", width=1280, height=720
    )
    (request,) = rec.requests
    assert str(request.url) == f"{API}/v2beta/stable-image/generate/core"
    assert request.headers["authorization"] == f"Bearer {sim.key_for('stability')}"
    assert request.headers["accept"] == "image/*"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert rec.form() == {"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"}
    assert image.path.endswith("frames/a.png") and image.mime == "image/png"
    assert pixels(image) == ("PNG", (1344, 768))
    assert sim.calls[("stability", "v2.generate.core")] == 1


@pytest.mark.parametrize(
    ("config", "endpoint", "extra"),
    [
        (ULTRA, "ultra", {}),
        (SD3, "sd3", {"mode": "text-to-image", "model": "sd3.5-large"}),
        (stability("sd3.5-medium"), "sd3", {"mode": "text-to-image", "model": "sd3.5-medium"}),
        (stability("stable-image-core"), "core", {}),
    ],
)
async def test_each_v2beta_endpoint(
    rctx: RunContext,
    rec: StabilityRecorder,
    config: ModelConfig,
    endpoint: str,
    extra: dict[str, str],
) -> None:
    image = await engine.text_to_image(rctx, "a fox", config, output_name="fox.png")
    assert rec.requests[0].url.path == f"/v2beta/stable-image/generate/{endpoint}"
    assert rec.form() == {"prompt": "a fox", **extra}  # no size asked: Stability's 1:1
    assert pixels(image) == ("PNG", (1024, 1024))


@pytest.mark.parametrize(
    ("config", "fmt", "suffix"),
    [
        (stability("core", output_format="jpeg"), "JPEG", ".jpg"),
        (stability("ultra", output_format="webp"), "WEBP", ".webp"),
        (stability("sd3", output_format="jpeg"), "JPEG", ".jpg"),
    ],
)
async def test_output_format_decides_the_file_type(
    rctx: RunContext, rec: StabilityRecorder, config: ModelConfig, fmt: str, suffix: str
) -> None:
    image = await engine.text_to_image(rctx, "a fox", config, output_name="fox.png")
    assert rec.form()["output_format"] == config.parameters["output_format"]
    assert pixels(image)[0] == fmt and image.path.endswith(f"fox{suffix}")
    assert not (rctx.store.root / "fox.png").exists()


async def test_json_answers_are_decoded(rctx: RunContext, rec: StabilityRecorder) -> None:
    config = stability("core", accept="application/json", seed=42, negative_prompt="fog")
    image = await engine.text_to_image(rctx, "a fox", config, output_name="fox.png", width=800)
    request = rec.requests[0]
    assert request.headers["accept"] == "application/json"
    assert rec.form() == {
        "prompt": "a fox",
        "aspect_ratio": "1:1",
        "negative_prompt": "fog",
        "seed": "42",
    }
    assert pixels(image) == ("PNG", (1024, 1024))


async def test_same_prompt_and_seed_give_the_same_image(rctx: RunContext) -> None:
    a = await engine.text_to_image(rctx, "x", stability("core", seed=7), output_name="a.png")
    b = await engine.text_to_image(rctx, "x", stability("core", seed=7), output_name="b.png")
    c = await engine.text_to_image(rctx, "x", stability("core", seed=8), output_name="c.png")
    assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    assert Path(a.path).read_bytes() != Path(c.path).read_bytes()


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ((1920, 1080), "16:9"),
        ((1080, 1920), "9:16"),
        ((1000, 1000), "1:1"),
        ((2560, 1080), "21:9"),
        ((1080, 2560), "9:21"),
        ((800, 1000), "4:5"),
        ((1000, 800), "5:4"),
        ((600, 900), "2:3"),
        ((900, 600), "3:2"),
        ((1000, None), "1:1"),
        ((None, None), None),
    ],
)
def test_aspect_ratio_is_the_nearest_stability_makes(
    size: tuple[int | None, int | None], ratio: str | None
) -> None:
    assert engine.aspect_ratio(*size) == ratio


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (stability("core", aspect_ratio="7:3"), "aspect_ratio '7:3'"),
        (stability("core", accept="image/gif"), "accept 'image/gif'"),
        (stability("stable-diffusion-v1-6", accept="image/jpeg"), "v1 accept"),
    ],
)
async def test_impossible_settings_fail_before_any_call(
    ctx: RunContext, sim: Simulator, config: ModelConfig, needle: str
) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        await engine.text_to_image(ctx, "x", config, output_name="x.png")
    assert sim.count() == 0


# -- v1 ------------------------------------------------------------------------------------
async def test_sdxl_v1_sends_json_with_an_allowed_size(
    rctx: RunContext, rec: StabilityRecorder, sim: Simulator
) -> None:
    config = SDXL.with_parameters(negative_prompt="blurry", seed=5, style_preset="cinematic")
    image = await engine.text_to_image(
        rctx, "a red kite", config, output_name="kite.png", width=1280, height=720
    )
    (request,) = rec.requests
    assert str(request.url) == f"{API}/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
    assert request.headers["accept"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {sim.key_for('stability')}"
    assert rec.json() == {
        "text_prompts": [{"text": "a red kite", "weight": 1.0}, {"text": "blurry", "weight": -1.0}],
        "samples": 1,
        "cfg_scale": 7,
        "steps": 30,
        "seed": 5,
        "style_preset": "cinematic",
        "width": 1344,
        "height": 768,
    }
    assert pixels(image) == ("PNG", (1344, 768))


async def test_sdxl_without_a_size_asks_for_1024_not_the_refused_512(
    rctx: RunContext, rec: StabilityRecorder
) -> None:
    image = await engine.text_to_image(rctx, "x", SDXL, output_name="x.png")
    assert (rec.json()["width"], rec.json()["height"]) == (1024, 1024)
    assert pixels(image)[1] == (1024, 1024)


@pytest.mark.parametrize(
    ("engine_id", "size", "expected"),
    [
        ("stable-diffusion-xl-1024-v1-0", (512, 512), (1024, 1024)),
        ("stable-diffusion-xl-1024-v1-0", (720, 1280), (768, 1344)),
        ("stable-diffusion-xl-1024-v1-0", (2000, 800), (1536, 640)),
        ("stable-diffusion-xl-1024-v1-0", (1200, 900), (1152, 896)),
        ("stable-diffusion-xl-1024-v0-9", (None, None), (1024, 1024)),
        ("stable-diffusion-v1-6", (500, 700), (512, 704)),
        ("stable-diffusion-v1-6", (100, 4000), (320, 1536)),
        ("stable-diffusion-v1-6", (None, None), None),
        ("my-engine", (300, 100), (320, 128)),
    ],
)
def test_v1_sizes(
    engine_id: str, size: tuple[int | None, int | None], expected: tuple[int, int] | None
) -> None:
    assert engine.v1_size(engine_id, *size) == expected


async def test_v1_6_and_raw_png_answers(rctx: RunContext, rec: StabilityRecorder) -> None:
    config = stability("stable-diffusion-v1-6", accept="image/png", steps=20)
    image = await engine.text_to_image(rctx, "x", config, output_name="x", width=500, height=700)
    assert rec.requests[0].headers["accept"] == "image/png"
    assert rec.json()["width"] == 512 and rec.json()["height"] == 704
    assert pixels(image) == ("PNG", (512, 704)) and image.path.endswith("x.png")


async def test_a_long_prompt_is_cut_for_v1(
    rctx: RunContext, rec: StabilityRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    prompt = "waves crash " * 300
    await engine.text_to_image(rctx, prompt, SDXL, output_name="x.png")
    sent = rec.json()["text_prompts"][0]["text"]
    assert prompt.startswith(sent) and 1950 < len(sent) <= 2000
    assert any("limit is 2000" in r.getMessage() for r in caplog.records)


# -- safety ----------------------------------------------------------------------------------
async def test_v2_moderation_is_a_content_policy_error_and_is_not_retried(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="content_policy", provider="stability", pattern="explosion")
    assert await engine.text_to_image(ctx, "a calm sea", CORE, output_name="a.png")
    with pytest.raises(ContentPolicyError) as info:
        await engine.text_to_image(ctx, "an explosion", CORE, output_name="b.png")
    assert info.value.status == 403 and info.value.code == "content_moderation"
    assert "flagged by our content moderation system" in str(info.value)
    assert "content_policy" in str(info.value) and "request id" in str(info.value)
    assert sim.calls[("stability", "v2.generate.core")] == 2
    assert not (ctx.store.root / "b.png").exists()


async def test_v2_filtered_output_is_a_content_policy_error(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.state("stability")["filter"] = "output"
    sim.add_fault(kind="content_policy", provider="stability")
    for accept in ("image/*", "application/json"):
        with pytest.raises(ContentPolicyError) as info:
            await engine.text_to_image(
                ctx, "x", stability("ultra", accept=accept), output_name="x.png"
            )
        assert info.value.code == "CONTENT_FILTERED" and info.value.status == 200
    assert not list(ctx.store.root.glob("x*"))


async def test_v1_filtered_artifact_is_a_content_policy_error(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="content_policy", provider="stability")
    with pytest.raises(ContentPolicyError, match="CONTENT_FILTERED") as info:
        await engine.text_to_image(ctx, "x", SDXL, output_name="x.png")
    assert info.value.code == "CONTENT_FILTERED"
    with pytest.raises(ContentPolicyError):
        await engine.text_to_image(
            ctx, "x", stability("stable-diffusion-v1-6", accept="image/png"), output_name="y"
        )
    assert sim.count("stability") == 2


async def test_v1_prompt_filter_is_a_content_policy_error(ctx: RunContext, sim: Simulator) -> None:
    sim.state("stability")["filter"] = "prompt"
    sim.add_fault(kind="content_policy", provider="stability")
    with pytest.raises(ContentPolicyError) as info:
        await engine.text_to_image(ctx, "x", SDXL, output_name="x.png")
    assert info.value.status == 400 and info.value.code == "invalid_prompts"
    assert "filtered words" in str(info.value)


async def test_a_v1_generation_error_is_transient(rctx: RunContext, rec: StabilityRecorder) -> None:
    def failed(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return httpx.Response(
            200, json={"artifacts": [{"base64": "", "seed": 1, "finishReason": "ERROR"}]}
        )

    rec.rewrite = failed
    with pytest.raises(TransientProviderError, match="finish reason ERROR") as info:
        await engine.text_to_image(rctx, "x", SDXL, output_name="x.png")
    assert info.value.code == "ERROR"


# -- faults ---------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [CORE, SDXL])
async def test_rate_limit_twice_then_success_honours_retry_after(
    ctx: RunContext, sim: Simulator, clock: Any, config: ModelConfig
) -> None:
    sim.add_fault(kind="rate_limit", provider="stability", first_n=2, retry_after=7)
    assert await engine.text_to_image(ctx, "x", config, output_name="x.png")
    assert clock.waits == [7.0, 7.0]
    assert sim.count("stability") == 3


async def test_rate_limit_without_a_header_waits_the_timeout_stability_names(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.add_fault(kind="rate_limit", provider="stability", first_n=1, retry_after=None)
    assert await engine.text_to_image(ctx, "x", CORE, output_name="x.png")
    assert clock.waits == [60.0]  # "...have been timed out for 60 seconds."


async def test_rate_limit_every_time_is_a_rate_limit_error(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="rate_limit", provider="stability", retry_after=1)
    with pytest.raises(RateLimitError, match="150 requests within a 10 second period") as info:
        await engine.text_to_image(ctx, "x", CORE, output_name="x.png")
    assert info.value.code == "rate_limit_exceeded" and info.value.retry_after == 1.0
    assert sim.count("stability") == ctx.retry.max_attempts


@pytest.mark.parametrize(
    ("kind", "config", "status", "name"),
    [
        ("server_error", CORE, 500, "internal_error"),
        ("server_error", SDXL, 500, "server_error"),
        ("unavailable", ULTRA, 503, "service_unavailable"),
        ("overloaded", SDXL, 503, "service_unavailable"),
    ],
)
async def test_server_errors_are_retried(
    ctx: RunContext, sim: Simulator, kind: str, config: ModelConfig, status: int, name: str
) -> None:
    sim.add_fault(kind=kind, provider="stability", first_n=2)
    assert await engine.text_to_image(ctx, "x", config, output_name="x.png")
    assert sim.count("stability") == 3
    sim.clear_faults()
    sim.add_fault(kind=kind, provider="stability")
    with pytest.raises(TransientProviderError) as info:
        await engine.text_to_image(ctx, "x", config, output_name="x.png")
    assert info.value.status == status and info.value.code == name


async def test_hang_becomes_a_timeout(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="hang", provider="stability")
    with pytest.raises(ProviderTimeoutError, match="did not answer in time"):
        await engine.text_to_image(ctx, "x", CORE, output_name="x.png")
    assert sim.count("stability") == ctx.retry.max_attempts


@pytest.mark.parametrize("config", [CORE, stability("core", accept="application/json"), SDXL])
async def test_malformed_answers_are_retried(
    ctx: RunContext, sim: Simulator, config: ModelConfig
) -> None:
    sim.add_fault(kind="malformed", provider="stability", first_n=1)
    image = await engine.text_to_image(ctx, "x", config, output_name="x.png")
    assert image.mime == "image/png"
    assert sim.count("stability") == 2


async def test_an_answer_that_is_not_an_image_is_retried(
    rctx: RunContext, rec: StabilityRecorder
) -> None:
    answers = iter([httpx.Response(200, text="<html>oops</html>")])

    def html_once(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return next(answers, response)

    rec.rewrite = html_once
    assert await engine.text_to_image(rctx, "x", CORE, output_name="x.png")
    assert len(rec.requests) == 2


async def test_auth_fault_is_not_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="auth", provider="stability")
    with pytest.raises(AuthenticationError, match="unauthorized"):
        await engine.text_to_image(ctx, "x", CORE, output_name="x.png")
    assert sim.count("stability") == 1


async def test_missing_key_is_a_configuration_error(sim: Simulator, tmp_path: Path) -> None:
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="STABILITY_API_KEY"):
            await engine.text_to_image(ctx, "x", CORE, output_name="x.png")
    assert sim.count() == 0


@pytest.mark.parametrize("config", [CORE, SDXL])
async def test_wrong_key_is_refused_without_leaking_it(
    sim: Simulator,
    clock: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    config: ModelConfig,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-" + "Zq9" * 16
    ctx = make_ctx(sim.transport(), sim.keys(stability_api_key=wrong), clock, tmp_path)
    try:
        with pytest.raises(AuthenticationError) as info:
            await engine.text_to_image(ctx, "x", config, output_name="x.png")
    finally:
        await ctx.aclose()
    assert info.value.status == 401 and info.value.code == "unauthorized"
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert all(wrong not in r.getMessage() for r in caplog.records)
    assert sim.count("stability") == 1


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-" + "Wx4" * 16
    right = sim.key_for("stability")
    bad = make_ctx(sim.transport(), sim.keys(stability_api_key=wrong), clock, tmp_path)
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    failures: list[Exception] = []
    try:
        for call in (
            lambda ctx: engine.text_to_image(ctx, "x", CORE, output_name="x.png"),  # v2beta
            lambda ctx: engine.text_to_image(ctx, "x", SDXL, output_name="x.png"),  # v1
        ):
            failures += await failures_under_faults(sim, "stability", bad, good, call)
    finally:
        await bad.aclose()
        await good.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert any(isinstance(f, ContentPolicyError) for f in failures)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)


# -- the fake's own checks ------------------------------------------------------------------
def auth(sim: Simulator, accept: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {sim.key_for('stability')}"}
    if accept:
        headers["Accept"] = accept
    return headers


async def test_fake_401s_use_each_versions_envelope(sim: Simulator) -> None:
    async with sim.client() as client:
        v1 = await client.post(
            f"{API}/v1/generation/stable-diffusion-v1-6/text-to-image",
            json={"text_prompts": [{"text": "x"}]},
        )
        v2 = await client.post(
            f"{API}/v2beta/stable-image/generate/core",
            files={"prompt": (None, "x")},
            headers={"Authorization": "Bearer sk-wrong"},
        )
    assert v1.status_code == 401 and set(v1.json()) == {"id", "name", "message"}
    assert v1.json()["name"] == "unauthorized"
    assert v1.json()["message"] == "missing authorization header"
    assert v2.status_code == 401 and set(v2.json()) == {"id", "name", "errors"}
    assert v2.json()["name"] == "unauthorized" and "invalid API key" in v2.json()["errors"][0]
    assert v2.headers["x-request-id"] == v2.json()["id"]


@pytest.mark.parametrize(
    ("engine_id", "change", "status", "name", "needle"),
    [
        ("stable-diffusion-xl-1024-v1-0", {}, 400, "invalid_sdxl_v1_dimensions", "1152x896"),
        ("stable-diffusion-v1-6", {"width": 500}, 400, "invalid_height_or_width", "64"),
        ("stable-diffusion-v1-6", {"text_prompts": []}, 400, "invalid_prompts", "at least one"),
        ("stable-diffusion-v1-6", {"cfg_scale": 40}, 400, "bad_request", "cfg_scale"),
        ("stable-diffusion-v1-6", {"steps": 5}, 400, "bad_request", "steps"),
        ("stable-diffusion-v1-6", {"sampler": "FAST"}, 400, "bad_request", "K_EULER"),
        ("stable-diffusion-v1-6", {"seed": -1}, 400, "bad_request", "seed"),
        ("some-fake-engine", {}, 404, "not_found",
         "The specified engine (ID some-fake-engine) was not found."),
    ],
)  # fmt: skip
async def test_fake_validates_v1_like_stability(
    sim: Simulator, engine_id: str, change: dict[str, Any], status: int, name: str, needle: str
) -> None:
    body = {"text_prompts": [{"text": "a fox", "weight": 1}], **change}
    async with sim.client() as client:
        response = await client.post(
            f"{API}/v1/generation/{engine_id}/text-to-image", json=body, headers=auth(sim)
        )
    assert response.status_code == status
    error = response.json()
    assert set(error) == {"id", "name", "message"}
    assert error["name"] == name and needle in error["message"]


async def test_fake_v1_samples_and_raw_png(sim: Simulator) -> None:
    body = {"text_prompts": [{"text": "a fox"}], "samples": 3, "seed": 100}
    url = f"{API}/v1/generation/stable-diffusion-v1-6/text-to-image"
    async with sim.client() as client:
        many = await client.post(url, json=body, headers=auth(sim))
        raw = await client.post(url, json=body, headers=auth(sim, "image/png"))
        one = await client.post(url, json={**body, "samples": 1}, headers=auth(sim, "image/png"))
    artifacts = many.json()["artifacts"]
    assert [a["seed"] for a in artifacts] == [100, 101, 102]
    assert {a["finishReason"] for a in artifacts} == {"SUCCESS"}
    assert PILImage.open(io.BytesIO(base64.b64decode(artifacts[0]["base64"]))).size == (512, 512)
    assert raw.status_code == 400 and raw.json()["name"] == "invalid_samples"
    assert one.headers["content-type"] == "image/png"
    assert one.headers["finish-reason"] == "SUCCESS" and one.headers["seed"] == "100"
    assert one.content == base64.b64decode(artifacts[0]["base64"])


@pytest.mark.parametrize(
    ("endpoint", "fields", "status", "name", "needle"),
    [
        ("core", {}, 400, "bad_request", "prompt: is required"),
        ("core", {"prompt": "x", "aspect_ratio": "4:3"}, 400, "bad_request", "aspect_ratio"),
        ("core", {"prompt": "x", "style_preset": "oil"}, 400, "bad_request", "style_preset"),
        ("core", {"prompt": "x", "seed": "4294967295"}, 400, "bad_request", "seed"),
        ("sd3", {"prompt": "x", "output_format": "webp"}, 400, "bad_request", "png, jpeg"),
        ("sd3", {"prompt": "x", "model": "sd4"}, 400, "bad_request", "sd3.5-large"),
        ("sd3", {"prompt": "x", "cfg_scale": "12"}, 400, "bad_request", "cfg_scale"),
        ("sd3", {"prompt": "x", "mode": "image-to-image"}, 400, "bad_request", "image, strength"),
        ("ultra", {"prompt": "x", "strength": "0.5"}, 400, "bad_request", "strength"),
        ("turbo", {"prompt": "x"}, 404, "not_found", "not found"),
    ],
)
async def test_fake_validates_v2_like_stability(
    sim: Simulator, endpoint: str, fields: dict[str, str], status: int, name: str, needle: str
) -> None:
    async with sim.client() as client:
        response = await client.post(
            f"{API}/v2beta/stable-image/generate/{endpoint}",
            files={k: (None, v) for k, v in {"none": "", **fields}.items()},
            headers=auth(sim),
        )
    assert response.status_code == status
    error = response.json()
    assert set(error) == {"id", "name", "errors"}
    assert error["name"] == name and needle in error["errors"][0]


async def test_fake_v2_wants_multipart_and_at_most_10_mib(sim: Simulator) -> None:
    url = f"{API}/v2beta/stable-image/generate/core"
    async with sim.client() as client:
        as_json = await client.post(url, json={"prompt": "x"}, headers=auth(sim))
        huge = await client.post(
            url,
            files={"prompt": (None, "x"), "image": ("a.png", b"\0" * (10 * 1024 * 1024))},
            headers=auth(sim),
        )
    assert as_json.status_code == 400 and "multipart/form-data" in as_json.json()["errors"][0]
    assert huge.status_code == 413 and huge.json()["name"] == "payload_too_large"


async def test_fake_lists_its_engines(sim: Simulator) -> None:
    async with sim.client() as client:
        response = await client.get(f"{API}/v1/engines/list", headers=auth(sim))
    ids = [e["id"] for e in response.json()]
    assert "stable-diffusion-xl-1024-v1-0" in ids and "stable-diffusion-v1-6" in ids
    assert {e["type"] for e in response.json()} == {"PICTURE"}


async def test_invalid_request_names_the_field(rctx: RunContext) -> None:
    with pytest.raises(InvalidRequestError, match="style_preset") as info:
        await engine.text_to_image(
            rctx, "x", stability("core", style_preset="oil-paint"), output_name="x.png"
        )
    assert info.value.status == 400 and info.value.code == "bad_request"


async def test_the_image_node_runs_on_stability(ctx: RunContext, sim: Simulator) -> None:
    node = TextToImage("stability-core", width=1024, height=1024, output_name="frame.png")
    out = await node.run(ctx, prompt="a harbour at night")
    image = out["image"]
    assert isinstance(image, Image) and image.path.endswith("frame.png")
    assert (image.width, image.height) == (1024, 1024)
    assert sim.calls[("stability", "v2.generate.core")] == 1
