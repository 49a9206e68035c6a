"""The package root wires into flow/ what the floors above it implement.

``Flow.batch``/``abatch`` run ``calliope_graph.batch.run_batch`` and ``Flow.draw`` runs
``calliope_graph.viz.draw``, and a subflow node run on its own runs its child with
``calliope_graph.flow.run.FlowRunner``; flow/ sits below batch/ and viz/ and imports neither
(``calliope_graph/flow/_entry.py``). This module belongs to the package root, the one floor
allowed to know every other (docs/architecture.md, "Layers"); ``calliope_graph/__init__.py``
imports it, which Python does before it runs any module of flow/. Each function imports its
package when first called, so wiring costs nothing at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from calliope_graph.flow import _entry

if TYPE_CHECKING:
    from calliope_graph.batch import BatchOptions, BatchSummary
    from calliope_graph.context import RunContext
    from calliope_graph.flow._plan import Plan
    from calliope_graph.flow.builder import Flow


async def _run_batch(
    flow: Flow,
    items: str | Path | Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    /,
    **options: Unpack[BatchOptions],
) -> BatchSummary:
    from calliope_graph.batch import run_batch

    return await run_batch(flow, items, out_dir, **options)


def _draw(spec: Any, format: str, /, **options: Any) -> str | bytes:
    from calliope_graph.viz import draw

    return draw(spec, format, **options)


async def _run_flow(plan: Plan, ctx: RunContext, inputs: Mapping[str, Any], /) -> dict[str, Any]:
    from calliope_graph.flow.run import FlowRunner

    runner = FlowRunner(plan, ctx=ctx, checkpointer=False, trace_file=False)
    result = await runner.ainvoke(dict(inputs))
    return result.outputs


_entry.install(run_batch=_run_batch, draw=_draw, run_flow=_run_flow)
