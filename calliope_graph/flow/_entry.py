"""``Flow.batch``/``abatch`` and ``Flow.draw`` are entry points: flow/ offers them, the floors
above implement them (``calliope_graph.batch.run_batch``, ``calliope_graph.viz.draw``). So is
running a flow for a subflow node run on its own (``Subflow.run``): the runner
(``calliope_graph.flow.run``) runs nodes, that node among them, so the node reaches it
through :func:`run_flow` rather than importing it (which would close a circle).

flow/ sits below batch/ and viz/ (docs/architecture.md, "Layers") and imports neither, at
import or call time. The package root wires the implementations in
(``calliope_graph/_wiring.py``, imported by ``calliope_graph/__init__.py``, which Python runs
before any module of flow/) as functions that import their package when first called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from typing_extensions import Unpack

from calliope_graph.errors import ConfigurationError

if TYPE_CHECKING:  # types only: flow/ never imports batch/ at run time
    from calliope_graph.batch import BatchOptions, BatchSummary
    from calliope_graph.context import RunContext
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow.builder import Flow

__all__ = ["Draw", "RunBatch", "RunFlow", "draw", "install", "run_batch", "run_flow"]


class RunBatch(Protocol):
    """What ``Flow.abatch`` calls: ``calliope_graph.batch.run_batch``."""

    def __call__(
        self,
        flow: Flow,
        items: str | Path | Iterable[Mapping[str, Any]],
        out_dir: str | Path,
        /,
        **options: Unpack[BatchOptions],
    ) -> Awaitable[BatchSummary]: ...


class Draw(Protocol):
    """What ``Flow.draw`` calls: ``calliope_graph.viz.draw``."""

    def __call__(self, spec: Any, format: str, /, **options: Any) -> str | bytes: ...


class RunFlow(Protocol):
    """What ``Subflow.run`` calls: a :class:`~calliope_graph.flow.run.FlowRunner` over
    ``plan`` in ``ctx``, without checkpoints or a trace file; the flow's outputs."""

    def __call__(
        self, plan: Plan, ctx: RunContext, inputs: Mapping[str, Any], /
    ) -> Awaitable[dict[str, Any]]: ...


@dataclass
class _Wired:
    run_batch: RunBatch | None = None
    draw: Draw | None = None
    run_flow: RunFlow | None = None


_WIRED = _Wired()


def install(*, run_batch: RunBatch, draw: Draw, run_flow: RunFlow) -> None:
    """Wire the implementations in (the package root does, once, when it is imported)."""
    _WIRED.run_batch = run_batch
    _WIRED.draw = draw
    _WIRED.run_flow = run_flow


def run_batch() -> RunBatch:
    return _WIRED.run_batch or _unwired("batch", "run_batch")


def draw() -> Draw:
    return _WIRED.draw or _unwired("viz", "draw")


def run_flow() -> RunFlow:
    return _WIRED.run_flow or _unwired("flow.run", "FlowRunner")


def _unwired(package: str, name: str) -> Any:
    # Only reachable when calliope_graph/__init__.py did not run (it always runs first).
    raise ConfigurationError(
        f"Flow's entry point to calliope_graph.{package} is not wired: `import calliope_graph` "
        f"first, or call calliope_graph.{package}.{name}(flow, ...) directly."
    )
