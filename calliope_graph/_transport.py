"""Lower-layer failures mapped into the taxonomy, in one place.

Every engine request, the LangChain engine and :meth:`MediaStore.download` wrap their I/O
in :func:`map_transport_errors` (or call :func:`transport_error` on an exception they
caught), so an httpx or JSON failure becomes the same taxonomy error wherever it happens —
the way httpx's ``map_httpcore_exceptions`` maps httpcore's. The most specific class wins::

    httpx.TimeoutException (any phase)       → ProviderTimeoutError    "timeout"
    httpx.UnsupportedProtocol (bad base URL) → ConfigurationError
    httpx.LocalProtocolError (our request)   → InvalidRequestError     "local_protocol_error"
    httpx.ConnectError                       → TransientProviderError  "connect_error"
    httpx.RemoteProtocolError (dropped)      → TransientProviderError  "protocol_error"
    httpx.ProxyError                         → TransientProviderError  "proxy_error"
    any other httpx.TransportError           → TransientProviderError  "transport_error"
    httpx.DecodingError, json.JSONDecodeError,
    UnicodeDecodeError (a malformed body)    → TransientProviderError  "malformed_body"

(the quoted word is the error's ``code``).
Transient ones are retried by the engine layer's retry wrapper. Taxonomy errors pass
through untouched. This module imports only :mod:`calliope_graph.errors` and httpx, so the
lowest layers (``media``) can use it without importing the engines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from types import TracebackType

import httpx

from calliope_graph._secrets import redact
from calliope_graph.errors import (
    CalliopeError,
    ConfigurationError,
    InvalidRequestError,
    ProviderTimeoutError,
    TransientProviderError,
)

__all__ = ["map_transport_errors", "transport_error"]


def _where(exc: BaseException, what: str) -> str:
    """``what`` plus the request's method and path when the exception knows them (never the
    query string, which may carry a signed token)."""
    try:
        request = exc.request if isinstance(exc, httpx.RequestError) else None
    except RuntimeError:  # httpx raises when the exception has no request attached
        request = None
    if request is None:
        return what
    return f"{what} ({request.method} {request.url.path})"


def transport_error(
    exc: BaseException,
    provider: str,
    *,
    what: str = "request",
    secrets: Iterable[str] = (),
) -> CalliopeError | None:
    """The taxonomy error for a lower-layer ``exc``, or None when it is not one we map.

    ``what`` names the operation in the message (``"request"``, ``"download"``);
    ``secrets`` are masked from it along with anything shaped like a key.
    """
    kind = type(exc).__name__
    where = _where(exc, what)
    detail = redact(str(exc), list(secrets))[:200]
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeoutError(
            f"{provider} did not answer in time ({kind} on the {where}) — "
            "raise the timeout or add a fallback edge on timeout.",
            provider=provider,
            code="timeout",
        )
    if isinstance(exc, httpx.UnsupportedProtocol):
        return ConfigurationError(
            f"{provider} {where} failed: {detail or kind}. Check the provider's base URL "
            "(it must start with http:// or https://)."
        )
    if isinstance(exc, httpx.LocalProtocolError):
        return InvalidRequestError(
            f"{provider} {where} could not be sent ({kind}: {detail}); check the request "
            "headers and parameters.",
            provider=provider,
            code="local_protocol_error",
        )
    if isinstance(exc, httpx.TransportError):
        if isinstance(exc, httpx.ConnectError):
            code = "connect_error"
        elif isinstance(exc, httpx.RemoteProtocolError):
            code = "protocol_error"
        elif isinstance(exc, httpx.ProxyError):
            code = "proxy_error"
        else:
            code = "transport_error"
        return TransientProviderError(
            f"{provider} connection failed ({kind}: {detail}) on the {where} — "
            "check the base URL and network.",
            provider=provider,
            code=code,
        )
    if isinstance(exc, httpx.DecodingError | json.JSONDecodeError | UnicodeDecodeError):
        return TransientProviderError(
            f"{provider} returned a malformed body ({where}: {kind}).",
            provider=provider,
            code="malformed_body",
        )
    return None


class map_transport_errors:  # lower case: used like contextlib's helpers
    """A context manager (``with`` or ``async with``) that re-raises lower-layer failures
    as taxonomy errors (see the module docstring); anything else passes through.

    ``with map_transport_errors("replicate", what="download"): ...``
    """

    def __init__(
        self, provider: str, *, what: str = "request", secrets: Iterable[str] = ()
    ) -> None:
        self.provider = provider
        self.what = what
        self.secrets = list(secrets)

    def __enter__(self) -> map_transport_errors:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, CalliopeError):
            return
        mapped = transport_error(exc, self.provider, what=self.what, secrets=self.secrets)
        if mapped is not None:
            raise mapped from None

    async def __aenter__(self) -> map_transport_errors:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
