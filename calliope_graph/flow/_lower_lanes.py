"""The lowering of lanes (:mod:`calliope_graph.flow.lanes`): a chain run as one subgraph
inside one task, so each of its nodes starts the moment the one before it ends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph.cache.base import BaseCache

from calliope_graph.flow._lower_subflow import SubgraphRunner, derived_plan
from calliope_graph.flow._lowering import RuntimeFactory, current
from calliope_graph.flow._names import lane_name, port_key, published_output
from calliope_graph.flow._plan import item_members

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan

__all__ = ["Lane"]


class Lane:
    """A chain of nodes run as one subgraph inside one task, so each node starts the moment
    the one before it ends — not when the slowest node of a sibling branch ends (LangGraph's
    superstep barrier). Names, media folders and the trace are the chain's own."""

    def __init__(
        self, plan: Plan, chain: list[str], factory: RuntimeFactory, cache: BaseCache[Any] | None
    ) -> None:
        members: list[str] = []
        for node in chain:
            members += [m for m in item_members(plan, node) if m not in members]
        self.published = [(node, p.name) for node in chain for p in plan.nodes[node].output_ports]
        outputs = {published_output(i): port_key(n, p) for i, (n, p) in enumerate(self.published)}
        child_plan, self.parent_keys = derived_plan(plan, lane_name(chain[0]), members, outputs)
        self.child = SubgraphRunner(child_plan, cache, factory)
        self.factory = factory
        self.name = lane_name(chain[0])

    async def run(self, state: dict[str, Any]) -> dict[str, Any]:
        flow_rt = await current(self.factory)
        child_in = {a: state.get(k) for a, k in self.parent_keys.items()}
        outputs = await self.child.work(flow_rt, "", child_in)()
        return {
            port_key(node, port): outputs.get(published_output(i))
            for i, (node, port) in enumerate(self.published)
            if outputs.get(published_output(i)) is not None
        }
