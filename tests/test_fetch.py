"""The outbound fetch policy: internal addresses refused before any connection, the checked
address connected to, redirects checked, an allow list, a total deadline and a byte cap; and
media inputs checked before they are kept.

Every network test talks to a loopback server the test starts (allowed explicitly) or to an
``httpx.MockTransport``; names other than ``localhost`` go through an injected resolver.
"""

from __future__ import annotations

import base64
import binascii
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from _support import LoopbackHTTP

from calliope_graph import _fetch
from calliope_graph._fetch import Fetcher, FetchPolicy, address_class  # the fetch policy itself
from calliope_graph.errors import ConfigurationError, FetchError, FetchRefusedError, MediaError
from calliope_graph.media import Audio, Image, MediaStore, Video
from calliope_graph.serve import media_input
from calliope_graph.testing import image_bytes, mp4_bytes, wav_bytes

PUBLIC = "93.184.215.14"  # a global unicast address; never connected to (mock transports)


# -- address classes ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.0.0.1", "private"),  # "this network"
        ("240.0.0.1", "private"),  # reserved 240/4: ipaddress lists it as private too
        ("198.18.0.1", "private"),  # benchmarking
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "private"),  # documentation
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("8.8.8.8", None),
        (PUBLIC, None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),  # mapped public: the connection goes to 8.8.8.8
        ("2002:808:808::1", None),  # 6to4 of a public address
    ],
)
def test_internal_addresses_are_classified_and_public_ones_pass(
    address: str, expected: str | None
) -> None:
    assert address_class(address) == expected


def test_the_allow_list_takes_names_ips_and_networks_and_names_a_bad_entry() -> None:
    policy = FetchPolicy.from_env(
        {"CALLIOPE_FETCH_ALLOW": " Media.Internal. , 10.0.0.5,192.168.0.0/16,[fd00::1], ::1"}
    )
    assert policy.allow_hosts == {"media.internal"}
    assert policy.allows_host("MEDIA.internal.") and not policy.allows_host("other.internal")
    assert policy.refusal("10.0.0.5") is None and policy.refusal("10.0.0.6") == "private"
    assert policy.refusal("192.168.44.1") is None
    assert policy.refusal("fd00::1") is None and policy.refusal("::1") is None
    assert policy.refusal("::ffff:10.0.0.5") is None  # the IPv4 inside counts too
    assert policy.refusal("127.0.0.1") == "loopback"
    for bad in ("http://media.internal", "media.internal:8080", "10.0.0.0/33", "a b"):
        with pytest.raises(ConfigurationError, match="CALLIOPE_FETCH_ALLOW") as failed:
            FetchPolicy.from_env({"CALLIOPE_FETCH_ALLOW": bad})
        assert repr(bad) in str(failed.value)
    assert FetchPolicy.from_env({}).timeout == 30.0
    assert FetchPolicy.from_env({"CALLIOPE_FETCH_TIMEOUT": "2.5"}).timeout == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ConfigurationError, match="CALLIOPE_FETCH_TIMEOUT"):
            FetchPolicy.from_env({"CALLIOPE_FETCH_TIMEOUT": bad})


# -- helpers -----------------------------------------------------------------------------------
class Seen:
    """A mock transport recording every request it is given."""

    def __init__(self, handler: Any = None) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler

    def __call__(self) -> httpx.AsyncBaseTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            if self.handler is None:
                return httpx.Response(200, content=b"ok")
            response: httpx.Response = self.handler(request)
            return response

        return httpx.MockTransport(handle)


def resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> _fetch.Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        return table[host]

    return resolve


def host_of(request: httpx.Request) -> str:
    return request.headers["host"]


@pytest.fixture
def loopback() -> Iterator[LoopbackHTTP]:
    wav = wav_bytes("hello there")
    server = LoopbackHTTP({"/voice.wav": (200, {"Content-Type": "audio/wav"}, wav)})
    yield server
    server.close()


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/voice.wav",
        "http://2130706433:{port}/voice.wav",  # decimal
        "http://0x7f000001:{port}/voice.wav",  # hexadecimal
        "http://017700000001:{port}/voice.wav",  # octal
        "http://127.1:{port}/voice.wav",  # short form
        "http://0:{port}/voice.wav",  # 0.0.0.0 reaches this host on Linux
        "http://[::1]:{port}/voice.wav",
        "http://[::ffff:127.0.0.1]:{port}/voice.wav",
        "http://localhost:{port}/voice.wav",
        "http://LOCALHOST:{port}/voice.wav",
    ],
)
async def test_a_loopback_url_in_any_form_is_refused_without_contacting_it(
    loopback: LoopbackHTTP, url: str
) -> None:
    fetcher = Fetcher(FetchPolicy())  # the system resolver, a real transport
    with pytest.raises(FetchRefusedError) as refused:
        await fetcher.fetch(url.format(port=loopback.port), max_bytes=1 << 20, label="Input 'a'")
    message = str(refused.value)
    assert "loopback" in message or "unspecified" in message
    assert "CALLIOPE_FETCH_ALLOW=" in message and message.startswith("Input 'a': ")
    assert loopback.hits == []


async def test_an_octal_dotted_address_is_not_a_url_httpx_accepts(loopback: LoopbackHTTP) -> None:
    with pytest.raises(FetchError, match="is not a valid URL"):
        await Fetcher(FetchPolicy()).fetch(
            f"http://0177.0.0.1:{loopback.port}/voice.wav", max_bytes=1 << 20
        )
    assert loopback.hits == []


async def test_a_refusal_says_nothing_about_the_target(loopback: LoopbackHTTP) -> None:
    """An open port with a file, a 404, a closed port: one message, nothing sent."""
    fetcher = Fetcher(FetchPolicy())
    messages = set()
    for url in (
        f"http://127.0.0.1:{loopback.port}/voice.wav",
        f"http://127.0.0.1:{loopback.port}/missing",
        "http://127.0.0.1:1/voice.wav",
    ):
        with pytest.raises(FetchRefusedError) as refused:
            await fetcher.fetch(url, max_bytes=10)
        messages.add(str(refused.value))
    assert len(messages) == 1, messages
    (message,) = messages
    assert str(loopback.port) not in message and "404" not in message
    assert loopback.hits == []


async def test_a_name_with_any_internal_address_is_refused() -> None:
    seen = Seen()
    fetcher = Fetcher(
        FetchPolicy(),
        resolver=resolver({"cdn.example": [PUBLIC, "10.0.0.7"]}),
        transport=seen,
    )
    with pytest.raises(FetchRefusedError, match="private address"):
        await fetcher.fetch("https://cdn.example/a.png", max_bytes=10)
    assert seen.requests == []


async def test_only_http_and_https_are_fetched() -> None:
    fetcher = Fetcher(FetchPolicy(), transport=Seen())
    for url in ("file:///etc/passwd", "ftp://cdn.example/a.png", "gopher://x/"):
        with pytest.raises(FetchError, match="only http and https URLs are fetched"):
            await fetcher.fetch(url, max_bytes=10)


# -- the pinned connection -----------------------------------------------------------------------
async def test_the_connection_goes_to_the_checked_address_with_the_original_name() -> None:
    """The name is resolved once per hop; the request goes to that IP with the original
    Host header and, for https, the original name as TLS SNI (and certificate name)."""
    calls: list[str] = []
    seen = Seen(lambda r: httpx.Response(200, content=b"img", headers={"content-type": "x/y"}))
    fetcher = Fetcher(
        FetchPolicy(),
        resolver=resolver({"cdn.example": [PUBLIC]}, calls),
        transport=seen,
    )
    got = await fetcher.fetch("https://cdn.example:8443/a.png?token=s3cret", max_bytes=10)
    (request,) = seen.requests
    assert request.url.host == PUBLIC and request.url.port == 8443
    assert request.url.query == b"token=s3cret"
    assert host_of(request) == "cdn.example:8443"
    assert request.extensions["sni_hostname"] == "cdn.example"
    assert calls == ["cdn.example"]
    assert (got.data, got.mime, got.suffix) == (b"img", "x/y", ".png")


async def test_a_rebinding_name_cannot_move_the_connection(loopback: LoopbackHTTP) -> None:
    """The resolver answers an allowed address, then an internal one (DNS rebinding): the
    real connection goes to the address that was checked, and the name is not looked up
    again for it."""
    answers = [["127.0.0.1"], ["10.9.9.9"]]
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls), 2) - 1]

    policy = FetchPolicy(allow_networks=FetchPolicy.parse_allow("127.0.0.1")[1])
    got = await Fetcher(policy, resolver=rebinding).fetch(
        f"http://media.test:{loopback.port}/voice.wav", max_bytes=1 << 20
    )
    assert got.data.startswith(b"RIFF") and got.mime == "audio/wav"
    assert calls == ["media.test"]
    assert loopback.hits == [("/voice.wav", f"media.test:{loopback.port}")]


async def test_https_to_the_pinned_address_is_verified_for_the_name() -> None:
    """The TLS handshake to the checked IP sends the URL's name as SNI and checks the
    certificate against that name: a certificate for another name fails the fetch."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("media.test").configure_cert(server_tls)
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: names.append(name)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    wav = wav_bytes("over tls")
    server = LoopbackHTTP({"/v.wav": (200, {"Content-Type": "audio/wav"}, wav)}, tls=server_tls)
    try:
        fetcher = Fetcher(
            FetchPolicy(allow_networks=FetchPolicy.parse_allow("127.0.0.1")[1]),
            resolver=resolver({"media.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}),
            ssl_context=client_tls,
        )
        got = await fetcher.fetch(f"https://media.test:{server.port}/v.wav", max_bytes=1 << 20)
        assert got.data == wav
        with pytest.raises(FetchError, match=r"cannot connect to https://other\.test:"):
            await fetcher.fetch(f"https://other.test:{server.port}/v.wav", max_bytes=1 << 20)
    finally:
        server.close()
    assert names == ["media.test", "other.test"]
    assert server.hits == [("/v.wav", f"media.test:{server.port}")]


# -- redirects ----------------------------------------------------------------------------------
async def test_a_redirect_to_an_internal_address_is_refused_before_it_is_followed() -> None:
    def cdn(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://metadata.internal/latest"})

    seen = Seen(cdn)
    fetcher = Fetcher(
        FetchPolicy(),
        resolver=resolver({"cdn.example": [PUBLIC], "metadata.internal": ["169.254.169.254"]}),
        transport=seen,
    )
    with pytest.raises(FetchRefusedError, match="link-local address") as refused:
        await fetcher.fetch("https://cdn.example/a.png", max_bytes=10, label="Input 'image'")
    assert [host_of(r) for r in seen.requests] == ["cdn.example"]
    assert "302" not in str(refused.value)
    assert "metadata.internal" not in str(refused.value)  # where it redirects is not told
    assert "CALLIOPE_FETCH_ALLOW=<host>" in str(refused.value)


async def test_redirects_are_followed_five_times_at_most_and_never_to_another_scheme() -> None:
    def hops(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/file":
            return httpx.Response(301, headers={"location": "file:///etc/passwd"})
        n = int(request.url.path.strip("/"))
        if n < 9:
            return httpx.Response(307, headers={"location": f"/{n + 1}"})  # relative
        return httpx.Response(200, content=b"done")

    seen = Seen(hops)
    fetcher = Fetcher(FetchPolicy(), resolver=resolver({"cdn.example": [PUBLIC]}), transport=seen)
    got = await fetcher.fetch("https://cdn.example/4", max_bytes=10)  # 5 redirects: followed
    assert got.data == b"done" and str(got.url) == "https://cdn.example/9"
    assert all(host_of(r) == "cdn.example" for r in seen.requests)
    with pytest.raises(FetchError, match="redirects more than 5 times"):
        await fetcher.fetch("https://cdn.example/3", max_bytes=10)
    with pytest.raises(FetchError, match="only http and https"):
        await fetcher.fetch("https://cdn.example/file", max_bytes=10)


async def test_an_unresolvable_host_is_told_without_naming_where_a_redirect_went() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        if host == "cdn.example":
            return [PUBLIC]
        raise socket.gaierror(-2, "Name or service not known")

    def cdn(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://db.corp.internal/dump"})

    fetcher = Fetcher(FetchPolicy(), resolver=resolve, transport=Seen(cdn))
    with pytest.raises(FetchError, match=r"the host of https://nowhere\.example/a\.png cannot"):
        await fetcher.fetch("https://nowhere.example/a.png?k=s3cret", max_bytes=10)
    with pytest.raises(FetchError, match="the host of the URL it redirects to cannot") as failed:
        await fetcher.fetch("https://cdn.example/a.png", max_bytes=10)
    assert "db.corp.internal" not in str(failed.value)


# -- the allow list ------------------------------------------------------------------------------
async def test_the_allow_list_lets_a_named_internal_source_through(loopback: LoopbackHTTP) -> None:
    by_ip = Fetcher(FetchPolicy.from_env({"CALLIOPE_FETCH_ALLOW": "127.0.0.1"}))
    for url in ("http://127.0.0.1:{}/voice.wav", "http://2130706433:{}/voice.wav"):
        got = await by_ip.fetch(url.format(loopback.port), max_bytes=1 << 20)
        assert got.data.startswith(b"RIFF")
    by_name = Fetcher(FetchPolicy.from_env({"CALLIOPE_FETCH_ALLOW": "localhost"}))
    got = await by_name.fetch(f"http://localhost:{loopback.port}/voice.wav", max_bytes=1 << 20)
    assert got.data.startswith(b"RIFF")
    with pytest.raises(FetchRefusedError):  # the name is allowed, not its address
        await by_name.fetch(f"http://127.0.0.1:{loopback.port}/voice.wav", max_bytes=1 << 20)
    assert len(loopback.hits) == 3


async def test_an_allowed_sources_failures_are_told_plainly(loopback: LoopbackHTTP) -> None:
    fetcher = Fetcher(FetchPolicy.from_env({"CALLIOPE_FETCH_ALLOW": "127.0.0.0/8"}))
    with pytest.raises(FetchError, match="failed with HTTP 404"):
        await fetcher.fetch(f"http://127.0.0.1:{loopback.port}/missing?k=s3cret", max_bytes=9)
    with pytest.raises(FetchError, match=r"cannot connect to http://127\.0\.0\.1:1/a\.wav\.$"):
        await fetcher.fetch("http://127.0.0.1:1/a.wav?k=s3cret", max_bytes=9)


# -- bounds --------------------------------------------------------------------------------------
async def test_a_body_over_the_cap_is_refused_while_streaming() -> None:
    pulled: list[int] = []

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            for n in range(1000):
                pulled.append(n)
                yield b"x" * 1000

    def cdn(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/declared":
            return httpx.Response(200, headers={"content-length": "5000"}, stream=Endless())
        return httpx.Response(200, stream=Endless())  # chunked: no length declared

    fetcher = Fetcher(
        FetchPolicy(), resolver=resolver({"cdn.example": [PUBLIC]}), transport=Seen(cdn)
    )
    with pytest.raises(FetchError, match="over the 4500-byte input limit"):
        await fetcher.fetch("https://cdn.example/declared?k=s3cret", max_bytes=4500)
    assert pulled == []  # refused from the declared length, no body read
    with pytest.raises(FetchError, match="over the 4500-byte input limit") as failed:
        await fetcher.fetch("https://cdn.example/chunked", max_bytes=4500)
    assert pulled == [0, 1, 2, 3, 4]  # stopped at the chunk that would pass the cap
    assert "s3cret" not in str(failed.value)


@pytest.mark.real_timeout
async def test_a_trickling_download_is_cut_at_the_total_deadline() -> None:
    """Each byte comes well within the read timeout, so only the total deadline ends it."""
    stop = threading.Event()
    sent: list[int] = []

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not stop.wait(0.01) and len(sent) < 100000:
                self.wfile.write(b"x")
                self.wfile.flush()
                sent.append(1)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        policy = FetchPolicy(
            allow_networks=FetchPolicy.parse_allow("127.0.0.1")[1], timeout=0.2, read_timeout=5
        )
        with pytest.raises(FetchError, match=r"longer than the 0\.2-second limit"):
            await Fetcher(policy).fetch(
                f"http://127.0.0.1:{server.server_address[1]}/slow", max_bytes=1 << 20
            )
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
    assert len(sent) < 100000  # cut long before the end


# -- media inputs: data URL bounds, checked before kept ------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> MediaStore:
    return MediaStore(tmp_path / "media" / "thread-1")


def no_fetcher() -> Fetcher:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected request {request.url}")

    return Fetcher(FetchPolicy(), transport=lambda: httpx.MockTransport(refuse))


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_a_data_url_over_the_limit_is_refused_from_its_length_before_decoding(
    store: MediaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = store.root.parent
    limit = 3000
    exact = "data:image/png;base64," + base64.b64encode(b"\0" * limit).decode()
    over = "data:image/png;base64," + base64.b64encode(b"\0" * (limit + 3)).decode()

    def decode(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("decoded")

    with monkeypatch.context() as patched:
        patched.setattr(binascii, "a2b_base64", decode)  # what _inputs decodes with
        for url in (over, "data:text/plain," + "x" * (limit + 1)):
            with pytest.raises(MediaError, match="over the 3000-byte input limit"):
                await media_input(
                    "image", "image", url, store=store, root=root, fetcher=no_fetcher(),
                    max_bytes=limit,
                )  # fmt: skip
    # a payload of exactly the limit is decoded (then refused for not being an image)
    with pytest.raises(MediaError, match="not an image"):
        await media_input(
            "image", "image", exact, store=store, root=root, fetcher=no_fetcher(), max_bytes=limit
        )
    assert files_under(root) == []


@pytest.mark.parametrize(
    ("kind", "body", "mime"),
    [
        ("audio", b"<html>internal admin page</html>", "audio/wav"),
        ("audio", b"<html>internal admin page</html>", "text/html"),
        ("image", b"<html>internal admin page</html>", "image/png"),
        ("video", b"<html>internal admin page</html>", "video/mp4"),
        ("video", b"\0\0\0\x18ftypmp42" + b"\0" * 64, "video/mp4"),  # a header, no stream
        ("image", image_bytes("cut", 64, 64)[:-40], "image/png"),  # truncated
    ],
)
async def test_a_body_that_is_not_the_media_it_claims_leaves_nothing_behind(
    store: MediaStore, kind: str, body: bytes, mime: str
) -> None:
    root = store.root.parent
    url = f"data:{mime};base64,{base64.b64encode(body).decode()}"
    with pytest.raises(MediaError) as failed:
        await media_input(kind, kind, url, store=store, root=root, fetcher=no_fetcher())  # type: ignore[arg-type]
    message = str(failed.value)
    assert message.startswith(f"Input {kind!r}: ")
    assert str(root) not in message and str(store.root) not in message
    assert f"thread-1/inputs/{kind}-" in message  # its place under the media root
    assert failed.value.path is not None and not Path(failed.value.path).is_absolute()
    assert files_under(root) == []


async def test_a_downloaded_body_is_checked_before_it_is_kept(
    store: MediaStore, loopback: LoopbackHTTP
) -> None:
    root = store.root.parent
    loopback.routes["/page.wav"] = (200, {"Content-Type": "text/html"}, b"<html>secret</html>")
    fetcher = Fetcher(FetchPolicy.from_env({"CALLIOPE_FETCH_ALLOW": "127.0.0.1"}))
    with pytest.raises(MediaError, match="not a RIFF/WAVE file") as failed:
        await media_input(
            "audio", "audio", f"http://127.0.0.1:{loopback.port}/page.wav", store=store,
            root=root, fetcher=fetcher,
        )  # fmt: skip
    assert str(root) not in str(failed.value) and "secret" not in str(failed.value)
    assert files_under(root) == []
    audio = await media_input(
        "audio", "audio", f"http://127.0.0.1:{loopback.port}/voice.wav", store=store,
        root=root, fetcher=fetcher,
    )  # fmt: skip
    assert isinstance(audio, Audio) and audio.duration and audio.mime == "audio/wav"
    assert Path(audio.path).parent == store.root / "inputs"
    assert files_under(root) == [Path(audio.path)]


async def test_good_media_of_every_kind_are_kept_with_their_real_format(
    store: MediaStore,
) -> None:
    root = store.root.parent
    given = {
        "image": ("image/png", image_bytes("a kite", 40, 30), ".png"),
        "audio": ("audio/wav", wav_bytes("a fox runs"), ".wav"),
        "video": ("video/mp4", mp4_bytes("a kite", seconds=1.0), ".mp4"),
    }
    for kind, (mime, body, ext) in given.items():
        url = f"data:{mime};base64,{base64.b64encode(body).decode()}"
        value = await media_input(kind, kind, url, store=store, root=root, fetcher=no_fetcher())  # type: ignore[arg-type]
        assert isinstance(value, {"image": Image, "audio": Audio, "video": Video}[kind])
        assert Path(value.path).read_bytes() == body and value.path.endswith(ext)
        assert Path(value.path).parent == store.root / "inputs"
    # a JPEG sent as image/png is kept under its real extension
    jpeg = image_bytes("a kite", 40, 30, fmt="JPEG")
    image = await media_input(
        "image", "image", f"data:image/png;base64,{base64.b64encode(jpeg).decode()}",
        store=store, root=root, fetcher=no_fetcher(),
    )  # fmt: skip
    assert image.mime == "image/jpeg" and image.path.endswith(".jpg")


def test_serialised_media_paths_are_relative_to_the_media_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a server keeps in checkpoints (and shows as thread state) names a file by its
    place under the media root; read back, it is the absolute path again."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from calliope_graph import errors
    from calliope_graph.media import _values, set_media_root  # _values: the media root global

    monkeypatch.setattr(_values, "_MEDIA_ROOT", None)
    monkeypatch.setattr(errors, "_MEDIA_ROOT", None)  # set_media_root sets it too
    inside = str(tmp_path / "media" / "t1" / "inputs" / "audio-1.wav")
    outside = str(tmp_path / "elsewhere.wav")
    values = [Audio(path=inside, mime="audio/wav"), Audio(path=outside, mime="audio/wav")]
    assert values[0].model_dump()["path"] == inside  # by default, paths stay as they are
    set_media_root(tmp_path / "media")
    assert [v.model_dump(mode="json")["path"] for v in values] == ["t1/inputs/audio-1.wav", outside]
    serde = JsonPlusSerializer(allowed_msgpack_modules=[("calliope_graph.media", "Audio")])
    stored = serde.dumps_typed(values[0])
    assert inside.encode() not in stored[1]
    assert serde.loads_typed(stored) == values[0]  # absolute again in memory


# -- request bodies ------------------------------------------------------------------------------
def test_a_request_body_over_the_limit_is_refused_before_the_api_reads_it() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from calliope_graph.serve._body import BodyLimit, max_body_bytes

    read: list[int] = []

    async def runs(request: Request) -> JSONResponse:
        read.append(len(await request.body()))
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/runs", runs, methods=["POST"])],
        middleware=[Middleware(BodyLimit, max_bytes=1000)],
    )
    client = TestClient(app)
    assert client.post("/runs", content=b"x" * 1000).status_code == 200
    refused = client.post("/runs", content=b"x" * 1001)  # declared: refused unread
    assert refused.status_code == 413
    assert "limit of 1000 bytes (CALLIOPE_MAX_BODY_BYTES)" in refused.json()["detail"]
    chunked = client.post("/runs", content=iter([b"x" * 600] * 3))  # no length declared
    assert chunked.status_code == 413
    assert read == [1000]  # the app never had an over-limit body
    assert max_body_bytes({}) == 4 * -(-50 * 1024 * 1024 // 3) + (1 << 20)
    assert max_body_bytes({"CALLIOPE_MAX_BODY_BYTES": "100_000_000"}) == 100_000_000
    with pytest.raises(ConfigurationError, match="CALLIOPE_MAX_BODY_BYTES"):
        max_body_bytes({"CALLIOPE_MAX_BODY_BYTES": "lots"})
