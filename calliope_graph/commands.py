"""The one place a printed "run this to continue" command is built (:func:`continue_command`).

A run that stops — waiting for a person's choice (exit 6), or failed where a resume can go
on — prints the exact ``calliope-graph run`` command that continues it. Built here only,
so every such hint keeps what makes it run as printed: the flow as it was given (a shipped
flow's name, or the path of its file), ``--out``, ``--checkpoint``, the options the
process was started with (``--simulate``, ``--faults``, ``--limits``: the CLI passes them
as ``options``), ``--resume`` and any ``--choose``. No third-party import: the library and
the CLI both use it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["choice_commands", "command_line", "continue_command"]

_PLAIN = re.compile(r"[\w@%+=:,./~-]+")


def _quote(text: str) -> str:
    """``text`` as one shell word (left bare when nothing in it needs quoting)."""
    return text if _PLAIN.fullmatch(text) else shlex.quote(text)


def command_line(command: str, flow: str, *arguments: str, options: Sequence[str] = ()) -> str:
    """``calliope-graph COMMAND FLOW ARGUMENTS… OPTIONS…``, each word quoted for a POSIX
    shell (left bare when nothing in it needs quoting): every command printed for a user to
    run — by the library or the CLI — is written here. ``flow`` is as the user gave it (a
    shipped flow's name or the flow file's path), never the name inside the file."""
    words = ["calliope-graph", command, flow, *arguments, *options]
    return " ".join(_quote(str(word)) for word in words)


def continue_command(
    flow: str,
    out_dir: str | Path,
    thread_id: str,
    *,
    checkpoint: str | None = None,
    options: Sequence[str] = (),
    choose: Mapping[str, int | str] | None = None,
) -> str:
    """``calliope-graph run FLOW --out DIR [--checkpoint URL] [options] --resume THREAD
    [--choose NODE=INDEX ...]``, each word quoted for a POSIX shell.

    ``checkpoint``: the store's URL as it may be shown (a password already replaced by
    ``***``: see :func:`calliope_graph.flow.run.shown_url`); ``options``: further words, as
    given on the command line (``["--simulate", "--faults", "rate_limit@openai"]``);
    ``choose``: the choices to resume with, node → index.
    """
    words = ["--out", str(out_dir)]
    if checkpoint:
        words += ["--checkpoint", checkpoint]
    words += [str(option) for option in options]
    words += ["--resume", thread_id]
    for node, index in (choose or {}).items():
        words += ["--choose", f"{node}={index}"]
    return command_line("run", str(flow), *words)


def choice_commands(
    candidates: Mapping[str, Sequence[object]],
    flow: str,
    out_dir: str | Path,
    thread_id: str,
    *,
    checkpoint: str | None = None,
    options: Sequence[str] = (),
) -> dict[str, list[str]]:
    """Node → the :func:`continue_command` keeping each of its ``candidates`` (index ``i``
    at ``[i]``): what a run waiting for a choice prints."""
    return {
        node: [
            continue_command(
                flow, out_dir, thread_id, checkpoint=checkpoint, options=options, choose={node: i}
            )
            for i in range(len(found))
        ]
        for node, found in candidates.items()
    }
