"""A real OpenTelemetry backend: ``calliope-graph run`` with only ``OTEL_EXPORTER_OTLP_ENDPOINT``
set puts one trace in it, read back through the backend's own API.

The backend is Arize Phoenix (``make otel-backend`` installs it in ``.venv-phoenix``), started
on free loopback ports: it receives OTLP over HTTP at ``/v1/traces`` and lists a project's
spans at ``GET /v1/projects/{project}/spans`` (https://arize.com/docs/phoenix, REST API).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calliope_graph.flow.trace import Trace
from calliope_graph.simulate import Simulator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PHOENIX = ROOT / ".venv-phoenix" / "bin" / "phoenix"
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"
#: Longest Phoenix may take to start (its first start runs database migrations).
START_LIMIT = 240.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def phoenix() -> Iterator[str]:
    if not PHOENIX.exists():
        pytest.skip("Arize Phoenix is not installed: run `make otel-backend` to enable this test")
    port = _free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))},
            "PHOENIX_WORKING_DIR": home,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(_free_port()),
        }
        proc = subprocess.Popen(
            [str(PHOENIX), "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        fd, seen, deadline = proc.stdout.fileno(), b"", time.monotonic() + START_LIMIT
        try:
            while b"Application startup complete" not in seen:  # waits on its log, no sleep
                left = deadline - time.monotonic()
                assert left > 0, f"Phoenix did not start: {seen[-2000:]!r}"
                ready, _, _ = select.select([fd], [], [], left)
                chunk = os.read(fd, 65536) if ready else b""
                assert chunk or not ready, f"Phoenix exited: {seen[-2000:]!r}"
                seen = (seen + chunk)[-20000:]
            yield f"http://127.0.0.1:{port}"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _spans(base: str, expected: int) -> list[dict[str, Any]]:
    """The default project's spans, once the backend has stored ``expected`` of them (it
    stores what it received in the background: asked again, bounded in count and time)."""
    found: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=10.0) as client:
        for _ in range(300):
            answer = client.get("/v1/projects/default/spans", params={"limit": 1000})
            if answer.status_code == 200:
                found = answer.json()["data"]
                if len(found) >= expected:
                    return found
            select.select([], [], [], 0.1)  # the backend's own pace; bounded by the loop
    return found


def test_a_simulated_run_is_one_trace_in_a_real_otlp_backend(phoenix: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": phoenix, "OTEL_METRICS_EXPORTER": "none"}
    command = [
        sys.executable,
        "-c",
        "from calliope_graph.cli import main; main()",
        "run",
        "webcam_story",
        "--simulate",
        "--out",
        str(out),
        "--input",
        f"image={WEBCAM}",
    ]
    done = subprocess.run(command, env=env, cwd=HERE, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    trace = Trace.load(out / "trace.json")
    calls = [c for e in trace.executions for c in e.provider_calls]
    expected = 1 + len(trace.executions) + len(calls)
    spans = _spans(phoenix, expected)
    assert len(spans) == expected
    assert len({s["context"]["trace_id"] for s in spans}) == 1  # one trace
    names = {s["name"] for s in spans}
    assert {f"node {e.node}" for e in trace.executions} <= names
    assert "flow webcam_story" in names
    provider_spans = [s for s in spans if "gen_ai.operation.name" in s["attributes"]]
    assert len(provider_spans) == len(calls) >= 4
    for span in provider_spans:
        attrs = span["attributes"]
        assert attrs["gen_ai.provider.name"] and attrs["gen_ai.request.model"]
        assert attrs["gen_ai.usage.cost.amount"] > 0 and attrs["gen_ai.usage.cost.currency"]
    chats = [
        s["attributes"] for s in provider_spans if "gen_ai.usage.input_tokens" in s["attributes"]
    ]
    assert chats and all(a["gen_ai.usage.output_tokens"] > 0 for a in chats)
    # No key and no media bytes anywhere in what the backend holds.
    everything = json.dumps(spans)
    sim = Simulator()
    for provider in ("openai", "azure_vision", "stability"):
        assert sim.key_for(provider) not in everything
    assert not re.search(r"[A-Za-z0-9+/=]{200,}", everything)
