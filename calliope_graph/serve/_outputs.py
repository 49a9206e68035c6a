"""Outputs of a served flow as JSON a client can use: media become ``{url, path, mime, ...}``.

``url`` is ``<base>/media/<path>``, where ``path`` is the file's place under the media root
(``<thread>/illustration-….png``) and ``<base>`` the server's own address when known
(``CALLIOPE_PUBLIC_URL``, else LangGraph Server's ``LANGGRAPH_API_URL``), else empty — a
URL relative to the server. The same ``path`` is accepted back as a media input.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from calliope_graph.media import Audio, Image, ImageAnalysis, Video

__all__ = ["MEDIA_PREFIX", "media_url", "public"]

#: Where the server's media routes live (see :mod:`calliope_graph.serve.app`).
MEDIA_PREFIX = "/media"


def media_url(path: str | Path, root: Path, base: str = "") -> tuple[str, str] | None:
    """``(url, path under root)`` of media file ``path``; None when it is not under ``root``."""
    full = Path(path)
    if not full.is_absolute():
        full = root / full
    try:
        relative = PurePosixPath(full.relative_to(root)).as_posix()
    except ValueError:
        return None
    return f"{base.rstrip('/')}{MEDIA_PREFIX}/{quote(relative)}", relative


def public(value: Any, root: Path, base: str = "") -> Any:
    """``value`` as JSON: media → ``{url, path, mime, width, height}`` (audio: ``duration_s``),
    pydantic objects → dicts (media inside converted too), lists and dicts element-wise."""
    if isinstance(value, Image | Audio | Video):
        found = media_url(value.path, root, base)
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
        return {name: public(getattr(value, name), root, base) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): public(v, root, base) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public(v, root, base) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
