"""The lowering of candidates (:mod:`calliope_graph.flow.candidates`): N runs of one node.

The node's task runs its N candidates at once (``asyncio.gather``), each an execution of its
own in the trace (``item`` = the candidate index) writing its media under ``<node>/<index>/``,
each given seed ``base + index`` when the node has a ``seed`` port and its model ``takes`` one
(``base``: the wired seed, else one derived from the thread and the node, so a resumed run
asks for the same seeds and the journal answers without paying again).

A candidate's failure is matched against the node's routes, for that candidate alone: a
``goto: <node>`` route runs the fallback in its place (its outputs become the candidate), a
``continue`` route drops it (``None`` in every list). A failure no route takes fails the node
once every sibling has finished (so what they paid for is journaled): with a checkpointer the
run pauses there, and resuming runs the node again, its finished candidates answered by the
journal. The outputs are one list per port, in candidate order.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from typing import TYPE_CHECKING, Any

from langgraph.errors import GraphBubbleUp

from calliope_graph.errors import CalliopeError, error_classes
from calliope_graph.flow._gather import Gather
from calliope_graph.flow._runtime import FlowRuntime
from calliope_graph.flow.spec import CONTINUE

if TYPE_CHECKING:
    from calliope_graph.flow._plan import Plan
    from calliope_graph.nodes import Node

__all__ = ["Candidates", "candidate_seeds"]

_SEED_RANGE = 2**31


def candidate_seeds(base: int, count: int) -> list[int]:
    """The seeds of ``count`` candidates: ``base``, ``base + 1``... (kept in the 31-bit range
    every provider takes)."""
    return [(base + index) % _SEED_RANGE for index in range(count)]


class Candidates:
    """How a node with ``candidates: N`` runs (called from the kernel's node function)."""

    def __init__(self, plan: Plan, name: str) -> None:
        self.name, self.count = name, plan.candidates[name]
        self.node = plan.nodes[name]
        self.routes = list(plan.spec.nodes[name].on_error)
        self.fallbacks: dict[str, tuple[Node, Gather]] = {
            r.goto: (plan.nodes[r.goto], Gather(plan, r.goto))
            for r in self.routes
            if r.goto is not None and r.goto != CONTINUE
        }
        self.ports = [p.name for p in self.node.output_ports]

    def seeds(self, flow_rt: FlowRuntime, node: Node, name: str, wired: Any) -> list[int | None]:
        """One seed per candidate when ``node`` has a seed port its model takes, else None."""
        if node.input_port("seed") is None:
            return [None] * self.count
        config = None
        with contextlib.suppress(CalliopeError):
            config = node.model_config_for(flow_rt.ctx)
        if config is None or "seed" not in config.model.takes:
            return [None] * self.count
        if wired is not None:
            from calliope_graph.nodes.text_to_image import seed_of

            base = seed_of(wired, name)
        else:  # the same for a resumed run of this thread, different for another thread
            base = zlib.crc32(f"{flow_rt.trace.thread_id}/{flow_rt.scope}{name}".encode())
        return list(candidate_seeds(base, self.count))

    async def run(
        self, flow_rt: FlowRuntime, state: dict[str, Any], inputs: dict[str, Any], iteration: int
    ) -> dict[str, Any]:
        """Every candidate, then one list per output port (``None`` for a dropped one)."""
        seeds = self.seeds(flow_rt, self.node, self.name, inputs.get("seed"))
        results = await asyncio.gather(
            *(
                self._one(flow_rt, state, inputs, index, seeds[index], iteration)
                for index in range(self.count)
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result  # no route took it (or an interrupt): the node's handler decides
        outputs = [r for r in results if not isinstance(r, BaseException)]
        return {port: [o.get(port) if o else None for o in outputs] for port in self.ports}

    async def _one(
        self,
        flow_rt: FlowRuntime,
        state: dict[str, Any],
        inputs: dict[str, Any],
        index: int,
        seed: int | None,
        iteration: int,
    ) -> dict[str, Any] | None:
        scoped = flow_rt.scoped(item=index, folder=f"{self.name}/{index}")
        mine = inputs if seed is None else {**inputs, "seed": seed}
        try:
            return await scoped.execute(self.name, self.node, mine, iteration=iteration)
        except GraphBubbleUp:
            raise  # an interrupt is not a failure
        except Exception as exc:
            classes = set(error_classes(exc))
            route = next((r for r in self.routes if classes & set(r.when)), None)
            if route is None or route.goto is None:
                raise
            if route.goto == CONTINUE:
                scoped.routed(self.name, exc, "continue", status="skipped")
                return None
            scoped.routed(self.name, exc, f"fallback:{route.goto}", status="fallback")
        node, gather = self.fallbacks[route.goto]
        their = gather(state)
        seed = self.seeds(scoped, node, route.goto, their.get("seed"))[index]
        if seed is not None:
            their["seed"] = seed
        return await scoped.execute(route.goto, node, their, iteration=1)
