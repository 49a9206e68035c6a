"""Shared fixtures: a simulator whose waits are instant, and run contexts wired to it.

``ctx`` talks to the simulator directly; ``rctx`` goes through ``rec``, a ``Recorder`` that
keeps every request (a test file may override ``rec`` with its own ``Recorder`` subclass).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from calliope_graph.context import RunContext
from calliope_graph.simulate import Simulator

# The shared helpers assert too: have pytest explain their failures as it does in tests.
pytest.register_assert_rewrite("_support")
from _support import Recorder, make_ctx  # noqa: E402


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
def _limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own process-wide rate limiter with no default limits, on a
    virtual clock: a 429 one test provokes never makes another wait, and cooldowns and
    limits a test configures are waited out instantly (tests never sleep)."""
    from calliope_graph import limits

    virtual = Clock()
    monkeypatch.setattr(
        limits,
        "_shared",
        limits.Limits(defaults=False, clock=lambda: virtual.now, sleep=virtual),
    )


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
