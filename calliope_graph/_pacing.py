"""The hand-written pacing primitives of :mod:`calliope_graph.limits`: a concurrency gate
usable from any loop and thread, pyrate-limiter window helpers, and the budget a provider's
rate-limit headers report.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pyrate_limiter import InMemoryBucket, Rate, RateItem, StateBucket

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# --------------------------------------------------------------------------- primitives


class _Gate:
    """A counting semaphore usable from any event loop and thread (capacity None: no cap).

    ``asyncio.Semaphore`` binds to the first loop that waits on it; a session's
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


def _sync(value: Any) -> Any:
    assert not isinstance(value, Awaitable)  # in-memory stores are synchronous
    return value


_IETF_PARAM = re.compile(r";\s*([a-z]+)\s*=\s*([0-9.]+)")


def _ietf_params(value: str) -> dict[str, str]:
    """``r``/``t`` (or ``q``/``w``) of the first item of an IETF RateLimit(-Policy) header."""
    first = value.split(",")[0]
    return {m.group(1): m.group(2) for m in _IETF_PARAM.finditer(first)}
