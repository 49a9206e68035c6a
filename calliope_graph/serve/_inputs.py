"""Media inputs of a served flow: a ``data:`` URL, an http(s) URL or a path under the media root.

A remote client cannot hand the server a file, so a media input (``image``, ``audio``,
``video``) is one of:

- ``data:<mime>;base64,<data>`` — decoded and written into the thread's media directory;
- ``http://…`` / ``https://…`` — downloaded under the fetch policy (no internal address
  unless ``CALLIOPE_FETCH_ALLOW`` names it, a total deadline, at most
  :data:`MAX_INPUT_BYTES` held; :mod:`calliope_graph._fetch`);
- a path — relative to the media root, or absolute inside it; anything outside is refused;
- ``{"url": ...}`` or ``{"path": ...}`` — a media output of another run, passed back as is.

A data URL or a download is checked as the media kind it is given as (Pillow, PyAV) in
memory before it is written; a failed check leaves nothing under the media root. Every
file operation runs in a worker thread: LangGraph Server refuses blocking calls on
its event loop.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from calliope_graph._fetch import Fetched, Fetcher
from calliope_graph.errors import MediaError
from calliope_graph.media import MAX_INPUT_BYTES, Audio, Image, MediaStore, Video

__all__ = ["MediaKind", "media_input"]

MediaKind = Literal["image", "audio", "video"]
_TYPES: dict[str, type[Image] | type[Audio] | type[Video]] = {
    "image": Image,
    "audio": Audio,
    "video": Video,
}
_EXT = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/mp4": ".m4a",
    "audio/webm": ".webm",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
}
_FORMS = "a data: URL, an http(s) URL, or a path under the media root"


async def media_input(
    name: str,
    kind: MediaKind,
    value: Any,
    *,
    store: MediaStore,
    root: Path,
    fetcher: Fetcher,
    max_bytes: int = MAX_INPUT_BYTES,
) -> Image | Audio | Video:
    """Flow input ``name`` (a ``kind`` file given as one of the forms above) as a media value.

    ``store`` is the thread's media directory (data URLs and downloads go to its ``inputs/``
    folder), ``root`` the media root paths must lie under, ``fetcher`` downloads http(s) URLs
    under the server's fetch policy (:mod:`calliope_graph._fetch`). Every media input is
    checked (Pillow, PyAV) before it is written under the media root.
    A bad value is a MediaError naming the input, the problem and the forms accepted.
    """
    media = _TYPES[kind]
    if isinstance(value, media):
        return await _within(name, kind, value.path, root)
    if isinstance(value, dict):
        found = value.get("url") or value.get("path")
        if not isinstance(found, str):
            raise MediaError(
                f"Input {name!r}: an object must carry a 'url' or a 'path' string; pass {_FORMS}."
            )
        value = found
    if not isinstance(value, str) or not value.strip():
        raise MediaError(
            f"Input {name!r} must be a {kind} given as {_FORMS}, not {type(value).__name__}."
        )
    text = value.strip()
    if text[:5].lower() == "data:":
        data, mime = await asyncio.to_thread(_decode_data_url, name, text, max_bytes)
        return await _save(name, kind, data, mime, store, root)
    scheme = text.partition(":")[0].lower() if re.match(r"^[A-Za-z][\w+.-]*://", text) else ""
    if scheme in ("http", "https"):
        fetched = await _download(name, text, fetcher, max_bytes)
        return await _save(
            name, kind, fetched.data, fetched.mime, store, root, suffix=fetched.suffix
        )
    if scheme:
        raise MediaError(f"Input {name!r}: {scheme}: URLs are not accepted; pass {_FORMS}.")
    return await _within(name, kind, text, root)


_WHITESPACE = re.compile(rb"\s+")
_DATA_HEADER = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*)$", re.I)


def _decode_data_url(name: str, text: str, max_bytes: int) -> tuple[bytes, str]:
    """The bytes and mime type of data URL ``text``, refused from its length before anything
    is decoded or copied when it could hold more than ``max_bytes``: base64 text of n
    characters decodes to at most 3n/4 bytes, percent-encoded text to at most n."""
    comma = text.find(",", 0, 1024)
    header = _DATA_HEADER.match(text[:comma]) if comma > 0 else None
    if header is None:
        raise MediaError(
            f"Input {name!r} is not a valid data: URL: write data:<mime>;base64,<data> "
            "(e.g. data:image/png;base64,iVBORw0...)."
        )
    mime = (header["mime"] or "application/octet-stream").lower()
    size = len(text) - comma - 1  # the payload's length, without slicing it out
    is_base64 = ";base64" in header["params"].lower()
    # base64 text of n characters decodes to at most 3n/4 bytes, less up to 2 of padding
    if (size * 3 // 4 - 2 if is_base64 else size) > max_bytes:
        raise MediaError(f"Input {name!r}: the data URL is over the {max_bytes}-byte input limit.")
    if is_base64:
        try:
            # One copy of the payload as bytes, viewed (not sliced) past the header.
            payload: bytes | memoryview = memoryview(text.encode("ascii"))[comma + 1 :]
            if _WHITESPACE.search(payload):
                payload = _WHITESPACE.sub(b"", payload)
            # strict: only the base64 alphabet and correct padding (b64decode(validate=True))
            data = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            raise MediaError(
                f"Input {name!r}: the data URL's base64 payload is not valid base64."
            ) from None
    else:
        data = unquote_to_bytes(text[comma + 1 :])
    if not data:
        raise MediaError(f"Input {name!r}: the data URL is empty.")
    if len(data) > max_bytes:
        raise MediaError(f"Input {name!r}: the data URL is over the {max_bytes}-byte input limit.")
    return data, mime


async def _download(name: str, url: str, fetcher: Fetcher, max_bytes: int) -> Fetched:
    """``url``'s body through the fetch policy (no internal address, bounded in time and
    size); every failure is a MediaError of the family :mod:`calliope_graph._fetch` raises."""
    return await fetcher.fetch(url, max_bytes=max_bytes, label=f"Input {name!r}")


async def _save(
    name: str,
    kind: MediaKind,
    data: bytes,
    mime: str,
    store: MediaStore,
    root: Path,
    *,
    suffix: str = "",
) -> Image | Audio | Video:
    """Check ``data`` as a ``kind`` (Pillow, PyAV) in memory, then write it to the thread's
    ``inputs/`` folder; a failed check writes nothing. Messages name the file by its place
    under the media root, never by the server's absolute path."""
    ext = _EXT.get(mime) or (suffix.lower() if suffix.lower() in _EXT.values() else "")
    if not ext:
        ext = {"image": ".png", "audio": ".wav", "video": ".mp4"}[kind]
    digest = hashlib.sha256(data).hexdigest()[:12]
    stem = f"inputs/{MediaStore.check_name(name)[0]}-{digest}"
    folder = store.root.relative_to(root).as_posix() if store.root.is_relative_to(root) else ""

    def keep() -> Image | Audio | Video:
        shown = f"{folder}/{stem}{ext}".lstrip("/")
        try:
            value = _TYPES[kind].check_bytes(data, shown)
        except MediaError as exc:
            raise MediaError(f"Input {name!r}: {exc.message}", path=exc.path) from None
        real_ext = _EXT.get(value.mime, ext) if kind == "image" else ext
        path = store.write_bytes(stem + real_ext, data)
        return value.model_copy(update={"path": str(path)})

    return await asyncio.to_thread(keep)


async def _within(name: str, kind: MediaKind, text: str, root: Path) -> Image | Audio | Video:
    def check() -> Image | Audio | Video:
        path = Path(text).expanduser()
        full = (root / path).resolve()
        if not full.is_relative_to(root) and text.startswith("/media/"):
            # the relative URL of one of this server's media outputs
            path = Path(text[len("/media/") :])
            full = (root / path).resolve()
        if not full.is_relative_to(root):
            raise MediaError(
                f"Input {name!r}: path {str(path)!r} is outside the media root {root} "
                "(CALLIOPE_MEDIA_ROOT): put the file under it, or pass a data: URL or an "
                "http(s) URL instead."
            )
        if not full.is_file():
            raise MediaError(
                f"Input {name!r}: there is no file {str(path)!r} under the media root {root}.",
                path=str(path),
            )
        return _TYPES[kind].open(full)

    return await asyncio.to_thread(check)
