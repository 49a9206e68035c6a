"""Consistency ports on fal, Luma and Runway (issue 20 item 4): fal's image-to-image / edit
apps take ``reference_images``, Luma Photon takes them as ``image_ref`` (or
``character_ref``), Runway's Veo 3.1 takes ``last_frame``. Per provider: a flow with the
port runs against the simulator, which keeps the mapped field as the provider would; the
fakes refuse what the provider refuses; validation refuses the port on a model of that
provider that cannot take it, naming those that can. (test_consistency.py has the other
providers; test_provider_specs.py checks these requests against the official SDKs' types.)
"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from _support import Recorder

from calliope_graph.config import ModelConfig, catalog
from calliope_graph.context import RunContext
from calliope_graph.engines import fal, luma, runway
from calliope_graph.errors import ConfigurationError, FlowSpecError, InvalidRequestError
from calliope_graph.flow import Flow
from calliope_graph.media import Image
from calliope_graph.nodes import ImageAndTextToVideo, TextToImage
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes

MEDIA = "https://media.example.com/story"


def picture(ctx: RunContext, name: str, text: str, size: tuple[int, int] = (320, 180)) -> Image:
    return Image.open(ctx.store.write_bytes(f"frames/{name}.png", image_bytes(text, *size)))


def outside(tmp_path: Path, name: str, text: str) -> Path:
    """An image file outside the output directory (a flow input)."""
    path = tmp_path / f"{name}.png"
    path.write_bytes(image_bytes(text, 256, 256))
    return path


def sheet_flow(model: str | ModelConfig, **ports: str) -> Flow:
    """prompt + sheet → one text_to_image node with the sheet as its reference image."""
    flow = Flow("scene")
    wired: dict[str, Any] = {"prompt": flow.input("prompt", "text")}
    wired["reference_images"] = flow.input("sheet", "image")
    for port, kind in ports.items():
        wired[port] = flow.input(port, kind)
    node = flow.add("scene", TextToImage(model, width=1024, height=576), wired)
    flow.output("image", node["image"])
    return flow


def refused(flow: Flow) -> str:
    with pytest.raises((ConfigurationError, FlowSpecError)) as info:
        flow.plan()
    return str(info.value)


def able(message: str) -> set[str]:
    found = re.search(r"models that can: (.*?)\. Choose", message)  # names hold dots
    assert found, message
    return set(found.group(1).split(", "))


# -- fal ----------------------------------------------------------------------------------------
def fal_submits(rec: Recorder) -> list[dict[str, Any]]:
    return [
        json.loads(r.content)
        for r in rec.requests
        if r.method == "POST" and r.url.host == "queue.fal.run"
    ]


async def test_a_flow_draws_from_a_sheet_with_fal_kontext(
    rctx: RunContext, rec: Recorder, sim: Simulator, tmp_path: Path
) -> None:
    sheet = outside(tmp_path, "sheet", "a fox in a red coat")
    result = await sheet_flow("fal-flux-kontext", seed="any").ainvoke(
        {"prompt": "the fox at the gate", "sheet": str(sheet), "seed": 7},
        out_dir=tmp_path / "out",
        ctx=rctx,
    )
    image = result.outputs["image"]
    assert Path(image.path).is_file() and image.width > image.height  # 16:9 asked
    (sent,) = fal_submits(rec)
    assert rec.requests[0].url.path == "/fal-ai/flux-pro/kontext/multi"
    assert sent["aspect_ratio"] == "16:9" and sent["seed"] == 7
    assert "image_size" not in sent  # Kontext takes aspect_ratio, not image_size
    (url,) = sent["image_urls"]
    assert base64.b64decode(url.split(",", 1)[1]) == sheet.read_bytes()
    # the fake keeps the request's inputs as sent, as fal's request history does
    (job,) = sim.state("fal")["requests"].values()
    assert job.inputs["image_urls"] == [url]


async def test_flux_image_to_image_takes_the_first_reference_in_image_url(
    rctx: RunContext, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    first = picture(rctx, "hero", "a hero", (384, 256))
    second = picture(rctx, "style", "a style")
    config = catalog.get("fal-flux-dev-image-to-image").with_parameters(strength=0.6)
    with caplog.at_level(logging.WARNING, "calliope_graph.engines.fal"):
        image = await fal.text_to_image(
            rctx, "the hero", config, output_name="s.png", width=1024, height=576,
            reference_images=[first, second], seed=5,
        )  # fmt: skip
    (sent,) = fal_submits(rec)
    assert sent["image_url"].startswith("data:image/png;base64,")
    assert sent["strength"] == 0.6 and sent["seed"] == 5
    assert "image_size" not in sent and "aspect_ratio" not in sent
    assert (image.width, image.height) == (384, 256)  # the output takes the input's size
    assert "sent the first of 2 reference images" in caplog.text


async def test_the_references_steer_the_fakes_drawing(rctx: RunContext) -> None:
    config = catalog.get("fal-flux-kontext").with_parameters(output_format="png")
    drawn = []
    for name in ("fox", "raven"):
        refs = [picture(rctx, name, name)]
        image = await fal.text_to_image(
            rctx, "the fox", config, output_name=f"{name}.png", reference_images=refs, seed=1
        )
        drawn.append(Path(image.path).read_bytes())
    assert drawn[0] != drawn[1]


async def test_the_fal_fake_refuses_a_missing_or_unreadable_input_image(sim: Simulator) -> None:
    headers = {"authorization": f"Key {sim.key_for('fal')}"}
    async with sim.client() as client:
        missing = await client.post(
            "https://queue.fal.run/fal-ai/flux-pro/kontext/multi",
            json={"prompt": "the fox"},
            headers=headers,
        )
        broken = await client.post(
            "https://queue.fal.run/fal-ai/flux/dev/image-to-image",
            json={"prompt": "the fox", "image_url": "data:image/png;base64,AAAA"},
            headers=headers,
        )
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "image_urls"]
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "file_download_error"


def test_validation_refuses_references_on_a_fal_text_to_image_model() -> None:
    message = refused(sheet_flow("fal-flux-schnell"))
    assert "'fal-flux-schnell'" in message and "reference_images" in message
    assert {"fal-flux-kontext", "fal-flux-dev-image-to-image"} <= able(message)
    sheet_flow("fal-flux-kontext").plan()  # one that takes them is fine


def test_validation_refuses_a_fal_edit_app_without_references() -> None:
    flow = Flow("scene")
    node = flow.add("scene", TextToImage("fal-flux-kontext"), {"prompt": flow.input("p", "text")})
    flow.output("image", node["image"])
    message = refused(flow)
    assert "reference_images" in message and "fal-flux-dev" in message


async def test_a_fal_text_to_image_app_refuses_references_at_run_time(rctx: RunContext) -> None:
    with pytest.raises(ConfigurationError, match="takes no input image"):
        await fal.text_to_image(
            rctx, "x", catalog.get("fal-flux-schnell"), output_name="x.png",
            reference_images=[picture(rctx, "a", "a")],
        )  # fmt: skip


# -- Luma Photon --------------------------------------------------------------------------------
def photon(**params: Any) -> ModelConfig:
    return catalog.get("luma-photon").with_parameters(image_base_url=MEDIA, **params)


async def test_a_flow_sends_photon_its_references_as_image_ref(
    rctx: RunContext, rec: Recorder, sim: Simulator, tmp_path: Path
) -> None:
    sheet = outside(tmp_path, "sheet", "a fox in a red coat")
    result = await sheet_flow(photon()).ainvoke(
        {"prompt": "the fox at the gate", "sheet": str(sheet)}, out_dir=tmp_path / "out", ctx=rctx
    )
    assert Path(result.outputs["image"].path).is_file()
    body = json.loads(rec.requests[0].content)
    (ref,) = body["image_ref"]
    # a flow input outside the output directory is copied into frames/ and sent by its URL
    assert re.fullmatch(rf"{MEDIA}/frames/sheet[^/]*\.png", ref["url"]) and ref["weight"] == 0.85
    assert (tmp_path / "out" / ref["url"].removeprefix(f"{MEDIA}/")).is_file()
    assert body["aspect_ratio"] == "16:9" and "character_ref" not in body
    (generation,) = sim.state("luma")["generations"].values()
    assert generation.request["image_ref"] == body["image_ref"]  # kept as Luma keeps it


async def test_photon_character_references_go_to_identity0(rctx: RunContext, rec: Recorder) -> None:
    refs = [picture(rctx, "front", "the hero"), picture(rctx, "side", "the hero, side")]
    await luma.text_to_image(
        rctx, "the hero", photon(reference_as="character"), output_name="h.png",
        reference_images=refs,
    )  # fmt: skip
    body = json.loads(rec.requests[0].content)
    assert body["character_ref"] == {
        "identity0": {"images": [f"{MEDIA}/frames/front.png", f"{MEDIA}/frames/side.png"]}
    }
    assert "image_ref" not in body


async def test_photon_references_need_a_public_url_and_at_most_four(
    rctx: RunContext, rec: Recorder
) -> None:
    refs = [picture(rctx, f"r{n}", f"ref {n}") for n in range(5)]
    with pytest.raises(ConfigurationError, match="image_base_url"):
        await luma.text_to_image(
            rctx, "x", catalog.get("luma-photon"), output_name="x.png", reference_images=refs[:1]
        )
    with pytest.raises(ConfigurationError, match="at most 4 reference images"):
        await luma.text_to_image(rctx, "x", photon(), output_name="x.png", reference_images=refs)
    assert not rec.requests  # refused before anything was paid for


async def test_the_luma_fake_refuses_bad_references(sim: Simulator, rctx: RunContext) -> None:
    headers = {"authorization": f"Bearer {sim.key_for('luma')}"}
    url = "https://api.lumalabs.ai/dream-machine/v1/generations/image"
    base = {"model": "photon-1", "prompt": "the fox at the gate"}
    async with sim.client() as client:
        heavy = await client.post(
            url, json={**base, "image_ref": [{"url": f"{MEDIA}/a.png", "weight": 2}]},
            headers=headers,
        )  # fmt: skip
        many = await client.post(
            url,
            json={**base, "character_ref": {"identity0": {"images": [f"{MEDIA}/a.png"] * 5}}},
            headers=headers,
        )
    assert heavy.status_code == 400 and "weight" in heavy.json()["detail"]
    assert many.status_code == 400 and "at most 4" in many.json()["detail"]
    # a reference Luma cannot download (not https) fails the generation
    config = catalog.get("luma-photon").with_parameters(image_base_url="https://localhost")
    with pytest.raises(InvalidRequestError, match="input image"):
        await luma.text_to_image(
            rctx, "the fox", config, output_name="x.png",
            reference_images=[picture(rctx, "a", "a")],
        )  # fmt: skip


def test_validation_wants_photons_public_url_and_refuses_a_seed() -> None:
    message = refused(sheet_flow("luma-photon"))
    assert "image_base_url" in message and "reference images" in message
    sheet_flow(photon()).plan()
    seeded = refused(sheet_flow(photon(), seed="any"))
    assert "'seed'" in seeded and "luma-photon" not in able(seeded)
    assert {"fal-flux-kontext", "stability-core"} <= able(seeded)


# -- Runway -------------------------------------------------------------------------------------
def clip_flow(model: str) -> Flow:
    flow = Flow("clip")
    node = flow.add(
        "clip",
        ImageAndTextToVideo(model),
        {
            "image": flow.input("image", "image"),
            "text": flow.input("text", "text"),
            "last_frame": flow.input("end", "image"),
        },
    )
    flow.output("video", node["video"])
    return flow


async def test_a_flow_sends_runway_veo_its_last_frame(
    rctx: RunContext, rec: Recorder, sim: Simulator, tmp_path: Path
) -> None:
    dawn, dusk = outside(tmp_path, "dawn", "dawn"), outside(tmp_path, "dusk", "dusk")
    result = await clip_flow("runway-veo3.1").ainvoke(
        {"image": str(dawn), "text": "the day passes", "end": str(dusk)},
        out_dir=tmp_path / "out",
        ctx=rctx,
    )
    assert Path(result.outputs["video"].path).is_file()
    created = next(r for r in rec.requests if r.url.path == "/v1/image_to_video")
    body = json.loads(created.content)
    first, last = body["promptImage"]
    assert (first["position"], last["position"]) == ("first", "last")
    assert base64.b64decode(last["uri"].split(",", 1)[1]) == dusk.read_bytes()
    (task,) = sim.state("runway")["tasks"].values()
    assert task.last_image == dusk.read_bytes() and task.image == dawn.read_bytes()


def test_validation_refuses_a_last_frame_on_runway_gen4_turbo() -> None:
    message = refused(clip_flow("runway-gen4-turbo"))
    assert "'runway-gen4-turbo'" in message and "last_frame" in message
    assert {"runway-veo3.1", "runway-veo3.1-fast", "google-veo", "luma-ray-2"} <= able(message)
    clip_flow("runway-veo3.1").plan()


async def test_runway_gen4_refuses_a_last_frame_before_paying(
    rctx: RunContext, rec: Recorder
) -> None:
    frame = picture(rctx, "a", "dawn")
    with pytest.raises(ConfigurationError, match=r"takes only a first frame.*veo3\.1"):
        await runway.image_and_text_to_video(
            rctx, frame, "x", catalog.get("runway-gen4-turbo"), output_name="v", last_frame=frame
        )
    assert not rec.requests


async def test_the_runway_fake_takes_a_last_frame_only_where_the_model_does(
    sim: Simulator,
) -> None:
    uri = "data:image/png;base64," + base64.b64encode(image_bytes("dusk", 96, 54)).decode()
    frames = [{"uri": uri, "position": "first"}, {"uri": uri, "position": "last"}]
    headers = {"authorization": f"Bearer {sim.key_for('runway')}", "x-runway-version": "2024-11-06"}
    async with sim.client() as client:
        gen4 = await client.post(
            "https://api.dev.runwayml.com/v1/image_to_video",
            json={"model": "gen4_turbo", "promptImage": frames, "ratio": "1280:720"},
            headers=headers,
        )
        only_last = await client.post(
            "https://api.dev.runwayml.com/v1/image_to_video",
            json={"model": "veo3.1", "promptImage": frames[1:], "ratio": "1280:720"},
            headers=headers,
        )
    assert gen4.status_code == 400
    assert gen4.json()["issues"][0]["path"] == ["promptImage", 1, "position"]
    assert only_last.status_code == 400 and "'first'" in only_last.json()["issues"][0]["message"]
