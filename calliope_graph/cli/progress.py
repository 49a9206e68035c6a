"""What ``run`` prints: a live line per node event (:class:`RunProgress`) and the result."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from calliope_graph.cli.common import err_console, out_console

if TYPE_CHECKING:
    from calliope_graph.errors import WaitingForChoice
    from calliope_graph.flow import FlowResult

__all__ = ["RunProgress", "on_terminal", "print_result", "print_waiting", "shown_here"]


def on_terminal(console: Console) -> bool:
    """Whether ``console`` writes to a terminal, as rich decides (``TTY_COMPATIBLE``, a
    Console made with ``force_terminal``) — but not merely because ``FORCE_COLOR`` asks for
    colours in a log: CI sets it where the output is a pipe a script may read."""
    if not console.is_terminal:
        return False
    if "FORCE_COLOR" not in os.environ:
        return True
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed file
        return False


class RunProgress:
    """Live per-node lines: started, finished with time, retried, fell back, cache hit.

    Names are the trace's: qualified inside subflows (``illustration/image``), with the map
    item in brackets (``scenes[2]``, ``scenes[2]/illustration/image``); a mapped node's own
    lines say which item of which map. Lines go to ``console`` (default: stderr). An event
    is a :class:`~calliope_graph.flow.FlowEvent` or anything shaped like one.

    On a terminal (``live``: the console is one) :meth:`stream` also shows what nodes stream
    (``run`` makes it the run's token sink): text as it is written, after a ``node │``
    label, a discarded attempt's text marked so, and each partial image's path.
    """

    def __init__(
        self,
        timeouts: Mapping[str, float] | None = None,
        *,
        console: Console | None = None,
        live: bool | None = None,
        candidates: Collection[str] = (),
    ) -> None:
        self.start = time.monotonic()
        #: Each node's ``timeout`` (seconds per attempt), by node name.
        self.timeouts = dict(timeouts or {})
        #: The nodes that make ``candidates: N``: their items are candidates, not map items.
        self.candidates = set(candidates)
        self.console = console or err_console
        #: Show streamed text and previews (default: when the console is a terminal).
        self.live = on_terminal(self.console) if live is None else live
        self._open: tuple[str, int] | None = None  # the (node, attempt) whose text is shown
        self._shown: dict[tuple[str, int], int] = {}  # characters shown per (node, attempt)

    def stopped(self, event: Any) -> str:
        """What ended a node the run cancelled: its own timeout, or the run being stopped.

        The runner marks both ``interrupted`` when the node is cancelled (which one it was
        is known only later), so the node's timeout and the time it ran decide here.
        """
        e = event.execution
        node = str(event.node).rsplit("/", 1)[-1].split("[", 1)[0]
        limit = self.timeouts.get(node)
        ran = time.time() - e.started_at
        if limit is not None and ran >= limit * 0.98:
            return f"timed out after {limit:g} s"
        return "interrupted"

    @staticmethod
    def name(event: Any) -> str:
        """``scenes[2]`` for item 2 of map ``scenes``; the trace's name otherwise."""
        e = event.execution
        node = str(event.node)
        from calliope_graph.flow.trace import own_item  # lazily: the CLI starts fast

        if own_item(node, e.item) is not None:
            return f"{node}[{e.item}]"
        return node

    def __call__(self, event: Any) -> None:
        self.end_text()
        e = event.execution
        stamp = f"[dim]{time.monotonic() - self.start:6.2f}s[/]"
        node = str(event.node)
        where = ""
        if self.name(event) != node:
            made = "candidate {} of" if node in self.candidates else "item {} of map"
            where = f", {made.format(e.item)} {node}"
        who = (
            f"[bold]{escape(self.name(event))}[/] "
            f"[dim]({escape(e.kind)}{', ' + escape(e.model) if e.model else ''}{escape(where)})[/]"
        )
        self.console.print(f"{stamp} {self.line(event, who)}", soft_wrap=True)

    # -- what nodes stream (shown on a terminal) ------------------------------------------
    def stream(self, event: Any) -> None:
        """Show a :class:`~calliope_graph.context.TokenEvent` or
        :class:`~calliope_graph.context.PreviewEvent` as it arrives (nothing unless
        ``live``): text continues its node's ``node │`` line, a discard marks that attempt's
        text (or previews) void, a preview is a line with its file's path."""
        if not self.live:
            return
        label = str(event.node) + (f"[{event.item}]" if event.item is not None else "")
        key = (label, int(event.attempt))
        stamp = f"[dim]{time.monotonic() - self.start:6.2f}s[/]"
        if event.kind == "token":
            self._text(key, str(event.text))
        elif event.kind == "discard":
            self.end_text()
            shown = self._shown.pop(key, 0)
            what = f"its {shown} characters above" if shown else "its previews"
            self.console.print(
                f"{stamp} [yellow]✗[/] [bold]{escape(label)}[/] attempt {key[1]} broke off "
                f"({escape(str(event.reason or 'failed'))}): [yellow]{what} are discarded[/]; "
                "a retry or a fallback writes it anew",
                soft_wrap=True,
            )
        elif event.kind == "preview":
            self.end_text()
            self.console.print(
                f"{stamp} [cyan]◐[/] [bold]{escape(label)}[/] preview {event.index + 1}: ", end=""
            )
            self.console.print(str(event.media.path), markup=False, soft_wrap=True)

    def _text(self, key: tuple[str, int], text: str) -> None:
        if self._open != key:
            self.end_text()
            self.console.print(f"        [dim]{escape(key[0])} │[/] ", end="")  # under the names
            self._open = key
        shown = text.replace("\n", "\n" + " " * (len(key[0]) + 11))
        self.console.print(shown, end="", markup=False, highlight=False, soft_wrap=True)
        self._shown[key] = self._shown.get(key, 0) + len(text)

    def end_text(self) -> None:
        """End the line of streamed text in progress (before any other line)."""
        if self._open is not None:
            self.console.print()
            self._open = None

    def line(self, event: Any, who: str) -> str:
        """The line for ``event`` of the node shown as ``who`` (rich markup)."""
        e = event.execution
        kind = event.kind
        if kind == "started":
            return f"▶ {who} started"
        if kind == "finished" and e.resumed:
            return f"[green]✓[/] {who} finished earlier (outputs kept, not paid again)"
        if kind == "finished":
            extra = f", {e.retries} retries" if e.retries else ""
            if e.limit_wait >= 0.05:
                extra += f", {e.limit_wait:.1f}s waiting on the rate limit"
            if e.kind == "switch" and isinstance(e.outputs.get("branch"), str):
                extra += f" → chose {escape(e.outputs['branch'])}"
            return f"[green]✓[/] {who} finished in {e.duration:.2f}s{extra}"
        if kind == "retried":
            return f"[yellow]↻[/] {who} retried ({e.error_class}: {escape(e.error or '')})"
        if kind == "fallback":
            return f"[yellow]↪[/] {who} {e.error_class} → {e.branch}"
        if kind == "skipped" and (e.branch or "").startswith("switch:"):
            switch, _, chosen = (e.branch or "")[7:].partition("→")
            return f"[dim]↷[/] {who} not taken ({escape(switch)} chose {escape(chosen)})"
        if kind == "skipped":
            return f"[yellow]↷[/] {who} {e.error_class} → continue without it"
        if kind == "cache_hit":
            return f"[cyan]⚡[/] {who} cache hit"
        if kind == "waiting":
            return f"[magenta]⏸[/] {who} waits for a choice"
        if kind == "failed" and e.error_class is None:  # cancelled: say by what
            return f"[red]✗[/] {who} {self.stopped(event)}"
        if kind == "failed":
            return f"[red]✗[/] {who} failed ({e.error_class})"
        return f"· {who} {kind}"


#: Files only an output directory of a run holds (how a moved or copied one is recognised).
_RUN_MARKERS = ("trace.json", "checkpoints.sqlite", ".calliope.lock")


def shown_here(path: str, out: Path) -> str:
    """``path`` as it is in the output directory ``out`` of this run.

    Media values in a checkpoint keep the absolute paths of the folder the run first wrote
    to; resuming a copied or moved ``--out`` must print the copies (the files the user now
    has), not the originals. A path under another run folder (one that is gone, or holds a
    run's own files) whose tail exists under ``out`` is shown there.
    """
    p = Path(path)
    if not p.is_absolute() or p.is_relative_to(out):
        return path
    for i in range(1, len(p.parts)):  # the longest tail first: its run folder's path in it
        root, rel = Path(*p.parts[:i]), Path(*p.parts[i:])
        here = out / rel
        if not here.exists():
            continue
        if not root.exists() or any((root / m).exists() for m in _RUN_MARKERS):
            return str(here)
    return path


def _output_text(value: Any, out: Path) -> str:
    """One output of a run as ``run`` prints it (at most 600 characters)."""
    from pydantic import BaseModel

    from calliope_graph.media import Audio, Image, ImageAnalysis, Video

    if isinstance(value, Image | Audio | Video):
        shown = shown_here(value.path, out)
        text = f"{shown} ({value.mime})" + (f" {value.uri}" if value.uri else "")
    elif isinstance(value, ImageAnalysis):
        text = value.description or ", ".join(value.captions)
    elif isinstance(value, BaseModel):
        fields = value.model_dump(mode="json")
        text = json.dumps(fields, ensure_ascii=False)
        if "text" in fields:  # a story frame: its text, then where its media are
            media = [
                shown_here(str(v["path"]), out)
                for v in fields.values()
                if isinstance(v, dict) and "path" in v
            ]
            text = fields["text"] + "".join(f"\n  → {m}" for m in media)
    else:
        text = str(value)
    return text[:600] + "…" if len(text) > 600 else text


def print_result(result: FlowResult, checkpoint: str | None = None) -> None:
    """The outputs of a finished run, then where its trace, report and checkpoint are."""
    simulated = "  [magenta](simulated)[/]" if result.trace.simulated else ""
    out_console.print(
        f"[bold green]done[/] in {result.trace.wall_time:.2f}s  thread {result.thread_id}"
        f"{simulated}"
    )
    resolved = Path(result.out_dir).resolve()
    for name, value in result.outputs.items():
        out_console.print(f"[bold]{name}[/]: ", end="")
        out_console.print(_output_text(value, resolved), markup=False, soft_wrap=True)
    out = Path(result.out_dir)
    from calliope_graph.flow.run import shown_url

    store = shown_url(checkpoint) if checkpoint else out / "checkpoints.sqlite"
    out_console.print(
        f"trace: {out / 'trace.json'}  report: {out / 'report.html'}  checkpoint: {store}",
        soft_wrap=True,
    )


def _candidate_text(value: Any, out: Path) -> str:
    """One candidate (as the trace summarises it) on one line: a media file's path, text."""
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        path = Path(value["path"])
        shown = str(path if path.is_absolute() else out / path)
        return f"{shown_here(shown, out.resolve())} ({value.get('mime') or value.get('type')})"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text[:200] + "…" if len(text) > 200 else text


def print_waiting(waiting: WaitingForChoice, commands: Mapping[str, list[str]], out: Path) -> None:
    """A run waiting for a choice: each node's candidates, each with the exact command that
    continues the run keeping it, and where the report shows them (``run`` exits 6)."""
    out_console.print(
        f"[bold magenta]waiting for a choice[/]  thread {waiting.thread_id}  "
        f"report: {out / 'report.html'}",
        soft_wrap=True,
    )
    for node, found in waiting.candidates.items():
        out_console.print(f"[bold]{escape(node)}[/]: {len(found)} candidates; to keep one, run")
        for index, candidate in enumerate(found):
            out_console.print(f"  [{index}] ", end="", markup=False)
            out_console.print(_candidate_text(candidate, out), markup=False, soft_wrap=True)
            listed = commands.get(node, [])
            if index < len(listed):
                out_console.print(f"      {listed[index]}", markup=False, soft_wrap=True)
