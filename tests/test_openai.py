"""The OpenAI engines against the OpenAI fake: every conversion, every fault class."""

from __future__ import annotations

import io
import json
import logging
import math
import struct
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder, assert_secrets_absent, failures_under_faults, make_ctx
from langchain_core.messages import HumanMessage, SystemMessage
from PIL import Image as PILImage
from pydantic import BaseModel, Field

from calliope_graph.config import (
    InferenceModel,
    InferenceModelProvider,
    KeysModel,
    ModelConfig,
    catalog,
)
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine, openai_media
from calliope_graph.engines import openai as engine
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
from calliope_graph.media import Audio, Image, MediaStore
from calliope_graph.simulate import Simulator
from calliope_graph.simulate.openai import mask_key
from calliope_graph.testing import describe_image, image_bytes

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]
API = "https://api.openai.com/v1"


@pytest.fixture(autouse=True)
def _legacy_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests exercise wire shapes of models OpenAI has shut down (DALL·E's ``url``
    answers and sizes, gpt-image-1) that OpenAI-compatible servers still speak: the fake
    answers them here. Refusing retired models is tested in tests/test_lifecycle.py."""
    from calliope_graph.simulate.openai import OpenAIFake

    monkeypatch.setattr(OpenAIFake, "retired_models", frozenset())


@pytest.fixture
def rec(sim: Simulator) -> Recorder:
    """Rewrites touch only OpenAI's answers (not downloads from other hosts)."""
    return Recorder(sim, host="api.openai.com")


def with_content(content: str | None, **message: Any) -> Callable[..., httpx.Response]:
    """A rewrite giving the chat answer ``content`` (other message fields as given)."""

    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if not request.url.path.endswith("/chat/completions") or response.status_code != 200:
            return response
        body = response.json()
        body["choices"][0]["message"].update({"content": content, **message})
        return httpx.Response(200, json=body)

    return rewrite


def wav_file(path: Path, seconds: float = 0.5) -> Audio:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        frames = int(16000 * seconds)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 16000)))
                for i in range(frames)
            )
        )
    path.write_bytes(buf.getvalue())
    return Audio.open(path)


def photo(path: Path, fmt: str = "PNG") -> Image:
    path.write_bytes(image_bytes("a red kite over a harbour", 320, 240, fmt))
    return Image.open(path)


def openai_config(model: str, **params: Any) -> ModelConfig:
    return ModelConfig(
        slug=f"test-{model}",
        model_parameters=params,
        model=InferenceModel(
            slug=model, provider=InferenceModelProvider.OPENAI, provider_model_name=model
        ),
    )


class Character(BaseModel):
    name: str
    role: str = "hero"


class Scene(BaseModel):
    """A story scene."""

    setting: str
    mood: str
    characters: list[Character]
    lead: Character = Field(description="the main character")
    weather: str | None = None


# -- registration ---------------------------------------------------------------------------
def test_every_openai_conversion_is_registered() -> None:
    expected = {
        Conversion.TEXT_TO_TEXT: engine.text_to_text,
        Conversion.TEXT_TO_IMAGE: openai_media.text_to_image,
        Conversion.IMAGE_ANALYSIS: openai_media.image_analysis,
        Conversion.AUDIO_TO_TEXT: openai_media.audio_to_text,
        Conversion.MESSAGES_TO_OBJECT: engine.messages_to_object,
    }
    for conversion, fn in expected.items():
        assert get_engine(conversion, "openai") is fn


# -- text -> text ---------------------------------------------------------------------------
async def test_chat_completion_sends_model_and_parameters(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    config = catalog.get("openai-gpt-4o")
    text = await engine.text_to_text(rctx, "Tell me about the lighthouse keeper", config)
    assert len(text.split()) > 5
    (body,) = rec.bodies("/chat/completions")
    assert body["model"] == "gpt-4o"
    assert body["messages"] == [{"role": "user", "content": "Tell me about the lighthouse keeper"}]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 500
    assert rec.requests[0].headers["authorization"] == f"Bearer {sim.key_for('openai')}"
    assert sim.calls[("openai", "chat.completions")] == 1


async def test_chat_is_deterministic_and_takes_a_system_prompt(
    rctx: RunContext, rec: Recorder
) -> None:
    config = openai_config("gpt-4o-mini", system_prompt="You are a poet.", unknown_knob=3)
    first = await engine.text_to_text(rctx, "the sea", config)
    second = await engine.text_to_text(rctx, "the sea", config)
    assert first == second
    body = rec.bodies("/chat/completions")[0]
    assert body["messages"][0] == {"role": "system", "content": "You are a poet."}
    assert "unknown_knob" not in body and "system_prompt" not in body


async def test_reasoning_models_get_max_completion_tokens(rctx: RunContext, rec: Recorder) -> None:
    await engine.text_to_text(rctx, "hello", openai_config("o3-mini", max_tokens=50))
    body = rec.bodies("/chat/completions")[0]
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body


async def test_legacy_completions_endpoint(rctx: RunContext, rec: Recorder, sim: Simulator) -> None:
    config = catalog.get("openai-gpt-3.5-instruct")
    text = await engine.text_to_text(rctx, "Once upon a time", config)
    assert text.strip()
    (body,) = rec.bodies("/v1/completions")
    assert body == {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "Once upon a time",
        "temperature": 0.8,
        "max_tokens": 256,
    }
    assert sim.calls[("openai", "completions")] == 1
    assert sim.calls[("openai", "chat.completions")] == 0


async def test_chat_model_on_legacy_endpoint_is_an_invalid_request(
    rctx: RunContext, sim: Simulator
) -> None:
    config = catalog.get("openai-gpt-3.5-instruct")
    chat_model = config.model.model_copy(update={"provider_model_name": "gpt-4o"})
    with pytest.raises(InvalidRequestError, match="chat model") as info:
        await engine.text_to_text(rctx, "hi", config.model_copy(update={"model": chat_model}))
    assert info.value.status == 404
    assert sim.count("openai") == 1  # not retried


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"content": None, "refusal": "I can't help with that."}, ContentPolicyError),
        ({"content": None}, EmptyOutputError),
    ],
)
async def test_refusal_and_missing_text(
    rctx: RunContext, rec: Recorder, message: dict[str, Any], error: type[Exception]
) -> None:
    rec.rewrite = with_content(**message)
    with pytest.raises(error):
        await engine.text_to_text(rctx, "hi", catalog.get("openai-gpt-4o"))


async def test_no_choices_is_empty_output(rctx: RunContext, rec: Recorder) -> None:
    def no_choices(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return httpx.Response(200, json={**response.json(), "choices": []})

    rec.rewrite = no_choices
    with pytest.raises(EmptyOutputError, match="no choices"):
        await engine.text_to_text(rctx, "hi", catalog.get("openai-gpt-4o"))


async def test_chat_content_filter_is_a_content_policy_error(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="content_policy", provider="openai", pattern="dragon")
    assert await engine.text_to_text(ctx, "a quiet garden", catalog.get("openai-gpt-4o"))
    with pytest.raises(ContentPolicyError, match="content_filter"):
        await engine.text_to_text(ctx, "a dragon attack", catalog.get("openai-gpt-4o"))
    assert sim.count("openai") == 2  # refusals are not retried


# -- text -> image --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "width", "height", "size"),
    [
        ("dall-e-2", 300, 300, "256x256"),
        ("dall-e-2", 400, 400, "512x512"),
        ("dall-e-2", 1920, 1080, "1024x1024"),
        ("dall-e-3", 1920, 1080, "1792x1024"),
        ("dall-e-3", 600, 1000, "1024x1792"),
        ("dall-e-3", 800, 600, "1024x1024"),
        ("gpt-image-1", 1600, 1000, "1536x1024"),
        ("gpt-image-1", 512, None, "1024x1024"),
        ("my-local-model", 640, 480, "640x480"),
        ("dall-e-3", None, None, None),
    ],
)
def test_image_size_maps_to_the_nearest_accepted_size(
    model: str, width: int | None, height: int | None, size: str | None
) -> None:
    assert openai_media.image_size(model, width, height) == size


@pytest.mark.parametrize(
    ("config_name", "width", "height", "expected"),
    [
        ("openai-dall-e-2", 300, 300, (256, 256)),
        ("openai-dall-e-3", 1920, 1080, (1792, 1024)),
        ("openai-gpt-image-1", 1000, 1500, (1024, 1536)),
    ],
)
async def test_text_to_image_writes_a_real_png_of_the_mapped_size(
    rctx: RunContext,
    rec: Recorder,
    sim: Simulator,
    config_name: str,
    width: int,
    height: int,
    expected: tuple[int, int],
) -> None:
    image = await openai_media.text_to_image(
        rctx,
        "a lighthouse at dusk",
        catalog.get(config_name),
        output_name="frames/frame.png",
        width=width,
        height=height,
    )
    path = Path(image.path)
    assert path.is_file() and path.name == "frame.png"
    with PILImage.open(path) as im:
        assert im.format == "PNG" and im.size == expected
    assert (image.width, image.height) == expected
    (body,) = rec.bodies("/images/generations")
    assert body["size"] == f"{expected[0]}x{expected[1]}"
    if config_name == "openai-gpt-image-1":
        assert "response_format" not in body
    else:
        assert body["response_format"] == "b64_json"
    assert sim.calls[("openai", "images.generations")] == 1


async def test_text_to_image_url_answer_is_downloaded_without_the_key(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    config = catalog.get("openai-dall-e-3").with_parameters(response_format="url")
    image = await openai_media.text_to_image(rctx, "a fox in snow", config, output_name="fox.png")
    assert (image.width, image.height) == (1024, 1024)  # provider default size
    cdn = [r for r in rec.requests if r.url.host != "api.openai.com"]
    assert len(cdn) == 1 and cdn[0].method == "GET"
    assert cdn[0].url.host.endswith("blob.core.windows.net")
    assert "authorization" not in cdn[0].headers
    assert sorted(p.name for p in Path(image.path).parent.iterdir()) == ["fox.png"]


async def test_text_to_image_url_answer_over_the_cap_is_refused(
    rctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_media, "MAX_IMAGE_BYTES", 1000)
    config = catalog.get("openai-dall-e-2").with_parameters(response_format="url")
    with pytest.raises(MediaError, match="download cap"):
        await openai_media.text_to_image(rctx, "a fox", config, output_name="fox.png")


async def test_gpt_image_jpeg_output_gets_the_right_extension(rctx: RunContext) -> None:
    config = catalog.get("openai-gpt-image-1").with_parameters(output_format="jpeg")
    image = await openai_media.text_to_image(rctx, "a harbour", config, output_name="harbour.png")
    assert image.mime == "image/jpeg" and image.path.endswith("harbour.jpg")


@pytest.mark.parametrize(
    ("config_name", "code"),
    [("openai-dall-e-2", "content_policy_violation"), ("openai-gpt-image-1", "moderation_blocked")],
)
async def test_image_content_policy_is_not_retried(
    ctx: RunContext, sim: Simulator, config_name: str, code: str
) -> None:
    sim.add_fault(kind="content_policy", provider="openai", endpoint="images")
    with pytest.raises(ContentPolicyError) as info:
        await openai_media.text_to_image(
            ctx, "a battle", catalog.get(config_name), output_name="battle.png"
        )
    assert info.value.code == code and info.value.status == 400
    assert "censor_text" in str(info.value)  # says what to do
    assert sim.count("openai", "images") == 1


# -- image analysis -------------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
async def test_image_analysis_sends_a_data_url_and_parses_json(
    rctx: RunContext, rec: Recorder, tmp_path: Path, fmt: str, mime: str
) -> None:
    image = photo(tmp_path / f"kite.{fmt.lower()}", fmt)
    analysis = await openai_media.image_analysis(rctx, image, catalog.get("openai-gpt-4o"))
    seen = describe_image(image.read_bytes())
    assert seen["caption"] in analysis.description
    assert analysis.captions == [seen["caption"]]
    assert analysis.tags and analysis.objects == seen["objects"]
    assert analysis.sources == ["openai"]
    (body,) = rec.bodies("/chat/completions")
    assert body["response_format"] == {"type": "json_object"}
    parts = body["messages"][0]["content"]
    assert parts[1]["image_url"]["url"].startswith(f"data:{mime};base64,")
    assert "JSON" in parts[0]["text"]


async def test_image_analysis_tolerates_a_fenced_answer(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    answer = {"description": "A kite.", "captions": "a kite, a harbour", "tags": ["sky"]}
    rec.rewrite = with_content(f"Here you go:\n```json\n{json.dumps(answer)}\n```")
    analysis = await openai_media.image_analysis(
        rctx, photo(tmp_path / "k.png"), catalog.get("openai-gpt-4o")
    )
    assert analysis.description == "A kite."
    assert analysis.captions == ["a kite", "a harbour"]


async def test_image_analysis_malformed_answer_is_asked_again(
    rctx: RunContext, rec: Recorder, sim: Simulator, tmp_path: Path
) -> None:
    calls = 0

    def once(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        nonlocal calls
        calls += 1
        return with_content("I see a kite!")(request, response) if calls == 1 else response

    rec.rewrite = once
    analysis = await openai_media.image_analysis(
        rctx, photo(tmp_path / "k.png"), catalog.get("openai-gpt-4o")
    )
    assert analysis.description and sim.count("openai") == 2

    rec.rewrite = with_content("still not JSON")
    with pytest.raises(TransientProviderError, match="JSON object") as info:
        await openai_media.image_analysis(
            rctx, photo(tmp_path / "k.png"), catalog.get("openai-gpt-4o")
        )
    assert info.value.code == "malformed_output"


# -- audio -> text --------------------------------------------------------------------------
async def test_whisper_transcribes_a_wav(
    rctx: RunContext, rec: Recorder, sim: Simulator, tmp_path: Path
) -> None:
    audio = wav_file(tmp_path / "voice.wav")
    text = await openai_media.audio_to_text(
        rctx, audio, catalog.get("openai-whisper-1"), language="en"
    )
    assert len(text.split()) > 3
    (request,) = rec.requests
    assert request.url == f"{API}/audio/transcriptions"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = request.content
    assert b'name="file"; filename="voice.wav"' in body
    assert b"Content-Type: audio/wav" in body
    assert audio.read_bytes() in body  # byte-exact upload
    for field, value in (
        ("model", b"whisper-1"),
        ("language", b"en"),
        ("response_format", b"json"),
    ):
        assert f'name="{field}"'.encode() + b"\r\n\r\n" + value in body
    assert sim.calls[("openai", "audio.transcriptions")] == 1


async def test_whisper_without_language_and_too_short_audio(
    ctx: RunContext, tmp_path: Path
) -> None:
    config = catalog.get("openai-whisper-1")
    assert await openai_media.audio_to_text(ctx, wav_file(tmp_path / "a.wav"), config)
    with pytest.raises(InvalidRequestError, match="too short"):
        await openai_media.audio_to_text(ctx, wav_file(tmp_path / "b.wav", seconds=0.05), config)


# -- messages -> object ---------------------------------------------------------------------
def test_strict_schema_requires_everything_and_forbids_extras() -> None:
    schema = engine.strict_json_schema(Scene)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["setting", "mood", "characters", "lead", "weather"]
    character = schema["$defs"]["Character"]
    assert character["required"] == ["name", "role"] and character["additionalProperties"] is False
    # a $ref with a sibling description is inlined (strict mode refuses the combination)
    lead = schema["properties"]["lead"]
    assert "$ref" not in lead and lead["additionalProperties"] is False
    assert lead["description"] == "the main character"
    assert "default" not in json.dumps(schema)
    assert Scene.model_json_schema()["required"] == ["setting", "mood", "characters", "lead"]


@pytest.mark.parametrize(
    "messages",
    [
        [SystemMessage("Extract the scene as JSON."), HumanMessage("A fox at a harbour.")],
        [HumanMessage("A fox at a harbour.")],
    ],
)
async def test_messages_to_object_with_strict_schema(
    rctx: RunContext, rec: Recorder, messages: list[Any]
) -> None:
    scene = await engine.messages_to_object(rctx, messages, catalog.get("openai-gpt-4o"), Scene)
    assert isinstance(scene, Scene) and isinstance(scene.lead, Character)
    (body,) = rec.bodies("/chat/completions")
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Scene" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["description"] == "A story scene."
    assert body["messages"][-1] == {"role": "user", "content": "A fox at a harbour."}


async def test_messages_to_object_sends_images_from_message_parts(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    class Seen(BaseModel):
        description: str
        objects: list[str]

    image = photo(tmp_path / "p.png")
    message = HumanMessage(
        content=[
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": image.data_url()}},
        ]
    )
    seen = await engine.messages_to_object(rctx, [message], catalog.get("openai-gpt-4o"), Seen)
    assert seen.objects == describe_image(image.read_bytes())["objects"]
    parts = rec.bodies("/chat/completions")[0]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"]


async def test_messages_to_object_asks_again_once_then_succeeds(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    calls = 0

    def first_invalid(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return with_content('{"setting": 3, "mood": "calm"}')(request, response)
        return response

    rec.rewrite = first_invalid
    scene = await engine.messages_to_object(
        rctx, [HumanMessage("A fox.")], catalog.get("openai-gpt-4o"), Scene
    )
    assert isinstance(scene, Scene)
    assert sim.count("openai", "chat.completions") == 2
    second = rec.bodies("/chat/completions")[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": '{"setting": 3, "mood": "calm"}'}
    assert second[-1]["role"] == "user"
    assert "setting" in second[-1]["content"] and "Scene" in second[-1]["content"]


@pytest.mark.parametrize(
    ("answer", "needle"),
    [("not json at all", "not valid JSON"), ('{"mood": "calm"}', "setting: Field required")],
)
async def test_messages_to_object_fails_clearly_after_the_second_bad_answer(
    rctx: RunContext, rec: Recorder, sim: Simulator, answer: str, needle: str
) -> None:
    rec.rewrite = with_content(answer)
    with pytest.raises(InvalidRequestError) as info:
        await engine.messages_to_object(
            rctx, [HumanMessage("A fox.")], catalog.get("openai-gpt-4o"), Scene
        )
    assert "Scene" in str(info.value) and needle in str(info.value)
    assert info.value.code == "invalid_structured_output"
    assert sim.count("openai", "chat.completions") == 2


async def test_messages_to_object_refusal_is_content_policy(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="content_policy", provider="openai")
    with pytest.raises(ContentPolicyError, match="refused"):
        await engine.messages_to_object(
            ctx, [HumanMessage("A fox.")], catalog.get("openai-gpt-4o"), Scene
        )
    assert sim.count("openai") == 1


# -- faults ---------------------------------------------------------------------------------
async def test_rate_limit_honours_retry_after(ctx: RunContext, sim: Simulator, clock: Any) -> None:
    sim.add_fault(kind="rate_limit", provider="openai", first_n=2, retry_after=7)
    assert await engine.text_to_text(ctx, "hi", catalog.get("openai-gpt-4o"))
    assert clock.waits == [7.0, 7.0]
    assert sim.count("openai") == 3


async def test_rate_limit_beyond_the_cap_fails_with_retry_after(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="rate_limit", provider="openai", retry_after=600)
    with pytest.raises(RateLimitError) as info:
        await engine.text_to_text(ctx, "hi", catalog.get("openai-gpt-4o"))
    assert info.value.retry_after == 600 and info.value.code == "rate_limit_exceeded"
    assert sim.count("openai") == 1


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "overloaded"])
async def test_server_errors_are_retried_then_succeed(
    ctx: RunContext, sim: Simulator, kind: str
) -> None:
    sim.add_fault(kind=kind, provider="openai", first_n=2)
    assert await engine.text_to_text(ctx, "hi", catalog.get("openai-gpt-4o"))
    assert sim.count("openai") == 3


async def test_server_error_every_time_gives_up_after_max_attempts(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="server_error", provider="openai")
    with pytest.raises(TransientProviderError) as info:
        await engine.text_to_text(ctx, "hi", catalog.get("openai-gpt-4o"))
    assert info.value.status == 500 and "server had an error" in str(info.value)
    assert sim.count("openai") == ctx.retry.max_attempts


async def test_hang_becomes_a_timeout_after_retries(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="hang", provider="openai")
    with pytest.raises(ProviderTimeoutError):
        await engine.text_to_text(ctx, "hi", catalog.get("openai-gpt-4o"))
    assert sim.count("openai") == ctx.retry.max_attempts


async def test_malformed_body_is_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="malformed", provider="openai", first_n=1)
    assert await engine.text_to_text(ctx, "hi", catalog.get("openai-gpt-4o"))
    assert sim.count("openai") == 2


async def test_auth_fault_is_not_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="auth", provider="openai")
    with pytest.raises(AuthenticationError) as info:
        await engine.text_to_text(ctx, "hi", catalog.get("openai-gpt-4o"))
    assert info.value.status == 401 and info.value.code == "invalid_api_key"
    assert "check the key" in str(info.value)
    assert sim.count("openai") == 1


async def test_wrong_key_gets_openais_401_envelope_with_a_masked_key(sim: Simulator) -> None:
    wrong = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    async with sim.client() as client:
        response = await client.post(
            f"{API}/chat/completions",
            headers={"Authorization": f"Bearer {wrong}"},
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        )
        missing = await client.post(f"{API}/chat/completions", json={})
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert error["param"] is None
    assert wrong not in response.text
    assert mask_key(wrong) in error["message"] and mask_key(wrong).endswith("6789")
    assert response.headers["x-request-id"].startswith("req_")
    assert missing.status_code == 401
    assert "didn't provide an API key" in missing.json()["error"]["message"]


async def test_missing_key_is_a_configuration_error(sim: Simulator, tmp_path: Path) -> None:
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
            await engine.text_to_text(ctx, "hi", catalog.get("openai-gpt-4o"))
    assert sim.count() == 0


async def test_base_url_override_reaches_a_compatible_server(clock: Any, tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def local_server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if json.loads(request.content)["model"] == "missing":
            return httpx.Response(404, json={"error": "model 'missing' not found"})
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "llama3",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello from llama."},
                        "finish_reason": "stop",
                    }
                ],
            },
        )

    keys = KeysModel.from_env(
        {"OPENAI_API_KEY": "ollama-local-key", "OPENAI_BASE_URL": "http://localhost:11434/v1/"}
    )
    ctx = make_ctx(httpx.MockTransport(local_server), keys, clock, tmp_path)
    try:
        text = await engine.text_to_text(ctx, "hi", openai_config("llama3"))
        assert text == "Hello from llama."
        assert str(seen[0].url) == "http://localhost:11434/v1/chat/completions"
        assert seen[0].headers["authorization"] == "Bearer ollama-local-key"
        with pytest.raises(InvalidRequestError, match="model 'missing' not found"):
            await engine.text_to_text(ctx, "hi", openai_config("missing"))
    finally:
        await ctx.aclose()


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-proj-SECRETwrongkey0123456789abcdef"
    right = sim.key_for("openai")
    failures: list[Exception] = []
    bad_ctx = make_ctx(sim.transport(), sim.keys(openai_api_key=wrong), clock, tmp_path)
    good_ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    config = catalog.get("openai-gpt-4o")
    try:
        failures += await failures_under_faults(
            sim,
            "openai",
            bad_ctx,
            good_ctx,
            lambda ctx: engine.text_to_text(ctx, "hi", config),
            faults=("auth", "rate_limit", "server_error", "hang", "malformed"),
        )
        sim.add_fault(kind="content_policy", provider="openai")
        with pytest.raises(ContentPolicyError) as policy:
            await openai_media.text_to_image(
                good_ctx, "x", catalog.get("openai-dall-e-2"), output_name="x.png"
            )
        failures.append(policy.value)
    finally:
        await bad_ctx.aclose()
        await good_ctx.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)


# -- the fake's request validation ----------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "status", "param", "needle"),
    [
        ("/chat/completions", {"model": "gpt-4o"}, 400, "messages", "Missing required"),
        ("/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400, None, "model"),
        (
            "/chat/completions",
            {"model": "gpt-4o", "messages": [{"role": "bot", "content": "x"}]},
            400,
            "messages[0].role",
            "Supported values",
        ),
        (
            "/chat/completions",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "colour": 1},
            400,
            "colour",
            "Unrecognized request argument",
        ),
        (
            "/chat/completions",
            {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "x"}],
                "temperature": 3,
            },
            400,
            "temperature",
            "maximum value",
        ),
        (
            "/chat/completions",
            {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "say hi"}],
                "response_format": {"type": "json_object"},
            },
            400,
            "messages",
            "must contain the word 'json'",
        ),
        (
            "/chat/completions",
            {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "Scene",
                        "strict": True,
                        "schema": Scene.model_json_schema(),
                    },
                },
            },
            400,
            "response_format",
            "'additionalProperties' is required",
        ),
        ("/images/generations", {"model": "dall-e-3", "prompt": "x", "size": "512x512"}, 400,
         "size", "'1024x1024', '1792x1024', and '1024x1792'"),
        ("/images/generations", {"model": "dall-e-3", "prompt": "x", "n": 2}, 400, "n", "n=1"),
        ("/images/generations", {"model": "dall-e-2", "prompt": "x", "n": 11}, 400, "n",
         "above maximum"),
        ("/images/generations", {"model": "gpt-image-1", "prompt": "x",
                                 "response_format": "url"}, 400, "response_format", "Unknown"),
        ("/images/generations", {"model": "dall-e-2"}, 400, "prompt", "Missing required"),
        ("/completions", {"model": "gpt-3.5-turbo-instruct"}, 400, "prompt", "Missing required"),
        ("/embeddings", {"model": "x", "input": "y"}, 404, None, "Invalid URL"),
    ],
)  # fmt: skip
async def test_fake_validates_requests_like_openai(
    sim: Simulator, path: str, body: dict[str, Any], status: int, param: str | None, needle: str
) -> None:
    async with sim.client(headers={"Authorization": f"Bearer {sim.key_for('openai')}"}) as client:
        response = await client.post(f"{API}{path}", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert needle in error["message"]


async def test_fake_answers_carry_openai_fields_and_headers(sim: Simulator) -> None:
    async with sim.client(headers={"Authorization": f"Bearer {sim.key_for('openai')}"}) as client:
        chat = await client.post(
            f"{API}/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 2},
        )
        image = await client.post(
            f"{API}/images/generations",
            json={
                "model": "dall-e-3",
                "prompt": "a kite",
                "size": "1024x1792",
                "response_format": "url",
            },
        )
        download = await client.get(image.json()["data"][0]["url"])
    assert chat.headers["content-type"] == "application/json"
    assert chat.headers["x-request-id"].startswith("req_")
    body = chat.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"} <= set(
        body
    )
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["refusal"] is None
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    item = image.json()["data"][0]
    assert item["revised_prompt"] and "b64_json" not in item
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    with PILImage.open(io.BytesIO(download.content)) as im:
        assert im.size == (1024, 1792)
