"""A LangGraph cache that only answers with work whose media files still exist.

LangGraph's ``CachePolicy`` replays a node's saved writes without running it. Our writes
hold media *references* (paths), so a hit whose file was deleted would hand consumers — and
the user — a path to nothing. :class:`MediaCheckedCache` wraps any LangGraph cache and
treats such an entry as a miss (and forgets it), so the node runs again. No library does
this check: it depends on our media values, hence this small wrapper.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langgraph.cache.base import BaseCache, FullKey, Namespace
from pydantic import BaseModel

from calliope_graph.media import Audio, Image, Video

__all__ = ["MediaCheckedCache"]


def _media_present(value: Any) -> bool:
    """Whether every media file referenced anywhere in ``value`` exists."""
    if isinstance(value, Image | Audio | Video):
        return Path(value.path).is_file()
    if isinstance(value, dict):
        return all(_media_present(v) for v in value.values())
    if isinstance(value, list | tuple | deque):  # LangGraph keeps a task's writes in a deque
        return all(_media_present(v) for v in value)
    if isinstance(value, BaseModel):
        return all(_media_present(getattr(value, f)) for f in type(value).model_fields)
    return True


class MediaCheckedCache(BaseCache[Any]):
    """Delegates to ``inner``; an entry naming a missing media file is a miss."""

    def __init__(self, inner: BaseCache[Any]) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    def _keep(self, found: dict[FullKey, Any]) -> tuple[dict[FullKey, Any], list[Namespace]]:
        kept = {k: v for k, v in found.items() if _media_present(v)}
        stale = [k[0] for k in found if k not in kept]
        return kept, stale

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        kept, stale = self._keep(self.inner.get(keys))
        if stale:
            self.inner.clear(stale)
        return kept

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        kept, stale = self._keep(await self.inner.aget(keys))
        if stale:
            await self.inner.aclear(stale)
        return kept

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self.inner.set(pairs)

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        await self.inner.aset(pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self.inner.clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        await self.inner.aclear(namespaces)
