"""Compilation: a validated flow becomes a real LangGraph ``StateGraph``.

- **State**: one key per produced port and flow input, plus loop bookkeeping; every key is
  built by a helper of :mod:`calliope_graph.flow._runtime`. Values are media references
  and text, so checkpoints stay small; nothing secret is ever in state.
- **Context**: the :class:`~calliope_graph.flow._runtime.FlowRuntime` (client, keys, store, trace)
  travels in LangGraph's runtime context.
- **Joins**: a node with several sources gets a waiting edge (``add_edge([a, b], c)``), so it
  runs once, after all of them, in the superstep after the last.
- **Error routes** are LangGraph ``error_handler``\\ s returning ``Command(goto=...)``, after
  the node's ``RetryPolicy`` and ``timeout`` have had their say. A node with routes gets a
  ``<node>__done`` join node: it is reached on success, from a fallback that stood in, or
  straight from a ``continue`` — so consumers waiting on it never wait forever.
- Edges come from :meth:`FlowSpec.edges` (the list the validator and drawings read); routes
  are declared as ``destinations`` so ``compiled.get_graph()`` draws them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.cache.base import BaseCache
from langgraph.errors import NodeError
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import CachePolicy, Checkpointer, Command, RetryPolicy, interrupt
from typing_extensions import TypedDict

from calliope_graph.errors import FlowRunError, error_classes
from calliope_graph.flow._cache import MediaCheckedCache
from calliope_graph.flow._runtime import (
    FlowRuntime,
    done_name,
    halt_key,
    input_key,
    override_key,
    port_key,
    request_key,
    rewrites_key,
)
from calliope_graph.flow.spec import CONTINUE, INPUTS, CacheSpec, Edge, ErrorRoute
from calliope_graph.flow.trace import jsonable
from calliope_graph.flow.validate import Plan
from calliope_graph.media import Audio, Image, Video

__all__ = ["CompiledFlowGraph", "RuntimeFactory", "compile_plan", "environment_runtime"]

_MISSING = object()

#: Builds the FlowRuntime of a run that was started without one (LangGraph Server passes
#: its own context, or none): called with whatever the caller gave as context.
RuntimeFactory = Callable[[Any], FlowRuntime]
#: What :func:`compile_plan` returns: LangGraph's compiled graph, with a FlowRuntime context.
CompiledFlowGraph = CompiledStateGraph[Any, FlowRuntime, Any, Any]


def _state_schema(plan: Plan) -> type[Any]:
    keys: dict[str, Any] = {input_key(name): Any for name in plan.spec.inputs}
    for name, node in plan.nodes.items():
        if name in plan.stands_in:
            continue
        for port in node.output_ports:
            keys[port_key(name, port.name)] = Any
    for name, node_spec in plan.spec.nodes.items():
        if node_spec.on_error:
            keys[halt_key(name)] = Any
        for route in node_spec.on_error:
            if route.rewrite is not None:
                keys[rewrites_key(name)] = Any
                keys[override_key(name, route.rewrite.port)] = Any
                keys[request_key(route.rewrite.via)] = Any
    schema: type[Any] = TypedDict(  # type: ignore[misc]
        f"{plan.spec.name.replace('-', '_')}_state", keys, total=False
    )
    return schema


def _link(plan: Plan, name: str) -> str:
    """What consumers of ``name`` wait on: its join node when it has error routes."""
    return done_name(name) if plan.has_routes(name) else name


class _Gather:
    """Reads a node's inputs from state (many-ports gather present values)."""

    def __init__(self, plan: Plan, name: str) -> None:
        node = plan.nodes[name]
        self.many = {p.name for p in node.input_ports if p.many}
        self.required = {p.name for p in node.input_ports if p.required}
        self.sources: list[tuple[str, str]] = [
            (port, input_key(ref.port) if ref.is_input else port_key(ref.node, ref.port))
            for port, ref in plan.wiring[name]
        ]
        self.overrides = [
            (route.rewrite.port, override_key(name, route.rewrite.port))
            for route in plan.spec.nodes[name].on_error
            if route.rewrite is not None
        ]
        self.name = name

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for port, key in self.sources:
            value = state.get(key, _MISSING)
            if port in self.many:
                bucket = inputs.setdefault(port, [])
                if value is not _MISSING and value is not None:
                    bucket.append(value)
            elif value is not _MISSING and value is not None:
                inputs[port] = value
            elif port in self.required:
                raise FlowRunError(
                    f"Node {self.name!r}: input {port!r} has no value ({key} was not produced, "
                    "its node was skipped).",
                    node=self.name,
                )
        for port, key in self.overrides:
            value = state.get(key)
            if value is not None:
                inputs[port] = value
        return inputs


def _cache_key(gather: _Gather) -> Callable[[Any], str]:
    def key(state: Any) -> str:
        try:
            inputs = gather(dict(state))
        except FlowRunError:
            return "missing"
        summary = jsonable(inputs)
        for value in inputs.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Image | Audio | Video) and Path(item.path).exists():
                    stat = Path(item.path).stat()
                    summary[f"~{item.path}"] = [stat.st_size, stat.st_mtime_ns]
        text = json.dumps(summary, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    return key


def environment_runtime(plan: Plan) -> RuntimeFactory:
    """A factory for runs started without a FlowRuntime (LangGraph Server): one runtime per
    compiled graph, built on first use from the environment — keys from the conventional
    variables, media under ``./out/<flow>`` — and kept by this graph alone (no module global).
    """
    built: list[FlowRuntime] = []

    def factory(context: Any) -> FlowRuntime:
        if not built:
            from calliope_graph.context import RunContext
            from calliope_graph.flow.trace import Trace

            ctx = RunContext.create(Path("out") / plan.spec.name, catalog=plan.catalog)
            trace = Trace(flow=plan.spec.name, thread_id="server", started_at=time.time())
            built.append(FlowRuntime(ctx=ctx, trace=trace, record=False))
        return built[0]

    return factory


def _runtime(context: Any, factory: RuntimeFactory) -> FlowRuntime:
    return context if isinstance(context, FlowRuntime) else factory(context)


def _node_function(plan: Plan, name: str, factory: RuntimeFactory) -> Callable[..., Any]:
    node = plan.nodes[name]
    root = plan.root(name)
    gather = _Gather(plan, name)
    is_via = name in plan.rewrites_for  # ``name`` rewrites other nodes' inputs
    via_port = plan.rewrite_port(name)  # where the refused value arrives (may be none)
    my_request, my_halt, my_rewrites = request_key(name), halt_key(name), rewrites_key(name)

    async def run(state: dict[str, Any]) -> Any:
        # get_runtime() rather than a ``runtime`` parameter: LangGraph's per-call parameter
        # injection costs more than the rest of this wrapper (see benchmarks/).
        flow_rt = _runtime(get_runtime(FlowRuntime).context, factory)
        halted = bool(state.get(my_halt))
        if halted:  # stopped on a failure no route took; continues when resumed
            interrupt({"node": name, "resume": "run it again"})
        inputs = gather(state)
        request: dict[str, Any] | None = state.get(my_request) if is_via else None
        if request is not None and via_port is not None:
            inputs[via_port] = request["value"]
        iteration = int(state.get(my_rewrites) or 0) + 1
        outputs = await flow_rt.execute(name, node, inputs, iteration=iteration)
        if request is not None:
            value = outputs[request["output"]]
            return Command(
                goto=request["node"],
                update={
                    override_key(request["node"], request["port"]): value,
                    my_request: None,
                    **({my_halt: None} if halted else {}),
                },
            )
        update = {port_key(root, port): value for port, value in outputs.items()}
        if halted:
            update[my_halt] = None
        return update

    run.__name__ = f"node_{name}"
    return run


def _handler(plan: Plan, name: str, factory: RuntimeFactory) -> Callable[..., Any]:
    routes: list[ErrorRoute] = list(plan.spec.nodes[name].on_error)
    gather = _Gather(plan, name)
    join = done_name(plan.root(name))
    my_rewrites = rewrites_key(name)

    async def handle(state: dict[str, Any], error: NodeError, runtime: Runtime[FlowRuntime]) -> Any:
        flow_rt = _runtime(runtime.context, factory)
        exc = error.error
        classes = set(error_classes(exc))
        count = int(state.get(my_rewrites) or 0)
        for route in routes:
            if not classes & set(route.when):
                continue
            if route.rewrite is not None:
                rw = route.rewrite
                if count >= (rw.max_attempts or 0):
                    continue
                value = gather(state).get(rw.port)
                output = rw.output or plan.nodes[rw.via].output_ports[0].name
                flow_rt.routed(name, exc, f"rewrite:{rw.via}", status="fallback")
                return Command(
                    goto=rw.via,
                    update={
                        my_rewrites: count + 1,
                        request_key(rw.via): {
                            "node": name,
                            "port": rw.port,
                            "output": output,
                            "value": value,
                        },
                    },
                )
            if route.goto == CONTINUE:
                flow_rt.routed(name, exc, "continue", status="skipped")
                return Command(goto=join)
            assert route.goto is not None
            flow_rt.routed(name, exc, f"fallback:{route.goto}", status="fallback")
            return Command(goto=route.goto)
        # No route takes this failure: the run stops here. With a checkpointer the node is
        # sent work again, and pauses on a LangGraph interrupt before running: the run ends
        # with the node pending, and a resumed run (Command(resume=...)) runs it then goes
        # on. (Raising here would leave nothing pending to resume.)
        flow_rt.halted = (name, exc)
        if not flow_rt.resumable:
            raise exc
        return Command(goto=name, update={halt_key(name): True})

    handle.__name__ = f"on_error_{name}"
    return handle


def _destinations(plan: Plan, name: str, edges: list[Edge]) -> dict[str, str]:
    """Where ``name`` may route with ``Command(goto=...)``, labelled as the spec's edges are
    (so ``compiled.get_graph()`` draws them like our own drawings)."""
    out: dict[str, str] = {}
    join = done_name(plan.root(name))
    for edge in edges:
        if edge.source != name:
            continue
        if edge.kind in ("fallback", "rewrite") and edge.target is not None:
            out[edge.target] = edge.label
        elif edge.kind == "continue":
            out[join] = edge.label
        elif edge.kind == "rewrite_back" and edge.target is not None:
            out[edge.target] = "retry"
    if plan.has_routes(name) and join not in out and name == plan.root(name):
        out[join] = "ok"
    return out


def _retry_policy(plan: Plan, name: str) -> RetryPolicy | None:
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


def _cache_policy(plan: Plan, name: str, cache_all: bool) -> CachePolicy[Any] | None:
    if name in plan.routed:
        return None  # routed nodes depend on the failure that sent them work
    cache = plan.spec.nodes[name].cache
    if not cache and not cache_all:
        return None
    ttl = cache.ttl if isinstance(cache, CacheSpec) else None
    return CachePolicy(key_func=_cache_key(_Gather(plan, name)), ttl=int(ttl) if ttl else None)


def compile_plan(
    plan: Plan,
    *,
    checkpointer: Checkpointer = None,
    cache: BaseCache[Any] | None = None,
    runtime_factory: RuntimeFactory | None = None,
) -> CompiledFlowGraph:
    """The LangGraph graph of ``plan`` (with ``cache``, every non-routed node is cached).

    Runs get their :class:`FlowRuntime` as LangGraph context; ``runtime_factory`` builds one
    for runs started without it (default: :func:`environment_runtime`, for LangGraph Server).
    """
    factory = runtime_factory or environment_runtime(plan)
    edges = plan.spec.edges()
    graph: StateGraph[Any, FlowRuntime, Any, Any] = StateGraph(
        _state_schema(plan), context_schema=FlowRuntime
    )
    for name in plan.order:
        kwargs: dict[str, Any] = {}
        if plan.has_routes(name):
            kwargs["error_handler"] = _handler(plan, name, factory)
        destinations = _destinations(plan, name, edges)
        if destinations:
            kwargs["destinations"] = destinations
        timeout = plan.spec.nodes[name].timeout
        if timeout is not None:
            kwargs["timeout"] = timeout
        graph.add_node(
            name,
            _node_function(plan, name, factory),
            retry_policy=_retry_policy(plan, name),
            cache_policy=_cache_policy(plan, name, cache is not None),
            **kwargs,
        )
        if plan.has_routes(name) and name == plan.root(name):
            graph.add_node(done_name(name), _join)
            graph.add_edge(name, done_name(name))
    for fallback in plan.stands_in:
        if fallback not in plan.rewrites_for:
            graph.add_edge(fallback, done_name(plan.root(fallback)))

    # Data edges: a node waits on its sources (their join nodes when they have routes).
    consumed: set[str] = set()
    for name in plan.order:
        if name in plan.routed:
            continue
        sources = sorted({_link(plan, e.source) for e in edges if _feeds(e, name)})
        consumed |= {e.source for e in edges if _feeds(e, name)}
        if not sources:
            graph.add_edge(START, name)
        elif len(sources) == 1:
            graph.add_edge(sources[0], name)
        else:
            graph.add_edge(sources, name)
    for name in plan.order:
        if name not in plan.routed and name not in consumed:
            graph.add_edge(_link(plan, name), END)
    if cache is not None and not isinstance(cache, MediaCheckedCache):
        cache = MediaCheckedCache(cache)
    return graph.compile(checkpointer=checkpointer, cache=cache, name=plan.spec.name)


def _feeds(edge: Edge, target: str) -> bool:
    return edge.kind == "data" and edge.target == target and edge.source != INPUTS


async def _join(state: dict[str, Any]) -> None:
    """A node's join point: reached on success, after its fallback, or on ``continue``."""
    return None
