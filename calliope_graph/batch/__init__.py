"""Many items through one flow: items → checkpoint threads, a manifest, cost, resume.

    summary = await run_batch(flow, "prompts.jsonl", "out/", concurrency=8, resume=True)

One compiled graph and one checkpoint store per batch, one thread per item (stable id),
a manifest line per finished item (``OUT/batch.jsonl``), outputs under ``OUT/<item id>/``
and a report of the whole batch (``OUT/batch.html``). The local engine (this package's
``_local``) runs items with asyncio in one process.
"""

from typing import TYPE_CHECKING

from calliope_graph._lazy import exports

# Loaded on first use (calliope_graph/_lazy.py).
if TYPE_CHECKING:
    from calliope_graph.batch._cost import estimate_item_cost, trace_cost
    from calliope_graph.batch._items import (
        BatchInputError,
        Item,
        item_id,
        iter_items,
        thread_id_for,
    )
    from calliope_graph.batch._local import (
        REPORT_NAME,
        BatchEvent,
        BatchOptions,
        BatchStats,
        BatchSummary,
        run_batch,
    )
    from calliope_graph.batch._manifest import MANIFEST_NAME, Manifest
    from calliope_graph.batch._options import FollowOptions, WorkerOptions
else:
    __getattr__, __dir__ = exports(
        __name__,
        {
            "calliope_graph.batch._cost": ["estimate_item_cost", "trace_cost"],
            "calliope_graph.batch._items": [
                "BatchInputError",
                "Item",
                "item_id",
                "iter_items",
                "thread_id_for",
            ],
            "calliope_graph.batch._local": [
                "REPORT_NAME",
                "BatchEvent",
                "BatchOptions",
                "BatchStats",
                "BatchSummary",
                "run_batch",
            ],
            "calliope_graph.batch._manifest": ["MANIFEST_NAME", "Manifest"],
            "calliope_graph.batch._options": ["FollowOptions", "WorkerOptions"],
        },
    )

__all__ = [
    "MANIFEST_NAME",
    "REPORT_NAME",
    "BatchEvent",
    "BatchInputError",
    "BatchOptions",
    "BatchStats",
    "BatchSummary",
    "FollowOptions",
    "Item",
    "Manifest",
    "WorkerOptions",
    "estimate_item_cost",
    "item_id",
    "iter_items",
    "run_batch",
    "thread_id_for",
    "trace_cost",
]
