"""The HTTP routes LangGraph Server adds for calliope-graph (``langgraph.json`` ``http.app``).

``GET /media/<thread>/<run>/<file>?exp=…&sig=…`` serves a file of the media root
(``CALLIOPE_MEDIA_ROOT``): the ``url`` of every media output of a served run. A request is
served when

- its signature is valid and unexpired (:mod:`._signing`; a signed URL is a capability,
  it works for whoever holds it until ``exp``), or
- a custom auth handler is configured (``langgraph.json`` ``auth``, with
  ``http.enable_custom_route_auth`` so the route runs under it) and the authenticated user
  owns the thread: the thread's metadata ``owner`` (what the handler writes, as LangGraph's
  owner-scoped example does) equals the user's ``identity``.

Anything else is a 403, the same answer whatever the path, before the file system is
looked at (so a refusal never says whether a file exists). Paths are checked (no ``..``, no
symlink out of the root, files only); a signed path that names no file is a 404.

Its middleware limits every request body of the server (``CALLIOPE_MAX_BODY_BYTES``, see
:mod:`calliope_graph.serve._body`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from calliope_graph.media import mime_of
from calliope_graph.serve._body import BodyLimit
from calliope_graph.serve._graph import ServeSettings
from calliope_graph.serve._outputs import MEDIA_PREFIX, media_file

__all__ = ["OWNER_KEY", "app", "make_app", "thread_owner"]

logger = logging.getLogger("calliope_graph.serve")

#: The thread metadata key naming the thread's owner (the auth handler sets it).
OWNER_KEY = "owner"
_FORBIDDEN = (
    "Forbidden: a media URL needs its valid, unexpired signature (the exp and sig of the "
    "url a run returned), or the thread owner's credentials when the server has an auth "
    "handler."
)

#: Looks up a thread's owner (None: no such thread, or no owner).
OwnerLookup = Callable[[str], Awaitable[str | None]]


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


async def thread_owner(thread_id: str) -> str | None:
    """The ``owner`` metadata of thread ``thread_id``, read through LangGraph Server's
    in-process API (``langgraph_sdk.get_client()`` without a URL talks to the server it runs
    in, past the auth handler), or None when there is no such thread or owner."""
    from langgraph_sdk import get_client  # the [serve] extra; only inside the server

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:  # made in a thread: an httpx client may read proxy and CA settings
        client = _clients.setdefault(loop, await asyncio.to_thread(get_client, api_key=None))
    try:
        thread = await client.threads.get(thread_id)
    except Exception:  # no such thread (404), or the API refused: not an owner either way
        return None
    owner = (thread.get("metadata") or {}).get(OWNER_KEY)
    return owner if isinstance(owner, str) and owner else None


def _route_auth_enabled() -> bool:
    """Whether ``langgraph.json`` sets ``http.enable_custom_route_auth`` (LangGraph passes
    the ``http`` block as ``LANGGRAPH_HTTP``)."""
    try:
        http = json.loads(os.environ.get("LANGGRAPH_HTTP") or "{}")
    except ValueError:
        return False
    return isinstance(http, dict) and bool(http.get("enable_custom_route_auth"))


def _identity(request: Request) -> str:
    """The authenticated user's identity, or "" (no auth middleware on the route, or an
    unauthenticated user). LangGraph's custom auth sets ``scope["user"]``, a Starlette
    ``BaseUser`` with ``identity`` (langgraph-api ``auth/custom.py`` ``normalize_user``)."""
    user = request.scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    identity = getattr(user, "identity", "")
    return identity if isinstance(identity, str) else ""


def make_app(
    settings: ServeSettings | None = None, owner_of: OwnerLookup | None = None
) -> Starlette:
    """The routes, serving the media root of ``settings`` (default: from the environment);
    ``owner_of`` looks up a thread's owner (default: :func:`thread_owner`)."""
    settings = settings or ServeSettings.from_env()
    root, signer = settings.media_root, settings.signer
    if settings.owner_auth and not _route_auth_enabled():
        logger.warning(
            "langgraph.json has an auth handler but not http.enable_custom_route_auth: the "
            "media route cannot tell who asks, so thread owners need signed URLs too."
        )
    lookup = owner_of or thread_owner

    async def owns(request: Request, relative: str) -> bool:
        if not settings.owner_auth:
            return False  # without a custom auth handler, metadata is the client's to set
        identity = _identity(request)
        if not identity:
            return False
        thread = relative.split("/", 1)[0]
        return bool(thread) and await lookup(thread) == identity

    async def media(request: Request) -> Response:
        relative = str(request.path_params["path"])
        query = request.query_params
        signed = signer.verify(relative, query.get("exp"), query.get("sig"))
        if not signed and not await owns(request, relative):
            return JSONResponse({"detail": _FORBIDDEN}, status_code=403)
        path = await asyncio.to_thread(media_file, root, relative)
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
