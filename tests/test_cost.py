"""Costs that are right: calls inside maps and subflows are priced, a budget holds (and is
remembered) across resumes and kills, and each provider call's cost is in the trace."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from calliope_graph.cli import main
from calliope_graph.flow import Flow
from calliope_graph.flow.trace import Trace
from calliope_graph.simulate import Simulator

HERE = Path(__file__).resolve().parent


def _inputs(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"premise": f"a fox, take {i}"}) + "\n" for i in range(n)))
    return path


def _manifest(out: Path) -> list[dict[str, Any]]:
    lines = (out / "batch.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_a_budgeted_storyboard_batch_stops_at_its_budget_with_priced_items(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out"
    args = ["batch", "storyboard", "--inputs", str(inputs), "--out", str(out), "--simulate"]
    result = CliRunner().invoke(main, [*args, "--budget", "0.05", "--concurrency", "1"])
    assert result.exit_code == 1, result.output  # some items not started: the budget
    records = _manifest(out)
    assert 1 <= len(records) < 10
    assert all(isinstance(r["cost"], float) and r["cost"] > 0 for r in records)
    assert "Budget $0.05 reached" in result.output
    # The hint to run the rest gives the larger budget the message suggests (the same one
    # would stop again at once), and the folder remembers the budget: a resume without
    # --budget still stops at once, having spent nothing more.
    assert "Continue with --resume --budget 0.1" in result.output
    (hint,) = [line for line in result.output.splitlines() if line.startswith("run the rest:")]
    assert "--resume --budget 0.1" in hint and hint.endswith("--simulate")  # runs as printed
    again = CliRunner().invoke(main, [*args, "--resume"])
    assert again.exit_code == 1, again.output
    assert len(_manifest(out)) == len(records)
    assert "Budget $0.05 reached" in again.output


def test_every_call_in_a_map_of_subflows_is_in_the_trace_with_its_cost(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out"
    args = ["batch", "storyboard", "--inputs", str(inputs), "--out", str(out), "--simulate"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (record,) = _manifest(out)
    trace = Trace.load(out / record["id"] / "trace.json")
    calls = [(e, c) for e in trace.executions for c in e.provider_calls]
    images = [(e, c) for e, c in calls if c.operation == "image_generation"]
    chats = [(e, c) for e, c in calls if c.operation == "chat"]
    assert images and chats
    assert all(e.node.startswith("scenes[") and e.node.endswith("/image") for e, _ in images)
    for _, call in calls:
        assert call.status == "ok" and call.cost_usd is not None and call.cost_usd > 0
        assert call.provider and call.model and call.ended_at is not None
    # OpenAI's answer reports its tokens: the chat's cost comes from them, not an estimate.
    _, chat = chats[0]
    assert set(chat.reported) >= {"input_tokens", "output_tokens"} and not chat.estimated
    assert chat.response_model
    # Stability's answer reports no usage: its image count is estimated, and says so.
    _, image = images[0]
    assert image.estimated == ["images"] and image.usage["images"] == 1
    total = sum(c.cost_usd or 0.0 for _, c in calls)
    assert abs(record["cost"] - total) < 1e-6


# -- kill -9 a real batch and resume it ------------------------------------------------------------
def _batch(out: Path, inputs: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-c",
        "from calliope_graph.cli import main; main()",
        "batch",
        "storyboard",
        "--inputs",
        str(inputs),
        "--out",
        str(out),
        "--simulate",
        "--json",
        "--concurrency",
        "3",
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=HERE)


def _lines(proc: subprocess.Popen[bytes], until: int | None = None) -> int:
    """Read the batch's JSON events; with ``until``, kill -9 it after that many finished
    items (0: as soon as a provider node's outputs are journaled). Items finished."""
    assert proc.stdout is not None
    fd, buffer, finished = proc.stdout.fileno(), b"", 0
    while True:
        ready, _, _ = select.select([fd], [], [], 120.0)
        assert ready, "the batch went silent"
        chunk = os.read(fd, 65536)
        if not chunk:
            proc.wait(timeout=60)
            return finished
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        finished += sum(b'"item_finished"' in line for line in lines)
        if until is not None and finished >= until:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return finished


def _journaled(out: Path) -> int:
    db = sqlite3.connect(out / "journal.sqlite")
    try:
        return int(db.execute("SELECT count(*) FROM outputs WHERE key != '~inputs'").fetchone()[0])
    finally:
        db.close()


def test_a_batch_killed_and_resumed_reports_the_cost_of_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    inputs = _inputs(tmp_path / "in.jsonl", 6)
    clean = tmp_path / "clean"
    _lines(_batch(clean, inputs))
    clean_records = _manifest(clean)
    assert len(clean_records) == 6 and all(r["status"] == "ok" for r in clean_records)
    clean_total = sum(r["cost"] for r in clean_records)
    one_call = max(
        c.cost_usd or 0.0
        for r in clean_records
        for e in Trace.load(clean / r["id"] / "trace.json").executions
        for c in e.provider_calls
    )
    carried = 0
    for at in (1, 2, 4):
        out = tmp_path / f"killed-{at}"
        proc = _batch(out, inputs)
        _lines(proc, until=at)
        carried += _journaled(out)  # calls the killed items had paid for
        _lines(_batch(out, inputs, "--resume"))
        records = {r["id"]: r for r in _manifest(out)}  # the latest line of each item
        assert len(records) == 6 and all(r["status"] == "ok" for r in records.values())
        total = sum(r["cost"] for r in _manifest(out))
        # Exactly once: what was paid before the kill is counted after the resume, and a
        # call in flight at the kill (paid, not journaled) is made and counted again.
        assert abs(total - clean_total) <= one_call + 1e-6, (at, total, clean_total)
    assert carried > 0  # the kills did land with items' paid calls journaled


def test_the_report_shows_each_provider_calls_cost_and_what_was_estimated(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out"
    args = ["batch", "storyboard", "--inputs", str(inputs), "--out", str(out), "--simulate"]
    assert CliRunner().invoke(main, args).exit_code == 0
    (record,) = _manifest(out)
    page = (out / record["id"] / "report.html").read_text()
    assert "Provider calls" in page
    assert "image_generation" in page and "images 1 (estimated)" in page
    assert "$0.030000" in page  # a Stability Core image at list price
    assert re.search(r"input_tokens \d+ ·|input_tokens \d+,", page)  # reported, not estimated


def test_a_video_duration_given_as_text_is_priced_by_its_seconds() -> None:
    """Luma and Runway spell durations ``"5s"``: the estimate reads them, never fails."""
    from calliope_graph._pricing import estimate_figures
    from calliope_graph.config import catalog

    config = catalog.get("luma-ray-2")
    assert config.price is not None
    for given, seconds in (("5s", 5.0), ("9", 9.0), (7, 7.0), ("soon", 5.0)):
        figures = estimate_figures(config.price, config, {}, {}, {"duration": given})
        assert figures["video_seconds"] == 0.0  # no video made: nothing billed
        videos = {"clip": {"type": "video", "path": "clip.mp4", "mime": "video/mp4"}}
        figures = estimate_figures(config.price, config, {}, videos, {"duration": given})
        assert figures["video_seconds"] == seconds, given


def test_a_gemini_call_is_priced_from_the_tokens_its_answer_reports(tmp_path: Path) -> None:
    """Gemini's ``usageMetadata`` (image tokens included) prices the call, not characters / 4."""
    from calliope_graph.config import catalog
    from calliope_graph.flow import Flow
    from calliope_graph.simulate import Simulator
    from calliope_graph.testing import image_bytes

    picture = tmp_path / "kite.png"
    picture.write_bytes(image_bytes("a red kite over a harbour", 320, 180))
    flow = Flow("gemini_vision")
    image = flow.input("image", "image")
    node = flow.add("look", "analyze_image", {"image": image}, model="google-gemini-flash")
    flow.output("analysis", node["analysis"])
    result = flow.invoke({"image": str(picture)}, out_dir=tmp_path / "out", simulator=Simulator())
    (execution,) = [e for e in result.trace.executions if e.node == "look"]
    (call,) = execution.provider_calls
    assert call.estimated == []  # every figure came from the answer
    assert {"input_tokens", "output_tokens", "image_input_tokens"} <= set(call.reported)
    assert call.usage["image_input_tokens"] == 258  # one inline image, as Gemini counts it
    assert call.usage["input_tokens"] > 258 and call.response_model == "gemini-3.8-flash"
    price = catalog.get("google-gemini-flash").price
    assert price is not None and price.input_per_1k_tokens and price.output_per_1k_tokens
    expected = (
        call.usage["input_tokens"] / 1000 * price.input_per_1k_tokens
        + call.usage["output_tokens"] / 1000 * price.output_per_1k_tokens
    )
    assert call.cost_usd == execution.cost_usd == round(expected, 8)


def test_a_budgeted_batch_of_an_unpriced_model_says_its_cost_is_unknown_not_zero(
    tmp_path: Path,
) -> None:
    """Gemini TTS has no list price here: items cost null ("$?"), and the budget, which
    cannot count them, says so once instead of passing silently."""
    flow = tmp_path / "speech.yaml"
    flow.write_text(
        "name: speech\ninputs:\n  text: {}\nnodes:\n  voice:\n    kind: text_to_speech\n"
        "    model: google-gemini-tts\n    inputs:\n      text: inputs.text\n"
        "outputs:\n  audio: voice.audio\n"
    )
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "hello there"}\n{"text": "the kite dives"}\n')
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from calliope_graph.cli import main; main()", "batch",
               str(flow), "--inputs", str(inputs), "--out", str(out), "--simulate",
               "--budget", "0.01"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(command, env=env, cwd=HERE, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [r["cost"] for r in _manifest(out)] == [None, None]
    shown = done.stdout + done.stderr
    assert "$?" in shown and "2 items unpriced" in shown
    assert shown.count("cost is unknown and not counted against --budget 0.01") == 1


_KILL_AFTER_FIRST_JOURNAL = """
import os, sys
from pathlib import Path
from calliope_graph.flow import Flow, _journal
from calliope_graph.simulate import Simulator

put = _journal.Journal.put


def put_then_die(self, *args, **kwargs):
    put(self, *args, **kwargs)
    os._exit(9)  # killed the instant the first paid node's outputs are committed


_journal.Journal.put = put_then_die
Flow.load("webcam_story").invoke(
    {"image": sys.argv[1]}, out_dir=Path(sys.argv[2]), thread_id="t", simulator=Simulator()
)
"""


def test_a_run_killed_right_after_a_paid_node_still_counts_that_nodes_cost(
    tmp_path: Path,
) -> None:
    """Outputs and their cost are one commit: the resumed run reports what a clean run does."""
    webcam = HERE.parent / "examples" / "media" / "webcam.jpg"
    flow = Flow.load("webcam_story")
    clean = flow.invoke({"image": webcam}, out_dir=tmp_path / "clean", simulator=Simulator())
    clean_cost = sum(e.cost_usd or 0.0 for e in clean.trace.executions)
    assert clean_cost > 0

    out = tmp_path / "killed"
    script = [sys.executable, "-c", _KILL_AFTER_FIRST_JOURNAL, str(webcam), str(out)]
    assert subprocess.run(script, cwd=HERE, timeout=120).returncode == 9
    resumed_sim = Simulator()
    resumed = flow.invoke(None, out_dir=out, thread_id="t", resume=True, simulator=resumed_sim)
    paid_before = [e for e in resumed.trace.executions if e.resumed]
    assert paid_before, "the resume replayed nothing from the journal"
    assert all(e.provider_calls for e in paid_before), "a journaled node lost its cost"
    total = sum(e.cost_usd or 0.0 for e in resumed.trace.executions)
    assert abs(total - clean_cost) < 1e-9, (total, clean_cost)
