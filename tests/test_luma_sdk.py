"""Luma's official Python SDK (``lumaai``) against the Luma fake.

The SDK takes an ``http_client`` and a ``base_url``, so it talks to the simulator's
in-process transport directly. If it creates, reads and deletes generations through the
fake and raises its own error classes on the fake's answers, the fake speaks Luma's wire
format and not just our engine's idea of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import lumaai
import pytest

from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_info

BASE = "https://api.lumalabs.ai/dream-machine/v1"
FRAME = "https://media.example.com/kite.png"


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[lumaai.AsyncLumaAI]:
    http = sim.client()
    sdk = lumaai.AsyncLumaAI(
        auth_token=sim.key_for("luma"), base_url=BASE, http_client=http, max_retries=0
    )
    yield sdk
    await sdk.close()
    await http.aclose()


async def test_sdk_creates_and_polls_a_photon_image(
    client: lumaai.AsyncLumaAI, sim: Simulator
) -> None:
    sim.poll_steps = 2
    generation = await client.generations.image.create(
        model="photon-1", prompt="a lighthouse at dusk", aspect_ratio="1:1", format="png"
    )
    assert generation.state == "queued" and generation.generation_type == "image"
    assert generation.created_at is not None and generation.created_at.year == 2025
    assert generation.id
    states = []
    while True:
        current = await client.generations.get(generation.id)
        states.append(current.state)
        if current.state in ("completed", "failed"):
            break
    assert states == ["queued", "completed"]
    assert current.assets is not None and current.assets.image
    async with sim.client() as http:
        data = (await http.get(current.assets.image)).content
    assert data.startswith(b"\x89PNG")


async def test_sdk_creates_a_ray_video_from_a_keyframe(
    client: lumaai.AsyncLumaAI, sim: Simulator
) -> None:
    sim.serve_download(
        FRAME,
        httpx.Response(
            200, content=image_bytes("a kite", 96, 54), headers={"content-type": "image/png"}
        ),
    )
    sim.poll_steps = 1
    generation = await client.generations.create(
        model="ray-2",
        prompt="the kite dives",
        keyframes={"frame0": {"type": "image", "url": FRAME}},
        aspect_ratio="16:9",
        duration="5s",
        resolution="720p",
    )
    assert sim.calls[("luma", "generations.video")] == 1
    assert generation.id is not None
    done = await client.generations.get(generation.id)
    assert done.state == "completed" and done.assets is not None and done.assets.video
    assert done.model == "ray-2"
    async with sim.client() as http:
        video = (await http.get(done.assets.video)).content
    assert mp4_info(video)["codec"] == "avc1"
    await client.generations.delete(generation.id)
    with pytest.raises(lumaai.NotFoundError):
        await client.generations.get(generation.id)


async def test_sdk_sees_a_moderated_generation_fail(
    client: lumaai.AsyncLumaAI, sim: Simulator
) -> None:
    sim.add_fault(kind="content_policy", provider="luma")
    sim.poll_steps = 1
    generation = await client.generations.image.create(model="photon-flash-1", prompt="a fight")
    assert generation.id is not None
    failed = await client.generations.get(generation.id)
    assert failed.state == "failed" and failed.failure_reason == "Advanced prompt moderation failed"


async def test_sdk_error_classes_match_the_fakes_statuses(
    client: lumaai.AsyncLumaAI, sim: Simulator
) -> None:
    with pytest.raises(lumaai.BadRequestError) as bad:
        await client.generations.image.create(model="photon-1", prompt="ab")
    assert bad.value.status_code == 400
    assert bad.value.body == {"detail": "Prompt is too short, minimum length is 3 characters"}

    wrong = client.with_options(auth_token="luma-wrong")
    with pytest.raises(lumaai.AuthenticationError):
        await wrong.generations.get("x")

    sim.add_fault(kind="rate_limit", provider="luma", first_n=1)
    with pytest.raises(lumaai.RateLimitError):
        await client.generations.get("x")
    sim.add_fault(kind="overloaded", provider="luma", first_n=1)
    with pytest.raises(lumaai.InternalServerError):
        await client.generations.get("x")
    assert (await client.ping.check()) is not None
