"""Batch rough edges: the page after a ``--resume`` covers every run, manifests point at
media inside objects relative to ``out/``, and memory does not grow with the items."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_batch import batch, draw_flow, manifest, sim, write_jsonl

from calliope_graph.flow import Flow


async def test_after_a_resume_the_batch_page_shows_every_items_thumbnail(tmp_path: Path) -> None:
    rows = [{"id": f"i{n}", "text": f"thing {n}"} for n in range(3)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    await batch(draw_flow(), path, out, sim())
    write_jsonl(path, [*rows, {"id": "new", "text": "a new thing"}])
    summary = await batch(draw_flow(), path, out, sim(), resume=True)
    assert summary.ran == 1 and summary.report is not None
    page = summary.report.read_text(encoding="utf-8")
    thumbs = re.findall(r'<img class="thumb" src="([^"]+)"', page)
    assert sorted(thumbs) == sorted(f"{i}/image.png" for i in ("i0", "i1", "i2", "new"))
    assert all((out / t).is_file() for t in thumbs)


async def test_after_a_resume_the_batch_page_shows_the_wall_time_of_every_run(
    tmp_path: Path,
) -> None:
    rows = [{"id": "a", "text": "a lighthouse"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    await batch(draw_flow(), path, out, sim())
    # the first run's item took 40 s (as its manifest line says)
    lines = manifest(out)
    lines[0]["started_at"], lines[0]["ended_at"] = "2026-01-01T10:00:00Z", "2026-01-01T10:00:40Z"
    write_jsonl(out / "batch.jsonl", lines)
    write_jsonl(path, [*rows, {"id": "b", "text": "a harbour"}])
    summary = await batch(draw_flow(), path, out, sim(), resume=True)
    assert summary.report is not None
    page = summary.report.read_text(encoding="utf-8")
    wall = re.search(r'data-stat="wall time"><b>([\d.]+)s<', page)
    assert wall is not None and float(wall.group(1)) >= 40.0
    assert 'data-stat="this run"' in page


async def test_storyboard_manifest_frames_point_at_images_relative_to_out(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "fox", "premise": "a fox"}])
    out = tmp_path / "out"
    summary = await batch(Flow.load("storyboard"), path, out, sim())
    assert summary.all_ok
    (line,) = manifest(out)
    frames = line["outputs"]["frames"]
    assert frames
    for frame in frames:
        image = frame["image"]["path"]
        assert not Path(image).is_absolute(), image
        assert image.startswith("fox/") and (out / image).is_file()
    assert all(not Path(p).is_absolute() for p in line["outputs"]["images"])
    json.dumps(line)


async def test_a_long_batch_keeps_little_memory_per_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a batch keeps per finished item (its row of the report) is small: a batch of
    4,000 items once grew by 2.8 KiB an item, most of it the file writer's memo of every
    path it wrote, kept as Path objects, and empty fields of the report's rows. The memo is
    bounded now (4,096 paths); held at a small bound here, so that its filling up to the
    bound — by this test, or by the tests before it — is not counted as growth per item."""
    import gc
    import tracemalloc

    from calliope_graph import _files

    monkeypatch.setattr(_files, "_CLEANED_MAX", 8)

    first, last = 30, 130
    rows = [{"id": f"i{n}", "text": f"thing {n}"} for n in range(last)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    simulator = sim()
    simulator.log = _NoLog()  # the simulator's own request log is not the batch's
    traced: dict[int, int] = {}
    finished = 0

    def progress(event: Any) -> None:
        nonlocal finished
        if event.kind == "item_finished":
            finished += 1
            if finished in (first, last):
                gc.collect()
                traced[finished] = tracemalloc.get_traced_memory()[0]

    tracemalloc.start(1)
    try:
        summary = await batch(
            draw_flow(), path, tmp_path / "out", simulator, on_progress=progress, concurrency=1
        )
    finally:
        tracemalloc.stop()
    assert summary.all_ok and summary.ran == last
    per_item = (traced[last] - traced[first]) / (last - first)
    # one item at a time, so none is half done when measured: ~1,380 bytes, was ~2,100
    assert per_item < 1800, f"{per_item:.0f} bytes kept per item"


class _NoLog(list[Any]):
    def append(self, value: Any) -> None:
        return None


def test_the_file_writer_remembers_little_per_file_written(tmp_path: Path) -> None:
    """The writer's memo of the targets it cleaned holds strings, not Path objects (which
    keep their parsed parts): ~200 bytes a file, not ~700, up to its bound."""
    import os
    import tracemalloc

    from calliope_graph import _files

    folders = [tmp_path / "batch" / f"item{n}" / "scenes" / "0" for n in range(400)]
    for folder in folders:
        folder.mkdir(parents=True)
    targets = [str(folder / "trace.json") for folder in folders]
    import gc

    _files._CLEANED.clear()  # other tests' targets: the memo starts empty, far from its bound
    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.get_traced_memory()[0]
        for target in targets:
            _, fd = _files._temp_path(Path(target))
            os.close(fd)
        gc.collect()  # only what is still held counts, not garbage awaiting a collection
        per_file = (tracemalloc.get_traced_memory()[0] - before) / len(targets)
    finally:
        tracemalloc.stop()
    assert per_file < 450, f"{per_file:.0f} bytes kept per file written"
