"""Opening and checking images with Pillow (decompression bombs, truncation, text-chunk
bombs), and preparing them for a provider's :class:`ImageLimits` (downscale, re-encode)."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from calliope_graph.errors import MediaError
from calliope_graph.media._checks import _IMAGE_MIMES, _PIXELS_ENV, _check_file, max_image_pixels
from calliope_graph.media._probe import _head

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from calliope_graph.media._values import Image

# Pillow is imported inside the functions that open, decode or encode images, not here:
# loading and validating a flow reaches this module (media values, the store) without
# touching a pixel (docs/architecture.md, "Layers": start-up is lazy).


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
    from PIL import Image as PILImage

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
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

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
    from PIL import Image as PILImage

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
    from PIL import Image as PILImage

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


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header without decoding (None if not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)
