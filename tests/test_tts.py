"""Text to speech against the simulator: OpenAI's /audio/speech and ElevenLabs.

Request shapes as the providers document them, audio that decodes (PyAV) and lasts as long
as the text takes to say, each error class and fault, and no secret anywhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from _support import Recorder, assert_secrets_absent, failures_under_faults, make_ctx

from calliope_graph.config import InferenceModelProvider, KeysModel, catalog
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines import elevenlabs as eleven
from calliope_graph.engines import openai_media as oai
from calliope_graph.errors import (
    AuthenticationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.media import Audio
from calliope_graph.nodes import TextToSpeech
from calliope_graph.simulate import Simulator
from calliope_graph.simulate._speech import speech_seconds

TEXT = "The fox who collects lost keys walks home at dusk, humming."
OPENAI = "https://api.openai.com/v1"
ELEVEN = "https://api.elevenlabs.io"


def decoded(path: str | Path) -> tuple[str, int, float]:
    """(codec, sample rate, seconds) of an audio file, by decoding every frame with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return (stream.codec_context.name, stream.rate, samples / stream.rate)


# -- OpenAI -----------------------------------------------------------------------------------
async def test_openai_speech_request_and_audio(rctx: RunContext, rec: Recorder) -> None:
    config = catalog.get("openai-gpt-4o-mini-tts").with_parameters(
        speed=1.25, instructions="Warm and slow, like a bedtime story."
    )
    audio = await oai.text_to_speech(rctx, TEXT, config, output_name="story/scene1.mp3")
    (request,) = rec.requests
    assert str(request.url) == f"{OPENAI}/audio/speech"
    assert request.headers["authorization"] == f"Bearer {rec.sim.key_for('openai')}"
    assert json.loads(request.content) == {
        "model": "gpt-4o-mini-tts",
        "input": TEXT,
        "voice": "coral",
        "response_format": "mp3",
        "speed": 1.25,
        "instructions": "Warm and slow, like a bedtime story.",
    }
    assert isinstance(audio, Audio) and audio.mime == "audio/mpeg"
    assert Path(audio.path) == rctx.store.root / "story" / "scene1.mp3"
    codec, _, seconds = decoded(audio.path)
    assert codec.startswith("mp3")
    assert seconds == pytest.approx(speech_seconds(TEXT, 1.25), abs=0.05)


@pytest.mark.parametrize(
    ("fmt", "suffix", "mime", "codec", "rate"),
    [
        ("wav", ".wav", "audio/wav", "pcm_s16le", 24000),
        ("pcm", ".wav", "audio/wav", "pcm_s16le", 24000),  # raw PCM saved with a WAV header
        ("flac", ".flac", "audio/flac", "flac", 24000),
        ("opus", ".ogg", "audio/ogg", "opus", 48000),
    ],
)
async def test_openai_speech_formats_decode_at_the_text_length(
    ctx: RunContext, fmt: str, suffix: str, mime: str, codec: str, rate: int
) -> None:
    config = catalog.get("openai-tts-1").with_parameters(response_format=fmt)
    audio = await oai.text_to_speech(ctx, TEXT, config, output_name="narration", voice="onyx")
    assert Path(audio.path).name == f"narration{suffix}" and audio.mime == mime
    found = decoded(audio.path)
    assert found[:2] == (codec, rate)
    assert found[2] == pytest.approx(speech_seconds(TEXT), abs=0.03)
    if mime == "audio/wav":
        assert audio.duration_s == pytest.approx(speech_seconds(TEXT), abs=0.01)


async def test_openai_speech_format_follows_the_output_name(ctx: RunContext) -> None:
    audio = await oai.text_to_speech(
        ctx, "Hello.", catalog.get("openai-tts-1"), output_name="a.wav"
    )
    assert audio.mime == "audio/wav" and audio.duration_s == pytest.approx(
        speech_seconds("Hello."), abs=0.01
    )


async def test_longer_text_lasts_longer_and_speed_shortens_it(ctx: RunContext) -> None:
    config = catalog.get("openai-tts-1-hd").with_parameters(response_format="wav")
    short = await oai.text_to_speech(ctx, "Once.", config, output_name="short")
    long = await oai.text_to_speech(ctx, TEXT * 3, config, output_name="long")
    fast = await oai.text_to_speech(
        ctx, TEXT * 3, config.with_parameters(speed=2.0), output_name="fast"
    )
    assert short.duration_s and long.duration_s and fast.duration_s
    assert short.duration_s < long.duration_s
    assert fast.duration_s == pytest.approx(long.duration_s / 2, abs=0.01)


async def test_tts1_does_not_get_instructions(rctx: RunContext, rec: Recorder) -> None:
    config = catalog.get("openai-tts-1").with_parameters(instructions="whisper")
    await oai.text_to_speech(rctx, "Hi.", config, output_name="hi")
    assert "instructions" not in rec.bodies("/audio/speech")[0]


async def test_openai_text_over_4096_characters_is_refused_before_paying(
    rctx: RunContext, rec: Recorder
) -> None:
    with pytest.raises(InvalidRequestError, match="4096") as info:
        await oai.text_to_speech(rctx, "a" * 4097, catalog.get("openai-tts-1"), output_name="x")
    assert "split it" in str(info.value) and not rec.requests


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "tts-1", "voice": "alloy"}, "Missing required parameter: 'input'"),
        ({"model": "tts-2", "input": "x", "voice": "alloy"}, "Invalid value: 'tts-2'"),
        ({"model": "tts-1", "input": "x", "voice": "bob"}, "Invalid value: 'bob'"),
        ({"model": "tts-1", "input": "x", "voice": "alloy", "speed": 5}, "decimal above"),
        (
            {"model": "tts-1", "input": "x", "voice": "alloy", "response_format": "ogg"},
            "Invalid value: 'ogg'",
        ),
        ({"model": "tts-1", "input": "x", "voice": "alloy", "pitch": 2}, "Unrecognized"),
    ],
)
async def test_openai_fake_validates_like_openai(
    sim: Simulator, body: dict[str, Any], needle: str
) -> None:
    async with sim.client() as client:
        response = await client.post(
            f"{OPENAI}/audio/speech",
            json=body,
            headers={"authorization": f"Bearer {sim.key_for('openai')}"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"


async def test_openai_speech_refusal_is_content_policy(sim: Simulator, ctx: RunContext) -> None:
    sim.add_fault(kind="content_policy", provider="openai", pattern="dragon")
    with pytest.raises(ContentPolicyError) as info:
        await oai.text_to_speech(ctx, "A dragon burns it all.", catalog.get("openai-tts-1"),
                                 output_name="x")  # fmt: skip
    assert info.value.status == 400 and info.value.code == "content_policy_violation"
    assert not list(ctx.store.root.glob("x*"))


# -- ElevenLabs -------------------------------------------------------------------------------
async def test_elevenlabs_request_and_audio(rctx: RunContext, rec: Recorder) -> None:
    config = catalog.get("elevenlabs-multilingual-v2").with_parameters(
        style=0.2, use_speaker_boost=True, speed=1.1, seed=7
    )
    audio = await eleven.text_to_speech(rctx, TEXT, config, output_name="scene1")
    (request,) = rec.requests
    assert request.url.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb"
    assert request.url.host == "api.elevenlabs.io"
    assert request.url.params["output_format"] == "mp3_44100_128"
    assert request.headers["xi-api-key"] == rec.sim.key_for("elevenlabs")
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {
        "text": TEXT,
        "model_id": "eleven_multilingual_v2",
        "seed": 7,
        "voice_settings": {
            "stability": 0.5,
            "similarity_boost": 0.75,
            "style": 0.2,
            "use_speaker_boost": True,
            "speed": 1.1,
        },
    }
    assert Path(audio.path).name == "scene1.mp3" and audio.mime == "audio/mpeg"
    codec, rate, seconds = decoded(audio.path)
    assert codec.startswith("mp3") and rate == 44100
    assert seconds == pytest.approx(speech_seconds(TEXT, 1.1), abs=0.05)


@pytest.mark.parametrize(
    ("fmt", "suffix", "codec", "rate"),
    [
        ("pcm_16000", ".wav", "pcm_s16le", 16000),
        ("wav_44100", ".wav", "pcm_s16le", 44100),
        ("opus_48000_64", ".ogg", "opus", 48000),
    ],
)
async def test_elevenlabs_formats_decode(
    ctx: RunContext, fmt: str, suffix: str, codec: str, rate: int
) -> None:
    config = catalog.get("elevenlabs-flash-v2.5").with_parameters(output_format=fmt)
    audio = await eleven.text_to_speech(
        ctx, TEXT, config, output_name="n", voice="21m00Tcm4TlvDq8ikWAM"
    )
    assert Path(audio.path).suffix == suffix
    found = decoded(audio.path)
    assert found[:2] == (codec, rate)
    assert found[2] == pytest.approx(speech_seconds(TEXT), abs=0.03)


async def test_elevenlabs_unplayable_formats_and_bad_voice_ids_fail_before_paying(
    rctx: RunContext, rec: Recorder
) -> None:
    config = catalog.get("elevenlabs-multilingual-v2")
    with pytest.raises(InvalidRequestError, match="ulaw_8000"):
        await eleven.text_to_speech(
            rctx, "hi", config.with_parameters(output_format="ulaw_8000"), output_name="x"
        )
    with pytest.raises(InvalidRequestError, match="not a voice id"):
        await eleven.text_to_speech(rctx, "hi", config, output_name="x", voice="George Smith/..")
    assert not rec.requests


async def test_elevenlabs_errors_name_the_problem(sim: Simulator, ctx: RunContext) -> None:
    config = catalog.get("elevenlabs-multilingual-v2")
    with pytest.raises(InvalidRequestError, match="voice_id nobody0000 was not found") as info:
        await eleven.text_to_speech(ctx, "hi", config, output_name="x", voice="nobody0000")
    assert info.value.status == 404 and info.value.code == "voice_not_found"
    with pytest.raises(InvalidRequestError, match=r"voice_settings\.stability") as bad:
        await eleven.text_to_speech(ctx, "hi", config.with_parameters(stability=2), output_name="x")
    assert bad.value.status == 422
    with pytest.raises(InvalidRequestError, match="exceeds the character limit") as long:
        await eleven.text_to_speech(ctx, "a" * 10_001, config, output_name="x")
    assert long.value.code == "max_character_limit_exceeded"


async def test_elevenlabs_fake_auth(sim: Simulator) -> None:
    async with sim.client() as client:
        missing = await client.post(
            f"{ELEVEN}/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb", json={"text": "hi"}
        )
        wrong = await client.post(
            f"{ELEVEN}/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb",
            json={"text": "hi"},
            headers={"xi-api-key": "sk_wrong"},
        )
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["detail"]["status"] == "needs_authorization"
    assert wrong.json() == {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}


async def test_elevenlabs_busy_is_retried(sim: Simulator, ctx: RunContext) -> None:
    sim.add_fault(kind="overloaded", provider="elevenlabs", first_n=1)
    audio = await eleven.text_to_speech(
        ctx, "hi there", catalog.get("elevenlabs-v3"), output_name="x"
    )
    assert Path(audio.path).is_file() and sim.count("elevenlabs", "text_to_speech") == 2


# -- both -------------------------------------------------------------------------------------
CONFIGS = ("openai-tts-1", "elevenlabs-multilingual-v2")


@pytest.mark.parametrize("name", CONFIGS)
async def test_node_speaks_with_its_params(ctx: RunContext, name: str) -> None:
    node = TextToSpeech(name, name="narrate", speed=1.0, output_format="wav_24000",
                        response_format="wav")  # fmt: skip
    result = await node.run(ctx, text=TEXT)
    audio: Audio = result["audio"]
    assert Path(audio.path).name == "narrate.wav"
    assert audio.duration_s == pytest.approx(speech_seconds(TEXT), abs=0.01)


@pytest.mark.parametrize("name", CONFIGS)
async def test_empty_answer_is_empty_output(sim: Simulator, ctx: RunContext, name: str) -> None:
    config = catalog.get(name)
    sim.add_fault(kind="empty", provider=config.provider.value)
    engine = get_engine(Conversion.TEXT_TO_SPEECH, config.provider)
    with pytest.raises(EmptyOutputError, match="no audio"):
        await engine(ctx, "hello", config, output_name="x")


@pytest.mark.parametrize("name", CONFIGS)
async def test_every_fault_class_and_no_secret_anywhere(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.DEBUG)
    config = catalog.get(name)
    provider = config.provider
    wrong = "sk_SECRETwrongkey0123456789abcdefABCDEF"
    field = "openai_api_key" if provider is InferenceModelProvider.OPENAI else "elevenlabs_api_key"
    bad = make_ctx(sim.transport(), sim.keys(**{field: wrong}), clock, tmp_path / "bad")
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path / "good")
    engine = get_engine(Conversion.TEXT_TO_SPEECH, provider)
    try:
        failures = await failures_under_faults(
            sim, provider.value, bad, good, lambda c: engine(c, TEXT, config, output_name="x")
        )
    finally:
        await bad.aclose()
        await good.aclose()
    kinds = [type(f) for f in failures]
    assert kinds == [
        AuthenticationError,  # wrong key
        AuthenticationError,  # revoked key
        RateLimitError,
        TransientProviderError,
        ProviderTimeoutError,
        TransientProviderError,  # a 200 whose body is not audio, retried then given up
        ContentPolicyError,
    ]
    assert all(getattr(f, "provider", None) == provider.value for f in failures)
    assert getattr(failures[5], "code", None) == "malformed_body"
    assert not list((tmp_path / "good").glob("x*"))  # nothing half-written
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, sim.key_for(provider.value)), failures, caplog.records)


async def test_missing_elevenlabs_key_names_the_variable(sim: Simulator, ctx: RunContext) -> None:
    keys = KeysModel(openai_api_key=sim.keys().openai_api_key)
    bare = RunContext(client=ctx.client, keys=keys, store=ctx.store, sleep=ctx.sleep)
    with pytest.raises(Exception, match="ELEVENLABS_API_KEY"):
        await eleven.text_to_speech(
            bare, "hi", catalog.get("elevenlabs-multilingual-v2"), output_name="x"
        )


def test_keys_and_base_url_from_the_environment() -> None:
    keys = KeysModel.from_env(
        {
            "ELEVENLABS_API_KEY": "sk_abc",
            "ELEVENLABS_BASE_URL": "https://api.eu.residency.elevenlabs.io/",
        }
    )
    assert keys.require("elevenlabs") == "sk_abc"
    assert keys.base_url("elevenlabs") == "https://api.eu.residency.elevenlabs.io"
    assert KeysModel().base_url("elevenlabs") == "https://api.elevenlabs.io"
    assert "sk_abc" in keys.secrets() and "sk_abc" not in repr(keys)


async def test_base_url_override_reaches_the_fake_host(
    sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    keys = sim.keys(elevenlabs_base_url="https://api.us.elevenlabs.io")
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await sim.handle(request)

    ctx = make_ctx(httpx.MockTransport(handler), keys, clock, tmp_path)
    try:
        await eleven.text_to_speech(ctx, "hi", catalog.get("elevenlabs-v3"), output_name="x")
    finally:
        await ctx.aclose()
    assert seen[0].url.host == "api.us.elevenlabs.io"
