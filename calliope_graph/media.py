"""File-backed media values and the store that owns the output directory.

Graph state carries *references* to media (a path, a mime type, a size), never base64
blobs, so checkpoints and traces stay small. Values are frozen pydantic models: they
serialise into checkpoints and ``trace.json`` as plain JSON.

:class:`MediaStore` is the only writer of output files: names are made safe and confined
to its directory, writes are atomic (temporary file, then rename), and downloads are
streamed with a size cap and accepted only over http(s).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import struct
import wave
from pathlib import Path
from typing import Any, Self

import httpx
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, computed_field

from calliope_graph._files import atomic_writer, write_atomic
from calliope_graph.errors import MediaError

__all__ = [
    "Audio",
    "Image",
    "ImageAnalysis",
    "MediaStore",
    "Video",
]

_IMAGE_MIMES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
_MIME_EXT = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "audio/wav": ".wav",
    "audio/mpeg": ".mp3",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/mp4": ".m4a",
    "audio/webm": ".webm",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
}
_AUDIO_EXT = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".mpga": "audio/mpeg",
    ".mpeg": "audio/mpeg",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".m4a": "audio/mp4",
    ".webm": "audio/webm",
}

#: Largest media file read into memory for a provider request (bytes).
MAX_INPUT_BYTES = 50 * 1024 * 1024


def _check_file(path: Path, kind: str) -> int:
    if not path.exists():
        raise MediaError(
            f"{kind} file {str(path)!r} does not exist: check the path.", path=str(path)
        )
    if not path.is_file():
        raise MediaError(f"{kind} path {str(path)!r} is not a file.", path=str(path))
    size = path.stat().st_size
    if size == 0:
        raise MediaError(
            f"{kind} file {str(path)!r} is empty (0 bytes): it was probably not written "
            "completely; produce it again.",
            path=str(path),
        )
    if size > MAX_INPUT_BYTES:
        raise MediaError(
            f"{kind} file {str(path)!r} is {size} bytes, over the {MAX_INPUT_BYTES}-byte "
            "limit: resize or compress it.",
            path=str(path),
        )
    return size


class _Media(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    mime: str

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
    def open(cls, path: str | os.PathLike[str]) -> Self:
        """Probe ``path`` and return an Image, or a MediaError saying what is wrong."""
        p = Path(path)
        _check_file(p, "Image")
        try:
            with PILImage.open(p) as im:
                fmt = im.format or ""
                width, height = im.size
                im.verify()
        except UnidentifiedImageError:
            raise MediaError(
                f"Image file {str(p)!r} is not an image Pillow can read (corrupt, or not an "
                "image at all): supply a PNG, JPEG, WebP, GIF or BMP file.",
                path=str(p),
            ) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise MediaError(
                f"Image file {str(p)!r} is corrupt ({exc}): re-export or re-capture it.",
                path=str(p),
            ) from None
        mime = _IMAGE_MIMES.get(fmt)
        if mime is None:
            raise MediaError(
                f"Image file {str(p)!r} is {fmt or 'an unknown format'}, which providers do not "
                "accept: convert it to PNG or JPEG.",
                path=str(p),
            )
        return cls(path=str(p), mime=mime, width=width, height=height)

    @classmethod
    def from_b64(cls, data: str, path: str | os.PathLike[str]) -> Self:
        """Write base64 image data to ``path`` (a plain path, not through a store) and open it."""
        return cls.open(write_atomic(path, base64.b64decode(data)))


class Audio(_Media):
    """An audio file; ``duration_s`` is known for WAV files."""

    duration_s: float | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Self:
        p = Path(path)
        _check_file(p, "Audio")
        mime = _AUDIO_EXT.get(p.suffix.lower())
        if mime is None:
            raise MediaError(
                f"Audio file {str(p)!r} has an unsupported extension {p.suffix!r}: use one of "
                + ", ".join(sorted(_AUDIO_EXT)),
                path=str(p),
            )
        head = p.read_bytes()[:12]
        duration: float | None = None
        if mime == "audio/wav":
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise MediaError(
                    f"Audio file {str(p)!r} is named .wav but is not a RIFF/WAVE file: "
                    "re-export it as WAV.",
                    path=str(p),
                )
            try:
                with wave.open(str(p), "rb") as w:
                    duration = w.getnframes() / float(w.getframerate() or 1)
            except (wave.Error, EOFError) as exc:
                raise MediaError(
                    f"Audio file {str(p)!r} is a corrupt WAV ({exc}).", path=str(p)
                ) from None
        elif mime == "audio/mpeg" and not (head[:3] == b"ID3" or head[:1] == b"\xff"):
            raise MediaError(
                f"Audio file {str(p)!r} is named .mp3 but has no MP3 frame or ID3 header.",
                path=str(p),
            )
        return cls(path=str(p), mime=mime, duration_s=duration)


class Video(_Media):
    """A video file (MP4 or WebM)."""

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Self:
        p = Path(path)
        _check_file(p, "Video")
        head = p.read_bytes()[:12]
        if head[4:8] == b"ftyp":
            mime = "video/mp4"
        elif head[:4] == b"\x1a\x45\xdf\xa3":
            mime = "video/webm"
        else:
            raise MediaError(
                f"Video file {str(p)!r} is neither MP4 nor WebM (no ftyp box or EBML header).",
                path=str(p),
            )
        return cls(path=str(p), mime=mime)


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


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class MediaStore:
    """Owns an output directory: safe names, atomic writes, capped streamed downloads."""

    def __init__(self, root: str | os.PathLike[str], *, max_download_bytes: int = 200 << 20):
        self.root = Path(root).resolve()
        self.max_download_bytes = max_download_bytes

    def __repr__(self) -> str:
        return f"MediaStore({str(self.root)!r})"

    def path_for(self, name: str) -> Path:
        """A safe path inside the store for ``name`` (sub-directories allowed, no escape)."""
        parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts):
            raise MediaError(
                f"Output name {name!r} is not allowed: use a plain file name inside the output "
                "directory (no '..', no absolute path)."
            )
        clean = [_SAFE.sub("_", p).lstrip(".") or "_" for p in parts]
        path = self.root.joinpath(*clean).resolve()
        if not path.is_relative_to(self.root):
            raise MediaError(f"Output name {name!r} escapes the output directory {self.root}.")
        return path

    def unique_name(self, stem: str, ext: str, *, seed: str | None = None) -> str:
        """``stem-<hash>.ext`` when ``seed`` is given (stable), else the first free ``stem-N``."""
        ext = ext if ext.startswith(".") else f".{ext}"
        if seed is not None:
            digest = hashlib.sha256(seed.encode()).hexdigest()[:10]
            return f"{stem}-{digest}{ext}"
        n = 0
        while True:
            name = f"{stem}{ext}" if n == 0 else f"{stem}-{n}{ext}"
            if not self.path_for(name).exists():
                return name
            n += 1

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``data`` atomically: a temporary file in the same directory, then rename."""
        return write_atomic(self.path_for(name), data)

    def save_image(self, name: str, data: bytes) -> Image:
        """Write image bytes (fixing the extension to the real format) and probe them."""
        try:
            with PILImage.open(io.BytesIO(data)) as im:
                fmt = im.format or ""
        except (UnidentifiedImageError, OSError):
            raise MediaError(
                f"The provider returned {len(data)} bytes for {name!r} that are not an image."
            ) from None
        ext = _MIME_EXT.get(_IMAGE_MIMES.get(fmt, ""), "")
        if (
            ext
            and not name.lower().endswith(ext)
            and not (ext == ".jpg" and name.endswith(".jpeg"))
        ):
            name = str(Path(name).with_suffix(ext))
        return Image.open(self.write_bytes(name, data))

    def save_video(self, name: str, data: bytes) -> Video:
        return Video.open(self.write_bytes(name, data))

    def as_png(self, image: Image) -> Image:
        """The image as PNG (some providers refuse JPEG); PNGs are returned unchanged."""
        if image.mime == "image/png":
            return image
        try:
            with PILImage.open(image.path) as im:
                buf = io.BytesIO()
                im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB").save(buf, "PNG")
        except OSError as exc:
            raise MediaError(
                f"Cannot convert {image.path!r} to PNG: {exc}.", path=image.path
            ) from None
        name = self.unique_name(Path(image.path).stem, ".png", seed=image.path)
        return Image.open(self.write_bytes(f"converted/{name}", buf.getvalue()))

    async def download(
        self,
        client: httpx.AsyncClient,
        url: str,
        name: str,
        *,
        max_bytes: int | None = None,
        provider: str = "provider",
    ) -> Path:
        """Stream ``url`` into the store, refusing non-http(s) URLs and bodies over the cap."""
        from calliope_graph.errors import TransientProviderError

        cap = self.max_download_bytes if max_bytes is None else max_bytes
        scheme = httpx.URL(url).scheme
        if scheme not in ("http", "https"):
            raise MediaError(
                f"Refusing to download {provider} output from a {scheme or 'schemeless'!s} URL: "
                "only http(s) URLs are fetched."
            )
        path = self.path_for(name)
        total = 0
        with atomic_writer(path) as fh:
            async with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise TransientProviderError(
                        f"Downloading {provider} output failed with HTTP "
                        f"{response.status_code}; the URL may have expired: "
                        "run the node again.",
                        provider=provider,
                        status=response.status_code,
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > cap:
                    raise MediaError(
                        f"{provider} output is {declared} bytes, over the {cap}-byte download "
                        "cap: raise max_download_bytes on the MediaStore if this is expected."
                    )
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    if total > cap:
                        raise MediaError(
                            f"{provider} output exceeded the {cap}-byte download cap: raise "
                            "max_download_bytes on the MediaStore if this is expected."
                        )
                    fh.write(chunk)
        return path


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header without decoding (None if not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)
