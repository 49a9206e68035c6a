"""An example LangGraph Server auth handler for calliope-graph: one bearer token per user,
every thread private to the user who made it, media served to its owner.

Wire it in with ``langgraph.json`` (this folder's ``langgraph.json`` does)::

    "auth": {"path": "./auth.py:auth"},
    "http": {"app": "calliope_graph.serve.app:app", "enable_custom_route_auth": true}

``enable_custom_route_auth`` runs this handler on calliope's ``/media`` route too, so the
route learns who asks (``request.user``) and serves an unsigned request to the thread's
owner. A request to ``/media/...`` without an ``Authorization`` header is let through as an
anonymous, unauthenticated user: the route then serves it only when its URL is signed
(a browser ``<img src>`` sends no header). Every other route needs a valid token.

Tokens come from ``CALLIOPE_EXAMPLE_TOKENS`` (``user=token,user=token``); with it unset
every request is refused. A real deployment checks a JWT or asks its identity provider
here instead.

Sources: LangGraph's custom auth guide (https://docs.langchain.com/langsmith/custom-auth),
its owner-scoped threads tutorial (https://docs.langchain.com/langsmith/resource-auth: tag
each thread with ``metadata.owner``, return ``{"owner": identity}`` as the filter), and
``enable_custom_route_auth``
(https://reference.langchain.com/python/langgraph-cli/schemas/HttpConfig/enable_custom_route_auth).
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from langgraph_sdk import Auth

auth = Auth()

#: The thread metadata key calliope's media route reads the owner from.
OWNER = "owner"


def _tokens() -> dict[str, str]:
    """``CALLIOPE_EXAMPLE_TOKENS`` as {token: user}."""
    found: dict[str, str] = {}
    for entry in os.environ.get("CALLIOPE_EXAMPLE_TOKENS", "").split(","):
        user, _, token = entry.strip().partition("=")
        if user and token:
            found[token] = user
    return found


TOKENS = _tokens()


@auth.authenticate
async def authenticate(authorization: str | None, path: str) -> Auth.types.MinimalUserDict:
    """The user a bearer token names; an anonymous user for a header-less media request."""
    if not authorization:
        if path.startswith("/media/"):  # a signed URL in a browser: the route decides
            return {"identity": "", "is_authenticated": False}
        raise Auth.exceptions.HTTPException(status_code=401, detail="Missing bearer token.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer":
        for known, user in TOKENS.items():  # constant-time: a token is a secret
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                return {"identity": user, "is_authenticated": True}
    raise Auth.exceptions.HTTPException(status_code=401, detail="Invalid bearer token.")


@auth.on.threads
async def own_threads(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    """A thread belongs to whoever made it; a user sees and runs only their own."""
    if ctx.action in ("create", "update", "create_run"):
        if value.get("metadata") is None:
            value["metadata"] = {}
        # in place: the server stores the dict it handed us (whatever the client sent)
        value["metadata"][OWNER] = ctx.user.identity
    return {OWNER: ctx.user.identity}


@auth.on.assistants
async def read_assistants(ctx: Auth.types.AuthContext, value: Any) -> bool:
    """Every user may read the served flows (assistants); nobody changes them over HTTP."""
    return ctx.action in ("read", "search")


@auth.on.crons
async def no_crons(ctx: Auth.types.AuthContext, value: Any) -> bool:
    """Scheduled runs are not part of this example."""
    return False


@auth.on.store
async def own_store(ctx: Auth.types.AuthContext, value: Any) -> None:
    """A user's store items live under a namespace that starts with their identity."""
    namespace = tuple(value.get("namespace") or ())
    if not namespace or namespace[0] != ctx.user.identity:
        raise Auth.exceptions.HTTPException(status_code=403, detail="Not your namespace.")
