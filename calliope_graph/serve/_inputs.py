"""Media inputs of a served flow: a ``data:`` URL, an http(s) URL, a signed media URL of this
server, or a media path of the calling run's own thread.

A remote client cannot hand the server a file, so a media input (``image``, ``audio``,
``video``) is one of:

- ``data:<mime>;base64,<data>`` — decoded and written into the run's media directory;
- ``http://…`` / ``https://…`` — downloaded under the fetch policy (no internal address
  unless ``CALLIOPE_FETCH_ALLOW`` names it, a total deadline, at most
  :data:`MAX_INPUT_BYTES` held; :mod:`calliope_graph._fetch`) into the run's media
  directory;
- the signed ``url`` of a media output of this server (``…/media/<path>?exp=…&sig=…``), of
  any thread: its signature is checked with the server's key and the file read from the
  media root — never fetched over HTTP. A URL of this server (relative, or at its public
  address) whose signature is missing, wrong or expired is refused;
- a path — the ``path`` of a media output of the same thread (``<thread>/<run>/<file>``,
  relative to the media root; ``/media/<path>`` too). Another thread's files, absolute
  paths and anything outside the root are refused; errors never show the server's paths;
- ``{"url": ...}`` or ``{"path": ...}`` — a media output of another run, passed back as is
  (its ``url`` is used when it has one).

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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

import httpx

from calliope_graph._fetch import Fetched, Fetcher
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
    fetcher: Fetcher,
    max_bytes: int = MAX_INPUT_BYTES,
    signer: MediaSigner | None = None,
    server_url: str = "",
) -> Image | Audio | Video:
    """Flow input ``name`` (a ``kind`` file given as one of the forms above) as a media value.

    ``store`` is the run's media directory under ``root`` (``<thread>/<run>``: data URLs
    and downloads go to its ``inputs/`` folder; path inputs must lie in its thread's
    folder), ``fetcher`` downloads http(s) URLs under the server's fetch policy
    (:mod:`calliope_graph._fetch`), ``signer`` checks signed media URLs (default: the
    process's key), ``server_url`` is this server's public address (its URLs are never
    fetched). Every media input is checked (Pillow, PyAV) before it is written under the
    media root. A bad value is a MediaError naming the input, the rule and the forms accepted.
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
        data, mime = await asyncio.to_thread(_decode_data_url, name, text, max_bytes)
        return await _save(name, kind, data, mime, store, root)
    signer = signer or default_signer()
    ours = _own_media_url(text, server_url, signer)
    if ours is not None:
        return await _signed(name, kind, ours, root, signer)
    scheme = text.partition(":")[0].lower() if re.match(r"^[A-Za-z][\w+.-]*://", text) else ""
    if scheme in ("http", "https"):
        fetched = await _download(name, text, fetcher, max_bytes)
        return await _save(
            name, kind, fetched.data, fetched.mime, store, root, suffix=fetched.suffix
        )
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
        return _open_shown(name, kind, found, root)

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
        return _open_shown(name, kind, full, root)

    return await asyncio.to_thread(check)


def _open_shown(name: str, kind: MediaKind, full: Path, root: Path) -> Image | Audio | Video:
    """``full`` opened (and checked) as a ``kind``; a failure names the file by its place
    under the media root, never by the server's absolute path."""
    try:
        return _TYPES[kind].open(full)
    except MediaError as exc:
        shown = full.relative_to(root.resolve()).as_posix()
        text = str(exc).replace(str(full), shown).replace(str(root.resolve()), "<media root>")
        raise MediaError(f"Input {name!r}: {text}", path=shown) from None


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
        return _open_shown(name, kind, full, root)

    return await asyncio.to_thread(check)
