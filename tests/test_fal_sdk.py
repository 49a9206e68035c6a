"""fal's official Python SDK (``fal-client``) against the fal fake, over the loopback
simulator server.

fal-client builds its queue URLs from ``https://{FAL_QUEUE_RUN_HOST}/`` (read when the module
is imported), so the test points its ``QUEUE_URL_FORMAT`` at the server's ``/fal/`` prefix;
everything else — submit, status, result, cancel, the answers' ``status_url``/
``response_url`` — is the SDK's own code parsing the fake's answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import fal_client
import httpx
import pytest
from fal_client import client as fal_module

from calliope_graph.simulate import Simulator
from calliope_graph.simulate.server import SimulatorServer
from calliope_graph.testing import image_bytes

FLUX = "fal-ai/flux/schnell"
KLING = "fal-ai/kling-video/v2.5-turbo/standard/image-to-video"
KONTEXT = "fal-ai/flux-pro/kontext/multi"


@pytest.fixture
async def server(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(sim) as running:
        monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{running.base_urls()['fal']}/")
        yield running


@pytest.fixture
def client(sim: Simulator, server: SimulatorServer) -> fal_client.AsyncClient:
    return fal_client.AsyncClient(key=sim.key_for("fal"))


async def test_sdk_submits_polls_and_reads_a_flux_result(
    client: fal_client.AsyncClient, sim: Simulator, server: SimulatorServer
) -> None:
    sim.poll_steps = 4
    handle = await client.submit(FLUX, {"prompt": "a lighthouse", "image_size": "square"})
    assert handle.request_id and handle.status_url.startswith(server.url)
    first = await handle.status()
    assert isinstance(first, fal_client.Queued) and first.position == 0
    events = [event async for event in handle.iter_events(with_logs=True, interval=0)]
    assert isinstance(events[-1], fal_client.Completed)
    assert any(isinstance(e, fal_client.InProgress) for e in events)
    result = await handle.get(interval=0)
    (image,) = result["images"]
    assert (image["width"], image["height"]) == (512, 512)
    assert result["has_nsfw_concepts"] == [False]
    async with httpx.AsyncClient() as http:
        data = (await http.get(image["url"])).content
    assert data[:3] == b"\xff\xd8\xff"  # a JPEG, from the fake's CDN through the server


async def test_sdk_result_and_status_by_request_id(
    client: fal_client.AsyncClient, sim: Simulator
) -> None:
    sim.poll_steps = 1
    picture = (
        "data:image/png;base64,"
        + __import__("base64").b64encode(image_bytes("a kite", 96, 64)).decode()
    )
    handle = await client.submit(KLING, {"prompt": "it flies", "image_url": picture})
    status = await client.status(KLING, handle.request_id)
    assert isinstance(status, fal_client.Completed) and status.error is None
    result = await client.result(KLING, handle.request_id)
    assert result["video"]["content_type"] == "video/mp4"
    assert result["video"]["file_size"] > 0


async def test_sdk_edits_from_reference_images_with_kontext_multi(
    client: fal_client.AsyncClient, sim: Simulator
) -> None:
    """The SDK's own data-URI encoder and queue against the Kontext multi fake (the app the
    catalog's fal-flux-kontext uses for reference images)."""
    sim.poll_steps = 1
    refs = [fal_client.encode(image_bytes(t, 96, 64), "image/png") for t in ("a fox", "a hat")]
    inputs = {"prompt": "the fox wears the hat", "image_urls": refs, "aspect_ratio": "1:1"}
    handle = await client.submit(KONTEXT, inputs)
    result = await handle.get(interval=0)
    (image,) = result["images"]
    assert image["width"] == image["height"] and result["has_nsfw_concepts"] == [False]
    (job,) = sim.state("fal")["requests"].values()
    assert job.inputs["image_urls"] == refs  # kept as sent


async def test_sdk_cancels_a_queued_request(client: fal_client.AsyncClient, sim: Simulator) -> None:
    sim.poll_steps = 10
    handle = await client.submit(FLUX, {"prompt": "x"})
    await handle.cancel()
    status = await handle.status()
    assert isinstance(status, fal_client.Completed) and status.error_type == "client_cancelled"
    assert sim.calls[("fal", "cancel")] == 1


async def test_sdk_raises_its_http_error_on_the_fakes_error_bodies(
    client: fal_client.AsyncClient, sim: Simulator, server: SimulatorServer
) -> None:
    with pytest.raises(fal_client.client.FalClientHTTPError) as bad:
        await client.submit(FLUX, {"image_size": "huge"})
    assert bad.value.status_code == 422
    detail = bad.value.response.json()["detail"]
    assert {item["loc"][-1] for item in detail} == {"prompt", "image_size"}

    wrong = fal_client.AsyncClient(key="not-the-key")
    with pytest.raises(fal_client.client.FalClientHTTPError) as denied:
        await wrong.submit(FLUX, {"prompt": "x"})
    assert denied.value.status_code == 401 and str(denied.value) == "Unauthorized"

    sim.state("fal")["fail"] = "runner_server_error"
    sim.poll_steps = 1
    handle = await client.submit(FLUX, {"prompt": "x"})
    status = await handle.status()
    assert isinstance(status, fal_client.Completed)
    assert status.error_type == "runner_server_error"


async def test_the_simulator_server_exports_fal_and_luma_variables(
    sim: Simulator, server: SimulatorServer
) -> None:
    env = server.environment()  # what `calliope-graph simulate` prints
    assert env["FAL_BASE_URL"] == f"{server.url}/fal"
    assert env["FAL_KEY"] == sim.key_for("fal")
    assert env["LUMAAI_BASE_URL"] == f"{server.url}/luma/dream-machine/v1"
    assert env["LUMAAI_API_KEY"] == sim.key_for("luma")


async def test_the_engines_model_list_reaches_the_fake_through_the_server(
    sim: Simulator, server: SimulatorServer, tmp_path: Path
) -> None:
    from calliope_graph.context import RunContext
    from calliope_graph.engines import fal as engine

    keys = sim.keys(fal_base_url=server.base_urls()["fal"])  # FAL_BASE_URL, as printed
    ctx = RunContext.create(tmp_path, keys=keys)
    try:
        ids = await engine.list_models(ctx)
    finally:
        await ctx.aclose()
    assert "fal-ai/kling-video/v2.5-turbo/standard/image-to-video" in ids


async def test_fals_other_hosts_are_reachable_through_the_server(
    sim: Simulator, server: SimulatorServer
) -> None:
    headers = {"Authorization": f"Key {sim.key_for('fal')}"}
    async with httpx.AsyncClient() as http:
        run = await http.post(f"{server.url}/fal-run/{FLUX}", json={"prompt": "x"}, headers=headers)
        models = await http.get(f"{server.url}/fal-api/v1/models", params={"limit": 2})
    assert run.status_code == 200
    assert run.json()["images"][0]["url"].startswith(f"{server.url}/_sim/cdn/v3.fal.media/")
    assert models.status_code == 401  # the fake wants the key for the model search too
