"""Media inputs of a served flow: a ``data:`` URL, an http(s) URL, a signed media URL of this
server, or a media path of the calling run's own thread.

A remote client cannot hand the server a file, so a media input (``image``, ``audio``,
``video``) is one of:

- ``data:<mime>;base64,<data>`` — decoded and written into the run's media directory;
- ``http://…`` / ``https://…`` — downloaded (streamed, at most :data:`MAX_INPUT_BYTES`)
  into the run's media directory;
- the signed ``url`` of a media output of this server (``…/media/<path>?exp=…&sig=…``), of
  any thread: its signature is checked with the server's key and the file read from the
  media root — never fetched over HTTP. A URL of this server (relative, or at its public
  address) whose signature is missing, wrong or expired is refused;
- a path — the ``path`` of a media output of the same thread (``<thread>/<run>/<file>``,
  relative to the media root; ``/media/<path>`` too). Another thread's files, absolute
  paths and anything outside the root are refused; errors never show the server's paths;
- ``{"url": ...}`` or ``{"path": ...}`` — a media output of another run, passed back as is
  (its ``url`` is used when it has one).

Every file operation runs in a worker thread: LangGraph Server refuses blocking calls on
its event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

import httpx

from calliope_graph._transport import map_transport_errors
from calliope_graph.errors import MediaError
from calliope_graph.media import MAX_INPUT_BYTES, Audio, Image, MediaStore, Video
from calliope_graph.serve._outputs import MEDIA_PREFIX, media_file
from calliope_graph.serve._signing import MediaSigner, default_signer

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
_FORMS = (
    "a data: URL, an http(s) URL, the signed url of a media output of this server, or the "
    "path of a media output of the same thread"
)


async def media_input(
    name: str,
    kind: MediaKind,
    value: Any,
    *,
    store: MediaStore,
    root: Path,
    client: httpx.AsyncClient,
    max_bytes: int = MAX_INPUT_BYTES,
    signer: MediaSigner | None = None,
    server_url: str = "",
) -> Image | Audio | Video:
    """Flow input ``name`` (a ``kind`` file given as one of the forms above) as a media value.

    ``store`` is the run's media directory under ``root`` (``<thread>/<run>``: data URLs
    and downloads go to its ``inputs/`` folder; path inputs must lie in its thread's
    folder), ``client`` fetches http(s) URLs, ``signer`` checks signed media URLs (default:
    the process's key), ``server_url`` is this server's public address (its URLs are never
    fetched). A bad value is a MediaError naming the input, the rule and the forms accepted.
    """
    media = _TYPES[kind]
    if isinstance(value, media):  # an in-process caller's value: under the media root
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
    signer = signer or default_signer()
    ours = _own_media_url(text, server_url, signer)
    if ours is not None:
        return await _signed(name, kind, ours, root, signer)
    scheme = text.partition(":")[0].lower() if re.match(r"^[A-Za-z][\w+.-]*://", text) else ""
    if scheme in ("http", "https"):
        data, mime = await _download(name, text, client, max_bytes)
        return await _save(name, kind, data, mime, store, suffix=Path(httpx.URL(text).path).suffix)
    if scheme:
        raise MediaError(f"Input {name!r}: {scheme}: URLs are not accepted; pass {_FORMS}.")
    if text.startswith(MEDIA_PREFIX + "/"):  # an unsigned relative media URL: its path
        text = text[len(MEDIA_PREFIX) + 1 :]
    return await _in_thread(name, kind, text, root, _thread_dir(store, root))


def _thread_dir(store: MediaStore, root: Path) -> Path:
    """The calling run's thread folder: the first folder of its media directory."""
    try:
        return root / store.root.relative_to(root).parts[0]
    except (ValueError, IndexError):
        return store.root


@dataclass(frozen=True)
class _MediaRef:
    """A media URL of this server: the path it names and its signature (maybe missing)."""

    path: str
    exp: str | None
    sig: str | None


def _own_media_url(text: str, server_url: str, signer: MediaSigner) -> _MediaRef | None:
    """``text`` as a media URL of this server, or None when it is not one.

    Ours: a relative ``/media/…`` URL with a query; an absolute URL under ``/media/`` at
    ``server_url``'s address; or any URL whose ``/media/<path>`` carries a signature valid
    with our key (the address a client reached us at may not be the one we know).
    """
    marker = MEDIA_PREFIX + "/"
    relative = text.startswith(marker)
    if relative and "?" not in text:
        return None  # an unsigned relative URL: a path (the same-thread rule applies)
    if not relative and not re.match(r"^https?://", text, re.I):
        return None
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        return None
    exp, sig = url.params.get("exp"), url.params.get("sig")
    if relative:
        return _MediaRef(url.path[len(marker) :], exp, sig)
    base = httpx.URL(server_url) if server_url else None
    if base is not None and (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port):
        prefix = base.path.rstrip("/") + marker
        if url.path.startswith(prefix):
            return _MediaRef(url.path[len(prefix) :], exp, sig)
    path = url.path.partition(marker)[2]
    if path and signer.verify(path, exp, sig):
        return _MediaRef(path, exp, sig)
    return None


async def _signed(
    name: str, kind: MediaKind, ref: _MediaRef, root: Path, signer: MediaSigner
) -> Image | Audio | Video:
    """The file a media URL of this server names, when its signature holds (read from the
    media root: the server never fetches its own URLs)."""
    if not signer.verify(ref.path, ref.exp, ref.sig):
        raise MediaError(
            f"Input {name!r}: this server's media URL has no valid signature (it is missing, "
            "altered or expired; URLs last CALLIOPE_MEDIA_URL_TTL seconds). Pass the 'url' of a "
            "recent output as it was returned, the 'path' of an output of the same thread, or "
            "the file as a data: URL."
        )

    def read() -> Image | Audio | Video:
        found = media_file(root, ref.path)
        if found is None:
            raise MediaError(
                f"Input {name!r}: the media URL names no file (it is gone from the server).",
                path=ref.path,
            )
        return _TYPES[kind].open(found)

    return await asyncio.to_thread(read)


async def _in_thread(
    name: str, kind: MediaKind, text: str, root: Path, thread_dir: Path
) -> Image | Audio | Video:
    """The file ``text`` (a path relative to the media root) names in ``thread_dir``."""
    refused = MediaError(
        f"Input {name!r}: {text!r} is not a file of this thread's media: a path input must be "
        "the 'path' of a media output of the same thread ('<thread id>/<run id>/<file>', "
        "relative to the media root). Pass media of another thread by its signed 'url', or "
        "the file itself as a data: URL."
    )
    relative = PurePosixPath(text)
    if relative.is_absolute() or "\\" in text or "\x00" in text or ".." in relative.parts:
        raise refused

    def check() -> Image | Audio | Video:
        full = (root / relative).resolve()
        if not full.is_relative_to(thread_dir.resolve()):
            raise refused
        if not full.is_file():
            raise MediaError(
                f"Input {name!r}: there is no file {text!r} in this thread's media.", path=text
            )
        return _TYPES[kind].open(full)

    return await asyncio.to_thread(check)


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
    """A media value an in-process caller passed: its file must lie under the media root."""

    def check() -> Image | Audio | Video:
        full = (root / Path(text)).resolve()
        if not full.is_relative_to(root):
            raise MediaError(
                f"Input {name!r}: the file is outside the media root (CALLIOPE_MEDIA_ROOT): "
                "put it under the root, or pass a data: URL instead."
            )
        if not full.is_file():
            shown = full.relative_to(root).as_posix()
            raise MediaError(
                f"Input {name!r}: there is no file {shown!r} under the media root.", path=shown
            )
        return _TYPES[kind].open(full)

    return await asyncio.to_thread(check)
