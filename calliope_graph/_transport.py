"""The one place where httpx's lower-layer errors become taxonomy errors.

``with map_transport_errors("openai", what="download of the output"):`` around any httpx
call (sync or async: a plain context manager works inside ``async def``) turns

- :class:`httpx.TimeoutException` (connect, read, write, pool) into
  :class:`~calliope_graph.errors.ProviderTimeoutError` (``when: [timeout]`` and
  ``when: [transient]`` both catch it), and
- every other :class:`httpx.TransportError` (connection refused or reset, protocol errors,
  proxy errors) into :class:`~calliope_graph.errors.TransientProviderError`
  (``when: [transient]``),

with a message naming the provider and what failed, and the httpx error as the cause.
Messages carry the host and path of the request but never its query string, which may hold
a signed token or a key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from calliope_graph.errors import ProviderTimeoutError, TransientProviderError

__all__ = ["map_transport_errors"]

_QUERY = re.compile(r"\?[^\s'\"]*")


def _where(exc: httpx.TransportError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # raised without a request attached
        return ""
    return f" ({url.scheme}://{url.host}{url.path})" if url.host else ""


def _detail(exc: httpx.TransportError) -> str:
    text = _QUERY.sub("?…", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def map_transport_errors(provider: str, *, what: str = "request") -> Iterator[None]:
    """Map httpx transport failures inside the block to ProviderTimeoutError /
    TransientProviderError for ``provider``; ``what`` names the operation in the message."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ProviderTimeoutError(
            f"{provider} {what} timed out{_where(exc)} ({type(exc).__name__}): try again, raise "
            "the timeout, or add a fallback edge on 'timeout' or 'transient'.",
            provider=provider,
        ) from exc
    except httpx.TransportError as exc:
        raise TransientProviderError(
            f"{provider} {what} failed{_where(exc)} ({_detail(exc)}): the connection failed; "
            "check the network and try again, or add a fallback edge on 'transient'.",
            provider=provider,
        ) from exc
