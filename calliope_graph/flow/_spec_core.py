"""The core of the flow language every construct's spec builds on: the base model, the
pseudo-nodes ``inputs`` and ``continue``, error class names, references and edges.

Construct modules (:mod:`calliope_graph.flow.routes`, :mod:`calliope_graph.flow.map`, ...)
import their spec fields' building blocks from here, so :mod:`calliope_graph.flow.spec` can
import their fields without a cycle. Everything is re-exported by ``flow.spec``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph.errors import FlowSpecError

__all__ = [
    "CONTINUE",
    "INPUTS",
    "Edge",
    "EdgeKind",
    "ErrorClassName",
    "Ref",
    "parse_ref",
]

#: The pseudo-node that names flow inputs in references (``inputs.image``).
INPUTS = "inputs"
#: The ``goto`` target meaning "skip this node and go on without its outputs".
CONTINUE = "continue"

ErrorClassName = Literal[
    "any",
    "configuration",
    "media",
    "provider",
    "auth",
    "invalid_request",
    "content_policy",
    "rate_limit",
    "transient",
    "timeout",
    "empty",
    "flow_spec",
    "flow_run",
]
"""The names a ``when:`` list may use: each error class's ``error_class`` (see
:func:`calliope_graph.errors.error_class_names`; a test keeps the two equal)."""


def _classes(*names: ErrorClassName) -> list[ErrorClassName]:
    return list(names)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


EdgeKind = Literal["data", "fallback", "continue", "rewrite", "rewrite_back", "map", "switch"]


class Edge(_Model):
    """One edge of the flow graph, as the compiler and the drawings see it.

    ``data``: ``source.source_port`` feeds ``target.target_port`` (``source`` may be
    ``inputs``). ``fallback``: ``source`` fails with ``when`` → ``target`` runs instead.
    ``continue``: ``source`` fails with ``when`` → skipped (``target`` is None).
    ``rewrite``: ``source`` fails with ``when`` → ``target`` rewrites its input
    (``bound`` times at most); ``rewrite_back``: the rewriter's output goes back into the
    failed node's input port and it runs again. ``map``: ``target`` runs once per item of
    ``source.source_port`` (``bound``: at most that many at once). ``switch``: the switch
    ``source`` chooses ``target`` when ``label`` (its condition, or ``default``) holds.
    """

    kind: EdgeKind
    source: str
    target: str | None
    source_port: str | None = None
    target_port: str | None = None
    when: list[str] = Field(default_factory=list)
    bound: int | None = None
    label: str = ""


class Ref(_Model):
    """A parsed reference: ``inputs.<name>``, ``<node>.<port>``, or either followed by a
    field path into an object (``story.object.scenes``, ``scene.image_prompt`` inside a
    map, where ``scene`` is the map's item name)."""

    node: str
    port: str
    fields: tuple[str, ...] = ()

    @property
    def is_input(self) -> bool:
        return self.node == INPUTS

    def __str__(self) -> str:
        return ".".join(p for p in (self.node, self.port, *self.fields) if p)


_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"


def parse_ref(text: str) -> Ref:
    """``"story.text"`` → Ref(node="story", port="text"); ``"story.object.scenes"`` adds a
    field path; a FlowSpecError if malformed."""
    parts = text.strip().split(".")
    if len(parts) == 1 and re.fullmatch(_NAME, parts[0]):
        return Ref(node=parts[0], port="")  # a map's item itself; validation checks that
    if len(parts) < 2 or not all(re.fullmatch(_NAME, p) for p in parts):
        raise FlowSpecError(
            f"Malformed reference {text!r}: write 'inputs.<name>' for a flow input, "
            "'<node>.<port>' for a node's output (e.g. 'story.text'), and '.<field>' after "
            "either to read a field of an object (e.g. 'story.object.title')."
        )
    return Ref(node=parts[0], port=parts[1], fields=tuple(parts[2:]))
