"""Generated media fetched into the store: the tail every job-polling engine shares (Luma,
fal, Runway, Replicate, Gemini's Veo) once its provider answers a file URL.

* :func:`download_image` downloads the image and saves it again under its real format's
  extension (a ``.png`` asked for may be a JPEG), removing the first copy; a file that is not
  an image is removed and its MediaError raised.
* :func:`download_video` downloads the video as ``output_name`` with an ``.mp4`` extension.

Both bound the download by ``max_bytes`` (the engine's cap, or its ``max_download_bytes``
model parameter: :func:`cap`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.errors import MediaError
from calliope_graph.media import Image, Video

__all__ = ["cap", "download_image", "download_video", "mp4_name"]


def cap(config: ModelConfig, default: int) -> int:
    """The download bound: the ``max_download_bytes`` model parameter, else ``default``."""
    return int(config.parameters.get("max_download_bytes") or default)


def mp4_name(output_name: str) -> str:
    """``output_name`` with an ``.mp4`` extension (kept when it has one)."""
    if output_name.lower().endswith(".mp4"):
        return output_name
    return str(Path(output_name).with_suffix(".mp4"))


async def download_image(
    ctx: RunContext, url: str, output_name: str, *, max_bytes: int, provider: str
) -> Image:
    """The image at ``url``, saved as ``output_name`` under its real format's extension."""
    path = await ctx.store.download(
        ctx.client, url, output_name, max_bytes=max_bytes, provider=provider
    )
    try:
        image = await ctx.store.asave_image(output_name, ctx.store.read_download(path))
    except MediaError:
        path.unlink(missing_ok=True)
        raise
    if Path(image.path) != path:
        path.unlink(missing_ok=True)  # saved again under the real format's extension
    return image


async def download_video(
    ctx: RunContext,
    url: str,
    output_name: str,
    *,
    max_bytes: int,
    provider: str,
    headers: Mapping[str, str] | None = None,
) -> Video:
    """The video at ``url``, saved as ``output_name`` with an ``.mp4`` extension
    (``headers``: what the download needs, e.g. Gemini's key for a Veo file URI)."""
    path = await ctx.store.download(
        ctx.client, url, mp4_name(output_name), max_bytes=max_bytes, provider=provider,
        headers=headers,
    )  # fmt: skip
    return await ctx.store.aopen_video(path)
