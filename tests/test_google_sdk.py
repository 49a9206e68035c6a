"""The official ``google-genai`` SDK parses what the Gemini fake answers.

The SDK is pointed at the fake with ``http_options``: Google's own base URL and an httpx
client on the simulator's transport (``httpx_async_client``), and, for the loopback server,
the server's ``/google`` prefix as ``base_url``. Calls use the async client (``client.aio``).

What the current SDK (3.x) no longer does is said, not skipped: ``generate_images`` and
``generate_videos`` raise ``ValueError`` in Gemini Developer API mode (Imagen and the SDK's
Veo call are Vertex/Agent Platform only there; google/genai/models.py), so the Imagen and
Veo answers are checked with the SDK's own operation parser (``operations.get``), file
download (``files.download``) and types instead.
"""

from __future__ import annotations

import base64
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from calliope_graph.simulate import Simulator
from calliope_graph.simulate.server import SimulatorServer
from calliope_graph.testing import image_bytes, mp4_info

ORIGIN = "https://generativelanguage.googleapis.com"
PROMPT = "A fox finds a lantern in the harbour."


def sdk(sim: Simulator, key: str | None = None, base_url: str = ORIGIN) -> genai.Client:
    http: Any = sim.client() if base_url == ORIGIN else httpx.AsyncClient()
    return genai.Client(
        api_key=key or sim.key_for("google"),
        http_options=types.HttpOptions(base_url=base_url, httpx_async_client=http),
    )


async def test_generate_content_parses_text_and_usage(sim: Simulator) -> None:
    client = sdk(sim)
    response = await client.aio.models.generate_content(
        model="gemini-3.8-flash",
        contents=PROMPT,
        config=types.GenerateContentConfig(
            system_instruction="You tell fables.", temperature=0.5, max_output_tokens=400
        ),
    )
    assert response.text and response.text.strip()
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage is not None and usage.total_token_count
    assert usage.prompt_tokens_details and usage.prompt_tokens_details[0].modality == (
        types.MediaModality.TEXT
    )
    assert response.model_version == "gemini-3.8-flash"


async def test_streaming_chunks_parse_and_join(sim: Simulator) -> None:
    client = sdk(sim)
    chunks = [
        chunk
        async for chunk in await client.aio.models.generate_content_stream(
            model="gemini-3.8-flash", contents=PROMPT
        )
    ]
    assert len(chunks) > 1
    whole = await client.aio.models.generate_content(model="gemini-3.8-flash", contents=PROMPT)
    assert "".join(c.text or "" for c in chunks) == whole.text
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata.candidates_token_count
    assert sim.count("google", "streamGenerateContent") == 1


async def test_count_tokens_parses(sim: Simulator) -> None:
    counted = await sdk(sim).aio.models.count_tokens(model="gemini-3.8-flash", contents=PROMPT)
    assert counted.total_tokens and counted.total_tokens > 1


async def test_structured_output_parses_into_the_schema(sim: Simulator) -> None:
    from pydantic import BaseModel

    class Scene(BaseModel):
        title: str
        characters: list[str]

    response = await sdk(sim).aio.models.generate_content(
        model="gemini-3.8-flash",
        contents="A fox and a raven.",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=Scene.model_json_schema()
        ),
    )
    assert Scene.model_validate_json(response.text or "").characters


async def test_a_blocked_prompt_parses_as_prompt_feedback(sim: Simulator) -> None:
    sim.add_fault(kind="content_policy", provider="google")
    response = await sdk(sim).aio.models.generate_content(model="gemini-3.8-flash", contents="x")
    assert response.prompt_feedback is not None
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert not response.candidates


async def test_image_and_speech_answers_parse_as_inline_data(sim: Simulator) -> None:
    client = sdk(sim)
    drawn = await client.aio.models.generate_content(
        model="gemini-3.1-flash-image",
        contents="a lighthouse",
        config=types.GenerateContentConfig(
            response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio="16:9")
        ),
    )
    part = drawn.candidates[0].content.parts[0]  # type: ignore[index,union-attr]
    assert part.inline_data and part.inline_data.data and part.inline_data.data[:4] == b"\x89PNG"
    spoken = await client.aio.models.generate_content(
        model="gemini-3.8-flash-tts",
        contents="Hello there.",
        config=types.GenerateContentConfig(
            response_modalities=["AUDIO"],
            speech_config=types.SpeechConfig(
                voice_config=types.VoiceConfig(
                    prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Kore")
                )
            ),
        ),
    )
    audio = spoken.candidates[0].content.parts[0].inline_data  # type: ignore[index,union-attr]
    assert audio and audio.mime_type == "audio/L16;codec=pcm;rate=24000" and audio.data


async def test_models_list_pages_through_every_model(sim: Simulator) -> None:
    pager = await sdk(sim).aio.models.list(config=types.ListModelsConfig(page_size=3))
    names = [model.name async for model in pager]
    assert "models/gemini-3.8-flash" in names and "models/veo-3.1-generate-preview" in names
    assert len(names) == len(set(names)) > 3
    assert sim.count("google", "models.list") > 1  # followed nextPageToken
    model = await sdk(sim).aio.models.get(model="gemini-3.8-flash")
    assert model.input_token_limit and "generateContent" in (model.supported_actions or [])


async def test_veo_operation_and_video_download_parse(sim: Simulator, tmp_path: Path) -> None:
    image = base64.b64encode(image_bytes("a kite", 320, 180)).decode("ascii")
    async with sim.client() as http:
        started = await http.post(
            f"{ORIGIN}/v1beta/models/veo-3.1-generate-preview:predictLongRunning",
            headers={"x-goog-api-key": sim.key_for("google")},
            json={
                "instances": [
                    {"prompt": "it climbs", "image": {"bytesBase64Encoded": image,
                                                      "mimeType": "image/png"}}
                ],
                "parameters": {"aspectRatio": "16:9", "durationSeconds": 6},
            },
        )  # fmt: skip
    client = sdk(sim)
    operation = types.GenerateVideosOperation.model_validate({"name": started.json()["name"]})
    for _ in range(sim.poll_steps):
        operation = await client.aio.operations.get(operation)
    assert operation.done and operation.response and operation.response.generated_videos
    video = operation.response.generated_videos[0].video
    assert video is not None and video.uri
    data = await client.aio.files.download(file=video)
    assert mp4_info(data)


def test_generate_images_and_videos_are_vertex_only_in_the_current_sdk(sim: Simulator) -> None:
    client = genai.Client(api_key=sim.key_for("google"))
    warnings.simplefilter("ignore")  # the SDK also warns that both methods are deprecated
    with pytest.raises(ValueError, match="only supported in"):
        client.models.generate_images(model="imagen-4.0-generate-001", prompt="x")
    with pytest.raises(ValueError, match="only supported in"):
        client.models.generate_videos(model="veo-3.1-generate-preview", prompt="x")
    assert sim.count() == 0


async def test_errors_parse_as_the_sdks_exceptions(sim: Simulator) -> None:
    with pytest.raises(genai_errors.ClientError) as wrong:
        await sdk(sim, key="AIzaSyWRONG").aio.models.generate_content(
            model="gemini-3.8-flash", contents="hi"
        )
    assert wrong.value.code == 400 and wrong.value.status == "INVALID_ARGUMENT"
    with pytest.raises(genai_errors.ClientError) as missing:
        await sdk(sim).aio.models.generate_content(model="gemini-1.0-pro", contents="hi")
    assert missing.value.code == 404 and missing.value.status == "NOT_FOUND"
    sim.add_fault(kind="rate_limit", provider="google", retry_after=7)
    with pytest.raises(genai_errors.ClientError) as limited:
        await sdk(sim).aio.models.generate_content(model="gemini-3.8-flash", contents="hi")
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    sim.clear_faults()
    sim.add_fault(kind="unavailable", provider="google")
    with pytest.raises(genai_errors.ServerError) as busy:
        await sdk(sim).aio.models.generate_content(model="gemini-3.8-flash", contents="hi")
    assert busy.value.code == 503 and busy.value.status == "UNAVAILABLE"


async def test_the_sdk_talks_to_the_loopback_server(sim: Simulator) -> None:
    async with SimulatorServer(sim) as server:
        env = server.environment()
        assert env["GEMINI_BASE_URL"] == f"{server.url}/google"
        assert env["GEMINI_API_KEY"] == sim.key_for("google")
        client = sdk(sim, base_url=env["GEMINI_BASE_URL"])
        response = await client.aio.models.generate_content(
            model="gemini-3.8-flash", contents=PROMPT
        )
        chunks = [
            c
            async for c in await client.aio.models.generate_content_stream(
                model="gemini-3.8-flash", contents=PROMPT
            )
        ]
    assert response.text and "".join(c.text or "" for c in chunks) == response.text
