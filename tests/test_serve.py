"""LangGraph Server serves the shipped flows: typed I/O, media by URL, a per-run context.

The unit tests check the input conversion, the output contract, the schemas and the media
route in process. The server tests start ``langgraph dev`` once for the module (a free
loopback port, ``CALLIOPE_SIMULATE=1``, strict msgpack checkpoints, no ``--allow-blocking``)
and drive it with ``langgraph-sdk`` as a remote client would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from _support import LoopbackHTTP
from langgraph_sdk import get_client
from starlette.testclient import TestClient

from calliope_graph._fetch import Fetcher, FetchPolicy
from calliope_graph.errors import ConfigurationError, MediaError
from calliope_graph.flow import Flow, shipped_flows
from calliope_graph.media import Image, MediaStore
from calliope_graph.serve import ServeContext, ServeSettings, media_input, public, serve_graph
from calliope_graph.serve._signing import MediaSigner
from calliope_graph.serve.app import make_app
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_info, wav_bytes

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
#: The media key the test server signs with (so a test can sign an expired URL itself).
SECRET = "test-media-secret-0123456789abcdefghijklmnop"
SIGNER = MediaSigner(SECRET.encode())


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


WEBCAM = data_url(image_bytes("a kite over a beach", 96, 72), "image/png")


def flow_inputs(name: str) -> dict[str, Any]:
    """Real inputs for any shipped flow, from its declared input types."""
    values = {
        "text": "a lighthouse at dawn",
        "messages": "A fox and an owl meet at a lighthouse at dawn.",
        "image": WEBCAM,
        "audio": data_url(wav_bytes("the fox runs"), "audio/wav"),
    }
    spec = Flow.load(name).spec
    return {k: values[s.type] for k, s in spec.inputs.items() if s.required and s.type in values}


# -- input conversion ---------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> MediaStore:
    return MediaStore(tmp_path / "media" / "thread-1")


@contextlib.asynccontextmanager
async def _client(handler: Any = None) -> AsyncIterator[Fetcher]:
    """A fetcher whose requests go to ``handler`` (a mock CDN; none expected by default);
    ``cdn.example`` resolves to a public address."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected request {request.url}")

    async def resolve(host: str, port: int) -> list[str]:
        return {"cdn.example": ["93.184.215.14"]}[host]

    yield Fetcher(
        FetchPolicy(), resolver=resolve, transport=lambda: httpx.MockTransport(handler or refuse)
    )


async def test_a_data_url_becomes_an_image_in_the_threads_media(store: MediaStore) -> None:
    root = store.root.parent
    async with _client() as client:
        image = await media_input("image", "image", WEBCAM, store=store, root=root, fetcher=client)
    assert isinstance(image, Image)
    assert (image.width, image.height, image.mime) == (96, 72, "image/png")
    assert Path(image.path).parent == store.root / "inputs"


async def test_an_http_url_is_downloaded_with_the_size_cap(store: MediaStore) -> None:
    png = image_bytes("a red kite", 32, 32)
    seen: list[str] = []

    def cdn(request: httpx.Request) -> httpx.Response:
        seen.append(
            f"{request.url.scheme}://{request.headers['host']}{request.url.raw_path.decode()}"
        )
        if request.url.path == "/big.png":
            return httpx.Response(200, content=png * 4, headers={"content-type": "image/png"})
        if request.url.path == "/gone.png":
            return httpx.Response(404)
        return httpx.Response(200, content=png, headers={"content-type": "image/png"})

    root = store.root.parent
    async with _client(cdn) as client:
        image = await media_input(
            "image", "image", "https://cdn.example/kite.png?token=s3cret", store=store,
            root=root, fetcher=client,
        )  # fmt: skip
        assert Path(image.path).read_bytes() == png
        with pytest.raises(MediaError, match=r"over the \d+-byte input limit"):
            await media_input(
                "image", "image", "https://cdn.example/big.png", store=store, root=root,
                fetcher=client, max_bytes=len(png) * 2,
            )  # fmt: skip
        with pytest.raises(MediaError, match="HTTP 404") as failed:
            await media_input(
                "image", "image", "https://cdn.example/gone.png?token=s3cret", store=store,
                root=root, fetcher=client,
            )  # fmt: skip
    assert "s3cret" not in str(failed.value)  # a signed URL's query never reaches an error
    assert seen[0] == "https://cdn.example/kite.png?token=s3cret"


async def test_a_path_input_must_name_a_file_of_the_runs_own_thread(
    store: MediaStore, tmp_path: Path
) -> None:
    root = store.root.parent
    own = root / "thread-1" / "run-0" / "cam.png"
    other = root / "thread-2" / "run-0" / "cam.png"
    for path in (own, other):
        path.parent.mkdir(parents=True)
        path.write_bytes(image_bytes("cam", 16, 16))
    outside = tmp_path / "secret.png"
    outside.write_bytes(image_bytes("secret", 16, 16))
    async with _client() as client:
        for given in ("thread-1/run-0/cam.png", "/media/thread-1/run-0/cam.png"):
            image = await media_input(
                "image", "image", given, store=store, root=root, fetcher=client
            )
            assert Path(image.path) == own
        for given in (
            "thread-2/run-0/cam.png",  # another thread's file: only by its signed URL
            "/media/thread-2/run-0/cam.png",
            str(own),  # absolute paths are not accepted, even inside the thread
            str(outside),
            "../secret.png",
            "thread-1/../../secret.png",
        ):
            with pytest.raises(MediaError, match="is not a file of this thread's media") as no:
                await media_input("image", "image", given, store=store, root=root, fetcher=client)
            assert "signed 'url'" in str(no.value)
            assert str(root) not in str(no.value).replace(given, "")  # no server path shown
        with pytest.raises(MediaError, match=r"no file 'thread-1/none\.png' in this thread"):
            await media_input(
                "image", "image", "thread-1/none.png", store=store, root=root, fetcher=client
            )
        with pytest.raises(MediaError, match="file: URLs are not accepted"):
            await media_input(
                "image", "image", f"file://{outside}", store=store, root=root, fetcher=client
            )
        with pytest.raises(MediaError, match="not a valid data: URL"):
            await media_input(
                "image", "image", "data:nonsense", store=store, root=root, fetcher=client
            )
        with pytest.raises(MediaError, match="not valid base64"):
            await media_input(
                "image",
                "image",
                "data:image/png;base64,@@@",
                store=store,
                root=root,
                fetcher=client,
            )
        with pytest.raises(MediaError, match="must be a image given as a data: URL"):
            await media_input("image", "image", 42, store=store, root=root, fetcher=client)


async def test_another_threads_media_is_read_by_its_signed_url_without_fetching_it(
    store: MediaStore,
) -> None:
    root = store.root.parent
    other = root / "thread-2" / "run-0" / "cam.png"
    other.parent.mkdir(parents=True)
    other.write_bytes(image_bytes("cam", 16, 16))
    signed = public(Image.open(other), root, "https://calliope.example", SIGNER)["url"]
    query = signed.partition("?")[2]
    async with _client() as client:  # any HTTP request would fail the test
        for given in (
            signed,
            {"url": signed, "path": "thread-2/run-0/cam.png"},
            f"/media/thread-2/run-0/cam.png?{query}",  # relative
            f"http://127.0.0.1:9/media/thread-2/run-0/cam.png?{query}",  # another address
        ):
            image = await media_input(
                "image", "image", given, store=store, root=root, fetcher=client, signer=SIGNER,
                server_url="https://calliope.example",
            )  # fmt: skip
            assert Path(image.path) == other
        stale = SIGNER.query("thread-2/run-0/cam.png", now=time.time() - 2 * SIGNER.ttl)
        for given in (
            signed.replace("cam.png", "cat.png"),  # another path under the same signature
            signed[:-1] + ("0" if signed[-1] != "0" else "1"),  # altered
            f"https://calliope.example/media/thread-2/run-0/cam.png?{stale}",  # expired
            "https://calliope.example/media/thread-2/run-0/cam.png",  # unsigned
            f"/media/thread-2/run-0/cam.png?{stale}",
        ):
            with pytest.raises(MediaError, match="no valid signature") as refused:
                await media_input(
                    "image", "image", given, store=store, root=root, fetcher=client,
                    signer=SIGNER, server_url="https://calliope.example",
                )  # fmt: skip
            assert str(root) not in str(refused.value)


def test_outputs_carry_a_url_of_the_media_route(tmp_path: Path) -> None:
    root = tmp_path
    path = root / "t1" / "cover.png"
    path.parent.mkdir()
    path.write_bytes(image_bytes("cover", 20, 10))
    image = Image.open(path)
    out = public({"frame": {"image": image}, "images": [image]}, root, "http://h:1/", SIGNER)
    url = out["images"][0].pop("url")
    expected = {"path": "t1/cover.png", "mime": "image/png", "width": 20, "height": 10}
    assert out["images"][0] == expected and out["frame"]["image"]["url"] == url
    assert url.startswith("http://h:1/media/t1/cover.png?exp=")
    query = parse_qs(urlsplit(url).query)
    assert set(query) == {"exp", "sig"}
    exp, sig = query["exp"][0], query["sig"][0]
    assert int(exp) - time.time() == pytest.approx(3600, abs=5)  # CALLIOPE_MEDIA_URL_TTL
    assert len(sig) == 64 and int(sig, 16) >= 0  # hex HMAC-SHA256
    assert SIGNER.verify("t1/cover.png", exp, sig)
    relative = public(image, root, signer=SIGNER)["url"]
    assert relative.startswith("/media/t1/cover.png?exp=")  # relative without a base


def test_the_media_route_serves_signed_files_under_the_root_only(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "t1").mkdir(parents=True)
    (root / "t1" / "a.png").write_bytes(PNG + b"rest")
    (tmp_path / "secret.txt").write_text("no")
    client = TestClient(make_app(ServeSettings(media_root=root, signer=SIGNER)))
    answer = client.get(f"/media/t1/a.png?{SIGNER.query('t1/a.png')}")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.content.startswith(PNG)
    # without a valid signature: 403 whatever the path, existing or not
    stale = SIGNER.query("t1/a.png", now=time.time() - 7200)
    for bad in (
        "/media/t1/a.png",
        f"/media/t1/a.png?{stale}",
        f"/media/t1/a.png?{SIGNER.query('t1/b.png')}",
        f"/media/t1/a.png?{MediaSigner(b'another key' * 4).query('t1/a.png')}",
        "/media/t1/b.png",
        "/media/%2e%2e/secret.txt",
        "/media/t1",
    ):
        refused = client.get(bad)
        assert refused.status_code == 403, bad
        assert "a.png" not in refused.text and "b.png" not in refused.text
    # a signed path that names no file, or leaves the root, is a 404
    for path in ("t1/b.png", "t1", "../secret.txt", "t1/../../secret.txt"):
        quoted = path.replace(".", "%2e")  # so the client sends the dots as they are
        assert client.get(f"/media/{quoted}?{SIGNER.query(path)}").status_code == 404, path


def test_the_owner_of_a_thread_reads_its_media_unsigned_under_an_auth_handler(
    tmp_path: Path,
) -> None:
    """With a custom auth handler (LANGGRAPH_AUTH), ``scope["user"]`` is who asks."""
    from starlette.authentication import SimpleUser, UnauthenticatedUser

    root = tmp_path / "media"
    (root / "t1" / "r1").mkdir(parents=True)
    (root / "t1" / "r1" / "a.png").write_bytes(PNG)
    owners = {"t1": "alice"}

    async def owner_of(thread: str) -> str | None:
        return owners.get(thread)

    def as_user(user: Any) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope["user"] = user
            await inner(scope, receive, send)

        return app

    for auth, user, status in (
        (True, SimpleUser("alice"), 200),
        (True, SimpleUser("bob"), 403),
        (True, UnauthenticatedUser(), 403),
        (False, SimpleUser("alice"), 403),  # no auth handler: metadata is the client's
    ):
        settings = ServeSettings(media_root=root, signer=SIGNER, owner_auth=auth)
        inner = make_app(settings, owner_of=owner_of)
        answer = TestClient(as_user(user)).get("/media/t1/r1/a.png")
        assert answer.status_code == status, (auth, user)
    inner = make_app(ServeSettings(media_root=root, signer=SIGNER, owner_auth=True), owner_of)
    assert TestClient(as_user(SimpleUser("alice"))).get("/media/t2/r1/a.png").status_code == 403


def test_an_auth_handler_without_route_auth_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServeSettings(media_root=tmp_path, signer=SIGNER, owner_auth=True)
    monkeypatch.setenv("LANGGRAPH_HTTP", json.dumps({"app": "calliope_graph.serve.app:app"}))
    with caplog.at_level("WARNING", logger="calliope_graph.serve"):
        make_app(settings)
    assert "not http.enable_custom_route_auth" in caplog.text
    caplog.clear()
    monkeypatch.setenv("LANGGRAPH_HTTP", json.dumps({"enable_custom_route_auth": True}))
    with caplog.at_level("WARNING", logger="calliope_graph.serve"):
        make_app(settings)
    assert "enable_custom_route_auth" not in caplog.text


# -- schemas and the graphs module --------------------------------------------------------------
def test_langgraph_json_lists_every_shipped_flow_and_the_media_routes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from calliope_graph import errors
    from calliope_graph.media import _values  # the process's media root (a private global)

    # importing the server module sets the process's media root: undone after this test
    monkeypatch.setattr(_values, "_MEDIA_ROOT", _values._MEDIA_ROOT)
    monkeypatch.setattr(errors, "_MEDIA_ROOT", errors._MEDIA_ROOT)
    from calliope_graph.graphs import server

    config = json.loads((ROOT / "langgraph.json").read_text())
    assert set(config["graphs"]) == set(shipped_flows()) == set(server.GRAPHS)
    for name, target in config["graphs"].items():
        assert target == f"calliope_graph.graphs.server:{name}"
        assert getattr(server, name) is server.GRAPHS[name]
    assert config["http"]["app"] == "calliope_graph.serve.app:app"


def test_images_and_commits_leave_out_media_outputs_caches_and_secrets() -> None:
    import pathspec

    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/media/" in ignored and ".langgraph_api/" in ignored
    # the README's auth example runs `langgraph dev` in examples/auth: its media stay out too
    committed = pathspec.PathSpec.from_lines("gitignore", ignored)
    assert committed.match_file("examples/auth/media/t1/r1/illustration.png")
    assert not committed.match_file("examples/media/webcam.jpg")
    # what `langgraph build` leaves out of the image (gitignore-style matching, as its CLI)
    spec = pathspec.PathSpec.from_lines(
        "gitignore", (ROOT / ".dockerignore").read_text().splitlines()
    )
    for path in (
        "media/t1/r1/illustration.png",
        "examples/auth/media/t1/r1/illustration.png",
        "out/story/trace.json",
        ".langgraph_api/.langgraph_checkpoint.1.pckl",
        "examples/auth/.langgraph_api/store.pckl",
        ".venv/bin/python",
        "calliope_graph/__pycache__/cli.cpython-311.pyc",
        ".mypy_cache/3.11/cache.db",
        "node_modules/left-pad/index.js",
        ".git/HEAD",
        ".env",
        "checkpoints.sqlite",
    ):
        assert spec.match_file(path), path
    for path in (
        "calliope_graph/serve/app.py",
        "langgraph.json",
        "pyproject.toml",
        "examples/auth/auth.py",
        "examples/media/webcam.jpg",
    ):
        assert not spec.match_file(path), path


def test_schemas_are_the_flows_own_inputs_and_outputs(tmp_path: Path) -> None:
    graph = serve_graph("webcam_story", ServeSettings(media_root=tmp_path))
    given = graph.get_input_jsonschema()
    assert set(given["properties"]) == {"image", "story_so_far"}
    assert given["required"] == ["image"]
    assert "data: URL" in given["properties"]["image"]["description"]
    assert "signed url" in given["properties"]["image"]["description"]
    assert "same thread" in given["properties"]["image"]["description"]
    returned = graph.get_output_jsonschema()
    assert set(returned["properties"]) == {"frame", "story", "image", "analysis"}
    image = returned["$defs"]["ImageOutput"]
    assert set(image["properties"]) == {"url", "path", "mime", "width", "height"}


async def test_a_served_graph_runs_in_process_with_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the server does, without it: public inputs in, media URLs out, per-thread media."""
    monkeypatch.setenv("LANGGRAPH_API_URL", "http://127.0.0.1:9")
    settings = ServeSettings(media_root=tmp_path, simulate=True)
    graph = serve_graph("webcam_story", settings)
    config: Any = {"configurable": {"thread_id": "t-1"}}
    out = await graph.ainvoke({"image": WEBCAM}, config, context=ServeContext())
    assert set(out) == {"frame", "story", "image", "analysis"}
    assert out["image"]["url"].startswith("http://127.0.0.1:9/media/t-1/")
    assert (tmp_path / out["image"]["path"]).read_bytes().startswith(PNG)
    assert out["frame"]["image"] == out["image"]
    again = await graph.ainvoke({"image": WEBCAM}, config, context=ServeContext())
    first, second = Path(out["image"]["path"]), Path(again["image"]["path"])
    assert first.parts[0] == second.parts[0] == "t-1"
    assert first.parts[1] != second.parts[1]  # each run has its own folder


async def test_inputs_of_the_wrong_type_or_unknown_are_refused_naming_them(
    tmp_path: Path,
) -> None:
    graph = serve_graph("illustrate", ServeSettings(media_root=tmp_path, simulate=True))
    config: Any = {"configurable": {"thread_id": "t-1"}}
    for given, kind in ((42, "a number"), (["a", "b"], "a list"), ({"a": 1}, "an object")):
        with pytest.raises(ConfigurationError) as refused:
            await graph.ainvoke({"text": given}, config, context=ServeContext())
        assert str(refused.value) == (
            f"Input 'text' of flow 'illustrate' must be text (a JSON string), not {kind}; "
            "inputs are not converted: send it with the type the flow's input schema gives."
        )
        assert isinstance(refused.value, ValueError)  # LangGraph Server shows its message
    with pytest.raises(ConfigurationError, match=r"has no input 'txt'; its inputs: text"):
        await graph.ainvoke({"txt": "a lighthouse"}, config, context=ServeContext())
    webcam = serve_graph("webcam_story", ServeSettings(media_root=tmp_path, simulate=True))
    with pytest.raises(MediaError, match=r"Input 'image' of flow 'webcam_story' must be an image"):
        await webcam.ainvoke({"image": 7}, config, context=ServeContext())
    assert not list(tmp_path.iterdir())  # refused before anything ran or was written


async def test_a_mistyped_input_does_not_break_the_thread_for_the_next_run(
    tmp_path: Path,
) -> None:
    """A refused input fails its run only: the thread's state stays readable and the next
    run on it, with a good input, runs (the check once ran where LangGraph also calls it to
    discard the failed run's pending start, so it raised the old error for every new run)."""
    from langgraph.checkpoint.memory import InMemorySaver

    graph = serve_graph("illustrate", ServeSettings(media_root=tmp_path, simulate=True))
    graph.checkpointer = InMemorySaver()
    config: Any = {"configurable": {"thread_id": "t-1"}}
    with pytest.raises(ConfigurationError, match="not a number"):
        await graph.ainvoke({"text": 42}, config, context=ServeContext())
    await graph.aget_state(config)  # readable
    with pytest.raises(ConfigurationError, match="has no input 'colour'"):
        await graph.ainvoke({"text": "a kite", "colour": "red"}, config, context=ServeContext())
    out = await graph.ainvoke({"text": "a kite"}, config, context=ServeContext())
    assert (tmp_path / out["image"]["path"]).read_bytes().startswith(PNG)


def test_errors_in_a_server_name_media_files_relative_to_the_media_root(
    tmp_path: Path,
) -> None:
    """With the server's media root set, an error naming a file under it (an engine refusing
    a client's image, say) shows the file's place under the root, in its message and repr
    (what LangGraph keeps of a node's error in the thread's history)."""
    from calliope_graph import media

    root = tmp_path / "media"
    file = root / "t-1" / "r-1" / "inputs" / "image-1.png"
    try:
        media.set_media_root(root)
        error = MediaError(f"Image {str(file)!r} is 1x1 pixels; in {root}.", path=str(file))
        assert str(error) == "Image 't-1/r-1/inputs/image-1.png' is 1x1 pixels; in <media root>."
        assert str(root) not in repr(error) and error.path == str(file)  # kept for code
        assert str(MediaError(f"{tmp_path}/media2/x.png")) == f"{tmp_path}/media2/x.png"
    finally:
        media.set_media_root(None)
    assert str(MediaError(f"{file}")) == str(file)  # outside a server: as given


# -- the server ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, url: str, media: Path, log: list[str]) -> None:
        self.url, self.media, self.log = url, media, log

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(url if url.startswith("http") else self.url + url, timeout=30, **kwargs)


@contextmanager
def _langgraph_dev(work: Path, config: Path, env: dict[str, str]) -> Iterator[Server]:
    """``langgraph dev`` with ``config`` on a free loopback port, in ``work``, simulating."""
    if shutil.which("langgraph", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("langgraph-cli is not installed: pip install -e '.[test]'")
    port = _free_port()
    environ = {
        **os.environ,
        "CALLIOPE_SIMULATE": "1",
        "CALLIOPE_MEDIA_ROOT": str(work / "media"),
        "LANGGRAPH_STRICT_MSGPACK": "true",  # checkpoints restore only allow-listed types
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "PYTHONUNBUFFERED": "1",
    }
    for name in list(environ):
        if name.endswith(("_API_KEY", "_TOKEN", "_SECRET", "_BASE_URL", "_TOKENS")) or (
            name.startswith("CALLIOPE_FETCH_")
        ):
            environ.pop(name)  # the simulator's keys only; the fetch policy the test sets
    environ |= env
    command = [
        str(Path(sys.executable).parent / "langgraph"),
        "dev",
        "--config", str(config),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-browser",
        "--no-reload",
        "--n-jobs-per-worker", "4",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=work,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    log: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            if "Application started up" in line or "Starting queue" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(120) or process.poll() is not None:
            pytest.fail("langgraph dev did not start:\n" + "".join(log[-40:]))
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/ok", timeout=30).status_code == 200
        yield Server(url, work / "media", log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    blocked = [line for line in log if "BlockingError" in line or "Blocking call" in line]
    assert not blocked, "".join(blocked)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("langgraph-server")
    # ``localhost`` is an allowed named source (a redirect from it to 127.0.0.1 is refused)
    settings = {"CALLIOPE_MEDIA_SECRET": SECRET, "CALLIOPE_FETCH_ALLOW": "localhost"}
    with _langgraph_dev(work, ROOT / "langgraph.json", settings) as up:
        yield up


@pytest.fixture(scope="module")
def allowing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server, allowing fetches from 127.0.0.1."""
    work = tmp_path_factory.mktemp("langgraph-allowing")
    settings = {"CALLIOPE_MEDIA_SECRET": SECRET, "CALLIOPE_FETCH_ALLOW": "127.0.0.1"}
    with _langgraph_dev(work, ROOT / "langgraph.json", settings) as up:
        yield up


def _assert_media_served(server: Server, value: Any) -> int:
    """GET every media URL in ``value``; how many there were."""
    if isinstance(value, dict) and "url" in value and "mime" in value:
        answer = server.get(value["url"])
        assert answer.status_code == 200, value
        assert answer.headers["content-type"] == value["mime"]
        if value["mime"] == "video/mp4":
            assert mp4_info(answer.content)["codec"] == "avc1"
        return 1
    if isinstance(value, dict):
        return sum(_assert_media_served(server, v) for v in value.values())
    if isinstance(value, list):
        return sum(_assert_media_served(server, v) for v in value)
    return 0


@pytest.mark.parametrize("flow", shipped_flows())
async def test_every_shipped_flow_runs_on_the_server(server: Server, flow: str) -> None:
    client = get_client(url=server.url)
    thread = await client.threads.create()
    out = await client.runs.wait(thread["thread_id"], flow, input=flow_inputs(flow))
    assert isinstance(out, dict)
    plan = Flow.load(flow).plan()
    # an output read from a switch's branch is absent when another branch ran
    optional = {o for o, t in plan.spec.outputs.items() if t.split(".")[0] in plan.switched}
    assert set(plan.spec.outputs) - optional <= set(out) <= set(plan.spec.outputs), out
    assert _assert_media_served(server, out) >= 1  # every shipped flow makes media


async def test_webcam_story_takes_a_data_url_and_its_illustration_comes_back_by_url(
    server: Server,
) -> None:
    client = get_client(url=server.url)
    thread = await client.threads.create()
    out = await client.runs.wait(thread["thread_id"], "webcam_story", input={"image": WEBCAM})
    assert isinstance(out, dict)
    image = out["image"]
    assert image["url"].startswith(f"{server.url}/media/{thread['thread_id']}/")
    assert (image["mime"], image["width"], image["height"]) == ("image/png", 1024, 1024)
    answer = server.get(image["url"])
    assert answer.content.startswith(PNG)
    assert answer.content == (server.media / image["path"]).read_bytes()
    # the input went to the run's own folder of the thread; it is not echoed back
    assert list((server.media / thread["thread_id"]).glob("*/inputs/*"))
    state = await client.threads.get_state(thread["thread_id"])
    assert WEBCAM not in json.dumps(state["values"], default=str)


async def test_two_concurrent_threads_get_distinct_media(server: Server) -> None:
    client = get_client(url=server.url)
    threads = [await client.threads.create() for _ in range(2)]
    outs = await asyncio.gather(
        *(
            client.runs.wait(t["thread_id"], "illustrate", input={"text": "the same lighthouse"})
            for t in threads
        )
    )
    paths = [out["image"]["path"] for out in outs if isinstance(out, dict)]
    assert len(set(paths)) == 2
    for thread, out in zip(threads, outs, strict=True):
        assert isinstance(out, dict)
        assert out["image"]["path"].startswith(f"{thread['thread_id']}/")
        assert server.get(out["image"]["url"]).content.startswith(PNG)


async def test_a_failure_pauses_with_the_librarys_message_and_resumes_on_the_thread(
    server: Server,
) -> None:
    client = get_client(url=server.url)
    thread = await client.threads.create()
    out = await client.runs.wait(
        thread["thread_id"],
        "illustrate",
        input={"text": "a lighthouse"},
        context={"faults": "auth@stability;auth@openai"},  # both image providers refuse the key
    )
    assert isinstance(out, dict)
    stop = out["__interrupt__"][0]["value"]
    assert stop["node"] == "fallback_image" and stop["error_class"] == "auth"
    assert "openai" in stop["error"] and "401" in stop["error"]
    secrets = Simulator().keys().secrets()
    assert secrets and not any(s in json.dumps(out) for s in secrets)
    assert (await client.threads.get(thread["thread_id"]))["status"] == "interrupted"
    started: list[str] = []
    async for part in client.runs.stream(
        thread["thread_id"], "illustrate", command={"resume": True}, stream_mode="custom"
    ):
        if part.event == "custom" and part.data["event"] == "started":
            started.append(part.data["node"])
    assert started == ["fallback_image"]  # only the failed node runs again
    state = await client.threads.get_state(thread["thread_id"])
    assert not state["interrupts"] and not state["next"]
    resumed = state["values"]
    assert isinstance(resumed, dict)
    assert server.get(resumed["image"]["url"]).content.startswith(PNG)


async def test_bad_input_fails_the_run_with_the_librarys_message(server: Server) -> None:
    client = get_client(url=server.url)
    thread = await client.threads.create()
    out = await client.runs.wait(
        thread["thread_id"], "webcam_story", input={"image": "/etc/passwd"}, raise_error=False
    )
    assert isinstance(out, dict)
    error = out["__error__"]
    assert error["error"] == "MediaError"
    assert "'/etc/passwd' is not a file of this thread's media" in error["message"]
    out = await client.runs.wait(thread["thread_id"], "illustrate", input={}, raise_error=False)
    assert isinstance(out, dict)
    assert "needs input 'text'" in out["__error__"]["message"]


async def test_streaming_shows_node_progress_retries_and_routes(server: Server) -> None:
    client = get_client(url=server.url)
    thread = await client.threads.create()
    updates: list[str] = []
    events: list[dict[str, Any]] = []
    async for part in client.runs.stream(
        thread["thread_id"],
        "webcam_story",
        input={"image": WEBCAM},
        stream_mode=["updates", "custom"],
        context={"faults": "server_error@openai:first_n=1;content_policy@stability:first_n=1"},
    ):
        if part.event == "updates":
            updates.extend(part.data)
        elif part.event == "custom":
            events.append(part.data)
    assert updates[0] == "~inputs" and updates[-1] == "~outputs"
    assert {"azure_analysis", "llm_analysis", "merge", "story", "illustration", "frame"} <= set(
        updates
    )
    kinds = {(e["event"], e["node"]) for e in events}
    assert {("started", "story"), ("finished", "story"), ("finished", "frame")} <= kinds
    assert any(e["event"] == "retried" and e["retries"] >= 1 for e in events)  # the 500
    routed = [e for e in events if e["event"] == "fallback"]
    assert routed and routed[0]["node"] == "illustration"
    assert routed[0]["branch"] == "rewrite:censor" and routed[0]["error_class"] == "content_policy"


async def test_messages_mode_streams_the_story_as_message_chunks(server: Server) -> None:
    """``stream_mode="messages"`` (issue 20): the story node's text arrives as chunks."""
    client = get_client(url=server.url)
    thread = await client.threads.create()
    chunks: list[dict[str, Any]] = []
    async for part in client.runs.stream(
        thread["thread_id"], "webcam_story", input={"image": WEBCAM}, stream_mode="messages-tuple"
    ):
        if part.event == "messages":
            message, meta = part.data
            if message.get("type") == "AIMessageChunk" and message.get("content"):
                chunks.append({**message, "node": meta.get("langgraph_node")})
    assert len(chunks) > 1 and {c["node"] for c in chunks} == {"story"}
    assert len({c["id"] for c in chunks}) == 1
    assert "".join(c["content"] for c in chunks).strip()


async def test_the_server_publishes_the_typed_schemas(server: Server) -> None:
    client = get_client(url=server.url)
    (assistant,) = await client.assistants.search(graph_id="image_to_video_story")
    schemas = await client.assistants.get_schemas(assistant["assistant_id"])
    given = schemas["input_schema"]
    assert given is not None and schemas["output_schema"] and schemas["context_schema"]
    assert set(given["properties"]) == {"image", "text"}
    assert "data: URL" in given["properties"]["image"]["description"]
    assert set(schemas["output_schema"]["properties"]) == {"video", "frame"}
    assert "faults" in schemas["context_schema"]["properties"]


async def test_media_urls_work_only_with_their_valid_unexpired_signature(server: Server) -> None:
    client = get_client(url=server.url)
    thread = await client.threads.create()
    out = await client.runs.wait(thread["thread_id"], "illustrate", input={"text": "a kite"})
    assert isinstance(out, dict)
    url, path = out["image"]["url"], out["image"]["path"]
    answer = server.get(url)
    assert answer.status_code == 200 and answer.content.startswith(PNG)
    signature = parse_qs(urlsplit(url).query)["sig"][0]
    altered = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    expired = SIGNER.query(path, now=time.time() - 2 * SIGNER.ttl)  # the server's own key
    for refused in (
        f"/media/{path}",
        url.replace(signature, altered),
        f"/media/{path}?{expired}",
        url.replace(path, path.replace(".png", "-2.png")),
        f"/media/{thread['thread_id']}/no-such-file.png",
    ):
        answer = server.get(refused)
        assert answer.status_code == 403, refused
        assert PNG not in answer.content and path not in answer.text


async def test_a_second_run_on_a_thread_leaves_the_first_runs_media_as_they_were(
    server: Server,
) -> None:
    client = get_client(url=server.url)
    thread = await client.threads.create()
    first = await client.runs.wait(thread["thread_id"], "illustrate", input={"text": "a kite"})
    assert isinstance(first, dict)
    before = server.get(first["image"]["url"]).content
    second = await client.runs.wait(thread["thread_id"], "illustrate", input={"text": "a boat"})
    assert isinstance(second, dict)
    assert second["image"]["path"] != first["image"]["path"]
    assert server.get(first["image"]["url"]).content == before
    runs = {r["run_id"] for r in await client.runs.list(thread["thread_id"])}
    for out in (first, second):
        folder = Path(out["image"]["path"]).parts
        assert folder[0] == thread["thread_id"] and folder[1] in runs  # <thread>/<run id>/


@contextmanager
def _counting_http_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server (its URL) that records every request it gets (answers 404)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_another_threads_media_is_an_input_by_its_signed_url_never_fetched(
    server: Server,
) -> None:
    client = get_client(url=server.url)
    mine, theirs = await client.threads.create(), await client.threads.create()
    made = await client.runs.wait(theirs["thread_id"], "illustrate", input={"text": "a kite"})
    assert isinstance(made, dict)
    image = made["image"]
    out = await client.runs.wait(
        mine["thread_id"], "webcam_story", input={"image": image["path"]}, raise_error=False
    )
    assert isinstance(out, dict)
    message = out["__error__"]["message"]
    assert "is not a file of this thread's media" in message and "signed 'url'" in message
    assert str(server.media) not in message
    with _counting_http_server() as (elsewhere, seen):
        # the same signed URL at another address: verified with the key, read from disk
        moved = image["url"].replace(server.url, elsewhere)
        for given in (image, image["url"], moved):
            out = await client.runs.wait(mine["thread_id"], "webcam_story", input={"image": given})
            assert isinstance(out, dict) and "story" in out, out
    assert seen == []  # never fetched over HTTP


async def test_mistyped_or_unknown_inputs_fail_the_run_naming_them(server: Server) -> None:
    client = get_client(url=server.url)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"text": 42}, "Input 'text' of flow 'illustrate' must be text (a JSON string), not a "
         "number"),
        ({"text": ["a"]}, "must be text (a JSON string), not a list"),
        ({"text": "a kite", "style": "x", "colour": "red"},
         "Flow 'illustrate' has no input 'colour', 'style'; its inputs: text"),
    ]  # fmt: skip
    for given, expected in cases:
        thread = await client.threads.create()
        out = await client.runs.wait(
            thread["thread_id"], "illustrate", input=given, raise_error=False
        )
        assert isinstance(out, dict)
        assert out["__error__"]["error"] == "ConfigurationError"
        assert expected in out["__error__"]["message"]


async def test_after_a_mistyped_input_the_thread_still_runs_and_shows_its_state(
    server: Server,
) -> None:
    client = get_client(url=server.url)
    thread = await client.threads.create()
    out = await client.runs.wait(
        thread["thread_id"], "illustrate", input={"text": 7}, raise_error=False
    )
    assert isinstance(out, dict) and "not a number" in out["__error__"]["message"]
    await client.threads.get_state(thread["thread_id"])  # was a 400 with the old error
    out = await client.runs.wait(thread["thread_id"], "illustrate", input={"text": "a kite"})
    assert isinstance(out, dict) and "__error__" not in out, out
    assert server.get(out["image"]["url"]).content.startswith(PNG)


async def test_an_engine_refusing_a_clients_image_shows_no_server_path_in_events_or_history(
    server: Server,
) -> None:
    """Azure Vision refuses a 1x1 image naming the file: the client's progress events and
    the thread's history name it under the media root, never by the server's path."""
    client = get_client(url=server.url)
    thread = await client.threads.create()
    tiny = data_url(image_bytes("a dot", 1, 1), "image/png")
    seen: list[Any] = []
    async for part in client.runs.stream(
        thread["thread_id"], "webcam_story", input={"image": tiny}, stream_mode=["custom"]
    ):
        seen.append(part.data)
    failed = [e for e in seen if isinstance(e, dict) and e.get("event") == "failed"]
    assert failed and "is 1x1 pixels" in failed[0]["error"]
    assert re.search(rf"'{thread['thread_id']}/[^/']+/inputs/image-", failed[0]["error"])
    history = await client.threads.get_history(thread["thread_id"], limit=100)
    shown = json.dumps([seen, history], default=str)
    assert "is 1x1 pixels" in shown and str(server.media) not in shown


async def test_the_readmes_serving_example_runs_as_written(server: Server) -> None:
    """The README's client snippet (a script: ``asyncio.run``), run from the checkout
    against the test server (tests/test_readme.py leaves it to this test)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Serving with LangGraph Server", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None
    code = found[1].replace("http://127.0.0.1:2024", server.url)
    namespace: dict[str, Any] = {"__name__": "__main__"}

    def run() -> None:  # asyncio.run needs a thread without a running loop
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, "README", "exec"), namespace)

    await asyncio.to_thread(run)
    image = namespace["image"]
    assert (image["mime"], image["width"], image["height"]) == ("image/png", 1024, 1024)
    assert server.get(image["url"]).content.startswith(PNG)


async def test_with_the_example_auth_handler_users_see_only_their_own_threads_and_media(
    tmp_path: Path,
) -> None:
    """examples/auth: a bearer token per user, owner-scoped threads, /media under the handler.
    A signed URL is a capability (anyone holding it reads the file until it expires); an
    unsigned request is served to the thread's owner only."""
    config = json.loads((ROOT / "examples" / "auth" / "langgraph.json").read_text())
    assert config["graphs"] == json.loads((ROOT / "langgraph.json").read_text())["graphs"]
    http = {"app": "calliope_graph.serve.app:app", "enable_custom_route_auth": True}
    assert config["http"] == http
    config["auth"]["path"] = str(ROOT / "examples" / "auth" / "auth.py") + ":auth"
    config["dependencies"] = [str(ROOT)]
    (tmp_path / "langgraph.json").write_text(json.dumps(config))
    tokens = {"CALLIOPE_EXAMPLE_TOKENS": "alice=token-alice,bob=token-bob"}
    with _langgraph_dev(tmp_path, tmp_path / "langgraph.json", tokens) as server:
        # no CALLIOPE_MEDIA_SECRET: a random key, and a warning saying what that costs
        assert any("CALLIOPE_MEDIA_SECRET is not set" in line for line in server.log)
        assert not any("enable_custom_route_auth" in line for line in server.log)
        alice, bob = (
            get_client(url=server.url, api_key=None, headers={"Authorization": f"Bearer {t}"})
            for t in ("token-alice", "token-bob")
        )
        with pytest.raises(httpx.HTTPStatusError) as anonymous:
            await get_client(url=server.url, api_key=None).threads.create()
        assert anonymous.value.response.status_code == 401
        thread = await alice.threads.create()
        out = await alice.runs.wait(thread["thread_id"], "illustrate", input={"text": "a kite"})
        assert isinstance(out, dict)
        url, path = out["image"]["url"], out["image"]["path"]
        # bob cannot see alice's thread, its state, or run on it
        for call in (
            bob.threads.get(thread["thread_id"]),
            bob.threads.get_state(thread["thread_id"]),
            bob.runs.wait(thread["thread_id"], "illustrate", input={"text": "mine now"}),
        ):
            with pytest.raises(httpx.HTTPStatusError) as hidden:
                await call
            assert hidden.value.response.status_code == 404  # as if it did not exist
        assert [t["thread_id"] for t in await bob.threads.search()] == []
        bearer = {"alice": "Bearer token-alice", "bob": "Bearer token-bob"}
        unsigned = f"/media/{path}"
        for who, target, status in (
            (None, url, 200),  # a browser <img>: no header, the signed URL
            ("bob", url, 200),  # a signed URL is a capability
            ("alice", unsigned, 200),  # the owner, by token
            ("bob", unsigned, 403),
            (None, unsigned, 403),
        ):
            headers = {"Authorization": bearer[who]} if who else {}
            answer = server.get(target, headers=headers)
            assert answer.status_code == status, (who, target)
            assert answer.content.startswith(PNG) == (status == 200)
        assert server.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401


# -- outbound fetches: the server's fetch policy, from outside ---------------------------------
@pytest.fixture
def source() -> Iterator[LoopbackHTTP]:
    """A loopback HTTP server with a real WAV at /voice.wav, logging every request."""
    server = LoopbackHTTP({"/voice.wav": (200, {"Content-Type": "audio/wav"}, wav_bytes("hi"))})
    yield server
    server.close()


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


async def _voice_story(server: Server, audio: str) -> tuple[str, dict[str, Any]]:
    client = get_client(url=server.url)
    thread = await client.threads.create()
    given = {**flow_inputs("voice_story"), "audio": audio}
    out = await client.runs.wait(thread["thread_id"], "voice_story", input=given, raise_error=False)
    assert isinstance(out, dict)
    return thread["thread_id"], out


async def test_a_loopback_media_url_is_refused_and_the_source_gets_no_request(
    server: Server, source: LoopbackHTTP
) -> None:
    for url in (
        f"http://127.0.0.1:{source.port}/voice.wav",
        f"http://2130706433:{source.port}/voice.wav",  # 127.0.0.1 as one decimal number
    ):
        thread, out = await _voice_story(server, url)
        error = out["__error__"]
        assert error["error"] == "FetchRefusedError"  # a MediaError
        assert "loopback address" in error["message"]
        assert "CALLIOPE_FETCH_ALLOW=" in error["message"]
        assert not _files(server.media / thread)
    assert source.hits == []


async def test_a_redirect_from_an_allowed_host_to_a_refused_one_is_not_followed(
    server: Server, source: LoopbackHTTP
) -> None:
    hop = f"http://127.0.0.1:{source.port}/voice.wav"
    redirector = LoopbackHTTP({"/next": (302, {"Location": hop}, b"")})
    try:
        _, out = await _voice_story(server, f"http://localhost:{redirector.port}/next")
    finally:
        redirector.close()
    assert out["__error__"]["error"] == "FetchRefusedError"
    assert "302" not in out["__error__"]["message"]
    assert redirector.hits == [("/next", f"localhost:{redirector.port}")]  # allowed by name
    assert source.hits == []


async def test_an_allowed_loopback_source_is_fetched(
    allowing_server: Server, source: LoopbackHTTP
) -> None:
    thread, out = await _voice_story(allowing_server, f"http://127.0.0.1:{source.port}/voice.wav")
    assert "__error__" not in out, out
    assert _assert_media_served(allowing_server, out) >= 1
    assert source.hits == [("/voice.wav", f"127.0.0.1:{source.port}")]
    (kept,) = [p for p in _files(allowing_server.media / thread) if p.parent.name == "inputs"]
    assert kept.read_bytes() == source.routes["/voice.wav"][2]
    # what a client sees carries paths under the media root, never the server's own
    state = await get_client(url=allowing_server.url).threads.get_state(thread)
    shown = json.dumps([out, state["values"]], default=str)
    assert str(allowing_server.media) not in shown and str(ROOT) not in shown


async def test_a_body_that_is_not_audio_is_refused_and_leaves_no_file(server: Server) -> None:
    page = data_url(b"<html><body>internal admin</body></html>", "audio/wav")
    thread, out = await _voice_story(server, page)
    error = out["__error__"]
    assert error["error"] == "MediaError"
    assert "not a RIFF/WAVE file" in error["message"]
    assert re.search(rf"'{thread}/[^/']+/inputs/audio-", error["message"])  # under the root
    assert str(server.media) not in error["message"]
    assert not _files(server.media / thread)
    state = await get_client(url=server.url).threads.get_state(thread)
    assert str(server.media) not in json.dumps(state["values"], default=str)
