"""Shared fixtures: a simulator whose waits are instant, and run contexts wired to it.

``ctx`` talks to the simulator directly; ``rctx`` goes through ``rec``, a ``Recorder`` that
keeps every request (a test file may override ``rec`` with its own ``Recorder`` subclass).

Tests never sleep: every ``asyncio.sleep`` of more than zero seconds that runs to its end is
counted, and a test that slept fails (give the simulator and the run context the ``clock``
fixture as ``sleep=``). A test that must let a real, tiny timeout fire (LangGraph's node
``timeout=`` around a call that never answers) says so with ``@pytest.mark.real_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# Installed before calliope_graph is imported, so RunContext's default sleep is this one too.
_real_sleep = asyncio.sleep
_slept: list[float] = []


async def _counted_sleep(delay: float, result: Any = None) -> Any:
    value = await _real_sleep(delay, result)
    if delay > 0:  # a wait that was cancelled (a LangGraph timeout watchdog) is not counted
        _slept.append(delay)
    return value


asyncio.sleep = _counted_sleep

from calliope_graph.context import RunContext  # noqa: E402
from calliope_graph.simulate import Simulator  # noqa: E402

# The shared helpers assert too: have pytest explain their failures as it does in tests.
pytest.register_assert_rewrite("_support")
from _support import Recorder, make_ctx  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_timeout: the test lets a tiny real timeout fire (a call that never ends)"
    )


@pytest.fixture(autouse=True)
def _no_real_sleep(request: pytest.FixtureRequest) -> Iterator[None]:
    _slept.clear()
    yield
    slept, _slept[:] = sum(_slept), []
    if slept and request.node.get_closest_marker("real_timeout") is None:
        pytest.fail(
            f"the test slept {slept:g}s for real: pass the `clock` fixture (a virtual clock) as "
            "`sleep=` to Simulator and RunContext, or wait on an event instead",
            pytrace=False,
        )


class Clock:
    """A fake sleep: records each wait and returns at once (virtual time)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    @property
    def now(self) -> float:
        return sum(self.waits)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def _catalog_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model lifecycles are judged on the day the catalog was read (2026-12-06), in this
    process and in CLI subprocesses, so the suite does not change verdict as days pass."""
    monkeypatch.setenv("CALLIOPE_TODAY", "2026-12-06")


@pytest.fixture(autouse=True)
def _offline_switch_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline switch (``CALLIOPE_SIMULATE``...) of the shell running the suite does not
    reach the tests: a test that wants it sets it."""
    for name in ("CALLIOPE_SIMULATE", "CALLIOPE_FAULTS", "CALLIOPE_SIMULATE_LIMITS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own default session, and every session a test makes gets rate
    limits with no defaults on a virtual clock: a 429 one test provokes never makes another
    wait, and cooldowns and limits a test configures are waited out instantly (tests never
    sleep)."""
    from calliope_graph import limits, session

    virtual = Clock()

    def new_limits() -> limits.Limits:
        return limits.Limits(defaults=False, clock=lambda: virtual.now, sleep=virtual)

    monkeypatch.setattr(session, "_new_limits", new_limits)
    monkeypatch.setattr(session, "_default", None)
    monkeypatch.setattr(limits, "_new_default", new_limits)
    monkeypatch.setattr(limits, "_default", None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Simulator:
    return Simulator(sleep=clock)


@pytest.fixture
async def ctx(sim: Simulator, clock: Clock, tmp_path: Path) -> AsyncIterator[RunContext]:
    context = make_ctx(sim.transport(), sim.keys(), clock, tmp_path / "out")
    yield context
    await context.aclose()


@pytest.fixture
def rec(sim: Simulator) -> Recorder:
    return Recorder(sim)


@pytest.fixture
async def rctx(
    rec: Recorder, sim: Simulator, clock: Clock, tmp_path: Path
) -> AsyncIterator[RunContext]:
    context = make_ctx(httpx.MockTransport(rec), sim.keys(), clock, tmp_path / "out")
    yield context
    await context.aclose()
