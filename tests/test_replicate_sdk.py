"""Replicate's official Python SDK (``replicate``) against the Replicate fake.

The SDK takes an httpx transport (``Client(transport=...)``), so it talks to the simulator
directly. If it parses the fake's predictions, versions and files, and raises its own
errors on the fake's problem details, the fake speaks Replicate's wire format and not just
our engine's idea of it.
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image as PILImage
from replicate.client import Client
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes

LLAVA = "yorickvp/llava-13b:80537f9eead1a5bfa72d5ac6ea6414379be41d4d4f6679fd776e9535d1eb58bb"
PHOTO = "data:image/png;base64," + base64.b64encode(image_bytes("a kite", 96, 64)).decode()


def sdk(sim: Simulator, token: str | None = None) -> Client:
    client = Client(api_token=token or sim.key_for("replicate"), transport=sim.transport())
    client.poll_interval = 0  # the SDK sleeps this long (really) between polls
    return client


@pytest.fixture
def client(sim: Simulator) -> Client:
    return sdk(sim)


async def test_sdk_runs_flux_and_reads_the_files(client: Client) -> None:
    output = await client.async_run(
        "black-forest-labs/flux-schnell",
        input={"prompt": "a kite over the sea", "aspect_ratio": "16:9", "num_outputs": 2},
    )
    assert isinstance(output, list) and len(output) == 2
    assert all(isinstance(item, FileOutput) for item in output)
    assert str(output[0]).startswith("https://replicate.delivery/")
    data = await output[0].aread()
    with PILImage.open(io.BytesIO(data)) as im:
        assert im.format == "WEBP" and im.size == (1360, 768)


async def test_sdk_reads_a_single_file_output(client: Client) -> None:
    output = await client.async_run(
        "black-forest-labs/flux-1.1-pro", input={"prompt": "x", "output_format": "jpg"}
    )
    assert isinstance(output, FileOutput) and str(output).endswith("/output.jpg")
    assert (await output.aread())[:3] == b"\xff\xd8\xff"


async def test_sdk_streams_llava_tokens_from_a_version(client: Client, sim: Simulator) -> None:
    tokens = await client.async_run(LLAVA, input={"image": PHOTO, "prompt": "What is this?"})
    # The fake's version schema says the output is a token iterator, so the SDK yields tokens.
    text = "".join([token async for token in tokens])
    assert text.startswith("The image shows")
    assert sim.calls[("replicate", "models.versions.get")] == 1


async def test_sdk_polls_a_prediction_to_the_end(client: Client, sim: Simulator) -> None:
    sim.poll_steps = 3
    prediction = await client.predictions.async_create(
        model="meta/meta-llama-3-8b-instruct", input={"prompt": "Tell me of the sea"}
    )
    statuses = [prediction.status]
    assert prediction.output is None
    assert prediction.urls is not None and prediction.urls["get"].endswith(prediction.id)
    await prediction.async_reload()
    statuses.append(prediction.status)
    assert statuses == ["starting", "processing"]
    assert prediction.progress is not None and prediction.progress.current == 1
    assert prediction.progress.total == 3
    await prediction.async_wait()
    assert prediction.status == "succeeded"
    assert isinstance(prediction.output, list) and "".join(prediction.output).strip()
    assert prediction.metrics is not None and prediction.metrics["predict_time"] == 3.0
    assert prediction.completed_at is not None


async def test_sdk_run_without_waiting_polls(client: Client, sim: Simulator) -> None:
    output = await client.async_run(
        "meta/meta-llama-3-8b-instruct", input={"prompt": "A gull"}, wait=False
    )
    assert isinstance(output, list) and "".join(output).strip()
    assert sim.calls[("replicate", "predictions.get")] == 2


async def test_sdk_cancels(client: Client, sim: Simulator) -> None:
    prediction = await client.predictions.async_create(
        model="meta/meta-llama-3-8b-instruct", input={"prompt": "x"}
    )
    await prediction.async_cancel()
    assert prediction.status == "canceled"
    again = await client.predictions.async_get(prediction.id)
    assert again.status == "canceled"


async def test_sdk_raises_model_error_for_a_failed_prediction(
    client: Client, sim: Simulator
) -> None:
    sim.add_fault(kind="content_policy", provider="replicate")
    with pytest.raises(ModelError) as info:
        await client.async_run("black-forest-labs/flux-schnell", input={"prompt": "x"})
    prediction = info.value.prediction
    assert prediction.status == "failed"
    assert prediction.error is not None and "NSFW content" in prediction.error


async def test_sdk_reads_the_fakes_problem_details(sim: Simulator) -> None:
    client = sdk(sim)
    with pytest.raises(ReplicateError) as invalid:
        await client.async_run("black-forest-labs/flux-schnell", input={"num_outputs": 9})
    assert invalid.value.status == 422 and invalid.value.title == "Input validation failed"
    assert invalid.value.detail is not None and "prompt is required" in invalid.value.detail

    with pytest.raises(ReplicateError) as missing:
        await client.async_run("nobody/nothing", input={"prompt": "x"})
    assert missing.value.status == 404

    with pytest.raises(ReplicateError) as version:
        await client.predictions.async_create(version="0" * 64, input={"prompt": "x"})
    assert version.value.status == 422
    assert version.value.title == "Invalid version or not permitted"

    with pytest.raises(ReplicateError) as denied:
        await sdk(sim, "r8_wrong").predictions.async_get("x")
    assert denied.value.status == 401 and denied.value.title == "Unauthenticated"


async def test_sdk_retries_a_throttled_get(client: Client, sim: Simulator) -> None:
    prediction = await client.predictions.async_create(
        model="meta/meta-llama-3-8b-instruct", input={"prompt": "x"}
    )
    sim.add_fault(
        kind="rate_limit", provider="replicate", endpoint="predictions.get", first_n=1,
        retry_after=0,
    )  # fmt: skip
    fetched = await client.predictions.async_get(prediction.id)  # the SDK retries GETs
    assert fetched.id == prediction.id
    assert sim.calls[("replicate", "predictions.get")] == 2
    sim.add_fault(kind="rate_limit", provider="replicate", endpoint="create", first_n=1)
    with pytest.raises(ReplicateError) as throttled:  # ...but never a POST
        await client.predictions.async_create(
            model="meta/meta-llama-3-8b-instruct", input={"prompt": "x"}
        )
    assert throttled.value.status == 429
    assert throttled.value.detail is not None and "resets in" in throttled.value.detail
