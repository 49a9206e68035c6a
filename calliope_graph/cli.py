"""The ``calliope-graph`` command line: run, validate, draw, report, nodes, schema.

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

Errors print as one message; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
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
    label = type(exc).__name__
    err_console.print(f"[bold red]error[/] ({label}): ", end="")
    err_console.print(str(exc), markup=False, soft_wrap=True)
    sys.exit(_exit_code(exc))


def _guard(debug: bool, fn: Callable[[], Any]) -> Any:
    try:
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


@click.group(epilog=EPILOG)
@click.version_option(package_name="calliope-graph")
def main() -> None:
    """Multimodal generative story flows as typed LangGraph graphs."""


# -- run ---------------------------------------------------------------------------------------
@main.command(epilog=EPILOG)
@click.argument("flow")
@click.option("--input", "-i", "inputs", multiple=True, help="NAME=VALUE (media as a path).")
@click.option("--out", "out_dir", default="out", show_default=True, help="Output directory.")
@click.option("--simulate", is_flag=True, help="Use the offline provider simulator (no keys).")
@click.option(
    "--faults",
    default=None,
    callback=lambda _ctx, _param, value: _parse_faults(value),
    help="Simulator faults, e.g. 'hang@openai;rate_limit@stability:first_n=1'.",
)
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
@click.option("--debug", is_flag=True, help="Print tracebacks.")
def run(
    flow: str,
    inputs: tuple[str, ...],
    out_dir: str,
    simulate: bool,
    faults: list[Any] | None,
    resume: str | None,
    thread_id: str | None,
    no_cache: bool,
    checkpoint: str | None,
    debug: bool,
) -> None:
    """Run FLOW (a shipped flow's name or a YAML/JSON file)."""
    if faults and not simulate:
        raise click.UsageError("--faults only applies with --simulate.")

    def go() -> None:
        result = asyncio.run(
            _run(
                flow,
                _parse_inputs(inputs),
                Path(out_dir),
                simulate,
                faults,
                resume,
                thread_id,
                not no_cache,
                checkpoint or None,
            )
        )
        _print_result(result, checkpoint)

    _guard(debug, go)


async def _run(
    flow_name: str,
    inputs: dict[str, Any],
    out_dir: Path,
    simulate: bool,
    faults: list[Any] | None,
    resume: str | None,
    thread_id: str | None,
    cache: bool,
    checkpoint: str | None = None,
) -> Any:
    from calliope_graph._outdir import prepare_out_dir
    from calliope_graph.config import KeysModel
    from calliope_graph.simulate import Simulator
    from calliope_graph.viz import render_report

    prepare_out_dir(out_dir)  # a bad --out is one message (exit 4) before anything runs
    flow = _load(flow_name)
    simulator = Simulator(faults=faults or ()) if simulate else None
    keys = None if simulate else KeysModel.from_env()
    if keys is not None:
        _check_keys(flow, keys)
    report = out_dir / "report.html"
    progress = _Progress()
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
            keys=keys,
            simulator=simulator,
            thread_id=thread,
            resume=resume is not None,
            cache=cache,
            on_event=on_event,
            checkpointer=checkpoint or True,
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
            keys.require(config.provider)
        except ConfigurationError:
            missing.setdefault(keys.env_var(config.provider), []).append(name)
    if missing:
        listed = "; ".join(f"{var} (for {', '.join(nodes)})" for var, nodes in missing.items())
        raise ConfigurationError(
            f"Missing API keys: set {listed} — or run offline with --simulate."
        )


class _Progress:
    """Live per-node lines: started, finished with time, retried, fell back, cache hit."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, event: Any) -> None:
        e = event.execution
        stamp = f"[dim]{time.monotonic() - self.start:6.2f}s[/]"
        who = f"[bold]{event.node}[/] [dim]({e.kind}{', ' + e.model if e.model else ''})[/]"
        kind = event.kind
        if kind == "started":
            line = f"▶ {who} started"
        elif kind == "finished" and e.resumed:
            line = f"[green]✓[/] {who} finished earlier (outputs kept, not paid again)"
        elif kind == "finished":
            extra = f", {e.retries} retries" if e.retries else ""
            if e.limit_wait >= 0.05:
                extra += f", {e.limit_wait:.1f}s waiting on the rate limit"
            line = f"[green]✓[/] {who} finished in {e.duration:.2f}s{extra}"
        elif kind == "retried":
            line = f"[yellow]↻[/] {who} retried ({e.error_class}: {e.error or ''})"
        elif kind == "fallback":
            line = f"[yellow]↪[/] {who} {e.error_class} → {e.branch}"
        elif kind == "skipped":
            line = f"[yellow]↷[/] {who} {e.error_class} → continue without it"
        elif kind == "cache_hit":
            line = f"[cyan]⚡[/] {who} cache hit"
        elif kind == "failed":
            line = f"[red]✗[/] {who} failed ({e.error_class})"
        else:
            line = f"· {who} {kind}"
        err_console.print(f"{stamp} {line}", soft_wrap=True)


def _print_result(result: Any, checkpoint: str | None = None) -> None:
    out_console.print(
        f"[bold green]done[/] in {result.trace.wall_time:.2f}s  thread {result.thread_id}"
    )
    from pydantic import BaseModel

    from calliope_graph.media import Audio, Image, ImageAnalysis, Video

    for name, value in result.outputs.items():
        if isinstance(value, Image | Audio | Video):
            text = f"{value.path} ({value.mime})"
        elif isinstance(value, ImageAnalysis):
            text = value.description or ", ".join(value.captions)
        elif isinstance(value, BaseModel):
            fields = value.model_dump(mode="json")
            text = json.dumps(fields, ensure_ascii=False)
            if "text" in fields:  # a story frame: its text, then where its media are
                media = [str(v["path"]) for v in fields.values() if isinstance(v, dict)]
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
@click.option("-o", "--output", default=None, help="File to write (default: stdout; png needs -o).")
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
@click.option("-o", "--output", default=None, help="HTML file (default: report.html beside it).")
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
