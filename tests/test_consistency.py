"""Consistency ports: reference images, seeds and last frames, typed and mapped per provider.

Validation refuses a port wired to a model whose catalog entry does not `take` it, naming
those that do; each engine puts the port where its provider's API wants it, and the fakes
validate what arrives (the OpenAI edit through the official SDK).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder

from calliope_graph.config import catalog
from calliope_graph.context import RunContext
from calliope_graph.engines import fal, google, luma, openai_media, runway, stability
from calliope_graph.engines._registry import Conversion, config_problem
from calliope_graph.errors import ConfigurationError, FlowSpecError
from calliope_graph.flow import Flow
from calliope_graph.media import Image
from calliope_graph.nodes import ImageAndTextToVideo, TextToImage
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes

MEDIA = "https://media.example.com/story"


def picture(ctx: RunContext, name: str, text: str) -> Image:
    return Image.open(ctx.store.write_bytes(f"frames/{name}.png", image_bytes(text, 320, 180)))


# -- validation ---------------------------------------------------------------------------------
def sheet_flow(model: str) -> Flow:
    flow = Flow("scene")
    prompt = flow.input("prompt", "text")
    sheet = flow.input("sheet", "image")
    node = flow.add("scene", TextToImage(model), {"prompt": prompt, "reference_images": sheet})
    flow.output("image", node["image"])
    return flow


def test_reference_images_on_a_model_that_cannot_take_them_is_refused() -> None:
    with pytest.raises((ConfigurationError, FlowSpecError)) as info:
        sheet_flow("stability-core").plan()
    message = str(info.value)
    assert "'scene'" in message and "'stability-core'" in message
    assert "reference_images" in message
    able = re.search(r"models that can: ([^.]*)", message)
    assert able and {"google-gemini-image", "openai-gpt-image-2"} <= set(able.group(1).split(", "))
    sheet_flow("google-gemini-image").plan()  # a model that takes them is fine


def test_last_frame_and_seed_are_refused_where_not_taken() -> None:
    flow = Flow("clip")
    image = flow.input("image", "image")
    end = flow.input("end", "image")
    text = flow.input("text", "text")
    node = flow.add(
        "clip",
        ImageAndTextToVideo("runway-gen4-turbo"),
        {"image": image, "text": text, "last_frame": end},
    )
    flow.output("video", node["video"])
    with pytest.raises((ConfigurationError, FlowSpecError), match="last_frame") as info:
        flow.plan()
    assert "google-veo" in str(info.value) and "luma-ray-2" in str(info.value)
    problem = config_problem(
        Conversion.TEXT_TO_IMAGE, catalog.get("openai-gpt-image-2"), wired={"seed"}
    )
    assert problem is not None
    able = problem.split("models that can: ")[1].split(". ")[0].split(", ")
    assert "stability-core" in able and "openai-gpt-image-2" not in able


def test_every_model_that_takes_a_port_serves_its_conversion() -> None:
    ports = {
        "reference_images": "text_to_image",
        "seed": None,
        "last_frame": "image_and_text_to_video",
    }
    for name in catalog:
        model = catalog.get(name).model
        for port in model.takes:
            assert port in ports, f"{name}: unknown port {port!r}"
            kind = ports[port]
            if kind is not None:
                assert model.kind_problem(kind) is None, name


# -- each provider's request fields ---------------------------------------------------------------
async def test_gemini_image_sends_references_as_inline_parts_and_the_seed(
    rctx: RunContext, rec: Recorder
) -> None:
    refs = [picture(rctx, "hero", "a hero"), picture(rctx, "style", "a style")]
    config = catalog.get("google-gemini-image")
    image = await google.text_to_image(
        rctx, "the hero at the gate", config, output_name="s.png", reference_images=refs, seed=9
    )
    assert Path(image.path).is_file()
    body = json.loads(rec.requests[-1].content)
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"text": "the hero at the gate"}
    assert [p["inlineData"]["mimeType"] for p in parts[1:]] == ["image/png", "image/png"]
    assert body["generationConfig"]["seed"] == 9


async def test_veo_takes_a_last_frame_and_a_seed(rctx: RunContext, rec: Recorder) -> None:
    first, last = picture(rctx, "a", "dawn"), picture(rctx, "b", "dusk")
    config = catalog.get("google-veo")
    await google.image_and_text_to_video(
        rctx, first, "the day passes", config, output_name="v", last_frame=last, seed=3
    )
    body = json.loads(rec.requests[0].content)
    instance = body["instances"][0]
    assert instance["lastFrame"]["mimeType"] == "image/png"
    assert instance["lastFrame"]["bytesBase64Encoded"] != instance["image"]["bytesBase64Encoded"]
    assert body["parameters"]["seed"] == 3


async def test_the_veo_fake_refuses_a_malformed_last_frame(sim: Simulator) -> None:
    async with sim.client() as client:
        response = await client.post(
            "https://generativelanguage.googleapis.com/v1beta/models/"
            "veo-3.1-generate-preview:predictLongRunning",
            json={"instances": [{"prompt": "x", "lastFrame": {"mimeType": "image/png"}}]},
            headers={"x-goog-api-key": sim.key_for("google")},
        )
    assert response.status_code == 400 and "lastFrame" in response.text


async def test_luma_last_frame_is_keyframe_frame1(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    first, last = picture(rctx, "a", "dawn"), picture(rctx, "b", "dusk")
    for image in (first, last):
        sim.serve_download(
            f"{MEDIA}/frames/{Path(image.path).name}",
            httpx.Response(
                200, content=Path(image.path).read_bytes(), headers={"content-type": "image/png"}
            ),
        )
    config = catalog.get("luma-ray-2").with_parameters(image_base_url=MEDIA)
    await luma.image_and_text_to_video(
        rctx, first, "the day passes", config, output_name="v", last_frame=last
    )
    body = json.loads(rec.requests[0].content)
    assert body["keyframes"] == {
        "frame0": {"type": "image", "url": f"{MEDIA}/frames/a.png"},
        "frame1": {"type": "image", "url": f"{MEDIA}/frames/b.png"},
    }


async def test_seed_ports_land_in_each_providers_request(rctx: RunContext, rec: Recorder) -> None:
    await stability.text_to_image(
        rctx, "a fox", catalog.get("stability-core"), output_name="a.png", seed=11
    )
    assert b'name="seed"\r\n\r\n11' in rec.requests[-1].content
    await fal.text_to_image(
        rctx, "a fox", catalog.get("fal-flux-schnell"), output_name="b.png", seed=12
    )
    sent = [
        json.loads(r.content)
        for r in rec.requests
        if r.method == "POST" and r.url.host.endswith("fal.run")
    ]
    assert sent and sent[-1]["seed"] == 12
    image = picture(rctx, "c", "a harbour")
    await runway.image_and_text_to_video(
        rctx, image, "waves", catalog.get("runway-gen4-turbo"), output_name="v", seed=13
    )
    created = next(r for r in rec.requests if r.url.path.endswith("/image_to_video"))
    assert json.loads(created.content)["seed"] == 13


async def test_openai_reference_images_go_to_image_edits(rctx: RunContext, rec: Recorder) -> None:
    refs = [picture(rctx, "hero", "a hero"), picture(rctx, "style", "a style")]
    image = await openai_media.text_to_image(
        rctx,
        "the hero at the gate",
        catalog.get("openai-gpt-image-2"),
        output_name="s.png",
        reference_images=refs,
    )
    assert Path(image.path).is_file()
    sent = rec.requests[-1]
    assert sent.url.path == "/v1/images/edits"
    assert sent.content.count(b'name="image[]"') == 2
    assert b'name="prompt"\r\n\r\nthe hero at the gate' in sent.content


async def test_the_edits_fake_answers_the_official_sdk(sim: Simulator, tmp_path: Path) -> None:
    from openai import AsyncOpenAI

    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(image_bytes("a hero", 64, 64))
    http: Any = sim.client()  # a plain httpx.AsyncClient, which the SDK accepts
    async with http:
        client = AsyncOpenAI(
            api_key=sim.key_for("openai"), base_url="https://api.openai.com/v1", http_client=http
        )
        answer = await client.images.edit(
            image=[sheet.open("rb"), sheet.open("rb")], prompt="the hero", model="gpt-image-2"
        )
    assert answer.data and answer.data[0].b64_json
    assert answer.usage is not None and answer.usage.input_tokens_details.image_tokens > 0
    assert sim.count("openai", "images.edits") == 1


async def test_stability_draws_image_to_image_from_the_first_reference(
    rctx: RunContext, rec: Recorder
) -> None:
    sheet = picture(rctx, "hero", "a hero")
    config = catalog.get("stability-sd3").with_parameters(strength=0.4)
    image = await stability.text_to_image(
        rctx, "the hero", config, output_name="s.png", width=1024, height=576,
        reference_images=[sheet],
    )  # fmt: skip
    assert Path(image.path).is_file()
    sent = rec.requests[-1].content
    assert b'name="mode"\r\n\r\nimage-to-image' in sent
    assert b'name="strength"\r\n\r\n0.4' in sent
    assert b'name="image"; filename="reference.png"' in sent
    assert b'name="aspect_ratio"' not in sent
