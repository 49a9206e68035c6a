"""The Google (Gemini API) engines against the Gemini fake: every conversion, streaming,
refusals, every fault class, Veo polling on the virtual clock, the model list."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import wave
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import (
    FAULT_CLASSES,
    Recorder,
    assert_secrets_absent,
    failures_under_faults,
    make_ctx,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from calliope_graph.config import InferenceModel, KeysModel, ModelConfig, catalog
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines import google as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    MediaError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.flow import Flow
from calliope_graph.inference import (
    audio_to_text_inference,
    image_analysis_inference,
    image_and_text_to_video_file_inference,
    messages_to_object_inference,
    text_to_image_file_inference,
    text_to_speech_file_inference,
    text_to_text_inference,
)
from calliope_graph.media import Audio, Image, ImageAnalysis, MediaStore, Video
from calliope_graph.simulate import Simulator, parse_faults
from calliope_graph.simulate._speech import speech_seconds
from calliope_graph.testing import image_bytes, mp4_info, wav_bytes

BASE = "https://generativelanguage.googleapis.com/v1beta"
FLASH = catalog.get("google-gemini-flash")
IMAGE = catalog.get("google-gemini-image")
IMAGEN = catalog.get("google-imagen-4")
VEO = catalog.get("google-veo")
TTS = catalog.get("google-gemini-tts")
#: A day Imagen was still served (its shutdown: 2026-08-17).
BEFORE_IMAGEN_SHUTDOWN = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def gemini(name: str = "gemini-3.8-flash", **params: Any) -> ModelConfig:
    return ModelConfig(
        slug="test-gemini",
        model_parameters=params,
        model=InferenceModel(slug="test-gemini", provider="google", provider_model_name=name),
    )


def photo(path: Path, size: tuple[int, int] = (320, 240), fmt: str = "PNG") -> Image:
    path.write_bytes(image_bytes("a red kite over a harbour", *size, fmt))
    return Image.open(path)


def speech_file(path: Path) -> Audio:
    path.write_bytes(wav_bytes("the harbour at dawn", seconds=1.0))
    return Audio.open(path)


class Scene(BaseModel):
    """A scene of the story."""

    title: str
    mood: str = Field(description="one word")
    characters: list[str]


@pytest.fixture
def kite(tmp_path: Path) -> Image:
    return photo(tmp_path / "kite.png")


# -- registration and requests --------------------------------------------------------------
def test_every_google_conversion_is_registered() -> None:
    for conversion in Conversion:
        assert get_engine(conversion, "google") is not None


async def test_text_to_text_sends_generate_content_with_the_key_header(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    config = gemini(temperature=0.4, max_tokens=300, system_prompt="You tell fables.")
    text = await engine.text_to_text(rctx, "A fox finds a lantern.", config)
    assert "lantern" in text or text.strip()
    (request,) = rec.requests
    assert str(request.url) == f"{BASE}/models/gemini-3.8-flash:generateContent"
    assert request.headers["x-goog-api-key"] == sim.key_for("google")
    body = json.loads(request.content)
    assert body["contents"] == [{"role": "user", "parts": [{"text": "A fox finds a lantern."}]}]
    assert body["systemInstruction"] == {"parts": [{"text": "You tell fables."}]}
    assert body["generationConfig"] == {"temperature": 0.4, "maxOutputTokens": 300}


async def test_the_same_prompt_gives_the_same_story(ctx: RunContext) -> None:
    first = await engine.text_to_text(ctx, "A fox finds a lantern.", FLASH)
    assert first == await engine.text_to_text(ctx, "A fox finds a lantern.", FLASH)


async def test_streaming_yields_deltas_that_make_the_whole_text(
    rctx: RunContext, rec: Recorder
) -> None:
    whole = await engine.text_to_text(rctx, "A fox finds a lantern.", FLASH)
    deltas = [d async for d in engine.stream_text(rctx, "A fox finds a lantern.", FLASH)]
    assert len(deltas) > 1 and "".join(deltas) == whole
    streamed = rec.requests[-1]
    assert streamed.url.path.endswith("/models/gemini-3.8-flash:streamGenerateContent")
    assert streamed.url.params["alt"] == "sse"


async def test_the_stream_parameter_streams_and_assembles(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    text = await engine.text_to_text(rctx, "A fox finds a lantern.", gemini(stream=True))
    assert text == await engine.text_to_text(rctx, "A fox finds a lantern.", gemini())
    assert sim.count("google", "streamGenerateContent") == 1
    assert "stream" not in json.loads(rec.requests[0].content).get("generationConfig", {})


async def test_answers_carry_usage_per_modality(sim: Simulator, kite: Image) -> None:
    body = {
        "contents": [
            {
                "parts": [
                    {"text": "what is this?"},
                    {"inlineData": {"mimeType": "image/png", "data": kite_b64(kite)}},
                ]
            }
        ]
    }
    async with sim.client() as client:
        answer = (await post(client, sim, "gemini-3.8-flash:generateContent", body)).json()
    usage = answer["usageMetadata"]
    modalities = {d["modality"] for d in usage["promptTokensDetails"]}
    assert modalities == {"TEXT", "IMAGE"}
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert answer["candidates"][0]["finishReason"] == "STOP"


# -- vision, structured output, transcription ------------------------------------------------
async def test_image_analysis_sends_inline_data_and_asks_for_json(
    rctx: RunContext, rec: Recorder, kite: Image
) -> None:
    analysis = await engine.image_analysis(rctx, kite, FLASH)
    assert isinstance(analysis, ImageAnalysis) and analysis.description
    assert analysis.sources == ["google"]
    body = json.loads(rec.requests[0].content)
    part = body["contents"][0]["parts"][0]["inlineData"]
    assert part["mimeType"] == "image/png"
    assert base64.b64decode(part["data"]) == Path(kite.path).read_bytes()
    assert body["generationConfig"]["responseMimeType"] == "application/json"


async def test_messages_to_object_uses_the_json_schema(rctx: RunContext, rec: Recorder) -> None:
    messages = [
        SystemMessage("You plan scenes."),
        HumanMessage("A fox and a raven at the harbour."),
        AIMessage("Noted."),
        HumanMessage("Now the scene, please."),
    ]
    scene = await engine.messages_to_object(rctx, messages, FLASH, Scene)
    assert isinstance(scene, Scene) and scene.characters
    body = json.loads(rec.requests[0].content)
    assert body["systemInstruction"] == {"parts": [{"text": "You plan scenes."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    assert body["generationConfig"]["responseJsonSchema"] == Scene.model_json_schema()


async def test_messages_to_object_asks_again_once_then_fails_clearly(
    rctx: RunContext, rec: Recorder
) -> None:
    def not_a_scene(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        answer = response.json()
        answer["candidates"][0]["content"]["parts"] = [{"text": '{"title": 3}'}]
        return httpx.Response(200, json=answer)

    rec.rewrite = not_a_scene
    with pytest.raises(InvalidRequestError, match="Scene in two tries") as info:
        await engine.messages_to_object(rctx, [HumanMessage("a fox")], FLASH, Scene)
    assert info.value.code == "invalid_structured_output"
    second = json.loads(rec.requests[1].content)
    assert second["contents"][-1]["parts"][0]["text"].startswith("That answer does not validate")


async def test_audio_to_text_sends_the_audio_inline(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    audio = speech_file(tmp_path / "voice.wav")
    text = await engine.audio_to_text(rctx, audio, FLASH, language="English")
    assert text.strip()
    parts = json.loads(rec.requests[0].content)["contents"][0]["parts"]
    assert "English" in parts[0]["text"]
    assert parts[1]["inlineData"]["mimeType"] == "audio/wav"
    assert base64.b64decode(parts[1]["inlineData"]["data"]) == Path(audio.path).read_bytes()


async def test_audio_gemini_cannot_read_is_refused_before_sending(
    ctx: RunContext, sim: Simulator, tmp_path: Path
) -> None:
    audio = speech_file(tmp_path / "voice.wav").model_copy(update={"mime": "audio/webm"})
    with pytest.raises(InvalidRequestError, match="does not read audio/webm"):
        await engine.audio_to_text(ctx, audio, FLASH)
    assert sim.count("google") == 0


async def test_audio_over_20_mb_is_refused_without_loading_it_into_memory(
    ctx: RunContext, sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long recording (here a sparse 2 GB file) is refused from its size on disk: it is
    not read whole into memory (nor on the event loop) first."""
    big = tmp_path / "long.wav"
    with big.open("wb") as fh:
        fh.truncate(2 * 1024**3)
    audio = speech_file(tmp_path / "voice.wav").model_copy(update={"path": str(big)})
    reads: list[str] = []

    def read_bytes(self: Audio) -> bytes:
        reads.append(self.path)
        return b""

    monkeypatch.setattr(Audio, "read_bytes", read_bytes)
    with pytest.raises(MediaError, match=r"over the 20\.0 MiB"):
        await engine.audio_to_text(ctx, audio, FLASH)
    assert reads == [] and sim.count("google") == 0


# -- images ---------------------------------------------------------------------------------
async def test_a_gemini_image_model_draws_at_the_nearest_aspect_ratio(
    rctx: RunContext, rec: Recorder
) -> None:
    image = await engine.text_to_image(
        rctx, "a lighthouse at dawn", IMAGE, output_name="light.png", width=1600, height=900
    )
    assert Path(image.path).read_bytes()[:4] == b"\x89PNG"
    assert image.width > image.height
    body = json.loads(rec.requests[0].content)
    assert rec.requests[0].url.path.endswith("/models/gemini-3.1-flash-image:generateContent")
    assert body["generationConfig"]["responseModalities"] == ["IMAGE"]
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9"}


async def test_imagen_draws_through_predict_while_it_is_served(clock: Any, tmp_path: Path) -> None:
    sim = Simulator(sleep=clock, wall_clock=lambda: BEFORE_IMAGEN_SHUTDOWN)
    rec = Recorder(sim)
    ctx = make_ctx(httpx.MockTransport(rec), sim.keys(), clock, tmp_path)
    try:
        image = await engine.text_to_image(
            ctx, "a lighthouse", IMAGEN, output_name="i.png", width=768, height=1024
        )
    finally:
        await ctx.aclose()
    assert Path(image.path).read_bytes()[:4] == b"\x89PNG" and image.height > image.width
    body = json.loads(rec.requests[0].content)
    assert rec.requests[0].url.path.endswith("/models/imagen-4.0-generate-001:predict")
    assert body == {
        "instances": [{"prompt": "a lighthouse"}],
        "parameters": {"sampleCount": 1, "includeRaiReason": True, "aspectRatio": "3:4"},
    }


async def test_a_retired_model_is_refused_with_googles_404(ctx: RunContext) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await engine.text_to_image(ctx, "a lighthouse", IMAGEN, output_name="i.png")
    assert info.value.status == 404 and info.value.code == "NOT_FOUND"
    assert "imagen-4.0-generate-001 is not found" in str(info.value)
    with pytest.raises(InvalidRequestError, match=r"gemini-1\.0-pro is not found"):
        await engine.text_to_text(ctx, "hi", gemini("gemini-1.0-pro"))


# -- video ----------------------------------------------------------------------------------
async def test_veo_polls_the_operation_then_downloads_the_video(
    rctx: RunContext, rec: Recorder, sim: Simulator, clock: Any, kite: Image
) -> None:
    video = await engine.image_and_text_to_video(
        rctx, kite, "the kite climbs", VEO, output_name="kite"
    )
    assert isinstance(video, Video) and Path(video.path).name == "kite.mp4"
    info = mp4_info(Path(video.path).read_bytes())
    assert info and video.duration == pytest.approx(8.0, abs=0.6)
    assert clock.waits == [10.0, 10.0]  # the catalog's poll_interval, on the virtual clock
    create, *polls, download = rec.requests
    assert create.url.path.endswith("/models/veo-3.1-generate-preview:predictLongRunning")
    body = json.loads(create.content)
    assert body["parameters"] == {"aspectRatio": "16:9", "durationSeconds": 8}
    assert body["instances"][0]["prompt"] == "the kite climbs"
    assert body["instances"][0]["image"]["mimeType"] == "image/png"
    assert len(polls) == 2 and all("/operations/" in r.url.path for r in polls)
    assert download.url.path.endswith(":download")
    assert download.headers["x-goog-api-key"] == sim.key_for("google")


async def test_veo_polling_is_bounded_on_the_virtual_clock(
    ctx: RunContext, sim: Simulator, clock: Any, kite: Image
) -> None:
    sim.poll_steps = 1000
    config = VEO.with_parameters(poll_interval=5, poll_timeout=30)
    with pytest.raises(ProviderTimeoutError) as info:
        await engine.image_and_text_to_video(ctx, kite, "the kite climbs", config, output_name="v")
    assert sum(clock.waits) == 30.0
    assert str(info.value.job_id).startswith("models/veo-3.1-generate-preview/operations/")
    assert "GET /v1beta/models/veo-3.1-generate-preview/operations/" in str(info.value)


async def test_impossible_veo_settings_fail_before_any_call(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    with pytest.raises(ConfigurationError, match="4, 6, 8 seconds"):
        await engine.image_and_text_to_video(
            ctx, kite, "x", VEO.with_parameters(duration=5), output_name="v"
        )
    with pytest.raises(ConfigurationError, match="16:9 or 9:16"):
        await engine.image_and_text_to_video(
            ctx, kite, "x", VEO.with_parameters(aspect_ratio="1:1"), output_name="v"
        )
    assert sim.count("google") == 0


# -- speech ---------------------------------------------------------------------------------
async def test_speech_is_saved_as_a_wav_as_long_as_the_text(
    rctx: RunContext, rec: Recorder
) -> None:
    text = "The lighthouse keeper counts the ships that never came."
    audio = await engine.text_to_speech(rctx, text, TTS, output_name="narration.mp3", voice="Puck")
    assert Path(audio.path).name == "narration.wav"
    with wave.open(str(audio.path), "rb") as w:
        assert w.getframerate() == 24_000 and w.getsampwidth() == 2 and w.getnchannels() == 1
        assert w.getnframes() / 24_000 == pytest.approx(speech_seconds(text), abs=0.01)
    gen = json.loads(rec.requests[0].content)["generationConfig"]
    assert gen["responseModalities"] == ["AUDIO"]
    assert gen["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Puck"


# -- refusals and empty answers -------------------------------------------------------------
async def test_every_refusal_is_a_content_policy_error(
    ctx: RunContext, sim: Simulator, kite: Image, tmp_path: Path
) -> None:
    sim.add_fault(kind="content_policy", provider="google")
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("SAFETY", lambda: engine.text_to_text(ctx, "hi", FLASH)),
        ("SAFETY", lambda: engine.text_to_text(ctx, "hi", gemini(stream=True))),
        ("IMAGE_SAFETY", lambda: engine.text_to_image(ctx, "x", IMAGE, output_name="i.png")),
        ("rai_media_filtered", lambda: engine.image_and_text_to_video(
            ctx, kite, "x", VEO, output_name="v")),
        ("SAFETY", lambda: engine.text_to_speech(ctx, "hi", TTS, output_name="a.wav")),
    ]  # fmt: skip
    for code, call in calls:
        with pytest.raises(ContentPolicyError) as info:
            await call()
        assert info.value.code == code and "content_policy" in str(info.value)


async def test_imagen_filter_is_a_content_policy_error(clock: Any, tmp_path: Path) -> None:
    sim = Simulator(sleep=clock, wall_clock=lambda: BEFORE_IMAGEN_SHUTDOWN)
    sim.add_fault(kind="content_policy", provider="google")
    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    try:
        with pytest.raises(ContentPolicyError, match="filtered the image") as info:
            await engine.text_to_image(ctx, "x", IMAGEN, output_name="i.png")
    finally:
        await ctx.aclose()
    assert info.value.code == "rai_filtered"


async def test_empty_answers_are_empty_output_errors(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="empty", provider="google")
    with pytest.raises(EmptyOutputError):
        await engine.text_to_text(ctx, "hi", FLASH)
    with pytest.raises(EmptyOutputError, match="without an image"):
        await engine.text_to_image(ctx, "hi", IMAGE, output_name="i.png")


# -- faults, errors, secrets ----------------------------------------------------------------
async def test_resource_exhausted_waits_the_retry_delay_from_the_body(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.add_fault(kind="rate_limit", provider="google", first_n=1, retry_after=None)
    assert await engine.text_to_text(ctx, "hi", FLASH)
    assert clock.waits[:1] == [1.0]  # RetryInfo.retryDelay "1s" (Google sends no header)
    assert sim.count("google") == 2


async def test_rate_limit_beyond_the_cap_fails_naming_quota(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="rate_limit", provider="google", retry_after=3600)
    with pytest.raises(RateLimitError) as info:
        await engine.text_to_text(ctx, "hi", FLASH)
    assert info.value.status == 429 and info.value.code == "RESOURCE_EXHAUSTED"
    assert "quota" in str(info.value)


async def test_unavailable_and_internal_are_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="unavailable", provider="google", first_n=1)
    sim.add_fault(kind="server_error", provider="google", first_n=1)
    assert await engine.text_to_text(ctx, "hi", FLASH)
    assert sim.count("google") == 3


async def test_a_malformed_stream_is_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="malformed", provider="google", first_n=1)
    deltas = [d async for d in engine.stream_text(ctx, "hi", FLASH)]
    assert deltas and sim.count("google", "streamGenerateContent") == 2


async def test_wrong_and_missing_keys(sim: Simulator, clock: Any, tmp_path: Path) -> None:
    wrong = "AIzaSyWRONGwrongWRONGwrongWRONG0123456"
    ctx = make_ctx(sim.transport(), sim.keys(google_api_key=wrong), clock, tmp_path)
    try:
        with pytest.raises(AuthenticationError) as info:
            await engine.text_to_text(ctx, "hi", FLASH)
    finally:
        await ctx.aclose()
    assert info.value.status == 400 and info.value.code == "API_KEY_INVALID"
    assert wrong not in str(info.value)
    async with sim.client() as client:
        response = await client.post(f"{BASE}/models/gemini-3.8-flash:generateContent", json={})
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="GEMINI_API_KEY"):
            await engine.text_to_text(ctx, "hi", FLASH)


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "AIzaSySECRETwrongkey98765432100000000"
    right = sim.key_for("google")
    bad = make_ctx(sim.transport(), sim.keys(google_api_key=wrong), clock, tmp_path)
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    image = photo(tmp_path / "k.png")
    audio = speech_file(tmp_path / "a.wav")
    calls: list[Callable[[RunContext], Any]] = [
        lambda ctx: engine.text_to_text(ctx, "hi", FLASH),
        lambda ctx: engine.text_to_text(ctx, "hi", gemini(stream=True)),
        lambda ctx: engine.image_analysis(ctx, image, FLASH),
        lambda ctx: engine.messages_to_object(ctx, [HumanMessage("a fox")], FLASH, Scene),
        lambda ctx: engine.audio_to_text(ctx, audio, FLASH),
        lambda ctx: engine.text_to_image(ctx, "x", IMAGE, output_name="i.png"),
        lambda ctx: engine.image_and_text_to_video(ctx, image, "x", VEO, output_name="v"),
        lambda ctx: engine.text_to_speech(ctx, "hi", TTS, output_name="s.wav"),
    ]
    failures: list[Exception] = []
    try:
        for call in calls:
            failures += await failures_under_faults(
                sim, "google", bad, good, call, faults=(*FAULT_CLASSES, "unavailable")
            )
    finally:
        await bad.aclose()
        await good.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert sum(isinstance(f, ContentPolicyError) for f in failures) == len(calls)
    assert any(isinstance(f, ProviderTimeoutError) for f in failures)
    assert any(isinstance(f, TransientProviderError) for f in failures)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)


async def test_keys_come_from_gemini_or_google_api_key_google_first() -> None:
    keys = KeysModel.from_env({"GEMINI_API_KEY": "gemini-key"})
    assert keys.require("google") == "gemini-key"
    both = KeysModel.from_env({"GEMINI_API_KEY": "gemini-key", "GOOGLE_API_KEY": "google-key"})
    assert both.require("google") == "google-key"
    assert KeysModel.from_env({}).base_url("google") == "https://generativelanguage.googleapis.com"
    urls = KeysModel.from_env(
        {"GOOGLE_GEMINI_BASE_URL": "http://sdk", "GEMINI_BASE_URL": "http://a"}
    )
    assert urls.base_url("google") == "http://a"
    sdk = KeysModel.from_env({"GOOGLE_GEMINI_BASE_URL": "http://sdk/"})
    assert sdk.base_url("google") == "http://sdk"


# -- the model list -------------------------------------------------------------------------
async def test_list_models_follows_page_tokens(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    names = await engine.list_models(rctx)
    assert "gemini-3.8-flash" in names and "veo-3.1-generate-preview" in names
    assert "imagen-4.0-generate-001" not in names  # retired: no longer listed
    async with sim.client() as client:
        first = (
            await client.get(f"{BASE}/models", params={"pageSize": 3}, headers=key_header(sim))
        ).json()
    assert len(first["models"]) == 3 and first["nextPageToken"]
    assert all(r.url.path.endswith("/v1beta/models") for r in rec.requests)


async def test_per_model_limits_apply_to_the_model_in_the_path(clock: Any, tmp_path: Path) -> None:
    sim = Simulator(sleep=clock, limits={"google/gemini-3.8-flash": {"rpm": 1}})
    async with sim.client() as client:
        url = f"{BASE}/models/gemini-3.8-flash:generateContent"
        body = {"contents": [{"parts": [{"text": "hi"}]}]}
        assert (await client.post(url, json=body, headers=key_header(sim))).status_code == 200
        refused = await client.post(url, json=body, headers=key_header(sim))
        other = await client.post(
            f"{BASE}/models/gemini-3.5-flash:generateContent", json=body, headers=key_header(sim)
        )
    assert refused.status_code == 429 and other.status_code == 200
    error = refused.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED" and "model: gemini-3.8-flash" in error["message"]
    delay = [d for d in error["details"] if d["@type"].endswith("RetryInfo")]
    assert delay and delay[0]["retryDelay"].endswith("s")


async def test_googles_429_says_when_to_retry_in_its_body_only_as_google_does(
    clock: Any, tmp_path: Path
) -> None:
    """Gemini sends no Retry-After header (the wait is the body's RetryInfo.retryDelay), so
    neither the simulated quota nor a rate_limit fault with a wait sends one: the engine is
    tested reading the body, as it must with the real API."""
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    url = f"{BASE}/models/gemini-3.8-flash:generateContent"
    limited = Simulator(sleep=clock, limits={"google": {"rpm": 1}})
    faulty = Simulator(sleep=clock, faults=parse_faults("rate_limit@google:retry_after=7"))
    answers = []
    for sim, calls in ((limited, 2), (faulty, 1)):
        async with sim.client() as client:
            for _ in range(calls):
                answer = await client.post(url, json=body, headers=key_header(sim))
        answers.append(answer)
    for answer in answers:
        assert answer.status_code == 429 and "retry-after" not in answer.headers
        assert engine.retry_delay(answer) is not None
    assert engine.retry_delay(answers[1]) == 7.0


async def test_the_engine_waits_out_the_simulated_quota(clock: Any, tmp_path: Path) -> None:
    sim = Simulator(sleep=clock, clock=lambda: clock.now, limits={"google": {"rps": 1}})
    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    try:
        first = await engine.text_to_text(ctx, "a fox", FLASH)
        second = await engine.text_to_text(ctx, "a raven", FLASH)
    finally:
        await ctx.aclose()
    assert first and second
    assert sim.rate_limited("google") == 1 and sim.count("google") == 3
    assert 1.0 in clock.waits  # the 429's wait, then the retry was admitted


async def test_token_limits_count_gemini_bodies(clock: Any, tmp_path: Path) -> None:
    body = {
        "contents": [
            {"parts": [{"text": "x" * 400}, {"inlineData": {"data": "", "mimeType": ""}}]}
        ],
        "systemInstruction": {"parts": [{"text": "y" * 40}]},
        "generationConfig": {"maxOutputTokens": 50},
    }
    assert engine.estimate_tokens(body) == 100 + 258 + 10 + 50
    sim = Simulator(sleep=clock, clock=lambda: clock.now, limits={"google": {"tpm": 150}})
    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    try:
        for _ in range(2):  # ~100 input tokens each, after the 429 the window has room again
            assert await engine.text_to_text(ctx, "a fox " * 66, FLASH)
    finally:
        await ctx.aclose()
    assert sim.rate_limited("google") == 1 and sum(clock.waits) >= 1


async def test_simulated_latency_is_waited_on_the_virtual_clock(clock: Any, tmp_path: Path) -> None:
    sim = Simulator(sleep=clock, latency={"google": 1.5, "google:streamGenerateContent": 0.5})
    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    try:
        await engine.text_to_text(ctx, "a fox", FLASH)
        await engine.text_to_text(ctx, "a fox", gemini(stream=True))
    finally:
        await ctx.aclose()
    assert clock.waits == [1.5, 2.0]


async def test_fake_refuses_bad_bodies_in_googles_words(sim: Simulator) -> None:
    async with sim.client() as client:
        unknown = await post(client, sim, "gemini-3.8-flash:generateContent", {"prompt": "hi"})
        empty = await post(client, sim, "gemini-3.8-flash:generateContent", {"contents": []})
        speech = await post(
            client, sim, "gemini-3.8-flash-tts:generateContent",
            {"contents": [{"parts": [{"text": "hi"}]}]},
        )  # fmt: skip
    assert unknown.status_code == 400
    assert 'Unknown name "prompt"' in unknown.json()["error"]["message"]
    assert empty.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "AUDIO" in speech.json()["error"]["message"]


# -- one-node flows and the seed API --------------------------------------------------------
async def test_one_node_flows_run_each_kind(
    sim: Simulator, ctx: RunContext, tmp_path: Path, kite: Image
) -> None:
    audio = speech_file(tmp_path / "voice.wav")
    cases: list[tuple[str, str, dict[str, Any], dict[str, Any], type]] = [
        ("text_to_text", "google-gemini-flash", {"text": "text"}, {"text": "a fox"}, str),
        ("analyze_image", "google-gemini-flash", {"image": "image"}, {"image": kite.path},
         ImageAnalysis),
        ("audio_to_text", "google-gemini-flash", {"audio": "audio"}, {"audio": audio.path}, str),
        ("text_to_image", "google-gemini-image", {"prompt": "text"}, {"prompt": "a kite"}, Image),
        ("text_to_speech", "google-gemini-tts", {"text": "text"}, {"text": "hello there"}, Audio),
        ("image_and_text_to_video", "google-veo", {"image": "image", "text": "text"},
         {"image": kite.path, "text": "it climbs"}, Video),
    ]  # fmt: skip
    for kind, model, ports, values, expected in cases:
        flow = Flow(f"one_{kind}")
        wired = {port: flow.input(port, ptype) for port, ptype in ports.items()}
        node = flow.add("node", kind, wired, model=model)
        out_port = {"text_to_text": "text", "analyze_image": "analysis", "audio_to_text": "text",
                    "text_to_image": "image", "text_to_speech": "audio",
                    "image_and_text_to_video": "video"}[kind]  # fmt: skip
        flow.output("out", node[out_port])
        result = await flow.ainvoke(values, out_dir=tmp_path / kind, ctx=ctx)
        assert isinstance(result.outputs["out"], expected), kind
    flow = Flow("one_object")
    text = flow.input("text", "text")
    node = flow.add(
        "scene", "messages_to_object", {"messages": text}, model="google-gemini-flash",
        params={"schema": Scene.model_json_schema()},
    )  # fmt: skip
    flow.output("scene", node["object"])
    result = await flow.ainvoke({"text": "a fox"}, out_dir=tmp_path / "object", ctx=ctx)
    assert result.outputs["scene"]["characters"]


async def test_the_seed_api_works_with_google_model_configs(
    sim: Simulator, clock: Any, tmp_path: Path, kite: Image
) -> None:
    keys = sim.keys()
    async with sim.client() as client:
        assert await text_to_text_inference(client, "a fox", FLASH, keys)
        analysis = await image_analysis_inference(
            client, str(kite.path), None, FLASH, keys, azure_model_config=None
        )
        assert analysis["description"]
        scene = await messages_to_object_inference(
            client, [{"role": "user", "content": "a fox"}], FLASH, keys, Scene
        )
        assert isinstance(scene, Scene)
        audio = speech_file(tmp_path / "v.wav")
        assert await audio_to_text_inference(
            client, str(audio.path), "en", keys, model_config=FLASH
        )
        drawn = await text_to_image_file_inference(
            client, "a kite", str(tmp_path / "kite_out.png"), IMAGE, keys
        )
        assert drawn and Path(drawn).exists()
        spoken = await text_to_speech_file_inference(
            client, "hello there", str(tmp_path / "hello.wav"), TTS, keys
        )
        assert Path(spoken).suffix == ".wav"
        sim.sleep = clock
        video = await video_with_virtual_waits(client, kite, keys, tmp_path, clock)
        assert video is not None and Path(video).suffix == ".mp4"


async def video_with_virtual_waits(
    client: httpx.AsyncClient, kite: Image, keys: KeysModel, tmp_path: Path, clock: Any
) -> str | None:
    """The seed's video function with the poll interval on the virtual clock (the seed API
    builds its own run context, so the wait is shortened through the model config)."""
    config = VEO.with_parameters(poll_interval=0.001, poll_timeout=0.01)
    import calliope_graph.inference as seed

    original = seed._context

    def virtual(httpx_client: httpx.AsyncClient, k: KeysModel, out: Any = ".") -> RunContext:
        ctx = original(httpx_client, k, out)
        ctx.sleep = clock
        return ctx

    seed._context = virtual  # type: ignore[assignment]
    try:
        return await image_and_text_to_video_file_inference(
            client, str(kite.path), "it climbs", str(tmp_path / "clip.mp4"), config, keys
        )
    finally:
        seed._context = original


# -- helpers --------------------------------------------------------------------------------
def key_header(sim: Simulator) -> dict[str, str]:
    return {"x-goog-api-key": sim.key_for("google")}


def kite_b64(image: Image) -> str:
    return base64.b64encode(Path(image.path).read_bytes()).decode("ascii")


async def post(
    client: httpx.AsyncClient, sim: Simulator, path: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(f"{BASE}/models/{path}", json=body, headers=key_header(sim))


# -- the command line -----------------------------------------------------------------------
#: (kind, catalog model, {port: input type}, output port, extra params)
CLI_KINDS: list[tuple[str, str, dict[str, str], str, dict[str, Any]]] = [
    ("text_to_text", "google-gemini-flash", {"text": "text"}, "text", {}),
    ("text_to_text", "google-gemini-flash", {"text": "text"}, "text", {"stream": True}),
    ("analyze_image", "google-gemini-flash", {"image": "image"}, "analysis", {}),
    ("audio_to_text", "google-gemini-flash", {"audio": "audio"}, "text", {}),
    ("messages_to_object", "google-gemini-flash", {"messages": "messages"}, "object",
     {"schema": Scene.model_json_schema()}),
    ("text_to_image", "google-gemini-image", {"prompt": "text"}, "image", {}),
    ("text_to_speech", "google-gemini-tts", {"text": "text"}, "audio", {}),
    ("image_and_text_to_video", "google-veo", {"image": "image", "text": "text"}, "video", {}),
]  # fmt: skip


def one_node_yaml(path: Path, kind: str, model: str, ports: dict[str, str], out: str,
                  extra: dict[str, Any]) -> Path:  # fmt: skip
    """A one-node flow file: each port a flow input, the node's output the flow's."""
    stream = extra.pop("stream", None)
    model_ref: Any = model
    if stream:  # an inline model config: the catalog's Flash with streaming on
        model_ref = FLASH.with_parameters(stream=True).model_dump(mode="json")
    spec = {
        "name": f"one_{kind}",
        "inputs": {port: {"type": ptype} for port, ptype in ports.items()},
        "nodes": {
            "node": {
                "kind": kind,
                "model": model_ref,
                "params": extra,
                "inputs": {port: f"inputs.{port}" for port in ports},
            }
        },
        "outputs": {"out": f"node.{out}"},
    }
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


@pytest.mark.parametrize(("kind", "model", "ports", "out", "extra"), CLI_KINDS)
def test_a_one_node_flow_of_each_kind_runs_from_the_cli_with_simulate(
    kind: str, model: str, ports: dict[str, str], out: str, extra: dict[str, Any],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from click.testing import CliRunner

    from calliope_graph.cli import main

    waits: list[float] = []

    async def virtual(seconds: float) -> None:  # Veo's polls on a virtual clock
        waits.append(seconds)

    create = RunContext.create.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        RunContext, "create", classmethod(lambda cls, *a, **k: create(cls, *a, sleep=virtual, **k))
    )
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    values = {
        "text": "a fox finds a lantern",
        "messages": "a fox and a raven at the harbour",
        "image": str(photo(tmp_path / "kite.png").path),
        "audio": str(speech_file(tmp_path / "voice.wav").path),
    }
    flow = one_node_yaml(tmp_path / "flow.json", kind, model, ports, out, dict(extra))
    args = ["run", str(flow), "--simulate", "--out", str(tmp_path / "out")]
    for port, ptype in ports.items():
        args += ["--input", f"{port}={values[ptype]}"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "out:" in result.stdout
    if kind == "image_and_text_to_video":
        assert waits and all(w == 10.0 for w in waits)
        assert list((tmp_path / "out").rglob("*.mp4"))


def test_cli_faults_reach_the_google_fake(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from calliope_graph.cli import EXIT_CODES, main

    flow = one_node_yaml(
        tmp_path / "flow.json", "text_to_text", "google-gemini-flash", {"text": "text"}, "text", {}
    )
    result = CliRunner().invoke(
        main,
        ["run", str(flow), "--simulate", "--faults", "content_policy@google", "--input",
         "text=hi", "--out", str(tmp_path / "out")],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["run_failed"]
    assert "content_policy" in result.output or "blocked the prompt" in result.output


async def test_simulate_prints_the_gemini_variables(sim: Simulator) -> None:
    from calliope_graph.simulate.server import serve

    lines: list[str] = []
    task = asyncio.create_task(serve(sim, echo=lines.append))
    while "# ready" not in lines:
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines if "export" in line)
    assert exports["GEMINI_API_KEY"] == sim.key_for("google")
    assert exports["GEMINI_BASE_URL"].endswith("/google")


async def test_simulate_exports_win_over_a_google_api_key_already_in_the_shell(
    sim: Simulator,
) -> None:
    """A user whose shell holds a real GOOGLE_API_KEY pastes the simulator's exports: the
    project (and google-genai, which read GOOGLE_API_KEY first) must then use the fake key
    and the loopback server, not send the real key to it."""
    from calliope_graph.simulate.server import SimulatorServer

    async with SimulatorServer(sim, port=0) as server:
        exports = server.environment()
    shell = {"GOOGLE_API_KEY": "real-google-key", "GOOGLE_GEMINI_BASE_URL": "https://x.test"}
    keys = KeysModel.from_env({**shell, **exports})
    assert keys.require("google") == sim.key_for("google")
    assert keys.base_url("google") == exports["GEMINI_BASE_URL"]
    # what google-genai reads (GOOGLE_API_KEY first; GOOGLE_GEMINI_BASE_URL for its host)
    assert exports["GOOGLE_API_KEY"] == sim.key_for("google")
    assert exports["GOOGLE_GEMINI_BASE_URL"] == exports["GEMINI_BASE_URL"]


@pytest.mark.parametrize("redirected", [True, False])
async def test_the_gemini_key_never_reaches_another_host_when_a_veo_video_is_downloaded(
    clock: Any, tmp_path: Path, kite: Image, redirected: bool
) -> None:
    """Veo's file URI is fetched with the key on Google's host only: not when the operation
    names another host, nor after a redirect to one (httpx strips only Authorization)."""
    from calliope_graph.testing import mp4_bytes

    secret = "AIza-real-gemini-key"
    seen: dict[str, str | None] = {}
    api = f"{BASE}/files/abc:download?alt=media"
    cdn = "https://video-cdn.example.net/abc.mp4"
    operation = "models/veo-3.1-generate-preview/operations/op1"

    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        seen[request.url.host + request.url.path] = request.headers.get("x-goog-api-key")
        if url.endswith(":predictLongRunning"):
            return httpx.Response(200, json={"name": operation})
        if url.endswith(operation):
            uri = api if redirected else cdn
            sample = {"video": {"uri": uri}}
            return httpx.Response(
                200,
                json={
                    "name": operation,
                    "done": True,
                    "response": {"generateVideoResponse": {"generatedSamples": [sample]}},
                },
            )
        if url == api:
            return httpx.Response(302, headers={"location": cdn})
        if url == cdn:
            return httpx.Response(200, content=mp4_bytes("a kite", seconds=1.0))
        return httpx.Response(404)

    ctx = make_ctx(
        httpx.MockTransport(handler), KeysModel(google_api_key=secret), clock, tmp_path / "o"
    )
    try:
        video = await engine.image_and_text_to_video(ctx, kite, "it flies", VEO, output_name="v")
    finally:
        await ctx.aclose()
    assert Path(video.path).stat().st_size > 0
    assert seen["video-cdn.example.net/abc.mp4"] is None
    if redirected:
        assert seen["generativelanguage.googleapis.com/v1beta/files/abc:download"] == secret


async def test_a_failed_veo_operations_message_never_shows_the_key(
    clock: Any, tmp_path: Path, kite: Image
) -> None:
    """An operation's error message is free text: a key echoed there is masked."""
    secret = "AIza-real-gemini-key-2"
    operation = "models/veo-3.1-generate-preview/operations/op2"

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url).endswith(":predictLongRunning"):
            return httpx.Response(200, json={"name": operation})
        message = f"Backend failed for request with key {secret}"
        return httpx.Response(
            200, json={"name": operation, "done": True, "error": {"code": 13, "message": message}}
        )

    ctx = make_ctx(
        httpx.MockTransport(handler), KeysModel(google_api_key=secret), clock, tmp_path / "o"
    )
    try:
        with pytest.raises(TransientProviderError) as info:
            await engine.image_and_text_to_video(ctx, kite, "it flies", VEO, output_name="v")
    finally:
        await ctx.aclose()
    assert "Backend failed" in str(info.value) and secret not in str(info.value)
