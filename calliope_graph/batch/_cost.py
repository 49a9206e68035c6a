"""What an item cost, from what it actually called and the catalog's list prices.

Each provider request of the item's trace carries its cost (``NodeExecution.provider_calls``,
priced when its node ended by :mod:`calliope_graph._pricing`: from the usage the provider
reported, estimating only what it did not report). An item's cost is the sum over the
executions of this attempt — not those carried over from an earlier attempt, which that
attempt's manifest line counted, except those of an attempt killed or stopped before it
wrote a line (``unbilled``: replayed from the output journal or carried in the trace) —
wherever they ran: inside maps and subflows too. A trace written before requests were
recorded is priced per execution as before, its model found by following the execution's
qualified name (``scenes[0]/illustration/image``) down to its own (sub)flow's plan.

Failed, refused and retried requests are not billed (providers do not charge for them, or
charge too little to matter here). A request whose model has no price makes the item's cost
unknown (``None``): the batch says how many items that affects.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from calliope_graph._pricing import (
    CHARS_PER_TOKEN,
    call_cost,
    estimate_figures,
    image_price_of,
)
from calliope_graph.config import ModelConfig, ModelPrice
from calliope_graph.errors import CalliopeError
from calliope_graph.flow.trace import NodeExecution, Trace

if TYPE_CHECKING:
    from calliope_graph.flow.validate import Plan

__all__ = ["estimate_item_cost", "execution_cost", "trace_cost"]

_STEP = re.compile(r"^(?P<name>.+?)(?:\[\d+\])?$")


def _node(plan: Plan, qualified: str) -> Any:
    """The node a qualified execution name (``scenes[0]/illustration/image``) ran: each step
    but the last is a subflow (or mapped subflow) node whose own plan holds the next."""
    steps = qualified.split("/")
    for step in steps[:-1]:
        match = _STEP.match(step)
        child = plan.nodes.get(match["name"] if match else step)
        sub = getattr(child, "plan", None)
        if sub is None:
            return None
        plan = sub
    return plan.nodes.get(steps[-1])


def _config(plan: Plan, node: str) -> ModelConfig | None:
    instance = _node(plan, node)
    model = getattr(instance, "model", None)
    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, str):
        try:
            return plan.catalog.get(model)
        except CalliopeError:
            return None
    return None


def execution_cost(execution: NodeExecution, config: ModelConfig | None) -> tuple[float, bool]:
    """(USD, priced) of one execution in this attempt; ``priced`` is False when its model
    has no price."""
    if (execution.resumed and not execution.unbilled) or execution.cache_hit:
        return 0.0, True
    if execution.provider_calls:
        costs = [c.cost_usd for c in execution.provider_calls if c.status == "ok"]
        if None in costs:
            return 0.0, False
        return sum(c or 0.0 for c in costs), True
    if execution.status != "ok":
        return 0.0, True
    if config is None:
        return 0.0, execution.provider is None  # a provider call of an unknown model
    price = config.price
    if price is None:
        return 0.0, False
    return _priced(price, config, execution.inputs, execution.outputs, execution.params), True


def _priced(
    price: ModelPrice,
    config: ModelConfig,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    params: dict[str, Any],
) -> float:
    """An execution of a trace that recorded no provider calls, priced as one request
    whose usage is estimated the way an unreported call's is."""
    figures = estimate_figures(price, config, inputs, outputs, params)
    image_price = image_price_of(price, config, outputs, params)
    return call_cost(figures, price, image_price, per_request=True)


def trace_cost(trace: Trace, plan: Plan) -> float | None:
    """The item's cost in USD from its trace, or None when a model it called has no price."""
    total, known = 0.0, True
    for execution in trace.executions:
        cost, priced = execution_cost(execution, _config(plan, execution.node))
        total += cost
        known = known and priced
    return round(total, 6) if known else None


def estimate_item_cost(plan: Plan) -> float | None:
    """What one item is expected to cost before any has finished: one call of each node on
    the main path (routed nodes — fallbacks, rewriters — are assumed not to run), with a
    200-token prompt and ``max_tokens`` (else 300) of completion; a subflow node (mapped or
    not) as one run of its flow. None when unpriced."""
    total = 0.0
    for name in plan.order:
        if name in plan.routed:
            continue
        node = plan.nodes[name]
        child = getattr(node, "plan", None)
        if child is not None:
            inner = estimate_item_cost(child)
            if inner is None:
                return None
            total += inner
            continue
        if getattr(node, "model", None) is None:
            continue
        config = _config(plan, name)
        if config is None or config.price is None:
            return None
        price = config.price
        out_tokens = float(config.parameters.get("max_tokens") or 300)
        fake_in = {"prompt": "x" * int(200 * CHARS_PER_TOKEN)}
        fake_out = {"text": "x" * int(out_tokens * CHARS_PER_TOKEN)}
        outputs: dict[str, Any] = dict(fake_out)
        kinds = {p.type.value for p in getattr(node, "outputs", ())}
        if "image" in kinds:
            outputs = {"image": {"type": "image"}}
        elif "video" in kinds:
            outputs = {"video": {"type": "video"}}
        elif "audio" in kinds:
            outputs = {"audio": {"type": "audio"}}
        inputs: dict[str, Any] = dict(fake_in)
        if any(p.type.value == "audio" for p in getattr(node, "inputs", ())):
            inputs["audio"] = {"type": "audio"}
        total += _priced(price, config, inputs, outputs, {})
    return round(total, 6)
