"""What every lowering shares: the run's FlowRuntime, node retry policies, join nodes.

The kernel (:mod:`calliope_graph.flow.compile`) and each construct's lowering
(``flow/_lower_*.py``) import this module; they are the only modules of ``flow/`` that import
LangGraph for building graphs.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langgraph.cache.base import BaseCache
from langgraph.graph import StateGraph
from langgraph.runtime import get_runtime
from langgraph.types import RetryPolicy

from calliope_graph.errors import error_classes
from calliope_graph.flow._runtime import FlowRuntime

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan

__all__ = [
    "NodeLowering",
    "RuntimeFactory",
    "built",
    "current",
    "environment_runtime",
    "join",
    "node_lowerings",
    "retry_policy",
]

#: Builds the FlowRuntime of a run that was started without one (LangGraph Server passes
#: its own context, or none): called with whatever the caller gave as context, inside the
#: node that needs it (so ``langgraph.config.get_config()`` gives the run's config, thread
#: id included). It may be async (a server's factory builds the run's media directory in a
#: worker thread); a factory is called until a run's runtime exists, so it caches per run.
RuntimeFactory = Callable[[Any], FlowRuntime | Awaitable[FlowRuntime]]


def environment_runtime(plan: Plan) -> RuntimeFactory:
    """A factory for runs started without a FlowRuntime (LangGraph Server): one runtime per
    compiled graph, built on first use from the environment — keys from the conventional
    variables, media under ``./out/<flow>`` — and kept by this graph alone (no module global).
    """
    cached: list[FlowRuntime] = []

    def factory(context: Any) -> FlowRuntime:
        if not cached:
            from calliope_graph.context import RunContext
            from calliope_graph.flow.trace import Trace

            ctx = RunContext.create(Path("out") / plan.spec.name, catalog=plan.catalog)
            trace = Trace(flow=plan.spec.name, thread_id="server", started_at=time.time())
            cached.append(FlowRuntime(ctx=ctx, trace=trace, record=False))
        return cached[0]

    return factory


async def built(context: Any, factory: RuntimeFactory) -> FlowRuntime:
    """The run's FlowRuntime from a context that is not one (see :data:`RuntimeFactory`)."""
    made = factory(context)
    return await made if inspect.isawaitable(made) else made


async def current(factory: RuntimeFactory) -> FlowRuntime:
    """The FlowRuntime of the run in progress (built by ``factory`` when not given)."""
    context = get_runtime(FlowRuntime).context
    return context if isinstance(context, FlowRuntime) else await built(context, factory)


def retry_policy(plan: Plan, name: str) -> RetryPolicy | None:
    spec = plan.spec.nodes[name].retry
    if spec is None:
        return None
    when = set(spec.when)
    return RetryPolicy(
        initial_interval=spec.initial_interval,
        backoff_factor=spec.backoff_factor,
        max_interval=spec.max_interval,
        max_attempts=spec.max_attempts,
        jitter=spec.jitter,
        retry_on=lambda exc: not when.isdisjoint(error_classes(exc)),
    )


async def join(state: dict[str, Any]) -> None:
    """A node's join point: reached on success, after its fallback, or on ``continue``."""
    return None


class NodeLowering(Protocol):
    """How a construct that replaces a node's plain lowering plugs into the kernel (a map:
    ``<node>__each`` → items → ``<node>__gather``). A lowering module exports one as
    ``NODE_LOWERING``; the kernel asks each in registry order whether it ``owns`` a node."""

    def owns(self, plan: Plan, name: str) -> bool:
        """Whether this construct lowers node ``name`` (instead of the kernel)."""
        ...

    def inside(self, plan: Plan) -> set[str]:
        """Nodes that run inside what this construct adds (not in the top graph)."""
        ...

    def state_keys(self, plan: Plan) -> dict[str, Any]:
        """State channels this construct needs (key → type, a reducer in ``Annotated``)."""
        ...

    def add(
        self,
        graph: StateGraph[Any, Any, Any, Any],
        plan: Plan,
        name: str,
        factory: RuntimeFactory,
        cache: BaseCache[Any] | None,
    ) -> None:
        """Add the nodes and inner edges that run ``name``."""
        ...

    def entry(self, name: str) -> str:
        """The graph node that waits on ``name``'s sources."""
        ...

    def link(self, name: str) -> str:
        """The graph node ``name``'s consumers wait on."""
        ...


_NODE_LOWERINGS: list[NodeLowering] = []


def node_lowerings() -> list[NodeLowering]:
    """The ``NODE_LOWERING`` of every registered construct's lowering module (loaded once,
    at the first compilation)."""
    if not _NODE_LOWERINGS:
        from calliope_graph.flow.construct import constructs

        for construct in constructs():
            if construct.lowering is not None:
                module = importlib.import_module(construct.lowering)
                found = getattr(module, "NODE_LOWERING", None)
                if found is not None:
                    _NODE_LOWERINGS.append(found)
    return _NODE_LOWERINGS
