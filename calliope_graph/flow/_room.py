"""Room on the disk for a provider's answer, checked before the provider is paid.

A speech engine answers with the audio bytes themselves (no URL to fetch them again from):
bytes that fit neither on the disk nor into the output journal's reserve were lost, and the
resume paid for them again (issue 22: 5 of 12 disk sizes with a 623 KiB WAV). So a provider
node does not start when the free space of its output folder is below what its answer will
need — :meth:`~calliope_graph.nodes.Node.answer_bytes`, an estimate per modality and format
(speech from the text's length and the audio format's bitrate, an image from its size; a
video keeps its URL fallback, text needs nothing) — plus what the nodes already running in
this process have claimed on the same disk. It stops with the same
:class:`~calliope_graph.errors.DiskFullError` (exit 4) a full disk gives, before anything
is paid: nothing is lost, and the resume after freeing space runs the node once.

The check costs one ``statvfs`` (in a worker thread: LangGraph Server refuses blocking calls
on its event loop) for a node whose answer is media, nothing for a text node.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from calliope_graph.errors import DiskFullError

if TYPE_CHECKING:
    from calliope_graph.context import RunContext
    from calliope_graph.flow._bookkeeping import Work
    from calliope_graph.nodes import Node

__all__ = ["free_space", "with_room"]

log = logging.getLogger(__name__)

#: Bytes claimed on each disk (``f_fsid``) by provider nodes of this process whose answers
#: are not written yet: a second node checks the free space minus these.
_claimed: Counter[int] = Counter()


def free_space(folder: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(the disk's id, the bytes free for this user) of the disk holding ``folder`` (or its
    nearest existing parent); None where it cannot be told (no ``statvfs``)."""
    path = os.path.abspath(folder)
    while True:
        try:
            stat = os.statvfs(path)
        except (OSError, AttributeError):
            parent = os.path.dirname(path)
            if parent == path or not hasattr(os, "statvfs"):
                return None
            path = parent
            continue
        return stat.f_fsid, stat.f_bavail * stat.f_frsize


def with_room(ctx: RunContext, node: Node, inputs: Mapping[str, Any], work: Work) -> Work:
    """``work`` (a provider node's), first checking that its output folder has room for its
    answer (see the module docstring): a DiskFullError before paying when it has not."""

    async def checked() -> dict[str, Any]:
        needed = _needed(ctx, node, inputs)
        if needed <= 0:
            return await work()
        folder = ctx.store.root
        found = await asyncio.to_thread(free_space, folder)  # off the loop (LangGraph Server)
        if found is None:
            return await work()
        disk, free = found
        if free < needed + _claimed[disk]:
            raise DiskFullError(
                folder=folder,
                needed=needed + _claimed[disk] - free,
                what=f"the answer of node {node.name!r}, not paid for yet",
            )
        _claimed[disk] += needed
        try:
            return await work()
        finally:
            _claimed[disk] -= needed
            if _claimed[disk] <= 0:
                del _claimed[disk]

    return checked


def _needed(ctx: RunContext, node: Node, inputs: Mapping[str, Any]) -> int:
    try:
        return int(node.answer_bytes(ctx, inputs))
    except Exception as exc:  # an estimate never fails the node
        log.debug("No estimate of node %r's answer (%s).", node.name, exc)
        return 0
