"""The simulator's core: an httpx transport routing by host to provider fakes, with faults.

A provider fake is a :class:`ProviderFake` subclass in its own module under
``calliope_graph.simulate`` (listed in ``FAKE_MODULES``); it knows its hosts, checks auth,
builds its own error envelope and answers its endpoints. Everything generic lives here:
routing, call counting, latency, and the injectable faults (rate limit with Retry-After,
500/503/529, hang → timeout, malformed body, content policy), each by seeded probability
or by schedule ("the first N calls").
"""

from __future__ import annotations

import asyncio
import importlib
import random
import re
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from calliope_graph.config import InferenceModelProvider, KeysModel
from calliope_graph.context import Sleep

__all__ = [
    "FAKE_MODULES",
    "Fault",
    "FaultKind",
    "ProviderFake",
    "Reject",
    "Simulator",
    "parse_faults",
]

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "unavailable",
    "overloaded",
    "hang",
    "malformed",
    "latency",
    "content_policy",
    "auth",
    "empty",
]

#: Simulator modules that each define one provider fake (``FAKE = <class>``).
FAKE_MODULES = (
    "openai",
    "azure",
    "stability",
    "replicate",
    "hugging_face",
    "runway",
    "anthropic",
)


#: Faults a fake applies itself, to the request's prompt (the core only answers the others).
_PROMPT_FAULTS = ("content_policy", "empty")


class Fault(BaseModel):
    """One injected fault.

    ``provider`` limits it to one provider (None: all), ``endpoint`` to endpoints whose name
    contains the string. It fires on the first ``first_n`` matching calls, or with
    ``probability`` (seeded), or on every matching call when neither is set. ``pattern``
    (``content_policy``, ``empty``) fires only for prompts matching the regex.
    """

    model_config = ConfigDict(frozen=True)

    kind: FaultKind
    provider: str | None = None
    endpoint: str | None = None
    first_n: int | None = None
    probability: float | None = None
    retry_after: float | None = 1.0
    seconds: float = 0.0
    pattern: str | None = None

    def describe(self) -> str:
        where = self.provider or "all providers"
        when = (
            f"first {self.first_n} calls"
            if self.first_n is not None
            else (f"p={self.probability}" if self.probability is not None else "every call")
        )
        return f"{self.kind} on {where} ({when})"


def parse_faults(spec: str) -> list[Fault]:
    """Faults from the CLI syntax: ``kind[@provider][:key=value,...];...``.

    Example: ``rate_limit@openai:first_n=2,retry_after=0.1;hang@azure;latency@openai:seconds=0.3``.
    """
    faults: list[Fault] = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        head, _, opts = part.partition(":")
        kind, _, provider = head.partition("@")
        values: dict[str, Any] = {"kind": kind.strip(), "provider": provider.strip() or None}
        for opt in filter(None, (o.strip() for o in opts.split(","))):
            key, _, value = opt.partition("=")
            values[key.strip()] = value.strip()
        faults.append(Fault.model_validate(values))
    return faults


class Reject(Exception):
    """Raised inside a fake to refuse a request; carries the provider's ready error response."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class ProviderFake(ABC):
    """A faithful fake of one provider's HTTP API."""

    #: The provider's name (an InferenceModelProvider value).
    name: ClassVar[str]
    #: Hosts served: exact names or suffixes starting with a dot (``.cognitiveservices.azure.com``).
    hosts: ClassVar[tuple[str, ...]]

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def matches(self, host: str) -> bool:
        return any(host == h or (h.startswith(".") and host.endswith(h)) for h in self.hosts)

    @abstractmethod
    def endpoint(self, request: httpx.Request) -> str:
        """A short name for the endpoint (``chat.completions``), used for counting."""

    @abstractmethod
    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        """None when the request carries the expected key, else the provider's 401/403."""

    @abstractmethod
    def error(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """An error response in the provider's own envelope."""

    @abstractmethod
    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer a request that passed auth and fault injection."""

    def prompt_of(self, request: httpx.Request) -> str | None:
        """The user prompt of a request (for content-policy patterns); None if none."""
        return None

    def key(self) -> str:
        return self.sim.key_for(self.name)


#: Latency per request: (provider, endpoint, request) -> seconds.
LatencyFn = Callable[[str, str, httpx.Request], float]


class Simulator:
    """Offline, deterministic fakes of every provider, as an httpx transport.

    ``Simulator().keys()`` gives the keys the fakes accept (and their base URLs);
    ``Simulator().client()`` an ``httpx.AsyncClient`` wired to the fakes. ``calls`` counts
    requests per (provider, endpoint). ``latency`` maps ``provider`` or
    ``provider:endpoint`` to seconds, or is a function of (provider, endpoint, request).
    ``sleep`` is what latency and hangs wait with: pass a
    fake for instant tests.
    """

    def __init__(
        self,
        *,
        faults: Iterable[Fault] = (),
        latency: dict[str, float] | LatencyFn | None = None,
        seed: int = 0,
        sleep: Sleep | None = None,
        poll_steps: int = 2,
    ) -> None:
        self.faults: list[Fault] = list(faults)
        self.latency: dict[str, float] = dict(latency or {}) if not callable(latency) else {}
        self.latency_fn: LatencyFn | None = latency if callable(latency) else None
        self.rng = random.Random(seed)
        self.seed = seed
        self.sleep: Sleep = sleep or asyncio.sleep
        #: How many polls an async job (Replicate, Runway) needs before it finishes.
        self.poll_steps = poll_steps
        self.calls: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[float, str, str]] = []
        self._fault_hits: Counter[int] = Counter()
        self._fakes: list[ProviderFake] = []
        for name in FAKE_MODULES:
            module = importlib.import_module(f"calliope_graph.simulate.{name}")
            fake_cls: type[ProviderFake] | None = getattr(module, "FAKE", None)
            if fake_cls is not None:
                self._fakes.append(fake_cls(self))
        self._state: dict[str, Any] = {}

    # -- keys -----------------------------------------------------------------------------
    def key_for(self, provider: str) -> str:
        return f"sim-{provider}-key-{self.seed:04d}"

    def keys(self, **overrides: Any) -> KeysModel:
        """Keys the fakes accept, with base URLs pointing at the fakes' hosts."""
        values: dict[str, Any] = {
            "openai_api_key": SecretStr(self.key_for("openai")),
            "azure_vision_key": SecretStr(self.key_for("azure")),
            "azure_vision_endpoint": "https://calliope-sim.cognitiveservices.azure.com",
            "stability_api_key": SecretStr(self.key_for("stability")),
            "replicate_api_token": SecretStr(self.key_for("replicate")),
            "huggingface_api_key": SecretStr(self.key_for("huggingface")),
            "runway_api_key": SecretStr(self.key_for("runway")),
            "anthropic_api_key": SecretStr(self.key_for("anthropic")),
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
        return sum(
            n
            for (p, e), n in self.calls.items()
            if (provider is None or p == provider) and (endpoint is None or endpoint in e)
        )

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
        self.log.append((time.monotonic(), fake.name, endpoint))
        delay = self.latency.get(fake.name, 0.0) + self.latency.get(f"{fake.name}:{endpoint}", 0.0)
        if self.latency_fn is not None:
            delay += self.latency_fn(fake.name, endpoint, request)
        if delay:
            await self.sleep(delay)
        denied = fake.authenticate(request)
        if denied is not None:
            return denied
        response = await self._inject(fake, endpoint, request)
        if response is not None:
            return response
        return await fake.handle(request)

    def blocked(self, fake: ProviderFake, request: httpx.Request, text: str | None) -> bool:
        """Whether a content_policy fault fires for this request's prompt ``text``."""
        return self._prompt_fault("content_policy", fake, request, text)

    def emptied(self, fake: ProviderFake, request: httpx.Request, text: str | None) -> bool:
        """Whether an ``empty`` fault fires: the provider answers 200 with no text at all."""
        return self._prompt_fault("empty", fake, request, text)

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
            if fault.kind in _PROMPT_FAULTS or not self._applies(fault, fake, endpoint):
                continue
            if not self._fires(index, fault):
                continue
            if fault.kind == "latency":
                await self.sleep(fault.seconds)
                continue
            if fault.kind == "hang":
                timeout = request.extensions.get("timeout", {})
                read = timeout.get("read") if isinstance(timeout, dict) else None
                await self.sleep(float(read) if read else (fault.seconds or 60.0))
                raise httpx.ReadTimeout("simulated hang", request=request)
            if fault.kind == "rate_limit":
                headers = {}
                if fault.retry_after is not None:
                    headers["retry-after"] = f"{fault.retry_after:g}"
                return fake.error(
                    429, "rate_limit", "Rate limit reached (simulated).", headers=headers
                )
            if fault.kind == "server_error":
                return fake.error(500, "server_error", "The server had an error (simulated).")
            if fault.kind == "unavailable":
                return fake.error(503, "unavailable", "Service unavailable (simulated).")
            if fault.kind == "overloaded":
                return fake.error(529, "overloaded", "Overloaded (simulated).")
            if fault.kind == "auth":
                return fake.error(401, "auth", "Invalid credentials (simulated).")
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


def provider_names() -> list[str]:
    return [p.value for p in InferenceModelProvider if p is not InferenceModelProvider.LANGCHAIN]
