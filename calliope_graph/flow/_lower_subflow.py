"""The lowering of a subflow (:mod:`calliope_graph.flow.subflow`) to LangGraph, and of the
flows the compiler derives from parts of a plan (a map item with routes, a lane).

A child flow runs as a LangGraph subgraph inside one node's task (:class:`SubgraphRunner`):
compiled once by the kernel, invoked with the parent's checkpointer (its own checkpoint
namespace, so it resumes inside) and a scoped view of the parent's runtime (its executions
nest in the trace; its media go under ``<node>/``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from langgraph._internal._constants import CONFIG_KEY_DURABILITY
from langgraph.cache.base import BaseCache
from langgraph.config import get_config
from langgraph.errors import GraphInterrupt
from langgraph.types import Durability

from calliope_graph.flow._gather import read_ref
from calliope_graph.flow._lowering import RuntimeFactory
from calliope_graph.flow._names import (
    ITEM_INPUT,
    derived_flow_name,
    input_key,
    parent_input,
    port_key,
)
from calliope_graph.flow._runtime import FlowRuntime
from calliope_graph.flow.spec import INPUTS, FlowSpec, InputSpec, NodeSpec, parse_ref
from calliope_graph.flow.validate import check

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan

__all__ = ["SubgraphRunner", "derived_plan"]


class SubgraphRunner:
    """A child flow run as a LangGraph subgraph inside one node's task: compiled once,
    invoked with the parent's checkpointer (its own checkpoint namespace, so it resumes
    inside) and a scoped view of the parent's runtime (its executions nest in the trace)."""

    def __init__(self, plan: Plan, cache: BaseCache[Any] | None, factory: RuntimeFactory):
        from calliope_graph.flow.compile import compile_plan  # the kernel compiles the child

        self.plan = plan
        self.graph = compile_plan(plan, cache=cache, runtime_factory=factory)
        self.outputs = [(out, parse_ref(target)) for out, target in plan.spec.outputs.items()]
        #: The child's optional inputs and their defaults: an unwired (or absent) one takes
        #: its default, as when the child runs on its own (``_run_io``).
        self.defaults = {
            input_key(k): spec.default for k, spec in plan.spec.inputs.items() if not spec.required
        }

    def work(
        self, flow_rt: FlowRuntime, name: str, inputs: dict[str, Any], *, resumable: bool = True
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        item = f"[{flow_rt.item}]" if flow_rt.item is not None else ""
        folder = None
        if name:
            folder = f"{name}/{flow_rt.item}" if flow_rt.item is not None else name
        scoped = flow_rt.scoped(
            f"{name}{item}/" if name else "",
            item=None if name else flow_rt.item,
            resumable=flow_rt.resumable and resumable,
            folder=folder,
        )

        in_item = flow_rt.item is not None and flow_rt.resumable

        async def run() -> dict[str, Any]:
            state = {**self.defaults}
            for key, value in ((input_key(k), v) for k, v in inputs.items()):
                if value is not None or key not in self.defaults:
                    state[key] = value
            final = await self.graph.ainvoke(state, context=scoped, durability=_durability(in_item))
            if "__interrupt__" in final:  # paused inside: the parent pauses with it
                raise GraphInterrupt(final["__interrupt__"])
            return {out: read_ref(final, ref) for out, ref in self.outputs}

        return run


def _durability(in_item: bool) -> Durability | None:
    """A map item's checkpoints are saved when it stops (done, failed, paused), not after each
    of its steps, when the run saves them asynchronously (LangGraph's default): a killed item
    starts again, and the output journal replays what its provider nodes paid for (as in a
    batch, docs/architecture.md). Per-step saves of every item held the event loop and made a
    checkpointed map's items finish late. ``sync`` runs keep saving every step."""
    if not in_item:
        return None
    configurable = get_config().get("configurable", {})
    return "exit" if configurable.get(CONFIG_KEY_DURABILITY, "async") == "async" else None


def derived_plan(
    plan: Plan,
    title: str,
    members: list[str],
    outputs: dict[str, str],
    *,
    item_as: str | None = None,
) -> tuple[Plan, dict[str, str]]:
    """A flow of ``members`` (node specs copied, maps removed) whose references to anything
    else become inputs ``p0``, ``p1``... (and the map item ``item``); returned with which
    parent state key each input reads. Validated like any flow."""
    spec = plan.spec
    parent_keys: dict[str, str] = {}
    child_inputs: dict[str, InputSpec] = {}
    if item_as is not None:
        child_inputs[ITEM_INPUT] = InputSpec(type="any", required=False)

    def rewrite(text: str) -> str:
        ref = parse_ref(text)
        tail = ".".join(f for f in (ref.port, *ref.fields) if f)
        if item_as is not None and ref.node == item_as:
            return f"{INPUTS}.{ITEM_INPUT}" + (f".{tail}" if tail else "")
        if ref.node in members:
            return text
        key = input_key(ref.port) if ref.is_input else port_key(ref.node, ref.port)
        alias = next((a for a, k in parent_keys.items() if k == key), None)
        if alias is None:
            alias = parent_input(len(parent_keys))
            parent_keys[alias] = key
            child_inputs[alias] = InputSpec(type="any", required=False)
        return ".".join((INPUTS, alias, *ref.fields))

    nodes: dict[str, NodeSpec] = {}
    for member in members:
        copy = spec.nodes[member].model_copy(deep=True, update={"map": None})
        copy.inputs = {
            port: [rewrite(v) for v in value] if isinstance(value, list) else rewrite(value)
            for port, value in copy.inputs.items()
        }
        nodes[member] = copy
    child_spec = FlowSpec(
        name=derived_flow_name(spec.name, title),
        description=f"{title} of {spec.name!r}",
        inputs=child_inputs,
        nodes=nodes,
        outputs=outputs,
        catalog=spec.catalog,
    )
    child_spec._source = spec.source
    child_spec._lines = dict(spec._lines)
    return check(child_spec), parent_keys
