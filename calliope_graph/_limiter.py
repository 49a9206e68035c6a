"""One key's limiter (:class:`Limiter`) and the :class:`Slot` a call waits for.

Part of :mod:`calliope_graph.limits` (import the public names from there; its docstring
says in which order a slot waits and why).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from pyrate_limiter import Duration, InMemoryBucket, Rate, StateBucket, TokenBucket

from calliope_graph._limit_spec import (
    _TOKEN_WINDOW,
    DEFAULT_COOLDOWN,
    LimitSpec,
    parse_duration,
    parse_rfc3339,
)
from calliope_graph._pacing import _Budget, _Gate, _ietf_params, _request_rates, _sync, _take
from calliope_graph.errors import DailyCapError, RateLimitError

log = logging.getLogger("calliope_graph.limits")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class SharedWindowStore(Protocol):
    """Request windows and token budgets kept outside the process (see
    ``calliope_graph.batch._shared.SharedWindows``)."""

    async def take(
        self, key: str, windows: Sequence[tuple[int, float]], tpm: int, tokens: int
    ) -> float:
        """0.0 when the request was admitted (and recorded), else seconds to wait."""
        ...


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
