"""``simulate``: the provider simulator served over HTTP on loopback."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click

from calliope_graph.cli.common import EPILOG, err_console
from calliope_graph.cli.options import faults_option, parse_simulate_limits

if TYPE_CHECKING:
    from calliope_graph.limits import LimitSpec
    from calliope_graph.simulate import Fault

__all__ = ["simulate"]


@click.command(epilog=EPILOG)
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
    callback=lambda _ctx, _param, value: parse_simulate_limits(value, "--limits"),
    help="Provider limits, e.g. 'stability:rpm=60;openai:rpm=500,tpm=200000'.",
)
@faults_option("Faults, e.g. 'rate_limit@openai:first_n=2;latency@stability:seconds=0.5'.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (and fake keys).")
def simulate(
    port: int, limits: dict[str, LimitSpec] | None, faults: list[Fault] | None, seed: int
) -> None:
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
