"""Media in S3-compatible object storage, against a real S3 server (SeaweedFS) the tests
start on a free loopback port (tests/_s3.py): ``run``/``batch``/the Python API with
``--media-store``/``media_store=``, presigned URLs, inputs read from the store, and two
``langgraph dev`` servers sharing one bucket.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _s3
import httpx
import obstore
import pytest
from click.testing import CliRunner
from obstore.store import S3Store

from calliope_graph.cli import main
from calliope_graph.errors import ConfigurationError, FlowRunError, MediaError
from calliope_graph.flow import Flow
from calliope_graph.media import Image, MediaStore
from calliope_graph.object_store import (
    ObjectMediaStore,
    object_store,
    open_media_store,
    parse_store_url,
    signed_url,
)
from calliope_graph.simulate import Simulator

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
STORE = f"s3://{_s3.BUCKET}/tests"


# -- without a server ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://bucket/x", "not an S3 URL"),
        ("s3://", "not an S3 URL"),
        ("s3://Bad_Bucket/x", "not a valid S3 bucket name"),
        ("s3://calliope-media/a/../b", "no '..'"),
    ],
)
def test_a_bad_media_store_url_is_refused_saying_the_form(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        parse_store_url(url)


def test_the_cli_refuses_a_bad_media_store_before_running(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            *("run", "illustrate", "--simulate", "-i", "text=x", "--out", str(tmp_path / "o")),
            *("--media-store", "http://example.com/bucket"),
        ],
    )
    assert result.exit_code == 2
    assert "not an S3 URL" in result.output
    assert not (tmp_path / "o").exists()


def test_keys_never_leave_the_runs_folder_and_the_local_store_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    store = open_media_store(tmp_path / "out", STORE)
    assert isinstance(store, ObjectMediaStore) and store.remote
    run = store.for_run("thread-1")
    assert run.key_for(run.path_for("images/a.png")) == "tests/thread-1/images/a.png"
    assert run.key_for(tmp_path / "elsewhere.png") is None  # a user's own file: not uploaded
    assert run.sub("item-3").key_for(run.root / "item-3" / "b.png") == "tests/thread-1/item-3/b.png"
    local = open_media_store(tmp_path / "out", None)
    assert type(local) is MediaStore and not local.remote


def test_a_server_with_a_bad_media_store_is_refused_at_start_naming_the_variable() -> None:
    from calliope_graph.serve import ServeSettings

    with pytest.raises(ConfigurationError, match=r"CALLIOPE_MEDIA_STORE: .*not an S3 URL"):
        ServeSettings.from_env({"CALLIOPE_MEDIA_STORE": "https://bucket.example.com/media"})
    settings = ServeSettings.from_env({"CALLIOPE_MEDIA_STORE": " s3://calliope-media/served "})
    assert settings.media_store == "s3://calliope-media/served"


async def test_an_absolute_server_path_is_left_to_the_path_checks_not_read_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never contacted
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-secret")
    store = open_media_store(tmp_path / "media" / "t-1", STORE)
    assert isinstance(store, ObjectMediaStore)
    for text in ("/etc/passwd", "data:image/png;base64,AAAA", "https://example.com/a.png"):
        assert await store.read_input("image", "image", text, own_only=True) is None


# -- the server -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_s3.S3Server]:
    weed = _s3.weed_binary()
    if weed is None:
        pytest.skip(_s3.HOW_TO_ENABLE)
    server = _s3.start(tmp_path_factory.mktemp("seaweedfs"), weed)
    print(f"SeaweedFS answered S3 after {server.startup_seconds:.2f}s")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(s3: _s3.S3Server, background: _Background, monkeypatch: pytest.MonkeyPatch) -> _s3.S3Server:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CALLIOPE_MEDIA_STORE", raising=False)
    return s3


def bucket(s3: _s3.S3Server) -> S3Store:
    env = s3.env()
    return S3Store(
        _s3.BUCKET,
        endpoint=env["AWS_ENDPOINT_URL"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
        client_options={"allow_http": True},
    )


def keys(s3: _s3.S3Server, prefix: str) -> list[str]:
    return sorted(o["path"] for batch in obstore.list(bucket(s3), prefix) for o in batch)


def read(s3: _s3.S3Server, key: str) -> bytes:
    return bytes(obstore.get(bucket(s3), key).bytes())


def key_of(uri: str) -> str:
    assert uri.startswith(f"s3://{_s3.BUCKET}/"), uri
    return uri[len(f"s3://{_s3.BUCKET}/") :]


def test_a_cli_run_puts_its_media_in_the_bucket_and_its_trace_and_checkpoints_hold_references(
    aws: _s3.S3Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            *("run", "illustrate", "--simulate", "-i", "text=a lighthouse", "--out", str(out)),
            *("--thread-id", "cli-run-1", "--media-store", STORE),
        ],
    )
    assert result.exit_code == 0, result.output
    stored = keys(aws, "tests/cli-run-1")
    images = [k for k in stored if k.endswith(".png")]
    assert images, stored
    assert f"s3://{_s3.BUCKET}/{images[0]}" in result.output  # printed with the result
    local = out / images[0].removeprefix("tests/cli-run-1/")
    assert read(aws, images[0]) == local.read_bytes()  # the local working copy is kept
    trace = (out / "trace.json").read_text()
    assert f"s3://{_s3.BUCKET}/{images[0]}" in trace
    checkpoints = b"".join(
        bytes(row[0])
        for row in sqlite3.connect(out / "checkpoints.sqlite").execute(
            "SELECT checkpoint FROM checkpoints UNION ALL SELECT value FROM writes"
        )
        if row[0] is not None
    )
    assert f"s3://{_s3.BUCKET}/{images[0]}".encode() in checkpoints
    assert PNG not in checkpoints and PNG not in trace.encode()  # references, never bytes


def test_the_presigned_url_of_an_output_returns_its_bytes_and_a_tampered_one_is_refused(
    aws: _s3.S3Server, tmp_path: Path
) -> None:
    result = Flow.load("illustrate").invoke(
        {"text": "a kite"}, out_dir=tmp_path, simulator=Simulator(), media_store=STORE
    )
    image = result.outputs["image"]
    assert isinstance(image, Image) and image.uri is not None
    url = signed_url(image)
    assert url is not None and url.startswith(aws.endpoint) and "X-Amz-Signature=" in url
    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.content == Path(image.path).read_bytes()
    assert answer.headers["content-type"] == "image/png"
    assert httpx.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403


class _Hosts:
    """Every host an httpx client of this process sends to (the simulator's included)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hosts: list[str] = []
        send = httpx.AsyncClient.send

        async def recording(client: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
            self.hosts.append(f"{request.url.host}:{request.url.port}")
            return await send(client, request, **kw)

        monkeypatch.setattr(httpx.AsyncClient, "send", recording)


@pytest.mark.parametrize("form", ["uri", "signed url"])
def test_an_input_given_as_the_stores_uri_or_signed_url_is_read_from_the_store(
    aws: _s3.S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    first = Flow.load("illustrate").invoke(
        {"text": "a fox"}, out_dir=tmp_path / "a", simulator=Simulator(), media_store=STORE
    )
    image = first.outputs["image"]
    assert image.uri is not None
    given = image.uri if form == "uri" else signed_url(image)
    seen = _Hosts(monkeypatch)
    simulator = Simulator()
    second = Flow.load("webcam_story").invoke(
        {"image": given},
        out_dir=tmp_path / "b",
        simulator=simulator,
        media_store=STORE,
        thread_id=f"from-{form.replace(' ', '-')}",
    )
    assert second.outputs["story"]
    # the nodes started from the stored object (its uri), not from a new upload of it
    executions = json.dumps(second.trace.model_dump(mode="json")["executions"])
    assert image.uri in executions
    s3_host = aws.endpoint.removeprefix("http://")
    others = {h for h in seen.hosts if h != s3_host}
    assert not [h for h in others if h.startswith(("127.", "localhost"))], others
    assert simulator.count() > 0  # the providers (simulated in process) besides
    assert seen.hosts.count(s3_host) == (1 if form == "signed url" else 0)  # obstore: not httpx
    assert not [k for k in keys(aws, f"tests/from-{form.replace(' ', '-')}") if "inputs" in k]


def test_a_failed_upload_keeps_the_local_file_and_a_resume_uploads_without_paying_again(
    aws: _s3.S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator = Simulator()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(FlowRunError) as caught:
        Flow.load("illustrate").invoke(
            {"text": "a storm"},
            out_dir=tmp_path,
            simulator=simulator,
            media_store=STORE,
            thread_id="upload-fails",
        )
    message = str(caught.value)
    assert "Uploading" in message and "the file is kept at" in message
    assert "--resume upload-fails" in message
    kept = list(tmp_path.glob("*.png"))
    assert kept and kept[0].read_bytes().startswith(PNG)
    paid = simulator.count()
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    result = Flow.load("illustrate").invoke(
        None,
        out_dir=tmp_path,
        simulator=simulator,
        media_store=STORE,
        thread_id="upload-fails",
        resume=True,
    )
    assert simulator.count() == paid  # nothing paid again
    assert read(aws, key_of(result.outputs["image"].uri)) == kept[0].read_bytes()


def test_a_batch_puts_each_items_media_in_the_bucket(aws: _s3.S3Server, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"id": "one", "text": "a fox"}\n{"id": "two", "text": "an owl"}\n')
    result = CliRunner().invoke(
        main,
        [
            *("batch", "illustrate", "--inputs", str(inputs), "--out", str(tmp_path / "out")),
            *("--simulate", "--media-store", f"s3://{_s3.BUCKET}/batches/b1"),
        ],
    )
    assert result.exit_code == 0, result.output
    for item in ("one", "two"):
        stored = [k for k in keys(aws, f"batches/b1/batch-{item}") if k.endswith(".png")]
        assert stored, item
        trace = (tmp_path / "out" / item / "trace.json").read_text()
        assert f"s3://{_s3.BUCKET}/{stored[0]}" in trace
    manifest = [
        json.loads(line) for line in (tmp_path / "out" / "batch.jsonl").read_text().splitlines()
    ]
    for record in manifest:  # the paths as before, and where each is kept
        assert record["outputs"]["image"].startswith(f"{record['id']}/")
        assert key_of(record["uris"]["image"]).startswith(f"batches/b1/batch-{record['id']}/")


def test_a_stored_value_whose_local_copy_is_gone_is_fetched_for_the_next_node(
    aws: _s3.S3Server, tmp_path: Path
) -> None:
    store = ObjectMediaStore(tmp_path / "a", object_store(STORE)).for_run("moved")
    path = store.write_bytes("picture.png", (ROOT / "tests" / "_s3.py").read_bytes())
    value = Image(path=str(path), mime="image/png", width=1, height=1)
    stored = asyncio.run(store.publish({"image": value}))["image"]
    path.unlink()  # another machine: the local copy is not there
    elsewhere = ObjectMediaStore(tmp_path / "b", object_store(STORE)).for_run("moved")
    local = asyncio.run(elsewhere.localise([stored]))[0]
    assert local.uri == stored.uri and Path(local.path).is_relative_to(tmp_path / "b")
    assert Path(local.path).read_bytes() == (ROOT / "tests" / "_s3.py").read_bytes()
    with pytest.raises(MediaError, match="not in this run's media store"):
        asyncio.run(elsewhere.localise(stored.model_copy(update={"uri": "s3://other/x.png"})))


# -- two servers, one bucket ----------------------------------------------------------------------
def _free_port() -> int:
    return _s3._free_ports(1)[0]


class _Server:
    def __init__(self, work: Path, s3: _s3.S3Server) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.media = work / "media"
        env = {
            **os.environ,
            **s3.env(),
            "CALLIOPE_SIMULATE": "1",
            "CALLIOPE_MEDIA_ROOT": str(self.media),
            "CALLIOPE_MEDIA_STORE": f"s3://{_s3.BUCKET}/served",
            "LANGGRAPH_STRICT_MSGPACK": "true",
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            "LANGSMITH_TRACING": "false",
            "PYTHONUNBUFFERED": "1",
        }
        for name in list(env):
            if name.endswith(("_API_KEY", "_TOKEN", "_BASE_URL")):
                env.pop(name)
        command = [
            str(Path(sys.executable).parent / "langgraph"),
            "dev",
            "--config", str(ROOT / "langgraph.json"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--no-browser",
            "--no-reload",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.log: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)
            if "Application started up" in line or "Starting queue" in line:
                self.ready.set()
        self.ready.set()

    def terminate(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class _Background:
    """What the tests need that takes seconds to start, started at once when the first
    test using the store runs (two ``langgraph dev`` replicas, a batch ``worker``), so it
    starts while the other tests run."""

    def __init__(self, s3: _s3.S3Server, work: Path) -> None:
        import importlib.util
        import shutil

        self.servers: tuple[_Server, _Server] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_out = work / "worker-out"
        if shutil.which("langgraph", path=str(Path(sys.executable).parent)) is not None:
            (work / "a").mkdir()
            (work / "b").mkdir()
            self.servers = (_Server(work / "a", s3), _Server(work / "b", s3))
        if importlib.util.find_spec("dbos") is not None:
            exe = str(Path(sys.executable).parent / "calliope-graph")
            self.worker_log = work / "worker.log"
            with self.worker_log.open("wb") as log:
                self.worker = subprocess.Popen(
                    [
                        exe,
                        "worker",
                        "--out",
                        str(self.worker_out),
                        "--simulate",
                        "--media-store",
                        STORE + "/workers",
                    ],
                    env={**os.environ, **s3.env(), "PYTHONUNBUFFERED": "1"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def stop(self) -> None:
        for server in self.servers or ():
            server.terminate()  # all at once: each takes seconds to shut down
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
        procs: list[subprocess.Popen[Any]] = [s.process for s in self.servers or ()]
        if self.worker is not None:
            procs.append(self.worker)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture(scope="module")
def background(s3: _s3.S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Background]:
    started = _Background(s3, tmp_path_factory.mktemp("background"))
    try:
        yield started
    finally:
        started.stop()
    blocked = [
        line
        for server in started.servers or ()
        for line in server.log
        if "BlockingError" in line or "Blocking call" in line
    ]
    assert not blocked, "".join(blocked)


@pytest.fixture(scope="module")
def servers(background: _Background) -> tuple[_Server, _Server]:
    if background.servers is None:
        pytest.skip("langgraph-cli is not installed: pip install -e '.[test]'")
    for server in background.servers:
        if not server.ready.wait(120) or server.process.poll() is not None:
            pytest.fail("langgraph dev did not start:\n" + "".join(server.log[-40:]))
    return background.servers


async def test_a_media_output_of_one_server_is_the_input_of_a_run_on_another(
    servers: tuple[_Server, _Server], s3: _s3.S3Server
) -> None:
    from langgraph_sdk import get_client

    a, b = (get_client(url=server.url) for server in servers)
    thread_a = await a.threads.create()
    out = await a.runs.wait(thread_a["thread_id"], "illustrate", input={"text": "a lighthouse"})
    assert isinstance(out, dict)
    image = out["image"]
    assert image["url"].startswith(s3.endpoint) and "X-Amz-Signature=" in image["url"]
    key = f"served/{image['path']}"
    assert key in keys(s3, f"served/{thread_a['thread_id']}")
    answer = httpx.get(image["url"])
    assert answer.status_code == 200 and answer.content == read(s3, key)

    thread_b = await b.threads.create()
    out_b = await b.runs.wait(thread_b["thread_id"], "webcam_story", input={"image": image})
    assert isinstance(out_b, dict) and "__error__" not in out_b, out_b
    assert out_b["story"]
    story_image = out_b["image"]
    assert httpx.get(story_image["url"]).content.startswith(PNG)
    # read from the store, not downloaded and uploaded again as a new input of thread B
    assert not [k for k in keys(s3, f"served/{thread_b['thread_id']}") if "/inputs/" in k]
    state = await b.threads.get_state(thread_b["thread_id"])
    assert f"s3://{_s3.BUCKET}/{key}" in str(state["values"])

    # another thread's key is not an input; an altered signed URL is refused by the store
    thread_c = await b.threads.create()
    for given, says in (
        (f"s3://{_s3.BUCKET}/{key}", "belongs to another thread"),
        (image["url"].replace("X-Amz-Signature=", "X-Amz-Signature=0"), "refused the signed"),
    ):
        failed = await b.runs.wait(
            thread_c["thread_id"], "webcam_story", input={"image": given}, raise_error=False
        )
        assert isinstance(failed, dict)
        assert failed["__error__"]["error"] == "MediaError", failed
        assert says in failed["__error__"]["message"]


def test_a_worker_puts_the_items_media_in_the_bucket(
    aws: _s3.S3Server, background: _Background, tmp_path: Path
) -> None:
    if background.worker is None:
        pytest.skip("dbos is missing: pip install 'calliope-graph[dbos]'")
    exe = str(Path(sys.executable).parent / "calliope-graph")
    inputs = tmp_path / "items.jsonl"
    inputs.write_text('{"id": "w1", "text": "a fox"}\n{"id": "w2", "text": "an owl"}\n')
    out = background.worker_out
    follower = subprocess.run(
        [
            exe,
            "batch",
            "illustrate",
            "--inputs",
            str(inputs),
            "--engine",
            "dbos",
            "--out",
            str(out),
            "--json",
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        timeout=120,
    )
    log = background.worker_log.read_text(errors="replace")[-3000:]
    assert follower.returncode == 0, follower.stderr.decode()[-3000:] + log
    for item in ("w1", "w2"):
        stored = [k for k in keys(aws, f"tests/workers/batch-{item}") if k.endswith(".png")]
        assert stored, log
        trace = (out / item / "trace.json").read_text()
        assert f"s3://{_s3.BUCKET}/{stored[0]}" in trace
