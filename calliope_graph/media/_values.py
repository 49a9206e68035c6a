"""The media values graph state carries (:class:`Image`, :class:`Audio`, :class:`Video`,
:class:`ImageAnalysis`): references to files, frozen pydantic models that serialise as plain
JSON; and the process-wide media root their paths serialise relative to."""

from __future__ import annotations

import asyncio
import base64
import os
import re
from pathlib import Path
from typing import Any, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_serializer,
    field_validator,
)

from calliope_graph._files import write_atomic
from calliope_graph.errors import MediaError, show_paths_under
from calliope_graph.media._checks import _IMAGE_MIMES, _check_file
from calliope_graph.media._image import _check_decodes, _open_pil
from calliope_graph.media._probe import _audio_mime, _head, _Probe, _probe, _video_mime

#: Where serialised media paths are relative to (see :func:`set_media_root`); None: as is.
#: Process-wide, not session state: media values are (de)serialised by pydantic inside
#: LangGraph's checkpointers and API, where no session reaches, and must read back alike in
#: every task and thread. Only the server process sets it, once, at start.
_MEDIA_ROOT: Path | None = None


def set_media_root(root: str | os.PathLike[str] | None) -> None:
    """Serialise the paths of media values under ``root`` relative to it, process-wide.

    A server sets this to its media root (``calliope_graph.graphs.server`` does): every
    serialised media value — LangGraph checkpoints, and so the thread state a client reads —
    then names its file by its place under the root (``<thread>/inputs/audio-….wav``), never
    by the server's absolute path, and a relative path read back (a checkpoint restored) is
    taken under the root again; every error message names files under the root the same
    way (:func:`calliope_graph.errors.show_paths_under`). In memory, values keep absolute
    paths. ``None`` turns it off (the default: command-line and Python runs keep absolute
    paths, as before).
    """
    global _MEDIA_ROOT
    _MEDIA_ROOT = None if root is None else Path(root).resolve()
    show_paths_under(None if _MEDIA_ROOT is None else str(_MEDIA_ROOT))  # and in errors


class _Media(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    mime: str
    #: Where the file is kept in object storage (``s3://bucket/key``) when the run writes its
    #: media there (``media_store=``, ``CALLIOPE_MEDIA_STORE``); ``path`` is then the local
    #: working copy, fetched again from ``uri`` where it is missing (another machine).
    uri: str | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _under_media_root(cls, value: Any) -> Any:
        root = _MEDIA_ROOT
        if root is not None and isinstance(value, str) and value and not os.path.isabs(value):
            return os.path.join(root, value)  # a serialised value read back
        return value

    @field_serializer("path")
    def _relative_to_media_root(self, path: str) -> str:
        root = _MEDIA_ROOT
        if root is not None and os.path.isabs(path):
            relative = os.path.relpath(path, root)
            if not relative.startswith(os.pardir):
                return Path(relative).as_posix()
        return path

    def read_bytes(self) -> bytes:
        try:
            return Path(self.path).read_bytes()
        except OSError as exc:
            raise MediaError(
                f"Cannot read {self.path!r}: {exc.strerror}.", path=self.path
            ) from None

    def b64(self) -> str:
        return base64.b64encode(self.read_bytes()).decode("ascii")

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.b64()}"

    @property
    def name(self) -> str:
        return Path(self.path).name


class Image(_Media):
    """An image file: path, mime type and pixel size (probed with Pillow)."""

    width: int
    height: int

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Self:
        """Probe ``path`` and return an Image, or a MediaError saying what is wrong.

        Reads the header for the format and size, refuses images over ``max_pixels``
        (default :func:`max_image_pixels`) before decoding anything, and checks the data
        decodes to the end (JPEGs at 1/8 scale, PNGs by walking their checksummed chunks), so
        even a large file is checked in tens of milliseconds. From async code prefer
        :meth:`aopen`, which does the same in a worker thread.
        """
        p = Path(path)
        _check_file(p, "Image")
        with _open_pil(p, str(p), max_pixels=max_pixels) as im:
            fmt = im.format or ""
            width, height = im.size
            mime = _IMAGE_MIMES.get(fmt)
            if mime is None:
                raise MediaError(
                    f"Image file {str(p)!r} is {fmt or 'an unknown format'}, which providers do "
                    "not accept: convert it to PNG or JPEG.",
                    path=str(p),
                )
            _check_decodes(im, str(p), p)
        return cls(path=str(p), mime=mime, width=width, height=height)

    @classmethod
    async def aopen(cls, path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Self:
        """:meth:`open` in a worker thread, so the event loop keeps running meanwhile."""
        return await asyncio.to_thread(cls.open, path, max_pixels=max_pixels)

    @classmethod
    def check_bytes(cls, data: bytes, name: str, *, max_pixels: int | None = None) -> Self:
        """The checks of :meth:`open` on ``data`` in memory (nothing is written); messages
        name ``name``, which is also the value's ``path`` until the caller writes the bytes
        (``mime`` says the real format, whatever ``name``'s extension)."""
        with _open_pil(data, name, max_pixels=max_pixels) as im:
            fmt = im.format or ""
            mime = _IMAGE_MIMES.get(fmt)
            if mime is None:
                raise MediaError(
                    f"Image {name!r} is {fmt or 'an unknown format'}, which providers do not "
                    "accept: convert it to PNG or JPEG.",
                    path=name,
                )
            width, height = im.size
            _check_decodes(im, name, data)
        return cls(path=name, mime=mime, width=width, height=height)

    @classmethod
    def from_b64(cls, data: str, path: str | os.PathLike[str]) -> Self:
        """Write base64 image data to ``path`` (a plain path, not through a store) and open it."""
        return cls.open(write_atomic(path, base64.b64decode(data)))


class Audio(_Media):
    """An audio file; ``duration`` (seconds) is probed with PyAV when it is opened.

    ``duration_s`` (the earlier name) is still accepted on input, so checkpoints written by
    earlier versions load, and still readable as a property.
    """

    duration: float | None = Field(
        default=None, validation_alias=AliasChoices("duration", "duration_s")
    )

    @property
    def duration_s(self) -> float | None:
        """The duration in seconds (the earlier name of :attr:`duration`)."""
        return self.duration

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Self:
        """Probe ``path`` and return an Audio, or a MediaError naming the file and the problem
        (missing, empty, too large, an unsupported extension, corrupt, no audio stream).
        From async code prefer :meth:`aopen`."""
        p = Path(path)
        _check_file(p, "Audio")
        mime = _audio_mime(str(p), _head(p))
        return cls(path=str(p), mime=mime, duration=_probe(p, "audio").duration)

    @classmethod
    def check_bytes(cls, data: bytes, name: str) -> Self:
        """The checks of :meth:`open` on ``data`` in memory (nothing is written), for a file
        to be called ``name`` (its extension gives the format; messages name it); the value's
        ``path`` is ``name`` until the caller writes the bytes."""
        mime = _audio_mime(name, data[:12])
        return cls(path=name, mime=mime, duration=_probe(data, "audio", name).duration)

    @classmethod
    async def aopen(cls, path: str | os.PathLike[str]) -> Self:
        """:meth:`open` in a worker thread."""
        return await asyncio.to_thread(cls.open, path)


class Video(_Media):
    """A video file (MP4 or WebM) with its ``duration`` (seconds), frame ``width`` and
    ``height`` and frame rate ``fps``, probed with PyAV when it is opened (None in values
    written by earlier versions)."""

    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Self:
        """Probe ``path`` and return a Video, or a MediaError naming the file and the problem.

        Videos are never read into memory whole (PyAV streams them), so there is no size cap
        here: a download is capped when it is made."""
        p = Path(path)
        _check_file(p, "Video", max_bytes=None)
        return cls._checked(str(p), _video_mime(str(p), _head(p)), _probe(p, "video"))

    @classmethod
    def check_bytes(cls, data: bytes, name: str) -> Self:
        """The checks of :meth:`open` on ``data`` in memory (nothing is written); messages
        name ``name``, which is also the value's ``path`` until the caller writes the bytes."""
        return cls._checked(name, _video_mime(name, data[:12]), _probe(data, "video", name))

    @classmethod
    def _checked(cls, path: str, mime: str, info: _Probe) -> Self:
        return cls(
            path=path,
            mime=mime,
            duration=info.duration,
            width=info.width,
            height=info.height,
            fps=info.fps,
        )

    @classmethod
    async def aopen(cls, path: str | os.PathLike[str]) -> Self:
        """:meth:`open` in a worker thread."""
        return await asyncio.to_thread(cls.open, path)


class ImageAnalysis(BaseModel):
    """What an image shows, in the schema Calliope's strategies read."""

    model_config = ConfigDict(frozen=True)

    description: str = ""
    captions: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    objects: list[str] = Field(default_factory=list)
    text: str = ""
    sources: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def all_tags_and_objects(self) -> str:
        """Tags and objects, deduplicated, as one comma-separated string."""
        return ", ".join(_dedupe([*self.tags, *self.objects]))

    def merge(self, other: ImageAnalysis) -> ImageAnalysis:
        """Combine two analyses: lists are unioned, the longer description and text win."""
        return ImageAnalysis(
            description=max(self.description, other.description, key=len),
            captions=_dedupe([*self.captions, *other.captions]),
            tags=_dedupe([*self.tags, *other.tags]),
            objects=_dedupe([*self.objects, *other.objects]),
            text=max(self.text, other.text, key=len),
            sources=_dedupe([*self.sources, *other.sources]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The seed's dict shape (``description``, ``all_captions``, ``all_tags_and_objects``,
        ``text``) plus the separate lists."""
        return {
            "description": self.description,
            "all_captions": "\n".join(self.captions),
            "all_tags_and_objects": self.all_tags_and_objects,
            "text": self.text,
            "captions": list(self.captions),
            "tags": list(self.tags),
            "objects": list(self.objects),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageAnalysis:
        """Tolerant parse of a model's JSON answer or a seed-style dict."""

        def as_list(value: Any) -> list[str]:
            if value is None:
                return []
            if isinstance(value, str):
                return [v.strip() for v in re.split(r"[,\n]", value) if v.strip()]
            if isinstance(value, list):
                return [str(v).strip() for v in value if str(v).strip()]
            return [str(value)]

        return cls(
            description=str(data.get("description") or ""),
            captions=as_list(data.get("captions", data.get("all_captions"))),
            tags=as_list(data.get("tags", data.get("all_tags_and_objects"))),
            objects=as_list(data.get("objects")),
            text=str(data.get("text") or ""),
        )


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        key = item.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(item.strip())
    return out


# Checkpoints name a value's class by module (msgpack's allow-list, pickles): these values
# keep the public module they have always had, so checkpoints written before the split load.
for _cls in (Image, Audio, Video, ImageAnalysis):
    _cls.__module__ = "calliope_graph.media"
del _cls
