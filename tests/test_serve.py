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
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import LoopbackHTTP
from langgraph_sdk import get_client
from starlette.testclient import TestClient

from calliope_graph._fetch import Fetcher, FetchPolicy
from calliope_graph.errors import MediaError
from calliope_graph.flow import Flow, shipped_flows
from calliope_graph.media import Image, MediaStore
from calliope_graph.serve import ServeContext, ServeSettings, media_input, public, serve_graph
from calliope_graph.serve.app import make_app
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_info, wav_bytes

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


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


async def test_a_path_must_lie_under_the_media_root(store: MediaStore, tmp_path: Path) -> None:
    root = store.root.parent
    (root / "uploads").mkdir(parents=True)
    (root / "uploads" / "cam.png").write_bytes(image_bytes("cam", 16, 16))
    outside = tmp_path / "secret.png"
    outside.write_bytes(image_bytes("secret", 16, 16))
    async with _client() as client:
        for given in (
            "uploads/cam.png",
            str(root / "uploads" / "cam.png"),
            "/media/uploads/cam.png",
        ):
            image = await media_input(
                "image", "image", given, store=store, root=root, fetcher=client
            )
            assert Path(image.path) == root / "uploads" / "cam.png"
        for given in (str(outside), "../secret.png", "uploads/../../secret.png"):
            with pytest.raises(MediaError, match="outside the media root") as refused:
                await media_input("image", "image", given, store=store, root=root, fetcher=client)
            assert "CALLIOPE_MEDIA_ROOT" in str(refused.value)
        with pytest.raises(MediaError, match=r"no file 'uploads/none\.png' under the media root"):
            await media_input(
                "image", "image", "uploads/none.png", store=store, root=root, fetcher=client
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


def test_outputs_carry_a_url_of_the_media_route(tmp_path: Path) -> None:
    root = tmp_path
    path = root / "t1" / "cover.png"
    path.parent.mkdir()
    path.write_bytes(image_bytes("cover", 20, 10))
    image = Image.open(path)
    out = public({"frame": {"image": image}, "images": [image]}, root, "http://h:1/")
    expected = {
        "url": "http://h:1/media/t1/cover.png",
        "path": "t1/cover.png",
        "mime": "image/png",
        "width": 20,
        "height": 10,
    }
    assert out == {"frame": {"image": expected}, "images": [expected]}
    assert public(image, root)["url"] == "/media/t1/cover.png"  # relative without a base


def test_the_media_route_serves_files_under_the_root_only(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "t1").mkdir(parents=True)
    (root / "t1" / "a.png").write_bytes(PNG + b"rest")
    (tmp_path / "secret.txt").write_text("no")
    client = TestClient(make_app(ServeSettings(media_root=root)))
    answer = client.get("/media/t1/a.png")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.content.startswith(PNG)
    for bad in (
        "/media/../secret.txt",
        "/media/t1/../../secret.txt",
        "/media/t1",
        "/media/t1/b.png",
    ):
        assert client.get(bad).status_code == 404, bad
    assert client.get("/media/%2e%2e/secret.txt").status_code == 404


# -- schemas and the graphs module --------------------------------------------------------------
def test_langgraph_json_lists_every_shipped_flow_and_the_media_routes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from calliope_graph import media

    # importing the server module sets the process's media root: undone after this test
    monkeypatch.setattr(media, "_MEDIA_ROOT", media._MEDIA_ROOT)
    from calliope_graph.graphs import server

    config = json.loads((ROOT / "langgraph.json").read_text())
    assert set(config["graphs"]) == set(shipped_flows()) == set(server.GRAPHS)
    for name, target in config["graphs"].items():
        assert target == f"calliope_graph.graphs.server:{name}"
        assert getattr(server, name) is server.GRAPHS[name]
    assert config["http"]["app"] == "calliope_graph.serve.app:app"


def test_schemas_are_the_flows_own_inputs_and_outputs(tmp_path: Path) -> None:
    graph = serve_graph("webcam_story", ServeSettings(media_root=tmp_path))
    given = graph.get_input_jsonschema()
    assert set(given["properties"]) == {"image", "story_so_far"}
    assert given["required"] == ["image"]
    assert "data: URL" in given["properties"]["image"]["description"]
    assert "media root" in given["properties"]["image"]["description"]
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


# -- the server ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, url: str, media: Path, log: list[str]) -> None:
        self.url, self.media, self.log = url, media, log

    def get(self, url: str) -> httpx.Response:
        return httpx.get(url if url.startswith("http") else self.url + url, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # ``localhost`` is an allowed named source (a redirect from it to 127.0.0.1 is refused)
    yield from _start_server(tmp_path_factory, CALLIOPE_FETCH_ALLOW="localhost")


@pytest.fixture(scope="module")
def allowing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server, allowing fetches from 127.0.0.1."""
    yield from _start_server(tmp_path_factory, CALLIOPE_FETCH_ALLOW="127.0.0.1")


def _start_server(tmp_path_factory: pytest.TempPathFactory, **settings: str) -> Iterator[Server]:
    if shutil.which("langgraph", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("langgraph-cli is not installed: pip install -e '.[test]'")
    work = tmp_path_factory.mktemp("langgraph-server")
    port = _free_port()
    env = {
        **os.environ,
        "CALLIOPE_SIMULATE": "1",
        "CALLIOPE_MEDIA_ROOT": str(work / "media"),
        "LANGGRAPH_STRICT_MSGPACK": "true",  # checkpoints restore only allow-listed types
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "PYTHONUNBUFFERED": "1",
    }
    for name in list(env):
        if name.endswith(("_API_KEY", "_TOKEN", "_SECRET", "_BASE_URL")) or name.startswith(
            "CALLIOPE_FETCH_"
        ):
            env.pop(name)  # the simulator's keys only; the fetch policy the test sets
    env.update(settings)
    command = [
        str(Path(sys.executable).parent / "langgraph"),
        "dev",
        "--config", str(ROOT / "langgraph.json"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-browser",
        "--no-reload",
        "--n-jobs-per-worker", "4",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=work,
        env=env,
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
    # the input went to the thread's own folder; it is not echoed back
    assert list((server.media / thread["thread_id"] / "inputs").iterdir())
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
    for thread, path in zip(threads, paths, strict=True):
        assert path.startswith(f"{thread['thread_id']}/")
        assert server.get(f"/media/{path}").content.startswith(PNG)


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
    assert "outside the media root" in error["message"]
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
    (kept,) = _files(allowing_server.media / thread / "inputs")
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
    assert f"'{thread}/inputs/audio-" in error["message"]  # named under the media root
    assert str(server.media) not in error["message"]
    assert not _files(server.media / thread)
    state = await get_client(url=server.url).threads.get_state(thread)
    assert str(server.media) not in json.dumps(state["values"], default=str)
