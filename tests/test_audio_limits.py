"""Audio over a speech-to-text provider's limits is refused before the call, naming the limit
and the fix (not by the provider's 413 after the upload)."""

from __future__ import annotations

import importlib
import struct
from pathlib import Path

import pytest

from calliope_graph.config import catalog
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.errors import MediaError
from calliope_graph.media import MAX_INPUT_BYTES, Audio, AudioLimits
from calliope_graph.simulate import Simulator

STT_PROVIDERS = ("openai", "google", "hugging_face")


def big_wav(path: Path, megabytes: float) -> Audio:
    """A silent 16 kHz mono WAV of about ``megabytes`` MiB (written sparsely: fast)."""
    data = int(megabytes * (1 << 20)) // 2 * 2
    header = (
        b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16_000, 32_000, 2, 16)
        + b"data" + struct.pack("<I", data)
    )  # fmt: skip
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + data)
    return Audio.open(path)


@pytest.mark.parametrize("provider", STT_PROVIDERS)
def test_every_speech_to_text_engine_declares_its_providers_audio_limits(provider: str) -> None:
    engine = get_engine(Conversion.AUDIO_TO_TEXT, provider)
    module = importlib.import_module(engine.__module__)  # engines/<provider>.py or a part of it
    assert module.__name__.startswith(f"calliope_graph.engines.{provider}")
    assert engine is module.audio_to_text
    limits = module.AUDIO_LIMITS
    assert isinstance(limits, AudioLimits) and limits.provider == provider
    assert limits.max_bytes is None or limits.max_bytes <= MAX_INPUT_BYTES


async def test_a_30_mb_wav_is_refused_before_openai_is_called(
    ctx: RunContext, sim: Simulator, tmp_path: Path
) -> None:
    audio = big_wav(tmp_path / "interview.wav", 30)
    engine = get_engine(Conversion.AUDIO_TO_TEXT, "openai")
    with pytest.raises(MediaError) as info:
        await engine(ctx, audio, catalog.get("openai-gpt-transcribe"))
    message = str(info.value)
    assert "'interview.wav' is 30.0 MiB, over the 25.0 MiB openai" in message
    assert "split it into parts under 25 MiB" in message
    assert info.value.path == audio.path
    assert sim.count("openai") == 0  # nothing uploaded, nothing paid


async def test_openai_still_transcribes_audio_just_under_its_limit(
    ctx: RunContext, sim: Simulator, tmp_path: Path
) -> None:
    audio = big_wav(tmp_path / "short.wav", 24)
    engine = get_engine(Conversion.AUDIO_TO_TEXT, "openai")
    assert await engine(ctx, audio, catalog.get("openai-gpt-transcribe")) is not None
    assert sim.count("openai", "audio.transcriptions") == 1


async def test_audio_over_geminis_inline_limit_is_refused_counting_its_base64(
    ctx: RunContext, sim: Simulator, tmp_path: Path
) -> None:
    audio = big_wav(tmp_path / "talk.wav", 16)  # 16 MiB is 21.3 MiB as base64: over 20
    engine = get_engine(Conversion.AUDIO_TO_TEXT, "google")
    with pytest.raises(MediaError) as info:
        await engine(ctx, audio, catalog.get("google-gemini-flash"))
    message = str(info.value)
    assert "16.0 MiB (21.3 MiB as base64), over the 20.0 MiB google" in message
    assert "inline audio" in message and "another transcription provider" in message
    assert sim.count("google") == 0


async def test_an_audio_format_openai_does_not_read_is_refused_naming_the_ones_it_does(
    ctx: RunContext, sim: Simulator, tmp_path: Path
) -> None:
    audio = big_wav(tmp_path / "clip.wav", 0.1).model_copy(update={"mime": "audio/aac"})
    engine = get_engine(Conversion.AUDIO_TO_TEXT, "openai")
    with pytest.raises(MediaError, match=r"does not read audio/aac .*\.mp3.*\.wav"):
        await engine(ctx, audio, catalog.get("openai-gpt-transcribe"))
    assert sim.count("openai") == 0
