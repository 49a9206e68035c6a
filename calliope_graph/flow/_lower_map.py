"""The lowering of a map (:mod:`calliope_graph.flow.map`) to LangGraph.

``<node>__each`` fans out with one ``Send`` per item (a conditional edge); each item runs
``<node>`` in its own task — a plain node directly, a node with routes as a subgraph of the
node and its route targets (:func:`_item_plan`), so fallbacks, rewrites and ``continue`` (drop
the item) apply per item; ``<node>__gather`` assembles each port's list in item order from a
dict-merge reducer channel (``~map.<node>``). ``max_parallel`` is a per-run semaphore.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from langgraph.cache.base import BaseCache
from langgraph.errors import GraphBubbleUp
from langgraph.graph import StateGraph
from langgraph.runtime import get_runtime
from langgraph.types import Command, Send, interrupt

from calliope_graph.errors import FlowRunError
from calliope_graph.flow._gather import Gather, read_ref
from calliope_graph.flow._lower_subflow import SubgraphRunner, derived_plan
from calliope_graph.flow._lowering import RuntimeFactory, built, current, join, retry_policy
from calliope_graph.flow._names import (
    FAILED,
    ITEM_INPUT,
    ITEM_KEY,
    fan_name,
    gather_name,
    item_flow_title,
    map_key,
    port_key,
)
from calliope_graph.flow._plan import item_members
from calliope_graph.flow._runtime import FlowRuntime
from calliope_graph.flow.spec import parse_ref
from calliope_graph.flow.subflow import Subflow

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan

__all__ = ["NODE_LOWERING", "MapUnit", "add_map", "in_items", "merge_items"]


def merge_items(left: dict[int, Any] | None, right: dict[int, Any] | None) -> dict[int, Any]:
    return {**(left or {}), **(right or {})}


def in_items(plan: Plan) -> set[str]:
    """The nodes a mapped node's routes send work to: they run inside its items' subgraphs."""
    return {m for n in plan.item_types for m in item_members(plan, n)} - set(plan.item_types)


def _item_plan(plan: Plan, name: str) -> tuple[Plan, dict[str, str]]:
    """The flow one item of mapped node ``name`` runs — the node (without its map) and the
    nodes its routes send work to — so its fallbacks, rewrites and ``continue`` apply to
    that item alone. What they read from the parent arrives as inputs: ``item`` and
    ``p0``, ``p1``, ... (returned: child input → parent state key)."""
    mapping = plan.spec.nodes[name].map
    assert mapping is not None
    outputs = {p.name: port_key(name, p.name) for p in plan.nodes[name].output_ports}
    return derived_plan(
        plan, item_flow_title(name), item_members(plan, name), outputs, item_as=mapping.as_
    )


class MapUnit:
    """How a mapped node runs: ``<node>__each`` sends one task per item (LangGraph ``Send``),
    each runs ``<node>`` on its item (bounded by ``max_parallel``), and ``<node>__gather``
    assembles each output port's list in item order.

    A node with routes runs each item as a subgraph, so its fallbacks, rewrites and
    ``continue`` (which drops the item) apply to that item alone. An item's failure that no
    route takes does not cancel the others: the item records it, the others finish, and the
    gather pauses the run (with a checkpointer; else it raises); resuming sends exactly the
    failed items again (``Send`` from the gather), so nothing completed is paid twice.
    """

    def __init__(
        self, plan: Plan, name: str, factory: RuntimeFactory, cache: BaseCache[Any] | None
    ) -> None:
        spec = plan.spec.nodes[name].map
        assert spec is not None
        self.name, self.bound, self.plan = name, spec.max_parallel, plan
        self.over = parse_ref(spec.over)
        self.node = plan.nodes[name]
        self.ports = [p.name for p in self.node.output_ports]
        self.factory = factory
        self.child: SubgraphRunner | None = None
        self.subflow: SubgraphRunner | None = None
        self.parent_keys: dict[str, str] = {}
        if plan.has_routes(name):
            child_plan, self.parent_keys = _item_plan(plan, name)
            self.child = SubgraphRunner(child_plan, cache, factory)
            self.reads = set(self.parent_keys.values())
        else:
            self.gather = Gather(plan, name)
            if isinstance(self.node, Subflow):
                self.subflow = SubgraphRunner(self.node._plan(), cache, factory)
            self.reads = {key for _, key, _ in self.gather.sources}
            self.reads |= {key for _, key in self.gather.overrides}
        self.reads.discard(ITEM_KEY)

    def _items(self, state: dict[str, Any]) -> list[Any]:
        items = read_ref(state, self.over)
        if items is None:
            return []
        if not isinstance(items, list | tuple):
            raise FlowRunError(
                f"Node {self.name!r} maps over {str(self.over)!r}, which is a "
                f"{type(items).__name__} at run time, not a list.",
                node=self.name,
            )
        return list(items)

    def _send(self, state: dict[str, Any], index: int, item: Any) -> Send:
        # Only what the item reads: a checkpointer saves every Send's payload, and the whole
        # state in each (the list mapped over among it) made that quadratic in the items.
        payload = {k: state[k] for k in self.reads if k in state}
        return Send(self.name, {**payload, ITEM_KEY: {"index": index, "value": item}})

    def route(self, state: dict[str, Any]) -> list[Send] | list[str]:
        items = self._items(state)
        if not items:
            return [gather_name(self.name)]
        return [self._send(state, i, item) for i, item in enumerate(items)]

    async def run_item(self, state: dict[str, Any]) -> dict[str, Any]:
        context = get_runtime(FlowRuntime).context
        flow_rt = (
            context if isinstance(context, FlowRuntime) else await built(context, self.factory)
        )
        index = int(state[ITEM_KEY]["index"])
        # A subflow puts its media in <node>/<item>/ itself; anything else does it here.
        folder = None if isinstance(self.node, Subflow) else f"{self.name}/{index}"
        scoped = flow_rt.scoped(item=index, folder=folder)
        semaphore = flow_rt.semaphore(self.name, self.bound)
        async with semaphore if semaphore is not None else contextlib.nullcontext():
            if self.child is not None:
                child_in = {ITEM_INPUT: state[ITEM_KEY]["value"]}
                child_in |= {a: state.get(k) for a, k in self.parent_keys.items()}
                outputs = await self.child.work(scoped, "", child_in)()
                outputs = {k: v for k, v in outputs.items() if v is not None}
                return {map_key(self.name): {index: outputs or None}}
            inputs = self.gather(state)
            work = self.subflow.work(scoped, self.name, inputs) if self.subflow else None
            try:
                outputs = await scoped.execute(self.name, self.node, inputs, iteration=1, work=work)
            except GraphBubbleUp:
                raise
            except Exception as exc:  # recorded; the gather decides (siblings go on)
                flow_rt.halted = (self.name, exc)
                return {map_key(self.name): {index: {FAILED: repr(type(exc).__name__)}}}
        return {map_key(self.name): {index: outputs}}

    async def collect(self, state: dict[str, Any]) -> Any:
        done: dict[int, Any] = state.get(map_key(self.name)) or {}
        failed = [i for i in sorted(done) if isinstance(done[i], dict) and FAILED in done[i]]
        if failed:
            flow_rt = await current(self.factory)
            halted = flow_rt.halted
            if not flow_rt.resumable:
                if halted is not None:
                    raise halted[1]
                raise FlowRunError(f"Items {failed} of {self.name!r} failed.", node=self.name)
            interrupt({"node": self.name, "items": failed, "resume": "run them again"})
            items = self._items(state)  # resumed: send exactly the failed items again
            return Command(goto=[self._send(state, i, items[i]) for i in failed])
        kept = [done[i] for i in sorted(done) if done[i] is not None]
        return {port_key(self.name, p): [o.get(p) for o in kept] for p in self.ports}


def add_map(graph: StateGraph[Any, Any, Any, Any], plan: Plan, unit: MapUnit) -> None:
    name = unit.name
    spec = plan.spec.nodes[name]
    kwargs: dict[str, Any] = {}
    if spec.timeout is not None:
        kwargs["timeout"] = spec.timeout
    fan: Callable[..., Any] = join  # typed loosely: our state is a plain dict
    collect: Callable[..., Any] = unit.collect
    graph.add_node(fan_name(name), fan)
    graph.add_conditional_edges(fan_name(name), unit.route, [name, gather_name(name)])
    graph.add_node(name, unit.run_item, retry_policy=retry_policy(plan, name), **kwargs)
    graph.add_node(gather_name(name), collect, destinations=(name,))
    graph.add_edge(name, gather_name(name))


class _MapLowering:
    """The kernel's view of a map (see :class:`~calliope_graph.flow._lowering.NodeLowering`)."""

    def owns(self, plan: Plan, name: str) -> bool:
        return name in plan.item_types

    def inside(self, plan: Plan) -> set[str]:
        return in_items(plan)

    def state_keys(self, plan: Plan) -> dict[str, Any]:
        keys: dict[str, Any] = {
            map_key(name): Annotated[dict[int, Any], merge_items] for name in plan.item_types
        }
        if plan.item_types:
            keys[ITEM_KEY] = Any
        return keys

    def add(
        self,
        graph: StateGraph[Any, Any, Any, Any],
        plan: Plan,
        name: str,
        factory: RuntimeFactory,
        cache: BaseCache[Any] | None,
    ) -> None:
        add_map(graph, plan, MapUnit(plan, name, factory, cache))

    def entry(self, name: str) -> str:
        return fan_name(name)

    def link(self, name: str) -> str:
        return gather_name(name)


NODE_LOWERING = _MapLowering()
