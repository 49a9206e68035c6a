"""The simulator's core: an httpx transport routing by host to provider fakes, with faults.

A provider fake is a :class:`ProviderFake` subclass in its own module under
``calliope_graph.simulate`` (listed in ``FAKE_MODULES``); it knows its hosts, declares its
auth check and the errors its faults answer with as data (:class:`AuthCheck`,
:class:`FaultErrors`), shapes its own error envelope and answers its endpoints. Everything
generic lives here: routing, auth, call counting, latency, the injectable faults (rate
limit with Retry-After, 500/503/529, hang → timeout, malformed body, content policy), each by
seeded probability or by schedule ("the first N calls"), and the providers' own rate limits
(``Simulator(limits=...)``): over a configured limit a fake answers its ``rate_limited``
:class:`Failure` with a ``Retry-After`` computed from the window, and the fakes that report
their limits on every response (:class:`LimitHeaders`) do so.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import re
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, TypeVar

import httpx
from pydantic import (
    SecretStr,
)

from calliope_graph.config import InferenceModelProvider, KeysModel
from calliope_graph.context import Sleep
from calliope_graph.errors import ConfigurationError, FaultSpecError
from calliope_graph.limits import LimitSpec, estimate_tokens
from calliope_graph.simulate._faults import (
    _ERROR_FAULTS,
    _FAKE_FAULTS,
    FAKE_MODULES,
    FAULT_KINDS,
    FAULT_OPTIONS,
    Failure,
    Fault,
    FaultErrors,
    FaultKind,
    Reject,
    _canonical,
    fake_classes,
    fake_names,
    parse_faults,
)
from calliope_graph.simulate._limits import LimitHeaders, ProviderLimits, parse_simulate_limits

__all__ = [
    "FAKE_MODULES",
    "FAULT_KINDS",
    "FAULT_OPTIONS",
    "AuthCheck",
    "Credential",
    "Failure",
    "Fault",
    "FaultErrors",
    "FaultKind",
    "FaultSpecError",
    "LimitHeaders",
    "ProviderFake",
    "Reject",
    "Simulator",
    "fake_classes",
    "fake_names",
    "parse_faults",
]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Credential:
    """One place a provider reads its key from.

    ``header`` (lower case) with one of ``schemes`` (``("bearer",)``; empty: the header's whole
    value is the key), else the ``query`` parameter. ``other_scheme`` says what a header with
    another scheme counts as: ``"missing"`` (most providers) or ``"invalid"`` (a wrong key).
    """

    header: str
    schemes: tuple[str, ...] = ()
    query: str | None = None
    other_scheme: Literal["missing", "invalid"] = "missing"

    def read(self, request: httpx.Request) -> str | None:
        """The key found here ("" when it is there but unusable as a key), or None if absent."""
        value: str | None = request.headers.get(self.header)
        if value is None:
            params = request.url.params
            return str(params[self.query]) if self.query and self.query in params else None
        if not self.schemes:
            return value.strip()
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme.lower() in self.schemes:
            return token
        # Another scheme: no key at all, or (``other_scheme="invalid"``) a wrong one.
        return value.strip() if token and self.other_scheme == "invalid" else ""


@dataclass(frozen=True)
class AuthCheck:
    """A provider's auth as data: where the key goes and its 401s without it or with a wrong one.

    ``credentials`` are tried in order; the first present one is the key. ``invalid`` is also
    the answer of the ``auth`` fault (a revoked key). ``show`` is how the provider echoes the
    presented key in ``invalid``'s ``{key}`` (OpenAI masks it).
    """

    credentials: tuple[Credential, ...]
    missing: Failure
    invalid: Failure
    show: Callable[[str], str] = field(default=lambda key: "")

    def key_of(self, request: httpx.Request) -> str:
        for credential in self.credentials:
            key = credential.read(request)
            if key is not None:
                return key
        return ""


class ProviderFake(ABC):
    """A faithful fake of one provider's HTTP API.

    A fake declares, as data, its ``auth`` (:class:`AuthCheck`) and its ``errors``
    (:class:`FaultErrors`: the :class:`Failure` each error fault answers with), and implements
    :meth:`envelope`, the provider's error JSON. The :class:`Simulator` applies them, in one
    place, before :meth:`handle` sees a request.
    """

    #: The provider's name (an InferenceModelProvider value).
    name: ClassVar[str]
    #: The names :meth:`endpoint` gives the endpoints the fake serves (a fault's
    #: ``endpoint=`` must be part of one of them).
    endpoints: ClassVar[tuple[str, ...]]
    #: Hosts served: exact names or suffixes starting with a dot (``.cognitiveservices.azure.com``).
    hosts: ClassVar[tuple[str, ...]]
    #: Where the key goes and the 401 bodies.
    auth: ClassVar[AuthCheck]
    #: What each injected error fault answers.
    errors: ClassVar[FaultErrors]
    #: The wait a rate-limit message names when the fault sets no Retry-After.
    retry_after: ClassVar[str] = "1"
    #: What the provider answers over a configured limit (``Simulator(limits=...)``).
    rate_limited: ClassVar[Failure]
    #: How the provider reports its limits on every response (None: it does not).
    limit_headers: ClassVar[LimitHeaders | None] = None
    #: Whether its 429s carry a ``Retry-After`` header (Gemini's do not: the wait is in the
    #: body, which the fake's ``rate_limited`` failure fills from ``{retry_after}``).
    retry_after_header: ClassVar[bool] = True
    #: Seconds the provider refuses everything after a limit's 429 unless ``block=`` says.
    limit_block: ClassVar[float | None] = None
    #: Endpoints that count against the limits (None: all of them).
    limit_endpoints: ClassVar[tuple[str, ...] | None] = None
    #: What ``concurrency=`` counts: requests in flight (over it: 429), or the fake's own
    #: jobs (Runway's running tasks; the fake queues the rest itself).
    limit_concurrency: ClassVar[Literal["requests", "jobs"]] = "requests"
    #: Other API hosts of the provider, by the path prefix the loopback server gives them
    #: (fal: ``{"fal-run": "https://fal.run"}``); its main host is its base URL's.
    server_aliases: ClassVar[Mapping[str, str]] = {}

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def matches(self, host: str) -> bool:
        return any(host == h or (h.startswith(".") and host.endswith(h)) for h in self.hosts)

    @abstractmethod
    def endpoint(self, request: httpx.Request) -> str:
        """A short name for the endpoint (``chat.completions``), used for counting."""

    @abstractmethod
    def envelope(self, failure: Failure) -> httpx.Response:
        """``failure`` in the provider's own error envelope (and its usual response headers)."""

    @abstractmethod
    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer a request that passed auth and fault injection."""

    def key(self) -> str:
        return self.sim.key_for(self.name)

    def tokens_of(self, request: httpx.Request) -> int:
        """The tokens a request counts against ``tpm`` limits: an estimate from its JSON body
        (chat shapes); a fake whose bodies have another shape estimates them itself."""
        body = _json_body(request)
        return estimate_tokens(body) if body else 0

    def model_of(self, request: httpx.Request) -> str | None:
        """The model a request is for, for per-model limits (``provider/model``): the JSON
        body's ``model`` by default; a fake whose API names it in the path says so here."""
        model = _json_body(request).get("model")
        return model if isinstance(model, str) else None


#: Latency per request: (provider, endpoint, request) -> seconds.
LatencyFn = Callable[[str, str, httpx.Request], float]


class Simulator:
    """Offline, deterministic fakes of every provider, as an httpx transport.

    ``Simulator().keys()`` gives the keys the fakes accept (and their base URLs);
    ``Simulator().client()`` an ``httpx.AsyncClient`` wired to the fakes. ``calls`` counts
    requests per (provider, endpoint). ``latency`` maps ``provider`` or
    ``provider:endpoint`` to seconds, or is a function of (provider, endpoint, request);
    streamed answers also wait ``ttft`` / ``provider:ttft`` before their first event (the
    time to first token) and ``token`` / ``provider:token`` between events.
    ``sleep`` is what latency and hangs wait with: pass a
    fake for instant tests.

    ``image_scale`` draws images smaller than the size asked for (``0.25``: a 1024×1024
    request answers 256×256, never under 16×16): a benchmark of many images then measures
    the library, not the fakes' PNG encoder. The default, 1, answers the provider's size.

    ``limits`` makes the fakes limit like the providers (``{"openai": {"rpm": 500, "tpm":
    200000}}`` or ``"stability:rpm=60;openai:rpm=500"``, see :func:`parse_simulate_limits`):
    windows run on ``clock`` (default ``time.monotonic``; pass a virtual one with a fake
    ``sleep``), ``wall_clock`` dates Anthropic's reset timestamps (default: the real time
    when the simulator was made, moving with ``clock``). :meth:`rate_limited` counts 429s.
    """

    def __init__(
        self,
        *,
        faults: Iterable[Fault] = (),
        latency: dict[str, float] | LatencyFn | None = None,
        seed: int = 0,
        sleep: Sleep | None = None,
        poll_steps: int = 2,
        limits: str | Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] | None = None,
        image_scale: float = 1.0,
    ) -> None:
        if not 0 < image_scale <= 1:
            raise ConfigurationError(
                f"Simulator(image_scale={image_scale!r}): use a scale in (0, 1], e.g. 0.25."
            )
        self.image_scale = image_scale
        self.faults: list[Fault] = list(faults)
        self.latency: dict[str, float] = dict(latency or {}) if not callable(latency) else {}
        self.latency_fn: LatencyFn | None = latency if callable(latency) else None
        self.rng = random.Random(seed)
        self.seed = seed
        self.sleep: Sleep = sleep or asyncio.sleep
        #: How many polls an async job (Replicate, Runway) needs before it finishes.
        self.poll_steps = poll_steps
        self.calls: Counter[tuple[str, str]] = Counter()
        #: 429s answered per provider (over a limit, or a rate_limit fault).
        self.limited: Counter[str] = Counter()
        self.log: list[tuple[float, str, str]] = []
        self.clock = clock
        anchor = time.time() - clock()
        self.wall_clock: Callable[[], float] = wall_clock or (lambda: anchor + clock())
        self.limits: dict[str, LimitSpec] = (
            parse_simulate_limits(limits, where="Simulator(limits=...)") if limits else {}
        )
        self._limiters: dict[str, ProviderLimits] = {}
        self._fault_hits: Counter[int] = Counter()
        self._fakes: list[ProviderFake] = []
        for name in FAKE_MODULES:
            module = importlib.import_module(f"calliope_graph.simulate.{name}")
            fake_cls: type[ProviderFake] | None = getattr(module, "FAKE", None)
            if fake_cls is not None:
                self._fakes.append(fake_cls(self))
        self._state: dict[str, Any] = {}

    def drawn_size(self, width: int, height: int) -> tuple[int, int]:
        """The size a fake draws an image of ``width`` × ``height`` at (see ``image_scale``)."""
        if self.image_scale == 1:
            return width, height
        return max(round(width * self.image_scale), 16), max(round(height * self.image_scale), 16)

    # -- keys -----------------------------------------------------------------------------
    def key_for(self, provider: str) -> str:
        return f"sim-{provider}-key-{self.seed:04d}"

    def keys(self, **overrides: Any) -> KeysModel:
        """Keys the fakes accept, with base URLs pointing at the fakes' hosts."""
        values: dict[str, Any] = {
            "openai_api_key": SecretStr(self.key_for("openai")),
            "azure_vision_key": SecretStr(self.key_for("azure_vision")),
            "azure_vision_endpoint": "https://calliope-sim.cognitiveservices.azure.com",
            "stability_api_key": SecretStr(self.key_for("stability")),
            "replicate_api_token": SecretStr(self.key_for("replicate")),
            "huggingface_api_key": SecretStr(self.key_for("hugging_face")),
            "runway_api_key": SecretStr(self.key_for("runway")),
            "anthropic_api_key": SecretStr(self.key_for("anthropic")),
            "elevenlabs_api_key": SecretStr(self.key_for("elevenlabs")),
            "fal_api_key": SecretStr(self.key_for("fal")),
            "luma_api_key": SecretStr(self.key_for("luma")),
            "google_api_key": SecretStr(self.key_for("google")),
        }
        values.update(overrides)
        return KeysModel(**values)

    # -- wiring ---------------------------------------------------------------------------
    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.MockTransport(self.handle)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", httpx.Timeout(60.0))
        return httpx.AsyncClient(transport=self.transport(), **kwargs)

    def add_fault(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        fault = fault or Fault(**kwargs)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()
        self._fault_hits.clear()

    def count(self, provider: str | None = None, endpoint: str | None = None) -> int:
        """Calls made, optionally for one provider and/or endpoint (substring)."""
        provider = _canonical(provider) if provider else provider
        return sum(
            n
            for (p, e), n in self.calls.items()
            if (provider is None or p == provider) and (endpoint is None or endpoint in e)
        )

    def rate_limited(self, provider: str | None = None) -> int:
        """429s answered (over a configured limit or by a rate_limit fault), optionally for
        one provider."""
        return sum(n for p, n in self.limited.items() if provider is None or p == provider)

    def limit_spec(self, provider: str) -> LimitSpec | None:
        """The limits configured for ``provider`` (or ``provider/model``), if any."""
        return self.limits.get(provider)

    def counts(self) -> dict[str, Any]:
        """Calls per provider and endpoint, totals and 429s, as JSON-ready data."""
        calls: dict[str, dict[str, int]] = {}
        for (provider, endpoint), n in sorted(self.calls.items()):
            calls.setdefault(provider, {})[endpoint] = n
        return {
            "calls": calls,
            "totals": {p: sum(e.values()) for p, e in calls.items()},
            "rate_limited": dict(sorted(self.limited.items())),
            "limits": {k: v.describe() for k, v in sorted(self.limits.items())},
        }

    def fake(self, provider: str) -> ProviderFake:
        for fake in self._fakes:
            if fake.name == provider:
                return fake
        raise KeyError(provider)

    def state(self, provider: str) -> dict[str, Any]:
        """Mutable per-provider state for fakes (jobs, loading models...)."""
        state: dict[str, Any] = self._state.setdefault(provider, {})
        return state

    # -- the transport ----------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        fake = next((f for f in self._fakes if f.matches(host)), None)
        if fake is None:
            if "download" in self._state and str(request.url) in self._state["download"]:
                return self._state["download"][str(request.url)]  # type: ignore[no-any-return]
            return httpx.Response(
                404, json={"error": f"simulator: no provider fake serves host {host!r}"}
            )
        endpoint = fake.endpoint(request)
        self.calls[(fake.name, endpoint)] += 1
        self.log.append((self.clock(), fake.name, endpoint))
        delay = self.latency.get(fake.name, 0.0) + self.latency.get(f"{fake.name}:{endpoint}", 0.0)
        if self.latency_fn is not None:
            delay += self.latency_fn(fake.name, endpoint, request)
        denied = self._authenticate(fake, request)
        if denied is not None:
            return denied
        # A provider counts a request against its limits when it arrives: the limit check
        # comes before the latency (the time spent producing the answer).
        limiters = self._limiters_for(fake, endpoint, request)
        response = self._over_limit(fake, limiters, request) if limiters else None
        if response is None:
            response = await self._answer(fake, endpoint, request, limiters, delay)
        if response.status_code == 429:
            self.limited[fake.name] += 1
        if limiters and fake.limit_headers is not None:
            budgets = limiters[-1].budgets(self.clock())
            response.headers.update(fake.limit_headers.render(budgets, self.wall_clock()))
        return response

    async def _answer(
        self,
        fake: ProviderFake,
        endpoint: str,
        request: httpx.Request,
        limiters: list[ProviderLimits],
        delay: float,
    ) -> httpx.Response:
        """The answer ``delay`` after the request arrived, made while the latency runs, as a
        provider works inside its response time (drawn in 50 ms under a 500 ms latency: 500
        ms, not 550). Faults act first: an error answers after the latency, `latency` adds."""
        held = [lim for lim in limiters if lim.concurrency is not None]
        fault = await _in_flight(held, self._inject(fake, endpoint, request))
        if fault is not None or not delay:
            if delay:
                await self.sleep(delay)
            return fault if fault is not None else await _in_flight(held, fake.handle(request))
        answer = asyncio.ensure_future(fake.handle(request))
        try:
            await self.sleep(delay)
            return await _in_flight(held, answer)
        finally:  # the client gave up (a timeout, a cancelled run): so does the provider
            if not answer.done():
                answer.cancel()

    # -- rate limits ------------------------------------------------------------------------
    def _limiter(self, key: str, fake: ProviderFake) -> ProviderLimits:
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = ProviderLimits(
                self.limits[key],
                block=fake.limit_block,
                concurrency=fake.limit_concurrency == "requests",
            )
            self._limiters[key] = limiter
        return limiter

    def _limiters_for(
        self, fake: ProviderFake, endpoint: str, request: httpx.Request
    ) -> list[ProviderLimits]:
        """The limits this request counts against: the provider's, then its model's."""
        if not self.limits:
            return []
        if fake.limit_endpoints is not None and endpoint not in fake.limit_endpoints:
            return []
        keys = [fake.name] if fake.name in self.limits else []
        model = fake.model_of(request)
        if model is not None and f"{fake.name}/{model}" in self.limits:
            keys.append(f"{fake.name}/{model}")
        return [self._limiter(key, fake) for key in keys]

    def _over_limit(
        self, fake: ProviderFake, limiters: list[ProviderLimits], request: httpx.Request
    ) -> httpx.Response | None:
        """The provider's 429 when the request is over a limit, else None (and it counts)."""
        now = self.clock()
        tokens = fake.tokens_of(request) if any(lim.counts_tokens for lim in limiters) else 0
        refusals = [r for r in (lim.check(now, tokens) for lim in limiters) if r is not None]
        if not refusals:
            for lim in limiters:
                lim.admit(now, tokens)
            return None
        refusal = max(refusals, key=lambda r: r.retry_after)
        values = refusal.values(fake.model_of(request))
        failure = fake.rate_limited.filled(**values)
        if fake.retry_after_header:
            failure = replace(
                failure, headers={"retry-after": values["retry_after"], **failure.headers}
            )
        return fake.envelope(failure)

    def _authenticate(self, fake: ProviderFake, request: httpx.Request) -> httpx.Response | None:
        """None when the request carries the fake's key, else the provider's 401."""
        key = fake.auth.key_of(request)
        if not key:
            return self._denied(fake, fake.auth.missing, key)
        if key != fake.key():
            return self._denied(fake, fake.auth.invalid, key)
        return None

    @staticmethod
    def _denied(fake: ProviderFake, failure: Failure, key: str) -> httpx.Response:
        return fake.envelope(failure.filled(key=fake.auth.show(key)))

    def blocked(self, fake: ProviderFake, request: httpx.Request, text: str | None) -> bool:
        """Whether a content_policy fault fires for this request's prompt ``text``."""
        return self._prompt_fault("content_policy", fake, request, text)

    def emptied(self, fake: ProviderFake, request: httpx.Request, text: str | None) -> bool:
        """Whether an ``empty`` fault fires: the provider answers 200 with no text at all."""
        return self._prompt_fault("empty", fake, request, text)

    def breaks(self, fake: ProviderFake, request: httpx.Request) -> bool:
        """Whether a ``stream_break`` fault fires: the streamed answer stops mid-way (the
        connection drops after some of the text), as a real stream can."""
        return self._prompt_fault("stream_break", fake, request, None)

    def stream_timing(self, provider: str) -> tuple[float, float]:
        """(time to first token, time between chunks) of ``provider``'s streamed answers:
        the ``latency`` keys ``<provider>:ttft`` / ``ttft`` and ``<provider>:token`` /
        ``token`` (seconds, waited with ``sleep`` like every latency)."""
        lat = self.latency
        first = lat.get(f"{provider}:ttft", lat.get("ttft", 0.0))
        return first, lat.get(f"{provider}:token", lat.get("token", 0.0))

    def _prompt_fault(
        self, kind: FaultKind, fake: ProviderFake, request: httpx.Request, text: str | None
    ) -> bool:
        endpoint = fake.endpoint(request)
        for index, fault in enumerate(self.faults):
            if fault.kind != kind or not self._applies(fault, fake, endpoint):
                continue
            if fault.pattern and not (text and re.search(fault.pattern, text, re.IGNORECASE)):
                continue
            if self._fires(index, fault):
                return True
        return False

    def _applies(self, fault: Fault, fake: ProviderFake, endpoint: str) -> bool:
        if fault.provider is not None and fault.provider != fake.name:
            return False
        return fault.endpoint is None or fault.endpoint in endpoint

    def _fires(self, index: int, fault: Fault) -> bool:
        self._fault_hits[index] += 1
        if fault.first_n is not None:
            return self._fault_hits[index] <= fault.first_n
        if fault.probability is not None:
            return self.rng.random() < fault.probability
        return True

    async def _inject(
        self, fake: ProviderFake, endpoint: str, request: httpx.Request
    ) -> httpx.Response | None:
        for index, fault in enumerate(self.faults):
            if fault.kind in _FAKE_FAULTS or not self._applies(fault, fake, endpoint):
                continue
            if not self._fires(index, fault):
                continue
            if fault.kind == "latency":
                await self.sleep(fault.seconds or 0.0)
                continue
            if fault.kind == "hang":
                # The provider never answers: the client gives up after ``seconds`` when the
                # fault says, else after its own read timeout.
                timeout = request.extensions.get("timeout", {})
                read = timeout.get("read") if isinstance(timeout, dict) else None
                hung = fault.seconds if fault.seconds is not None else float(read or 60.0)
                await self.sleep(hung)
                raise httpx.ReadTimeout(f"simulated hang: no answer in {hung:g} s", request=request)
            if fault.kind in _ERROR_FAULTS:
                wait = fake.retry_after if fault.retry_after is None else f"{fault.retry_after:g}"
                failure: Failure = getattr(fake.errors, fault.kind).filled(retry_after=wait)
                if (
                    fault.kind == "rate_limit"
                    and fault.retry_after is not None
                    and fake.retry_after_header
                ):
                    failure = replace(failure, headers={**failure.headers, "retry-after": wait})
                return fake.envelope(failure)
            if fault.kind == "auth":
                key = fake.key()
                return self._denied(fake, fake.auth.invalid, key[:4] + "-revoked-" + key[-4:])
            if fault.kind == "malformed":
                return httpx.Response(
                    200,
                    content=b'{"id": "truncated", "choi',
                    headers={"content-type": "application/json"},
                )
        return None

    def serve_download(self, url: str, response: httpx.Response) -> None:
        """Make a GET of ``url`` (on a non-provider host, e.g. a CDN) return ``response``."""
        self._state.setdefault("download", {})[url] = response

    def download_hosts(self) -> set[str]:
        """The hosts of the downloads served so far (CDN hosts of generated media)."""
        return {httpx.URL(url).host for url in self._state.get("download", {})}


def _json_body(request: httpx.Request) -> dict[str, Any]:
    """The request's JSON object body, or {} (multipart, bytes, not JSON)."""
    if "json" not in request.headers.get("content-type", ""):
        return {}
    try:
        body = json.loads(request.content or b"")
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def provider_names() -> list[str]:
    return [p.value for p in InferenceModelProvider if p is not InferenceModelProvider.LANGCHAIN]


async def _in_flight(held: list[ProviderLimits], answer: Awaitable[_T]) -> _T:
    """``answer``, counted in flight against the concurrency limits ``held`` meanwhile."""
    for lim in held:
        lim.in_flight += 1
    try:
        return await answer
    finally:
        for lim in held:
            lim.in_flight -= 1
