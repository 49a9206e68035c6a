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
  straight from a ``continue`` — so consumers waiting on it never wait forever. A routed
  node nothing waits on (it only ends the run: ``illustrate``'s image) gets none: it and its
  fallbacks end the run themselves, one superstep less per run (:func:`_ending_alone`).
- Edges come from :meth:`FlowSpec.edges` (the list the validator and drawings read); routes
  are declared as ``destinations`` so ``compiled.get_graph()`` draws them.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

from langgraph.cache.base import BaseCache
from langgraph.errors import GraphBubbleUp, GraphInterrupt, NodeError
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import CachePolicy, Checkpointer, Command, RetryPolicy, Send, interrupt
from typing_extensions import TypedDict

from calliope_graph._schema import get_field
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
from calliope_graph.flow._subflow import Subflow
from calliope_graph.flow.spec import (
    CONTINUE,
    INPUTS,
    CacheSpec,
    Edge,
    ErrorRoute,
    FlowSpec,
    InputSpec,
    NodeSpec,
    Ref,
    parse_ref,
)
from calliope_graph.flow.trace import jsonable
from calliope_graph.flow.validate import Plan, check
from calliope_graph.media import Audio, Image, Video

__all__ = ["CompiledFlowGraph", "GraphIO", "RuntimeFactory", "compile_plan", "environment_runtime"]

_MISSING = object()

#: Builds the FlowRuntime of a run that was started without one (LangGraph Server passes
#: its own context, or none): called with whatever the caller gave as context, inside the
#: node that needs it (so ``langgraph.config.get_config()`` gives the run's config, thread
#: id included). It may be async (a server's factory builds the run's media directory in a
#: worker thread); a factory is called until a run's runtime exists, so it caches per run.
RuntimeFactory = Callable[[Any], FlowRuntime | Awaitable[FlowRuntime]]
#: What :func:`compile_plan` returns: LangGraph's compiled graph, with a FlowRuntime context.
CompiledFlowGraph = CompiledStateGraph[Any, FlowRuntime, Any, Any]

#: A state key that is never written: its type lists the value types of the state.
TYPES_KEY = "~types"
#: The nodes a :class:`GraphIO` adds: the first and the last to run.
IO_INPUTS, IO_OUTPUTS = "~inputs", "~outputs"


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


def _state_schema(plan: Plan, io: GraphIO | None = None) -> type[Any]:
    keys: dict[str, Any] = {input_key(name): Any for name in plan.spec.inputs}
    if io is not None:
        keys |= {name: Any for name in plan.spec.inputs}
        keys |= {name: Any for name in plan.spec.outputs}
        if io.halt_all:
            keys |= {halt_key(name): Any for name in plan.spec.nodes}
        if io.value_types:  # never written: it declares what the other keys may hold
            keys[TYPES_KEY] = Union[io.value_types]  # noqa: UP007
    for name, node in plan.nodes.items():
        if name in plan.stands_in:
            continue
        for port in node.output_ports:
            keys[port_key(name, port.name)] = Any
    for name in plan.item_types:
        keys[map_key(name)] = Annotated[dict[int, Any], _merge_items]
    if plan.item_types:
        keys[ITEM_KEY] = Any
    for name, node_spec in plan.spec.nodes.items():
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
    if name in plan.item_types:
        return gather_name(name)
    return done_name(name) if plan.has_routes(name) else name


ITEM_KEY = "~item"
"""Where a map item's Send payload carries ``{"index": i, "value": item}``."""


class _Gather:
    """Reads a node's inputs from state: field paths into objects, the current map item,
    ``many`` ports gathering present values (a map's list extends them), and a list of
    sources into a one-value port taking whichever produced (a switch's branches)."""

    def __init__(self, plan: Plan, name: str) -> None:
        node = plan.nodes[name]
        self.many = {p.name for p in node.input_ports if p.many}
        self.required = {p.name for p in node.input_ports if p.required}
        scope = plan.item_scope(name)
        spec = plan.spec.nodes[scope].map if scope is not None else None
        item = spec.as_ if spec is not None else None
        self.sources: list[tuple[str, str, tuple[str, ...]]] = []
        for port, ref in plan.wiring[name]:
            if item is not None and ref.node == item:
                path = tuple(f for f in (ref.port, *ref.fields) if f)
                self.sources.append((port, ITEM_KEY, path))
            elif ref.is_input:
                self.sources.append((port, input_key(ref.port), ref.fields))
            else:
                self.sources.append((port, port_key(ref.node, ref.port), ref.fields))
        self.overrides = [
            (route.rewrite.port, override_key(name, route.rewrite.port))
            for route in plan.spec.nodes[name].on_error
            if route.rewrite is not None
        ]
        self.name = name

    def _read(self, state: dict[str, Any], key: str, fields: tuple[str, ...]) -> Any:
        value = state.get(key, _MISSING)
        if key == ITEM_KEY and isinstance(value, dict):
            value = value.get("value", _MISSING)
        for name in fields:
            if value is _MISSING or value is None:
                return value
            try:
                value = get_field(value, name)
            except KeyError as exc:
                raise FlowRunError(
                    f"Node {self.name!r}: cannot read {'.'.join(fields)!r} of {key!r}: "
                    f"{exc.args[0]}.",
                    node=self.name,
                ) from None
        return value

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for port, key, fields in self.sources:
            value = self._read(state, key, fields)
            present = value is not _MISSING and value is not None
            if port in self.many:
                bucket = inputs.setdefault(port, [])
                if present:
                    bucket.extend(value) if isinstance(value, list) else bucket.append(value)
            elif present and port not in inputs:  # first present source wins
                inputs[port] = value
        for port, key in self.overrides:
            value = state.get(key)
            if value is not None:
                inputs[port] = value
        wired = {p for p, _, _ in self.sources}
        for port in sorted((wired & self.required) - set(inputs) - self.many):
            keys = [k for p, k, _ in self.sources if p == port]
            raise FlowRunError(
                f"Node {self.name!r}: input {port!r} has no value ({' or '.join(keys)} was not "
                "produced: its node was skipped).",
                node=self.name,
            )
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


async def _built(context: Any, factory: RuntimeFactory) -> FlowRuntime:
    """The run's FlowRuntime from a context that is not one (see :data:`RuntimeFactory`)."""
    made = factory(context)
    return await made if inspect.isawaitable(made) else made


async def _current(factory: RuntimeFactory) -> FlowRuntime:
    """The FlowRuntime of the run in progress (built by ``factory`` when not given)."""
    context = get_runtime(FlowRuntime).context
    return context if isinstance(context, FlowRuntime) else await _built(context, factory)


def _node_function(
    plan: Plan, name: str, factory: RuntimeFactory, cache: BaseCache[Any] | None = None
) -> Callable[..., Any]:
    node = plan.nodes[name]
    root = plan.root(name)
    gather = _Gather(plan, name)
    is_via = name in plan.rewrites_for  # ``name`` rewrites other nodes' inputs
    via_port = plan.rewrite_port(name)  # where the refused value arrives (may be none)
    my_request, my_halt, my_rewrites = request_key(name), halt_key(name), rewrites_key(name)
    child = None
    if isinstance(node, Subflow):
        child = _Subflow(node._plan(), cache, factory)
    targets = plan.switches.get(name, [])

    async def run(state: dict[str, Any]) -> Any:
        # get_runtime() rather than a ``runtime`` parameter: LangGraph's per-call parameter
        # injection costs more than the rest of this wrapper (see benchmarks/).
        context = get_runtime(FlowRuntime).context
        flow_rt = context if isinstance(context, FlowRuntime) else await _built(context, factory)
        halt = state.get(my_halt)
        halted = bool(halt)
        if halted:  # stopped on a failure no route took; continues when resumed
            interrupt({**(halt if isinstance(halt, dict) else {"node": name}), **_RESUME})
        inputs = gather(state)
        request: dict[str, Any] | None = state.get(my_request) if is_via else None
        if request is not None and via_port is not None:
            inputs[via_port] = request["value"]
        iteration = int(state.get(my_rewrites) or 0) + 1
        work = child.work(flow_rt, name, inputs) if child is not None else None
        outputs = await flow_rt.execute(name, node, inputs, iteration=iteration, work=work)
        if targets:
            return _switch_command(flow_rt, name, node.kind, root, outputs, targets)
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


def _switch_command(
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


class _Subflow:
    """A child flow run as a LangGraph subgraph inside one node's task: compiled once,
    invoked with the parent's checkpointer (its own checkpoint namespace, so it resumes
    inside) and a scoped view of the parent's runtime (its executions nest in the trace)."""

    def __init__(self, plan: Plan, cache: BaseCache[Any] | None, factory: RuntimeFactory):
        self.plan = plan
        self.graph = compile_plan(plan, cache=cache, runtime_factory=factory)
        self.outputs = [(out, parse_ref(target)) for out, target in plan.spec.outputs.items()]

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

        async def run() -> dict[str, Any]:
            state = {input_key(k): v for k, v in inputs.items()}
            final = await self.graph.ainvoke(state, context=scoped)
            if "__interrupt__" in final:  # paused inside: the parent pauses with it
                raise GraphInterrupt(final["__interrupt__"])
            return {out: read_ref(final, ref) for out, ref in self.outputs}

        return run


def read_ref(state: dict[str, Any], ref: Ref) -> Any:
    """What ``ref`` reads in a flow's state (None when it was not produced)."""
    key = input_key(ref.port) if ref.is_input else port_key(ref.node, ref.port)
    value = state.get(key)
    for field_name in ref.fields:
        value = get_field(value, field_name) if value is not None else None
    return value


# -- map: Send per item, a gather in item order ---------------------------------------------------
def map_key(node: str) -> str:
    """The state channel collecting ``{index: outputs}`` of mapped node ``node``'s items."""
    return f"~map.{node}"


def fan_name(node: str) -> str:
    return f"{node}__each"


def gather_name(node: str) -> str:
    return f"{node}__gather"


def _merge_items(left: dict[int, Any] | None, right: dict[int, Any] | None) -> dict[int, Any]:
    return {**(left or {}), **(right or {})}


def _item_members(plan: Plan, name: str) -> list[str]:
    """``name`` and every node its routes may send work to (the work of one map item)."""
    members = [name]
    for member in members:
        for route in plan.spec.nodes[member].on_error:
            target = route.rewrite.via if route.rewrite is not None else route.goto
            if target and target != CONTINUE and target not in members:
                members.append(target)
    return members


def _item_plan(plan: Plan, name: str) -> tuple[Plan, dict[str, str]]:
    """The flow one item of mapped node ``name`` runs — the node (without its map) and the
    nodes its routes send work to — so its fallbacks, rewrites and ``continue`` apply to
    that item alone. What they read from the parent arrives as inputs: ``item`` and
    ``p0``, ``p1``, ... (returned: child input → parent state key)."""
    mapping = plan.spec.nodes[name].map
    assert mapping is not None
    outputs = {p.name: f"{name}.{p.name}" for p in plan.nodes[name].output_ports}
    return _derived_plan(
        plan, f"{name}_item", _item_members(plan, name), outputs, item_as=mapping.as_
    )


def _derived_plan(
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
        child_inputs["item"] = InputSpec(type="any", required=False)

    def rewrite(text: str) -> str:
        ref = parse_ref(text)
        tail = ".".join(f for f in (ref.port, *ref.fields) if f)
        if item_as is not None and ref.node == item_as:
            return f"{INPUTS}.item" + (f".{tail}" if tail else "")
        if ref.node in members:
            return text
        key = input_key(ref.port) if ref.is_input else port_key(ref.node, ref.port)
        alias = next((a for a, k in parent_keys.items() if k == key), None)
        if alias is None:
            alias = f"p{len(parent_keys)}"
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
        name=f"{spec.name}__{title}",
        description=f"{title} of {spec.name!r}",
        inputs=child_inputs,
        nodes=nodes,
        outputs=outputs,
        catalog=spec.catalog,
    )
    child_spec._source = spec.source
    child_spec._lines = dict(spec._lines)
    return check(child_spec), parent_keys


# -- lanes: dataflow scheduling -------------------------------------------------------------------
def lane_name(first: str) -> str:
    return f"{first}__lane"


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


class _Lane:
    """A chain of nodes run as one subgraph inside one task, so each node starts the moment
    the one before it ends — not when the slowest node of a sibling branch ends (LangGraph's
    superstep barrier). Names, media folders and the trace are the chain's own."""

    def __init__(
        self, plan: Plan, chain: list[str], factory: RuntimeFactory, cache: BaseCache[Any] | None
    ) -> None:
        members: list[str] = []
        for node in chain:
            members += [m for m in _item_members(plan, node) if m not in members]
        self.published = [(node, p.name) for node in chain for p in plan.nodes[node].output_ports]
        outputs = {f"o{i}": f"{n}.{p}" for i, (n, p) in enumerate(self.published)}
        child_plan, self.parent_keys = _derived_plan(plan, lane_name(chain[0]), members, outputs)
        self.child = _Subflow(child_plan, cache, factory)
        self.factory = factory
        self.name = lane_name(chain[0])

    async def run(self, state: dict[str, Any]) -> dict[str, Any]:
        flow_rt = await _current(self.factory)
        child_in = {a: state.get(k) for a, k in self.parent_keys.items()}
        outputs = await self.child.work(flow_rt, "", child_in)()
        return {
            port_key(node, port): outputs.get(f"o{i}")
            for i, (node, port) in enumerate(self.published)
            if outputs.get(f"o{i}") is not None
        }


_FAILED = "~failed"


class _MapUnit:
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
        self.child: _Subflow | None = None
        self.subflow: _Subflow | None = None
        self.parent_keys: dict[str, str] = {}
        if plan.has_routes(name):
            child_plan, self.parent_keys = _item_plan(plan, name)
            self.child = _Subflow(child_plan, cache, factory)
        else:
            self.gather = _Gather(plan, name)
            if isinstance(self.node, Subflow):
                self.subflow = _Subflow(self.node._plan(), cache, factory)

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
        payload = {k: v for k, v in state.items() if k != map_key(self.name)}
        return Send(self.name, {**payload, ITEM_KEY: {"index": index, "value": item}})

    def route(self, state: dict[str, Any]) -> list[Send] | list[str]:
        items = self._items(state)
        if not items:
            return [gather_name(self.name)]
        return [self._send(state, i, item) for i, item in enumerate(items)]

    async def run_item(self, state: dict[str, Any]) -> dict[str, Any]:
        context = get_runtime(FlowRuntime).context
        flow_rt = (
            context if isinstance(context, FlowRuntime) else await _built(context, self.factory)
        )
        index = int(state[ITEM_KEY]["index"])
        # A subflow puts its media in <node>/<item>/ itself; anything else does it here.
        folder = None if isinstance(self.node, Subflow) else f"{self.name}/{index}"
        scoped = flow_rt.scoped(item=index, folder=folder)
        semaphore = flow_rt.semaphore(self.name, self.bound)
        async with semaphore if semaphore is not None else contextlib.nullcontext():
            if self.child is not None:
                child_in = {"item": state[ITEM_KEY]["value"]}
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
                return {map_key(self.name): {index: {_FAILED: repr(type(exc).__name__)}}}
        return {map_key(self.name): {index: outputs}}

    async def collect(self, state: dict[str, Any]) -> Any:
        done: dict[int, Any] = state.get(map_key(self.name)) or {}
        failed = [i for i in sorted(done) if isinstance(done[i], dict) and _FAILED in done[i]]
        if failed:
            flow_rt = await _current(self.factory)
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


def _handler(
    plan: Plan, name: str, factory: RuntimeFactory, alone: frozenset[str] = frozenset()
) -> Callable[..., Any]:
    routes: list[ErrorRoute] = list(plan.spec.nodes[name].on_error)
    gather = _Gather(plan, name)
    join = END if plan.root(name) in alone else done_name(plan.root(name))
    my_rewrites = rewrites_key(name)

    async def handle(state: dict[str, Any], error: NodeError, runtime: Runtime[FlowRuntime]) -> Any:
        context = runtime.context
        flow_rt = context if isinstance(context, FlowRuntime) else await _built(context, factory)
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
        # What stopped it travels with the pause (redacted, like the trace): a client that
        # sees only the interrupt (LangGraph Server) learns the node and the cause.
        stop = {"node": flow_rt.scope + name, "error_class": error_classes(exc)[0]}
        stop["error"] = flow_rt.describe(exc)
        return Command(goto=name, update={halt_key(name): stop})

    handle.__name__ = f"on_error_{name}"
    return handle


#: What the pause of a halted node asks for (LangGraph's ``Command(resume=...)``).
_RESUME = {"resume": "resume the thread (Command(resume=True)) to run the node again"}


def _destinations(
    plan: Plan, name: str, edges: list[Edge], alone: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Where ``name`` may route with ``Command(goto=...)``, labelled as the spec's edges are
    (so ``compiled.get_graph()`` draws them like our own drawings)."""
    out: dict[str, str] = {}
    join = END if plan.root(name) in alone else done_name(plan.root(name))
    for edge in edges:
        if edge.source != name:
            continue
        if edge.kind in ("fallback", "rewrite") and edge.target is not None:
            out[edge.target] = edge.label
        elif edge.kind == "continue":
            out[join] = edge.label
        elif edge.kind == "rewrite_back" and edge.target is not None:
            out[edge.target] = "retry"
        elif edge.kind == "switch" and edge.target is not None:
            out[edge.target] = edge.label
            out[done_name(edge.target)] = f"not {edge.target}"
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
    factory = runtime_factory or environment_runtime(plan)
    edges = plan.spec.edges()
    graph: StateGraph[Any, Any, Any, Any] = StateGraph(
        _state_schema(plan, io),
        context_schema=io.context_schema if io is not None else FlowRuntime,
        input_schema=io.input_schema if io is not None else None,
        output_schema=io.output_schema if io is not None else None,
    )
    start, end = START, END
    if io is not None:
        start, end = IO_INPUTS, IO_OUTPUTS
        graph.add_node(IO_INPUTS, io.prepare)
        graph.add_edge(START, IO_INPUTS)
        graph.add_node(IO_OUTPUTS, io.finish)
        graph.add_edge(IO_OUTPUTS, END)
    units: dict[str, _MapUnit] = {}
    # The nodes a mapped node's routes send work to run inside its items' subgraphs.
    in_items = {m for n in plan.item_types for m in _item_members(plan, n)} - set(plan.item_types)
    # Chains beside other work run as lanes (dataflow, not superstep by superstep).
    chains = lanes(plan, in_items) if dataflow else []
    laned: dict[str, str] = {}
    for chain in chains:
        lane = _Lane(plan, chain, factory, cache)
        graph.add_node(lane.name, lane.run)
        for node in chain:
            laned[node] = lane.name
            laned.update({m: lane.name for m in _item_members(plan, node)})
    heads = {chain[0]: lane_name(chain[0]) for chain in chains}
    alone = _ending_alone(plan, edges, in_items | set(laned)) if end == END else frozenset()
    for name in plan.order:
        if name in in_items or name in laned:
            continue
        if name in plan.item_types:
            unit = units[name] = _MapUnit(plan, name, factory, cache)
            _add_map(graph, plan, unit)
            continue
        # Every node has an error handler: its routes, else a failure pauses the run there
        # (resumable) instead of raising, so siblings in the same step are not cancelled.
        kwargs: dict[str, Any] = {"error_handler": _handler(plan, name, factory, alone)}
        destinations = _destinations(plan, name, edges, alone)
        if destinations:
            kwargs["destinations"] = destinations
        timeout = plan.spec.nodes[name].timeout
        if timeout is not None:
            kwargs["timeout"] = timeout
        graph.add_node(
            name,
            _node_function(plan, name, factory, cache),
            retry_policy=_retry_policy(plan, name),
            cache_policy=_cache_policy(plan, name, cache is not None),
            **kwargs,
        )
        if plan.has_routes(name) and name == plan.root(name) and name not in alone:
            graph.add_node(done_name(name), _join)
            graph.add_edge(name, done_name(name))
    for fallback in plan.stands_in:
        if fallback not in plan.rewrites_for and fallback not in in_items | set(laned):
            root = plan.root(fallback)
            graph.add_edge(fallback, END if root in alone else done_name(root))

    # Data edges: a node waits on its sources (their join nodes when they have routes).
    consumed: set[str] = set()
    for name in plan.order:
        if name in plan.routed or (name in laned and name not in heads):
            continue
        feeding = {e.source for e in edges if _feeds(e, name) and e.source in plan.nodes}
        for target in plan.switches.get(name, []):  # a switch waits for its branches' inputs
            feeding |= {e.source for e in edges if _feeds(e, target) and e.source in plan.nodes}
        feeding.discard(name)
        sources = sorted({laned.get(s) or _link(plan, s) for s in feeding} - {laned.get(name)})
        consumed |= feeding
        entry = heads.get(name) or (fan_name(name) if name in units else name)
        if not sources:
            graph.add_edge(start, entry)
        elif len(sources) == 1:
            graph.add_edge(sources[0], entry)
        else:
            graph.add_edge(sources, entry)
    final = {
        n if n in alone else laned.get(n) or _link(plan, n)
        for n in plan.order
        if n not in plan.routed
    }
    ends = sorted(final - {laned.get(n) or _link(plan, n) for n in consumed})
    if end == END:
        for link in ends:
            graph.add_edge(link, END)
    else:  # the outputs node waits for every branch to end
        graph.add_edge(ends[0] if len(ends) == 1 else ends, end)
    if cache is not None and not isinstance(cache, MediaCheckedCache):
        cache = MediaCheckedCache(cache)
    return graph.compile(checkpointer=checkpointer, cache=cache, name=plan.spec.name)


def _ending_alone(plan: Plan, edges: list[Edge], elsewhere: set[str]) -> frozenset[str]:
    """Routed nodes that need no join node: nothing waits on them (no node reads them, no
    switch chooses them), none of their routes is ``continue``, they and their fallbacks
    run in the top graph (not in a lane or map item), and the graph ends at ``END`` (each
    branch ends the run on its own; a waiting output node would need the join). A join
    costs every run a superstep — LangGraph plans, runs and checkpoints it like any node."""
    fallbacks: dict[str, list[str]] = {}
    for fallback in plan.stands_in:
        fallbacks.setdefault(plan.root(fallback), []).append(fallback)
    read = {e.source for e in edges if e.kind in ("data", "map") and e.target in plan.nodes}
    out = set()
    for name in plan.order:
        if not plan.spec.nodes[name].on_error or name != plan.root(name):
            continue
        group = [name, *fallbacks.get(name, [])]
        if (
            name in plan.switched
            or name in plan.item_types
            or any(n in read or n in elsewhere or n in plan.rewrites_for for n in group)
            or any(e.source in group and e.kind == "continue" for e in edges)
            or any(plan.spec.nodes[n].on_error for n in group[1:])
        ):
            continue
        out.add(name)
    return frozenset(out)


def _feeds(edge: Edge, target: str) -> bool:
    return edge.kind in ("data", "map") and edge.target == target and edge.source != INPUTS


def _add_map(graph: StateGraph[Any, Any, Any, Any], plan: Plan, unit: _MapUnit) -> None:
    name = unit.name
    spec = plan.spec.nodes[name]
    kwargs: dict[str, Any] = {}
    if spec.timeout is not None:
        kwargs["timeout"] = spec.timeout
    graph.add_node(fan_name(name), _join)
    graph.add_conditional_edges(fan_name(name), unit.route, [name, gather_name(name)])
    graph.add_node(name, unit.run_item, retry_policy=_retry_policy(plan, name), **kwargs)
    graph.add_node(gather_name(name), unit.collect, destinations=(name,))
    graph.add_edge(name, gather_name(name))


async def _join(state: dict[str, Any]) -> None:
    """A node's join point: reached on success, after its fallback, or on ``continue``."""
    return None
