"""One flow at a time: ``run``, ``validate``, ``draw``, ``report`` and ``schema``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from calliope_graph.cli.common import (
    EPILOG,
    EXIT_CODES,
    SIMULATED_LINE,
    Simulation,
    check_keys,
    err_console,
    guard,
    load_flow,
    open_shared,
    out_console,
    parse_inputs,
    resumable,
)
from calliope_graph.cli.options import (
    choose_option,
    debug_option,
    flow_argument,
    media_store_option,
    out_dir_option,
    output_option,
    simulation_options,
)
from calliope_graph.cli.progress import RunProgress, print_result, print_waiting
from calliope_graph.errors import FlowRunError, MediaError, WaitingForChoice

if TYPE_CHECKING:
    from calliope_graph.cli.common import Shared
    from calliope_graph.flow import Flow, FlowEvent, FlowResult, Trace

__all__ = ["REPORT_INTERVAL", "draw", "report", "run", "schema", "validate"]

#: Shortest time between two rewrites of the live report.html during ``run`` (seconds); the
#: page itself reloads every 2 s, and the final report is always written.
REPORT_INTERVAL = 0.5

#: The engines' logger of retries (``calliope_graph.engines``; named in docs/architecture.md).
RETRY_LOGGER = "calliope_graph.engines.retries"


# -- run ---------------------------------------------------------------------------------------
_INPUT_HELP = (
    'NAME=VALUE: media as a path; a list or object as JSON (\'["a", "b"]\') or @file.json; '
    "@file.txt reads text."
)


@click.command(epilog=EPILOG)
@flow_argument
@click.option("--input", "-i", "inputs", multiple=True, help=_INPUT_HELP)
@out_dir_option("Output directory.", default="out", show_default=True)
@simulation_options
@click.option("--resume", default=None, metavar="THREAD_ID", help="Resume a failed or waiting run.")
@choose_option
@click.option("--thread-id", default=None, help="Thread id for the checkpoint (default: new).")
@click.option("--no-cache", is_flag=True, help="Do not reuse cached node results.")
@click.option(
    "--checkpoint",
    "checkpoint",
    default=None,
    metavar="URL",
    envvar="CALLIOPE_CHECKPOINT_URL",
    show_envvar=True,
    help="Checkpoint store: postgresql://USER@HOST/DB (shared: resume from any machine) or a "
    "SQLite file path (default: OUT/checkpoints.sqlite).",
)
@media_store_option
@debug_option
def run(
    flow: str,
    inputs: tuple[str, ...],
    out_dir: str,
    simulation: Simulation,
    resume: str | None,
    choices: dict[str, int],
    thread_id: str | None,
    no_cache: bool,
    checkpoint: str | None,
    media_store: str | None,
    debug: bool,
) -> None:
    """Run FLOW (a shipped flow's name or a YAML/JSON file)."""
    simulation.check()
    if choices and not resume:
        raise click.UsageError("--choose answers a run waiting for a choice: add --resume THREAD.")

    def go() -> None:
        shared = open_shared(simulation)
        try:
            result = asyncio.run(
                _run(
                    flow,
                    parse_inputs(inputs),
                    Path(out_dir),
                    shared,
                    thread=(resume, thread_id),
                    cache=not no_cache,
                    checkpoint=checkpoint or None,
                    media_store=media_store,
                    choices=choices,
                )
            )
        except WaitingForChoice as waiting:
            given = (flow, out_dir, checkpoint, media_store)
            print_waiting(waiting, _commands(waiting, simulation, *given), Path(out_dir))
            sys.exit(EXIT_CODES["waiting_for_choice"])
        except FlowRunError as exc:
            where = ("--out", out_dir, *_store_options(checkpoint, media_store))
            raise resumable(exc, flow, where, simulation) from None
        print_result(result, checkpoint)

    guard(debug, go)


def _commands(
    waiting: WaitingForChoice,
    simulation: Simulation,
    flow: str,
    out_dir: str,
    checkpoint: str | None,
    media_store: str | None,
) -> dict[str, list[str]]:
    """The commands continuing ``waiting`` with each candidate, as this command was given:
    the flow as named (a file keeps its path), ``--out``, ``--checkpoint``, the simulation's
    options (``--simulate``, ``--faults``, ``--limits``...) and ``--media-store``."""
    from calliope_graph.commands import choice_commands
    from calliope_graph.flow.run import shown_url

    return choice_commands(
        waiting.candidates,
        flow,
        out_dir,
        waiting.thread_id,
        checkpoint=shown_url(checkpoint) if checkpoint else None,
        options=simulation.options() + (["--media-store", media_store] if media_store else []),
    )


def _store_options(checkpoint: str | None, media_store: str | None) -> tuple[str, ...]:
    """``--checkpoint``/``--media-store`` as given, for a printed command (a password in the
    checkpoint URL shown as ``***``: kept in PGPASSWORD or ~/.pgpass, it runs as printed)."""
    from calliope_graph.flow.run import shown_url

    found = ("--checkpoint", shown_url(checkpoint)) if checkpoint else ()
    return found + (("--media-store", media_store) if media_store else ())


@contextlib.asynccontextmanager
async def _retries_shown_by_progress() -> AsyncIterator[None]:
    """Drop the engines' retry warnings while ``run``'s progress lines report each retry
    (``↻ … retried``, naming the node), so a retry is shown once, not twice."""
    retry_log = logging.getLogger(RETRY_LOGGER)

    def drop(_record: logging.LogRecord) -> bool:
        return False

    retry_log.addFilter(drop)
    try:
        yield
    finally:
        retry_log.removeFilter(drop)


@contextlib.contextmanager
def _streams_shown(progress: RunProgress) -> Iterator[None]:
    """On a terminal, what nodes stream is shown as it arrives (text, previews): the
    progress is the run's token sink. Elsewhere nothing listens, so nothing streams and
    the output stays as scripts parse it."""
    if not progress.live:
        yield
        return
    from calliope_graph.context import token_sink

    listening = token_sink.set(progress.stream)
    try:
        yield
    finally:
        progress.end_text()
        token_sink.reset(listening)


class _LiveReport:
    """``report.html`` rewritten from the trace being written, at most every
    :data:`REPORT_INTERVAL` (rendering is linear in the trace: on every event, long runs
    were quadratic); a report problem never fails the run."""

    def __init__(self, path: Path) -> None:
        from calliope_graph.files import Throttled
        from calliope_graph.viz import render_report

        self.path = path
        self.render = render_report
        self.live: list[Trace] = []  # the trace being written (the runner updates it in place)
        self.throttle = Throttled(self._write, REPORT_INTERVAL)

    def _write(self) -> None:
        try:
            self.render(self.live[-1], self.path)
        except Exception as exc:
            err_console.print(f"[yellow]report not updated:[/] {exc}", markup=True)

    def update(self, trace: Trace) -> None:
        self.live[:] = [trace]
        self.throttle.request()

    def failed(self, trace_path: Path) -> None:
        """The run failed: the report of the trace the runner marked failed (trace.json may
        not be written), else of the one saved, else none."""
        if self.live:
            self.final(self.live[-1])
        elif trace_path.exists():
            from calliope_graph.flow import Trace

            with contextlib.suppress(Exception):  # an unreadable trace: no report
                self.final(Trace.load(trace_path))
        else:
            self.throttle.cancel()

    def final(self, trace: Trace) -> None:
        self.throttle.cancel()
        self.live[:] = [trace]
        self._write()  # a view: a full disk or a failed render warns, never fails the run


def _checked_inputs(flow: Flow, inputs: dict[str, Any]) -> dict[str, Any]:
    """``--input`` values as the flow declares them, checked before the run starts: a list
    or object input's JSON text parsed (a bad one: the shape expected and how to give it)."""
    declared = flow.spec.inputs
    return {k: declared[k].check(k, v) if k in declared else v for k, v in inputs.items()}


@_retries_shown_by_progress()
async def _run(
    flow_name: str,
    inputs: dict[str, Any],
    out_dir: Path,
    shared: Shared,
    *,
    thread: tuple[str | None, str | None],
    cache: bool,
    checkpoint: str | None,
    media_store: str | None,
    choices: dict[str, int] | None = None,
) -> FlowResult:
    """``run``: ``thread`` is (``--resume``, ``--thread-id``)."""
    from calliope_graph.files import prepare_out_dir
    from calliope_graph.flow.run import new_thread_id, shown_url

    prepare_out_dir(out_dir)  # a bad --out is one message (exit 4) before anything runs
    flow = load_flow(flow_name)
    if shared.keys is not None:
        check_keys(flow, shared.keys)
    inputs = _checked_inputs(flow, inputs)
    progress = RunProgress(
        {name: node.timeout for name, node in flow.spec.nodes.items() if node.timeout},
        candidates={name for name, node in flow.spec.nodes.items() if node.candidates},
    )
    live = _LiveReport(out_dir / "report.html")

    def on_event(event: FlowEvent) -> None:
        progress(event)
        live.update(event.trace)

    resume, thread_id = thread
    thread_id = resume or thread_id or new_thread_id()
    # Printed first: after a kill, this is how the user finds the run to resume.
    store = f"  checkpoints {shown_url(checkpoint)}" if checkpoint else ""
    err_console.print(
        f"{'resuming' if resume else 'running'} {flow.name}  thread {thread_id}  "
        f"out {out_dir}{store}",
        markup=False,
        soft_wrap=True,
    )
    if shared.simulator is not None:
        err_console.print(SIMULATED_LINE, markup=False, soft_wrap=True)
    try:
        with _streams_shown(progress):
            result = await flow.ainvoke(
                inputs,
                out_dir=out_dir,
                session=shared.session,
                keys=shared.keys,
                thread_id=thread_id,
                resume=resume is not None,
                cache=cache,
                on_event=on_event,
                checkpointer=checkpoint or True,
                media_store=media_store,
                choices=choices or None,
            )
    except WaitingForChoice:  # the report shows the candidates
        from calliope_graph.flow import Trace

        live.final(Trace.load(out_dir / "trace.json"))
        raise
    except FlowRunError:
        live.failed(out_dir / "trace.json")
        err_console.print(f"trace: {out_dir / 'trace.json'}  report: {live.path}")
        raise
    except BaseException:  # interrupted (the runner marked the trace so) or unexpected
        if live.live:
            live.throttle.flush()
        raise
    live.final(result.trace)
    return result


# -- validate / schema -------------------------------------------------------------------------
@click.command(epilog=EPILOG)
@flow_argument
@debug_option
def validate(flow: str, debug: bool) -> None:
    """Check FLOW without running it."""

    def go() -> None:
        loaded = load_flow(flow)
        loaded.validate()
        spec = loaded.spec
        out_console.print(
            f"[green]ok[/] {spec.name}: {len(spec.nodes)} nodes, inputs "
            f"{', '.join(spec.inputs) or '-'}, outputs {', '.join(spec.outputs) or '-'}"
        )

    guard(debug, go)


@click.command()
def schema() -> None:
    """Print the JSON Schema of flow files (for editor completion)."""
    from calliope_graph.flow import FlowSpec

    click.echo(json.dumps(FlowSpec.json_schema(), indent=2))


# -- draw / report ---------------------------------------------------------------------------
_SUFFIXES = {
    ".svg": "svg",
    ".png": "png",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".dot": "dot",
    ".gv": "dot",
    ".txt": "ascii",
}


@click.command(epilog=EPILOG)
@flow_argument
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "ascii", "svg", "png"]),
    default=None,
    help="Default: from the -o file's extension (.svg .png .mmd .dot .txt), else ascii.",
)
@output_option("File to write (default: stdout; png needs -o).")
@debug_option
def draw(flow: str, fmt: str | None, output: str | None, debug: bool) -> None:
    """Draw FLOW's structure, offline (no Graphviz, no browser, no web service).

    FLOW is a shipped flow's name or a YAML/JSON file; it is drawn even when it does not
    validate, so a broken flow can be looked at.
    """
    if fmt is None:
        fmt = _SUFFIXES.get(Path(output).suffix.lower(), "ascii") if output else "ascii"

    def go() -> None:
        from calliope_graph.files import write_atomic
        from calliope_graph.viz import draw as draw_spec

        drawing = draw_spec(load_flow(flow).spec, fmt)
        if output is None:
            if isinstance(drawing, bytes):
                raise click.UsageError("PNG output is binary: pass -o FILE.")
            click.echo(drawing)
            return
        path = write_atomic(output, drawing)
        err_console.print(f"wrote {path}")

    guard(debug, go)


@click.command(epilog=EPILOG)
@click.argument("trace", type=click.Path(dir_okay=False))
@output_option("HTML file (default: report.html beside it).")
@debug_option
def report(trace: str, output: str | None, debug: bool) -> None:
    """Render a self-contained HTML report from a saved trace.json."""

    def go() -> None:
        from pydantic import ValidationError

        from calliope_graph.flow import Trace
        from calliope_graph.viz import render_report

        path = Path(trace)
        try:
            loaded = Trace.load(path)
        except FileNotFoundError:
            raise MediaError(
                f"Trace {trace!r} does not exist: pass the trace.json a run wrote.", path=trace
            ) from None
        except (ValueError, ValidationError) as exc:
            raise MediaError(
                f"Trace {trace!r} is not a calliope-graph trace ({str(exc).splitlines()[0]}).",
                path=trace,
            ) from None
        target = Path(output) if output else path.with_name("report.html")
        render_report(loaded, target)
        err_console.print(f"wrote {target}")

    guard(debug, go)
