"""Shared per-provider rate limits: one limiter per provider (and per model) per session.

Every provider call of a :class:`~calliope_graph.session.Session`'s runs goes through the
:class:`Limiter` of its provider in the session's :class:`Limits`, and also through that of
``provider/model`` when one is configured, so batches, concurrent ``ainvoke`` calls and map
items all share one budget (a flow whose catalog sets ``limits:`` waits on the session's
:meth:`Limits.overlay` of them). A limiter makes a caller wait, in
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
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from calliope_graph._limit_spec import (
    DEFAULT_LIMITS,
    LimitSpec,
    estimate_tokens,
    parse_duration,
    parse_limit_mapping,
    parse_limits,
    parse_rfc3339,
)
from calliope_graph._limiter import (
    Limiter,
    LimiterStats,
    SharedWindowStore,
    Slot,
)
from calliope_graph.errors import DailyCapError  # re-exported: where it was defined before

__all__ = [
    "DEFAULT_LIMITS",
    "CallLimits",
    "DailyCapError",
    "LimitSpec",
    "Limiter",
    "LimiterStats",
    "Limits",
    "LimitsSource",
    "SharedWindowStore",
    "Slot",
    "default_limits",
    "estimate_tokens",
    "parse_duration",
    "parse_limit_mapping",
    "parse_limits",
    "parse_rfc3339",
]

log = logging.getLogger("calliope_graph.limits")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# --------------------------------------------------------------------------- registry


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
    A :class:`~calliope_graph.session.Session` owns one (every run of the session waits on
    it); a flow whose model catalog has a ``limits:`` section waits on the session's
    :meth:`overlay` of it, so two flows with different limits each keep their own.
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
        self._overlays: dict[tuple[tuple[str, str], ...], Limits] = {}
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
            overlays = list(self._overlays.values())
        for overlay in overlays:
            overlay.share(store)
        return self

    def overlay(self, specs: Mapping[str, LimitSpec], *, where: str = "limits") -> Limits:
        """These limits with ``specs`` on top (field by field), as a registry of its own:
        what a flow whose catalog sets ``limits:`` waits on. Made once per distinct
        ``specs`` (flows with the same catalog limits share it) on the same clock, sleep and
        shared windows; ``specs`` empty: these limits themselves."""
        if not specs:
            return self
        key = tuple(sorted((k, v.describe()) for k, v in specs.items()))
        with self._lock:
            found = self._overlays.get(key)
            if found is None:
                found = Limits(
                    defaults=False, clock=self._clock, sleep=self._sleep, wall_clock=self._wall
                )
                found._specs = dict(self._specs)
                found._shared = self._shared
                found.configure(dict(specs), where=where)
                self._overlays[key] = found
        return found

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


# --------------------------------------------------------------------------- the default


def _new_default() -> Limits:
    """The default limits when first needed (tests swap this for a virtual clock)."""
    return Limits()


_default: Limits | None = None
_default_lock = threading.Lock()


def default_limits() -> Limits:
    """The limits of runs that name no session: those of
    :func:`calliope_graph.session.default_session`, and of a run context made without any
    (``RunContext.create(...)``), so such runs share one budget per process. Made on first
    use and read-only to the library: sessions made by the CLI, batches, workers and the
    server have limits of their own. Kept here, below the run context and the session, so
    that neither has to import the other to find them."""
    global _default
    with _default_lock:
        if _default is None:
            _default = _new_default()
        return _default
