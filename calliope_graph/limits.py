"""Shared per-provider rate limits: one limiter per provider (and per model) per process.

Every provider call in the process goes through the :class:`Limiter` of its provider, and
also through that of ``provider/model`` when one is configured, so batches, concurrent
``ainvoke`` calls and map items all share one budget. A limiter makes a caller wait, in
this order, for

(a) a **cooldown**: after a 429 *every* caller sharing the limiter waits out the
    ``Retry-After`` (or the provider's documented block, Stability's 60 s), not only the
    call that got it (:meth:`Limiter.note_429`, :meth:`Limiter.cooldown`);
(b) a **concurrency** slot (``concurrency=``);
(c) the **daily cap** (``daily=``, a rolling 24 hours), which raises
    :class:`DailyCapError` instead of waiting;
(d) **token** capacity (``tpm=``): a request is charged an estimate up front
    (:func:`estimate_tokens`) and corrected once the answer reports its usage
    (:meth:`Slot.used` refunds or charges the difference);
(e) **request-window** capacity (``rps=``, ``rpm=``, ``requests=150/10s``);
(f) the **provider's own headers**: after each response :meth:`Limiter.observe` reads
    OpenAI's ``x-ratelimit-*`` (Go-style durations such as ``6m0s``), Anthropic's
    ``anthropic-ratelimit-*`` (RFC 3339 resets) and the IETF ``RateLimit`` header (Hugging
    Face); when what is left runs out, new slots wait for the reported refill instead of
    running into a 429, and a reported limit lower than the configured one is adopted.

How long a slot waited is on :attr:`Slot.waited` (per reason in :attr:`Slot.waits`) for
the trace, and :meth:`Limits.stats` gives calls in flight, callers waiting now, total
waited and 429s seen per key for progress displays.

**Library choice: pyrate-limiter** (>= 4.5) supplies the window primitives: its
``InMemoryBucket`` (an exact sliding-window log, several rates on one bucket: ``rps`` and
``rpm`` and ``requests=`` together) for requests and the daily cap, and its ``StateBucket``
with ``TokenBucket`` (constant memory, the continuously refilling bucket OpenAI and
Anthropic describe) for tokens. It was chosen over aiolimiter (a single leaky bucket,
in-process only, time read from the event loop) because it has multiple rates per bucket,
weights, and SQLite/Redis/Postgres backends behind the same bucket interface, so the later
DBOS issue can share these limits across processes and machines by swapping the bucket.
We call its buckets directly (``put`` with our own timestamps, then ``waiting`` for the
retry-after) rather than its ``Limiter``, whose waits use ``asyncio.sleep`` and
``time.monotonic``: here the clock and the sleep are injectable (``clock=``, ``sleep=``),
so tests run on a virtual clock and never sleep. Written by hand, because no library
does them: the cooldown shared by all callers, the header adaptation, the token
refund/charge, and a concurrency gate that works across event loops and threads.

Windows are conservative for requests (a sliding window never lets more than N through in
any window: right for Stability's "150 per 10 s" as well as for token-bucket providers) and
a token bucket for tokens. Configure limits on the command line (:func:`parse_limits`:
``--limits "openai:rpm=500,tpm=200000;stability:requests=150/10s;openai/gpt-4o:tpm=30000"``),
in the model catalog YAML (a top-level ``limits:`` section) or in Python
(:meth:`Limits.configure`); user values override :data:`DEFAULT_LIMITS` field by field.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PositiveFloat,
    PositiveInt,
    ValidationError,
)
from pyrate_limiter import Duration, InMemoryBucket, Rate, RateItem, StateBucket, TokenBucket

from calliope_graph.errors import ConfigurationError, DailyCapError, RateLimitError

__all__ = [
    "DEFAULT_LIMITS",
    "CallLimits",
    "DailyCapError",
    "LimitSpec",
    "Limiter",
    "LimiterStats",
    "Limits",
    "Slot",
    "estimate_tokens",
    "parse_duration",
    "parse_limits",
    "parse_rfc3339",
    "shared",
]

log = logging.getLogger("calliope_graph.limits")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Seconds everyone waits after a 429 that says nothing about how long.
DEFAULT_COOLDOWN = 1.0
#: Tokens counted for one image in a chat request (OpenAI's cost of a 512 px high-detail
#: tile pair; a rough figure, corrected by the usage the answer reports).
IMAGE_TOKENS = 765
_TOKEN_WINDOW = 60.0
_FIELDS_HELP = (
    "rps, rpm (requests per second / minute), requests (N per window, e.g. 150/10s), "
    "tpm (tokens per minute), concurrency (calls in flight), daily (requests per 24 h), "
    "block (seconds the provider refuses everything after a 429), burst (requests that may "
    "go at once; default 1: spread evenly), share (this process's share: every limit "
    "divided by it); 'none' removes a limit"
)
_EXAMPLE = '--limits "openai:rpm=500,tpm=200000;stability:rps=15;openai/gpt-4o:tpm=30000"'


# --------------------------------------------------------------------------- parsing


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_GO_UNITS["h"] = 3600.0
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``6m0s``, ``12ms``, ``1h2m3.5s``) or a bare number.

    OpenAI reports its ``x-ratelimit-reset-*`` values this way. Raises ``ValueError`` on
    anything else.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        raise ValueError(f"not a duration: {text!r}")
    pos, total = 0, 0.0
    while pos < len(value):
        match = _GO_PART.match(value, pos)
        if match is None:
            raise ValueError(f"not a duration: {text!r}")
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if not value:
        raise ValueError("empty duration")
    return total


def parse_rfc3339(text: str) -> float:
    """POSIX seconds of an RFC 3339 timestamp (``2025-10-25T12:01:00Z``), as Anthropic sends."""
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        raise ValueError(f"RFC 3339 timestamp without a time zone: {text!r}")
    return when.timestamp()


def _parse_count(value: Any) -> Any:
    """``200000``, ``200_000``, ``200k`` or ``2M`` as an int; anything else unchanged."""
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        scale = 1
        if text[-1:] in ("k", "K"):
            scale, text = 1000, text[:-1]
        elif text[-1:] == "M":
            scale, text = 1_000_000, text[:-1]
        if text.isdigit():
            return int(text) * scale
    return value


def _parse_seconds(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return value
    return value


def _parse_window(value: Any) -> Any:
    """``"150/10s"`` (or ``"150/10"``, ``[150, 10]``) as ``(150, 10.0)``."""
    if isinstance(value, str):
        count, sep, window = value.partition("/")
        if not sep:
            raise ValueError("write a request window as N/DURATION, e.g. 150/10s")
        try:
            return (_parse_count(count), parse_duration(window))
        except ValueError:
            raise ValueError(
                "write a request window as N/DURATION, e.g. 150/10s or 500/1m"
            ) from None
    return value


Count = Annotated[PositiveInt, BeforeValidator(_parse_count)]
Seconds = Annotated[PositiveFloat, BeforeValidator(_parse_seconds)]
Window = Annotated[tuple[Count, Seconds], BeforeValidator(_parse_window)]


class LimitSpec(BaseModel):
    """The limits of one provider or ``provider/model``; every field is optional.

    ``rps``/``rpm``/``requests`` are request windows (all that are set apply), ``tpm``
    tokens per minute (prompt plus output, estimated then corrected), ``concurrency`` calls
    in flight, ``daily`` requests in any 24 hours, ``block`` how long the provider refuses
    every request after a 429 (Stability: 60 s), used as the least cooldown after one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rps: Count | None = None
    rpm: Count | None = None
    requests: Window | None = None
    tpm: Count | None = None
    concurrency: Count | None = None
    daily: Count | None = None
    block: Seconds | None = None
    burst: Count | None = None
    """Requests that may be sent together. Unset: admissions are spread evenly over the
    strictest request window (one every window/count seconds), so processes that each take
    a share of a limit never exceed it together, even though the provider counts a request
    when it arrives, later than its admission. Set it where the provider allows bursts."""
    share: Count | None = None
    """How many processes split this limit: tokens, the daily cap and concurrency are
    divided by it, and each request window too, less one request kept in hand for arrival
    delays (``stability:rpm=120,share=2`` admits 59 a minute here, spread evenly)."""

    def merged(self, over: LimitSpec) -> LimitSpec:
        """This spec with the fields ``over`` sets explicitly (``None`` included) replaced."""
        return LimitSpec.model_validate(
            {**self.model_dump(), **over.model_dump(include=set(over.model_fields_set))}
        )

    def request_windows(self) -> list[tuple[int, float]]:
        """Every request window as (count, seconds), this process's share of it."""
        windows = []
        if self.rps:
            windows.append((self.rps, 1.0))
        if self.rpm:
            windows.append((self.rpm, 60.0))
        if self.requests:
            windows.append(self.requests)
        if not self.share or self.share == 1:
            return windows
        # Each process keeps one request a window in hand: a provider counts a request when
        # it arrives, and one delayed on its way can land in the window its successor opens.
        return [(max(1, count // self.share - 1), seconds) for count, seconds in windows]

    def _shared(self, count: int) -> int:
        return max(1, count // self.share) if self.share else count

    def local(self, name: Literal["tpm", "concurrency", "daily"]) -> int | None:
        """A count limit (``tpm``, ``concurrency``, ``daily``) as this process's share."""
        value: int | None = getattr(self, name)
        return None if value is None else self._shared(value)

    def spacing(self) -> float:
        """Seconds between admissions when not bursting: the strictest window's count
        spread over its length (0 without a request window)."""
        return max((seconds / count for count, seconds in self.request_windows()), default=0.0)

    def describe(self) -> str:
        """The ``--limits`` form of the fields that are set (``rpm=500,tpm=30000``)."""
        parts = []
        for name, value in self.model_dump(exclude_none=True).items():
            if name == "requests":
                value = f"{value[0]}/{value[1]:g}s"
            elif name == "block":
                value = f"{value:g}s"
            parts.append(f"{name}={value}")
        return ",".join(parts) or "unlimited"


#: Conservative defaults per provider; a user's values override them field by field
#: (``--limits``, the catalog's ``limits:``). Each is the lowest paid tier we could find.
DEFAULT_LIMITS: dict[str, LimitSpec] = {
    # OpenAI usage tier 1, gpt-4o: 500 RPM, 30,000 TPM (platform.openai.com/docs/guides/
    # rate-limits, "usage tiers"; higher tiers and mini models allow far more: override).
    "openai": LimitSpec(rpm=500, tpm=30_000),
    # Anthropic tier 1, Claude Sonnet: 50 RPM, ~40,000 input + 8,000 output tokens per
    # minute (docs.anthropic.com/en/api/rate-limits).
    "anthropic": LimitSpec(rpm=50, tpm=48_000),
    # Stability AI: 150 requests per 10 s, then every request refused for 60 s
    # (Stability support article "API Key Rate Limit Information").
    "stability": LimitSpec(requests=(150, 10.0), block=60.0),
    # Replicate: 600 prediction creates per minute (replicate.com/docs/topics/predictions/
    # rate-limits); polls are not counted (they take `poll=True` slots).
    "replicate": LimitSpec(rpm=600),
    # Azure AI Vision free tier F0: 20 calls per minute (S1: 10 per second, override with
    # azure:rps=10) (learn.microsoft.com, Azure AI Vision pricing and limits).
    "azure_vision": LimitSpec(rpm=20),
    # Hugging Face serverless: the policy its SDK reads, 500 requests per 5 minutes
    # (`RateLimit-Policy: "fixed window";"api";q=500;w=300`).
    "hugging_face": LimitSpec(requests=(500, 300.0)),
    # Runway limits concurrent *generations* and generations per day by tier (tier 1: 1-2
    # concurrent, 50 a day; docs.dev.runwayml.com/usage/tiers). Extra tasks wait on Runway's
    # side (THROTTLED) and the daily cap answers 429, so no default here; set
    # runway:daily=N to stop before it.
    "runway": LimitSpec(),
    # ElevenLabs limits concurrent requests by plan (free 2, starter 3, creator 5, pro 10;
    # a 429 `too_many_concurrent_requests` beyond): the free plan's, override upwards.
    "elevenlabs": LimitSpec(concurrency=2),
    # fal limits requests *in progress* per account (new accounts 2, up to 40 as credits are
    # bought); past it requests wait IN_QUEUE and are never refused (docs.fal.ai/faq,
    # docs.fal.ai/documentation/model-apis/concurrency-limits). Nothing to hold back here.
    "fal": LimitSpec(),
    # Luma, "Build" tier: Ray 10 concurrent generations and 20 creates per minute, Photon 40
    # and 80 (docs.lumalabs.ai/docs/rate-limits). Creates only: polls take poll slots.
    "luma": LimitSpec(),
    "luma/ray-2": LimitSpec(rpm=20),
    "luma/ray-flash-2": LimitSpec(rpm=20),
    "luma/photon-1": LimitSpec(rpm=80),
    "luma/photon-flash-1": LimitSpec(rpm=80),
    # Gemini API: limits are per project and per model, by usage tier, shown in AI Studio
    # rather than published as one table (ai.google.dev/gemini-api/docs/rate-limits); 150 RPM
    # is the lowest paid-tier text-model figure the page has listed (Tier 1, Pro models), so
    # one budget for the whole provider stays under every model's. Preview and video models
    # allow less: set e.g. google/veo-3.1-generate-preview:rpm=2.
    "google": LimitSpec(rpm=150),
}


def _known_providers() -> tuple[str, ...]:
    # Imported here: config imports this module for the catalog's `limits:` section.
    from calliope_graph.config import InferenceModelProvider

    return tuple(p.value for p in InferenceModelProvider)


def _normalise_key(key: str, where: str) -> str:
    provider, slash, model = key.strip().partition("/")
    provider = provider.strip().lower()
    model = model.strip()
    known = _known_providers()
    from calliope_graph.config import InferenceModelProvider

    with contextlib.suppress(ValueError):  # earlier names: azure, huggingface
        provider = InferenceModelProvider(provider).value
    if provider not in known:
        raise ConfigurationError(
            f"{where}: unknown provider {provider!r} in limit key {key!r}; "
            f"use one of {', '.join(known)}, optionally with /MODEL (openai/gpt-4o)."
        )
    if slash and not model:
        raise ConfigurationError(f"{where}: limit key {key!r} has a '/' but no model after it.")
    return f"{provider}/{model}" if model else provider


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _spec_from(values: Mapping[str, Any], where: str) -> LimitSpec:
    unknown = [name for name in values if name not in LimitSpec.model_fields]
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown limit field {unknown[0]!r}. Valid fields: {_FIELDS_HELP}."
        )
    cleaned = {
        name: None if isinstance(v, str) and v.strip().lower() in ("none", "off") else v
        for name, v in values.items()
    }
    try:
        return LimitSpec.model_validate(cleaned)
    except ValidationError as exc:
        raise ConfigurationError(
            f"{where}: {_first_error(exc)}. Valid fields: {_FIELDS_HELP}."
        ) from None


def parse_limits(text: str, *, where: str = "--limits") -> dict[str, LimitSpec]:
    """``"openai:rpm=500,tpm=200000;stability:rps=15;openai/gpt-4o:tpm=30000"`` as specs.

    Keys are a provider or ``provider/model``; groups are separated by ``;``, fields by
    ``,``. A repeated key merges (later fields win). Malformed input raises a
    :class:`ConfigurationError` naming the bad part and listing the valid fields.
    """
    out: dict[str, LimitSpec] = {}
    for raw in text.split(";"):
        group = raw.strip()
        if not group:
            continue
        # The last ':' separates the key from the fields (model names may contain ':').
        key, sep, body = group.rpartition(":")
        if not sep or not key.strip() or "=" in key:
            raise ConfigurationError(
                f"{where}: {group!r} is not PROVIDER[/MODEL]:FIELD=VALUE,...; e.g. {_EXAMPLE}."
            )
        norm = _normalise_key(key, f"{where}: {group!r}")
        values: dict[str, str] = {}
        for item in body.split(","):
            name, eq, value = item.partition("=")
            if not eq or not name.strip() or not value.strip():
                raise ConfigurationError(
                    f"{where}: {group!r}: {item.strip()!r} is not FIELD=VALUE. "
                    f"Valid fields: {_FIELDS_HELP}."
                )
            values[name.strip().lower()] = value.strip()
        spec = _spec_from(values, f"{where}: {group!r}")
        out[norm] = out[norm].merged(spec) if norm in out else spec
    if not out:
        raise ConfigurationError(f"{where}: no limits given; e.g. {_EXAMPLE}.")
    return out


def parse_limit_mapping(data: Any, *, where: str = "limits") -> dict[str, LimitSpec]:
    """The YAML/dict form: ``{openai: {rpm: 500}, "openai/gpt-4o": "tpm=30000"}``.

    Values may be a mapping of fields, a ``"rpm=500,tpm=200000"`` string or a
    :class:`LimitSpec`.
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"{where}: limits are a mapping from provider (or provider/model) to limits, "
            f"got {type(data).__name__}; e.g. limits: {{openai: {{rpm: 500, tpm: 200000}}}}."
        )
    out: dict[str, LimitSpec] = {}
    for key, body in data.items():
        norm = _normalise_key(str(key), where)
        here = f"{where}: {key}"
        if isinstance(body, LimitSpec):
            spec = body
        elif isinstance(body, str):
            spec = parse_limits(f"{norm}:{body}", where=here)[norm]
        elif isinstance(body, Mapping):
            spec = _spec_from({str(k).lower(): v for k, v in body.items()}, here)
        elif body is None:
            spec = LimitSpec()
        else:
            raise ConfigurationError(
                f"{here}: expected a mapping of fields (rpm: 500) or 'rpm=500,...', "
                f"got {type(body).__name__}."
            )
        out[norm] = out[norm].merged(spec) if norm in out else spec
    return out


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """A rough token count of a chat/completions request body, for the ``tpm`` limit.

    Characters / 4 of the messages (OpenAI and Anthropic shapes, ``system``, ``prompt``,
    ``input``), :data:`IMAGE_TOKENS` per image, 4 per message, plus the output allowance
    (``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens``, times ``n``) —
    providers count that up front too. It is only an estimate: :meth:`Slot.used` corrects
    it from the usage the answer reports.
    """
    chars = 0
    images = 0
    overhead = 0

    def add(content: Any) -> None:
        nonlocal chars, images
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, Mapping):
            kind = content.get("type")
            if kind in ("image_url", "image", "input_image"):
                images += 1
            elif isinstance(content.get("text"), str):
                chars += len(content["text"])
            elif "content" in content:
                add(content["content"])
            elif kind not in (None, "text"):
                chars += len(json.dumps(content, default=str))
        elif isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
            for part in content:
                add(part)

    for message in body.get("messages") or []:
        overhead += 4
        if isinstance(message, Mapping):
            add(message.get("content"))
        else:
            add(message)
    for name in ("system", "prompt", "input"):
        if name in body:
            add(body[name])
    output = 0
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            output = value
            break
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        output *= n
    return math.ceil(chars / 4) + images * IMAGE_TOKENS + overhead + output


# --------------------------------------------------------------------------- errors


# DailyCapError lives in calliope_graph.errors (the one error tree); re-exported here.


# --------------------------------------------------------------------------- primitives


class _Gate:
    """A counting semaphore usable from any event loop and thread (capacity None: no cap).

    ``asyncio.Semaphore`` binds to the first loop that waits on it; the process-wide
    limiter outlives loops (one per ``asyncio.run``, per test, per worker thread).
    """

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    async def acquire(self) -> None:
        with self._lock:
            if not self._waiters and (self.capacity is None or self.used < self.capacity):
                self.used += 1
                return
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            entry = (loop, fut)
            self._waiters.append(entry)
        try:
            await fut
        except BaseException:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                elif fut.done() and not fut.cancelled():
                    self._release_locked()  # granted, then cancelled before resuming
            raise

    def release(self) -> None:
        with self._lock:
            self._release_locked()

    def resize(self, capacity: int | None) -> None:
        with self._lock:
            self.capacity = capacity
            while self._waiters and (capacity is None or self.used < capacity):
                self.used += 1
                self._hand_over_locked()
            # A smaller capacity takes effect as calls in flight finish.

    def _release_locked(self) -> None:
        if self._waiters and (self.capacity is None or self.used <= self.capacity):
            self._hand_over_locked()  # the slot passes to the next waiter as it is
        else:
            self.used = max(0, self.used - 1)

    def _hand_over_locked(self) -> None:
        loop, fut = self._waiters.popleft()
        loop.call_soon_threadsafe(self._grant, fut)

    def _grant(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            self.release()  # its waiter went away: pass the slot on
        else:
            fut.set_result(None)


def _request_rates(windows: Iterable[tuple[int, float]]) -> list[Rate]:
    """pyrate-limiter rates for these windows, without the ones another makes redundant.

    pyrate-limiter wants longer windows to allow more in total but less per second; a
    window that breaks that is implied by a neighbour (rps=15 already caps a minute at 900,
    so rpm=1000 adds nothing; rpm=10 makes rps=15 moot) and is dropped.
    """
    rates = sorted(
        (Rate(count, max(1, round(secs * 1000))) for count, secs in windows),
        key=lambda r: (r.interval, r.limit),
    )
    kept: list[Rate] = []
    for rate in rates:
        if kept and rate.interval == kept[-1].interval:
            continue  # same window: the smaller count (sorted first) wins
        if kept and rate.limit / rate.interval >= kept[-1].limit / kept[-1].interval:
            continue  # no tighter per second than a shorter window: implied by it
        while kept and rate.limit <= kept[-1].limit:
            kept.pop()  # this longer window allows no more in total: the shorter is moot
        kept.append(rate)
    return kept


def _take(bucket: InMemoryBucket | StateBucket, name: str, now_ms: int, weight: int) -> int:
    """Put ``weight`` units at ``now_ms``: 0 if admitted, else milliseconds to wait."""
    item = RateItem(name, now_ms, weight)
    admitted = bucket.put(item)
    assert isinstance(admitted, bool)  # in-memory buckets are synchronous
    if admitted:
        return 0
    wait = bucket.waiting(item)
    assert isinstance(wait, int)
    if wait < 0:  # can never fit (callers cap weights, so not expected): a whole window
        return max(rate.interval for rate in bucket.rates)
    return max(wait, 1)


class _Budget:
    """What the provider said is left: ``remaining`` at ``seen``, full again at ``reset``.

    With ``limit`` known the bucket is taken to refill linearly until ``reset`` (OpenAI and
    Anthropic report the time until it is *full*); without it, nothing refills before
    ``reset`` (a fixed window). Slots granted since spend ``remaining`` locally.
    """

    def __init__(self, remaining: float, seen: float, reset: float, limit: float | None) -> None:
        self.remaining = remaining
        self.seen = seen
        self.reset = reset
        self.refill = 0.0
        if limit is not None and limit > remaining and reset > seen:
            self.refill = (limit - remaining) / (reset - seen)
            self.limit: float | None = limit
        else:
            self.limit = None

    def wait_for(self, need: float, now: float) -> float:
        if now >= self.reset or need <= 0:
            return 0.0
        if self.limit is not None:
            need = min(need, self.limit)
            available = min(self.limit, self.remaining + self.refill * (now - self.seen))
            if available >= need:
                return 0.0
            return min(self.reset - now, (need - available) / self.refill)
        return 0.0 if self.remaining >= need else self.reset - now


# --------------------------------------------------------------------------- limiter


@dataclass(frozen=True)
class LimiterStats:
    """A snapshot for progress displays."""

    key: str
    spec: str
    """The limits in force, in the ``--limits`` form (adopted header limits included)."""
    in_flight: int
    """Calls holding a slot now."""
    waiting: int
    """Callers waiting for a slot now."""
    calls: int
    """Slots granted so far."""
    total_waited: float
    """Seconds all callers spent waiting, added up."""
    rate_limited: int
    """429s reported through :meth:`Limiter.note_429`."""
    cooldown: float
    """Seconds of cooldown still to run (0 when none)."""


class Slot:
    """Permission to make one provider call, from one or more limiters.

    Use it as ``async with limiter.slot(tokens=estimate) as slot:``; after the answer,
    ``slot.used(actual_tokens)``. ``waited`` is the seconds spent waiting to get it and
    ``waits`` the same split by reason (cooldown, concurrency, tokens, requests, headers).
    """

    def __init__(
        self,
        limiters: Sequence[Limiter],
        tokens: int = 0,
        *,
        poll: bool = False,
        max_wait: float | None = None,
    ) -> None:
        self.limiters = tuple(limiters)
        self.tokens = max(0, int(tokens))
        self.poll = poll
        self.max_wait = max_wait
        self.waited = 0.0
        self.waits: dict[str, float] = {}
        self._entered: list[Limiter] = []
        self._gated: set[int] = set()
        self._used: int | None = None

    def _add_wait(self, reason: str, seconds: float) -> None:
        if seconds > 0:
            self.waited += seconds
            self.waits[reason] = self.waits.get(reason, 0.0) + seconds

    async def acquire(self) -> Slot:
        """Wait for every limiter in turn; on failure, release what was taken."""
        try:
            for limiter in self.limiters:
                await limiter._enter(self)
                self._entered.append(limiter)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Give the concurrency slots back (idempotent)."""
        while self._entered:
            self._entered.pop()._exit(self)
        for limiter in self.limiters:
            if id(limiter) in self._gated:
                self._gated.discard(id(limiter))
                limiter._gate.release()

    def used(self, tokens: int) -> None:
        """The answer reported ``tokens`` used: refund or charge the difference to the estimate.

        May be called once, inside the ``async with`` or after it.
        """
        if self._used is not None or self.poll:
            return
        self._used = max(0, int(tokens))
        for limiter in self.limiters:
            limiter._settle(self.tokens, self._used)

    async def __aenter__(self) -> Slot:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Limiter:
    """The limits of one key (a provider or ``provider/model``), shared by every caller.

    ``clock`` (seconds, monotonic) and ``sleep`` are injectable so tests use a virtual
    clock: the sleep must advance the clock. ``wall_clock`` (POSIX seconds) converts
    Anthropic's RFC 3339 resets.
    """

    def __init__(
        self,
        key: str,
        spec: LimitSpec | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
    ) -> None:
        self.key = key
        self.provider = key.partition("/")[0]
        self._clock = clock
        self._sleep = sleep
        self._wall = wall_clock
        self._lock = threading.RLock()
        self.configured = spec or LimitSpec()
        self.spec = self.configured
        self._gate = _Gate(self.spec.local("concurrency"))
        self._tat = 0.0  # when the next request is due, if admissions are spread (GCRA)
        self._requests: InMemoryBucket | None = None
        self._tokens: StateBucket | None = None
        self._daily: InMemoryBucket | None = None
        self._cooldown_until = 0.0
        self._budgets: dict[str, _Budget] = {}
        self._token_adjust = 0.0
        self._token_adjust_until = 0.0
        self._stalls = 0
        self._in_flight = 0
        self._waiting = 0
        self._calls = 0
        self._total_waited = 0.0
        self._rate_limited = 0
        #: Windows shared with other processes (DBOS workers), taken after the local ones.
        self.shared: SharedWindowStore | None = None
        self._build(self.spec)

    def __repr__(self) -> str:
        return f"Limiter({self.key!r}, {self.spec.describe()})"

    # ---- configuration

    def reconfigure(self, spec: LimitSpec) -> None:
        """Apply new limits; what was already counted carries over."""
        with self._lock:
            self.configured = spec
            self._apply(spec)

    def _apply(self, spec: LimitSpec) -> None:
        self.spec = spec
        self._build(spec)
        self._gate.resize(spec.local("concurrency"))

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def _build(self, spec: LimitSpec) -> None:
        now_ms = self._now_ms()
        rates = _request_rates(spec.request_windows())
        old_requests, old_tokens, old_daily = self._requests, self._tokens, self._daily
        self._requests = InMemoryBucket(rates) if rates else None
        if self._requests is not None and old_requests is not None:
            old_requests.leak(now_ms)
            self._requests.items = list(old_requests.items)
        self._tokens = (
            StateBucket([Rate(tpm, Duration.MINUTE)], algorithm=TokenBucket())
            if (tpm := spec.local("tpm"))
            else None
        )
        if self._tokens is not None and old_tokens is not None:
            owed = old_tokens.algorithm.consumed(
                old_tokens.rates,
                _sync(old_tokens.store.read(old_tokens.algorithm, old_tokens.rates)),
                now_ms,
            )
            if owed > 0:
                _take(self._tokens, self.key, now_ms, min(owed, self._tokens.rates[0].limit))
        daily = spec.local("daily")
        self._daily = InMemoryBucket([Rate(daily, Duration.DAY)]) if daily else None
        if self._daily is not None and old_daily is not None:
            old_daily.leak(now_ms)
            self._daily.items = list(old_daily.items)

    # ---- the shared cooldown

    def cooldown(self, seconds: float) -> None:
        """Everyone sharing this limiter waits until ``seconds`` from now (never shortens)."""
        if seconds > 0:
            with self._lock:
                self._cooldown_until = max(self._cooldown_until, self._clock() + seconds)

    def note_429(self, retry_after: float | None = None) -> None:
        """A call got a 429: cool everyone down for ``Retry-After`` (at least ``block``)."""
        with self._lock:
            self._rate_limited += 1
            wait = DEFAULT_COOLDOWN if retry_after is None else max(0.0, retry_after)
            if self.spec.block:
                wait = max(wait, self.spec.block)
            self.cooldown(wait)

    # ---- header adaptation

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt to the rate-limit headers of a response (any status). Never raises.

        OpenAI ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (reset a Go-style
        duration), Anthropic ``anthropic-ratelimit-{requests,tokens,input-tokens,
        output-tokens}-{limit,remaining,reset}`` (reset RFC 3339) and the IETF draft
        ``RateLimit: "name";r=0;t=55`` / ``RateLimit-Policy: ...;q=500;w=300``. What is
        left becomes a budget new slots spend; when it runs out they wait for the refill.
        A reported limit lower than the configured one (or where none is) is adopted.
        """
        try:
            h = {str(k).lower(): str(v) for k, v in headers.items()}
            with self._lock:
                self._observe(h)
        except Exception:  # headers are advice; a malformed one must not fail a call
            log.debug("%s: ignoring unreadable rate-limit headers", self.key, exc_info=True)

    def _observe(self, h: dict[str, str]) -> None:
        now = self._clock()
        wall = self._wall()
        budgets: dict[str, _Budget] = {}
        adopt: dict[str, Any] = {}

        def note(kind: str, remaining: str | None, reset: float | None, limit: str | None) -> None:
            lim = float(limit) if limit not in (None, "") else None
            if lim is not None and lim > 0:
                field = "rpm" if kind == "requests" else "tpm"
                current = getattr(self.spec, field)
                value = int(lim)
                if current is None or value < current:
                    adopt[field] = min(value, adopt.get(field, value))
            if remaining in (None, "") or reset is None:
                return
            rem = float(remaining)
            if rem < 0:  # Azure OpenAI sends -1 when it does not say
                return
            budget = _Budget(rem, now, now + max(0.0, reset), lim if lim and lim > 0 else None)
            if kind not in budgets or budgets[kind].remaining > budget.remaining:
                budgets[kind] = budget

        for kind in ("requests", "tokens"):
            reset = h.get(f"x-ratelimit-reset-{kind}")
            note(
                kind,
                h.get(f"x-ratelimit-remaining-{kind}"),
                parse_duration(reset) if reset else None,
                h.get(f"x-ratelimit-limit-{kind}"),
            )
        # Anthropic counts input and output tokens apart (and `tokens` is the tighter of
        # the two), so only its requests limit is adopted and its token budgets hold new
        # calls only once exhausted; our estimate is of both together.
        for kind in ("requests", "input-tokens", "output-tokens"):
            reset = h.get(f"anthropic-ratelimit-{kind}-reset")
            note(
                kind,
                h.get(f"anthropic-ratelimit-{kind}-remaining"),
                parse_rfc3339(reset) - wall if reset else None,
                h.get(f"anthropic-ratelimit-{kind}-limit") if kind == "requests" else None,
            )
        if "ratelimit" in h:
            params = _ietf_params(h["ratelimit"])
            if "r" in params and "t" in params:
                note("requests", params["r"], float(params["t"]), None)
        if "ratelimit-policy" in h:
            params = _ietf_params(h["ratelimit-policy"])
            if "q" in params and "w" in params:
                quota, window = int(params["q"]), float(params["w"])
                current = self.spec.requests
                if (
                    quota > 0
                    and window > 0
                    and (current is None or quota / window < current[0] / current[1])
                ):
                    adopt["requests"] = (quota, window)

        self._budgets.update(budgets)
        if adopt:
            log.info("%s: adopting the provider's reported limits %s", self.key, adopt)
            self._apply(self.spec.merged(LimitSpec.model_validate(adopt)))

    # ---- acquiring

    def slot(self, tokens: int = 0, *, poll: bool = False, max_wait: float | None = None) -> Slot:
        """A slot for one call: ``async with limiter.slot(tokens=estimate) as slot:``.

        ``poll=True`` is for polling a job already started (Replicate, Runway, HF loading):
        it waits out a cooldown but counts against nothing. With ``max_wait``, a single
        wait longer than that raises :class:`RateLimitError` instead of waiting.
        """
        return Slot([self], tokens, poll=poll, max_wait=max_wait)

    async def _pause(self, slot: Slot, reason: str, seconds: float) -> None:
        if slot.max_wait is not None and seconds > slot.max_wait:
            raise RateLimitError(
                f"{self.key}: a call would wait {seconds:.1f} s ({reason}), longer than the "
                f"{slot.max_wait:g} s allowed; try again later or raise the limits "
                f'(--limits "{self.key}:...").',
                provider=self.provider,
                code="local_rate_limit",
                retry_after=seconds,
            )
        before = self._clock()
        await self._sleep(seconds)
        after = self._clock()
        waited = max(0.0, after - before)
        if waited <= 0:
            self._stalls += 1
            if self._stalls > 1000:
                raise RuntimeError(
                    f"limiter {self.key!r}: its sleep does not advance its clock; give "
                    "Limits/Limiter a clock= that the sleep= moves (a virtual clock's now)."
                )
        else:
            self._stalls = 0
        slot._add_wait(reason, waited)
        self._total_waited += waited

    def _hold(self, need_tokens: int, poll: bool) -> tuple[str, float] | None:
        """The longest wait now owed to a cooldown or a header budget, if any."""
        now = self._clock()
        waits: list[tuple[float, str]] = []
        if self._cooldown_until > now:
            waits.append((self._cooldown_until - now, "cooldown"))
        if not poll:
            for kind, budget in list(self._budgets.items()):
                if now >= budget.reset:
                    self._budgets.pop(kind, None)
                    continue
                need = float(need_tokens) if kind == "tokens" else 1.0
                wait = budget.wait_for(need, now)
                if wait > 1e-6:  # below that it is float noise, not a refill to wait for
                    waits.append((wait, "headers"))
        if not waits:
            return None
        seconds, reason = max(waits)
        return reason, seconds

    def _token_weight(self, estimate: int) -> int:
        """The estimate with any pending refund or charge from earlier answers applied."""
        now = self._clock()
        if self._token_adjust and now >= self._token_adjust_until:
            self._token_adjust = 0.0
        weight = estimate + self._token_adjust
        if weight < 0:
            self._token_adjust = weight  # credit left over for the next caller
            weight = 0
        else:
            self._token_adjust = 0.0
        return int(weight)

    async def _enter(self, slot: Slot) -> None:
        self._waiting += 1
        try:
            while (hold := self._hold(0, poll=True)) is not None:
                await self._pause(slot, *hold)
            if slot.poll:
                return
            before = self._clock()
            await self._gate.acquire()
            slot._gated.add(id(self))
            slot._add_wait("concurrency", self._clock() - before)
            took_daily = took_tokens = took_requests = False
            weight = 0
            reason = "requests"
            while True:
                hold = self._hold(slot.tokens, poll=False)
                if hold is not None:
                    await self._pause(slot, *hold)
                    continue
                with self._lock:
                    now_ms = self._now_ms()
                    if self._daily is not None and not took_daily:
                        self._daily.leak(now_ms)
                        wait = _take(self._daily, self.key, now_ms, 1)
                        if wait:
                            cap = self._daily.rates[0].limit
                            raise DailyCapError(
                                f"daily cap of {cap} requests for {self.key} reached; raise it "
                                f'with --limits "{self.key}:daily=N" (or in the catalog\'s '
                                f"limits: section); the next request fits in "
                                f"{wait / 1000:.0f} s.",
                                provider=self.provider,
                                code="daily_cap",
                                retry_after=wait / 1000,
                            )
                        took_daily = True
                    wait = 0
                    if self._tokens is not None and not took_tokens:
                        weight = weight or self._token_weight(slot.tokens)
                        capped = min(weight, self._tokens.rates[0].limit)
                        wait = _take(self._tokens, self.key, now_ms, capped) if capped else 0
                        took_tokens = not wait
                        reason = "tokens"
                    if not wait and self._requests is not None and not took_requests:
                        wait = self._pace(now_ms)
                        if not wait:
                            self._requests.leak(now_ms)
                            wait = _take(self._requests, self.key, now_ms, 1)
                        took_requests = not wait
                        reason = "requests"
                    if not wait:
                        if took_requests:
                            self._paced(now_ms)
                        self._spend(slot.tokens)
                        break
                await self._pause(slot, reason, wait / 1000)
            if self.shared is not None:
                windows, tpm = self.spec.request_windows(), self.spec.local("tpm") or 0
                while wait_s := await self.shared.take(self.key, windows, tpm, slot.tokens):
                    await self._pause(slot, "shared", wait_s)
        except BaseException:
            if id(self) in slot._gated:
                slot._gated.discard(id(self))
                self._gate.release()
            raise
        finally:
            self._waiting -= 1
        self._in_flight += 1
        self._calls += 1

    # GCRA (the generic cell rate algorithm): one timestamp, the request's theoretical
    # arrival time, spaces admissions by the strictest window's interval with a tolerance of
    # burst - 1 intervals. pyrate-limiter has no GCRA and no spacing within a window (its
    # buckets admit a whole window at once), so these few lines are ours.
    def _pace(self, now_ms: int) -> int:
        """Milliseconds until a request may go without bursting past ``burst``."""
        interval = self.spec.spacing()
        if not interval:
            return 0
        tolerance = (self.spec.burst or 1) - 1
        due = max(self._tat, now_ms / 1000) - tolerance * interval
        return max(0, math.ceil((due - now_ms / 1000) * 1000))

    def _paced(self, now_ms: int) -> None:
        self._tat = max(self._tat, now_ms / 1000) + self.spec.spacing()

    def _exit(self, slot: Slot) -> None:
        if not slot.poll:
            self._in_flight = max(0, self._in_flight - 1)

    def _spend(self, tokens: int) -> None:
        if (budget := self._budgets.get("requests")) is not None:
            budget.remaining -= 1
        if tokens and (budget := self._budgets.get("tokens")) is not None:
            budget.remaining -= tokens

    def _settle(self, estimate: int, actual: int) -> None:
        diff = actual - estimate
        if not diff:
            return
        with self._lock:
            if (budget := self._budgets.get("tokens")) is not None:
                budget.remaining -= diff
            if self._tokens is None:
                return
            now = self._clock()
            if diff > 0:
                # Charge now if it fits, else the next caller pays it.
                capped = min(diff, self._tokens.rates[0].limit)
                if _take(self._tokens, self.key, self._now_ms(), capped) == 0:
                    return
            if self._token_adjust and now >= self._token_adjust_until:
                self._token_adjust = 0.0
            # Either way it is forgotten after a minute, when the bucket has refilled.
            self._token_adjust += diff
            self._token_adjust_until = now + _TOKEN_WINDOW

    def stats(self) -> LimiterStats:
        return LimiterStats(
            key=self.key,
            spec=self.spec.describe(),
            in_flight=self._in_flight,
            waiting=self._waiting,
            calls=self._calls,
            total_waited=self._total_waited,
            rate_limited=self._rate_limited,
            cooldown=max(0.0, self._cooldown_until - self._clock()),
        )


def _sync(value: Any) -> Any:
    assert not isinstance(value, Awaitable)  # in-memory stores are synchronous
    return value


_IETF_PARAM = re.compile(r";\s*([a-z]+)\s*=\s*([0-9.]+)")


def _ietf_params(value: str) -> dict[str, str]:
    """``r``/``t`` (or ``q``/``w``) of the first item of an IETF RateLimit(-Policy) header."""
    first = value.split(",")[0]
    return {m.group(1): m.group(2) for m in _IETF_PARAM.finditer(first)}


# --------------------------------------------------------------------------- registry


class SharedWindowStore(Protocol):
    """Request windows and token budgets kept outside the process (see
    ``calliope_graph.batch._shared.SharedWindows``)."""

    async def take(
        self, key: str, windows: Sequence[tuple[int, float]], tpm: int, tokens: int
    ) -> float:
        """0.0 when the request was admitted (and recorded), else seconds to wait."""
        ...


class CallLimits:
    """The limiters that apply to one call: the provider's, then ``provider/model``'s.

    Observations and 429s go to the most specific one (provider limits such as OpenAI's are
    per model; with no model limiter configured the provider's stands for all its models).
    """

    def __init__(self, limiters: Sequence[Limiter]) -> None:
        self.limiters = tuple(limiters)

    def __repr__(self) -> str:
        return f"CallLimits({', '.join(repr(limiter) for limiter in self.limiters)})"

    def slot(self, tokens: int = 0, *, poll: bool = False, max_wait: float | None = None) -> Slot:
        """See :meth:`Limiter.slot`; waits for every limiter in turn."""
        return Slot(self.limiters, tokens, poll=poll, max_wait=max_wait)

    def observe(self, headers: Mapping[str, str]) -> None:
        self.limiters[-1].observe(headers)

    def note_429(self, retry_after: float | None = None) -> None:
        self.limiters[-1].note_429(retry_after)


LimitsSource = Mapping[str, "LimitSpec | Mapping[str, Any] | str | None"] | str


class Limits:
    """The registry: one :class:`Limiter` per key, made on first use.

    ``Limits()`` starts from :data:`DEFAULT_LIMITS` (``defaults=False``: from nothing) and
    ``specs`` (a mapping or a ``parse_limits`` string) overrides them field by field.
    :func:`shared` is the process-wide one the engines use; build your own for tests.
    """

    def __init__(
        self,
        specs: LimitsSource | None = None,
        *,
        defaults: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._specs: dict[str, LimitSpec] = dict(DEFAULT_LIMITS) if defaults else {}
        self._limiters: dict[str, Limiter] = {}
        self._shared: SharedWindowStore | None = None
        if specs is not None:
            self.configure(specs)

    def __repr__(self) -> str:
        body = "; ".join(f"{k}:{v.describe()}" for k, v in sorted(self._specs.items()))
        return f"Limits({body!r})"

    def configure(self, specs: LimitsSource, *, where: str = "limits") -> Limits:
        """Override limits (a mapping, a catalog's ``limits``, or a ``--limits`` string).

        Fields given replace the current ones; others stay. Live limiters follow at once.
        """
        parsed = (
            parse_limits(specs, where=where)
            if isinstance(specs, str)
            else parse_limit_mapping(specs, where=where)
        )
        with self._lock:
            for key, spec in parsed.items():
                merged = self._specs.get(key, LimitSpec()).merged(spec)
                self._specs[key] = merged
                if key in self._limiters:
                    self._limiters[key].reconfigure(merged)
        return self

    def spec(self, key: str) -> LimitSpec:
        """The configured limits of ``key`` (empty when none)."""
        return self._specs.get(key, LimitSpec())

    def limiter(self, key: str) -> Limiter:
        """The limiter of ``key`` (a provider or ``provider/model``), made on first use."""
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = Limiter(
                    key,
                    self._specs.get(key, LimitSpec()),
                    clock=self._clock,
                    sleep=self._sleep,
                    wall_clock=self._wall,
                )
                limiter.shared = self._shared
                self._limiters[key] = limiter
            return limiter

    def share(self, store: SharedWindowStore | None) -> Limits:
        """Also take every request window and token budget from ``store`` (windows shared
        by processes: the DBOS workers of a batch), so the limits hold for them together."""
        with self._lock:
            self._shared = store
            for limiter in self._limiters.values():
                limiter.shared = store
        return self

    def for_call(self, provider: str, model: str | None = None) -> CallLimits:
        """What applies to a call: always the provider's limiter (so cooldowns and headers
        work even without configured limits), plus ``provider/model``'s when configured."""
        name = str(getattr(provider, "value", provider)).lower()
        limiters = [self.limiter(name)]
        if model and f"{name}/{model}" in self._specs:
            limiters.append(self.limiter(f"{name}/{model}"))
        return CallLimits(limiters)

    def note_429(
        self, provider: str, retry_after: float | None = None, model: str | None = None
    ) -> None:
        """A call to ``provider`` (``model``) got a 429: cool its limiter down, and count it."""
        self.for_call(provider, model).note_429(retry_after)

    def observe(self, provider: str, headers: Mapping[str, str], model: str | None = None) -> None:
        """Adapt ``provider``'s (``model``'s) limiter to a response's rate-limit headers."""
        self.for_call(provider, model).observe(headers)

    def stats(self) -> dict[str, LimiterStats]:
        """Per key, for the limiters used so far."""
        with self._lock:
            limiters = list(self._limiters.values())
        return {limiter.key: limiter.stats() for limiter in limiters}


_shared: Limits | None = None
_shared_lock = threading.Lock()


def shared() -> Limits:
    """The process-wide registry every engine call goes through (made on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Limits()
        return _shared
