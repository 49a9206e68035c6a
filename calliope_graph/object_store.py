"""Media in S3-compatible object storage: ``s3://bucket/prefix`` as ``--media-store``,
``media_store=`` or ``CALLIOPE_MEDIA_STORE``.

The design (docs/architecture.md, "Media in object storage"):

- Engines, nodes and video assembly keep writing the run's folder, as with the local store
  (Pillow, PyAV and FFmpeg need files). The runner uploads each media value under the
  run's folder when the node that made it returns — after the output journal has it, so a
  failed upload keeps the local file and the journal entry, and a resume uploads again
  without paying again — and the value gains ``uri`` (``s3://bucket/key``). Checkpoints,
  the journal and traces hold that reference, never bytes.
- A media value whose local file is missing (a resume on another machine, another server
  replica) is fetched from its ``uri`` into the run's folder before a node reads it.
- Keys are ``<prefix>/<run>/<path in the run's folder>``: ``<run>`` is the thread id for
  ``run``, ``batch`` and ``worker``, the thread's media folder on the server (so a key is
  ``<prefix>/`` + the ``path`` a served output shows). Names are the store's safe names.
- Media URLs handed out are presigned GET URLs of the store (:func:`signed_url`).
- An input given as a URL of the store (a presigned one) or as its ``s3://`` URI is read
  from the store (:meth:`ObjectMediaStore.read_input`), never fetched from anywhere else.

The client is obstore (Rust's ``object_store`` crate, as used by Apache Arrow/DataFusion):
one small wheel with no Python dependencies, async calls that never hold the event loop,
atomic single-request and multipart PUTs, retries with backoff, presigned URLs
(``obstore.sign``), and credentials from the standard AWS environment.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import BaseModel

from calliope_graph._files import aatomic_writer
from calliope_graph.errors import ConfigurationError, MediaError
from calliope_graph.media import MAX_INPUT_BYTES, Audio, Image, MediaStore, Video

if TYPE_CHECKING:
    from calliope_graph.context import RunContext
    from calliope_graph.flow.validate import Plan

__all__ = [
    "MEDIA_STORE_ENV",
    "ObjectMediaStore",
    "ObjectStore",
    "open_media_store",
    "parse_store_url",
    "signed_url",
]

#: The server's media store (and the default of ``--media-store``): ``s3://bucket/prefix``.
MEDIA_STORE_ENV = "CALLIOPE_MEDIA_STORE"
#: Lifetime of the media URLs handed out, in seconds (shared with the signed ``/media``).
URL_TTL_ENV = "CALLIOPE_MEDIA_URL_TTL"

Media = Image | Audio | Video
_TYPES: dict[str, type[Image] | type[Audio] | type[Video]] = {
    "image": Image,
    "audio": Audio,
    "video": Video,
}
# Bucket names as S3 allows them (3-63 characters: lower-case letters, digits, dots,
# hyphens), https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SAFE_PART = re.compile(r"[A-Za-z0-9._-]+")
_FORM = "s3://BUCKET or s3://BUCKET/PREFIX (e.g. s3://calliope-media/stories)"


def url_ttl() -> int:
    """Seconds a media URL stays valid: ``CALLIOPE_MEDIA_URL_TTL``, default 3600."""
    raw = os.environ.get(URL_TTL_ENV, "").strip()
    if not raw:
        return 3600
    if not raw.isdigit() or not 1 <= int(raw) <= 7 * 24 * 3600:  # SigV4's longest: 7 days
        raise ConfigurationError(
            f"{URL_TTL_ENV}={raw!r} is not a number of seconds from 1 to 604800 (7 days, the "
            "longest a presigned S3 URL may live): set e.g. 3600, or unset it."
        )
    return int(raw)


# -- the bucket ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectStore:
    """One bucket (and key prefix) of an S3-compatible server, through obstore.

    Credentials, region and endpoint come from the standard AWS environment
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
    ``AWS_ENDPOINT_URL`` for an S3-compatible server; an ``http://`` endpoint is allowed).
    """

    bucket: str
    prefix: str
    client: Any

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_of_uri(self, uri: str) -> str | None:
        """The key of ``s3://<this bucket>/<key>``, else None."""
        head = f"s3://{self.bucket}/"
        if not uri.startswith(head):
            return None
        return _checked_key(uri[len(head) :], self.prefix)

    async def put(self, key: str, path: Path, mime: str) -> None:
        import obstore

        # One PUT (multipart past 5 MB, completed in one request): readers see the whole
        # object or none of it. Content-Type so a presigned GET answers with the media type.
        await obstore.put_async(self.client, key, path, attributes={"Content-Type": mime})

    async def download(self, key: str, path: Path, *, max_bytes: int) -> int:
        """Stream object ``key`` into ``path`` (atomically); its size. Over ``max_bytes`` is
        a MediaError and nothing is kept."""
        import obstore

        result = await obstore.get_async(self.client, key)
        size = int(result.meta["size"])
        if size > max_bytes:
            raise MediaError(
                f"{self.uri(key)} is {size} bytes, over the {max_bytes}-byte limit for media "
                "read from the store."
            )
        total = 0
        async with aatomic_writer(path) as fh:
            async for chunk in result.stream():
                total += len(chunk)
                if total > max_bytes:
                    raise MediaError(f"{self.uri(key)} is over the {max_bytes}-byte limit.")
                fh.write(bytes(chunk))
        return total

    def sign(self, key: str, ttl: int | None = None) -> str:
        """A presigned GET URL of ``key`` (computed locally from the credentials)."""
        import obstore

        seconds = url_ttl() if ttl is None else ttl
        return str(obstore.sign(self.client, "GET", key, timedelta(seconds=seconds)))

    def key_of_url(self, url: str) -> str | None:
        """The key a presigned URL of this store names (same origin and bucket path, a SigV4
        signature), else None. Its signature is checked by the store when it is read."""
        try:
            given = urlsplit(url)
        except ValueError:
            return None
        try:
            origin, path_prefix = _url_shape(self)
        except Exception:  # cannot sign (no credentials): no URL is this store's
            return None
        if f"{given.scheme}://{given.netloc}".lower() != origin:
            return None
        if not given.path.startswith(path_prefix) or "X-Amz-Signature=" not in given.query:
            return None
        return _checked_key(unquote(given.path[len(path_prefix) :]), self.prefix)


_SHAPES: dict[int, tuple[str, str]] = {}
_PROBE = "calliope-probe"


def _url_shape(store: ObjectStore) -> tuple[str, str]:
    """(origin, path before the key) of this store's presigned URLs, read off one signed for
    a probe key — path-style and virtual-hosted buckets alike."""
    found = _SHAPES.get(id(store.client))
    if found is None:
        signed = urlsplit(store.sign(_PROBE, 60))
        found = (
            f"{signed.scheme}://{signed.netloc}".lower(),
            signed.path[: -len(_PROBE)],
        )
        _SHAPES[id(store.client)] = found
    return found


def _checked_key(key: str, prefix: str) -> str | None:
    """``key`` when it lies under ``prefix`` and every part is a safe name, else None."""
    parts = key.split("/")
    if not all(_SAFE_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        return None
    if prefix and not key.startswith(prefix + "/"):
        return None
    return key


def parse_store_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; a ConfigurationError says what is wrong."""
    text = url.strip()
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in ("s3", "s3a") or not rest:
        raise ConfigurationError(
            f"Media store {text!r} is not an S3 URL: give {_FORM}; credentials and the "
            "endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL."
        )
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ConfigurationError(
            f"Media store {text!r}: {bucket!r} is not a valid S3 bucket name (3-63 lower-case "
            f"letters, digits, dots and hyphens); give {_FORM}."
        )
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") or not _SAFE_PART.fullmatch(p) for p in parts):
        raise ConfigurationError(
            f"Media store {text!r}: the prefix {prefix!r} may hold only letters, digits, '.', "
            "'_', '-' and '/' (no '..'); give " + _FORM + "."
        )
    return bucket, "/".join(parts)


_STORES: dict[tuple[str, ...], ObjectStore] = {}
_STORES_LOCK = threading.Lock()


def object_store(url: str) -> ObjectStore:
    """The process's client of ``url`` (``s3://bucket/prefix``), made once per bucket,
    prefix, endpoint and access key (so a changed environment gets a new client)."""
    bucket, prefix = parse_store_url(url)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    cache = (bucket, prefix, endpoint, os.environ.get("AWS_ACCESS_KEY_ID", ""))
    with _STORES_LOCK:
        found = _STORES.get(cache)
        if found is None:
            found = _STORES[cache] = ObjectStore(bucket, prefix, _client(bucket))
    return found


def _client(bucket: str) -> Any:
    try:
        from obstore.store import S3Store
    except ImportError:
        raise ConfigurationError(
            "A media store in S3 needs obstore: pip install 'calliope-graph[s3]'."
        ) from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    options: dict[str, Any] = {"connect_timeout": timedelta(seconds=10)}
    if endpoint.lower().startswith("http://"):
        options["allow_http"] = True  # a local S3-compatible server (MinIO, SeaweedFS)
    # Bounded: a store that is down fails the node in seconds (the local copy is kept),
    # rather than after object_store's default three minutes of retries.
    retry = {
        "max_retries": 3,
        "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(2)},
        "retry_timeout": timedelta(seconds=20),
    }
    try:
        return S3Store(bucket, client_options=options, retry_config=retry)  # type: ignore[arg-type]
    except Exception as exc:
        raise ConfigurationError(
            f"Cannot use media store s3://{bucket}: {_reason(exc)}. Check AWS_ENDPOINT_URL, "
            "AWS_REGION and the credentials in the environment."
        ) from None


def _reason(exc: BaseException) -> str:
    """The first line of an obstore error (they carry no credentials; URLs are unsigned)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def signed_url(value: Media) -> str | None:
    """A presigned GET URL of a media value kept in object storage, else None."""
    uri = value.uri
    if not uri or not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[len("s3://") :].partition("/")
    store = object_store(f"s3://{bucket}")
    return store.sign(key)


# -- the media store -------------------------------------------------------------------------
class ObjectMediaStore(MediaStore):
    """A :class:`MediaStore` whose media are also kept in an object store.

    ``root`` is the local working folder (the run's output directory, as with the local
    store); a file under ``base`` is kept at key ``<objects.prefix>/<run>/<path under base>``.
    """

    remote = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        objects: ObjectStore,
        *,
        run: str = "",
        max_download_bytes: int = 200 << 20,
    ) -> None:
        super().__init__(root, max_download_bytes=max_download_bytes)
        self.objects = objects
        self.base = self.root
        self.run = _safe_run(run)

    def __repr__(self) -> str:
        return f"ObjectMediaStore({str(self.root)!r}, {self.objects.url!r})"

    def for_run(self, run: str) -> ObjectMediaStore:
        """This store with its keys under ``<prefix>/<run>/``, for the files under its root."""
        twin = copy.copy(self)
        twin.base, twin.run = self.root, _safe_run(run)
        return twin

    def sub(self, folder: str) -> ObjectMediaStore:
        store = super().sub(folder)
        assert isinstance(store, ObjectMediaStore)
        return store

    def key_for(self, path: str | os.PathLike[str]) -> str | None:
        """The key of local file ``path``; None when it is not under this run's folder."""
        try:
            relative = PurePosixPath(Path(path).relative_to(self.base))
        except ValueError:
            return None
        parts = [p for p in (self.objects.prefix, self.run, *relative.parts) if p]
        key = "/".join(parts)
        return _checked_key(key, self.objects.prefix)

    # -- outputs: uploaded when produced ----------------------------------------------------
    async def publish(self, value: Any) -> Any:
        """``value`` with every media file under the run's folder uploaded and referenced by
        ``uri`` (lists, dicts and pydantic objects walked). A failed upload is a MediaError
        naming the kept local file; uploads of one value go in parallel."""
        if isinstance(value, Image | Audio | Video):
            return await self._publish_one(value)
        if isinstance(value, dict):
            keys = list(value)
            done = await asyncio.gather(*(self.publish(value[k]) for k in keys))
            return dict(zip(keys, done, strict=True))
        if isinstance(value, list | tuple):
            items = await asyncio.gather(*(self.publish(v) for v in value))
            return type(value)(items) if isinstance(value, tuple) else list(items)
        if isinstance(value, BaseModel):
            fields = type(value).model_fields
            new = await asyncio.gather(*(self.publish(getattr(value, f)) for f in fields))
            changed = {f: v for f, v in zip(fields, new, strict=True) if v is not getattr(value, f)}
            return value.model_copy(update=changed) if changed else value
        return value

    async def _publish_one(self, value: Media) -> Media:
        if value.uri is not None:
            return value
        key = self.key_for(value.path)
        if key is None:  # a user's own file given as an input: not ours to upload
            return value
        try:
            await self.objects.put(key, Path(value.path), value.mime)
        except Exception as exc:
            raise MediaError(
                f"Uploading {value.name} to {self.objects.uri(key)} failed ({_reason(exc)}); "
                f"the file is kept at {value.path}. Check the media store "
                f"({self.objects.url}) and the AWS credentials, then resume the run: what was "
                "paid for is not paid again.",
                path=value.path,
            ) from None
        return value.model_copy(update={"uri": self.objects.uri(key)})

    # -- inputs: fetched where missing --------------------------------------------------------
    async def localise(self, value: Any) -> Any:
        """``value`` with every media value whose local file is missing fetched from its
        ``uri`` into the run's folder (a resume on another machine, another replica)."""
        if isinstance(value, Image | Audio | Video):
            if value.uri is None or await asyncio.to_thread(os.path.isfile, value.path):
                return value
            key = self.objects.key_of_uri(value.uri)
            if key is None:
                raise MediaError(
                    f"{value.name} is kept at {value.uri}, which is not in this run's media "
                    f"store {self.objects.url}: run with --media-store set to that store.",
                    path=value.path,
                )
            target = self._copy_path(key)
            if not await asyncio.to_thread(target.is_file):
                await self._fetch(key, target, self.max_download_bytes)
            return value.model_copy(update={"path": str(target)})
        if isinstance(value, dict):
            keys = list(value)
            done = await asyncio.gather(*(self.localise(value[k]) for k in keys))
            return dict(zip(keys, done, strict=True))
        if isinstance(value, list | tuple):
            items = await asyncio.gather(*(self.localise(v) for v in value))
            return type(value)(items) if isinstance(value, tuple) else list(items)
        if isinstance(value, BaseModel) and not isinstance(value, Image | Audio | Video):
            fields = type(value).model_fields
            new = await asyncio.gather(*(self.localise(getattr(value, f)) for f in fields))
            changed = {f: v for f, v in zip(fields, new, strict=True) if v is not getattr(value, f)}
            return value.model_copy(update=changed) if changed else value
        return value

    def _copy_path(self, key: str) -> Path:
        """Where object ``key`` is kept locally: the run's ``inputs/`` folder."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.root / "inputs" / f"{digest}-{PurePosixPath(key).name}"

    async def _fetch(self, key: str, target: Path, max_bytes: int) -> None:
        try:
            await self.objects.download(key, target, max_bytes=max_bytes)
        except MediaError:
            raise
        except FileNotFoundError:
            raise MediaError(
                f"{self.objects.uri(key)} is not in the media store: it was deleted, or the "
                "key is wrong.",
                path=self.objects.uri(key),
            ) from None
        except Exception as exc:
            raise MediaError(
                f"Reading {self.objects.uri(key)} from the media store failed "
                f"({_reason(exc)}): check the store and the AWS credentials.",
                path=self.objects.uri(key),
            ) from None

    async def read_input(
        self,
        name: str,
        kind: Literal["image", "audio", "video"],
        text: str,
        *,
        own_only: bool = False,
        max_bytes: int = MAX_INPUT_BYTES,
    ) -> Media | None:
        """Input ``name`` given as this store's presigned URL, ``s3://`` URI, or (on the
        server) the path of a file of this run's folder kept only in the store: read from
        the store and checked. None when ``text`` is none of these.

        A presigned URL is read with a GET of that URL sent to the store's own endpoint (no
        redirect followed), so the store checks its signature and expiry: it is the proof
        the caller was handed the file. With ``own_only`` (the server), a URI or path must
        lie in this run's own keys.
        """
        key: str | None = None
        url: str | None = None
        if text.startswith("s3://"):
            key = self.objects.key_of_uri(text)
            if key is None:
                raise MediaError(
                    f"Input {name!r}: {text} is not in this run's media store "
                    f"({self.objects.url}): give a key under that bucket and prefix, or "
                    "another form of the file (a path, a data: URL, an http(s) URL)."
                )
        elif text.startswith(("http://", "https://")):
            key = self.objects.key_of_url(text)
            url = text if key is not None else None
        elif own_only and "://" not in text and not text.startswith("data:"):
            local = self._media_root_path(text)
            key = None if local is None else self.key_for(local)
            if local is not None and await asyncio.to_thread(local.is_file):
                return None  # this replica has the file: the ordinary path input
        if key is None:
            return None
        if own_only and url is None and not key.startswith(self._own_prefix()):
            raise MediaError(
                f"Input {name!r}: {text} belongs to another thread; pass the signed URL the "
                "server returned for it instead."
            )
        target = self._copy_path(key)
        if url is not None:
            await self._fetch_signed(name, url, target, max_bytes)
        elif not await asyncio.to_thread(target.is_file):
            await self._fetch(key, target, max_bytes)
        media = _TYPES[kind]
        try:
            value = await media.aopen(target)
        except MediaError:
            await asyncio.to_thread(target.unlink, True)  # a bad file is not kept
            raise
        return value.model_copy(update={"uri": self.objects.uri(key)})

    def _own_prefix(self) -> str:
        """The keys of this thread: ``<prefix>/<run>/`` (``run``, ``batch``, ``worker``),
        ``<prefix>/<thread folder>/`` on the server."""
        relative = self.root.relative_to(self.base).parts if self.root != self.base else ()
        parts = [self.objects.prefix, self.run, *relative[:1]]
        return "/".join(p for p in parts if p) + "/"

    def _media_root_path(self, text: str) -> Path | None:
        """The local path of a served media path ``<thread>/<file>`` (or ``/media/...``)."""
        text = text.strip()
        if text.startswith("/") and not text.startswith("/media/"):
            return None  # an absolute server path: the ordinary path input refuses it
        parts = [p for p in text.strip("/").split("/") if p]
        if parts[:1] == ["media"]:  # the relative URL /media/<thread>/<file>
            parts = parts[1:]
        if not parts or any(p in (".", "..") or "\\" in p for p in parts):
            return None
        return self.base.joinpath(*parts)

    async def _fetch_signed(self, name: str, url: str, target: Path, max_bytes: int) -> None:
        # A plain client of its own: the store's endpoint is configuration, not the caller's
        # choice, so the checks on client-given URLs do not apply; no redirect is followed.
        client = await asyncio.to_thread(  # made in a thread: it reads CA files
            httpx.AsyncClient, follow_redirects=False, timeout=30.0, trust_env=False
        )
        async with client, client.stream("GET", url) as response:
            if response.status_code != 200:
                raise MediaError(
                    f"Input {name!r}: the media store refused the signed URL (HTTP "
                    f"{response.status_code}): it has expired or was altered; ask the server "
                    "for the output again to get a fresh URL."
                )
            total = 0
            async with aatomic_writer(target) as fh:
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    if total > max_bytes:
                        raise MediaError(
                            f"Input {name!r} is over the {max_bytes}-byte input limit."
                        )
                    fh.write(chunk)

    # -- around a node (the runner's hook) -----------------------------------------------------
    async def resolve_inputs(self, plan: Plan, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """A run's media inputs given as ``s3://`` URIs or presigned URLs of this store, read
        from it (the others are left for the runner to open as files)."""
        given = dict(inputs or {})
        for name, spec in plan.spec.inputs.items():
            value = given.get(name)
            if spec.type in _TYPES and isinstance(value, str) and "://" in value:
                found = await self.read_input(name, spec.type, value.strip())  # type: ignore[arg-type]
                if found is not None:
                    given[name] = found
        return given


def _safe_run(run: str) -> str:
    if not run:
        return ""
    return "/".join(MediaStore.check_name(run))


def open_media_store(out_dir: str | os.PathLike[str], media_store: str | None) -> MediaStore:
    """The media store of a run writing into ``out_dir``: the local folder when
    ``media_store`` is empty, else that folder kept in object storage."""
    if not media_store:
        return MediaStore(out_dir)
    return ObjectMediaStore(out_dir, object_store(media_store))


def store_at(store: MediaStore, folder: str | os.PathLike[str]) -> MediaStore:
    """``store`` (an object store or the local one) with ``folder`` as its working copy."""
    if not isinstance(store, ObjectMediaStore):
        return MediaStore(folder)
    twin = copy.copy(store)
    twin.root = twin.base = Path(folder).resolve()
    return twin


async def for_run(
    ctx: RunContext,
    thread: str,
    plan: Plan,
    inputs: Mapping[str, Any] | None,
    *,
    resume: bool,
) -> tuple[RunContext, Mapping[str, Any] | None]:
    """The runner's hook for a run whose media go to object storage: the run's context with
    keys under ``<prefix>/<thread>/``, and its inputs given as the store's ``s3://`` URIs
    or presigned URLs read from the store."""
    store = ctx.store
    if not isinstance(store, ObjectMediaStore):
        return ctx, inputs
    store = store.for_run(thread)
    if not resume:
        inputs = await store.resolve_inputs(plan, inputs)
    return dataclasses.replace(ctx, store=store), inputs


def store_key_root(store: MediaStore, media_root: Path) -> MediaStore:
    """A server thread's store: keys ``<prefix>/<path under the media root>`` (the ``path``
    a served output shows), so every replica finds a thread's media at the same key."""
    if not isinstance(store, ObjectMediaStore):
        return store
    twin = copy.copy(store)
    twin.base = media_root.resolve()
    twin.run = ""
    return twin
