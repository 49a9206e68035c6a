"""A batch run's housekeeping: the folder checked before anything runs, the run context made
when none is given, the budget remembered in the folder for later resumes, the heap kept out of
full garbage-collector passes while it runs, reading back what an earlier run left (a
thread's checkpoint, an item's trace), and a full disk stopping the batch."""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calliope_graph._files import write_atomic
from calliope_graph._outdir import OutDirLock
from calliope_graph.batch._manifest import ManifestState
from calliope_graph.context import RunContext
from calliope_graph.errors import ConfigurationError, DiskFullError, disk_full
from calliope_graph.flow.trace import Trace
from calliope_graph.session import session_of

if TYPE_CHECKING:
    from calliope_graph.batch._local import _Batch
    from calliope_graph.batch._options import BatchOptions
    from calliope_graph.flow.validate import Plan

__all__ = ["SETTINGS_NAME"]


async def _has_thread(saver: Any, thread: str) -> bool:
    return await saver.aget_tuple({"configurable": {"thread_id": thread}}) is not None


def stop_full(batch: _Batch, exc: BaseException, folder: Path) -> DiskFullError | None:
    """The full disk ``exc`` (an item's failed run, or its manifest line) is, if it is one;
    then the batch starts no more items and ends with that one error (exit 4): going on would
    only pay for more. The item gets no manifest line — it is not finished, and ``--resume``
    continues its thread, the output journal replaying what it paid for."""
    full = _first_full(exc) or disk_full(exc, folder)
    if full is None and getattr(exc, "cause_class", None) == "disk_full":
        full = DiskFullError(folder=folder)
    if full is None:
        return None
    if batch.disk_full is None:
        batch.disk_full = full
    return full


def _first_full(exc: BaseException | None) -> DiskFullError | None:
    """The :class:`DiskFullError` ``exc`` is or was raised from (it names the folder)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _load_trace(path: Path) -> Trace | None:
    try:
        return Trace.load(path)
    except Exception:
        return None


_frozen_batches = 0  # batches of this process running with the heap frozen


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """The objects alive when a batch starts (modules, the catalog, the stores) kept out of
    the garbage collector's full passes while it runs (``gc.freeze``), given back after.

    A full pass otherwise walks the whole interpreter heap: 100 ms here, against 20 ms for
    what a batch allocates. A pause that long between the limiter's admission of a call and
    its arrival at the provider packs 11 calls into a provider's 1-s window, and Stability
    answers that with a 60-s block. Reference counting still frees frozen objects; only a
    frozen object that dies in a reference cycle meanwhile waits for the unfreeze.
    """
    global _frozen_batches
    if _frozen_batches == 0:
        gc.freeze()
    _frozen_batches += 1
    try:
        yield
    finally:
        _frozen_batches -= 1
        if _frozen_batches == 0:
            gc.unfreeze()


#: The batch folder's settings file: the budget it was started (or last resumed) with.
SETTINGS_NAME = "batch-settings.json"


def _remembered_budget(out: Path, budget: float | None, *, resume: bool) -> float | None:
    """The budget to hold: the one given (remembered in the folder for later resumes), else
    on a resume the one the batch was started with — a resume never spends without limit
    because ``--budget`` was left off."""
    path = out / SETTINGS_NAME
    if budget is not None:
        write_atomic(path, json.dumps({"budget": budget}))
        return budget
    if not resume or not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8")).get("budget")
    except (OSError, ValueError, AttributeError):
        return None
    return float(saved) if isinstance(saved, int | float) and not isinstance(saved, bool) else None


def _folder_state(batch: _Batch, out: Path, name: str) -> ManifestState:
    """The manifest's state of ``out``, or a ConfigurationError: a folder another batch is
    running in, a batch there without ``resume``, or a batch of another flow there."""
    if out.is_dir():  # a folder another batch is running in: refused before its manifest
        with OutDirLock(out, thread_id=f"batch of {name}"):  # is read (held again later)
            pass
    state = batch.manifest.read()
    if state.lines and not batch.resume:
        raise ConfigurationError(
            f"{out} already holds a batch ({state.lines} manifest lines in "
            f"{batch.manifest.path}): pass --resume (resume=True) to continue it, or choose "
            "another output folder."
        )
    other = sorted(state.flows - {name})
    if other:
        raise ConfigurationError(
            f"{out} holds a batch of flow {other[0]!r}, not {name!r}: resume it with that flow, "
            "or choose another output folder."
        )
    return state


def _own_context(plan: Plan, out: Path, options: BatchOptions) -> RunContext:
    """The run context a batch makes when none is given (closed when the batch ends): one
    for the batch, from its session, which every item shares."""
    session = session_of(options)
    return session.run_context(
        out,
        catalog=plan.catalog,
        media_store=options.get("media_store")
        or session.media_store
        or os.environ.get("CALLIOPE_MEDIA_STORE"),
    )
