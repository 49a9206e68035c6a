"""Batch benchmarks (ratios measured in one run):

- ``batch_throughput_ratio``: 400 items of ``illustrate`` against a simulator that limits
  Stability to 10 requests a second (``rps=10``, the issue's 600 a minute as a binding
  per-second window: a minute's window would let 300 items through in one burst) with
  1–3 s per image and small images; items per second over that ceiling, with our limiter
  set just under it (``OURS``). Beside it, the same items through LangGraph's own
  ``abatch(max_concurrency=N)`` over the compiled graph with no limits configured: its 429s
  and failures are what a user gets without the shared limiter.
- ``batch_memory_mb``: RSS growth from 200 to 2,000 items of a fast (local) flow.
- ``per_item_overhead_ms``: the library's own CPU per ``illustrate`` item, without the
  simulator's work (its time in ``handle`` is measured and taken out): the median of three
  batches of 300 items.
- ``batch_cpu_ratio``: process CPU (``time.process_time``) per ``illustrate`` item of a batch
  (``run_batch``, its checkpoints on) against a plain LangGraph graph making the same
  simulated Stability call per item, with LangGraph's ``AsyncSqliteSaver`` and its default
  durability, at the same concurrency: alternated run by run, medians (target <= 1.15).
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from typing_extensions import TypedDict

from calliope_graph import limits
from calliope_graph.batch import run_batch
from calliope_graph.context import RunContext
from calliope_graph.errors import CalliopeError
from calliope_graph.flow import Flow
from calliope_graph.flow._runtime import FlowRuntime
from calliope_graph.flow.trace import Trace
from calliope_graph.session import Session
from calliope_graph.simulate import Simulator

CEILING = 10.0  # items a second: one Stability call per illustrate item
#: Small images (256×256 for Stability's 1024×1024), as the issue asks: the simulator's PNG
#: encoder would otherwise take most of two cores and the arrival times with it.
SCALE = 0.25
#: Our side of the limit: a little under the provider's, because the provider counts a
#: request when it arrives, a moment after our limiter admitted it (a fraction of a
#: millisecond; a batch freezes the heap so that no 100-ms full garbage collection falls in
#: between, docs/architecture.md) — and Stability answers a single 429 by refusing
#: everything for 60 s.
OURS = "10/1.03s"  # 9.7 a second, never more than 10 in any second
#: The simulated provider takes its 10 a second in a burst (a sliding window), and one
#: process sends here, so the limiter may too: without it admissions are spread evenly
#: (one every 0.103 s), which is the safe default when processes share a key.
BURST = 10


def _latency(seed: int) -> Any:
    rng = random.Random(seed)

    def latency(provider: str, endpoint: str, request: httpx.Request) -> float:
        return rng.uniform(1.0, 3.0) if provider == "stability" else 0.0

    return latency


async def bench_throughput(items: int = 400, concurrency: int = 40) -> dict[str, Any]:
    prompts = [{"id": f"i{i}", "text": f"a lighthouse, version {i}"} for i in range(items)]
    flow = Flow.load("illustrate")
    ours_limits = limits.Limits({"stability": {"requests": OURS, "burst": BURST}}, defaults=False)
    # The batch's own session: its limits, not those of any other run of the process.
    sim = Simulator(latency=_latency(1), limits={"stability": {"rps": CEILING}}, image_scale=SCALE)
    session = Session(simulator=sim, limits=ours_limits)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = await run_batch(
            flow,
            prompts,
            Path(tmp) / "ours",
            concurrency=concurrency,
            session=session,
            item_reports=False,
            report=False,
        )
        wall = time.perf_counter() - start
    ours = {
        "items": items,
        "ok": summary.ok,
        "failed": summary.failed,
        "wall_s": round(wall, 2),
        "items_per_s": round(items / wall, 3),
        "simulator_429s": sim.rate_limited("stability"),
    }
    plain = await _plain_langgraph(flow, prompts[:60], concurrency)
    return {
        "ceiling_items_per_s": CEILING,
        "batch_throughput_ratio": round(ours["items_per_s"] / CEILING, 3),
        "calliope": ours,
        "langgraph_abatch": plain,
    }


async def _plain_langgraph(
    flow: Flow, prompts: list[dict[str, Any]], concurrency: int
) -> dict[str, Any]:
    """The compiled graph through LangGraph's ``abatch``, no limits configured."""
    sim = Simulator(latency=_latency(2), limits={"stability": {"rps": CEILING}}, image_scale=SCALE)
    graph = flow.compile()
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(simulator=sim, limits=limits.Limits(defaults=False))
        ctx = session.run_context(Path(tmp))
        trace = Trace(flow=flow.name, thread_id="abatch", started_at=time.time())
        runtime = FlowRuntime(ctx=ctx, trace=trace, record=False)
        states = [{"inputs.text": p["text"]} for p in prompts]
        start = time.perf_counter()
        results = await graph.abatch(
            states,
            [{"max_concurrency": concurrency}] * len(states),
            context=runtime,
            return_exceptions=True,
        )
        wall = time.perf_counter() - start
        await ctx.aclose()
    failed = sum(1 for r in results if isinstance(r, BaseException | CalliopeError))
    return {
        "items": len(prompts),
        "failed": failed,
        "wall_s": round(wall, 2),
        "items_per_s": round(len(prompts) / wall, 3),
        "simulator_429s": sim.rate_limited("stability"),
        "openai_fallback_calls": sim.count("openai"),
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / (1 << 20)


async def bench_memory(first: int = 200, total: int = 2000) -> dict[str, float]:
    flow = Flow("fast")
    text = flow.input("text")
    shout = flow.add("shout", "prompt_template", {"word": text}, params={"template": "{word}!"})
    flow.output("text", shout["text"])

    def items(start: int, stop: int) -> Any:
        return ({"id": f"i{i}", "text": f"word {i}"} for i in range(start, stop))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "batch"
        await run_batch(flow, items(0, first), out, concurrency=16, item_reports=False)
        before = _rss_mb()
        await run_batch(flow, items(0, total), out, concurrency=16, item_reports=False, resume=True)
        after = _rss_mb()
    return {
        "items_first": first,
        "items_total": total,
        "rss_after_first_mb": round(before, 1),
        "rss_after_total_mb": round(after, 1),
        "batch_memory_mb": round(after - before, 1),
    }


async def bench_overhead(items: int = 300, repeats: int = 3) -> dict[str, Any]:
    """The median of ``repeats`` batches of ``items`` (CPU time on this shared machine varies
    by a third from one run to the next; every figure is reported)."""
    sim = Simulator(image_scale=SCALE)
    spent = [0.0]
    original = sim.handle

    async def timed(request: httpx.Request) -> httpx.Response:
        # The simulator answers on the event loop's thread without awaiting (no latency
        # here): its CPU is that thread's time in ``handle``. (Process time would also take
        # out our own work that other threads did meanwhile — checkpoint writes, image saves.)
        start = time.thread_time()
        try:
            return await original(request)
        finally:
            spent[0] += time.thread_time() - start

    sim.handle = timed  # type: ignore[method-assign]
    flow = Flow.load("illustrate")
    prompts = [{"id": f"i{i}", "text": f"a lighthouse, version {i}"} for i in range(items)]
    runs: list[tuple[float, float, float]] = []  # (total, simulator, ours) ms per item
    with tempfile.TemporaryDirectory() as tmp:
        await run_batch(  # warm: imports, first compile
            flow, prompts[:5], Path(tmp) / "warm", simulator=sim, item_reports=False
        )
        for n in range(repeats):
            spent[0] = 0.0
            spent[0] = 0.0
            start = time.process_time()
            await run_batch(
                flow,
                prompts,
                Path(tmp) / f"run{n}",
                concurrency=8,
                simulator=sim,
                item_reports=False,
            )
            cpu = (time.process_time() - start) / items * 1000
            runs.append((cpu, spent[0] / items * 1000, cpu - spent[0] / items * 1000))
    total, simulator, ours = sorted(runs, key=lambda r: r[2])[len(runs) // 2]
    return {
        "items": items,
        "repeats": repeats,
        "cpu_ms_per_item": round(total, 2),
        "simulator_ms_per_item": round(simulator, 2),
        "per_item_overhead_ms": round(ours, 2),
        "per_item_overhead_runs_ms": [round(r[2], 2) for r in runs],
    }


class _PlainState(TypedDict, total=False):
    text: str
    image: Any


def _plain_illustrate() -> Any:
    """``illustrate``'s one call by hand: a LangGraph node running the same node class on the
    item's text, the run's RunContext as LangGraph context (a folder per item)."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.runtime import get_runtime

    from calliope_graph.nodes import TextToImage

    node = TextToImage("stability-core")

    async def draw(state: _PlainState) -> dict[str, Any]:
        ctx = get_runtime(RunContext).context
        return {"image": (await node.run(ctx, prompt=state["text"]))["image"]}

    graph = StateGraph(_PlainState, context_schema=RunContext)
    graph.add_node("image", draw)
    graph.add_edge(START, "image")
    graph.add_edge("image", END)
    return graph


async def _plain_batch(
    graph: Any, ctx: RunContext, prompts: list[dict[str, Any]], folder: Path, concurrency: int
) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(folder / "checkpoints.sqlite")) as saver:
        compiled = graph.compile(checkpointer=saver)
        slots = asyncio.Semaphore(concurrency)

        async def one(item: dict[str, Any]) -> None:
            async with slots:
                item_ctx = replace(ctx, store=ctx.store.sub(item["id"]))
                config = {"configurable": {"thread_id": item["id"]}}
                await compiled.ainvoke({"text": item["text"]}, config, context=item_ctx)

        await asyncio.gather(*(one(p) for p in prompts))


async def bench_cpu(items: int = 200, repeats: int = 7, concurrency: int = 8) -> dict[str, Any]:
    """CPU per item: ``run_batch`` of ``illustrate`` against plain LangGraph + SQLite, batch
    by batch in turn; the ratio is the median of each pair's (a batch's CPU swings ±15 %
    on a shared machine: three batches a side gave 1.05–1.21 for the same code)."""
    sim = Simulator(image_scale=SCALE)
    spent = [0.0]
    original = sim.handle

    async def timed(request: httpx.Request) -> httpx.Response:  # as in bench_overhead
        start = time.thread_time()
        try:
            return await original(request)
        finally:
            spent[0] += time.thread_time() - start

    sim.handle = timed  # type: ignore[method-assign]
    flow = Flow.load("illustrate")
    graph = _plain_illustrate()
    prompts = [{"id": f"i{i}", "text": f"a lighthouse, version {i}"} for i in range(items)]
    ours: list[float] = []
    plain: list[float] = []
    sims: list[float] = []  # the simulator's own CPU per item (the same call both ways)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ctx = RunContext.create(root / "plain", keys=sim.keys(), transport=sim.transport())
        # warm: imports, first compile, the first simulated image
        await run_batch(flow, prompts[:5], root / "warm", simulator=sim, item_reports=False)
        await _plain_batch(graph, ctx, prompts[:5], root, concurrency)
        for n in range(repeats):
            spent[0] = 0.0
            start = time.process_time()
            await run_batch(
                flow,
                prompts,
                root / f"run{n}",
                concurrency=concurrency,
                simulator=sim,
                item_reports=False,
            )
            ours.append((time.process_time() - start) / items * 1000)
            sims.append(spent[0] / items * 1000)
            folder = root / f"plain{n}"
            folder.mkdir()
            start = time.process_time()
            await _plain_batch(
                graph, replace(ctx, store=ctx.store.sub(f"plain{n}")), prompts, folder, concurrency
            )
            plain.append((time.process_time() - start) / items * 1000)
        await ctx.aclose()
    a, b, s = statistics.median(ours), statistics.median(plain), statistics.median(sims)
    paired = statistics.median(x / y for x, y in zip(ours, plain, strict=True))
    return {
        "items": items,
        "repeats": repeats,
        "calliope_cpu_ms_per_item": round(a, 2),
        "langgraph_sqlite_cpu_ms_per_item": round(b, 2),
        "calliope_runs_ms": [round(x, 2) for x in ours],
        "langgraph_runs_ms": [round(x, 2) for x in plain],
        "simulator_cpu_ms_per_item": round(s, 2),
        "batch_cpu_ratio": round(paired, 3),
        # the same without the simulator's CPU (its PNG encoding), which both sides pay
        "batch_cpu_ratio_without_simulator": round((a - s) / (b - s), 3),
    }


BENCHES = {
    "batch_throughput": bench_throughput,
    "batch_memory": bench_memory,
    "batch_overhead": bench_overhead,
    "batch_cpu": bench_cpu,
}


def run() -> dict[str, Any]:
    """Each batch benchmark in a fresh process, like a user's ``calliope-graph batch``: the
    heap the other benchmarks leave behind (garbage collections that scan it, a fragmented
    allocator) would otherwise be measured as the batch's CPU, memory and arrival jitter."""
    results: dict[str, Any] = {}
    for name in BENCHES:
        done = subprocess.run(
            [sys.executable, __file__, name], check=True, capture_output=True, text=True
        )
        results[name] = json.loads(done.stdout)
    return results


if __name__ == "__main__":
    names = sys.argv[1:] or list(BENCHES)
    if len(names) == 1:
        print(json.dumps(asyncio.run(BENCHES[names[0]]())))
    else:
        print(json.dumps(run(), indent=2))
