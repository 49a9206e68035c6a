"""File-backed media values and the store that owns the output directory.

Graph state carries *references* to media (a path, a mime type, a size), never base64
blobs, so checkpoints and traces stay small. Values are frozen pydantic models: they
serialise into checkpoints and ``trace.json`` as plain JSON.

:class:`MediaStore` is the only writer of output files: names are made safe and confined
to its directory, writes are atomic (temporary file, then rename), and downloads are
streamed with a size cap and accepted only over http(s).

Input images are checked before anything trusts them: :meth:`Image.open` reads the header,
refuses images over :data:`MAX_IMAGE_PIXELS` (decompression bombs) and makes sure the file
decodes to the end (a truncated JPEG is a :class:`MediaError` at input time, not a failure
halfway through a run). Engines get the bytes they send through :func:`prepared`, which
decodes, downscales and re-encodes in a worker thread to each provider's
:class:`ImageLimits`, so two branches analysing one large image overlap instead of taking
turns on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import math
import os
import re
import struct
import threading
import warnings
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Self

import httpx
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_serializer,
    field_validator,
)

from calliope_graph._files import aatomic_writer, write_atomic
from calliope_graph._transport import map_transport_errors
from calliope_graph.errors import ConfigurationError, MediaError, show_paths_under

__all__ = [
    "MAX_IMAGE_PIXELS",
    "Audio",
    "AudioLimits",
    "Image",
    "ImageAnalysis",
    "ImageLimits",
    "MediaStore",
    "PreparedImage",
    "Video",
    "check_audio",
    "max_image_pixels",
    "mime_of",
    "prepared",
    "set_media_root",
]

_IMAGE_MIMES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "MPO": "image/jpeg",  # a camera JPEG with extra frames; every JPEG decoder reads it
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
    "audio/aac": ".aac",
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
    ".aac": "audio/aac",
    ".webm": "audio/webm",
}


def mime_of(path: str | os.PathLike[str]) -> str | None:
    """The MIME type calliope-graph gives a media file by its extension (the one its values
    carry, e.g. ``audio/wav`` rather than the platform's ``audio/x-wav``)."""
    suffix = Path(path).suffix.lower()
    if suffix in _AUDIO_EXT:
        return _AUDIO_EXT[suffix]
    return next((m for m, ext in _MIME_EXT.items() if ext == suffix), None)


#: Largest media file read into memory for a provider request (bytes).
MAX_INPUT_BYTES = 50 * 1024 * 1024

#: Images with more pixels than this are refused before they are decoded: a small file can
#: declare a huge size (a 389 KB PNG of 20000x20000 pixels decodes to 1.2 GB). 150 MP lets
#: a 12000x12000 photo through. Set this attribute, or the ``CALLIOPE_MAX_IMAGE_PIXELS``
#: environment variable, to change it; Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``,
#: refused at twice its value) still applies above ~179 MP.
MAX_IMAGE_PIXELS = 150_000_000
_PIXELS_ENV = "CALLIOPE_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The pixel limit in force: ``CALLIOPE_MAX_IMAGE_PIXELS`` if set, else
    :data:`MAX_IMAGE_PIXELS`."""
    raw = os.environ.get(_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return MAX_IMAGE_PIXELS
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigurationError(
            f"{_PIXELS_ENV}={raw!r} is not a positive whole number of pixels: set it to e.g. "
            "150000000 (150 megapixels), or unset it."
        )
    return int(raw)


def _check_file(path: Path, kind: str, *, max_bytes: int | None = MAX_INPUT_BYTES) -> int:
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
    if max_bytes is not None and size > max_bytes:
        raise MediaError(
            f"{kind} file {str(path)!r} is {size} bytes, over the {max_bytes}-byte "
            "limit: resize or compress it.",
            path=str(path),
        )
    return size


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


# -- opening and checking images ------------------------------------------------------------
#: Serialises the (header-only, fast) Pillow open: ``warnings.catch_warnings`` swaps the
#: process-wide filter list, which is not safe from two threads at once.
_OPEN_LOCK = threading.Lock()


def _megapixels(n: int) -> str:
    digits = 0 if n >= 10_000_000 else 1
    return f"{n / 1_000_000:.{digits}f} megapixels"


def _too_large(label: str, size: tuple[int, int] | None, limit: int, note: str = "") -> MediaError:
    if size is None:
        what = "has more pixels than"
    else:
        w, h = size
        what = f"is {w}x{h} pixels ({_megapixels(w * h)}), over"
    return MediaError(
        f"Image {label!r} {what} the limit of {_megapixels(limit)} ({limit} pixels); "
        f"it could be a decompression bomb.{note} Resize it (for example to at most 8000x8000 "
        f"pixels) and use the smaller file; if you trust it, raise the limit with "
        f"{_PIXELS_ENV} or calliope_graph.media.MAX_IMAGE_PIXELS.",
        path=label,
    )


def _header_size(source: Path | bytes) -> tuple[int, int] | None:
    """Width and height read from the header by the format plugins directly (they do not
    apply Pillow's size check), for naming the size of an image Pillow refused to open."""
    from PIL import (
        BmpImagePlugin,
        GifImagePlugin,
        JpegImagePlugin,
        PngImagePlugin,
        WebPImagePlugin,
    )

    plugins: tuple[Any, ...] = (
        PngImagePlugin.PngImageFile,
        JpegImagePlugin.JpegImageFile,
        GifImagePlugin.GifImageFile,
        BmpImagePlugin.BmpImageFile,
        WebPImagePlugin.WebPImageFile,
    )
    if isinstance(source, bytes):
        head = source
    else:
        with open(source, "rb") as fh:
            head = fh.read(4 << 20)  # headers (EXIF included) sit in the first few KB
    webp = _webp_size(head)
    if webp is not None:  # Pillow's WebP plugin applies the size check itself
        return webp
    for plugin in plugins:
        try:
            with plugin(io.BytesIO(head)) as im:
                return (int(im.size[0]), int(im.size[1]))
        except Exception:  # not this format: try the next plugin
            continue
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """Canvas width and height from a WebP file's first chunk (None if not a WebP).

    Read by hand because Pillow's WebP plugin refuses to open a large image at all (so it
    cannot name its size). Layout per the WebP container spec
    (https://developers.google.com/speed/webp/docs/riff_container): ``VP8X`` stores width-1
    and height-1 in 24 bits each at bytes 24-29; ``VP8L`` (lossless) 14 bits each after its
    0x2F signature; ``VP8 `` (lossy) 14 bits each after the 9D 01 2A start code.
    """
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    kind = head[12:16]
    if kind == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    if kind == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def pil_open(fp: str | os.PathLike[str] | IO[bytes]) -> PILImage.Image:
    """Pillow's lazy open (header only) without its DecompressionBombWarning.

    calliope-graph's own pixel limit (:func:`max_image_pixels`) decides which images are
    too large, and says so as a MediaError; Pillow's warning, printed raw from wherever an
    image happens to be opened, would only repeat it badly. Pillow's DecompressionBombError
    (twice its limit) still raises. Serialised: ``warnings.catch_warnings`` swaps the
    process-wide filter list, which is not safe from two threads at once.
    """
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        return PILImage.open(fp)


@contextmanager
def _open_pil(
    source: Path | bytes,
    label: str,
    *,
    max_pixels: int | None = None,
    unreadable: str | None = None,
) -> Iterator[PILImage.Image]:
    """Pillow's lazy open (header only) with the pixel limit applied; a MediaError otherwise.

    Pillow's DecompressionBombWarning is never shown (our own limit decides), and its
    DecompressionBombError becomes a MediaError naming the size and the limit. ``unreadable``
    is the message when Pillow recognises no image in the data (default: a file's).
    """
    limit = max_image_pixels() if max_pixels is None else max_pixels
    fp: Path | io.BytesIO = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        im = pil_open(fp)
    except PILImage.DecompressionBombError:
        pil_limit = 2 * (PILImage.MAX_IMAGE_PIXELS or 0)
        note = (
            f" (Pillow refuses anything over {_megapixels(pil_limit)}: raise "
            "PIL.Image.MAX_IMAGE_PIXELS too)"
            if pil_limit < limit
            else ""
        )
        raise _too_large(label, _header_size(source), min(limit, pil_limit), note) from None
    except UnidentifiedImageError:
        raise MediaError(
            unreadable
            or f"Image file {label!r} is not an image Pillow can read (corrupt, or not an "
            "image at all): supply a PNG, JPEG, WebP, GIF or BMP file.",
            path=label,
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(source, bytes):
            _check_png_text(source, label)  # a text bomb before the pixels: say so
        elif _head(source, 8) == _PNG_SIGNATURE:
            _check_png_text(source.read_bytes(), label)
        raise _corrupt(label, exc) from None
    with im:
        width, height = im.size
        if width * height > limit:
            raise _too_large(label, (width, height), limit)
        yield im


def _corrupt(label: str, exc: BaseException) -> MediaError:
    return MediaError(
        f"Image file {label!r} is corrupt or truncated ({exc}): re-export or re-capture it "
        "as a complete JPEG or PNG file.",
        path=label,
    )


def _check_decodes(im: PILImage.Image, label: str, source: Path | bytes) -> None:
    """Make sure the image data is complete, cheaply: a JPEG is decoded at 1/8 scale (every
    byte of the entropy-coded data is still read), a PNG's chunks are walked and their
    checksums verified without inflating them (its compressed text chunks are inflated up to
    Pillow's limit only: :func:`_check_png_text`); other formats are decoded.

    Leaves ``im`` unusable for pixel access: open it again for that.
    """
    try:
        if im.format in ("JPEG", "MPO"):
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
        elif im.format == "PNG":
            im.verify()
        else:
            im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _corrupt(label, exc) from None
    if im.format == "PNG":
        _check_png_text(source if isinstance(source, bytes) else source.read_bytes(), label)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png_text(data: bytes, label: str) -> None:
    """Refuse a PNG whose text chunks Pillow would refuse when it decodes the image.

    Pillow inflates a ``zTXt`` / compressed ``iTXt`` chunk up to
    ``PngImagePlugin.MAX_TEXT_CHUNK`` bytes and all text up to ``MAX_TEXT_MEMORY``, and past
    either raises a bare ValueError, and only when the pixels are decoded (for chunks after
    the image data): halfway through a run, after providers were paid. Each compressed chunk
    is inflated here only up to that limit (a bomb never expands in memory). Chunk layout
    per the PNG spec (https://www.w3.org/TR/png-3/#11zTXt, #11iTXt).
    """
    from PIL import PngImagePlugin

    chunk_limit = PngImagePlugin.MAX_TEXT_CHUNK
    total_limit = PngImagePlugin.MAX_TEXT_MEMORY
    total = 0
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            break
        if kind == b"tEXt":
            total += len(body)
        elif kind in (b"zTXt", b"iTXt"):
            keyword, _, rest = body.partition(b"\0")
            if kind == b"iTXt":
                if rest[:1] != b"\x01":  # not compressed
                    total += len(rest)
                    continue
                rest = rest[2:].split(b"\0", 2)[-1]  # method; language; translated keyword
            else:
                rest = rest[1:]  # compression method
            inflater = zlib.decompressobj()
            try:
                text = inflater.decompress(rest, chunk_limit)
            except zlib.error:
                continue  # a broken text chunk: Pillow skips it too
            if inflater.unconsumed_tail:
                raise _text_bomb(label, kind, keyword, f"{chunk_limit} bytes per chunk")
            total += len(text)
        if total_limit and total > total_limit:
            raise _text_bomb(label, kind, keyword, f"{total_limit} bytes of text in all")


def _text_bomb(label: str, kind: bytes, keyword: bytes, limit: str) -> MediaError:
    name = keyword.decode("latin-1", "replace")[:40]
    return MediaError(
        f"Image file {label!r} carries a text chunk ({kind.decode()} {name!r}) that expands "
        f"past Pillow's limit for PNG text ({limit}): it could be a decompression bomb. "
        "Save the image again without its metadata (for example: open and re-export it as "
        "PNG or JPEG) and use that file.",
        path=label,
    )


# -- preparing images for providers ----------------------------------------------------------
@dataclass(frozen=True)
class ImageLimits:
    """What one provider accepts as an input image, declared by its engine as data.

    ``formats`` are the mime types sent as they are (others are converted, PNG first);
    ``max_side`` / ``max_pixels`` are downscaled to; ``min_side`` is refused below (never
    upscaled); ``max_bytes`` is what the encoded image may weigh, counted as ``measure``:
    the raw bytes, their base64 text, or the whole ``data:`` URL.
    """

    provider: str
    formats: frozenset[str] = frozenset(("image/jpeg", "image/png", "image/webp", "image/gif"))
    max_side: int | None = None
    min_side: int | None = None
    max_pixels: int | None = None
    max_bytes: int | None = None
    measure: Literal["bytes", "base64", "data_url"] = "bytes"


@dataclass(frozen=True)
class PreparedImage:
    """Image bytes ready to send: encoded as ``mime``, ``width`` x ``height`` pixels."""

    data: bytes
    mime: str
    width: int
    height: int
    source: str
    #: False when the file is sent exactly as it is on disk.
    converted: bool

    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.b64()}"


def _weight(n: int, mime: str, measure: str) -> int:
    if measure == "bytes":
        return n
    b64 = 4 * math.ceil(n / 3)
    return b64 if measure == "base64" else b64 + len(f"data:{mime};base64,")


def _encode(im: PILImage.Image, fmt: str) -> bytes:
    """``im`` as PNG, WebP, or JPEG (transparency flattened onto white)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        if im.mode in ("RGB", "L"):
            im.save(buf, "JPEG", quality=88)
        else:
            rgba = im.convert("RGBA")
            flat = PILImage.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            flat.save(buf, "JPEG", quality=88)
    elif fmt == "WEBP":
        im.save(buf, "WEBP", quality=88)
    else:
        png = im if im.mode in ("1", "L", "LA", "P", "RGB", "RGBA") else im.convert("RGBA")
        png.save(buf, "PNG")
    return buf.getvalue()


_FORMAT_OF = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


def prepare_image(image: Image, limits: ImageLimits) -> PreparedImage:
    """The bytes to send ``image`` to ``limits.provider`` (blocking: see :func:`prepared`).

    An image that already fits is sent as it is (after checking it decodes). Otherwise it
    is decoded (JPEGs at a reduced scale when shrinking), downscaled to fit ``max_side`` /
    ``max_pixels``, and encoded: in its own format when the provider takes it, else PNG;
    JPEG (then smaller) when that is still over ``max_bytes``. The input file is never
    changed. A MediaError names the file, the provider and what to do.
    """
    path = Path(image.path)
    label = image.path
    size = _check_file(path, "Image")
    with _open_pil(path, label) as im:
        fmt = im.format or ""
        mime = _IMAGE_MIMES.get(fmt, "")
        width, height = im.size
        if limits.min_side and min(width, height) < limits.min_side:
            raise MediaError(
                f"Image {label!r} is {width}x{height} pixels; {limits.provider} needs at least "
                f"{limits.min_side}x{limits.min_side}. Use a larger image or capture at a "
                "higher resolution.",
                path=label,
            )
        scale = 1.0
        if limits.max_side and max(width, height) > limits.max_side:
            scale = limits.max_side / max(width, height)
        if limits.max_pixels and width * height * scale * scale > limits.max_pixels:
            scale = math.sqrt(limits.max_pixels / (width * height))
        fits = limits.max_bytes is None or (_weight(size, mime, limits.measure) <= limits.max_bytes)
        if scale == 1.0 and mime in limits.formats and fits:
            _check_decodes(im, label, path)
            return PreparedImage(
                path.read_bytes(), mime, width, height, source=label, converted=False
            )
        box = (max(1, int(width * scale + 1e-6)), max(1, int(height * scale + 1e-6)))
        try:
            if scale < 1.0 and im.format in ("JPEG", "MPO"):
                # Decode at the smallest DCT scale still at least ``box`` (1/2, 1/4, 1/8):
                # a quarter of the memory and time of a full decode, or less.
                im.draft(None, box)
                im.thumbnail(box, reducing_gap=None)
            elif scale < 1.0:
                im.thumbnail(box)
            else:
                im.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _corrupt(label, exc) from None
        frame = im.copy() if im.mode != "P" else im.convert("RGBA")
    # Keep the format the provider takes; else PNG (lossless). Re-encoding a PNG at the same
    # size would not make it lighter, so a too-heavy one goes to JPEG at once.
    out = _FORMAT_OF.get(mime, "PNG") if mime in limits.formats else "PNG"
    if scale == 1.0 and not fits and out != "JPEG":
        out = "JPEG"
    for _ in range(8):
        out_mime = f"image/{out.lower()}"
        if out_mime not in limits.formats:
            out, out_mime = "JPEG", "image/jpeg"
        data = _encode(frame, out)
        weight = _weight(len(data), out_mime, limits.measure)
        if limits.max_bytes is None or weight <= limits.max_bytes:
            return PreparedImage(
                data, out_mime, frame.width, frame.height, source=label, converted=True
            )
        if out != "JPEG":
            out = "JPEG"
            continue
        shrink = max(0.25, min(0.9, math.sqrt(limits.max_bytes / weight) * 0.95))
        small = (max(1, int(frame.width * shrink)), max(1, int(frame.height * shrink)))
        if min(small) < max(16, limits.min_side or 0):
            break
        frame = frame.resize(small, PILImage.Resampling.LANCZOS)
    raise MediaError(
        f"Image {label!r} cannot be made to fit {limits.provider}'s limit of "
        f"{limits.max_bytes} {'bytes' if limits.measure == 'bytes' else 'characters'}: send "
        "a smaller or simpler image.",
        path=label,
    )


async def prepared(image: Image, limits: ImageLimits) -> PreparedImage:
    """:func:`prepare_image` in a worker thread: decoding and resizing a large image never
    blocks the event loop, so parallel branches keep running meanwhile."""
    return await asyncio.to_thread(prepare_image, image, limits)


# -- audio and video: probed with PyAV ---------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    duration: float | None
    width: int | None = None
    height: int | None = None
    fps: float | None = None


def _head(path: Path, n: int = 12) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _ffmpeg_reason(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).strip().rstrip(".") or type(exc).__name__


def _probe(
    source: Path | bytes, kind: Literal["audio", "video"], name: str | None = None
) -> _Probe:
    """Duration (and for video size and frame rate) of ``source`` (a file, or the bytes of one
    called ``name`` in messages) from its container metadata.

    The first frame of the stream is decoded (cheap) to prove the codec is supported and the
    data is not garbage behind a valid header; the whole stream is decoded only when the
    container declares no duration (a WebM from a browser's MediaRecorder, raw ADTS AAC).
    """
    import av

    path = name if name is not None else str(source)
    label = "Audio" if kind == "audio" else "Video"
    fix = (
        "re-export it as WAV, MP3 or M4A (AAC)"
        if kind == "audio"
        else "re-export it as an H.264 MP4 or a VP8/VP9 WebM"
    )
    try:
        opened = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        with av.open(opened, mode="r") as container:
            streams = container.streams.audio if kind == "audio" else container.streams.video
            if not streams:
                raise MediaError(
                    f"{label} file {path!r} has no {kind} stream (it is truncated, corrupt "
                    f"or holds no {kind}): {fix}.",
                    path=path,
                )
            stream = streams[0]
            duration: float | None = None
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise MediaError(
                    f"{label} file {path!r} holds no decodable {kind} "
                    f"(its {stream.codec_context.name} stream is empty or corrupt): {fix}.",
                    path=path,
                )
            if duration is None or duration <= 0:
                duration = _decoded_duration(container, stream, first)
            if isinstance(stream, av.VideoStream) and isinstance(first, av.VideoFrame):
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                return _Probe(
                    duration,
                    width=stream.codec_context.width or first.width,
                    height=stream.codec_context.height or first.height,
                    fps=float(rate) if rate else None,
                )
            return _Probe(duration)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, StopIteration) as exc:
        raise MediaError(
            f"{label} file {path!r} cannot be read ({_ffmpeg_reason(exc)}): it is "
            f"corrupt or in a format FFmpeg does not support; {fix}.",
            path=path,
        ) from None


def _decoded_duration(container: Any, stream: Any, first: Any) -> float | None:
    """Decode the rest of ``stream`` to learn its length (no duration in the metadata)."""
    import av

    if isinstance(first, av.AudioFrame):
        samples, rate = first.samples, first.sample_rate
        for frame in container.decode(stream):
            samples += frame.samples
        return samples / rate if rate else None
    last, count = first, 1
    for frame in container.decode(stream):
        last, count = frame, count + 1
    rate = stream.average_rate or stream.guessed_rate
    step = 1 / float(rate) if rate else 0.0
    if last.time is not None:
        return float(last.time) + step
    return count * step or None


def _audio_mime(name: str, head: bytes) -> str:
    """The mime type of audio file ``name`` by its extension, its first bytes checked."""
    suffix = Path(name).suffix.lower()
    mime = _AUDIO_EXT.get(suffix)
    if mime is None:
        raise MediaError(
            f"Audio file {name!r} has an unsupported extension {suffix!r}: use one of "
            + ", ".join(sorted(_AUDIO_EXT)),
            path=name,
        )
    if mime == "audio/wav" and (head[:4] != b"RIFF" or head[8:12] != b"WAVE"):
        raise MediaError(
            f"Audio file {name!r} is named .wav but is not a RIFF/WAVE file: re-export it as WAV.",
            path=name,
        )
    if mime == "audio/mpeg" and not (head[:3] == b"ID3" or head[:1] == b"\xff"):
        raise MediaError(
            f"Audio file {name!r} is named .mp3 but has no MP3 frame or ID3 header.", path=name
        )
    return mime


def _video_mime(name: str, head: bytes) -> str:
    """``video/mp4`` or ``video/webm`` by the file's first bytes; a MediaError otherwise."""
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    raise MediaError(
        f"Video file {name!r} is neither MP4 nor WebM (no ftyp box or EBML header).", path=name
    )


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


@dataclass(frozen=True)
class AudioLimits:
    """What one provider accepts as input audio, declared by its speech-to-text engine as
    data (like :class:`ImageLimits` for images), so an oversized or unreadable file is
    refused before the call instead of by the provider's 413 after the upload.

    ``max_bytes`` is what the file may weigh, counted as ``measure`` (the raw bytes, or their
    base64 text for a provider that takes the audio inline in JSON; None: no documented
    limit); ``formats`` are the mime types the provider reads (empty: any); ``where`` names
    the limit in the message (``"an upload"``, ``"inline"``); ``fix`` says what to do.
    """

    provider: str
    max_bytes: int | None = None
    measure: Literal["bytes", "base64"] = "bytes"
    formats: frozenset[str] = frozenset()
    where: str = "a request"
    fix: str = "split it into shorter parts or compress it (MP3 or OGG)"


def _size_text(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def check_audio(audio: Audio, limits: AudioLimits, model: str | None = None) -> None:
    """Refuse ``audio`` with a MediaError when ``limits.provider`` would refuse it: a format
    it does not read, or a file over its size limit (naming the limit and the fix)."""
    who = f"{limits.provider} ({model})" if model else limits.provider
    if limits.formats and audio.mime not in limits.formats:
        exts = sorted({ext for ext, mime in _AUDIO_EXT.items() if mime in limits.formats})
        raise MediaError(
            f"{who} does not read {audio.mime} audio ({audio.name}): convert it to one of "
            f"{', '.join(exts)}.",
            path=audio.path,
        )
    if limits.max_bytes is None:
        return
    size = Path(audio.path).stat().st_size
    weight = size if limits.measure == "bytes" else 4 * math.ceil(size / 3)
    if weight > limits.max_bytes:
        counted = "" if limits.measure == "bytes" else f" ({_size_text(weight)} as base64)"
        raise MediaError(
            f"Audio file {audio.name!r} is {_size_text(size)}{counted}, over the "
            f"{_size_text(limits.max_bytes)} {who} accepts in {limits.where}: {limits.fix}.",
            path=audio.path,
        )


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


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class MediaStore:
    """Owns an output directory: safe names, atomic writes, capped streamed downloads.

    This is the local store (the default). :class:`calliope_graph.object_store.ObjectMediaStore`
    is the same store with its media also kept in S3-compatible object storage: engines and
    nodes write here either way, and the run uploads each media value as it is produced.
    """

    #: True for a store that keeps media in object storage (the runner then uploads outputs
    #: and fetches missing inputs); the local store does neither, at no cost.
    remote: bool = False

    def __init__(self, root: str | os.PathLike[str], *, max_download_bytes: int = 200 << 20):
        self.root = Path(root).resolve()
        self.max_download_bytes = max_download_bytes

    def __repr__(self) -> str:
        return f"MediaStore({str(self.root)!r})"

    # The object-storage interface (see calliope_graph/object_store.py); the runner calls
    # these only when ``remote`` is true, so the local store does no work for them.
    async def publish(self, value: Any) -> Any:
        """``value`` with its media kept in the store (here: already are)."""
        return value

    async def localise(self, value: Any) -> Any:
        """``value`` with its media files present locally (here: already are)."""
        return value

    #: Files the library itself keeps in an output directory; no node may write over them.
    RESERVED_NAMES: frozenset[str] = frozenset(
        {
            "checkpoints.sqlite",
            "checkpoints.sqlite-wal",
            "checkpoints.sqlite-shm",
            "cache.sqlite",
            "journal.sqlite",
            "trace.json",
            "report.html",
            "batch.jsonl",
        }
    )

    @classmethod
    def check_name(cls, name: str) -> list[str]:
        """The safe parts of output name ``name``; a MediaError says why it is not allowed
        (absolute, ``..``, empty, or one of the library's own files)."""
        if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            raise MediaError(
                f"Output name {name!r} is not allowed: use a relative file name inside the "
                "output directory (e.g. 'images/cover.png'), not an absolute path."
            )
        parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts):
            raise MediaError(
                f"Output name {name!r} is not allowed: use a plain file name inside the output "
                "directory (no '..', no absolute path)."
            )
        clean = [_SAFE.sub("_", p).lstrip(".") or "_" for p in parts]
        if len(clean) == 1 and clean[0].lower() in cls.RESERVED_NAMES:
            raise MediaError(
                f"Output name {name!r} is one of the files calliope-graph keeps in the output "
                f"directory ({', '.join(sorted(cls.RESERVED_NAMES))}): choose another name."
            )
        return clean

    def sub(self, folder: str) -> MediaStore:
        """The store of a sub-directory (a subflow's or a map item's media go there)."""
        sub = object.__new__(type(self))  # root is resolved and the parts are safe:
        sub.__dict__.update(self.__dict__)  # (an object store's settings carry over)
        sub.root = self.root.joinpath(*self.check_name(folder))  # no filesystem call here
        return sub

    def path_for(self, name: str) -> Path:
        """A safe path inside the store for ``name`` (sub-directories allowed, no escape)."""
        path = self.root.joinpath(*self.check_name(name)).resolve()
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
        not_an_image = (
            f"The provider returned {len(data)} bytes for {name!r} that are not an image."
        )
        with _open_pil(data, name, unreadable=not_an_image) as im:
            fmt = im.format or ""
            mime = _IMAGE_MIMES.get(fmt)
            ext = _MIME_EXT.get(mime or "", "")
            if (
                ext
                and not name.lower().endswith(ext)
                and not (ext == ".jpg" and name.endswith(".jpeg"))
            ):
                name = str(Path(name).with_suffix(ext))
            path = self.write_bytes(name, data)  # kept even if it proves broken below
            if mime is None:  # a format providers do not accept: Image.open says so
                return Image.open(path)
            width, height = im.size
            _check_decodes(im, str(path), data)  # from the bytes in memory, not the disk
        return Image(path=str(path), mime=mime, width=width, height=height)

    def save_video(self, name: str, data: bytes) -> Video:
        return Video.open(self.write_bytes(name, data))

    # Async forms for engines and nodes: the writes run in a worker thread, so the event
    # loop never waits on the disk (LangGraph Server refuses blocking calls on its loop).
    async def awrite_bytes(self, name: str, data: bytes) -> Path:
        """:meth:`write_bytes` in a worker thread."""
        return await asyncio.to_thread(self.write_bytes, name, data)

    async def asave_image(self, name: str, data: bytes) -> Image:
        """:meth:`save_image` in a worker thread."""
        return await asyncio.to_thread(self.save_image, name, data)

    async def asave_video(self, name: str, data: bytes) -> Video:
        """:meth:`save_video` in a worker thread."""
        return await asyncio.to_thread(self.save_video, name, data)

    def as_png(self, image: Image) -> Image:
        """The image as PNG (some providers refuse JPEG); PNGs are returned unchanged."""
        if image.mime == "image/png":
            return image
        try:
            with _open_pil(Path(image.path), image.path) as im:
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
        headers: Mapping[str, str] | None = None,
    ) -> Path:
        """Stream ``url`` into the store, refusing non-http(s) URLs and bodies over the cap.

        ``headers`` go with the request (a provider whose file URLs need its key: Gemini).

        A failed connection, a timeout or a dropped stream is a TransientProviderError /
        ProviderTimeoutError of ``provider`` (so ``when: [transient]`` catches it), like an
        HTTP error status."""
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
        async with aatomic_writer(path) as fh:
            with map_transport_errors(provider, what="download of its output"):
                async with _get_stream(client, url, headers, provider) as response:
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
                            f"{provider} output is {declared} bytes, over the {cap}-byte "
                            "download cap: raise max_download_bytes on the MediaStore if this "
                            "is expected."
                        )
                    async for chunk in response.aiter_bytes():
                        total += len(chunk)
                        if total > cap:
                            raise MediaError(
                                f"{provider} output exceeded the {cap}-byte download cap: "
                                "raise max_download_bytes on the MediaStore if this is expected."
                            )
                        fh.write(chunk)
        return path


#: Redirects a download follows when it carries provider headers.
MAX_DOWNLOAD_REDIRECTS = 10


@asynccontextmanager
async def _get_stream(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str] | None, provider: str
) -> AsyncIterator[httpx.Response]:
    """``GET url`` as a stream. With ``headers`` (a provider key), redirects are followed
    here and the headers dropped at the first one to another origin: httpx strips only
    ``Authorization`` when it follows a redirect, and a key header such as
    ``x-goog-api-key`` must not reach another host."""
    from calliope_graph.errors import TransientProviderError

    if not headers:
        async with client.stream("GET", url) as response:
            yield response
        return
    current, sent = httpx.URL(url), dict(headers)
    for _ in range(MAX_DOWNLOAD_REDIRECTS + 1):
        request = client.build_request("GET", current, headers=sent)
        response = await client.send(request, stream=True, follow_redirects=False)
        location = response.headers.get("location") if response.is_redirect else None
        if not location:
            try:
                yield response
            finally:
                await response.aclose()
            return
        await response.aclose()
        target = current.join(location)
        if (target.scheme, target.host, target.port) != (
            current.scheme,
            current.host,
            current.port,
        ):
            sent = {}
        current = target
    raise TransientProviderError(
        f"Downloading {provider} output was redirected more than {MAX_DOWNLOAD_REDIRECTS} "
        "times: run the node again.",
        provider=provider,
    )


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header without decoding (None if not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)
