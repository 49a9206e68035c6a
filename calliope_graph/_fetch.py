"""Outbound fetches made on a client's behalf, under one policy (no SSRF, bounded).

The server downloads a media input given as an http(s) URL; a client must not be able to
make it read an internal address. :class:`Fetcher` is the one way the library does that:

- **Resolve, then check every address.** The host is resolved with the system resolver
  (``getaddrinfo``, so ``2130706433``, ``0x7f000001`` and ``127.1`` resolve to the
  ``127.0.0.1`` they mean) and refused when *any* address is loopback, private, link-local,
  shared (CGNAT, ``100.64.0.0/10``), multicast, reserved, unspecified or otherwise not
  global — an IPv4 address inside an IPv6 one (mapped, compatible, 6to4, Teredo, NAT64)
  is checked as the IPv4 address it reaches (:func:`address_class`).
- **Connect to the address that was checked.** The request goes to the checked IP itself
  (no second lookup, so no DNS-rebinding window), with the original ``Host`` header and,
  for https, the original name as TLS SNI and certificate name (httpx's documented
  ``sni_hostname`` request extension). Each hop has its own connection pool: a pool keyed by
  IP could otherwise reuse a TLS connection verified for one name for another name.
- **Every redirect is a new fetch** checked the same way; at most :data:`MAX_REDIRECTS`;
  only ``http`` and ``https``.
- **Bounded.** A total deadline per download (``CALLIOPE_FETCH_TIMEOUT``, default 30 s)
  besides httpx's per-operation timeouts, and a byte cap enforced while streaming (a
  declared ``Content-Length`` over it is refused before the body is read; the body is asked
  for and read unencoded, so a small gzip body cannot inflate past the cap in one chunk).
- **Allow list.** ``CALLIOPE_FETCH_ALLOW`` (comma-separated host names, IPs or CIDRs) lets
  named internal sources through, for private deployments and tests. A host allowed by
  name is fetched whatever it resolves to (still at the address checked).

A refused fetch is one :class:`FetchRefusedError` (a ``MediaError``) naming the address class
and the setting that allows it, and nothing about the target: it is raised before any
connection, so there is no port state, status or size to tell.

Address facts come from :mod:`ipaddress` (standard library); written here is only their
order and the unwrapping of IPv4 inside IPv6, which ``ipaddress`` does not apply to its
``is_*`` properties before Python 3.13 (``::ffff:127.0.0.1`` is not ``is_loopback`` on 3.11).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import httpx

from calliope_graph.errors import ConfigurationError, FetchError, FetchRefusedError

__all__ = [
    "ALLOW_ENV",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "TIMEOUT_ENV",
    "FetchError",
    "FetchPolicy",
    "FetchRefusedError",
    "Fetched",
    "Fetcher",
    "address_class",
    "system_resolver",
]

ALLOW_ENV = "CALLIOPE_FETCH_ALLOW"
TIMEOUT_ENV = "CALLIOPE_FETCH_TIMEOUT"
#: Seconds one download may take in all (redirects, connecting and reading the body).
DEFAULT_TIMEOUT = 30.0
#: Redirects followed at most; the next one fails the fetch.
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port) -> addresses`` (as strings); :func:`system_resolver` unless a test injects one.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 shared address space
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix


# -- address classification ------------------------------------------------------------------
def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, bool] | None:
    """The IPv4 address an IPv6 address carries, and whether a connection goes straight to it
    (mapped ``::ffff:a.b.c.d`` and the deprecated compatible ``::a.b.c.d``) rather than
    through a relay or translator (6to4 ``2002::/16``, Teredo ``2001::/32``, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, True
    value = int(ip)
    if value >> 32 == 0 and value > 1:  # ::a.b.c.d (RFC 4291 §2.5.5.1); ::1 and :: are not
        return ipaddress.IPv4Address(value), True
    if ip.sixtofour is not None:
        return ip.sixtofour, False
    if ip.teredo is not None:
        return ip.teredo[1], False  # (server, client): the client is where packets end up
    if ip in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF), False
    return None


def address_class(address: str | IPAddress) -> str | None:
    """Why ``address`` is internal ("loopback", "private", "link-local", "shared (CGNAT)",
    "multicast", "reserved", "unspecified", "site-local", "non-global"), or None when it is a
    public address the fetcher may connect to."""
    ip = ipaddress.ip_address(address.partition("%")[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_unspecified:
            return "unspecified"
        if ip.is_loopback:
            return "loopback"
        inner = _embedded_ipv4(ip)
        if inner is not None:
            v4, direct = inner
            found = address_class(v4)
            if direct or found is not None:
                return found
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared (CGNAT)"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:  # anything else the registries do not route publicly
        return "non-global"
    return None


# -- the policy ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FetchPolicy:
    """What :class:`Fetcher` may reach: public addresses, plus the allow list.

    ``allow_hosts`` are host names fetched whatever they resolve to; ``allow_networks`` are
    addresses (an IP is a /32 or /128) allowed although internal. ``timeout`` is the total
    deadline of one download; ``read_timeout`` bounds each connect and read inside it.
    """

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    read_timeout: float = 20.0
    max_redirects: int = MAX_REDIRECTS

    @classmethod
    def parse_allow(cls, text: str) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
        """``CALLIOPE_FETCH_ALLOW``'s value as (host names, networks); a ConfigurationError
        names an entry that is neither."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if "/" in name or ":" in name or not _is_host_name(name):
                raise ConfigurationError(
                    f"{ALLOW_ENV}: {entry!r} is not a host name, an IP address or a CIDR "
                    "network: write e.g. media.internal,10.0.0.5,10.1.0.0/16 (no scheme, "
                    "port or path)."
                )
            hosts.add(name)
        return frozenset(hosts), tuple(networks)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FetchPolicy:
        """The policy ``CALLIOPE_FETCH_ALLOW`` and ``CALLIOPE_FETCH_TIMEOUT`` set."""
        env = os.environ if environ is None else environ
        hosts, networks = cls.parse_allow(env.get(ALLOW_ENV, ""))
        raw = env.get(TIMEOUT_ENV, "").strip()
        timeout = DEFAULT_TIMEOUT
        if raw:
            try:
                timeout = float(raw)
            except ValueError:
                timeout = -1.0
            if not 0 < timeout < float("inf"):
                raise ConfigurationError(
                    f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds: set it to "
                    f"e.g. 30 (the default), or unset it."
                )
        return cls(
            allow_hosts=hosts,
            allow_networks=networks,
            timeout=timeout,
            read_timeout=min(20.0, timeout),
        )

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` (as the URL names it) is on the allow list by name."""
        return host.lower().rstrip(".") in self.allow_hosts

    def refusal(self, address: str) -> str | None:
        """The class of ``address`` that refuses it, or None when it may be fetched."""
        ip = ipaddress.ip_address(address.partition("%")[0])
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)):
            candidates.append(inner[0])
        if any(c in net for c in candidates for net in self.allow_networks):
            return None
        return address_class(ip)


def _is_host_name(name: str) -> bool:
    labels = name.split(".")
    return bool(name) and all(
        label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    )


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the event loop's ``getaddrinfo``, in a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# -- the fetcher -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fetched:
    """A downloaded body: its bytes, the media type the server declared, the final URL."""

    data: bytes
    mime: str
    url: httpx.URL

    @property
    def suffix(self) -> str:
        """The final URL's file extension (``.png``), lower case, or ``""``."""
        return PurePosixPath(self.url.path).suffix.lower()


def _shown(url: httpx.URL) -> str:
    """``url`` for a message: without the query (it may carry a token) or user info."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))


@dataclass
class Fetcher:
    """Downloads URLs under a :class:`FetchPolicy` (see the module docstring).

    ``resolver`` and ``transport`` (a factory of one httpx transport per hop) are for tests;
    by default the system resolver and httpx's own transport (verifying with
    ``ssl_context``), never a proxy from the environment (a proxy would connect to the
    target itself, unchecked).
    """

    policy: FetchPolicy = field(default_factory=FetchPolicy.from_env)
    resolver: Resolver = system_resolver
    transport: Callable[[], httpx.AsyncBaseTransport] | None = None
    #: The CAs https sources are verified with; None: httpx's default, made on first use.
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    async def fetch(self, url: str, *, max_bytes: int, label: str = "URL") -> Fetched:
        """The body of ``url`` (at most ``max_bytes``), following checked redirects.

        ``label`` starts every error message (e.g. ``"Input 'audio'"``). Every failure is a
        :class:`FetchError`; a refused address a :class:`FetchRefusedError`.
        """
        try:
            start = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            shown = url.partition("?")[0][:200]  # a query may carry a token
            raise FetchError(f"{label}: {shown!r} is not a valid URL ({exc}).") from None
        try:
            async with asyncio.timeout(self.policy.timeout):
                return await self._follow(start, max_bytes, label)
        except TimeoutError:
            raise FetchError(
                f"{label}: downloading {_shown(start)} took longer than the "
                f"{self.policy.timeout:g}-second limit ({TIMEOUT_ENV}); use a faster source "
                "or a smaller file."
            ) from None

    async def _follow(self, url: httpx.URL, max_bytes: int, label: str) -> Fetched:
        for hop in range(self.policy.max_redirects + 1):
            addresses = await self._check(url, label, first=hop == 0)
            async with _Hop(self, url, addresses, label) as response:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    if hop == self.policy.max_redirects:
                        raise FetchError(
                            f"{label}: {_shown(url)} redirects more than "
                            f"{self.policy.max_redirects} times; give the final URL."
                        )
                    try:
                        url = url.join(location)  # relative to the name, never to the IP
                    except (httpx.InvalidURL, ValueError):
                        raise FetchError(
                            f"{label}: {_shown(url)} redirects to an invalid URL."
                        ) from None
                    continue
                return await self._body(url, response, max_bytes, label)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    async def _check(self, url: httpx.URL, label: str, *, first: bool) -> list[str]:
        """The addresses ``url``'s host resolves to, all allowed; else a FetchError (naming
        the host only when it is the client's own: ``first``, not a redirect's)."""
        if url.scheme not in ("http", "https"):
            raise FetchError(
                f"{label}: only http and https URLs are fetched, not "
                f"{url.scheme or 'a URL without a scheme'}{':' if url.scheme else ''}."
            )
        host = url.raw_host.decode("ascii")
        shown = _shown(url) if first else "the URL it redirects to"
        if not host:
            raise FetchError(f"{label}: {shown} has no host.")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = list(await self.resolver(host, port))
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            raise FetchError(f"{label}: the host of {shown} cannot be resolved.")
        if not self.policy.allows_host(host):
            for address in addresses:
                found = self.policy.refusal(address)
                if found is not None:
                    raise _refused(label, found, host if first else "")
        return addresses

    async def _client(self) -> httpx.AsyncClient:
        timeout = httpx.Timeout(self.policy.read_timeout)
        if self.transport is not None:
            transport = self.transport()
        else:
            if self.ssl_context is None:  # made once, in a thread: it reads the CA files
                self.ssl_context = await asyncio.to_thread(httpx.create_ssl_context)
            transport = httpx.AsyncHTTPTransport(verify=self.ssl_context, trust_env=False)
        return httpx.AsyncClient(
            transport=transport, timeout=timeout, trust_env=False, follow_redirects=False
        )

    async def _body(
        self, url: httpx.URL, response: httpx.Response, max_bytes: int, label: str
    ) -> Fetched:
        shown = _shown(url)
        if response.status_code >= 400:
            raise FetchError(
                f"{label}: downloading {shown} failed with HTTP {response.status_code}."
            )
        if response.status_code != 200:
            raise FetchError(
                f"{label}: {shown} answered HTTP {response.status_code}, not the file."
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(label, shown, max_bytes)
        body = bytearray()
        try:
            async for chunk in _raw(response):
                if len(body) + len(chunk) > max_bytes:
                    raise _too_large(label, shown, max_bytes)
                body += chunk
        except httpx.HTTPError as exc:
            raise _failed(label, url, exc) from None
        if not body:
            raise FetchError(f"{label}: {shown} answered with an empty body.")
        mime = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        return Fetched(bytes(body), mime, url)


async def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it came (no content decoding), chunk by chunk; at once when a transport
    answered with the body already in memory (``httpx.MockTransport`` does)."""
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


def _too_large(label: str, shown: str, max_bytes: int) -> FetchError:
    return FetchError(f"{label}: {shown} is over the {max_bytes}-byte input limit.")


def _refused(label: str, found: str, host: str) -> FetchRefusedError:
    return FetchRefusedError(
        f"{label}: the URL leads to a {found} address, and the server does not fetch from "
        f"internal addresses. To allow a source you trust, set {ALLOW_ENV}="
        f"{host or '<host>'} (host names, IPs or CIDRs, comma-separated) where the server runs."
    )


class _Hop:
    """One request of a fetch, to the checked addresses in turn (the next only when one
    cannot be connected to, so nothing is sent twice); a FetchError for any failure."""

    def __init__(self, fetcher: Fetcher, url: httpx.URL, addresses: list[str], label: str):
        self.fetcher, self.url, self.addresses, self.label = fetcher, url, addresses, label
        self._client: httpx.AsyncClient | None = None
        self._response: httpx.Response | None = None

    async def __aenter__(self) -> httpx.Response:
        url = self.url
        headers = {"Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity"}
        # TLS to the IP, as the name: httpcore passes ``sni_hostname`` as the handshake's
        # ``server_hostname``, which is both the SNI and the name the certificate is checked
        # against (https://www.python-httpx.org/advanced/extensions/#sni_hostname;
        # encode/httpcore httpcore/_async/connection.py, ``_connect``).
        extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        client = self._client = await self.fetcher._client()
        failure: httpx.HTTPError | None = None
        try:
            for address in self.addresses:
                request = client.build_request(
                    "GET",
                    url.copy_with(host=address.partition("%")[0]),
                    headers=headers,
                    extensions=extensions,
                )
                try:
                    self._response = await client.send(request, stream=True)
                    return self._response
                except httpx.ConnectError as exc:  # nothing was sent: try the next address
                    failure = exc
                except httpx.HTTPError as exc:
                    failure = exc
                    break
        except BaseException:  # cancelled (the deadline): no connection left open
            await client.aclose()
            raise
        await client.aclose()
        raise _failed(self.label, url, failure)

    async def __aexit__(self, *exc: object) -> None:
        if self._response is not None:
            await self._response.aclose()
        if self._client is not None:
            await self._client.aclose()


def _failed(label: str, url: httpx.URL, exc: BaseException | None) -> FetchError:
    shown = _shown(url)
    if isinstance(exc, httpx.TimeoutException):
        return FetchError(f"{label}: {shown} did not answer in time.")
    if isinstance(exc, httpx.ConnectError):
        return FetchError(f"{label}: cannot connect to {shown}.")
    kind = type(exc).__name__ if exc is not None else "no address"
    return FetchError(f"{label}: downloading {shown} failed ({kind}).")
