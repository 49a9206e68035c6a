"""What each scene of an assembled video shows at a given moment: a still image or a clip's
frames, fitted to the frame and captioned (:mod:`calliope_graph.nodes.assemble_video`)."""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import av
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont, ImageOps

from calliope_graph.errors import MediaError
from calliope_graph.media import Video

__all__ = ["MAX_CAPTION_LINES"]


# -- pictures: what each scene shows at a given moment ---------------------------------------
def _to_frame(image: PILImage.Image) -> av.VideoFrame:
    """An RGB picture as a ``yuv420p`` frame for the H.264 encoder."""
    frame: av.VideoFrame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
    return frame.reformat(format="yuv420p")


def _to_image(frame: av.VideoFrame) -> PILImage.Image:
    image: PILImage.Image = frame.to_image()  # type: ignore[no-untyped-call]
    return image


_Render = Callable[[PILImage.Image], PILImage.Image]


class _Picture(ABC):
    """What one scene shows at local time ``t`` (seconds from its start), as RGB."""

    @abstractmethod
    def at(self, t: float) -> PILImage.Image: ...

    def still(self) -> av.VideoFrame | None:
        """The scene's one frame, ready to encode, when it does not move."""
        return None

    def close(self) -> None:  # noqa: B027 - most pictures hold nothing to release
        """Release what the picture holds open (a clip's decoder); nothing by default."""


class _Still(_Picture):
    def __init__(self, image: PILImage.Image) -> None:
        self.image = image
        self._frame: av.VideoFrame | None = None

    def at(self, t: float) -> PILImage.Image:
        return self.image

    def still(self) -> av.VideoFrame:
        if self._frame is None:
            self._frame = _to_frame(self.image)
        return self._frame


class _Clip(_Picture):
    """A clip's frames, decoded as time goes on (never all in memory); looped when the scene
    is longer than the clip, trimmed when shorter."""

    def __init__(self, video: Video, where: str, render: _Render) -> None:
        self.path = video.path
        self.period = video.duration if video.duration and video.duration > 0 else None
        self.where = where
        self.render = render
        self._container: Any = None
        self._open()

    def _open(self) -> None:
        self.close()
        with self._errors():
            self._container = av.open(self.path)
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            self._step = 1 / float(stream.average_rate or stream.guessed_rate or 24)
            self._frames: Iterator[av.VideoFrame] = self._container.decode(stream)
            self._count = 0
            self._origin = 0.0
            self._next = self._fetch()
        if self._next is None:
            raise MediaError(f"{self.where}: clip {self.path!r} has no frames.", path=self.path)
        self._origin = self._next[0]  # the first frame is the clip's time 0
        self._next = (0.0, self._next[1])
        self._cur = self._next
        self._next = self._fetch()
        self._image: PILImage.Image | None = None

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
            raise MediaError(
                f"{self.where}: clip {self.path!r} cannot be decoded ({exc}): it is corrupt; "
                "generate the clip again or give the scene an image instead.",
                path=self.path,
            ) from None

    def _fetch(self) -> tuple[float, av.VideoFrame] | None:
        with self._errors():
            frame = next(self._frames, None)
        if frame is None:
            return None
        when = float(frame.time) if frame.time is not None else self._count * self._step
        self._count += 1
        return when - self._origin, frame

    def at(self, t: float) -> PILImage.Image:
        t = max(0.0, t)
        if self.period is not None:
            t %= self.period
        if t + 1e-6 < self._cur[0]:  # looped back to the start
            self._open()
        while self._next is not None and self._next[0] <= t + 1e-6:
            self._cur, self._next = self._next, self._fetch()
            self._image = None
        if self._image is None:
            with self._errors():
                self._image = self.render(_to_image(self._cur[1]))
        return self._image

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _fit(image: PILImage.Image, size: tuple[int, int]) -> PILImage.Image:
    """Scaled to fit ``size`` and centred on black (letterbox or pillarbox)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if rgb.size == size:
        return rgb
    return ImageOps.pad(rgb, size, method=PILImage.Resampling.BICUBIC, color=(0, 0, 0))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [text]:
        line = ""
        for word in re.split(r"\s+", paragraph.strip()):
            candidate = f"{line} {word}".strip()
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        if line:
            lines.append(line)
    return lines


#: At most this many caption lines are shown; a longer caption ends in "...".
MAX_CAPTION_LINES = 3


def _caption_overlay(text: str, size: tuple[int, int]) -> PILImage.Image:
    """A transparent frame-sized layer: ``text`` wrapped, bottom-centred on a dark band."""
    width, height = size
    font_size = max(10, round(height / 20))
    font = ImageFont.load_default(size=font_size)
    layer = PILImage.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    lines = _wrap(draw, text, font, width * 0.9)
    if len(lines) > MAX_CAPTION_LINES:
        lines = [*lines[: MAX_CAPTION_LINES - 1], lines[MAX_CAPTION_LINES - 1] + "..."]
    line_height = round(font_size * 1.3)
    pad = max(4, font_size // 2)
    band = len(lines) * line_height + 2 * pad
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 170))
    y = height - band + pad
    for line in lines:
        w = draw.textlength(line, font=font)
        draw.text(((width - w) / 2, y), line, font=font, fill=(255, 255, 255, 255))
        y += line_height
    return layer


def _renderer(caption: PILImage.Image | None, size: tuple[int, int]) -> _Render:
    def render(image: PILImage.Image) -> PILImage.Image:
        frame = _fit(image, size)
        if caption is None:
            return frame
        return PILImage.alpha_composite(frame.convert("RGBA"), caption).convert("RGB")

    return render
