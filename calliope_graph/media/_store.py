"""The :class:`MediaStore`: the one writer of a run's output files (safe confined names,
atomic writes, capped streamed downloads)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import httpx

from calliope_graph._files import aatomic_writer, write_atomic
from calliope_graph._transport import map_transport_errors
from calliope_graph.errors import DiskFullError, MediaError
from calliope_graph.media._checks import _IMAGE_MIMES, _MIME_EXT
from calliope_graph.media._image import _check_decodes, _open_pil
from calliope_graph.media._values import Audio, Image, Video

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: Set by the flow runtime around a provider node's work (flow/_runtime.py): a dict that
#: collects the media a full disk kept the store from writing — images, audio, videos and
#: downloads a provider answered with (:meth:`MediaStore.save_image`, :meth:`save_audio`,
#: :meth:`save_video`, :meth:`download`): path to bytes, paid for already — so the runtime
#: journals them with the node's outputs and a resumed run writes them instead of paying
#: again. None (the default): the write fails.
UNWRITTEN: ContextVar[dict[str, bytes] | None] = ContextVar("calliope_unwritten", default=None)


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

    def write_bytes(self, name: str, data: bytes, *, durable: bool = True) -> Path:
        """Write ``data`` atomically: a temporary file in the same directory, then rename.
        ``durable=False``: not fsynced, for what costs no paid work to make again (see
        :mod:`calliope_graph._files`)."""
        return write_atomic(self.path_for(name), data, durable=durable)

    def _write_paid(self, name: str, data: bytes) -> Path:
        """:meth:`write_bytes` of a provider's answer: on a full disk, inside a node whose
        runtime collects them (:data:`UNWRITTEN`), the bytes are kept for the journal and
        the path they belong at is returned (the image is probed from memory)."""
        unwritten = UNWRITTEN.get()
        try:
            path = self.write_bytes(name, data)
        except DiskFullError:
            if unwritten is None:
                raise
            path = self.path_for(name)
            unwritten[str(path)] = data
            return path
        if unwritten:  # written after all (a retry): not kept twice
            unwritten.pop(str(path), None)
        return path

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
            path = self._write_paid(name, data)  # kept even if it proves broken below
            if mime is None:  # a format providers do not accept: Image.open says so
                return Image.open(path)
            width, height = im.size
            _check_decodes(im, str(path), data)  # from the bytes in memory, not the disk
        return Image(path=str(path), mime=mime, width=width, height=height)

    def save_video(self, name: str, data: bytes) -> Video:
        """Write a provider's video bytes and probe them (from memory if the disk is full
        inside a provider node: see :data:`UNWRITTEN`)."""
        return self.open_video(self._write_paid(name, data))

    def save_audio(self, name: str, data: bytes) -> Audio:
        """Write a provider's audio bytes and probe them (from memory if the disk is full
        inside a provider node: see :data:`UNWRITTEN`)."""
        path = self._write_paid(name, data)
        kept = _kept(path)
        return Audio.open(path) if kept is None else Audio.check_bytes(kept, str(path))

    def open_video(self, path: Path) -> Video:
        """The video at ``path`` that :meth:`save_video` or :meth:`download` returned: probed
        from the file, or from the bytes a full disk kept from being written."""
        kept = _kept(path)
        return Video.open(path) if kept is None else Video.check_bytes(kept, str(path))

    def read_download(self, path: Path) -> bytes:
        """The bytes :meth:`download` put at ``path`` (a provider's image, saved again with
        :meth:`save_image`): read from the file, or taken from the bytes a full disk kept
        from being written (no longer kept under ``path``: the saved image keeps them)."""
        unwritten = UNWRITTEN.get()
        kept = None if unwritten is None else unwritten.pop(str(path), None)
        return Path(path).read_bytes() if kept is None else kept

    # Async forms for engines and nodes: the writes run in a worker thread, so the event
    # loop never waits on the disk (LangGraph Server refuses blocking calls on its loop).
    async def awrite_bytes(self, name: str, data: bytes, *, durable: bool = True) -> Path:
        """:meth:`write_bytes` in a worker thread."""
        return await asyncio.to_thread(self.write_bytes, name, data, durable=durable)

    async def asave_image(self, name: str, data: bytes) -> Image:
        """:meth:`save_image` in a worker thread."""
        return await asyncio.to_thread(self.save_image, name, data)

    async def asave_video(self, name: str, data: bytes) -> Video:
        """:meth:`save_video` in a worker thread."""
        return await asyncio.to_thread(self.save_video, name, data)

    async def asave_audio(self, name: str, data: bytes) -> Audio:
        """:meth:`save_audio` in a worker thread."""
        return await asyncio.to_thread(self.save_audio, name, data)

    async def aopen_video(self, path: Path) -> Video:
        """:meth:`open_video` in a worker thread."""
        return await asyncio.to_thread(self.open_video, path)

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
        HTTP error status.

        On a full disk inside a provider node (:data:`UNWRITTEN`), the answer is fetched
        again into memory (the URL was good a moment ago; a download is not a paid call) and
        kept for the journal: the path is returned without a file, and :meth:`open_video` /
        :meth:`read_download` read the kept bytes."""
        cap = self.max_download_bytes if max_bytes is None else max_bytes
        scheme = httpx.URL(url).scheme
        if scheme not in ("http", "https"):
            raise MediaError(
                f"Refusing to download {provider} output from a {scheme or 'schemeless'!s} URL: "
                "only http(s) URLs are fetched."
            )
        path = self.path_for(name)
        source = _Download(client, url, headers, provider, cap)
        try:
            async with aatomic_writer(path) as fh:
                await source.each(fh.write)
        except DiskFullError:
            unwritten = UNWRITTEN.get()
            if unwritten is None:
                raise
            kept = bytearray()
            await source.each(kept.extend)
            unwritten[str(path)] = Fetched(kept, url=None if headers else url)
        return path


class Fetched(bytes):
    """The bytes of a download kept in memory on a full disk, with the URL they came from
    (None when fetching needs the provider's key): the output journal keeps the URL instead
    when it has no room for the bytes (flow/_journal.py)."""

    url: str | None

    def __new__(cls, data: bytes | bytearray, *, url: str | None) -> Fetched:
        fetched = super().__new__(cls, data)
        fetched.url = url
        return fetched


class _Download:
    """One provider output URL, streamed chunk by chunk under the size cap."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: Mapping[str, str] | None,
        provider: str,
        cap: int,
    ) -> None:
        self.client, self.url, self.headers = client, url, headers
        self.provider, self.cap = provider, cap

    async def each(self, sink: Callable[[bytes], object]) -> None:
        """Hand every chunk of the body to ``sink`` (a file's write, a buffer's extend)."""
        from calliope_graph.errors import TransientProviderError

        provider, cap, total = self.provider, self.cap, 0
        with map_transport_errors(provider, what="download of its output"):
            async with _get_stream(self.client, self.url, self.headers, provider) as response:
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
                    sink(chunk)


def _kept(path: Path) -> bytes | None:
    """The bytes a full disk kept from being written at ``path`` in this provider node."""
    unwritten = UNWRITTEN.get()
    return None if unwritten is None else unwritten.get(str(path))


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
