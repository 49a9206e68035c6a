"""The simulator's rate limits: what a provider counts, and when it says "too many".

The engines' limiter (:mod:`calliope_graph.limits`) decides how long *we* wait; this module
decides, on the provider's side, whether a request is over the limit. Same configuration
(:class:`~calliope_graph.limits.LimitSpec`, :func:`~calliope_graph.limits.parse_limits`),
different job, so its own tiny counters: exact sliding-window logs on the simulator's
injectable clock, deterministic and without sleeping (pyrate-limiter's buckets answer "wait
or not" but not "how many are left and when is the window fully replenished", which the
providers' headers report).

Requests that are refused are not counted (only admitted ones fill a window), so the
``Retry-After`` a 429 names is exactly when a retry is admitted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from calliope_graph.errors import ConfigurationError
from calliope_graph.limits import LimitSpec, parse_limit_mapping, parse_limits
from calliope_graph.simulate._fakes import fake_names

__all__ = [
    "Budget",
    "LimitHeaders",
    "ProviderLimits",
    "Refusal",
    "WindowCounter",
    "go_duration",
    "parse_simulate_limits",
]

_DAY = 86_400.0
_MINUTE = 60.0
#: What a refusal for concurrency names as its wait (the provider cannot know better).
_CONCURRENCY_WAIT = 1.0


def parse_simulate_limits(
    text: str | Mapping[str, Any], *, where: str = "--simulate-limits"
) -> dict[str, LimitSpec]:
    """The simulator's limits from ``"stability:rpm=60;openai:rpm=500,tpm=200000"`` or a dict.

    The syntax is :func:`calliope_graph.limits.parse_limits`' (``rps``, ``rpm``,
    ``requests=N/DURATION``, ``tpm``, ``concurrency``, ``daily``, ``block``), keyed by a
    provider or ``provider/model``; a mapping may be ``{"openai": {"rpm": 500}}``. Raises a
    :class:`ConfigurationError` naming the bad part (the CLI shows it as a usage error).
    """
    specs = (
        parse_limits(text, where=where)
        if isinstance(text, str)
        else parse_limit_mapping(text, where=where)
    )
    served = fake_names()
    for key in specs:
        provider = key.partition("/")[0]
        if provider not in served:
            raise ConfigurationError(
                f"{where}: the simulator has no {provider!r} provider to limit; "
                f"limit one of {', '.join(served)}."
            )
    return specs


def go_duration(seconds: float) -> str:
    """``seconds`` as Go prints a duration, the way OpenAI's reset headers read: ``6m0s``,
    ``1.5s``, ``12ms``, ``0s`` (rounded up to whole milliseconds)."""
    ms = max(math.ceil(round(seconds * 1000, 6)), 0)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _per(seconds: float) -> str:
    """``60.0`` → ``"minute"``, ``10.0`` → ``"10 seconds"``."""
    names = {1.0: "second", _MINUTE: "minute", 3600.0: "hour", _DAY: "day"}
    return names.get(seconds, f"{seconds:g} seconds")


class WindowCounter:
    """An exact sliding-window log: at most ``limit`` (weighted) units in any ``seconds``."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._log: deque[tuple[float, int]] = deque()
        self._used = 0

    def _expire(self, now: float) -> None:
        # An entry made at t frees its room at t + seconds exactly (a retry after the
        # Retry-After it was told is admitted).
        while self._log and self._log[0][0] + self.seconds <= now:
            self._used -= self._log.popleft()[1]

    def used(self, now: float) -> int:
        self._expire(now)
        return self._used

    def wait(self, now: float, weight: int = 1) -> float:
        """Seconds until ``weight`` more fits (0: it fits now). A weight above the limit
        never fits; its wait is the whole window."""
        self._expire(now)
        if self._used + weight <= self.limit:
            return 0.0
        if weight > self.limit:
            return self.seconds
        freed = 0
        for stamp, amount in self._log:
            freed += amount
            if self._used - freed + weight <= self.limit:
                return stamp + self.seconds - now
        return self.seconds  # pragma: no cover - the loop always frees enough

    def add(self, now: float, weight: int = 1) -> None:
        if weight > 0:
            self._log.append((now, weight))
            self._used += weight

    def reset(self, now: float) -> float:
        """Seconds until the window is fully replenished (the providers' "reset")."""
        self._expire(now)
        return self._log[-1][0] + self.seconds - now if self._log else 0.0


@dataclass(frozen=True)
class Refusal:
    """Why a request is over the limit: the resource, its numbers, and how long to wait."""

    retry_after: float
    resource: Literal["requests", "tokens", "concurrency"]
    limit: int
    used: int
    requested: int
    seconds: float

    def values(self, model: str | None) -> dict[str, str]:
        """The placeholders a fake's ``rate_limited`` :class:`Failure` may use."""
        wait = max(self.retry_after, 0.0)
        if self.resource == "tokens":
            window = "tokens per min (TPM)"
        elif self.resource == "concurrency":
            window = "concurrent requests"
        elif self.seconds == _MINUTE:
            window = "requests per min (RPM)"
        elif self.seconds == _DAY:
            window = "requests per day (RPD)"
        else:
            window = f"requests per {_per(self.seconds)}"
        unit = "concurrent requests" if self.resource == "concurrency" else self.resource
        return {
            "retry_after": str(max(math.ceil(round(wait, 6)), 1 if wait > 0 else 0)),
            "retry_after_ms": str(math.ceil(round(wait * 1000, 6))),
            "wait": go_duration(wait),
            "limit": str(self.limit),
            "used": str(self.used),
            "requested": str(self.requested),
            "resource": self.resource,
            "unit": unit,
            "per": _per(self.seconds),
            "window": window,
            "window_seconds": f"{self.seconds:g}",
            "model": model or "requests",
        }


@dataclass(frozen=True)
class Budget:
    """What is left of one resource, for the providers' rate-limit headers."""

    resource: Literal["requests", "tokens"]
    limit: int
    remaining: int
    reset: float


@dataclass(frozen=True)
class LimitHeaders:
    """How a provider reports its limits on every response, as data.

    ``name`` is a header-name template with ``{field}`` (``limit``, ``remaining``,
    ``reset``) and ``{resource}`` (``requests``, ``tokens``); ``reset`` is how the reset is
    written: ``"duration"`` (OpenAI: a Go duration until full, ``6m0s``) or ``"rfc3339"``
    (Anthropic: the moment it is full, ``2025-01-01T12:01:00Z``).
    """

    name: str
    reset: Literal["duration", "rfc3339"]

    def render(self, budgets: list[Budget], wall_now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for budget in budgets:
            if self.reset == "duration":
                reset = go_duration(budget.reset)
            else:
                moment = math.ceil(round(wall_now + budget.reset, 6))
                reset = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            for field, value in (
                ("limit", str(budget.limit)),
                ("remaining", str(budget.remaining)),
                ("reset", reset),
            ):
                headers[self.name.format(field=field, resource=budget.resource)] = value
        return headers


Clock = Callable[[], float]


class ProviderLimits:
    """One provider's (or ``provider/model``'s) limits as the provider enforces them.

    ``block``: after a refusal every request is refused for that long (Stability's 60 s).
    ``concurrency`` counts requests in flight (``None`` when the fake counts something else,
    such as Runway's running tasks).
    """

    def __init__(self, spec: LimitSpec, *, block: float | None, concurrency: bool = True) -> None:
        self.spec = spec
        self.windows = [WindowCounter(n, s) for n, s in spec.request_windows()]
        if spec.daily:
            self.windows.append(WindowCounter(spec.daily, _DAY))
        self.tokens = WindowCounter(spec.tpm, _MINUTE) if spec.tpm else None
        self.block = spec.block if spec.block is not None else block
        self.concurrency = spec.concurrency if concurrency else None
        self.in_flight = 0
        self._blocked_until = -math.inf
        self._blocked_for: Refusal | None = None

    @property
    def counts_tokens(self) -> bool:
        return self.tokens is not None

    def check(self, now: float, tokens: int) -> Refusal | None:
        """Why a request of ``tokens`` is refused now, or None if it is admitted."""
        if now < self._blocked_until and self._blocked_for is not None:
            return replace(self._blocked_for, retry_after=self._blocked_until - now)
        refusals: list[Refusal] = []
        if self.concurrency is not None and self.in_flight >= self.concurrency:
            refusals.append(
                Refusal(_CONCURRENCY_WAIT, "concurrency", self.concurrency, self.in_flight, 1, 0.0)
            )
        for window in self.windows:
            wait = window.wait(now)
            if wait > 0:
                used = window.used(now)
                refusals.append(Refusal(wait, "requests", window.limit, used, 1, window.seconds))
        if self.tokens is not None and tokens:
            wait = self.tokens.wait(now, tokens)
            if wait > 0:
                used = self.tokens.used(now)
                refusals.append(
                    Refusal(wait, "tokens", self.tokens.limit, used, tokens, self.tokens.seconds)
                )
        if not refusals:
            return None
        refusal = max(refusals, key=lambda r: r.retry_after)
        if self.block:
            refusal = replace(refusal, retry_after=max(refusal.retry_after, self.block))
            self._blocked_until = now + refusal.retry_after
            self._blocked_for = refusal
        return refusal

    def admit(self, now: float, tokens: int) -> None:
        for window in self.windows:
            window.add(now)
        if self.tokens is not None:
            self.tokens.add(now, tokens)

    def budgets(self, now: float) -> list[Budget]:
        """Requests (the per-minute window if there is one) and tokens left, with resets."""
        out: list[Budget] = []
        requests = [w for w in self.windows if w.seconds != _DAY]
        if requests:
            window = next((w for w in requests if w.seconds == _MINUTE), requests[0])
            left = max(window.limit - window.used(now), 0)
            out.append(Budget("requests", window.limit, left, window.reset(now)))
        if self.tokens is not None:
            left = max(self.tokens.limit - self.tokens.used(now), 0)
            out.append(Budget("tokens", self.tokens.limit, left, self.tokens.reset(now)))
        return out
