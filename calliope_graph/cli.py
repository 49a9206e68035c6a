"""The ``calliope-graph`` command line: run, batch, worker, simulate, validate, draw, report,
nodes, models, schema.

Exit codes (also in ``calliope-graph --help``):

====  =====================================================================
0     success
1     the flow ran and failed (a node failed past its retries and routes)
2     bad command-line usage
3     the flow description is invalid (FlowSpecError)
4     configuration problem: a missing key, an unknown model config, an unusable or
      busy --out directory
5     bad input media (missing, empty, corrupt or unsupported file)
130   interrupted
====  =====================================================================

``batch`` uses 1 when some items failed or were not started (budget), and 4 for a bad row
of its inputs file as well. ``models --check`` uses 6 when catalog models are missing from
their provider's list.

Errors print as one message; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import traceback
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from calliope_graph._files import Throttled, write_atomic
from calliope_graph.errors import (
    CalliopeError,
    ConfigurationError,
    FlowRunError,
    FlowSpecError,
    MediaError,
)

__all__ = ["EXIT_CODES", "main"]

EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "run_failed": 1,
    "usage": 2,
    "invalid_flow": 3,
    "configuration": 4,
    "media": 5,
    # 6 is kept for a run that stops to wait for a person's choice (interactive stories).
    "models_missing": 7,
    "interrupted": 130,
}

EPILOG = (
    "Exit codes: 0 ok, 1 the run failed, 2 usage, 3 invalid flow, 4 configuration "
    "(missing key, unknown model, unusable or busy --out), 5 bad input media, 130 interrupted."
)

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

#: Shortest time between two rewrites of the live report.html during ``run`` (seconds); the
#: page itself reloads every 2 s, and the final report is always written.
REPORT_INTERVAL = 0.5


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, FlowSpecError):
        return EXIT_CODES["invalid_flow"]
    if isinstance(exc, ConfigurationError):
        return EXIT_CODES["configuration"]
    if isinstance(exc, MediaError):
        return EXIT_CODES["media"]
    return EXIT_CODES["run_failed"]


def _fail(exc: BaseException, debug: bool) -> NoReturn:
    if debug:
        err_console.print(traceback.format_exc(), markup=False)
    # The nearest public class: an internal subclass's name means nothing to a user.
    label = next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))
    err_console.print(f"[bold red]error[/] ({label}): ", end="")
    err_console.print(str(exc), markup=False, soft_wrap=True)
    sys.exit(_exit_code(exc))


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Model lifecycle warnings print as one ``warning:`` line each (once per model)."""
    from calliope_graph.lifecycle import ModelLifecycleWarning

    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
            if issubclass(category, ModelLifecycleWarning):
                err_console.print("[yellow]warning:[/] ", end="")
                err_console.print(str(message), markup=False, soft_wrap=True)
            else:
                previous(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _guard(debug: bool, fn: Callable[[], Any]) -> Any:
    try:
        with _one_line_warnings():
            return fn()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(EXIT_CODES["interrupted"])
    except CalliopeError as exc:
        _fail(exc, debug)


def _load(flow: str) -> Any:
    from calliope_graph.flow import Flow

    return Flow.load(flow)


def _parse_inputs(values: Sequence[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"{item!r}: write --input NAME=VALUE (a path for media, @file.txt to read text)",
                param_hint="--input",
            )
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                value = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise MediaError(
                    f"--input {name}: cannot read {str(path)!r} ({exc.strerror}); "
                    "give an existing UTF-8 text file after '@'.",
                    path=str(path),
                ) from None
        inputs[name.strip()] = value
    return inputs


def _parse_faults(value: str | None) -> list[Any] | None:
    """``--faults`` read into simulator faults; a part that cannot be read is a usage error."""
    if not value:
        return None
    from calliope_graph.simulate import FaultSpecError, parse_faults

    try:
        return parse_faults(value)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None


def _parse_simulate_limits(value: str | None, hint: str = "--simulate-limits") -> Any:
    """``--simulate-limits`` read into the simulator's limits; a bad value is a usage error."""
    if not value:
        return None
    from calliope_graph.simulate import parse_simulate_limits

    try:
        return parse_simulate_limits(value, where=hint)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="calliope-graph")
def main() -> None:
    """Multimodal generative story flows as typed LangGraph graphs."""


# -- run ---------------------------------------------------------------------------------------
def _simulation_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--simulate``, ``--faults``, ``--simulate-limits`` and ``--limits``, as ``run`` and
    ``worker`` take them (parsed; a malformed value is a usage error naming the bad part)."""
    options = [
        click.option(
            "--simulate", is_flag=True, help="Use the offline provider simulator (no keys)."
        ),
        click.option(
            "--faults",
            default=None,
            callback=lambda _ctx, _param, value: _parse_faults(value),
            help="Simulator faults, e.g. 'hang@openai:seconds=2;rate_limit@stability:first_n=1' "
            "(a hang without seconds= lasts the client's whole read timeout).",
        ),
        click.option(
            "--simulate-limits",
            "simulate_limits",
            default=None,
            callback=lambda _ctx, _param, value: _parse_simulate_limits(value),
            help="Make the simulated providers limit like the real ones, e.g. "
            "'stability:rpm=60;openai:rpm=500,tpm=200000' (429s with Retry-After).",
        ),
        click.option(
            "--limits",
            default=None,
            callback=lambda _ctx, _param, value: _checked_limits(value),
            help="Per-provider rate limits, e.g. 'openai:rpm=500,tpm=200000;stability:rps=15'.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


_MEDIA_STORE_HELP = (
    "Keep media in object storage too: s3://BUCKET/PREFIX (credentials and endpoint from "
    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL); media inputs may then be "
    "the store's s3:// URIs or signed URLs."
)


def _media_store_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--media-store`` (``$CALLIOPE_MEDIA_STORE``), checked when given."""

    def check(_ctx: Any, _param: Any, value: str | None) -> str | None:
        if not value:
            return None
        from calliope_graph.object_store import parse_store_url

        try:
            parse_store_url(value)
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc)) from None
        return value.strip()

    return click.option(
        "--media-store",
        "media_store",
        default=None,
        metavar="URL",
        envvar="CALLIOPE_MEDIA_STORE",
        show_envvar=True,
        callback=check,
        help=_MEDIA_STORE_HELP,
    )(command)


@main.command(epilog=EPILOG)
@click.argument("flow")
@click.option("--input", "-i", "inputs", multiple=True, help="NAME=VALUE (media as a path).")
@click.option("-o", "--out", "out_dir", default="out", show_default=True, help="Output directory.")
@_simulation_options
@click.option("--resume", default=None, metavar="THREAD_ID", help="Resume a failed run.")
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
@_media_store_option
@click.option("--debug", is_flag=True, help="Print tracebacks.")
def run(
    flow: str,
    inputs: tuple[str, ...],
    out_dir: str,
    simulate: bool,
    faults: list[Any] | None,
    simulate_limits: dict[str, Any] | None,
    limits: str | None,
    resume: str | None,
    thread_id: str | None,
    no_cache: bool,
    checkpoint: str | None,
    media_store: str | None,
    debug: bool,
) -> None:
    """Run FLOW (a shipped flow's name or a YAML/JSON file)."""
    if faults and not simulate:
        raise click.UsageError("--faults only applies with --simulate.")
    if simulate_limits and not simulate:
        raise click.UsageError("--simulate-limits only applies with --simulate.")
    if simulate:
        from calliope_graph.simulate import Simulator

        simulator: Any = Simulator(faults=faults or (), limits=simulate_limits)
    else:
        simulator = None
    session = _session(limits, simulator)

    def go() -> None:
        result = asyncio.run(
            _run(
                flow,
                _parse_inputs(inputs),
                Path(out_dir),
                session,
                resume,
                thread_id,
                not no_cache,
                checkpoint or None,
                media_store,
            )
        )
        _print_result(result, checkpoint)

    _guard(debug, go)


@contextlib.asynccontextmanager
async def _retries_shown_by_progress() -> AsyncIterator[None]:
    """Drop the engines' retry warnings while ``run``'s progress lines report each retry
    (``↻ … retried``, naming the node), so a retry is shown once, not twice."""
    from calliope_graph.engines._http import retry_log

    def drop(_record: logging.LogRecord) -> bool:
        return False

    retry_log.addFilter(drop)
    try:
        yield
    finally:
        retry_log.removeFilter(drop)


@_retries_shown_by_progress()
async def _run(
    flow_name: str,
    inputs: dict[str, Any],
    out_dir: Path,
    session: Any,
    resume: str | None,
    thread_id: str | None,
    cache: bool,
    checkpoint: str | None = None,
    media_store: str | None = None,
) -> Any:
    from calliope_graph._outdir import prepare_out_dir
    from calliope_graph.config import KeysModel
    from calliope_graph.viz import render_report

    prepare_out_dir(out_dir)  # a bad --out is one message (exit 4) before anything runs
    flow = _load(flow_name)
    keys = None if session.simulator is not None else KeysModel.from_env()
    if keys is not None:
        _check_keys(flow, keys)
    report = out_dir / "report.html"
    progress = _Progress(
        {name: node.timeout for name, node in flow.spec.nodes.items() if node.timeout}
    )
    live: list[Any] = []  # the trace being written (the runner updates it in place)

    def write_report() -> None:
        try:
            render_report(live[-1], report)
        except Exception as exc:  # a report problem never fails the run
            err_console.print(f"[yellow]report not updated:[/] {exc}", markup=True)

    # Rendering is linear in the trace, so rendering on every event made long runs quadratic.
    reporter = Throttled(write_report, REPORT_INTERVAL)

    def on_event(event: Any) -> None:
        progress(event)
        live[:] = [event.trace]
        reporter.request()

    from calliope_graph.flow.run import new_thread_id

    thread = resume or thread_id or new_thread_id()
    # Printed first: after a kill, this is how the user finds the run to resume.
    store = ""
    if checkpoint:
        from calliope_graph.flow._checkpoints import shown_url

        store = f"  checkpoints {shown_url(checkpoint)}"
    err_console.print(
        f"{'resuming' if resume else 'running'} {flow.name}  thread {thread}  out {out_dir}{store}",
        markup=False,
        soft_wrap=True,
    )
    try:
        result = await flow.ainvoke(
            inputs,
            out_dir=out_dir,
            session=session,
            keys=keys,
            thread_id=thread,
            resume=resume is not None,
            cache=cache,
            on_event=on_event,
            checkpointer=checkpoint or True,
            media_store=media_store,
        )
    except FlowRunError as exc:
        reporter.cancel()
        trace_path = out_dir / "trace.json"
        if trace_path.exists():
            from calliope_graph.flow import Trace

            render_report(Trace.load(trace_path), report)
        err_console.print(f"trace: {trace_path}  report: {report}")
        raise exc
    except BaseException:  # interrupted (the runner marked the trace so) or unexpected
        if live:
            reporter.flush()
        raise
    reporter.cancel()
    render_report(result.trace, report)
    return result


def _check_keys(flow: Any, keys: Any) -> None:
    """Fail before running when a provider the flow uses has no key."""
    from calliope_graph.config import InferenceModelProvider, ModelConfig, catalog

    missing: dict[str, list[str]] = {}
    for name, node in flow.spec.nodes.items():
        model = node.model
        config = model if isinstance(model, ModelConfig) else None
        if config is None and isinstance(model, str) and model in catalog:
            config = catalog.get(model)
        if config is None or config.provider is InferenceModelProvider.LANGCHAIN:
            continue
        try:
            keys.model_key(config.model)  # the model's own api_key_env, none, or the provider's
        except ConfigurationError:
            var = config.model.api_key_env or keys.env_var(config.provider)
            missing.setdefault(var, []).append(name)
    if missing:
        listed = "; ".join(f"{var} (for {', '.join(nodes)})" for var, nodes in missing.items())
        raise ConfigurationError(
            f"Missing API keys: set {listed} — or run offline with --simulate."
        )


class _Progress:
    """Live per-node lines: started, finished with time, retried, fell back, cache hit.

    Names are the trace's: qualified inside subflows (``illustration/image``), with the map
    item in brackets (``scenes[2]``, ``scenes[2]/illustration/image``); a mapped node's own
    lines say which item of which map.
    """

    def __init__(self, timeouts: Mapping[str, float] | None = None) -> None:
        self.start = time.monotonic()
        #: Each node's ``timeout`` (seconds per attempt), by node name.
        self.timeouts = dict(timeouts or {})

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
        if e.item is not None and not node.endswith("]"):
            return f"{node}[{e.item}]"
        return node

    def __call__(self, event: Any) -> None:
        from rich.markup import escape

        e = event.execution
        stamp = f"[dim]{time.monotonic() - self.start:6.2f}s[/]"
        node = str(event.node)
        where = f", item {e.item} of map {node}" if e.item is not None and "[" not in node else ""
        who = (
            f"[bold]{escape(self.name(event))}[/] "
            f"[dim]({escape(e.kind)}{', ' + escape(e.model) if e.model else ''}{escape(where)})[/]"
        )
        kind = event.kind
        if kind == "started":
            line = f"▶ {who} started"
        elif kind == "finished" and e.resumed:
            line = f"[green]✓[/] {who} finished earlier (outputs kept, not paid again)"
        elif kind == "finished":
            extra = f", {e.retries} retries" if e.retries else ""
            if e.limit_wait >= 0.05:
                extra += f", {e.limit_wait:.1f}s waiting on the rate limit"
            if e.kind == "switch" and isinstance(e.outputs.get("branch"), str):
                extra += f" → chose {escape(e.outputs['branch'])}"
            line = f"[green]✓[/] {who} finished in {e.duration:.2f}s{extra}"
        elif kind == "retried":
            line = f"[yellow]↻[/] {who} retried ({e.error_class}: {escape(e.error or '')})"
        elif kind == "fallback":
            line = f"[yellow]↪[/] {who} {e.error_class} → {e.branch}"
        elif kind == "skipped" and (e.branch or "").startswith("switch:"):
            switch, _, chosen = (e.branch or "")[7:].partition("→")
            line = f"[dim]↷[/] {who} not taken ({escape(switch)} chose {escape(chosen)})"
        elif kind == "skipped":
            line = f"[yellow]↷[/] {who} {e.error_class} → continue without it"
        elif kind == "cache_hit":
            line = f"[cyan]⚡[/] {who} cache hit"
        elif kind == "failed" and e.error_class is None:  # cancelled: say by what
            line = f"[red]✗[/] {who} {self.stopped(event)}"
        elif kind == "failed":
            line = f"[red]✗[/] {who} failed ({e.error_class})"
        else:
            line = f"· {who} {kind}"
        err_console.print(f"{stamp} {line}", soft_wrap=True)


#: Files only an output directory of a run holds (how a moved or copied one is recognised).
_RUN_MARKERS = ("trace.json", "checkpoints.sqlite", ".calliope.lock")


def _here(path: str, out: Path) -> str:
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


def _print_result(result: Any, checkpoint: str | None = None) -> None:
    out_console.print(
        f"[bold green]done[/] in {result.trace.wall_time:.2f}s  thread {result.thread_id}"
    )
    from pydantic import BaseModel

    from calliope_graph.media import Audio, Image, ImageAnalysis, Video

    out = Path(result.out_dir).resolve()
    for name, value in result.outputs.items():
        if isinstance(value, Image | Audio | Video):
            shown = _here(value.path, out)
            text = f"{shown} ({value.mime})" + (f" {value.uri}" if value.uri else "")
        elif isinstance(value, ImageAnalysis):
            text = value.description or ", ".join(value.captions)
        elif isinstance(value, BaseModel):
            fields = value.model_dump(mode="json")
            text = json.dumps(fields, ensure_ascii=False)
            if "text" in fields:  # a story frame: its text, then where its media are
                media = [
                    _here(str(v["path"]), out)
                    for v in fields.values()
                    if isinstance(v, dict) and "path" in v
                ]
                text = fields["text"] + "".join(f"\n  → {m}" for m in media)
        else:
            text = str(value)
        if len(text) > 600:
            text = text[:600] + "…"
        out_console.print(f"[bold]{name}[/]: ", end="")
        out_console.print(text, markup=False, soft_wrap=True)
    out = Path(result.out_dir)
    from calliope_graph.flow._checkpoints import shown_url

    store = shown_url(checkpoint) if checkpoint else out / "checkpoints.sqlite"
    out_console.print(
        f"trace: {out / 'trace.json'}  report: {out / 'report.html'}  checkpoint: {store}",
        soft_wrap=True,
    )


# -- batch -------------------------------------------------------------------------------------
BATCH_EPILOG = (
    "Exit codes: 0 every item ok, 1 some items failed or were not started (budget), "
    "2 usage, 3 invalid flow, 4 configuration or a bad inputs row, 130 interrupted."
)


def _checked_limits(value: str | None) -> str | None:
    """``--limits``: a malformed value is a usage error naming the bad part (exit 2)."""
    if not value:
        return value
    from calliope_graph.limits import parse_limits

    try:
        parse_limits(value, where="--limits")
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--limits") from None
    return value


def _session(limits: str | None, simulator: Any = None, keys: Any = None) -> Any:
    """The command's session, made here only: ``--limits "openai:rpm=500;stability:rps=15"``
    (already checked by :func:`_checked_limits`) over the defaults, the simulator of
    ``--simulate``, the keys. Passed down to the run, the batch or the worker."""
    from calliope_graph.session import Session

    return Session(keys=keys, simulator=simulator, limits=limits, where="--limits")


def _batch_progress(as_json: bool, flow_name: str) -> Any:
    """The batch display: JSON events, a live display on a terminal, else a line per item."""
    from calliope_graph.batch._progress import JsonProgress, LiveProgress, PlainProgress

    if as_json:
        return JsonProgress()
    if err_console.is_terminal:
        return LiveProgress(err_console, flow_name)
    return PlainProgress(err_console)


@main.command(epilog=BATCH_EPILOG)
@click.argument("flow")
@click.option(
    "--inputs",
    "inputs_path",
    required=True,
    help=".jsonl or .csv of flow inputs (an 'id' column names items), or a folder of media.",
)
@click.option(
    "-o", "--out", "out_dir", required=True, help="Batch folder (manifest, items, report)."
)
@click.option("--simulate", is_flag=True, help="Use the offline provider simulator (no keys).")
@click.option(
    "--faults", default=None, help="Simulator faults, e.g. 'latency@stability:seconds=1'."
)
@click.option(
    "--concurrency",
    "-j",
    type=click.IntRange(1, 10_000),
    default=4,
    show_default=True,
    help="Items running at once.",
)
@click.option("--resume", is_flag=True, help="Continue the batch in --out (ok items are skipped).")
@click.option("--retry-failed", is_flag=True, help="Run only the failed items (implies --resume).")
@click.option(
    "--budget",
    type=click.FloatRange(min=0),
    default=None,
    metavar="USD",
    help="Stop starting items when the spend would pass this.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout.")
@click.option(
    "--limits",
    default=None,
    callback=lambda ctx, param, value: _checked_limits(value),
    help="Per-provider rate limits, e.g. 'openai:rpm=500,tpm=200000;stability:rps=15'.",
)
@click.option(
    "--simulate-limits",
    default=None,
    callback=lambda _ctx, _param, value: (_parse_simulate_limits(value), value)[1],
    help="The simulator's provider limits, e.g. 'stability:rpm=120' (with --simulate).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "dbos"]),
    default="local",
    show_default=True,
    help="local: asyncio in this process; dbos: enqueue for `calliope-graph worker`s and "
    "follow them (pip install 'calliope-graph[dbos]').",
)
@click.option(
    "--db",
    default=None,
    metavar="URL",
    help="--engine dbos: the shared database, postgresql://... (default: SQLite OUT/dbos.sqlite).",
)
@_media_store_option
@click.option("--debug", is_flag=True, help="Print tracebacks.")
def batch(
    flow: str,
    inputs_path: str,
    out_dir: str,
    simulate: bool,
    faults: str | None,
    concurrency: int,
    resume: bool,
    retry_failed: bool,
    budget: float | None,
    as_json: bool,
    limits: str | None,
    simulate_limits: str | None,
    engine: str,
    db: str | None,
    media_store: str | None,
    debug: bool,
) -> None:
    """Run FLOW over every item of --inputs, into --out (one folder per item).

    A manifest line per finished item goes to OUT/batch.jsonl, the batch report to
    OUT/batch.html. After a kill or failures, run the same command with --resume: ok items
    are skipped and the others continue from their checkpoints.

    With --engine dbos the items are enqueued in --db and run by `calliope-graph worker`
    processes (any number, any machine); this command follows them into the manifest, and
    stopping and running it again loses nothing.
    """
    if engine == "dbos":
        for given, name in (
            (simulate, "--simulate"),
            (faults, "--faults"),
            (limits, "--limits"),
            (simulate_limits, "--simulate-limits"),
            (budget is not None, "--budget"),
            (retry_failed, "--retry-failed"),
        ):
            if given:
                raise click.UsageError(
                    f"{name} does not apply with --engine dbos: the workers make the calls "
                    f"(give --simulate, --faults, --limits, --simulate-limits to "
                    f"`calliope-graph worker`)."
                    if name not in ("--budget", "--retry-failed")
                    else f"{name} is not supported with --engine dbos yet (use --engine local)."
                )
        sys.exit(
            _guard(
                debug,
                lambda: asyncio.run(
                    _follow(flow, inputs_path, Path(out_dir), db, concurrency, as_json)
                ),
            )
        )
    if db:
        raise click.UsageError("--db applies only with --engine dbos.")
    if faults and not simulate:
        raise click.UsageError("--faults only applies with --simulate.")
    if simulate_limits and not simulate:
        raise click.UsageError("--simulate-limits only applies with --simulate.")

    def go() -> int:
        try:
            return asyncio.run(
                _batch(
                    flow,
                    inputs_path,
                    Path(out_dir),
                    simulate=simulate,
                    faults=faults,
                    concurrency=concurrency,
                    resume=resume or retry_failed,
                    retry_failed=retry_failed,
                    budget=budget,
                    as_json=as_json,
                    limits=limits,
                    simulate_limits=simulate_limits,
                    media_store=media_store,
                )
            )
        except KeyboardInterrupt:
            err_console.print(
                f"interrupted: finished items are in {Path(out_dir) / 'batch.jsonl'}; "
                f"continue with: calliope-graph batch {flow} --inputs {inputs_path} "
                f"--out {out_dir} --resume" + (f" --budget {budget:g}" if budget else ""),
                markup=False,
                soft_wrap=True,
            )
            sys.exit(EXIT_CODES["interrupted"])

    sys.exit(_guard(debug, go))


async def _batch(
    flow_name: str,
    inputs_path: str,
    out_dir: Path,
    *,
    simulate: bool,
    faults: str | None,
    concurrency: int,
    resume: bool,
    retry_failed: bool,
    budget: float | None,
    as_json: bool,
    limits: str | None,
    simulate_limits: str | None,
    media_store: str | None = None,
) -> int:
    from calliope_graph.batch import BatchInputError, BatchSummary, run_batch
    from calliope_graph.batch._progress import JsonProgress
    from calliope_graph.config import KeysModel
    from calliope_graph.simulate import Simulator, parse_faults

    flow = _load(flow_name)
    flow.validate()
    simulator = None
    if simulate:
        limited = _parse_simulate_limits(simulate_limits) if simulate_limits else None
        simulator = Simulator(faults=parse_faults(faults or ""), limits=limited)
    keys = None if simulate else KeysModel.from_env()
    if keys is not None:
        _check_keys(flow, keys)
    session = _session(limits, simulator, keys)
    progress = _batch_progress(as_json, flow.name)
    if not as_json:
        err_console.print(
            f"{'resuming' if resume else 'running'} batch {flow.name}  inputs {inputs_path}  "
            f"out {out_dir}  concurrency {concurrency}",
            markup=False,
            soft_wrap=True,
        )
    summary: BatchSummary | None = None
    error: BatchInputError | None = None
    with progress:
        try:
            summary = await run_batch(
                flow,
                inputs_path,
                out_dir,
                concurrency=concurrency,
                resume=resume,
                retry_failed=retry_failed,
                budget=budget,
                session=session,
                on_progress=progress,
                media_store=media_store,
            )
        except BatchInputError as exc:
            error, summary = exc, exc.summary
    if summary is not None:
        extra: dict[str, Any] = {}
        if simulator is not None:
            extra["simulator_calls"] = simulator.count()
        if as_json:
            JsonProgress().write({"event": "summary", **summary.to_dict(), **extra})
        else:
            _print_batch_summary(summary, flow_name, inputs_path, out_dir)
    if error is not None:
        raise error
    assert summary is not None
    return EXIT_CODES["ok"] if summary.all_ok else EXIT_CODES["run_failed"]


async def _follow(
    flow_name: str, inputs_path: str, out_dir: Path, db: str | None, concurrency: int, as_json: bool
) -> int:
    """``batch --engine dbos``: enqueue the items, follow the workers into the manifest."""
    from calliope_graph.batch._progress import JsonProgress

    try:
        from calliope_graph.batch._dbos import _flow_ref, db_url, follow_batch
    except ImportError as exc:
        raise ConfigurationError(
            f"--engine dbos needs the dbos extra ({exc.name} is missing): "
            "pip install 'calliope-graph[dbos]'."
        ) from None
    flow = _load(flow_name)
    flow.validate()
    progress = _batch_progress(as_json, flow.name)
    if not as_json:
        from calliope_graph.batch._dbos import _shown

        err_console.print(
            f"following batch {flow.name}  inputs {inputs_path}  out {out_dir}  "
            f"db {_shown(db_url(db, out_dir))}  concurrency {concurrency} (all workers)",
            markup=False,
            soft_wrap=True,
        )
    with progress:
        summary = await follow_batch(
            flow,
            inputs_path,
            out_dir,
            db=db,
            concurrency=concurrency,
            on_progress=progress,
            flow_ref=_flow_ref(flow_name),
        )
    if as_json:
        JsonProgress().write({"event": "summary", **summary.to_dict()})
    else:
        _print_batch_summary(summary, flow_name, inputs_path, out_dir)
    return EXIT_CODES["ok"] if summary.all_ok else EXIT_CODES["run_failed"]


# -- worker ----------------------------------------------------------------------------------------
@main.command(epilog=EPILOG)
@click.option("--db", default=None, metavar="URL", help="The batch database (as given to batch).")
@click.option("-o", "--out", "out_dir", required=True, help="The shared batch folder.")
@_simulation_options
@click.option(
    "--concurrency",
    "-j",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Items this worker runs at once (default: the queue's).",
)
@click.option(
    "--dead-after",
    type=click.FloatRange(min=0.5),
    default=15.0,
    show_default=True,
    help="Seconds without a heartbeat after which a worker's items are recovered by the others.",
)
@_media_store_option
@click.option("--debug", is_flag=True, help="Print tracebacks.")
def worker(
    db: str | None,
    out_dir: str,
    simulate: bool,
    faults: list[Any] | None,
    simulate_limits: dict[str, Any] | None,
    limits: str | None,
    concurrency: int | None,
    dead_after: float,
    media_store: str | None,
    debug: bool,
) -> None:
    """Run batch items enqueued by `batch --engine dbos`, until Ctrl-C or SIGTERM.

    Start any number, on any machines that share --db and the --out folder; a worker that
    dies (even kill -9) has its items finished by the others.
    """
    if faults and not simulate:
        raise click.UsageError("--faults only applies with --simulate.")
    if simulate_limits and not simulate:
        raise click.UsageError("--simulate-limits only applies with --simulate.")
    simulator: Any = None
    if simulate:
        from calliope_graph.simulate import Simulator

        simulator = Simulator(faults=faults or (), limits=simulate_limits)
    session = _session(limits, simulator)

    def echo(line: str) -> None:
        err_console.print(line, markup=False, soft_wrap=True)

    def go() -> None:
        try:
            from calliope_graph.batch._dbos import run_worker
        except ImportError as exc:
            raise ConfigurationError(
                f"`worker` needs the dbos extra ({exc.name} is missing): "
                "pip install 'calliope-graph[dbos]'."
            ) from None
        asyncio.run(
            run_worker(
                out_dir,
                db=db,
                concurrency=concurrency,
                session=session,
                dead_after=dead_after,
                heartbeat=min(2.0, dead_after / 4),
                echo=echo,
                media_store=media_store,
            )
        )

    _guard(debug, go)
    err_console.print("worker stopped")


def _print_batch_summary(summary: Any, flow: str, inputs: str, out_dir: Path) -> None:
    style = "bold green" if summary.all_ok else "bold yellow"
    skipped = f" ({summary.skipped} already ok)" if summary.skipped else ""
    out_console.print(
        f"[{style}]batch {summary.flow}[/]: {summary.ok} ok{skipped}, {summary.failed} failed, "
        f"{len(summary.not_started)} not started of {summary.total} in "
        f"{summary.wall_time:.1f}s",
        soft_wrap=True,
    )
    unpriced = f" ({summary.unpriced} items unpriced)" if summary.unpriced else ""
    calls = ", ".join(f"{p} {n}" for p, n in sorted(summary.calls.items())) or "none"
    limited = ", ".join(f"{p} {n}" for p, n in sorted(summary.rate_limited.items()))
    out_console.print(
        f"cost: ${summary.cost:.4f} total, ${summary.cost_this_run:.4f} this run{unpriced}  "
        f"calls: {calls}" + (f"  429s: {limited}" if limited else ""),
        markup=False,
        soft_wrap=True,
    )
    for cause, n in summary.failures.items():
        out_console.print(f"  failed: {n} × {cause}", markup=False, soft_wrap=True)
    if summary.budget_message:
        out_console.print(summary.budget_message, markup=False, soft_wrap=True)
    out_console.print(
        f"manifest: {summary.manifest}  report: {summary.report or '-'}", soft_wrap=True
    )
    again = f"calliope-graph batch {flow} --inputs {inputs} --out {out_dir} --resume"
    if summary.budget is not None:  # the same limit again; stopped by it, the larger one its
        # message suggests (the same one would stop again at once, having run nothing)
        budget = summary.budget * 2 if summary.budget_stopped else summary.budget
        again += f" --budget {budget:g}"
    if summary.failed:
        out_console.print(f"retry the failed items: {again} --retry-failed", soft_wrap=True)
    elif summary.not_started:
        out_console.print(f"run the rest: {again}", soft_wrap=True)


# -- simulate --------------------------------------------------------------------------------------
@main.command(epilog=EPILOG)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port, printed).",
)
@click.option(
    "--limits",
    "limits",
    default=None,
    callback=lambda _ctx, _param, value: _parse_simulate_limits(value, "--limits"),
    help="Provider limits, e.g. 'stability:rpm=60;openai:rpm=500,tpm=200000'.",
)
@click.option(
    "--faults",
    default=None,
    callback=lambda _ctx, _param, value: _parse_faults(value),
    help="Faults, e.g. 'rate_limit@openai:first_n=2;latency@stability:seconds=0.5'.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (and fake keys).")
def simulate(port: int, limits: dict[str, Any] | None, faults: list[Any] | None, seed: int) -> None:
    """Serve the provider simulator over HTTP on 127.0.0.1, until Ctrl-C.

    Prints `export` lines (each provider's base URL and fake key): paste them into other
    shells, and `calliope-graph run`, batches, workers and official SDKs share one simulator,
    its limits and its counts (GET /_sim/counts).
    """
    from calliope_graph.simulate import Simulator
    from calliope_graph.simulate.server import serve

    sim = Simulator(faults=faults or (), limits=limits, seed=seed)

    def echo(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    try:
        asyncio.run(serve(sim, port, echo=echo))
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); pick another --port, "
            "or --port 0 for any free one."
        ) from None
    except KeyboardInterrupt:
        pass
    err_console.print("simulator stopped")


# -- validate / nodes / schema ---------------------------------------------------------------------
@main.command(epilog=EPILOG)
@click.argument("flow")
@click.option("--debug", is_flag=True, help="Print tracebacks.")
def validate(flow: str, debug: bool) -> None:
    """Check FLOW without running it."""

    def go() -> None:
        loaded = _load(flow)
        loaded.validate()
        spec = loaded.spec
        out_console.print(
            f"[green]ok[/] {spec.name}: {len(spec.nodes)} nodes, inputs "
            f"{', '.join(spec.inputs) or '-'}, outputs {', '.join(spec.outputs) or '-'}"
        )

    _guard(debug, go)


@main.command()
def nodes() -> None:
    """List node kinds with their ports and the providers that serve them."""
    from calliope_graph.engines import supported
    from calliope_graph.nodes import node_kinds

    serving = supported()
    for kind, cls in node_kinds().items():
        ins = ", ".join(
            f"{p.name}: {p.type.value}{'[]' if p.many else ''}{'' if p.required else '?'}"
            for p in cls.inputs
        )
        outs = ", ".join(f"{p.name}: {p.type.value}" for p in cls.outputs)
        providers = (
            ", ".join(p.value for p in serving.get(cls.conversion, []))
            if cls.conversion is not None
            else ""
        )
        out_console.print(
            f"[bold]{kind}[/]  ({ins or 'ports from params'}) → ({outs or 'from params'})",
            soft_wrap=True,
        )
        out_console.print(f"    {cls.description}", markup=False, soft_wrap=True)
        if providers:
            out_console.print(f"    providers: {providers}", markup=False, soft_wrap=True)


MODELS_EPILOG = (
    "Exit codes: 0 ok (with --check: every catalog model is listed by its provider), "
    "2 usage, 4 configuration (a bad --catalog), 7 with --check: catalog models their "
    "provider no longer lists (named in the report), 1 with --check: a provider could not be "
    "asked."
)
#: ``models --check``: some catalog models are missing from their provider's list.
EXIT_MODELS_MISSING = EXIT_CODES["models_missing"]


@main.command(epilog=MODELS_EPILOG)
@click.option("--provider", default=None, help="Only this provider's models.")
@click.option("--kind", default=None, help="Only models serving this node kind.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array (or, with --check, object).")
@click.option(
    "--check",
    is_flag=True,
    help="Ask each provider you have a key for which models it offers; report catalog models "
    "it no longer lists and listed ones the catalog lacks.",
)
@click.option("--simulate", is_flag=True, help="With --check: ask the offline simulator.")
@click.option(
    "--catalog", "catalog_path", default=None, help="A catalog YAML extending the built-in one."
)
@click.option("--debug", is_flag=True, help="Print tracebacks.")
def models(
    provider: str | None,
    kind: str | None,
    as_json: bool,
    check: bool,
    simulate: bool,
    catalog_path: str | None,
    debug: bool,
) -> None:
    """List every catalog model: provider, node kinds, provider model name, price, status
    (current, deprecated, retired), shutdown date and replacement."""
    from calliope_graph.config import InferenceModelProvider, catalog
    from calliope_graph.model_list import model_rows, node_kind_names

    providers = [p.value for p in InferenceModelProvider]
    if provider is not None and provider not in providers:
        raise click.BadParameter(
            f"{provider!r} is not a provider; use one of {', '.join(providers)}.",
            param_hint="--provider",
        )
    kinds = node_kind_names()
    if kind is not None and kind not in kinds:
        raise click.BadParameter(
            f"{kind!r} is not a node kind that uses a model; use one of {', '.join(kinds)}.",
            param_hint="--kind",
        )
    if simulate and not check:
        raise click.UsageError("--simulate only applies with --check.")

    def go() -> int:
        models_ = catalog.copy().load_yaml(Path(catalog_path)) if catalog_path else catalog
        if check:
            return asyncio.run(_check_models(models_, provider, simulate, as_json))
        rows = model_rows(models_, provider=provider, kind=kind)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            _print_models(rows)
        return EXIT_CODES["ok"]

    sys.exit(_guard(debug, go))


def _price_text(price: dict[str, Any] | None) -> str:
    if not price:
        return "-"
    parts = []
    for key, value in price.items():
        if isinstance(value, dict):
            value = value.get("default", next(iter(value.values())))
        unit = key.replace("_per_", "/").replace("per_", "/").replace("_", " ")
        parts.append(f"${value:g} {unit}")
    return ", ".join(parts)


def _print_models(rows: list[dict[str, Any]]) -> None:
    """A table that stays readable in 80 columns: the catalog name (with the provider and
    its model name under it), the node kinds, the price, and the lifecycle."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_lines=True, pad_edge=False)
    table.add_column("model (provider: its name)", overflow="fold", ratio=3)
    table.add_column("node kinds", overflow="fold", ratio=2)
    table.add_column("price", overflow="fold", ratio=2)
    table.add_column("status", overflow="fold", ratio=3)
    styles = {"current": "green", "deprecated": "yellow", "retired": "red"}
    for row in rows:
        lifecycle = f"[{styles[row['status']]}]{row['status']}[/]"
        if row["shutdown_on"]:
            verb = "shut down" if row["status"] == "retired" else "shuts down"
            lifecycle += f"\n{verb} {row['shutdown_on']}"
        if row["replacement"]:
            lifecycle += f"\nuse {escape(row['replacement'])}"
        table.add_row(
            f"[bold]{escape(row['name'])}[/]\n[dim]{row['provider']}: "
            f"{escape(row['provider_model_name'])}[/]",
            escape(", ".join(row["kinds"]) or "-"),
            escape(_price_text(row["price"])),
            lifecycle,
        )
    out_console.print(table)


async def _check_models(models_: Any, provider: str | None, simulate: bool, as_json: bool) -> int:
    import tempfile

    from calliope_graph.model_list import check_providers

    with tempfile.TemporaryDirectory(prefix="calliope-models-") as out:
        sim: Any = None
        if simulate:
            from calliope_graph.simulate import Simulator

            sim = Simulator()
        ctx = _session(None, sim).run_context(out)
        try:
            report = await check_providers(ctx, models_, provider=provider)
        finally:
            await ctx.client.aclose()
    failed = any(p.error for p in report.providers)
    code = (
        EXIT_MODELS_MISSING
        if report.missing
        else (EXIT_CODES["run_failed"] if failed else EXIT_CODES["ok"])
    )
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "exit_code": code}, indent=2))
        return code
    for p in report.providers:
        if p.skipped:
            out_console.print(f"{p.provider}: skipped, {p.skipped}", markup=False, soft_wrap=True)
            continue
        if p.error:
            out_console.print(
                f"{p.provider}: could not ask ({p.error})", markup=False, soft_wrap=True
            )
            continue
        line = f"{p.provider}: {len(p.listed)} models listed"
        if p.missing:
            line += f"; NOT LISTED (catalog models): {', '.join(p.missing)}"
        if p.retired:
            line += f"; not listed, retired as the catalog says: {', '.join(p.retired)}"
        if p.lacking:
            shown = ", ".join(p.lacking[:12])
            more = (
                f" … and {len(p.lacking) - 12} more (--json lists all)"
                if len(p.lacking) > 12
                else ""
            )
            line += f"; listed, not in the catalog: {shown}{more}"
        if not (p.missing or p.retired or p.lacking):
            line += "; the catalog matches"
        out_console.print(line, markup=False, soft_wrap=True)
    if report.missing:
        err_console.print(
            f"{len(report.missing)} catalog model(s) no longer listed by their provider: "
            f"{', '.join(report.missing)} (exit {EXIT_MODELS_MISSING})",
            markup=False,
            soft_wrap=True,
        )
    return code


@main.command()
def schema() -> None:
    """Print the JSON Schema of flow files (for editor completion)."""
    from calliope_graph.flow import FlowSpec

    click.echo(json.dumps(FlowSpec.json_schema(), indent=2))


# -- draw / report ---------------------------------------------------------------------------
@main.command(epilog=EPILOG)
@click.argument("flow")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "ascii", "svg", "png"]),
    default=None,
    help="Default: from the -o file's extension (.svg .png .mmd .dot .txt), else ascii.",
)
@click.option(
    "-o",
    "--out",
    "--output",
    "output",
    default=None,
    help="File to write (default: stdout; png needs -o).",
)
@click.option("--debug", is_flag=True, help="Print tracebacks.")
def draw(flow: str, fmt: str | None, output: str | None, debug: bool) -> None:
    """Draw FLOW's structure, offline (no Graphviz, no browser, no web service).

    FLOW is a shipped flow's name or a YAML/JSON file; it is drawn even when it does not
    validate, so a broken flow can be looked at.
    """
    suffixes = {
        ".svg": "svg",
        ".png": "png",
        ".mmd": "mermaid",
        ".mermaid": "mermaid",
        ".dot": "dot",
        ".gv": "dot",
        ".txt": "ascii",
    }
    if fmt is None:
        fmt = suffixes.get(Path(output).suffix.lower(), "ascii") if output else "ascii"

    def go() -> None:
        from calliope_graph.viz import draw as draw_spec

        drawing = draw_spec(_load(flow).spec, fmt)
        if output is None:
            if isinstance(drawing, bytes):
                raise click.UsageError("PNG output is binary: pass -o FILE.")
            click.echo(drawing)
            return
        path = write_atomic(output, drawing)
        err_console.print(f"wrote {path}")

    _guard(debug, go)


@main.command(epilog=EPILOG)
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--out",
    "--output",
    "output",
    default=None,
    help="HTML file (default: report.html beside it).",
)
@click.option("--debug", is_flag=True, help="Print tracebacks.")
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

    _guard(debug, go)


if __name__ == "__main__":  # pragma: no cover
    main()
