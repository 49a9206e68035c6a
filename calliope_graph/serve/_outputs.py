"""Outputs of a served flow as JSON a client can use: media become ``{url, path, mime, ...}``.

``url`` is ``<base>/media/<path>?exp=…&sig=…``, where ``path`` is the file's place under the
media root (``<thread>/<run id>/illustration-….png``), ``<base>`` the server's own address
when known (``CALLIOPE_PUBLIC_URL``, else LangGraph Server's ``LANGGRAPH_API_URL``), else
empty — a URL relative to the server — and the query a signature that expires
(:mod:`._signing`). :func:`media_url` is the one place URLs are built. ``path`` is accepted
back as a media input by runs of the same thread, ``url`` by any run until it expires.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from calliope_graph.media import Audio, Image, ImageAnalysis, Video
from calliope_graph.serve._signing import MediaSigner, default_signer

__all__ = ["MEDIA_PREFIX", "media_file", "media_url", "public"]

#: Where the server's media routes live (see :mod:`calliope_graph.serve.app`).
MEDIA_PREFIX = "/media"


def media_file(root: Path, relative: str) -> Path | None:
    """The file ``relative`` (a media path, ``/``-separated) names under ``root``, or None
    (missing, a directory, outside the root: ``..``, a symlink out). Blocking: call it in a
    worker thread."""
    if not relative or "\x00" in relative:
        return None
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or "\\" in p for p in parts):
        return None
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def media_url(
    path: str | Path,
    root: Path,
    base: str = "",
    signer: MediaSigner | None = None,
    now: float | None = None,
) -> tuple[str, str] | None:
    """``(signed url, path under root)`` of media file ``path``; None when it is not under
    ``root``. ``signer`` defaults to the process's (``CALLIOPE_MEDIA_SECRET``)."""
    full = Path(path)
    if not full.is_absolute():
        full = root / full
    try:
        relative = PurePosixPath(full.relative_to(root)).as_posix()
    except ValueError:
        return None
    query = (signer or default_signer()).query(relative, now)
    return f"{base.rstrip('/')}{MEDIA_PREFIX}/{quote(relative)}?{query}", relative


def public(value: Any, root: Path, base: str = "", signer: MediaSigner | None = None) -> Any:
    """``value`` as JSON: media → ``{url, path, mime, width, height}`` (audio: ``duration_s``),
    pydantic objects → dicts (media inside converted too), lists and dicts element-wise."""
    if isinstance(value, Image | Audio | Video):
        found = media_url(value.path, root, base, signer)
        out: dict[str, Any] = {"url": found[0], "path": found[1]} if found else {"url": None}
        if value.uri:  # kept in object storage (CALLIOPE_MEDIA_STORE): the store's signed URL
            from calliope_graph.object_store import signed_url

            out["url"] = signed_url(value)
        out["mime"] = value.mime
        if isinstance(value, Image):
            out |= {"width": value.width, "height": value.height}
        elif isinstance(value, Audio):
            out["duration_s"] = value.duration_s
        return out
    if isinstance(value, ImageAnalysis):
        return value.to_dict()
    if isinstance(value, BaseModel):
        return {
            name: public(getattr(value, name), root, base, signer)
            for name in type(value).model_fields
        }
    if isinstance(value, dict):
        return {str(k): public(v, root, base, signer) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public(v, root, base, signer) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
