"""The Hugging Face engines against the Hugging Face fake: every task, loading, every fault."""

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
from calliope_graph.engines import hugging_face as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    InvalidRequestError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.media import Audio, Image, MediaStore
from calliope_graph.simulate import Simulator
from calliope_graph.testing import describe_image, image_bytes, mp3_bytes, wav_bytes

ROUTER = "https://router.huggingface.co/hf-inference/models"
LEGACY = "https://api-inference.huggingface.co/models"
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"
TEXT = catalog.get("huggingface-mistral-7b")
SDXL = catalog.get("huggingface-sdxl")
BLIP = catalog.get("huggingface-blip")
WHISPER = catalog.get("huggingface-whisper")


def hf_config(model: str, **params: Any) -> ModelConfig:
    return ModelConfig(
        slug=f"test-{model}",
        model_parameters=params,
        model=InferenceModel(
            slug=model, provider=InferenceModelProvider.HUGGINGFACE, provider_model_name=model
        ),
    )


def photo(path: Path, fmt: str = "PNG") -> Image:
    path.write_bytes(image_bytes("a red kite over a harbour", 320, 240, fmt))
    return Image.open(path)


def audio_file(path: Path, data: bytes) -> Audio:
    path.write_bytes(data)
    return Audio.open(path)


# -- registration ---------------------------------------------------------------------------
def test_hugging_face_serves_four_conversions() -> None:
    expected = {
        Conversion.TEXT_TO_TEXT: engine.text_to_text,
        Conversion.TEXT_TO_IMAGE: engine.text_to_image,
        Conversion.IMAGE_ANALYSIS: engine.image_analysis,
        Conversion.AUDIO_TO_TEXT: engine.audio_to_text,
    }
    for conversion, fn in expected.items():
        assert get_engine(conversion, "hugging_face") is fn
    with pytest.raises(ConfigurationError, match="hugging_face"):
        get_engine(Conversion.IMAGE_AND_TEXT_TO_VIDEO, "hugging_face")


# -- text -> text ---------------------------------------------------------------------------
async def test_text_generation_request_and_answer(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    text = await engine.text_to_text(rctx, "Once upon a time", TEXT)
    (request,) = rec.requests
    assert str(request.url) == f"{ROUTER}/{MISTRAL}"
    assert request.headers["authorization"] == f"Bearer {sim.key_for('hugging_face')}"
    assert "x-wait-for-model" not in request.headers
    assert json.loads(request.content) == {
        "inputs": "Once upon a time",
        "parameters": {"max_new_tokens": 300, "temperature": 0.7, "return_full_text": False},
    }
    assert text and not text.startswith("Once upon a time")
    assert text == await engine.text_to_text(rctx, "Once upon a time", TEXT)
    assert sim.calls[("hugging_face", "text-generation")] == 2


async def test_an_echoed_prompt_is_stripped(rctx: RunContext, rec: Recorder) -> None:
    def echo(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return httpx.Response(200, json=[{"generated_text": "The sea. And then the tide came."}])

    rec.rewrite = echo
    assert await engine.text_to_text(rctx, "The sea.", TEXT) == "And then the tide came."


async def test_tgi_validation_error_is_an_invalid_request(ctx: RunContext, sim: Simulator) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await engine.text_to_text(ctx, "hi", hf_config(MISTRAL, temperature=0))
    assert info.value.status == 422 and info.value.code == "validation"
    assert "`temperature` must be strictly positive" in str(info.value)
    assert sim.count("hugging_face") == 1


async def test_unknown_model_is_a_404(ctx: RunContext) -> None:
    with pytest.raises(InvalidRequestError, match="Model nobody/nothing does not exist"):
        await engine.text_to_text(ctx, "hi", hf_config("nobody/nothing"))


async def test_a_model_of_another_task_is_named(ctx: RunContext) -> None:
    with pytest.raises(InvalidRequestError, match="different task"):
        await engine.text_to_text(ctx, "hi", SDXL)


async def test_legacy_host_and_error_list_envelope(clock: Any, tmp_path: Path) -> None:
    sim = Simulator(sleep=clock)
    keys = sim.keys(huggingface_base_url="https://api-inference.huggingface.co/")
    ctx = make_ctx(sim.transport(), keys, clock, tmp_path)
    try:
        assert await engine.text_to_text(ctx, "hello there", TEXT)
        assert sim.count("hugging_face", "text-generation") == 1
    finally:
        await ctx.aclose()

    def server(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == "https://my-endpoint.endpoints.huggingface.cloud"
        return httpx.Response(400, json={"error": ["inputs too long", "max is 512 tokens"]})

    ctx = make_ctx(httpx.MockTransport(server), keys, clock, tmp_path)
    try:
        with pytest.raises(InvalidRequestError, match="inputs too long; max is 512 tokens"):
            await engine.text_to_text(
                ctx, "hi", hf_config("https://my-endpoint.endpoints.huggingface.cloud")
            )
    finally:
        await ctx.aclose()


# -- text -> image --------------------------------------------------------------------------
async def test_text_to_image_saves_a_png_of_the_rounded_size(
    rctx: RunContext, rec: Recorder
) -> None:
    image = await engine.text_to_image(
        rctx, "a lighthouse at dusk", SDXL, output_name="scene.jpg", width=500, height=301
    )
    (request,) = rec.requests
    assert str(request.url) == f"{ROUTER}/stabilityai/stable-diffusion-xl-base-1.0"
    assert request.headers["accept"] == "image/png"
    assert json.loads(request.content) == {
        "inputs": "a lighthouse at dusk",
        "parameters": {"width": 496, "height": 304},
    }
    assert image.mime == "image/png" and image.path.endswith("scene.png")
    assert (image.width, image.height) == (496, 304)
    with PILImage.open(image.path) as im:
        assert im.format == "PNG"


async def test_text_to_image_jpeg_gets_a_jpg_extension(rctx: RunContext, rec: Recorder) -> None:
    config = hf_config(
        "black-forest-labs/FLUX.1-schnell", output_format="jpeg", num_inference_steps=4
    )
    image = await engine.text_to_image(rctx, "a fox", config, output_name="fox.png", width=256)
    assert rec.requests[0].headers["accept"] == "image/jpeg"
    assert json.loads(rec.requests[0].content)["parameters"] == {
        "num_inference_steps": 4,
        "width": 256,
    }
    assert image.mime == "image/jpeg" and image.path.endswith("fox.jpg")
    assert (image.width, image.height) == (256, 1024)


async def test_fake_text_to_image_defaults_to_jpeg_and_checks_sizes(sim: Simulator) -> None:
    headers = {"Authorization": f"Bearer {sim.key_for('hugging_face')}"}
    async with sim.client(headers=headers) as client:
        ok = await client.post(
            f"{ROUTER}/runwayml/stable-diffusion-v1-5", json={"inputs": "a boat"}
        )
        bad = await client.post(
            f"{ROUTER}/runwayml/stable-diffusion-v1-5",
            json={"inputs": "a boat", "parameters": {"width": 500, "height": 500}},
        )
    assert ok.headers["content-type"] == "image/jpeg"
    with PILImage.open(io.BytesIO(ok.content)) as im:
        assert (im.format, im.size) == ("JPEG", (512, 512))
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "`height` and `width` have to be divisible by 8 but are 500 and 500."
    }


# -- image analysis -------------------------------------------------------------------------
async def test_image_captioning_sends_raw_bytes(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    image = photo(tmp_path / "kite.jpg", "JPEG")
    analysis = await engine.image_analysis(rctx, image, BLIP)
    (request,) = rec.requests
    assert str(request.url) == f"{ROUTER}/Salesforce/blip-image-captioning-large"
    assert request.headers["content-type"] == "image/jpeg"
    assert request.content == image.read_bytes()
    caption = describe_image(image.read_bytes())["caption"]
    assert analysis.captions == [caption]
    assert analysis.description == caption[0].upper() + caption[1:] + "."
    assert analysis.sources == ["hugging_face"]


async def test_fake_captioning_rejects_bytes_that_are_not_an_image(sim: Simulator) -> None:
    headers = {"Authorization": f"Bearer {sim.key_for('hugging_face')}"}
    async with sim.client(headers=headers) as client:
        response = await client.post(
            f"{ROUTER}/Salesforce/blip-image-captioning-large", content=b"not an image"
        )
    assert response.status_code == 400
    assert response.json()["error"].startswith("cannot identify image file")


# -- audio -> text --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "data", "mime"),
    [("voice.wav", wav_bytes("hello"), "audio/wav"), ("voice.mp3", mp3_bytes(0.5), "audio/mpeg")],
)
async def test_speech_recognition_of_wav_and_mp3(
    rctx: RunContext, rec: Recorder, tmp_path: Path, name: str, data: bytes, mime: str
) -> None:
    audio = audio_file(tmp_path / name, data)
    text = await engine.audio_to_text(rctx, audio, WHISPER, language="en")
    (request,) = rec.requests
    assert str(request.url) == f"{ROUTER}/openai/whisper-large-v3"
    assert request.headers["content-type"] == mime and request.content == data
    assert text and text == text.strip()


async def test_audio_the_model_cannot_read_is_an_invalid_request(
    ctx: RunContext, sim: Simulator, tmp_path: Path
) -> None:
    # Audio.open refuses this file (it is not Ogg), so build the value directly: what is
    # tested is the provider's refusal of audio the model cannot read.
    (tmp_path / "voice.ogg").write_bytes(b"OggS" + bytes(200))
    audio = Audio(path=str(tmp_path / "voice.ogg"), mime="audio/ogg")
    with pytest.raises(InvalidRequestError, match="Soundfile is either not in the correct"):
        await engine.audio_to_text(ctx, audio, WHISPER)
    assert sim.count("hugging_face") == 1


async def test_fake_speech_accepts_base64_json_with_timestamps(sim: Simulator) -> None:
    headers = {"Authorization": f"Bearer {sim.key_for('hugging_face')}"}
    audio = base64.b64encode(wav_bytes("x")).decode()
    async with sim.client(headers=headers) as client:
        response = await client.post(
            f"{ROUTER}/openai/whisper-large-v3",
            json={"inputs": audio, "parameters": {"return_timestamps": True}},
        )
    body = response.json()
    assert response.status_code == 200 and body["text"]
    assert [c["text"] for c in body["chunks"]] == body["text"].split()


# -- model loading --------------------------------------------------------------------------
async def test_a_loading_model_is_waited_for(
    ctx: RunContext, sim: Simulator, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim.state("hugging_face")["cold"] = {MISTRAL: 2}
    assert await engine.text_to_text(ctx, "hi", TEXT)
    # 503 with estimated_time 20: wait 20s, then the 10s left of the 30s bound, then served.
    assert clock.waits == [20.0, 10.0]
    assert sim.count("hugging_face") == 3
    assert any("is loading" in r.getMessage() for r in caplog.records)


async def test_a_model_that_never_loads_times_out_naming_it(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.state("hugging_face")["cold"] = {MISTRAL: 10**6}
    sim.state("hugging_face")["estimated_time"] = 4.0
    with pytest.raises(ProviderTimeoutError) as info:
        await engine.text_to_text(ctx, "hi", TEXT)
    error = info.value
    assert error.job_id == MISTRAL and error.code == "model_loading" and error.status == 503
    assert MISTRAL in str(error) and "wait_for_model_timeout" in str(error)
    assert clock.now == pytest.approx(30.0)
    assert sim.count("hugging_face") == 9  # at t = 0, 4, ..., 28 and 30


async def test_wait_for_model_timeout_parameter_bounds_the_wait(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.state("hugging_face")["cold"] = {MISTRAL: 10**6}
    with pytest.raises(ProviderTimeoutError):
        await engine.text_to_text(ctx, "hi", hf_config(MISTRAL, wait_for_model_timeout=5))
    assert clock.waits == [5.0]


async def test_wait_for_model_lets_the_server_hold_the_request(
    rctx: RunContext, rec: Recorder, sim: Simulator, clock: Any
) -> None:
    sim.state("hugging_face")["cold"] = {MISTRAL: 3}
    assert await engine.text_to_text(rctx, "hi", hf_config(MISTRAL, wait_for_model=True))
    assert rec.requests[0].headers["x-wait-for-model"] == "true"
    assert sim.count("hugging_face") == 1
    assert clock.waits == [20.0]  # spent inside the (simulated) server


async def test_fake_loading_answer_has_hf_shape(sim: Simulator) -> None:
    sim.state("hugging_face")["cold"] = {"gpt2": 1}
    headers = {"Authorization": f"Bearer {sim.key_for('hugging_face')}"}
    async with sim.client(headers=headers) as client:
        cold = await client.post(f"{LEGACY}/gpt2", json={"inputs": "hi"})
        warm = await client.post(f"{LEGACY}/gpt2", json={"inputs": "hi"})
    assert cold.status_code == 503
    assert cold.json() == {"error": "Model gpt2 is currently loading", "estimated_time": 20.0}
    assert warm.status_code == 200
    assert warm.json()[0]["generated_text"].startswith("hi ")  # legacy default echoes


# -- faults ---------------------------------------------------------------------------------
async def test_rate_limit_honours_retry_after(ctx: RunContext, sim: Simulator, clock: Any) -> None:
    sim.add_fault(kind="rate_limit", provider="hugging_face", first_n=2, retry_after=7)
    assert await engine.text_to_text(ctx, "hi", TEXT)
    assert clock.waits == [7.0, 7.0]
    assert sim.count("hugging_face") == 3


async def test_rate_limit_every_time_fails_with_the_providers_message(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="rate_limit", provider="hugging_face", retry_after=1)
    with pytest.raises(RateLimitError) as info:
        await engine.text_to_text(ctx, "hi", TEXT)
    assert info.value.retry_after == 1 and "free usage limit" in str(info.value)
    assert sim.count("hugging_face") == ctx.retry.max_attempts


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "overloaded"])
async def test_server_errors_are_retried(ctx: RunContext, sim: Simulator, kind: str) -> None:
    sim.add_fault(kind=kind, provider="hugging_face", first_n=2)
    assert await engine.text_to_text(ctx, "hi", TEXT)
    assert sim.count("hugging_face") == 3


async def test_server_error_every_time_gives_up(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="server_error", provider="hugging_face")
    with pytest.raises(TransientProviderError) as info:
        await engine.image_analysis(ctx, photo(ctx.store.root.parent / "k.png"), BLIP)
    assert info.value.status == 500
    assert sim.count("hugging_face") == ctx.retry.max_attempts


async def test_hang_becomes_a_timeout(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="hang", provider="hugging_face")
    with pytest.raises(ProviderTimeoutError):
        await engine.text_to_text(ctx, "hi", TEXT)
    assert sim.count("hugging_face") == ctx.retry.max_attempts


@pytest.mark.parametrize("conversion", ["text", "image"])
async def test_malformed_answer_is_retried(
    ctx: RunContext, sim: Simulator, conversion: str
) -> None:
    sim.add_fault(kind="malformed", provider="hugging_face", first_n=1)
    if conversion == "text":
        assert await engine.text_to_text(ctx, "hi", TEXT)
    else:
        image = await engine.text_to_image(ctx, "a boat", SDXL, output_name="b.png", width=64)
        assert image.mime == "image/png"
    assert sim.count("hugging_face") == 2


async def test_content_policy_is_not_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="content_policy", provider="hugging_face", pattern="gore")
    assert await engine.text_to_image(ctx, "a meadow", SDXL, output_name="m.png", width=64)
    with pytest.raises(ContentPolicyError, match="safety checker") as info:
        await engine.text_to_image(ctx, "gore everywhere", SDXL, output_name="g.png", width=64)
    assert info.value.status == 400
    assert sim.count("hugging_face") == 2


async def test_auth_failure_is_not_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="auth", provider="hugging_face")
    with pytest.raises(AuthenticationError, match="Invalid credentials in Authorization header"):
        await engine.text_to_text(ctx, "hi", TEXT)
    assert sim.count("hugging_face") == 1


async def test_wrong_token_gets_hfs_401(sim: Simulator) -> None:
    async with sim.client() as client:
        wrong = await client.post(
            f"{ROUTER}/gpt2", json={"inputs": "x"}, headers={"Authorization": "Bearer hf_nope"}
        )
        missing = await client.post(f"{ROUTER}/gpt2", json={"inputs": "x"})
    for response in (wrong, missing):
        assert response.status_code == 401
        assert response.json() == {"error": "Invalid credentials in Authorization header"}
    assert "hf_nope" not in wrong.text


async def test_missing_token_is_a_configuration_error(sim: Simulator, tmp_path: Path) -> None:
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="HF_TOKEN"):
            await engine.text_to_text(ctx, "hi", TEXT)
    assert sim.count() == 0


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "hf_SECRETwrongtoken0123456789abcdef"
    right = sim.key_for("hugging_face")
    bad = make_ctx(sim.transport(), sim.keys(huggingface_api_key=wrong), clock, tmp_path)
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    failures: list[Exception] = []
    try:
        failures += await failures_under_faults(
            sim, "hugging_face", bad, good, lambda ctx: engine.text_to_text(ctx, "hi", TEXT)
        )
        sim.state("hugging_face")["cold"] = {MISTRAL: 10**6}
        with pytest.raises(ProviderTimeoutError) as loading:
            await engine.text_to_text(good, "hi", TEXT)
        failures.append(loading.value)
    finally:
        await bad.aclose()
        await good.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)
