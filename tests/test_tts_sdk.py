"""The official ``openai`` and ``elevenlabs`` SDKs parse what the speech fakes answer."""

from __future__ import annotations

import io
import wave
from typing import Any

import elevenlabs
import openai
import pytest
from elevenlabs.client import AsyncElevenLabs

from calliope_graph.simulate import Simulator
from calliope_graph.simulate._speech import speech_seconds
from calliope_graph.testing import is_mp3

TEXT = "The lighthouse keeper counts the ships that never came."


def openai_sdk(sim: Simulator, key: str | None = None) -> openai.AsyncOpenAI:
    http_client: Any = sim.client()
    return openai.AsyncOpenAI(
        api_key=key or sim.key_for("openai"),
        base_url="https://api.openai.com/v1",
        http_client=http_client,
        max_retries=0,
    )


def eleven_sdk(sim: Simulator, key: str | None = None) -> AsyncElevenLabs:
    return AsyncElevenLabs(
        api_key=key or sim.key_for("elevenlabs"),
        base_url="https://api.elevenlabs.io",
        httpx_client=sim.client(),
    )


async def test_openai_sdk_speech(sim: Simulator) -> None:
    async with openai_sdk(sim) as client:
        response = await client.audio.speech.create(
            model="gpt-4o-mini-tts",
            voice="coral",
            input=TEXT,
            instructions="Calm.",
            response_format="wav",
            speed=1.0,
        )
        data = response.read()
    with wave.open(io.BytesIO(data), "rb") as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(speech_seconds(TEXT), abs=0.01)
    assert response.response.headers["content-type"] == "audio/wav"
    assert sim.count("openai", "audio.speech") == 1


async def test_openai_sdk_speech_errors(sim: Simulator) -> None:
    async with openai_sdk(sim, key="sk-wrong-key-0123456789") as client:
        with pytest.raises(openai.AuthenticationError) as auth:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert auth.value.code == "invalid_api_key"
    sim.add_fault(kind="content_policy", provider="openai")
    async with openai_sdk(sim) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
        with pytest.raises(openai.BadRequestError) as bad:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 4097)
    assert refused.value.code == "content_policy_violation"
    assert bad.value.code == "string_above_max_length"


async def test_elevenlabs_sdk_convert(sim: Simulator) -> None:
    client = eleven_sdk(sim)
    chunks = [
        chunk
        async for chunk in client.text_to_speech.convert(
            voice_id="JBFqnCBsd6RMkjVDRZzb",
            text=TEXT,
            model_id="eleven_multilingual_v2",
            output_format="mp3_44100_128",
            voice_settings=elevenlabs.VoiceSettings(stability=0.4, similarity_boost=0.8),
        )
    ]
    data = b"".join(chunks)
    assert is_mp3(data)
    frames = len(data) // 417  # 128 kbit/s at 44.1 kHz: 417-byte frames of 1152 samples
    assert frames * 1152 / 44100 == pytest.approx(speech_seconds(TEXT), abs=0.05)
    assert sim.count("elevenlabs", "text_to_speech") == 1


async def test_elevenlabs_sdk_pcm(sim: Simulator) -> None:
    client = eleven_sdk(sim)
    data = b"".join(
        [
            c
            async for c in client.text_to_speech.convert(
                voice_id="21m00Tcm4TlvDq8ikWAM", text=TEXT, output_format="pcm_16000"
            )
        ]
    )
    assert len(data) / 2 / 16000 == pytest.approx(speech_seconds(TEXT), abs=0.01)


async def test_elevenlabs_sdk_errors(sim: Simulator) -> None:
    with pytest.raises(elevenlabs.core.ApiError) as auth:
        _ = [
            c
            async for c in eleven_sdk(sim, key="sk_wrong").text_to_speech.convert(
                voice_id="JBFqnCBsd6RMkjVDRZzb", text="hi"
            )
        ]
    assert auth.value.status_code == 401
    assert auth.value.body == {
        "detail": {"status": "invalid_api_key", "message": "Invalid API key"}
    }
    with pytest.raises(elevenlabs.core.ApiError) as missing:
        _ = [c async for c in eleven_sdk(sim).text_to_speech.convert(voice_id="nobody", text="hi")]
    assert missing.value.status_code == 404
    assert missing.value.body["detail"]["status"] == "voice_not_found"
    with pytest.raises(elevenlabs.UnprocessableEntityError) as invalid:
        _ = [
            c
            async for c in eleven_sdk(sim).text_to_speech.convert(
                voice_id="JBFqnCBsd6RMkjVDRZzb",
                text="hi",
                voice_settings=elevenlabs.VoiceSettings(stability=3.0),
            )
        ]
    assert invalid.value.body["detail"][0]["loc"] == ["body", "voice_settings", "stability"]
