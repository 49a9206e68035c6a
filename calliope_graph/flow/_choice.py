"""A run that pauses for a person's choice, and the resume that gives it (issue 20, item 2).

A ``choose`` node with ``by: human`` calls LangGraph's ``interrupt({"node": name,
"candidates": [...]})``: the run stops there, its checkpoint holding every candidate (and
any judge's scores), and :func:`waiting_for_choice` turns the pause into a
:class:`~calliope_graph.errors.WaitingForChoice` (the trace says ``waiting``, the report
lists the candidates). Resuming with ``choices={node: index}`` answers each pending pause
with ``Command(resume={interrupt id: {node: index}})`` (:func:`resume_command`) — the same
value LangGraph Server's ``command={"resume": {node: index}}`` hands the node — so the
node runs again with the choice, and nothing before it runs (or is paid for) again.

Part of :mod:`calliope_graph.flow.run`; no other module knows the interrupt's shape.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.types import Command, Interrupt

from calliope_graph.commands import choice_commands
from calliope_graph.errors import ConfigurationError, WaitingForChoice
from calliope_graph.flow._checkpoints import shown_url

if TYPE_CHECKING:
    from calliope_graph.flow._runtime import FlowRuntime
    from calliope_graph.flow.run import FlowRunner

__all__ = ["check_call", "choice_requests", "resume_command", "waiting_for_choice"]


def _is_choice(value: Any) -> bool:
    return isinstance(value, dict) and "candidates" in value and "node" in value


def choice_requests(interrupts: Sequence[Interrupt]) -> dict[str, list[Any]]:
    """Node → its candidates, for each pending pause that asks for a choice."""
    found: dict[str, list[Any]] = {}
    for pending in interrupts:
        if _is_choice(pending.value):
            found[str(pending.value["node"])] = list(pending.value["candidates"] or [])
    return found


def check_choices(
    choices: Mapping[str, Any], requests: Mapping[str, list[Any]], thread: str
) -> None:
    """``choices`` answer the pauses in ``requests``: every node named waits, every index is
    one of its candidates (a ConfigurationError naming the node and the fix otherwise)."""
    waiting = ", ".join(f"{n} (0–{len(c) - 1})" for n, c in requests.items()) or "none"
    for node, index in choices.items():
        if node not in requests:
            raise ConfigurationError(
                f"Thread {thread!r} is not waiting for a choice at node {node!r}; nodes "
                f"waiting for one: {waiting}. Choose with NODE=INDEX for one of them."
            )
        count = len(requests[node])
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ConfigurationError(
                f"Choice {node}={index!r} is not one of the {count} candidates of node "
                f"{node!r}: give an index from 0 to {count - 1} (see report.html)."
            )


def resume_command(
    interrupts: Sequence[Interrupt], choices: Mapping[str, int] | None, thread: str
) -> Command[Any]:
    """The ``Command(resume=...)`` that continues a paused run: each pause for a choice is
    answered with ``{node: index}``, each stop on a failure (a halted node) with ``True``.

    ``choices`` must answer every pause for a choice and name no other node."""
    requests = choice_requests(interrupts)
    given = dict(choices or {})
    check_choices(given, requests, thread)
    missing = [node for node in requests if node not in given]
    if missing:
        counts = ", ".join(f"{n}=INDEX (0–{len(requests[n]) - 1})" for n in missing)
        raise ConfigurationError(
            f"Thread {thread!r} is waiting for a choice at {', '.join(map(repr, missing))}: "
            f"resume with choices={{{', '.join(repr(n) + ': INDEX' for n in missing)}}} "
            f"(CLI: --choose {counts}); the candidates are in report.html."
        )
    answers: dict[str, Any] = {}
    for pending in interrupts:
        if _is_choice(pending.value):
            node = str(pending.value["node"])
            answers[pending.id] = {node: given[node]}
        else:
            answers[pending.id] = True
    return Command(resume=answers)


def check_call(resume: bool, choices: Mapping[str, int] | None) -> None:
    """``choices`` come with ``resume`` (they answer a paused run)."""
    if choices and not resume:
        raise ConfigurationError(
            "choices answer a run waiting for a choice: pass them with resume=True and its "
            "thread_id (CLI: --resume THREAD --choose NODE=INDEX)."
        )


def waiting_for_choice(
    runner: FlowRunner, runtime: FlowRuntime, interrupts: Sequence[Interrupt], thread: str
) -> WaitingForChoice | None:
    """The :class:`WaitingForChoice` of a run paused on ``interrupts`` (its trace marked
    ``waiting`` with the candidates, and saved); None when no pause asks for a choice."""
    requests = choice_requests(interrupts)
    if not requests:
        return None
    trace = runtime.trace
    shown = {
        node: [runtime._summary(c, trace.out_dir) for c in found]
        for node, found in requests.items()
    }
    store = runner.checkpointer
    out_dir = str(runner.out_dir)
    commands = choice_commands(
        shown,
        runner.reference or runner.plan.spec.name,
        out_dir,
        thread,
        checkpoint=shown_url(str(store)) if isinstance(store, str | Path) else None,
    )
    listed = "; ".join(f"{node!r} has {len(found)}" for node, found in shown.items())
    message = (
        f"Flow {trace.flow!r} is waiting for a choice: {listed} candidates (see "
        f"{out_dir}/report.html). Resume thread {thread!r} with the index of the one to keep: "
        f"choices={{node: index}} (CLI: --resume {thread} --choose NODE=INDEX)."
    )
    trace.status, trace.ended_at, trace.error = "waiting", time.time(), None
    trace.waiting = shown
    runtime.save_final()
    return WaitingForChoice(
        message, thread_id=thread, candidates=shown, commands=commands, out_dir=out_dir
    )
