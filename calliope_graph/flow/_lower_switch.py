"""The lowering of a switch (:mod:`calliope_graph.flow.switch`) to LangGraph: the switch
node returns ``Command(goto=[chosen, <other>__done...])`` — the chosen branch runs, every
other branch goes straight to its join (skipped, as ``continue`` skips a node)."""

from __future__ import annotations

from typing import Any

from langgraph.types import Command

from calliope_graph.flow._names import done_name, port_key
from calliope_graph.flow._runtime import FlowRuntime

__all__ = ["switch_command"]


def switch_command(
    flow_rt: FlowRuntime,
    name: str,
    kind: str,
    root: str,
    outputs: dict[str, Any],
    targets: list[str],
) -> Command[Any]:
    """Go to the branch the switch chose; every other branch goes straight to its join (it
    is skipped, as ``continue`` skips a node), so what waits on all of them goes on."""
    chosen = str(outputs["branch"])
    for target in targets:
        if target != chosen:
            flow_rt.skip(target, kind, f"switch:{name}→{chosen}")
    return Command(
        goto=[chosen, *(done_name(t) for t in targets if t != chosen)],
        update={port_key(root, port): value for port, value in outputs.items()},
    )
