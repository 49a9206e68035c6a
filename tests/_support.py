"""Test helpers shared by the provider tests: a recording transport handler and run contexts.

The ``rec`` and ``rctx`` fixtures in ``conftest.py`` are built from these; a test file whose
provider needs more (helpers reading its own requests, rewrites for one host only) subclasses
``Recorder`` and overrides the ``rec`` fixture, and ``rctx`` picks the override up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from calliope_graph.config import KeysModel
from calliope_graph.context import PollSettings, RetrySettings, RunContext
from calliope_graph.simulate import Simulator

Rewrite = Callable[[httpx.Request, httpx.Response], httpx.Response]


class Recorder:
    """A transport handler that records each request and lets the simulator answer.

    ``answer`` replaces the simulator outright. ``rewrite`` maps (request, response) to a
    replacement response, to stage answers the fake would never give (invalid JSON from a
    model, an empty choice list...); with ``host`` set, only that host's answers are rewritten.
    """

    def __init__(self, sim: Simulator, host: str | None = None) -> None:
        self.sim = sim
        self.host = host
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], httpx.Response] | None = None
        self.rewrite: Rewrite | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answer is not None:
            return self.answer(request)
        response = await self.sim.handle(request)
        if self.rewrite is not None and self.host in (None, request.url.host):
            await response.aread()
            return self.rewrite(request, response)
        return response

    def bodies(self, path: str = "") -> list[dict[str, Any]]:
        """The JSON bodies of the requests whose URL path ends with ``path`` (all by default)."""
        return [json.loads(r.content) for r in self.requests if r.url.path.endswith(path)]


def make_ctx(
    transport: httpx.AsyncBaseTransport, keys: KeysModel, clock: Any, out: Path
) -> RunContext:
    """A run context with instant, short retries and polls (``clock`` is the fake sleep)."""
    return RunContext.create(
        out,
        keys=keys,
        transport=transport,
        sleep=clock,
        retry=RetrySettings(max_attempts=4, initial_wait=0.01, max_wait=0.05, jitter=0.0),
        poll=PollSettings(interval=0.5, timeout=30.0),
    )


def assert_secrets_absent(
    secrets: Iterable[str], failures: Iterable[BaseException], records: Iterable[logging.LogRecord]
) -> None:
    """No secret appears in any failure (str or repr) or in any log message."""
    failures, records = list(failures), list(records)
    for secret in secrets:
        for failure in failures:
            assert secret not in str(failure) and secret not in repr(failure)
        for record in records:
            assert secret not in record.getMessage()


FAULT_CLASSES = ("auth", "rate_limit", "server_error", "hang", "malformed", "content_policy")


async def failures_under_faults(
    sim: Simulator,
    provider: str,
    bad: RunContext,
    good: RunContext,
    call: Callable[[RunContext], Any],
    faults: Iterable[str] = FAULT_CLASSES,
) -> list[Exception]:
    """What ``call`` raises with a wrong key (``bad``), then under each fault class in turn
    (``good``); each case must fail. The simulator's faults are cleared afterwards."""
    failures: list[Exception] = []
    for ctx, fault in [(bad, None), *((good, f) for f in faults)]:
        sim.clear_faults()
        if fault:
            sim.add_fault(kind=fault, provider=provider, retry_after=0.5)
        try:
            await call(ctx)
        except Exception as exc:
            failures.append(exc)
        else:
            raise AssertionError(f"{provider}: no failure with fault {fault or 'wrong key'}")
    sim.clear_faults()
    return failures


class Rendezvous:
    """A simulator ``sleep`` that holds each delayed request until ``parties`` of them wait at
    once — structural proof that calls ran concurrently, whatever the machine's speed.

    Calls made one after the other would leave the first waiting alone: after ``guard``
    seconds (only ever spent on that failure) it raises an AssertionError instead of hanging.
    Once everyone has arrived, later requests pass straight through.
    """

    def __init__(self, parties: int, guard: float = 10.0) -> None:
        self.parties = parties
        self.guard = guard
        self.arrived = 0
        self.together = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.together.set()
        try:
            await asyncio.wait_for(self.together.wait(), self.guard)
        except TimeoutError:
            raise AssertionError(
                f"only {self.arrived} of {self.parties} calls were ever in flight together: "
                "they did not run concurrently"
            ) from None


async def never(seconds: float) -> None:
    """A simulator ``sleep`` that never returns: the delayed call only ends by cancellation."""
    await asyncio.Event().wait()


class LoopbackHTTP:
    """A plain HTTP server on 127.0.0.1 in a thread (a "source" a fetch policy must refuse
    or allow): ``routes`` maps a path to ``(status, headers, body)``, unknown paths are 404;
    ``hits`` logs ``(path, Host header)`` of every request it received; ``tls`` (a server
    ``ssl.SSLContext``) makes it https. ``close()`` it."""

    def __init__(
        self, routes: dict[str, tuple[int, dict[str, str], bytes]], *, tls: Any = None
    ) -> None:
        import http.server
        import threading

        self.hits: list[tuple[str, str]] = []
        self.routes = routes
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits.append((self.path, self.headers.get("Host", "")))
                status, headers, body = owner.routes.get(self.path, (404, {}, b"no"))
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:  # an ssl.SSLContext: serve https
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
