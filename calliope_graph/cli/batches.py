"""Many items: ``batch`` (run here, or ``--engine dbos``: enqueue and follow) and ``worker``."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from calliope_graph.cli.common import (
    EPILOG,
    EXIT_CODES,
    SIMULATED_LINE,
    Simulation,
    check_keys,
    continue_command,
    err_console,
    guard,
    load_flow,
    open_shared,
    out_console,
)
from calliope_graph.cli.options import (
    concurrency_option,
    debug_option,
    flow_argument,
    media_store_option,
    out_dir_option,
    simulation_options,
)
from calliope_graph.errors import ConfigurationError, DiskFullError

if TYPE_CHECKING:
    from calliope_graph.batch import BatchSummary
    from calliope_graph.cli.batch_progress import JsonProgress, LiveProgress, PlainProgress

__all__ = ["BATCH_EPILOG", "BatchRequest", "batch", "print_batch_summary", "worker"]

BATCH_EPILOG = (
    "Exit codes: 0 every item ok, 1 some items failed or were not started (budget), "
    "2 usage, 3 invalid flow, 4 configuration or a bad inputs row, 130 interrupted."
)


@dataclass(frozen=True)
class BatchRequest:
    """What ``batch`` was asked to do: its options, gathered once (the command's signature
    does not repeat them)."""

    flow: str
    inputs_path: str
    out_dir: str
    simulation: Simulation
    concurrency: int
    resume: bool
    retry_failed: bool
    budget: float | None
    as_json: bool
    engine: str
    db: str | None
    media_store: str | None

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    def again(self, out: str | Path | None = None, *extra: str) -> str:
        """The command that continues this batch (``--resume``, then ``extra``), with
        ``--out`` as given or as ``out``, and every option it ran with (simulation, engine,
        concurrency, media store): it runs as printed."""
        words = ["--inputs", self.inputs_path, "--out", str(self.out_dir if out is None else out)]
        if self.engine == "dbos":
            from calliope_graph.flow.run import shown_url

            words += ["--engine", "dbos", *(("--db", shown_url(self.db)) if self.db else ())]
        words += ["--concurrency", str(self.concurrency), "--resume", *extra]
        words += ["--media-store", self.media_store] if self.media_store else []
        # with --engine dbos the workers simulate, not the follower
        simulation = self.simulation if self.engine != "dbos" else None
        return continue_command("batch", self.flow, *words, simulation=simulation)

    def check(self) -> None:
        """Options that do not go together are a usage error (exit 2)."""
        if self.engine == "dbos":
            given = self.simulation.given()
            if given:
                raise click.UsageError(
                    f"{given[0]} does not apply with --engine dbos: the workers make the calls "
                    f"(give --simulate, --faults, --limits, --simulate-limits to "
                    f"`calliope-graph worker`)."
                )
            for unsupported, name in (
                (self.budget is not None, "--budget"),
                (self.retry_failed, "--retry-failed"),
            ):
                if unsupported:
                    raise click.UsageError(
                        f"{name} is not supported with --engine dbos yet (use --engine local)."
                    )
            return
        if self.db:
            raise click.UsageError("--db applies only with --engine dbos.")
        self.simulation.check()


def _progress(as_json: bool, flow_name: str) -> JsonProgress | LiveProgress | PlainProgress:
    """The batch display: JSON events, a live display on a terminal, else a line per item."""
    from calliope_graph.cli.batch_progress import JsonProgress, LiveProgress, PlainProgress

    if as_json:
        return JsonProgress()
    if err_console.is_terminal:
        return LiveProgress(err_console, flow_name)
    return PlainProgress(err_console)


# -- batch -------------------------------------------------------------------------------------
@click.command(epilog=BATCH_EPILOG)
@flow_argument
@click.option(
    "--inputs",
    "inputs_path",
    required=True,
    help=".jsonl or .csv of flow inputs (an 'id' column names items), or a folder of media.",
)
@out_dir_option("Batch folder (manifest, items, report).", required=True)
@simulation_options
@concurrency_option("Items running at once.", default=4)
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
@media_store_option
@debug_option
def batch(debug: bool, **options: Any) -> None:
    """Run FLOW over every item of --inputs, into --out (one folder per item).

    A manifest line per finished item goes to OUT/batch.jsonl, the batch report to
    OUT/batch.html. After a kill or failures, run the same command with --resume: ok items
    are skipped and the others continue from their checkpoints.

    With --engine dbos the items are enqueued in --db and run by `calliope-graph worker`
    processes (any number, any machine); this command follows them into the manifest, and
    stopping and running it again loses nothing.
    """
    request = BatchRequest(**options)
    request.check()
    if request.engine == "dbos":
        sys.exit(guard(debug, lambda: asyncio.run(_follow(request))))

    def go() -> int:
        try:
            return asyncio.run(_run_items(request))
        except KeyboardInterrupt:
            budget = ("--budget", f"{request.budget:g}") if request.budget else ()
            err_console.print(
                f"interrupted: finished items are in {request.out / 'batch.jsonl'}; "
                f"continue with: {request.again(None, *budget)}",
                markup=False,
                soft_wrap=True,
            )
            sys.exit(EXIT_CODES["interrupted"])

    sys.exit(guard(debug, go))


async def _run_items(request: BatchRequest) -> int:
    """``batch --engine local``: run the items in this process."""
    from calliope_graph.batch import BatchInputError, run_batch
    from calliope_graph.cli.batch_progress import JsonProgress

    shared = open_shared(request.simulation)
    flow = load_flow(request.flow)
    flow.validate()
    if shared.keys is not None:
        check_keys(flow, shared.keys)
    progress = _progress(request.as_json, flow.name)
    if not request.as_json:
        err_console.print(
            f"{'resuming' if request.resume or request.retry_failed else 'running'} batch "
            f"{flow.name}  inputs {request.inputs_path}  out {request.out}  "
            f"concurrency {request.concurrency}",
            markup=False,
            soft_wrap=True,
        )
        if shared.simulator is not None:
            err_console.print(SIMULATED_LINE, markup=False, soft_wrap=True)
    summary: BatchSummary | None = None
    error: BatchInputError | DiskFullError | None = None
    with progress:
        try:
            summary = await run_batch(
                flow,
                request.inputs_path,
                request.out,
                concurrency=request.concurrency,
                resume=request.resume or request.retry_failed,
                retry_failed=request.retry_failed,
                budget=request.budget,
                session=shared.session,
                on_progress=progress,
                media_store=request.media_store,
            )
        except (BatchInputError, DiskFullError) as exc:  # what ran is summed up first
            error, summary = exc, exc.summary
    if summary is not None:
        if request.as_json:
            extra: dict[str, Any] = {}
            if shared.simulator is not None:
                extra["simulator_calls"] = shared.simulator.count()
            JsonProgress().write({"event": "summary", **summary.to_dict(), **extra})
        else:
            print_batch_summary(summary, request)
    if error is not None:
        raise error
    assert summary is not None
    return EXIT_CODES["ok"] if summary.all_ok else EXIT_CODES["run_failed"]


async def _follow(request: BatchRequest) -> int:
    """``batch --engine dbos``: enqueue the items, follow the workers into the manifest."""
    from calliope_graph.cli.batch_progress import JsonProgress

    try:
        from calliope_graph.batch.dbos import db_url, flow_ref, follow_batch, shown_db_url
    except ImportError as exc:
        raise ConfigurationError(
            f"--engine dbos needs the dbos extra ({exc.name} is missing): "
            "pip install 'calliope-graph[dbos]'."
        ) from None
    flow = load_flow(request.flow)
    flow.validate()
    progress = _progress(request.as_json, flow.name)
    if not request.as_json:
        err_console.print(
            f"following batch {flow.name}  inputs {request.inputs_path}  out {request.out}  "
            f"db {shown_db_url(db_url(request.db, request.out))}  "
            f"concurrency {request.concurrency} (all workers)",
            markup=False,
            soft_wrap=True,
        )
    error: DiskFullError | None = None
    with progress:
        try:
            summary = await follow_batch(
                flow,
                request.inputs_path,
                request.out,
                db=request.db,
                concurrency=request.concurrency,
                on_progress=progress,
                flow_ref=flow_ref(request.flow),
            )
        except DiskFullError as exc:  # what ran is summed up first, as for a local batch
            error, summary = exc, exc.summary
    if request.as_json:
        JsonProgress().write({"event": "summary", **summary.to_dict()})
    else:
        print_batch_summary(summary, request)
    if error is not None:
        raise error
    return EXIT_CODES["ok"] if summary.all_ok else EXIT_CODES["run_failed"]


def print_batch_summary(summary: BatchSummary, request: BatchRequest) -> None:
    """Counts, cost, calls and 429s, failure causes, and the command to continue with."""
    style = "bold green" if summary.all_ok else "bold yellow"
    skipped = f" ({summary.skipped} already ok)" if summary.skipped else ""
    simulated = "  [magenta](simulated)[/]" if request.simulation.simulated else ""
    out_console.print(
        f"[{style}]batch {summary.flow}[/]: {summary.ok} ok{skipped}, {summary.failed} failed, "
        f"{len(summary.not_started)} not started of {summary.total} in "
        f"{summary.wall_time:.1f}s{simulated}",
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
    budget: tuple[str, ...] = ()
    if summary.budget is not None:  # the same limit again; stopped by it, the larger one its
        # message suggests (the same one would stop again at once, having run nothing)
        budget = (
            "--budget",
            f"{summary.budget * 2 if summary.budget_stopped else summary.budget:g}",
        )
    if summary.failed:
        again = request.again(request.out, *budget, "--retry-failed")
        out_console.print(f"retry the failed items: {again}", soft_wrap=True, markup=False)
    elif summary.not_started:
        again = request.again(request.out, *budget)
        out_console.print(f"run the rest: {again}", soft_wrap=True, markup=False)


# -- worker ----------------------------------------------------------------------------------------
@click.command(epilog=EPILOG)
@click.option("--db", default=None, metavar="URL", help="The batch database (as given to batch).")
@out_dir_option("The shared batch folder.", required=True)
@simulation_options
@concurrency_option("Items this worker runs at once (default: the queue's).", default=None)
@click.option(
    "--dead-after",
    type=click.FloatRange(min=0.5),
    default=15.0,
    show_default=True,
    help="A worker that died is seen at once by its lock (its items go to the others); this "
    "many seconds without a heartbeat only count where the lock cannot be tested (SQLite on "
    "another host).",
)
@media_store_option
@debug_option
def worker(
    db: str | None,
    out_dir: str,
    simulation: Simulation,
    concurrency: int | None,
    dead_after: float,
    media_store: str | None,
    debug: bool,
) -> None:
    """Run batch items enqueued by `batch --engine dbos`, until Ctrl-C or SIGTERM.

    Start any number, on any machines that share --db and the --out folder; a worker that
    dies (even kill -9) has its items finished by the others.
    """
    simulation.check()

    def echo(line: str) -> None:
        err_console.print(line, markup=False, soft_wrap=True)

    def go() -> None:
        shared = open_shared(simulation)
        if shared.simulator is not None:
            echo(SIMULATED_LINE)
        try:
            from calliope_graph.batch.dbos import run_worker
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
                session=shared.session,
                dead_after=dead_after,
                heartbeat=min(2.0, dead_after / 4),
                echo=echo,
                media_store=media_store,
            )
        )

    guard(debug, go)
    err_console.print("worker stopped")
