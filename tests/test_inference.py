"""The seed's functional API, against the simulator: same names, same arguments."""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import never
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from calliope_graph import AuthenticationError, ContentPolicyError, catalog, inference
from calliope_graph.context import RunContext
from calliope_graph.inference import (
    audio_to_text_inference,
    image_analysis_inference,
    image_and_text_to_video_file_inference,
    messages_to_object_inference,
    text_to_image_file_inference,
    text_to_text_inference,
)
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_info


@pytest.fixture(autouse=True)
def waits_on_the_clock(monkeypatch: pytest.MonkeyPatch, clock: Any) -> None:
    """The functional API builds its own run context, which waits for real (backoffs, task
    polls) as it must in production; here those waits go on the virtual clock."""
    real = inference._context

    def on_clock(*args: Any, **kwargs: Any) -> RunContext:
        ctx = real(*args, **kwargs)
        ctx.sleep = clock
        return ctx

    monkeypatch.setattr(inference, "_context", on_clock)


@pytest.fixture
async def client(sim: Simulator):
    async with sim.client() as c:
        yield c


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "webcam.png"
    path.write_bytes(image_bytes("a cat on a red sofa", 320, 240))
    return path


async def test_text_to_text(sim: Simulator, client: httpx.AsyncClient) -> None:
    text = await text_to_text_inference(
        client, "Once upon a time", catalog.get("openai-gpt-4o"), sim.keys()
    )
    assert text.strip()
    assert sim.count("openai", "chat.completions") == 1


async def test_text_to_image_censors_and_retries(
    sim: Simulator, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    sim.add_fault(kind="content_policy", provider="openai", endpoint="images", first_n=1)
    path = await text_to_image_file_inference(
        client,
        "a battle scene",
        str(tmp_path / "frame.png"),
        catalog.get("openai-gpt-image-2"),
        sim.keys(),
        width=512,
        height=512,
    )
    assert path is not None and Path(path).is_file()
    assert sim.count("openai", "images") == 2  # refused once, then the censored prompt
    assert sim.count("openai", "chat.completions") == 1  # the copy editor


async def test_text_to_image_refused_every_time_returns_none(
    sim: Simulator, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    sim.add_fault(kind="content_policy", provider="openai", endpoint="images")
    path = await text_to_image_file_inference(
        client, "x", str(tmp_path / "f.png"), catalog.get("openai-gpt-image-2"), sim.keys()
    )
    assert path is None
    assert sim.count("openai", "images") == 3


async def test_image_analysis_merges_azure_and_llm(
    sim: Simulator, client: httpx.AsyncClient, photo: Path
) -> None:
    result = await image_analysis_inference(
        client, str(photo), None, catalog.get("openai-gpt-4o"), sim.keys()
    )
    assert result["description"]
    assert "tags" in result and "all_tags_and_objects" in result
    assert sim.count("azure_vision") == 1 and sim.count("openai") == 1


async def test_image_analysis_survives_llm_failure(
    sim: Simulator, client: httpx.AsyncClient, photo: Path
) -> None:
    sim.add_fault(kind="auth", provider="openai")
    result = await image_analysis_inference(
        client, str(photo), None, catalog.get("openai-gpt-4o"), sim.keys()
    )
    assert result["description"]  # Azure alone


@pytest.mark.real_timeout
async def test_image_analysis_llm_timeout_continues_with_azure(
    photo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The LLM's answer never comes (only llm_timeout can end the wait), Azure's does at once.
    sim = Simulator(latency={"openai": 1.0}, sleep=never)
    async with sim.client() as client:
        result = await image_analysis_inference(
            client, str(photo), None, catalog.get("openai-gpt-4o"), sim.keys(), llm_timeout=0.01
        )
    assert result["description"] and sim.count("azure_vision") == 1
    assert "took longer than 0.01s" in caplog.text  # the skipped branch is logged


async def test_image_analysis_both_failing_raises(
    sim: Simulator, client: httpx.AsyncClient, photo: Path
) -> None:
    sim.add_fault(kind="auth")
    with pytest.raises(AuthenticationError):
        await image_analysis_inference(
            client, str(photo), None, catalog.get("openai-gpt-4o"), sim.keys()
        )


async def test_image_analysis_from_base64(
    sim: Simulator, client: httpx.AsyncClient, photo: Path, tmp_path: Path
) -> None:
    b64 = base64.b64encode(photo.read_bytes()).decode()
    result = await image_analysis_inference(
        client, str(tmp_path / "upload.png"), b64, catalog.get("openai-gpt-4o"), sim.keys()
    )
    assert result["description"]


async def test_audio_to_text(sim: Simulator, client: httpx.AsyncClient, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 8000)
    path = tmp_path / "voice.wav"
    path.write_bytes(buf.getvalue())
    text = await audio_to_text_inference(client, str(path), "en", sim.keys())
    assert text.strip()


class Scene(BaseModel):
    setting: str
    mood: str
    characters: list[str]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "Extract."}, {"role": "user", "content": "A fox."}],
        [SystemMessage("Extract."), HumanMessage("A fox.")],
    ],
)
async def test_messages_to_object(sim: Simulator, client: httpx.AsyncClient, messages) -> None:
    scene = await messages_to_object_inference(
        client, messages, catalog.get("openai-gpt-4o"), sim.keys(), Scene
    )
    assert isinstance(scene, Scene)


# -- image and text to video --------------------------------------------------------------


async def test_image_and_text_to_video_writes_a_real_mp4(
    sim: Simulator, client: httpx.AsyncClient, photo: Path, tmp_path: Path, clock: Any
) -> None:
    target = tmp_path / "clips" / "cat.mp4"
    path = await image_and_text_to_video_file_inference(
        client,
        str(photo),
        "the cat stretches and yawns",
        str(target),
        catalog.get("runway-gen4-turbo"),
        sim.keys(),
    )
    assert path is not None and Path(path) == target and target.is_file()
    info = mp4_info(target.read_bytes())  # a playable MP4, not just bytes with the right name
    assert info["brand"] == "isom" and info["codec"] == "avc1"
    assert info["duration"] == 5.0  # the catalog config's duration
    assert sim.count("runway", "image_to_video") == 1
    assert clock.waits  # the task was polled, on the virtual clock


async def test_image_and_text_to_video_refused_raises_and_writes_nothing(
    sim: Simulator, client: httpx.AsyncClient, photo: Path, tmp_path: Path
) -> None:
    sim.add_fault(kind="content_policy", provider="runway")
    target = tmp_path / "refused.mp4"
    with pytest.raises(ContentPolicyError) as info:
        await image_and_text_to_video_file_inference(
            client, str(photo), "an explosion", str(target), catalog.get("runway-gen4-turbo"),
            sim.keys(),
        )  # fmt: skip
    assert info.value.provider == "runway" and (info.value.code or "").startswith("SAFETY")
    assert not target.exists() and not list(tmp_path.glob("*.mp4"))


# -- text to speech (the seventh conversion) --------------------------------------------------
async def test_text_to_speech_file_writes_audio_as_long_as_the_text(
    sim: Simulator, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    from calliope_graph.inference import text_to_speech_file_inference
    from calliope_graph.simulate._speech import speech_seconds

    text = "A fox who collects lost keys finds one that opens the moon."
    target = tmp_path / "narration" / "scene1.wav"
    path = await text_to_speech_file_inference(
        client, text, str(target), catalog.get("openai-tts-1"), sim.keys(), voice="nova"
    )
    assert Path(path) == target and target.is_file()
    with wave.open(str(target), "rb") as w:  # the extension chose the format: a real WAV
        seconds = w.getnframes() / w.getframerate()
    assert seconds == pytest.approx(speech_seconds(text), abs=0.01)
    assert sim.count("openai", "audio.speech") == 1


async def test_text_to_speech_file_pcm_becomes_wav_and_refusals_raise(
    sim: Simulator, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    from calliope_graph.inference import text_to_speech_file_inference

    config = catalog.get("elevenlabs-multilingual-v2")
    path = await text_to_speech_file_inference(
        client, "Good night.", str(tmp_path / "n.pcm"), config, sim.keys()
    )
    assert Path(path) == tmp_path / "n.wav"  # raw PCM is saved playable, with its header
    sim.add_fault(kind="content_policy", provider="elevenlabs")
    with pytest.raises(ContentPolicyError) as info:
        await text_to_speech_file_inference(
            client, "something awful", str(tmp_path / "x.mp3"), config, sim.keys()
        )
    assert info.value.provider == "elevenlabs" and info.value.code == "bad_prompt"
    assert not (tmp_path / "x.mp3").exists()
