"""The HTTP routes LangGraph Server adds for calliope-graph (``langgraph.json`` ``http.app``).

``GET /media/<thread>/<file>`` serves a file of the media root (``CALLIOPE_MEDIA_ROOT``):
the ``url`` of every media output of a served run. Paths are checked (no ``..``, no
symlink out of the root, files only); anything else is a 404.

Its middleware limits every request body of the server (``CALLIOPE_MAX_BODY_BYTES``, see
:mod:`calliope_graph.serve._body`).
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from calliope_graph.media import mime_of
from calliope_graph.serve._body import BodyLimit
from calliope_graph.serve._graph import ServeSettings
from calliope_graph.serve._outputs import MEDIA_PREFIX

__all__ = ["app", "make_app"]


def _find(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``root``, or None (missing, a directory, outside)."""
    if not relative or "\x00" in relative:
        return None
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or "\\" in p for p in parts):
        return None
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def make_app(settings: ServeSettings | None = None) -> Starlette:
    """The routes, serving the media root of ``settings`` (default: from the environment)."""
    root = (settings or ServeSettings.from_env()).media_root

    async def media(request: Request) -> Response:
        relative = str(request.path_params["path"])
        path = await asyncio.to_thread(_find, root, relative)
        if path is None:
            return JSONResponse({"detail": f"No media file {relative!r}."}, status_code=404)
        mime = mime_of(path) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=mime)

    return Starlette(
        routes=[Route(f"{MEDIA_PREFIX}/{{path:path}}", media, methods=["GET"])],
        # LangGraph Server applies the custom app's middleware to every route, its API too
        middleware=[Middleware(BodyLimit)],  # CALLIOPE_MAX_BODY_BYTES
    )


app = make_app()
