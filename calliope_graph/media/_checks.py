"""What every media file is checked against first: its MIME type by extension, the size
of a file read into memory, the pixel limit of an image."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from calliope_graph.errors import ConfigurationError, MediaError

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
        # ``calliope_graph.media.MAX_IMAGE_PIXELS`` is the attribute a user sets (read without
        # importing the package: this module is below it)
        package = sys.modules.get("calliope_graph.media")
        return int(getattr(package, "MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS))
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
