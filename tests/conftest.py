"""Shared fixtures: a simulator whose waits are instant, and a run context wired to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from calliope_graph.context import PollSettings, RetrySettings, RunContext
from calliope_graph.simulate import Simulator


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


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Simulator:
    return Simulator(sleep=clock)


@pytest.fixture
async def ctx(sim: Simulator, clock: Clock, tmp_path: Path) -> AsyncIterator[RunContext]:
    context = RunContext.create(
        tmp_path / "out",
        keys=sim.keys(),
        transport=sim.transport(),
        sleep=clock,
        retry=RetrySettings(max_attempts=4, initial_wait=0.01, max_wait=0.05, jitter=0.0),
        poll=PollSettings(interval=0.5, timeout=30.0),
    )
    yield context
    await context.aclose()
