"""Media inputs of a served flow: a ``data:`` URL, an http(s) URL or a path under the media root.

A remote client cannot hand the server a file, so a media input (``image``, ``audio``,
``video``) is one of:

- ``data:<mime>;base64,<data>`` — decoded and written into the thread's media directory;
- ``http://…`` / ``https://…`` — downloaded (streamed, at most :data:`MAX_INPUT_BYTES`)
  into the thread's media directory;
- a path — relative to the media root, or absolute inside it; anything outside is refused;
- ``{"url": ...}`` or ``{"path": ...}`` — a media output of another run, passed back as is.

Every file operation runs in a worker thread: LangGraph Server refuses blocking calls on
its event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

import httpx

from calliope_graph._transport import map_transport_errors
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
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?),(?P<data>.*)$", re.S
)
_FORMS = "a data: URL, an http(s) URL, or a path under the media root"


async def media_input(
    name: str,
    kind: MediaKind,
    value: Any,
    *,
    store: MediaStore,
    root: Path,
    client: httpx.AsyncClient,
    max_bytes: int = MAX_INPUT_BYTES,
) -> Image | Audio | Video:
    """Flow input ``name`` (a ``kind`` file given as one of the forms above) as a media value.

    ``store`` is the thread's media directory (data URLs and downloads go to its ``inputs/``
    folder), ``root`` the media root paths must lie under, ``client`` fetches http(s) URLs.
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
    if store.remote:  # a signed URL, s3:// URI or path of the media store: read from it
        from calliope_graph.object_store import ObjectMediaStore

        assert isinstance(store, ObjectMediaStore)
        found = await store.read_input(name, kind, text, own_only=True, max_bytes=max_bytes)
        if found is not None:
            return found
    if text[:5].lower() == "data:":
        data, mime = _decode_data_url(name, text, max_bytes)
        return await _save(name, kind, data, mime, store)
    scheme = text.partition(":")[0].lower() if re.match(r"^[A-Za-z][\w+.-]*://", text) else ""
    if scheme in ("http", "https"):
        data, mime = await _download(name, text, client, max_bytes)
        return await _save(name, kind, data, mime, store, suffix=Path(httpx.URL(text).path).suffix)
    if scheme:
        raise MediaError(f"Input {name!r}: {scheme}: URLs are not accepted; pass {_FORMS}.")
    return await _within(name, kind, text, root)


def _decode_data_url(name: str, text: str, max_bytes: int) -> tuple[bytes, str]:
    match = _DATA_URL.match(text)
    if match is None:
        raise MediaError(
            f"Input {name!r} is not a valid data: URL: write data:<mime>;base64,<data> "
            "(e.g. data:image/png;base64,iVBORw0...)."
        )
    mime = (match["mime"] or "application/octet-stream").lower()
    payload = match["data"]
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise MediaError(f"Input {name!r}: the data URL is over the {max_bytes}-byte input limit.")
    if ";base64" in match["params"].lower():
        try:
            data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(
                f"Input {name!r}: the data URL's base64 payload is not valid base64."
            ) from None
    else:
        data = unquote_to_bytes(payload)
    if not data:
        raise MediaError(f"Input {name!r}: the data URL is empty.")
    if len(data) > max_bytes:
        raise MediaError(f"Input {name!r}: the data URL is over the {max_bytes}-byte input limit.")
    return data, mime


async def _download(
    name: str, url: str, client: httpx.AsyncClient, max_bytes: int
) -> tuple[bytes, str]:
    shown = str(httpx.URL(url).copy_with(query=None, fragment=None))  # a query may hold a token
    chunks: list[bytes] = []
    total = 0
    async with (
        map_transport_errors("input download", what=f"download of input {name!r}"),
        client.stream("GET", url) as response,
    ):
        if response.status_code >= 400:
            raise MediaError(
                f"Input {name!r}: downloading {shown} failed with HTTP {response.status_code}."
            )
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise MediaError(
                f"Input {name!r}: {shown} is {declared} bytes, over the {max_bytes}-byte "
                "input limit."
            )
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > max_bytes:
                raise MediaError(
                    f"Input {name!r}: {shown} is over the {max_bytes}-byte input limit."
                )
            chunks.append(chunk)
        mime = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not total:
        raise MediaError(f"Input {name!r}: {shown} answered with an empty body.")
    return b"".join(chunks), mime


async def _save(
    name: str, kind: MediaKind, data: bytes, mime: str, store: MediaStore, *, suffix: str = ""
) -> Image | Audio | Video:
    ext = _EXT.get(mime) or (suffix.lower() if suffix.lower() in _EXT.values() else "")
    if not ext:
        ext = {"image": ".png", "audio": ".wav", "video": ".mp4"}[kind]
    digest = hashlib.sha256(data).hexdigest()[:12]
    file_name = f"inputs/{MediaStore.check_name(name)[0]}-{digest}{ext}"

    def write() -> Image | Audio | Video:
        if kind == "image":
            return store.save_image(file_name, data)  # fixes the extension to the real format
        return _TYPES[kind].open(store.write_bytes(file_name, data))

    return await asyncio.to_thread(write)


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
