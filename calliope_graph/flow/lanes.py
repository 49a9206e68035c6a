"""Dataflow scheduling: chains of nodes that run beside other work become *lanes*.

LangGraph runs a graph superstep by superstep: a node waits for the slowest node of the step
before. A chain (each node the only consumer of the one before, which is its only source)
that runs beside something else would wait at every barrier; run as one subgraph inside one
task (a lane) each of its nodes starts the moment the one before ends (the maintainers'
advice for the barrier, langgraph#6320). :func:`lanes` finds the chains (a pure predicate over
a Plan); :mod:`calliope_graph.flow._lower_lanes` runs them. Lanes add no spec field, check or
shape: they are how a flow is scheduled, not what it says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from calliope_graph.flow.construct import Construct, register_construct

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan

__all__ = ["CONSTRUCT", "lanes"]


def lanes(plan: Plan, skip: set[str]) -> list[list[str]]:
    """Chains of nodes (each the only consumer of the one before, which is its only source)
    that can run while something else does: each becomes one lane (see :class:`_Lane`)."""
    nodes = [n for n in plan.order if n not in plan.routed and n not in skip]
    known = set(nodes)
    preds = {n: {plan.root(s) for s in plan.sources(n)} & known for n in nodes}
    succs: dict[str, set[str]] = {n: set() for n in nodes}
    for n, sources in preds.items():
        for source in sources:
            succs[source].add(n)
    before: dict[str, set[str]] = {}
    for n in nodes:  # plan.order is topological
        before[n] = set().union(*(before[p] | {p} for p in preds[n])) if preds[n] else set()

    def plain(n: str) -> bool:
        return n not in plan.item_types and n not in plan.switches and n not in plan.switched

    chains: list[list[str]] = []
    taken: set[str] = set()
    for n in nodes:
        if n in taken or not plain(n):
            continue
        chain = [n]
        while len(succs[chain[-1]]) == 1:
            (nxt,) = succs[chain[-1]]
            if nxt in taken or not plain(nxt) or preds[nxt] != {chain[-1]}:
                break
            chain.append(nxt)
        if len(chain) < 2:
            continue
        members = set(chain)
        related = set().union(*(before[m] for m in chain)) | members
        related |= {m for m in nodes if before[m] & members}
        if known - related:  # something runs beside the chain: a barrier would hold it back
            chains.append(chain)
            taken |= members
    return chains


CONSTRUCT = register_construct(Construct(name="lanes", lowering="calliope_graph.flow._lower_lanes"))
