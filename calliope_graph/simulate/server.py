"""The simulator as a real loopback HTTP server, so several processes share one simulator.

One :class:`~calliope_graph.simulate.Simulator` answers every client, so its limits, counts
and jobs are shared: a batch in one process and a worker in another run into the same
``rpm``, and official SDKs (``openai``, ``anthropic``) can be pointed at it. Every provider
lives under its own path prefix on one port::

    http://127.0.0.1:PORT/openai/v1/chat/completions   →  https://api.openai.com/v1/chat/completions
    http://127.0.0.1:PORT/azure/vision/v3.2/analyze    →  https://<sim>.cognitiveservices.azure.com/...

so each provider's base URL (``OPENAI_BASE_URL=http://127.0.0.1:PORT/openai/v1``, see
:meth:`SimulatorServer.environment`) is all a client needs. URLs in answers that point at a
provider or at a simulated CDN (Replicate's ``urls.get``, generated images, Runway's videos,
Azure's ``Operation-Location``) are rewritten to the server, and back in request bodies.
``GET /_sim/counts`` reports calls per provider and endpoint and the 429s answered.

HTTP/1.1 with keep-alive, on asyncio and ``h11`` (the parser httpx itself uses, already
installed with it): no web framework is needed for one handler, and none is in the
dependency tree. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable, Mapping
from typing import Any

import h11
import httpx

from calliope_graph.config import _ENV, InferenceModelProvider
from calliope_graph.simulate._core import Simulator, fake_names

__all__ = ["SimulatorServer", "serve"]

log = logging.getLogger("calliope_graph.simulate.server")

HOST = "127.0.0.1"
_CDN = "/_sim/cdn/"
_MAX_BODY = 64 * 1024 * 1024
#: Hop-by-hop and framing headers: h11 and httpx set their own.
_FRAMING = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive")
)
_TEXT_TYPES = ("json", "text", "xml", "x-www-form-urlencoded")
#: Other variables that name a provider's key / base URL and win over (or stand in for) the
#: ones in ``config._ENV``: exported too, so a real key already in the shell is not sent to
#: the simulator. google-genai reads GOOGLE_API_KEY before GEMINI_API_KEY and its host from
#: GOOGLE_GEMINI_BASE_URL (googleapis/python-genai google/genai/_api_client.py
#: get_env_api_key, google/genai/_base_url.py); KeysModel.from_env reads both the same way.
_ALSO_EXPORTED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "google": (("GOOGLE_API_KEY",), ("GOOGLE_GEMINI_BASE_URL",)),
}


class SimulatorServer:
    """Serve ``sim`` (default: a new :class:`Simulator`) on ``127.0.0.1:port`` (0: any free port).

    ``async with SimulatorServer(sim) as server: ...`` starts and stops it; ``server.url``,
    :meth:`base_urls` and :meth:`environment` say where clients go.
    """

    def __init__(self, sim: Simulator | None = None, *, port: int = 0) -> None:
        self.sim = sim or Simulator()
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        keys = self.sim.keys()
        #: provider -> (origin the fake serves, base path of its API)
        self._routes: dict[str, tuple[str, str]] = {}
        for name in fake_names():
            base = httpx.URL(keys.base_url(name))
            origin = f"{base.scheme}://{base.netloc.decode('ascii')}"
            self._routes[name] = (origin, base.path.rstrip("/"))
            for prefix, other in type(self.sim.fake(name)).server_aliases.items():
                self._routes.setdefault(prefix, (other.rstrip("/"), ""))

    # -- where ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator server is not started: await start() first")
        return f"http://{HOST}:{self.port}"

    def base_urls(self) -> dict[str, str]:
        """Each provider's base URL on this server (what ``OPENAI_BASE_URL`` & co. take)."""
        return {name: f"{self.url}/{name}{path}" for name, (_, path) in self._routes.items()}

    def environment(self) -> dict[str, str]:
        """The environment variables pointing the project (and SDKs) at this server: each
        provider's base URL and the fake key it accepts."""
        env: dict[str, str] = {}
        urls = self.base_urls()
        for provider, (_, key_var, _, url_var) in _ENV.items():
            name = InferenceModelProvider(provider).value
            if name in urls:
                env[url_var] = urls[name]
                env[key_var] = self.sim.key_for(name)
                also_keys, also_urls = _ALSO_EXPORTED.get(name, ((), ()))
                env.update(dict.fromkeys(also_keys, env[key_var]))
                env.update(dict.fromkeys(also_urls, env[url_var]))
        return env

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> SimulatorServer:
        self._server = await asyncio.start_server(self._connection, HOST, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        # Closed connections see end-of-file and finish; give them a moment, then cancel.
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=5.0)
            for task in pending:
                task.cancel()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> SimulatorServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- HTTP -------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read(conn, reader, writer)
                if request is None:
                    break
                answer = await self._answer(*request)
                if answer is None:  # a simulated hang: the client has given up
                    break
                await self._write(conn, writer, *answer)
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            with contextlib.suppress(Exception):
                body = json.dumps({"error": f"simulator: bad HTTP request ({exc})"}).encode()
                await self._write(conn, writer, 400, [(b"content-type", b"application/json")], body)
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _read(
        conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, str, list[tuple[bytes, bytes]], bytes] | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    go_on = h11.InformationalResponse(status_code=100, headers=[])
                    writer.write(conn.send(go_on) or b"")
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large", 413)
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                method = head.method.decode("ascii")
                return method, head.target.decode("latin-1"), list(head.headers), bytes(body)
            else:  # ConnectionClosed, PAUSED
                return None

    @staticmethod
    async def _write(
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
        out += conn.send(h11.Data(data=body)) if body else b""
        out += conn.send(h11.EndOfMessage()) or b""
        writer.write(out)
        await writer.drain()

    async def _answer(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        path, _, query = target.partition("?")
        if path == "/_sim/counts":
            return _json(200, self.sim.counts())
        upstream = self._upstream(path)
        if upstream is None:
            prefixes = ", ".join(f"/{name}" for name in self._routes)
            return _json(
                404,
                {"error": f"simulator: nothing at {path!r}; providers are under {prefixes}"},
            )
        kept = [(k, v) for k, v in headers if k.lower() not in _FRAMING]
        if _is_text(dict(kept).get(b"content-type", b"")):
            body = self._inward(body)
        request = httpx.Request(
            method, upstream + (f"?{query}" if query else ""), headers=kept, content=body
        )
        try:
            response = await self.sim.handle(request)
        except httpx.TimeoutException:
            return None
        except Exception as exc:  # a fake's bug: answer it instead of dropping the client
            log.exception("simulator error on %s %s", method, path)
            return _json(500, {"error": f"simulator error: {type(exc).__name__}: {exc}"})
        content = await response.aread()
        rewrite = self._outward()
        if _is_text(response.headers.get("content-type", "").encode()):
            content = rewrite(content.decode("utf-8")).encode("utf-8")
        out_headers = [
            (k, rewrite(v.decode("latin-1")).encode("latin-1"))
            for k, v in response.headers.raw
            if k.lower() not in _FRAMING and k.lower() != b"content-encoding"
        ]
        return response.status_code, out_headers, content

    def _upstream(self, path: str) -> str | None:
        """The fake's URL for a path on this server (None: no provider there)."""
        if path.startswith(_CDN):
            host, _, rest = path[len(_CDN) :].partition("/")
            return f"https://{host}/{rest}" if host else None
        first, _, rest = path.lstrip("/").partition("/")
        route = self._routes.get(first)
        return f"{route[0]}/{rest}" if route is not None else None

    def _outward(self) -> Callable[[str], str]:
        """Rewrites provider and CDN URLs in an answer to this server's."""
        pairs = [(origin, f"{self.url}/{name}") for name, (origin, _) in self._routes.items()]
        cdn = f"{self.url}{_CDN}"
        pairs += [(f"https://{host}", f"{cdn}{host}") for host in self.sim.download_hosts()]
        return _replacer(pairs)

    def _inward(self, body: bytes) -> bytes:
        """Rewrites this server's URLs in a request body back to the providers' and CDNs'."""
        pairs = [(f"{self.url}{_CDN}", "https://")]
        pairs += [(f"{self.url}/{name}", origin) for name, (origin, _) in self._routes.items()]
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return body
        return _replacer(pairs)(text).encode("utf-8")


def _replacer(pairs: list[tuple[str, str]]) -> Callable[[str], str]:
    def rewrite(text: str) -> str:
        for old, new in pairs:
            if old in text:
                text = text.replace(old, new)
        return text

    return rewrite


def _is_text(content_type: bytes) -> bool:
    kind = content_type.decode("latin-1").lower()
    return any(t in kind for t in _TEXT_TYPES)


def _json(status: int, data: Mapping[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, [(b"content-type", b"application/json")], json.dumps(data).encode()


async def serve(sim: Simulator, port: int = 0, *, echo: Callable[[str], None] = print) -> None:
    """Serve ``sim`` until SIGINT/SIGTERM; first ``echo`` the ``export`` lines clients need.

    The last line printed before serving is ``# ready``, for scripts waiting on it.
    """
    async with SimulatorServer(sim, port=port) as server:
        echo(f"# calliope-graph simulator on {server.url} (Ctrl-C to stop)")
        echo(f"# counts: {server.url}/_sim/counts")
        for key, spec in sim.limits.items():
            echo(f"# limit {key}: {spec.describe()}")
        for fault in sim.faults:
            echo(f"# fault: {fault.describe()}")
        for var, value in server.environment().items():
            echo(f"export {var}={value}")
        echo("# ready")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
