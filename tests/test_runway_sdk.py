"""Runway's official Python SDK (``runwayml``) against the Runway fake.

If the real SDK parses the fake's answers, builds the requests the fake accepts, and
raises its own error classes on the fake's error bodies, the fake speaks Runway's wire
format and not just our engine's idea of it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
import runwayml
from runwayml.lib import polling

from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_info

IMAGE = "data:image/png;base64," + base64.b64encode(image_bytes("a kite", 96, 64)).decode()


@pytest.fixture
async def client(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[runwayml.AsyncRunwayML]:
    # wait_for_task_output sleeps ~6 s between polls; the fake needs no such patience.
    monkeypatch.setattr(polling, "POLL_TIME", 0)
    monkeypatch.setattr(polling, "POLL_JITTER", 0)
    http = httpx.AsyncClient(transport=sim.transport())
    sdk = runwayml.AsyncRunwayML(api_key=sim.key_for("runway"), http_client=http, max_retries=0)
    yield sdk
    await sdk.close()
    await http.aclose()


async def test_sdk_creates_waits_for_and_downloads_a_video(
    client: runwayml.AsyncRunwayML, sim: Simulator
) -> None:
    sim.poll_steps = 3
    task = await client.image_to_video.create(
        model="gen4_turbo",
        prompt_image=IMAGE,
        ratio="1280:720",
        prompt_text="a kite in a storm",
        duration=5,
        seed=3,
    )
    assert task.id
    running = await client.tasks.retrieve(task.id)
    assert running.status == "PENDING"
    done = await task.wait_for_task_output()
    assert done.status == "SUCCEEDED"
    assert isinstance(done, polling.AsyncAwaitableSucceeded)
    assert done.created_at.year == 2025 and done.cost.credits == 25
    (url,) = done.output
    async with sim.client() as http:
        video = await http.get(url)
    assert video.headers["content-type"] == "video/mp4"
    assert mp4_info(video.content)["width"] == 854  # 16:9 at 480p


async def test_sdk_sees_running_progress(client: runwayml.AsyncRunwayML, sim: Simulator) -> None:
    sim.poll_steps = 2
    task = await client.image_to_video.create(
        model="gen4_turbo", prompt_image=[{"uri": IMAGE, "position": "first"}], ratio="720:1280"
    )
    await client.tasks.retrieve(task.id)
    running = await client.tasks.retrieve(task.id)
    assert isinstance(running, polling.AsyncAwaitableRunning)
    assert running.progress == 0.5


async def test_sdk_raises_task_failed_with_the_failure_code(
    client: runwayml.AsyncRunwayML, sim: Simulator
) -> None:
    sim.add_fault(kind="content_policy", provider="runway")
    task = await client.image_to_video.create(
        model="gen4_turbo", prompt_image=IMAGE, ratio="960:960", prompt_text="something"
    )
    with pytest.raises(polling.TaskFailedError) as info:
        await task.wait_for_task_output()
    details = info.value.task_details
    assert details.status == "FAILED"
    assert isinstance(details, polling.AsyncAwaitableFailed)
    assert details.failure_code == "SAFETY.INPUT.TEXT" and details.failure


async def test_sdk_cancel_is_seen_as_cancelled(
    client: runwayml.AsyncRunwayML, sim: Simulator
) -> None:
    task = await client.image_to_video.create(
        model="gen4_turbo", prompt_image=IMAGE, ratio="960:960"
    )
    await client.tasks.delete(task.id)
    with pytest.raises(polling.TaskFailedError) as info:
        await task.wait_for_task_output()
    assert info.value.task_details.status == "CANCELLED"
    assert sim.calls[("runway", "tasks.delete")] == 1


async def test_sdk_error_classes_match_the_fakes_statuses(
    client: runwayml.AsyncRunwayML, sim: Simulator
) -> None:
    with pytest.raises(runwayml.BadRequestError) as bad:
        await client.image_to_video.create(  # type: ignore[call-overload]
            model="gen4_turbo", prompt_image=IMAGE, ratio="1280:768"
        )
    assert bad.value.status_code == 400
    body = bad.value.body
    assert isinstance(body, dict) and body["error"] == "Validation of body failed"
    assert body["issues"][0]["path"] == ["ratio"]

    with pytest.raises(runwayml.NotFoundError):
        await client.tasks.retrieve("00000000-0000-0000-0000-000000000000")

    wrong = client.with_options(api_key="key_" + "0" * 128)
    with pytest.raises(runwayml.AuthenticationError) as denied:
        await wrong.tasks.retrieve("x")
    assert denied.value.status_code == 401

    sim.add_fault(kind="rate_limit", provider="runway", first_n=1)
    with pytest.raises(runwayml.RateLimitError):
        await client.tasks.retrieve("x")
    sim.add_fault(kind="overloaded", provider="runway", first_n=1)
    with pytest.raises(runwayml.InternalServerError) as overloaded:
        await client.tasks.retrieve("x")
    assert overloaded.value.status_code == 504
