"""The official ``openai`` SDK parses what the OpenAI fake answers (and raises its errors)."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from PIL import Image as PILImage
from pydantic import BaseModel

from calliope_graph.simulate import Simulator
from calliope_graph.simulate.openai import mask_key

BASE = "https://api.openai.com/v1"


@pytest.fixture(autouse=True)
def _legacy_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK parses wire shapes of shut-down models (DALL·E, gpt-image-1) that
    OpenAI-compatible servers still speak: the fake answers them here."""
    from calliope_graph.simulate.openai import OpenAIFake

    monkeypatch.setattr(OpenAIFake, "retired_models", frozenset())


def sdk(sim: Simulator, key: str | None = None) -> openai.AsyncOpenAI:
    http_client: Any = sim.client()  # a plain httpx.AsyncClient, which the SDK accepts
    return openai.AsyncOpenAI(
        api_key=key or sim.key_for("openai"),
        base_url=BASE,
        http_client=http_client,
        max_retries=0,
    )


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk(sim) as c:
        yield c


def wav_bytes(seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x10\x00\xf0\xff" * int(8000 * seconds))
    return buf.getvalue()


async def test_chat_completion(client: openai.AsyncOpenAI, sim: Simulator) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "You tell stories."},
            {"role": "user", "content": "A lantern in the fog"},
        ],
        temperature=0.5,
        max_tokens=200,
    )
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.message.refusal is None
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert completion.system_fingerprint and completion.system_fingerprint.startswith("fp_")
    assert completion._request_id and completion._request_id.startswith("req_")
    assert sim.calls[("openai", "chat.completions")] == 1


async def test_chat_length_limit_and_vision(client: openai.AsyncOpenAI) -> None:
    short = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Tell a story"}], max_tokens=3
    )
    assert short.choices[0].finish_reason == "length"
    png = base64.b64encode(_png(64, 48)).decode()
    seen = await client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What do you see?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{png}", "detail": "low"},
                    },
                ],
            }
        ],
    )
    assert "wide" in (seen.choices[0].message.content or "")


class Scene(BaseModel):
    setting: str
    mood: str
    characters: list[str]


async def test_structured_output_parse(client: openai.AsyncOpenAI) -> None:
    # The SDK builds its own strict schema from the model; the fake checks strictness.
    completion = await client.chat.completions.parse(
        model="gpt-4o",
        messages=[{"role": "user", "content": "A fox at the harbour at night."}],
        response_format=Scene,
    )
    scene = completion.choices[0].message.parsed
    assert isinstance(scene, Scene) and scene.characters


async def test_forced_tool_call(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    calls = completion.choices[0].message.tool_calls
    assert calls and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert "city" in calls[0].function.arguments


async def test_legacy_completion(client: openai.AsyncOpenAI, sim: Simulator) -> None:
    completion = await client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=64
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].text
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert sim.calls[("openai", "completions")] == 1


@pytest.mark.parametrize(
    ("model", "size", "expected"),
    [("dall-e-2", "256x256", (256, 256)), ("gpt-image-1", "1024x1536", (1024, 1536))],
)
async def test_image_generation_b64(
    client: openai.AsyncOpenAI, model: str, size: Any, expected: tuple[int, int]
) -> None:
    extra: dict[str, Any] = {} if model.startswith("gpt-image") else {"response_format": "b64_json"}
    result = await client.images.generate(model=model, prompt="a red kite", size=size, **extra)
    assert result.data
    item = result.data[0]
    assert item.b64_json and item.url is None
    with PILImage.open(io.BytesIO(base64.b64decode(item.b64_json))) as im:
        assert im.format == "PNG" and im.size == expected
    if model == "gpt-image-1":
        assert result.usage is not None and result.usage.total_tokens > 0
        assert result.size == "1024x1536"


async def test_image_generation_url(client: openai.AsyncOpenAI, sim: Simulator) -> None:
    result = await client.images.generate(model="dall-e-3", prompt="a kite", response_format="url")
    assert result.data and result.data[0].url and result.data[0].revised_prompt
    async with sim.client() as http:
        download = await http.get(result.data[0].url)
    assert download.status_code == 200 and download.content.startswith(b"\x89PNG")


async def test_transcription(client: openai.AsyncOpenAI, sim: Simulator) -> None:
    transcript = await client.audio.transcriptions.create(
        model="whisper-1", file=("voice.wav", wav_bytes(), "audio/wav"), language="en"
    )
    assert isinstance(transcript.text, str) and transcript.text
    plain = await client.audio.transcriptions.create(
        model="whisper-1", file=("voice.wav", wav_bytes(), "audio/wav"), response_format="text"
    )
    assert plain.strip() == transcript.text
    assert sim.calls[("openai", "audio.transcriptions")] == 2


async def test_wrong_key_raises_authentication_error(sim: Simulator) -> None:
    wrong = "sk-proj-0123456789abcdefghijklmnop"
    async with sdk(sim, key=wrong) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert info.value.type == "invalid_request_error"
    assert mask_key(wrong) in info.value.message and wrong not in info.value.message


async def test_rate_limit_raises_rate_limit_error(
    client: openai.AsyncOpenAI, sim: Simulator
) -> None:
    sim.add_fault(kind="rate_limit", provider="openai", retry_after=3)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == "3"


async def test_server_error_and_content_policy(client: openai.AsyncOpenAI, sim: Simulator) -> None:
    sim.add_fault(kind="server_error", provider="openai", endpoint="chat", first_n=1)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    sim.add_fault(kind="content_policy", provider="openai", endpoint="images")
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.generate(model="dall-e-2", prompt="a battle", size="256x256")
    assert info.value.code == "content_policy_violation"


async def test_bad_request_names_the_parameter(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.generate(model="dall-e-3", prompt="x", size="512x512")
    assert info.value.param == "size"


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (width, height), "teal").save(buf, "PNG")
    return buf.getvalue()
