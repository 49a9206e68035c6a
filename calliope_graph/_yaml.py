"""Bounds on the YAML and JSON documents people hand us (flow files, catalogs).

PyYAML's safe loader refuses arbitrary objects but not size: a "billion laughs" document
(anchors whose aliases refer to each other) composes into a small graph of shared nodes that
every later walk — our line map, pydantic, a JSON dump — expands exponentially, and its
composer recurses once per nesting level, so 2,000 nested levels end in a ``RecursionError``.
:func:`check_document` reads the parser's *event stream* first (iterative, constant stack),
counting nesting depth and the node count with every alias expanded (each anchor's expanded
size is remembered, so the count costs one pass), and stops at the first bound crossed. No
library bounds alias expansion (ruamel.yaml and PyYAML both only limit the input size), so
this pass is ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "DocumentBoundsError",
    "SafeLoader",
    "check_document",
]

#: PyYAML's safe loader on libyaml (C) where the wheel has it, else the pure-Python one: the
#: same documents, ten times faster (loading a shipped flow reads it three times: the bounds
#: below, the line map, the values).
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Largest flow or catalog file read (a shipped flow is a few KiB).
MAX_BYTES = 1 << 20
#: Deepest nesting of mappings and lists (a shipped flow nests about 8 deep).
MAX_DEPTH = 64
#: Most values a document may hold once every alias is expanded.
MAX_NODES = 100_000


class DocumentBoundsError(ValueError):
    """A document crosses one of the bounds; ``line`` is where (1-based), when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def check_document(text: str, *, is_json: bool = False) -> None:
    """Raise :class:`DocumentBoundsError` if ``text`` is larger, deeper or (with aliases
    expanded) bigger than the bounds; syntax errors are left to the real parse."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise DocumentBoundsError(
            f"the file is {size:,} bytes, over the {MAX_BYTES:,}-byte limit for a flow or "
            "catalog file; split it into subflows or load large data as flow inputs instead"
        )
    if is_json:
        _check_json_depth(text)
        return
    _check_yaml_events(text)


def _check_json_depth(text: str) -> None:
    deep = DocumentBoundsError(
        f"values are nested more than {MAX_DEPTH} levels deep; flatten the structure"
    )
    try:
        data = json.loads(text)
    except RecursionError:
        raise deep from None
    except ValueError:
        return  # a syntax error: the real parse reports it with its position
    level: list[tuple[object, int]] = [(data, 1)]
    while level:  # iterative: a walk that recursed would hit the limit it checks
        value, depth = level.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            if depth > MAX_DEPTH:
                raise deep
            level.extend((child, depth + 1) for child in value)


@dataclass
class _Open:
    """A collection being read: its anchor and how many values it holds so far."""

    anchor: str | None
    count: int = 1


def _check_yaml_events(text: str) -> None:
    stack: list[_Open] = []
    sizes: dict[str, int] = {}  # an anchor's expanded size, for its aliases
    total = 0
    try:
        for event in yaml.parse(text, Loader=SafeLoader):
            line = event.start_mark.line + 1 if event.start_mark is not None else None
            if isinstance(event, yaml.CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise DocumentBoundsError(
                        f"values are nested more than {MAX_DEPTH} levels deep; flatten the "
                        "structure",
                        line,
                    )
                stack.append(_Open(event.anchor))
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                closed = stack.pop()
                weight = closed.count
                if closed.anchor is not None:
                    sizes[closed.anchor] = weight
            elif isinstance(event, yaml.AliasEvent):
                weight = sizes.get(str(event.anchor), 1)
            elif isinstance(event, yaml.ScalarEvent):
                weight = 1
            else:
                continue
            if stack:
                stack[-1].count += weight
                running = stack[-1].count
            else:
                total += weight
                running = total
            if running > MAX_NODES:
                raise DocumentBoundsError(
                    f"with its aliases (*name) expanded the document holds over "
                    f"{MAX_NODES:,} values (an alias bomb?); write the values out or use "
                    "fewer aliases",
                    line,
                )
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml's own bound (1,000 levels), met first
            mark = getattr(exc, "problem_mark", None)
            raise DocumentBoundsError(
                f"values are nested more than {MAX_DEPTH} levels deep; flatten the structure",
                mark.line + 1 if mark is not None else None,
            ) from None
        return  # a syntax error: the real parse reports it with its line
