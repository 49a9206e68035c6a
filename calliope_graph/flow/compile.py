"""Compilation: a validated flow becomes a real LangGraph ``StateGraph`` (the kernel).

- **State**: one key per produced port and flow input, plus each construct's bookkeeping;
  every key is named in :mod:`calliope_graph.flow._names`. Values are media references and
  text, so checkpoints stay small; nothing secret is ever in state.
- **Context**: the :class:`~calliope_graph.flow._runtime.FlowRuntime` (client, keys, store,
  trace) travels in LangGraph's runtime context.
- **Joins**: a node with several sources gets a waiting edge (``add_edge([a, b], c)``), so it
  runs once, after all of them, in the superstep after the last.
- **Constructs** lower themselves (``flow/_lower_*.py``, registered in
  :mod:`calliope_graph.flow.construct`): error routes are ``error_handler``\\ s returning
  ``Command(goto=...)`` with a ``<node>__done`` join (:mod:`~calliope_graph.flow._lower_routes`;
  a routed node nothing waits on gets none: :func:`~calliope_graph.flow._plan.ending_alone`,
  nor one whose consumers wait on it alone: :func:`~calliope_graph.flow._plan.feeding_alone`),
  a map is a ``Send`` fan-out and a gather (:mod:`~calliope_graph.flow._lower_map`), a switch a
  ``Command`` to the chosen branch (:mod:`~calliope_graph.flow._lower_switch`), a subflow a
  subgraph in the node's task (:mod:`~calliope_graph.flow._lower_subflow`), chains beside other
  work lanes (:mod:`~calliope_graph.flow._lower_lanes`).
- Edges come from :meth:`FlowSpec.edges` (the list the validator and drawings read); routes
  are declared as ``destinations`` so ``compiled.get_graph()`` draws them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

from langgraph.cache.base import BaseCache
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from langgraph.types import CachePolicy, Checkpointer, Command, interrupt
from typing_extensions import TypedDict

from calliope_graph.flow._cache import MediaCheckedCache
from calliope_graph.flow._gather import Gather, cache_key, read_ref
from calliope_graph.flow._lower_candidates import Candidates
from calliope_graph.flow._lower_lanes import Lane
from calliope_graph.flow._lower_routes import RESUME, destinations, handler
from calliope_graph.flow._lower_subflow import SubgraphRunner
from calliope_graph.flow._lower_switch import switch_command
from calliope_graph.flow._lowering import (
    NodeLowering,
    RuntimeFactory,
    built,
    environment_runtime,
    join,
    node_lowerings,
    retry_policy,
)
from calliope_graph.flow._names import (
    HALT_KEY,
    IO_INPUTS,
    IO_OUTPUTS,
    TYPES_KEY,
    done_name,
    input_key,
    lane_name,
    override_key,
    port_key,
    request_key,
    rewrites_key,
)
from calliope_graph.flow._plan import Plan, ending_alone, feeding_alone, item_members
from calliope_graph.flow._runtime import FlowRuntime
from calliope_graph.flow.lanes import lanes
from calliope_graph.flow.spec import CacheSpec, Edge
from calliope_graph.flow.subflow import Subflow

__all__ = [
    "CompiledFlowGraph",
    "GraphIO",
    "RuntimeFactory",
    "compile_plan",
    "environment_runtime",
    "read_ref",
]

#: What :func:`compile_plan` returns: LangGraph's compiled graph, with a FlowRuntime context.
CompiledFlowGraph = CompiledStateGraph[Any, FlowRuntime, Any, Any]


@dataclass(frozen=True)
class GraphIO:
    """The public face of a compiled flow (what :mod:`calliope_graph.serve` gives LangGraph
    Server): the graph takes ``input_schema`` and returns ``output_schema`` instead of its
    internal state, and its runs get ``context_schema`` as context (the factory turns it
    into the run's FlowRuntime).

    ``prepare`` runs first (node ``~inputs``): the public inputs → the flow's state (its
    ``inputs.<name>`` keys). ``finish`` runs last (node ``~outputs``): the final state → the
    public outputs. With ``halt_all``, every node (not only those with error routes) pauses
    on a failure no route takes, so any failed run is resumed the same way
    (``Command(resume=...)`` on its thread).
    """

    input_schema: type[Any]
    output_schema: type[Any]
    context_schema: type[Any]
    prepare: Callable[..., Awaitable[dict[str, Any]]]
    finish: Callable[..., Awaitable[dict[str, Any]]]
    halt_all: bool = True
    value_types: tuple[type, ...] = ()
    """The types the flow's state holds (media, analyses, objects). They are declared in
    the state schema, so a checkpointer the graph is given (the server's) restores them
    under LangGraph's strict msgpack allow-list (``LANGGRAPH_STRICT_MSGPACK=true``)."""


def merge_halts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """The ``HALT_KEY`` channel's reducer: a node's entry set by its pause, dropped (``None``)
    when it runs again."""
    merged = {**(left or {}), **(right or {})}
    return {node: cause for node, cause in merged.items() if cause is not None}


def _state_schema(plan: Plan, io: GraphIO | None = None) -> type[Any]:
    keys: dict[str, Any] = {input_key(name): Any for name in plan.spec.inputs}
    if io is not None:
        keys |= {name: Any for name in plan.spec.inputs}
        keys |= {name: Any for name in plan.spec.outputs}
        if io.value_types:  # never written: it declares what the other keys may hold
            keys[TYPES_KEY] = Union[io.value_types]  # noqa: UP007
    for name, node in plan.nodes.items():
        if name in plan.stands_in:
            continue
        for port in node.output_ports:
            keys[port_key(name, port.name)] = Any
    for lowering in node_lowerings():  # a map's item channels...
        keys |= lowering.state_keys(plan)
    keys[HALT_KEY] = Annotated[dict[str, Any], merge_halts]
    for name, node_spec in plan.spec.nodes.items():
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
    """What consumers of ``name`` wait on: what a construct says (a map: its gather), its
    join node when it has error routes, else itself."""
    for lowering in node_lowerings():
        if lowering.owns(plan, name):
            return lowering.link(name)
    return done_name(name) if plan.has_routes(name) else name


def _node_function(
    plan: Plan, name: str, factory: RuntimeFactory, cache: BaseCache[Any] | None = None
) -> Callable[..., Any]:
    node = plan.nodes[name]
    root = plan.root(name)
    gather = Gather(plan, name)
    is_via = name in plan.rewrites_for  # ``name`` rewrites other nodes' inputs
    via_port = plan.rewrite_port(name)  # where the refused value arrives (may be none)
    my_request, my_rewrites = request_key(name), rewrites_key(name)
    child = None
    if isinstance(node, Subflow):
        child = SubgraphRunner(node._plan(), cache, factory)
    targets = plan.switches.get(name, [])
    candidates = Candidates(plan, name) if name in plan.candidates else None
    state_keys = {port.name: port_key(root, port.name) for port in node.output_ports}

    async def run(state: dict[str, Any]) -> Any:
        # get_runtime() rather than a ``runtime`` parameter: LangGraph's per-call parameter
        # injection costs more than the rest of this wrapper (see benchmarks/).
        context = get_runtime(FlowRuntime).context
        flow_rt = context if isinstance(context, FlowRuntime) else await built(context, factory)
        halt = (state.get(HALT_KEY) or {}).get(name)
        halted = bool(halt)
        if halted:  # stopped on a failure no route took; continues when resumed
            interrupt({**(halt if isinstance(halt, dict) else {"node": name}), **RESUME})
        inputs = gather(state)
        request: dict[str, Any] | None = state.get(my_request) if is_via else None
        if request is not None and via_port is not None:
            inputs[via_port] = request["value"]
        iteration = int(state.get(my_rewrites) or 0) + 1
        if request is not None:  # a rewriter's n-th pass answers its node's n-th rewrite
            iteration = int(state.get(rewrites_key(request["node"])) or iteration)
        work = child.work(flow_rt, name, inputs) if child is not None else None
        if candidates is not None:
            outputs = await candidates.run(flow_rt, state, inputs, iteration)
        else:
            outputs = await flow_rt.execute(name, node, inputs, iteration=iteration, work=work)
        if targets:
            return switch_command(flow_rt, name, node.kind, root, outputs, targets)
        if request is not None:
            value = outputs[request["output"]]
            return Command(
                goto=request["node"],
                update={
                    override_key(request["node"], request["port"]): value,
                    my_request: None,
                    **({HALT_KEY: {name: None}} if halted else {}),
                },
            )
        update = {}  # (a loop, not a comprehension or a call per port: once per node)
        for port, value in outputs.items():
            update[state_keys.get(port) or port_key(root, port)] = value
        if halted:
            update[HALT_KEY] = {name: None}
        return update

    run.__name__ = f"node_{name}"
    return run


def _cache_policy(plan: Plan, name: str, cache_all: bool) -> CachePolicy[Any] | None:
    if name in plan.routed:
        return None  # routed nodes depend on the failure that sent them work
    cache = plan.spec.nodes[name].cache
    if not cache and not cache_all:
        return None
    ttl = cache.ttl if isinstance(cache, CacheSpec) else None
    return CachePolicy(key_func=cache_key(Gather(plan, name)), ttl=int(ttl) if ttl else None)


@dataclass
class _Lowering:
    """One compilation in progress: the graph being built and what the constructs decided
    (which nodes run inside a map item or a lane, which routed nodes end the run alone)."""

    plan: Plan
    graph: StateGraph[Any, Any, Any, Any]
    factory: RuntimeFactory
    cache: BaseCache[Any] | None
    edges: list[Edge]
    start: str = START
    end: str = END
    owned: dict[str, NodeLowering] = field(default_factory=dict)
    """Nodes a construct lowers itself (a map), and its lowering."""
    in_items: set[str] = field(default_factory=set)
    """Nodes that run inside what a construct added (a mapped node's route targets)."""
    laned: dict[str, str] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    alone: frozenset[str] = frozenset()
    paths: dict[str, list[str]] = field(default_factory=dict)
    """Routed nodes without a join node → where all their paths go (END, or consumers)."""
    direct: dict[str, str] = field(default_factory=dict)
    """A consumer of such a node → that node (the one thing it waits on)."""

    def add_io(self, io: GraphIO) -> None:
        """The public face's first and last nodes (see :class:`GraphIO`)."""
        self.start, self.end = IO_INPUTS, IO_OUTPUTS
        self.graph.add_node(IO_INPUTS, io.prepare)
        self.graph.add_edge(START, IO_INPUTS)
        self.graph.add_node(IO_OUTPUTS, io.finish)
        self.graph.add_edge(IO_OUTPUTS, END)

    def add_lanes(self, dataflow: bool) -> None:
        """Chains beside other work run as lanes (dataflow, not superstep by superstep)."""
        plan = self.plan
        self.in_items = set().union(*(lowering.inside(plan) for lowering in node_lowerings()))
        chains = lanes(plan, self.in_items) if dataflow else []
        for chain in chains:
            lane = Lane(plan, chain, self.factory, self.cache)
            self.graph.add_node(lane.name, lane.run)
            for node in chain:
                self.laned[node] = lane.name
                self.laned.update({m: lane.name for m in item_members(plan, node)})
        self.heads = {chain[0]: lane_name(chain[0]) for chain in chains}
        elsewhere = self.in_items | set(self.laned)
        if self.end == END:
            self.alone = ending_alone(plan, self.edges, elsewhere)
        lowered = {n for n in plan.order if any(lw.owns(plan, n) for lw in node_lowerings())}
        fed = feeding_alone(plan, elsewhere | lowered)
        self.paths = {**{name: [END] for name in self.alone}, **fed}
        self.direct = {c: name for name, consumers in fed.items() for c in consumers}

    def add_nodes(self) -> None:
        """Every node the top graph runs itself, its join, and its fallbacks' way to it."""
        plan, graph, paths = self.plan, self.graph, self.paths
        elsewhere = self.in_items | set(self.laned)
        for name in plan.order:
            if name in elsewhere:
                continue
            lowering = next((lw for lw in node_lowerings() if lw.owns(plan, name)), None)
            if lowering is not None:  # a construct lowers it (a map)
                self.owned[name] = lowering
                lowering.add(graph, plan, name, self.factory, self.cache)
                continue
            self.add_node(name)
            if plan.has_routes(name) and name == plan.root(name) and name not in paths:
                graph.add_node(done_name(name), join)
                graph.add_edge(name, done_name(name))
        for fallback in plan.stands_in:
            if fallback not in plan.rewrites_for and fallback not in elsewhere:
                for target in paths.get(plan.root(fallback)) or [done_name(plan.root(fallback))]:
                    graph.add_edge(fallback, target)

    def add_node(self, name: str) -> None:
        # Every node has an error handler: its routes, else a failure pauses the run there
        # (resumable) instead of raising, so siblings in the same step are not cancelled.
        plan = self.plan
        kwargs: dict[str, Any] = {"error_handler": handler(plan, name, self.factory, self.paths)}
        routes = destinations(plan, name, self.edges, self.paths)
        if routes:
            kwargs["destinations"] = routes
        timeout = plan.spec.nodes[name].timeout
        if timeout is not None:
            kwargs["timeout"] = timeout
        kwargs["input_schema"] = self.reads(name)
        self.graph.add_node(
            name,
            _node_function(plan, name, self.factory, self.cache),
            retry_policy=retry_policy(plan, name),
            cache_policy=_cache_policy(plan, name, self.cache is not None),
            **kwargs,
        )

    def reads(self, name: str) -> type[Any]:
        """The state keys node ``name`` (its function, error handler and cache key) reads, as
        its LangGraph input schema: a task then reads those channels, not the whole state."""
        gather = Gather(self.plan, name)
        keys = {key for _, key, _ in gather.sources} | {key for _, key in gather.overrides}
        keys |= {HALT_KEY, rewrites_key(name), request_key(name)}
        # a rewriter numbers its pass by the rewrite count of the node it answers
        keys |= {rewrites_key(target) for target in self.plan.rewrites_for.get(name, [])}
        declared = self.graph.state_schema.__annotations__
        fields = {key: declared[key] for key in sorted(keys) if key in declared}
        schema: type[Any] = TypedDict(  # type: ignore[misc]
            f"{self.plan.spec.name.replace('-', '_')}_{name}_input", fields, total=False
        )
        return schema

    def waits_on(self, name: str) -> str:
        """What a consumer of ``name`` waits on: its lane, its gather or join, or itself."""
        if name in self.paths:
            return name  # no join node: all its paths lead to its consumers (or END)
        return self.laned.get(name) or _link(self.plan, name)

    def add_data_edges(self) -> set[str]:
        """A node waits on its sources (their join nodes when they have routes); returns the
        nodes something waits on."""
        plan = self.plan
        consumed: set[str] = set()
        for name in plan.order:
            if name in plan.routed or (name in self.laned and name not in self.heads):
                continue
            reads = plan.sources(name) - {name}
            consumed |= reads
            if name in self.direct:  # the rest of what it reads was done before that node
                reads = {self.direct[name]}
            sources = sorted({self.waits_on(s) for s in reads} - {self.laned.get(name)})
            owner = self.owned.get(name)
            entry = self.heads.get(name) or (owner.entry(name) if owner is not None else name)
            if not sources:
                self.graph.add_edge(self.start, entry)
            elif len(sources) == 1:
                self.graph.add_edge(sources[0], entry)
            else:
                self.graph.add_edge(sources, entry)
        return consumed

    def add_ends(self, consumed: set[str]) -> None:
        """What nothing waits on ends the run (or feeds the outputs node of a GraphIO)."""
        plan = self.plan
        final = {
            n if n in self.alone else self.waits_on(n) for n in plan.order if n not in plan.routed
        }
        ends = sorted(final - {self.waits_on(n) for n in consumed})
        if self.end == END:
            for link in ends:
                self.graph.add_edge(link, END)
        else:  # the outputs node waits for every branch to end
            self.graph.add_edge(ends[0] if len(ends) == 1 else ends, self.end)


def compile_plan(
    plan: Plan,
    *,
    checkpointer: Checkpointer = None,
    cache: BaseCache[Any] | None = None,
    runtime_factory: RuntimeFactory | None = None,
    dataflow: bool = True,
    io: GraphIO | None = None,
) -> CompiledFlowGraph:
    """The LangGraph graph of ``plan`` (with ``cache``, every non-routed node is cached).

    ``dataflow``: chains that run beside other work become lanes (subgraphs), so a node
    starts when its own inputs are ready; ``False`` compiles node by node (benchmarks).

    Runs get their :class:`FlowRuntime` as LangGraph context; ``runtime_factory`` builds one
    for runs started without it (default: :func:`environment_runtime`). With ``io`` the
    graph has public input and output schemas instead of its state (see :class:`GraphIO`).
    """
    graph: StateGraph[Any, Any, Any, Any] = StateGraph(
        _state_schema(plan, io),
        context_schema=io.context_schema if io is not None else FlowRuntime,
        input_schema=io.input_schema if io is not None else None,
        output_schema=io.output_schema if io is not None else None,
    )
    factory = runtime_factory or environment_runtime(plan)
    lowering = _Lowering(plan, graph, factory, cache, plan.spec.edges())
    if io is not None:
        lowering.add_io(io)
    lowering.add_lanes(dataflow)
    lowering.add_nodes()
    lowering.add_ends(lowering.add_data_edges())
    if cache is not None and not isinstance(cache, MediaCheckedCache):
        cache = MediaCheckedCache(cache)
    return graph.compile(checkpointer=checkpointer, cache=cache, name=plan.spec.name)
