"""The lowering of error routes (:mod:`calliope_graph.flow.routes`) to LangGraph.

Every node gets an ``error_handler`` (:func:`handler`): after the node's ``RetryPolicy`` and
``timeout`` have had their say, it matches the failure's error classes against the node's
``on_error`` routes in order and returns a ``Command(goto=...)`` — to the fallback, to the
rewriter (the attempt count in state), or to the node's join (``continue``; a node without
one: straight to where its paths go, ``paths``). A failure no
route takes pauses the node (resumable) with a checkpointer, else raises. Routes are
declared as ``destinations`` (:func:`destinations`) so ``compiled.get_graph()`` draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import Command

from calliope_graph.errors import error_classes
from calliope_graph.flow._gather import Gather
from calliope_graph.flow._lowering import RuntimeFactory, built
from calliope_graph.flow._names import HALT_KEY, done_name, request_key, rewrites_key
from calliope_graph.flow._runtime import FlowRuntime
from calliope_graph.flow.spec import CONTINUE, Edge, ErrorRoute

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan

__all__ = ["RESUME", "destinations", "handler"]


def handler(
    plan: Plan, name: str, factory: RuntimeFactory, paths: Mapping[str, list[str]] | None = None
) -> Callable[..., Any]:
    """``name``'s error handler. ``paths``: routed nodes without a join node → where their
    paths go instead (END, or the consumers that wait on them alone)."""
    routes: list[ErrorRoute] = list(plan.spec.nodes[name].on_error)
    gather = Gather(plan, name)
    join = _join(plan, name, paths)
    my_rewrites = rewrites_key(name)

    async def handle(state: dict[str, Any], error: NodeError, runtime: Runtime[FlowRuntime]) -> Any:
        context = runtime.context
        flow_rt = context if isinstance(context, FlowRuntime) else await built(context, factory)
        exc = error.error
        if not isinstance(exc, BaseException):
            # A resume whose checkpoint kept the failure only as its text (LangGraph stores a
            # task's error so, and this handler's answer was never saved: the disk filled):
            # its class is unknown, so the node runs again (what it paid for replays).
            return Command(goto=name)
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
        return Command(goto=name, update={HALT_KEY: {name: stop}})

    handle.__name__ = f"on_error_{name}"
    return handle


#: What the pause of a halted node asks for (LangGraph's ``Command(resume=...)``).
RESUME = {"resume": "resume the thread (Command(resume=True)) to run the node again"}


def _join(plan: Plan, name: str, paths: Mapping[str, list[str]] | None) -> str | list[str]:
    """Where ``name``'s ``continue`` goes: its root's join node, or its root's paths."""
    root = plan.root(name)
    targets = (paths or {}).get(root)
    if not targets:
        return done_name(root)
    return targets[0] if len(targets) == 1 else list(targets)


def destinations(
    plan: Plan, name: str, edges: list[Edge], paths: Mapping[str, list[str]] | None = None
) -> dict[str, str]:
    """Where ``name`` may route with ``Command(goto=...)``, labelled as the spec's edges are
    (so ``compiled.get_graph()`` draws them like our own drawings)."""
    out: dict[str, str] = {}
    join = _join(plan, name, paths)
    joins = [join] if isinstance(join, str) else join
    for edge in edges:
        if edge.source != name:
            continue
        if edge.kind in ("fallback", "rewrite") and edge.target is not None:
            out[edge.target] = edge.label
        elif edge.kind == "continue":
            out.update(dict.fromkeys(joins, edge.label))
        elif edge.kind == "rewrite_back" and edge.target is not None:
            out[edge.target] = "retry"
        elif edge.kind == "switch" and edge.target is not None:
            out[edge.target] = edge.label
            out[done_name(edge.target)] = f"not {edge.target}"
    if plan.has_routes(name) and name == plan.root(name):
        out.update({target: "ok" for target in joins if target not in out})
    return out
