"""The bookkeeping of one node execution that :class:`~calliope_graph.flow._runtime.FlowRuntime`
does on the hot path of every node: cheap copies and records, and what a provider node's call
is tracked with (its requests; its media kept when the disk is full)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from langgraph.errors import GraphInterrupt

from calliope_graph._usage import ProviderCall
from calliope_graph.engines._http import CallStats, call_stats
from calliope_graph.flow._room import with_room
from calliope_graph.flow.trace import NodeExecution, Trace
from calliope_graph.media._store import UNWRITTEN

if TYPE_CHECKING:
    from calliope_graph.context import RunContext
    from calliope_graph.flow._runtime import FlowRuntime
    from calliope_graph.nodes import Node

Work = Callable[[], Awaitable[dict[str, Any]]]
"""A node's work, started when called (``node.run`` or a subflow's child graph)."""

__all__ = [
    "EventKind",
    "FlowEvent",
    "OnEvent",
    "execute_plain",
    "execution_template",
    "node_work",
    "started",
    "total_cost",
    "track",
    "twin",
    "untrack",
]


def total_cost(calls: list[ProviderCall]) -> float | None:
    costs = [c.cost_usd for c in calls if c.status == "ok"]
    return None if None in costs else round(sum(c or 0.0 for c in costs), 8)


_T = TypeVar("_T")


def twin(obj: _T, **changes: Any) -> _T:
    """A shallow copy of dataclass ``obj`` (no ``__post_init__``, no slots) with ``changes``."""
    twin = object.__new__(type(obj))
    twin.__dict__.update(obj.__dict__, **changes)
    return twin


_EXECUTION_FIELDS = frozenset(NodeExecution.model_fields)


#: What :func:`started` sets per execution (the start, and new objects for mutable fields).
_PER_EXECUTION = frozenset(
    [
        "node",
        "started_at",
        "iteration",
        "item",
        "inputs",
        "retry_times",
        "calls",
        "outputs",
        "provider_calls",
    ]
)


def execution_template(
    kind: str, provider: str | None, model: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    """The fields every execution of one node starts with, but :data:`_PER_EXECUTION`."""
    template = dict(
        kind=kind, provider=provider, model=model, params=params, ended_at=None,
        status="running", attempts=0, retries=0, error_class=None, error=None, branch=None,
        cache_hit=False, resumed=False, cost_usd=0.0, unbilled=False, limit_wait=0.0,
    )  # fmt: skip
    assert template.keys() | _PER_EXECUTION == _EXECUTION_FIELDS
    return template


def started(
    template: dict[str, Any], node: str, iteration: int, item: int | None, inputs: Any
) -> NodeExecution:
    """A running execution from its node's :func:`execution_template` and nine fields, typed
    as declared, without validation: what pydantic's ``model_construct`` does, at a small
    part of its cost (the hot path of every node's bookkeeping)."""
    fields = template.copy()
    fields.update(
        node=node, started_at=time.time(), iteration=iteration, item=item, inputs=inputs,
        retry_times=[], calls={}, outputs={}, provider_calls=[],
    )  # fmt: skip
    execution = NodeExecution.__new__(NodeExecution)
    object.__setattr__(execution, "__dict__", fields)
    object.__setattr__(execution, "__pydantic_fields_set__", set(_EXECUTION_FIELDS))
    object.__setattr__(execution, "__pydantic_extra__", None)
    object.__setattr__(execution, "__pydantic_private__", None)
    return execution


def track(node: Node, stats: CallStats, unwritten: dict[str, bytes]) -> tuple[Any, ...]:
    """A provider node's requests are counted and its media kept on a full disk (UNWRITTEN)."""
    if node.model is None:
        return ()
    return (call_stats.set(stats), UNWRITTEN.set(unwritten))


def untrack(tokens: tuple[Any, ...]) -> None:
    if tokens:
        call_stats.reset(tokens[0])
        UNWRITTEN.reset(tokens[1])


# -- events ---------------------------------------------------------------------------------------
EventKind = Literal[
    "started", "finished", "retried", "fallback", "skipped", "cache_hit", "failed", "waiting"
]


@dataclass(frozen=True)
class FlowEvent:
    """Something a node did, as it happened (``trace`` is the live trace)."""

    kind: EventKind
    node: str
    execution: NodeExecution
    trace: Trace


OnEvent = Callable[[FlowEvent], None]


def node_work(ctx: RunContext, node: Node, inputs: dict[str, Any]) -> Work:
    """What running ``node`` on ``inputs`` is: ``node.run``, with media fetched first from
    object storage when the run's store is remote (files missing on this machine), once the
    output folder has room for its answer (``flow/_room.py``: before anything is paid)."""
    store = ctx.store
    if not store.remote:
        return with_room(ctx, node, inputs, lambda: node.run(ctx, **inputs))

    async def run_localised() -> dict[str, Any]:
        return await node.run(ctx, **(await store.localise(inputs)))

    return with_room(ctx, node, inputs, run_localised)


#: The requests of a node that calls no provider: none (never tracked, so never written).
_NO_CALLS = CallStats()


async def execute_plain(
    rt: FlowRuntime, name: str, node: Node, inputs: dict[str, Any], iteration: int
) -> dict[str, Any]:
    """``rt.execute`` of a node that calls no provider (no model), recorded, its store local:
    nothing is journaled, priced, published or scrubbed, and no request is counted (its
    execution keeps the zeros ``_start`` gave it; ``track`` never gives such a node stats)."""
    key = rt.scope + name + (f"#{rt.item}" if rt.item is not None else "")  # rt._key(name)
    execution = rt._start(key, name, node, inputs, iteration)
    try:
        outputs = await node.run(rt.ctx, **inputs)
    except GraphInterrupt as exc:  # a choice (runs again when resumed), or a halt
        if rt.halted is None:
            rt._waiting(execution, _NO_CALLS)
        else:
            rt._failed(name, node, execution, _NO_CALLS, exc)
        raise
    except BaseException as exc:
        rt._failed(name, node, execution, _NO_CALLS, exc)
        raise
    execution.__dict__.update(  # (its fields are all set: unvalidated)
        ended_at=time.time(), status="ok", outputs=rt._summary(outputs, rt.trace.out_dir)
    )
    rt._emit("finished", execution)
    return outputs
