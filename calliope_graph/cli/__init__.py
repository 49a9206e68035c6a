"""The ``calliope-graph`` command line: run, batch, worker, simulate, validate, draw, report,
nodes, models, schema.

One module per command family — :mod:`~calliope_graph.cli.flows` (``run``, ``validate``,
``draw``, ``report``, ``schema``), :mod:`~calliope_graph.cli.batches` (``batch``,
``worker``), :mod:`~calliope_graph.cli.catalog` (``models``, ``nodes``),
:mod:`~calliope_graph.cli.simulator` (``simulate``) — over
:mod:`~calliope_graph.cli.options` (each option group declared once) and
:mod:`~calliope_graph.cli.common` (exit codes, error handling, and :func:`open_shared`, the
one place the CLI creates what a process shares). The CLI imports only public names of
the library, and imports the library itself only when a command runs: ``-h`` is fast.

Exit codes (also in ``calliope-graph --help``):

====  =====================================================================
0     success
1     the flow ran and failed (a node failed past its retries and routes)
2     bad command-line usage
3     the flow description is invalid (FlowSpecError)
4     configuration problem: a missing key, an unknown model config, an unusable or
      busy --out directory
5     bad input media (missing, empty, corrupt or unsupported file)
6     the run stopped to wait for a person's choice (a ``choose`` node, ``by: human``):
      it printed the candidates and the commands that continue it
      (``--resume THREAD --choose NODE=INDEX``); its report.html shows them
130   interrupted
====  =====================================================================

``batch`` uses 1 when some items failed or were not started (budget), and 4 for a bad row
of its inputs file as well. ``models --check`` uses 7 when catalog models are missing from
their provider's list.

Errors print as one message; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import click

from calliope_graph.cli.batches import batch, worker
from calliope_graph.cli.catalog import models, nodes
from calliope_graph.cli.common import EPILOG, EXIT_CODES
from calliope_graph.cli.flows import draw, report, run, schema, validate
from calliope_graph.cli.simulator import simulate

__all__ = ["EXIT_CODES", "main"]


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="calliope-graph")
def main() -> None:
    """Multimodal generative story flows as typed LangGraph graphs."""


for _command in (run, batch, worker, simulate, validate, nodes, models, schema, draw, report):
    main.add_command(_command)
