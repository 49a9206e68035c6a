"""Batch runs: items from JSONL/CSV/folders, one thread per item, the manifest, resume,
budget, the CLI, a kill -9 in the middle of a batch, and the batch report in Chromium."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _support import Rendezvous
from click.testing import CliRunner
from PIL import Image as PILImage

from calliope_graph.batch import (
    BatchEvent,
    BatchInputError,
    BatchSummary,
    iter_items,
    run_batch,
    thread_id_for,
    trace_cost,
)
from calliope_graph.cli import main
from calliope_graph.config import ModelPrice
from calliope_graph.context import RetrySettings, RunContext
from calliope_graph.errors import ConfigurationError
from calliope_graph.flow import Flow, Trace
from calliope_graph.flow.trace import NodeExecution
from calliope_graph.simulate import Simulator, parse_faults


def sim(faults: str = "") -> Simulator:
    simulator = Simulator(faults=parse_faults(faults))

    async def instant(seconds: float) -> None:
        return None

    simulator.sleep = instant
    return simulator


def context(simulator: Simulator, out: Path) -> RunContext:
    return RunContext.create(
        out,
        keys=simulator.keys(),
        transport=simulator.transport(),
        sleep=simulator.sleep,
        retry=RetrySettings(max_attempts=2, initial_wait=0.0, max_wait=0.0, jitter=0.0),
    )


async def batch(
    flow: Flow, items: Any, out: Path, simulator: Simulator, **options: Any
) -> BatchSummary:
    ctx = context(simulator, out)
    try:
        options.setdefault("item_reports", False)
        return await run_batch(flow, items, out, ctx=ctx, **options)
    finally:
        await ctx.aclose()


def draw_flow() -> Flow:
    """text → Stability image, no routes: a refused prompt fails the item."""
    flow = Flow("draw")
    text = flow.input("text", "text")
    image = flow.add("image", "text_to_image", {"prompt": text}, model="stability-core")
    flow.output("image", image["image"])
    return flow


def story_flow() -> Flow:
    """text → story (OpenAI) → image (Stability): two paid nodes in a row."""
    flow = Flow("story_then_image")
    text = flow.input("text", "text")
    story = flow.add("story", "text_to_text", {"text": text}, model="openai-gpt-4o-mini")
    image = flow.add("image", "text_to_image", {"prompt": story["text"]}, model="stability-core")
    flow.output("story", story["text"])
    flow.output("image", image["image"])
    return flow


def caption_flow() -> Flow:
    flow = Flow("caption")
    image = flow.input("image", "image")
    analysis = flow.add("analysis", "analyze_image", {"image": image}, model="azure-vision-4.0")
    flow.output("analysis", analysis["analysis"])
    return flow


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def manifest(out: Path) -> list[dict[str, Any]]:
    text = (out / "batch.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def png(path: Path, color: str = "red") -> Path:
    PILImage.new("RGB", (64, 64), color).save(path)
    return path


# -- items -----------------------------------------------------------------------------------------
async def test_jsonl_items_have_stable_ids(tmp_path: Path) -> None:
    spec = draw_flow().spec
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "first", "text": "a fox"}, {"text": "a castle"}]
    )
    items = list(iter_items(path, spec))
    again = list(iter_items(path, spec))
    assert [i.id for i in items] == [i.id for i in again]
    assert items[0].id == "first"
    assert len(items[1].id) == 12 and items[1].inputs == {"text": "a castle"}
    assert items[1].source.endswith("p.jsonl:2")
    write_jsonl(path, [{"text": "a castle at night"}])
    assert next(iter_items(path, spec)).id != items[1].id  # other inputs, other id


async def test_csv_media_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    png(tmp_path / "frames" / "a.png")
    csv = tmp_path / "rows.csv"
    csv.write_text("id,image\none,frames/a.png\n", encoding="utf-8")
    (item,) = iter_items(csv, caption_flow().spec)
    assert item.id == "one"
    assert item.inputs["image"] == str((tmp_path / "frames" / "a.png").absolute())


async def test_bad_rows_name_the_file_and_line(tmp_path: Path) -> None:
    spec = draw_flow().spec
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(BatchInputError, match=r"bad\.jsonl:2: not valid JSON") as caught:
        list(iter_items(bad_json, spec))
    assert caught.value.line == 2
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("text,colour\na fox,red\n", encoding="utf-8")
    with pytest.raises(BatchInputError, match=r"unknown\.csv:1: .*'colour'.*text \(text\)"):
        list(iter_items(unknown, spec))
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"text": "a"}, {"text": "b"}, {"text": "a"}])
    with pytest.raises(BatchInputError, match=r"dup\.jsonl:3: the same inputs as .*dup\.jsonl:1"):
        list(iter_items(dup, spec))
    ids = write_jsonl(tmp_path / "ids.jsonl", [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    with pytest.raises(BatchInputError, match=r"ids\.jsonl:2: id 'x' is used twice"):
        list(iter_items(ids, spec))
    slash = write_jsonl(tmp_path / "slash.jsonl", [{"id": "../x", "text": "a"}])
    with pytest.raises(BatchInputError, match="cannot name the item's output folder"):
        list(iter_items(slash, spec))


async def test_a_directory_needs_a_flow_with_one_media_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"exactly one media input.*text \(text\)"):
        list(iter_items(tmp_path, draw_flow().spec))


async def test_a_directory_of_images_runs_one_item_per_file(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for name, color in (("b.png", "blue"), ("a.png", "red"), ("notes.txt", "")):
        if name.endswith(".png"):
            png(frames / name, color)
        else:
            (frames / name).write_text("not an image")
    out = tmp_path / "out"
    summary = await batch(caption_flow(), frames, out, sim())
    assert (summary.ok, summary.failed, summary.total) == (2, 0, 2)
    lines = manifest(out)
    # Lines come in the order items finish, which concurrency leaves open.
    assert sorted(line["source"] for line in lines) == [
        str(frames / "a.png"),
        str(frames / "b.png"),
    ]
    assert all(line["calls"] == {"azure_vision": 1} for line in lines)


# -- running ---------------------------------------------------------------------------------------
async def test_manifest_lines_are_appended_as_items_finish(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"i{n}", "text": f"thing {n}"} for n in range(5)]
    )
    out = tmp_path / "out"
    seen: list[int] = []

    def on_progress(event: BatchEvent) -> None:
        if event.kind == "item_finished":
            seen.append(len(manifest(out)))

    summary = await batch(
        draw_flow(), path, out, sim(), concurrency=2, on_progress=on_progress, item_reports=True
    )
    assert seen == [1, 2, 3, 4, 5]
    assert summary.ok == 5 and summary.all_ok
    line = manifest(out)[0]
    assert set(line) >= {
        "id", "status", "outputs", "error", "attempts", "calls", "cost", "started_at",
        "ended_at", "thread_id",
    }  # fmt: skip
    assert line["status"] == "ok" and line["error"] is None
    assert line["outputs"] == {"image": f"{line['id']}/image.png"}
    assert (out / line["outputs"]["image"]).is_file()
    assert (out / line["id"] / "trace.json").is_file() and (
        out / line["id"] / "report.html"
    ).is_file()
    assert line["thread_id"] == thread_id_for(line["id"])
    assert line["cost"] == pytest.approx(0.03)  # Stable Image Core's list price
    assert summary.cost == pytest.approx(0.15)
    assert (out / "batch.html").is_file() and (out / "checkpoints.sqlite").is_file()


async def test_the_flow_is_compiled_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calliope_graph.flow.run as run_module
    from calliope_graph.flow.compile import compile_plan as real

    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "compile_plan", counting)
    items = [{"text": f"thing {n}"} for n in range(6)]
    summary = await batch(draw_flow(), items, tmp_path / "out", sim(), concurrency=3)
    assert summary.ok == 6
    assert len(calls) == 1


async def test_a_failed_item_does_not_stop_the_others(tmp_path: Path) -> None:
    rows = [{"id": "fox", "text": "a fox"}, {"id": "bad", "text": "a forbidden castle"}]
    rows.append({"id": "owl", "text": "an owl"})
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    simulator = sim("content_policy@stability:pattern=forbidden")
    summary = await batch(draw_flow(), path, out, simulator)
    assert (summary.ok, summary.failed) == (2, 1)
    assert not summary.all_ok
    assert summary.failures == {"content_policy at image": 1}
    bad = next(line for line in manifest(out) if line["id"] == "bad")
    assert bad["status"] == "failed" and bad["outputs"] == {}
    assert bad["error"]["class"] == "content_policy" and bad["error"]["node"] == "image"
    assert "sim-stability-key" not in json.dumps(bad)  # no secret in the manifest


async def test_resume_skips_ok_items_and_repays_no_completed_node(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"i{n}", "text": f"thing {n}"} for n in range(4)]
    )
    out = tmp_path / "out"
    simulator = sim("auth@stability:first_n=2")  # the first two images are refused
    first = await batch(story_flow(), path, out, simulator, concurrency=1)
    assert (first.ok, first.failed) == (2, 2)
    assert simulator.count("openai") == 4 and simulator.count("stability") == 4
    with pytest.raises(ConfigurationError, match=r"already holds a batch.*--resume"):
        await batch(story_flow(), path, out, simulator)

    simulator.calls.clear()
    again = await batch(story_flow(), path, out, simulator, resume=True)
    assert (again.ok, again.failed, again.skipped, again.ran) == (4, 0, 2, 2)
    # the two failed items continued from their checkpoints: their stories were not redone
    assert simulator.count("openai") == 0
    assert simulator.count("stability") == 2
    resumed = manifest(out)[-2:]
    assert all(line["resumed"] and line["calls"] == {"stability": 1} for line in resumed)
    assert all(line["cost"] == pytest.approx(0.03) for line in resumed)  # the story not paid again

    simulator.calls.clear()
    done = await batch(story_flow(), path, out, simulator, resume=True)
    assert done.ran == 0 and done.skipped == 4 and simulator.count() == 0


def hanging_stability() -> tuple[Simulator, Any]:
    """A simulator whose Stability calls never answer (until the test cancels them) and an
    event set when the first one arrives."""
    simulator = sim()
    arrived = asyncio.Event()
    forever = asyncio.Event()

    async def hang(seconds: float) -> None:
        arrived.set()
        await forever.wait()

    simulator.sleep = hang
    simulator.latency = {"stability": 1.0}
    return simulator, arrived


@pytest.mark.parametrize("killed", [False, True], ids=["stopped", "killed"])
async def test_an_item_stopped_mid_flight_resumes_without_repaying_its_finished_node(
    tmp_path: Path, killed: bool
) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "one", "text": "a lighthouse"}])
    out = tmp_path / "out"
    simulator, arrived = hanging_stability()
    running = asyncio.create_task(batch(story_flow(), path, out, simulator))
    await arrived.wait()  # the story is written (and paid), the image call is in flight
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert simulator.count("openai") == 1
    assert not (out / "batch.jsonl").exists()  # the item never finished
    if killed:  # a kill -9 leaves no checkpoint: batch items save theirs when they stop
        with sqlite3.connect(out / "checkpoints.sqlite") as db:
            for table in ("checkpoints", "writes"):
                db.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id_for("one"),))

    again = sim()
    summary = await batch(story_flow(), path, out, again, resume=True)
    assert summary.all_ok
    assert again.count("openai") == 0  # the story came back from the journal
    assert again.count("stability") == 1
    (line,) = manifest(out)
    # The story's call, paid before the stop and counted by no line, is counted once here.
    assert line["resumed"] and line["calls"] == {"openai": 1, "stability": 1}
    assert line["cost"] > 0.03  # the image and the story


async def test_a_second_batch_on_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "one", "text": "a lighthouse"}])
    out = tmp_path / "out"
    simulator, arrived = hanging_stability()
    running = asyncio.create_task(batch(draw_flow(), path, out, simulator))
    await arrived.wait()
    other = sim()
    with pytest.raises(ConfigurationError, match=r"Another run \(pid \d+, thread batch of draw"):
        await batch(draw_flow(), path, out, other, resume=True)
    assert other.count() == 0  # refused before any call
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    summary = await batch(draw_flow(), path, out, sim(), resume=True)  # free again
    assert summary.all_ok


async def test_a_folder_a_batch_is_running_in_is_refused_as_such_without_resume(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "one", "text": "a lighthouse"}])
    out = tmp_path / "out"
    await batch(draw_flow(), path, out, sim())
    write_jsonl(path, [{"id": "one", "text": "a lighthouse"}, {"id": "two", "text": "a fox"}])
    simulator, arrived = hanging_stability()
    running = asyncio.create_task(batch(draw_flow(), path, out, simulator, resume=True))
    await arrived.wait()
    # Not "pass --resume": it is running; resuming it now would be refused too.
    with pytest.raises(ConfigurationError, match=r"Another run \(pid \d+, thread batch of draw"):
        await batch(draw_flow(), path, out, sim())
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_retry_failed_runs_only_the_failed_items(tmp_path: Path) -> None:
    rows = [{"id": "fox", "text": "a fox"}, {"id": "bad", "text": "a forbidden castle"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    simulator = sim("content_policy@stability:pattern=forbidden")
    await batch(draw_flow(), path, out, simulator)
    write_jsonl(path, [*rows, {"id": "new", "text": "a new item"}])
    simulator.clear_faults()
    simulator.calls.clear()
    summary = await batch(draw_flow(), path, out, simulator, retry_failed=True)
    assert (summary.ok, summary.failed, summary.ran) == (2, 0, 1)
    assert summary.not_started == ["new"]
    assert simulator.count("stability") == 1
    assert [line["id"] for line in manifest(out)][-1] == "bad"
    rest = await batch(draw_flow(), path, out, simulator, resume=True)
    assert rest.all_ok and rest.ran == 1


async def test_budget_stops_starting_items(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"i{n}", "text": f"thing {n}"} for n in range(5)]
    )
    out = tmp_path / "out"
    summary = await batch(draw_flow(), path, out, sim(), concurrency=1, budget=0.07)
    assert summary.ran == 2 and summary.ok == 2 and summary.failed == 0
    assert summary.not_started == ["i2", "i3", "i4"]
    assert summary.budget_stopped and "Budget $0.07 reached" in summary.budget_message
    assert summary.cost <= 0.07
    assert len(manifest(out)) == 2  # not started is not failed: no line
    # a resumed batch counts what was already spent against the same budget
    more = await batch(draw_flow(), path, out, sim(), resume=True, budget=0.10)
    assert more.ran == 1 and more.cost == pytest.approx(0.09)


async def test_a_bad_row_stops_the_batch_but_keeps_finished_items(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "text": "a fox"}\n{"id": "b", "text": "an owl"}\nnot json\n')
    out = tmp_path / "out"
    with pytest.raises(BatchInputError, match=r"p\.jsonl:3") as caught:
        await batch(draw_flow(), path, out, sim(), concurrency=1)
    assert [line["id"] for line in manifest(out)] == ["a", "b"]
    assert caught.value.summary.ok == 2


async def test_flow_abatch(tmp_path: Path) -> None:
    simulator = sim()
    ctx = context(simulator, tmp_path / "out")
    try:
        summary = await draw_flow().abatch(
            [{"id": "x", "text": "a fox"}], out_dir=tmp_path / "out", ctx=ctx
        )
    finally:
        await ctx.aclose()
    assert summary.ok == 1 and summary.manifest == tmp_path / "out" / "batch.jsonl"


# -- cost ------------------------------------------------------------------------------------------
async def test_cost_is_estimated_from_what_ran(tmp_path: Path) -> None:
    flow = Flow.load("illustrate")
    plan = flow.plan()
    now = time.time()

    def execution(node: str, status: str = "ok", **kw: Any) -> NodeExecution:
        return NodeExecution(node=node, kind="text_to_image", started_at=now, status=status, **kw)

    image = {"image": {"type": "image", "path": "x.png", "width": 1024, "height": 1024}}
    trace = Trace(flow="illustrate", thread_id="t", started_at=now)
    trace.executions = [
        execution("image", "fallback", provider="stability"),  # refused: not billed
        execution("fallback_image", provider="openai", outputs=image),  # GPT Image 2 medium
        execution("image", provider="stability", outputs=image, resumed=True),  # paid before
    ]
    assert trace_cost(trace, plan) == pytest.approx(0.07)
    assert ModelPrice(per_image={"1024x1024/hd": 0.08, "default": 0.04}).image(
        "1024x1024", "hd"
    ) == pytest.approx(0.08)


# -- the command line ------------------------------------------------------------------------------
def test_cli_exit_codes_and_json_events(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "a", "text": "a fox"}, {"id": "b", "text": "an owl"}]
    )
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["batch", "illustrate", "--inputs", str(path), "--out", str(out), "--simulate"]
    ok = runner.invoke(main, [*args, "--json"])
    assert ok.exit_code == 0, ok.output
    events = [json.loads(line) for line in ok.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("item_started") == 2 and kinds.count("item_finished") == 2
    assert kinds[-1] == "summary" and events[-1]["ok"] == 2
    assert events[-1]["simulator_calls"] == 2

    again = runner.invoke(main, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert "2 ok (2 already ok)" in again.stdout

    failed_out = tmp_path / "failed"
    failing = ["batch", "illustrate", "--inputs", str(path), "--out", str(failed_out)]
    failed = runner.invoke(main, [*failing, "--simulate", "--faults", "auth"])
    assert failed.exit_code == 1, failed.output
    assert "--resume --retry-failed" in failed.stdout
    assert "2 failed" in failed.stdout

    missing = ["batch", "illustrate", "--inputs", str(tmp_path / "nope.jsonl")]
    bad = runner.invoke(main, [*missing, "--out", str(tmp_path / "o2"), "--simulate"])
    assert bad.exit_code == 4 and "nope.jsonl" in bad.output and "do not exist" in bad.output
    assert not (tmp_path / "o2").exists()  # refused before anything was written
    usage = runner.invoke(main, [*args[:6], "--faults", "auth"])
    assert usage.exit_code == 2
    limits = runner.invoke(
        main,
        [
            *args[:5],
            str(tmp_path / "limited"),
            "--simulate",
            "--limits",
            "stability:rpm=600",
            "--simulate-limits",
            "stability:rpm=60",
            "--json",
        ],
    )
    assert limits.exit_code == 0, limits.output  # accepted (the limiter is wired separately)


def test_kill_9_then_resume_runs_no_ok_item_again(tmp_path: Path) -> None:
    count = 10
    rows = [{"id": f"item{n:02d}", "text": f"picture {n}"} for n in range(count)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    exe = shutil.which("calliope-graph", path=str(Path(sys.executable).parent)) or "calliope-graph"
    args = [exe, "batch", "illustrate", "--inputs", str(path), "--out", str(out), "--simulate"]
    args += ["--faults", "latency@stability:seconds=0.3", "--concurrency", "2", "--json"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    manifest_path = out / "batch.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest_path.is_file() and len(manifest_path.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the batch ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = manifest(out)
    ok_before = {line["id"] for line in before if line["status"] == "ok"}
    assert 3 <= len(ok_before) < count

    # The resume runs in this process (the same command, one process start less to wait
    # for) and without the latency fault, so nothing here sleeps for real.
    fast = [a for a in args[1:] if a not in ("--faults", "latency@stability:seconds=0.3")]
    resumed = CliRunner().invoke(main, [*fast, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["ok"] == count and summary["skipped"] == len(ok_before)
    new_lines = manifest(out)[len(before) :]
    assert not {line["id"] for line in new_lines} & ok_before  # no ok item ran again
    assert {line["id"] for line in new_lines} == {r["id"] for r in rows} - ok_before
    # each call the resumed process made is one an unfinished item needed, and no more; an
    # item in flight at the kill whose call had been journaled replays it (its line counts
    # that call, paid before the kill, and the resumed process does not make it again): at
    # most one per item running at the kill (--concurrency 2)
    paid = sum(sum(line["calls"].values()) for line in new_lines)
    made = summary["simulator_calls"]
    assert made <= paid <= min(made + 2, count - len(ok_before))
    assert (out / "batch.html").is_file()


# -- the batch report in a real browser ------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is missing: run `make browser`")
async def test_batch_report_opens_offline_with_one_row_per_item(tmp_path: Path) -> None:
    rows = [{"id": f"i{n}", "text": f"thing {n}"} for n in range(3)]
    rows.append({"id": "bad", "text": "a forbidden castle"})
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    summary = await batch(
        draw_flow(), path, out, sim("content_policy@stability:pattern=forbidden"), item_reports=True
    )
    assert summary.report is not None
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            problems: list[str] = []
            requests: list[str] = []
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            await page.goto(summary.report.resolve().as_uri())
            await page.wait_for_load_state("load")
            assert problems == []
            assert all(url.startswith("file://") for url in requests), requests
            assert await page.locator("#items tbody tr").count() == 4
            assert await page.locator('#items tr[data-status="failed"]').count() == 1
            assert await page.locator("tr.failure").count() == 1
            assert await page.locator("img.thumb").count() == 3
            widths = await page.eval_on_selector_all(
                "img.thumb", "els => els.map(e => e.naturalWidth)"
            )
            assert all(w > 0 for w in widths)  # the thumbnails load from the item folders
            assert await page.locator("svg.chart polyline").count() == 1
            await page.click('button[data-filter="failed"]')
            assert await page.locator("#items tbody tr:visible").count() == 1
            link = page.locator('#items tr[data-id="i0"] a')
            assert await link.get_attribute("href") == "i0/report.html"
        finally:
            await browser.close()


async def test_the_heap_is_frozen_while_a_batch_runs_and_given_back_after(tmp_path: Path) -> None:
    # A full garbage collection over the whole heap, falling between the limiter's admission
    # of a call and its arrival, packed 11 calls into a provider's 1-s window (a 429, and
    # Stability's 60-s block): while a batch runs, the heap it started with is frozen.
    before = gc.get_freeze_count()
    seen: list[int] = []
    await batch(
        draw_flow(),
        [{"id": "a", "text": "a lighthouse"}],
        tmp_path / "out",
        sim(),
        on_progress=lambda event: seen.append(gc.get_freeze_count()),
    )
    assert seen and max(seen) > before + 1000
    assert gc.get_freeze_count() == before


async def test_each_finished_event_sees_the_manifest_lines_of_the_items_finished_so_far(
    tmp_path: Path,
) -> None:
    """Two items that finish in the same turn of the event loop: each one's ``item_finished``
    event comes right after its own manifest line, before the other's is written."""
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"i{n}", "text": f"thing {n}"} for n in range(8)]
    )
    out = tmp_path / "out"
    seen: list[int] = []

    def on_progress(event: BatchEvent) -> None:
        if event.kind == "item_finished":
            seen.append(len(manifest(out)))

    simulator = sim("latency@stability:seconds=1")
    simulator.sleep = Rendezvous(4)  # both items' calls answer in the same turn
    await batch(draw_flow(), path, out, simulator, concurrency=4, on_progress=on_progress)
    assert seen == list(range(1, 9))


@pytest.mark.parametrize(
    ("kind", "model", "port", "value", "out"),
    [
        ("text_to_speech", "elevenlabs-multilingual-v2", "text",
         "The fox walked along the harbour at dawn, looking for its lost lantern.", "audio"),
        ("audio_to_text", "openai-gpt-transcribe", "audio", "voice.wav", "text"),
    ],
)  # fmt: skip
def test_speech_is_priced_by_the_minutes_of_audio_made_or_heard(
    tmp_path: Path, kind: str, model: str, port: str, value: str, out: str
) -> None:
    """Per-minute models cost what their audio lasts: the speech a TTS node made, the
    recording a transcription heard (not nothing, not a flat minute)."""
    from calliope_graph.config import catalog
    from calliope_graph.media import Audio
    from calliope_graph.testing import wav_bytes

    voice = tmp_path / "voice.wav"
    voice.write_bytes(wav_bytes("the harbour at dawn", seconds=3.0))
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        f"name: speech\ninputs:\n  {port}: {{type: {port if port == 'audio' else 'text'}}}\n"
        f"nodes:\n  step:\n    kind: {kind}\n    model: {model}\n"
        f"    inputs: {{{port}: inputs.{port}}}\n"
        f"outputs:\n  result: step.{out}\n"
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({port: value}) + "\n")
    result = CliRunner().invoke(
        main,
        ["batch", str(flow), "--inputs", str(rows), "--out", str(tmp_path / "b"), "--simulate"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    line = json.loads((tmp_path / "b" / "batch.jsonl").read_text().splitlines()[-1])
    if kind == "text_to_speech":
        seconds = Audio.open(tmp_path / "b" / line["outputs"]["result"]).duration
    else:
        seconds = Audio.open(voice).duration
    assert seconds
    price = catalog.get(model).price
    assert price is not None and price.per_audio_minute
    assert line["cost"] == pytest.approx(seconds / 60 * price.per_audio_minute, rel=1e-3)
