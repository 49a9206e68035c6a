"""engines/_download.py: the generated-media tail Luma, fal, Runway, Replicate and Veo share."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from calliope_graph.config import catalog
from calliope_graph.context import RunContext
from calliope_graph.engines._download import cap, download_image, download_video, mp4_name
from calliope_graph.errors import MediaError
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_info

CDN = "https://cdn.example.com"


def serve(sim: Simulator, name: str, data: bytes, mime: str) -> str:
    url = f"{CDN}/{name}"
    sim.serve_download(url, httpx.Response(200, content=data, headers={"content-type": mime}))
    return url


async def test_an_image_is_saved_under_its_real_format(ctx: RunContext, sim: Simulator) -> None:
    url = serve(sim, "out", image_bytes("a fox", 64, 48, "JPEG"), "image/jpeg")
    image = await download_image(ctx, url, "scene.png", max_bytes=10**6, provider="luma")
    assert Path(image.path).name == "scene.jpg" and (image.width, image.height) == (64, 48)
    assert not (ctx.store.root / "scene.png").exists()  # the first copy is gone


async def test_a_file_that_is_no_image_is_removed_and_refused(
    ctx: RunContext, sim: Simulator
) -> None:
    url = serve(sim, "bad", b"<html>oops</html>", "text/html")
    with pytest.raises(MediaError):
        await download_image(ctx, url, "scene.png", max_bytes=10**6, provider="fal")
    assert not list(ctx.store.root.glob("scene*"))


async def test_a_video_gets_an_mp4_name_and_the_cap_holds(ctx: RunContext, sim: Simulator) -> None:
    from calliope_graph.simulate._video import mp4_bytes

    url = serve(sim, "clip", mp4_bytes("waves", seconds=1.0), "video/mp4")
    video = await download_video(ctx, url, "clip.mov", max_bytes=10**7, provider="runway")
    assert Path(video.path).name == "clip.mp4" and mp4_info(Path(video.path).read_bytes())
    with pytest.raises(MediaError):
        await download_video(ctx, url, "small", max_bytes=100, provider="runway")
    assert mp4_name("a.MP4") == "a.MP4" and mp4_name("a") == "a.mp4"
    config = catalog.get("runway-gen4-turbo")
    assert cap(config, 5) == 5 and cap(config.with_parameters(max_download_bytes=9), 5) == 9
