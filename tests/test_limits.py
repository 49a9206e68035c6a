"""Shared per-provider rate limits: parsing, windows, concurrency, cooldowns, headers.

Every limiter here runs on a virtual clock (``VirtualClock``): its sleep moves the clock
and returns at once, so nothing really sleeps and waits are asserted in virtual seconds.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from calliope_graph.config import ModelCatalog
from calliope_graph.errors import ConfigurationError, RateLimitError, error_class
from calliope_graph.limits import (
    DEFAULT_LIMITS,
    CallLimits,
    DailyCapError,
    Limiter,
    Limits,
    LimitSpec,
    estimate_tokens,
    parse_duration,
    parse_limits,
    parse_rfc3339,
)
from calliope_graph.session import Session, default_session


class VirtualClock:
    """``clock()`` reads virtual time; ``await clock.sleep(s)`` moves it on by ``s`` at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


def registry(
    vclock: VirtualClock, specs: str | None = None, *, wall: float = 1_700_000_000.0
) -> Limits:
    return Limits(specs, defaults=False, clock=vclock, sleep=vclock.sleep, wall_clock=lambda: wall)


# --------------------------------------------------------------------------- parsing


def test_parse_limits_reads_providers_models_and_every_field() -> None:
    specs = parse_limits(
        "openai:rpm=500,tpm=200000; stability:rps=15,block=60s;openai/gpt-4o:tpm=30k;"
        "OpenAI/llama3:8b:concurrency=2,daily=1_000;huggingface:requests=150/10s"
    )
    assert specs["openai"] == LimitSpec(rpm=500, tpm=200_000)
    assert specs["stability"] == LimitSpec(rps=15, block=60.0)
    assert specs["openai/gpt-4o"] == LimitSpec(tpm=30_000)
    # Model names may hold ':' (Ollama tags); the provider is case-insensitive.
    assert specs["openai/llama3:8b"] == LimitSpec(concurrency=2, daily=1000)
    assert specs["hugging_face"].requests == (150, 10.0)


def test_user_limits_override_the_defaults_field_by_field() -> None:
    limits = Limits("openai:rpm=5;stability:block=none")
    assert limits.spec("openai") == LimitSpec(rpm=5, tpm=DEFAULT_LIMITS["openai"].tpm)
    assert limits.spec("stability").block is None
    assert limits.spec("stability").requests == DEFAULT_LIMITS["stability"].requests
    assert Limits("openai:tpm=off").spec("openai").tpm is None


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("openai", ["'openai'", "PROVIDER[/MODEL]:FIELD=VALUE"]),
        ("openai:rpx=5", ["'rpx'", "Valid fields", "rpm", "tpm", "concurrency", "daily"]),
        ("openai:rpm=0", ["openai:rpm=0", "rpm", "greater than 0", "Valid fields"]),
        ("openai:rpm=lots", ["openai:rpm=lots", "rpm", "Valid fields"]),
        ("openai:rpm", ["'rpm' is not FIELD=VALUE"]),
        ("openai:rpm=5,,tpm=3", ["'' is not FIELD=VALUE"]),
        ("opnai:rpm=5", ["unknown provider 'opnai'", "openai", "stability"]),
        ("openai/:rpm=5", ["no model"]),
        ("stability:requests=150", ["N/DURATION", "150/10s"]),
        ("stability:block=soon", ["block", "Valid fields"]),
        (" ; ", ["no limits given"]),
    ],
)
def test_malformed_limits_name_the_bad_part(text: str, names: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_limits(text)
    message = str(info.value)
    assert message.startswith("--limits: ")
    for name in names:
        assert name in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("12ms", 0.012), ("1h2m3.5s", 3723.5), ("2s", 2.0), ("0.5", 0.5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "-1", "1s2"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_rfc3339() -> None:
    assert parse_rfc3339("1970-01-01T00:01:00Z") == 60.0
    assert parse_rfc3339("1970-01-01T01:00:30.5+01:00") == 30.5


def test_token_estimate_counts_text_images_and_the_output_allowance() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "x" * 400},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "y" * 40},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                ],
            },
        ],
        "max_tokens": 500,
    }
    assert estimate_tokens(body) == 100 + 10 + 765 + 2 * 4 + 500
    anthropic = {"system": "s" * 8, "messages": [{"role": "user", "content": "hi"}]}
    assert estimate_tokens({**anthropic, "max_tokens": 10}) == 3 + 4 + 10
    assert estimate_tokens({"prompt": "abcd", "max_tokens": 5, "n": 2}) == 1 + 10
    assert estimate_tokens({}) == 0


# --------------------------------------------------------------------------- windows


async def test_the_call_past_the_window_waits_for_it(vclock: VirtualClock) -> None:
    limiter = registry(vclock, "openai:rpm=3,burst=3").for_call("openai")
    slots = []
    for _ in range(4):
        async with limiter.slot() as slot:
            slots.append(slot)
    assert [s.waited for s in slots[:3]] == [0.0, 0.0, 0.0]
    # The 4th waits until the first call leaves the one-minute window.
    assert slots[3].waited == pytest.approx(60.0, abs=0.01)
    assert set(slots[3].waits) == {"requests"}
    assert sum(vclock.sleeps) == pytest.approx(60.0, abs=0.01)


async def test_several_windows_apply_together(vclock: VirtualClock) -> None:
    limiter = registry(vclock, "stability:rps=2,requests=3/10s,burst=3").limiter("stability")
    waited = []
    for _ in range(4):
        async with limiter.slot() as slot:
            waited.append(round(slot.waited, 2))
    # two in the first second, the third a second later, the fourth when 10 s have passed
    assert waited == [0.0, 0.0, pytest.approx(1.0, abs=0.01), pytest.approx(9.0, abs=0.01)]


async def test_concurrency_is_capped(vclock: VirtualClock) -> None:
    limits = registry(vclock, "runway:concurrency=2")
    limiter = limits.for_call("runway")
    # A barrier of two: with a cap below 2 this would hang, above 2 `peak` would show it.
    barrier = asyncio.Barrier(2)
    inside = 0
    peak = 0
    seen: list[int] = []

    async def call() -> None:
        nonlocal inside, peak
        async with limiter.slot():
            inside += 1
            peak = max(peak, inside)
            seen.append(limits.stats()["runway"].in_flight)
            await asyncio.wait_for(barrier.wait(), timeout=5)
            inside -= 1

    await asyncio.gather(*(call() for _ in range(6)))
    assert peak == 2
    assert max(seen) == 2
    stats = limits.stats()["runway"]
    assert (stats.calls, stats.in_flight, stats.waiting) == (6, 0, 0)


async def test_a_cancelled_waiter_gives_its_turn_away(vclock: VirtualClock) -> None:
    limiter = registry(vclock, "runway:concurrency=1").limiter("runway")
    first = await limiter.slot().acquire()
    waiter = asyncio.create_task(limiter.slot().acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    first.release()
    async with limiter.slot() as slot:  # not blocked by the cancelled one
        assert slot.waited == 0.0


def test_the_concurrency_gate_works_across_event_loops(vclock: VirtualClock) -> None:
    # The process-wide registry outlives event loops (one per asyncio.run, per test).
    limiter = registry(vclock, "runway:concurrency=1").limiter("runway")

    async def contend() -> int:
        async def one() -> None:
            async with limiter.slot():
                await asyncio.sleep(0)

        await asyncio.gather(one(), one(), one())
        return limiter.stats().calls

    assert asyncio.run(contend()) == 3
    assert asyncio.run(contend()) == 6


# --------------------------------------------------------------------------- 429s


async def test_a_429_makes_every_other_caller_wait(vclock: VirtualClock) -> None:
    limits = registry(vclock)
    limiter = limits.for_call("openai", "gpt-4o")
    started = vclock.now

    async def other() -> float:
        async with limiter.slot():
            return vclock.now - started

    async with limiter.slot():
        # This call got a 429 with Retry-After: 5; others already queued or arriving wait.
        limits.note_429("openai", 5.0, model="gpt-4o")
        times = await asyncio.gather(other(), other(), limiter_poll(limiter, vclock, started))
    assert all(t >= 5.0 for t in times)
    stats = limits.stats()["openai"]
    assert stats.rate_limited == 1
    assert stats.total_waited >= 5.0


async def limiter_poll(limiter: CallLimits, vclock: VirtualClock, started: float) -> float:
    async with limiter.slot(poll=True):  # polling a started job waits out a cooldown too
        pass
    return vclock.now - started


async def test_stability_blocks_for_a_minute_after_a_429(vclock: VirtualClock) -> None:
    limits = Limits(defaults=True, clock=vclock, sleep=vclock.sleep)
    limits.note_429("stability")  # no Retry-After: the documented 60 s block applies
    async with limits.for_call("stability", "core").slot() as slot:
        assert slot.waited == pytest.approx(60.0)
        assert slot.waits.keys() == {"cooldown"}


async def test_a_wait_longer_than_allowed_fails_at_once(vclock: VirtualClock) -> None:
    limits = registry(vclock)
    limits.note_429("anthropic", 600.0)
    with pytest.raises(RateLimitError) as info:
        async with limits.for_call("anthropic").slot(max_wait=120.0):
            pass
    assert info.value.retry_after == pytest.approx(600.0)
    assert "anthropic" in str(info.value) and "600" in str(info.value)
    assert vclock.sleeps == []


# --------------------------------------------------------------------------- tokens


async def test_a_smaller_answer_refunds_its_estimate(vclock: VirtualClock) -> None:
    limiter = registry(vclock, "openai:tpm=1000").limiter("openai")
    async with limiter.slot(tokens=800) as slot:
        slot.used(200)
    # 800 charged, 600 refunded: 700 more fit at once (without the refund: a 30 s wait).
    async with limiter.slot(tokens=700) as slot:
        assert slot.waited == 0.0


async def test_a_bigger_answer_is_charged(vclock: VirtualClock) -> None:
    limiter = registry(vclock, "openai:tpm=1000").limiter("openai")
    async with limiter.slot(tokens=100) as slot:
        slot.used(900)
    # 900 used of 1000 a minute: 500 more must wait for 400 to refill (24 s).
    async with limiter.slot(tokens=500) as slot:
        assert slot.waited == pytest.approx(24.0, abs=0.01)
        assert slot.waits.keys() == {"tokens"}


async def test_a_request_bigger_than_the_limit_waits_for_a_full_bucket(
    vclock: VirtualClock,
) -> None:
    limiter = registry(vclock, "openai:tpm=1000").limiter("openai")
    async with limiter.slot(tokens=600):
        pass
    async with limiter.slot(tokens=5000) as slot:  # never fits: waits for all 1000
        assert slot.waited == pytest.approx(36.0, abs=0.01)


# --------------------------------------------------------------------------- headers


async def test_openai_headers_delay_the_next_call_until_the_reset(vclock: VirtualClock) -> None:
    limits = registry(vclock)
    limiter = limits.for_call("openai", "gpt-4o")
    async with limiter.slot():
        pass
    limiter.observe(
        httpx.Headers({"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "2s"})
    )
    async with limiter.slot() as slot:
        assert slot.waited == pytest.approx(2.0)
        assert slot.waits.keys() == {"headers"}
    async with limiter.slot() as slot:  # the reset has passed: nothing is known to hold it
        assert slot.waited == 0.0


async def test_openai_remaining_is_spent_locally_then_refills(vclock: VirtualClock) -> None:
    limiter = registry(vclock, "openai:burst=100").limiter("openai")
    limiter.observe(
        {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": "2",
            "x-ratelimit-reset-requests": "58.8s",
        }
    )
    waited = []
    for _ in range(3):
        async with limiter.slot() as slot:
            waited.append(slot.waited)
    # Two left; the third waits for one request to refill: 58.8 s / 98 used = 0.6 s.
    assert waited[:2] == [0.0, 0.0]
    assert waited[2] == pytest.approx(0.6, abs=0.01)
    # A reported limit lower than the configured one (none here) is adopted.
    assert limiter.spec.rpm == 100


async def test_openai_token_headers_hold_a_big_request_only(vclock: VirtualClock) -> None:
    limiter = registry(vclock).limiter("openai")
    limiter.observe({"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "6m0s"})
    async with limiter.slot(tokens=50) as slot:
        assert slot.waited == 0.0
    async with limiter.slot(tokens=500) as slot:
        assert slot.waited == pytest.approx(360.0)


async def test_anthropic_headers_with_rfc3339_resets(vclock: VirtualClock) -> None:
    wall = 1_700_000_000.0
    limits = registry(vclock, "anthropic:rpm=100", wall=wall)
    limiter = limits.for_call("anthropic", "claude-sonnet")
    reset = datetime.fromtimestamp(wall + 3, tz=UTC).isoformat().replace("+00:00", "Z")
    limiter.observe(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
        }
    )
    assert limits.limiter("anthropic").spec.rpm == 50  # lower than configured: adopted
    async with limiter.slot() as slot:
        # Empty, 50 a minute refilling until full in 3 s: one request is back in 3/50 s.
        assert slot.waited == pytest.approx(0.06, abs=0.01)
    limiter.observe(
        {
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": reset,
        }
    )
    async with limiter.slot(tokens=10) as slot:  # (the wall clock here stands still)
        assert slot.waited == pytest.approx(3.0)


async def test_ietf_ratelimit_headers(vclock: VirtualClock) -> None:
    limiter = registry(vclock).limiter("hugging_face")
    limiter.observe(
        {"RateLimit": '"api";r=0;t=55', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}
    )
    assert limiter.spec.requests == (500, 300.0)
    async with limiter.slot() as slot:
        assert slot.waited == pytest.approx(55.0)


async def test_unreadable_headers_are_ignored(vclock: VirtualClock) -> None:
    limiter = registry(vclock).limiter("openai")
    limiter.observe(
        {
            "x-ratelimit-remaining-requests": "lots",
            "x-ratelimit-reset-requests": "soon",
            "x-ratelimit-limit-tokens": "-1",
            "anthropic-ratelimit-requests-reset": "yesterday",
        }
    )
    async with limiter.slot() as slot:
        assert slot.waited == 0.0
    assert limiter.spec == LimitSpec()


# --------------------------------------------------------------------------- daily cap


async def test_the_daily_cap_says_how_to_raise_it(vclock: VirtualClock) -> None:
    limiter = registry(vclock, "openai:daily=2").for_call("openai")
    for _ in range(2):
        async with limiter.slot():
            pass
    with pytest.raises(DailyCapError) as info:
        async with limiter.slot():
            pass
    err = info.value
    assert str(err).startswith("daily cap of 2 requests for openai reached; raise it with ")
    assert '--limits "openai:daily=N"' in str(err)
    assert isinstance(err, RateLimitError) and error_class(err) == "rate_limit"
    assert err.provider == "openai" and err.code == "daily_cap"
    assert err.retry_after == pytest.approx(86400.0, abs=1.0)
    assert vclock.sleeps == []  # refused at once, not after a wait
    async with limiter.slot(poll=True):  # polling a started job is not a new request
        pass


# --------------------------------------------------------------------------- registry


async def test_provider_and_model_limits_both_apply(vclock: VirtualClock) -> None:
    limits = registry(vclock, "openai:rpm=3,burst=3;openai/gpt-4o:rpm=1")
    async with limits.for_call("openai", "gpt-4o").slot() as slot:
        assert slot.waited == 0.0
    async with limits.for_call("openai", "gpt-4o-mini").slot() as slot:
        assert slot.waited == 0.0  # another model: only the provider's limit applies
    async with limits.for_call("openai", "gpt-4o").slot() as slot:
        assert slot.waited == pytest.approx(60.0, abs=0.01)  # gpt-4o's own rpm=1
    assert {k: s.calls for k, s in limits.stats().items()} == {"openai": 3, "openai/gpt-4o": 2}
    # A 429 on gpt-4o cools gpt-4o down, not the provider's other models.
    limits.note_429("openai", 30.0, model="gpt-4o")
    assert limits.stats()["openai/gpt-4o"].cooldown == pytest.approx(30.0)
    assert limits.stats()["openai"].cooldown == 0.0


async def test_reconfiguring_keeps_what_was_counted(vclock: VirtualClock) -> None:
    limits = registry(vclock, "openai:rpm=3,burst=3")
    limiter = limits.for_call("openai")
    for _ in range(2):
        async with limiter.slot():
            pass
    limits.configure({"openai": {"rpm": 2}})
    async with limiter.slot() as slot:
        assert slot.waited == pytest.approx(60.0, abs=0.01)
    assert limits.stats()["openai"].spec == "rpm=2,burst=3"


def test_the_default_session_has_one_registry_per_process() -> None:
    def shared() -> Limits:
        return default_session().limits

    seen: list[Limits] = []
    threads = [threading.Thread(target=lambda: seen.append(shared())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(s is shared() for s in seen)
    assert shared().for_call("openai").limiters[0] is shared().for_call("openai").limiters[0]
    assert Limits() is not shared()
    assert Session().limits is not shared()  # a session of its own: limits of its own


def test_a_sleep_that_does_not_move_the_clock_is_reported() -> None:
    async def no_sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    limiter = Limiter("openai", LimitSpec(rpm=1), clock=lambda: 0.0, sleep=no_sleep)

    async def two() -> None:
        for _ in range(2):
            async with limiter.slot():
                pass

    with pytest.raises(RuntimeError, match="does not advance its clock"):
        asyncio.run(two())


# --------------------------------------------------------------------------- catalog


CATALOG = """
limits:
  openai: {rpm: 500, tpm: 200000}
  openai/gpt-4o: "tpm=30000"
  stability: {requests: 150/10s, block: 60s}
my-model:
  model: {slug: llama3, provider: openai, provider_model_name: llama3}
"""


def test_catalog_yaml_limits_section(vclock: VirtualClock) -> None:
    catalog = ModelCatalog().load_yaml(CATALOG)
    assert list(catalog) == ["my-model"]  # `limits` is not a model config
    assert catalog.limits == {
        "openai": LimitSpec(rpm=500, tpm=200_000),
        "openai/gpt-4o": LimitSpec(tpm=30_000),
        "stability": LimitSpec(requests=(150, 10.0), block=60.0),
    }
    assert catalog.copy().limits == catalog.limits
    limits = registry(vclock).configure(catalog.limits)
    assert limits.spec("openai/gpt-4o").tpm == 30_000
    # A later file overrides field by field.
    catalog.load_yaml("limits:\n  openai: {tpm: 1000}\n")
    assert catalog.limits["openai"] == LimitSpec(rpm=500, tpm=1000)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("limits: [openai]\n", ["catalog YAML: limits", "mapping"]),
        ("limits:\n  openai: {rpx: 5}\n", ["catalog YAML: limits: openai", "'rpx'"]),
        ("limits:\n  opnai: {rpm: 5}\n", ["unknown provider 'opnai'"]),
        ("limits:\n  openai: 5\n", ["expected a mapping"]),
    ],
)
def test_bad_catalog_limits(text: str, names: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        ModelCatalog().load_yaml(text)
    for name in names:
        assert name in str(info.value)


async def test_the_suites_fake_sleep_drives_a_limiter(clock: Any) -> None:
    # conftest's Clock (what engines get as ctx.sleep): its `now` is the sum of its waits.
    limits = Limits("openai:rpm=1", defaults=False, clock=lambda: clock.now, sleep=clock)
    for _ in range(2):
        async with limits.for_call("openai").slot():
            pass
    assert sum(clock.waits) == pytest.approx(60.0, abs=0.01)


async def test_admissions_are_spread_over_the_window_unless_bursts_are_allowed(
    vclock: VirtualClock,
) -> None:
    spread = registry(vclock, "stability:rpm=60").limiter("stability")
    waited = []
    for _ in range(4):
        async with spread.slot() as slot:
            waited.append(round(slot.waited, 3))
    assert waited == [0.0, 1.0, 1.0, 1.0]  # one a second, not 60 at once
    bursty = registry(vclock, "stability:rpm=60,burst=3").limiter("stability")
    waited = []
    for _ in range(4):
        async with bursty.slot() as slot:
            waited.append(round(slot.waited, 3))
    assert waited == [0.0, 0.0, 0.0, 1.0]


def test_a_share_splits_a_limit_between_processes_keeping_a_request_in_hand() -> None:
    spec = parse_limits("stability:rpm=120,tpm=1000,concurrency=4,daily=100,share=2")["stability"]
    assert spec.request_windows() == [(59, 60.0)]
    assert (spec.local("tpm"), spec.local("concurrency"), spec.local("daily")) == (500, 2, 50)
    assert spec.spacing() == pytest.approx(60 / 59)
    assert spec.describe() == "rpm=120,tpm=1000,concurrency=4,daily=100,share=2"


async def test_processes_sharing_a_limit_never_exceed_it_at_the_provider() -> None:
    """Two processes, each with ``share=2`` of 10 per 2 s, send 40 calls; each call reaches
    the provider up to 0.4 s after its admission (seeded delays). The provider's own sliding
    window never holds more than 10."""
    import random

    rng = random.Random(7)
    arrivals: list[float] = []
    for _process in range(2):
        clock = VirtualClock()  # both start at the same moment
        limiter = registry(clock, "stability:requests=10/2s,share=2").limiter("stability")
        for _ in range(20):
            async with limiter.slot():
                arrivals.append(clock.now + rng.uniform(0.0, 0.4))
    arrivals.sort()
    busiest = max(sum(1 for t in arrivals if start <= t < start + 2.0) for start in arrivals)
    assert busiest <= 10
