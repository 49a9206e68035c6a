"""Every name a compiled flow invents: its state keys and its generated nodes and flows.

One module, imported by the kernel, every construct's lowering and the runner, so no two
places spell a key differently and a new construct finds here the names already taken.
Nothing here imports LangGraph (validation and the CLI's ``validate`` may import it freely).

State keys (one LangGraph channel each):

- ``port_key`` — ``"story.text"``: output ``text`` of node ``story`` (a fallback publishes
  under its root's); ``input_key`` — ``"inputs.image"``: a flow input.
- Routes (:mod:`calliope_graph.flow.routes`): ``rewrites_key`` ``"~rw.<node>"`` (rewrites so
  far), ``override_key`` ``"~ovr.<node>.<port>"`` (a rewritten input), ``request_key``
  ``"~req.<via>"`` (what a rewriter is asked to fix), ``HALT_KEY`` ``"~halt"`` (``{node: cause}``
  of the failures no route took: those nodes pause until resumed; one channel for all nodes,
  as a channel per node cost every step of every run a little).
- Map (:mod:`calliope_graph.flow.map`): ``map_key`` ``"~map.<node>"`` (``{index: outputs}`` of
  the items so far), ``ITEM_KEY`` ``"~item"`` (a ``Send`` payload's ``{index, value}``),
  ``FAILED`` ``"~failed"`` (an item's outputs when it failed and no route took it).
- ``TYPES_KEY`` ``"~types"``: never written; its type lists the value types of the state.

Generated nodes: ``done_name`` ``<node>__done`` (a routed node's join), ``fan_name``
``<node>__each`` and ``gather_name`` ``<node>__gather`` (a map), ``lane_name``
``<first>__lane`` (a chain run as one task), ``IO_INPUTS``/``IO_OUTPUTS`` (``~inputs``,
``~outputs``: a served graph's first and last node).

Generated flows (a map item with routes, a lane): ``derived_flow_name`` names them; their
inputs are ``ITEM_INPUT`` (the map item) and ``parent_input(i)`` (``p0``, ``p1``... each a
parent state key); ``published_output(i)`` (``o0``...) names what a lane hands back.
"""

from __future__ import annotations

__all__ = [
    "FAILED",
    "HALT_KEY",
    "IO_INPUTS",
    "IO_OUTPUTS",
    "ITEM_INPUT",
    "ITEM_KEY",
    "TYPES_KEY",
    "derived_flow_name",
    "done_name",
    "fan_name",
    "gather_name",
    "input_key",
    "item_flow_title",
    "lane_name",
    "map_key",
    "override_key",
    "parent_input",
    "port_key",
    "published_output",
    "request_key",
    "rewrites_key",
]


# -- state keys --------------------------------------------------------------------------------
def port_key(node: str, port: str) -> str:
    """The state key of output ``port`` of ``node`` (a fallback publishes under its root's)."""
    return f"{node}.{port}"


def input_key(name: str) -> str:
    """The state key of flow input ``name``."""
    return f"inputs.{name}"


def rewrites_key(node: str) -> str:
    """How many times a rewrite loop has rewritten ``node``'s input."""
    return f"~rw.{node}"


def override_key(node: str, port: str) -> str:
    """A rewritten value replacing ``node``'s input ``port``."""
    return f"~ovr.{node}.{port}"


def request_key(via: str) -> str:
    """What a rewriter ``via`` is asked to fix: ``{node, port, output, value}``."""
    return f"~req.{via}"


HALT_KEY = "~halt"
"""``{node: cause}``, set when ``node`` failed and no route took it: it pauses until resumed
(``None`` clears it)."""


def map_key(node: str) -> str:
    """The state channel collecting ``{index: outputs}`` of mapped node ``node``'s items."""
    return f"~map.{node}"


ITEM_KEY = "~item"
"""Where a map item's ``Send`` payload carries ``{"index": i, "value": item}``."""
FAILED = "~failed"
"""The key of an item's outputs that says the item failed (no route took the failure)."""
TYPES_KEY = "~types"
"""A state key that is never written: its type lists the value types of the state."""


# -- generated nodes -----------------------------------------------------------------------------
def done_name(node: str) -> str:
    """The join node of ``node`` (reached on success, after a fallback, or on continue)."""
    return f"{node}__done"


def fan_name(node: str) -> str:
    """The node that sends one task per item of mapped node ``node``."""
    return f"{node}__each"


def gather_name(node: str) -> str:
    """The node that assembles mapped node ``node``'s outputs in item order."""
    return f"{node}__gather"


def lane_name(first: str) -> str:
    """The node running the chain that starts at ``first`` as one task (a lane)."""
    return f"{first}__lane"


#: The nodes a served graph adds (``compile.GraphIO``): the first and the last to run.
IO_INPUTS, IO_OUTPUTS = "~inputs", "~outputs"


# -- generated flows -----------------------------------------------------------------------------
def derived_flow_name(flow: str, title: str) -> str:
    """The name of a flow derived from ``flow`` (a map item's, a lane's)."""
    return f"{flow}__{title}"


def item_flow_title(node: str) -> str:
    """The title of the flow one item of mapped node ``node`` runs."""
    return f"{node}_item"


ITEM_INPUT = "item"
"""The input of a derived flow that carries the current map item."""


def parent_input(index: int) -> str:
    """The ``index``-th input of a derived flow: a value read from the parent's state."""
    return f"p{index}"


def published_output(index: int) -> str:
    """The ``index``-th output of a lane's flow: a port the lane publishes to its parent."""
    return f"o{index}"
