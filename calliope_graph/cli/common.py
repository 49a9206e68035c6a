"""What every command of the CLI shares: exit codes, consoles, error handling, loading a
flow, and the one function that creates what a process shares (:func:`open_shared`)."""

from __future__ import annotations

import contextlib
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console

from calliope_graph.errors import (
    CalliopeError,
    ConfigurationError,
    FlowRunError,
    FlowSpecError,
    MediaError,
    WaitingForChoice,
)

if TYPE_CHECKING:
    from calliope_graph.config import KeysModel
    from calliope_graph.context import RunContext
    from calliope_graph.flow import Flow
    from calliope_graph.limits import LimitSpec
    from calliope_graph.session import OfflineSwitch, Session
    from calliope_graph.simulate import Fault, Simulator

__all__ = [
    "EPILOG",
    "EXIT_CODES",
    "SIMULATED_LINE",
    "Shared",
    "Simulation",
    "check_keys",
    "continue_command",
    "err_console",
    "exit_code",
    "guard",
    "load_flow",
    "open_shared",
    "out_console",
    "parse_inputs",
    "resumable",
]

EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "run_failed": 1,
    "usage": 2,
    "invalid_flow": 3,
    "configuration": 4,
    "media": 5,
    "waiting_for_choice": 6,
    "models_missing": 7,
    "interrupted": 130,
}

EPILOG = (
    "Exit codes: 0 ok, 1 the run failed, 2 usage, 3 invalid flow, 4 configuration "
    "(missing key, unknown model, unusable or busy --out, a full disk), 5 bad input media, "
    "6 the run waits for a choice (resume it with --resume THREAD --choose NODE=INDEX), "
    "130 interrupted."
)

#: What ``run``, ``batch`` and ``worker`` print first when they simulate.
SIMULATED_LINE = (
    "simulated: every provider call goes to the offline simulator (no keys, nothing paid; "
    "its text and pictures are stand-ins)"
)

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


def exit_code(exc: BaseException) -> int:
    """The exit code of a command that failed with ``exc``."""
    if isinstance(exc, FlowSpecError):
        return EXIT_CODES["invalid_flow"]
    if isinstance(exc, ConfigurationError):  # a DiskFullError too
        return EXIT_CODES["configuration"]
    if isinstance(exc, FlowRunError) and exc.cause_class == "disk_full":
        return EXIT_CODES["configuration"]  # the disk filled during the run: exit 4
    if isinstance(exc, MediaError):
        return EXIT_CODES["media"]
    if isinstance(exc, WaitingForChoice):
        return EXIT_CODES["waiting_for_choice"]
    return EXIT_CODES["run_failed"]


def _fail(exc: BaseException, debug: bool) -> NoReturn:
    if debug:
        err_console.print(traceback.format_exc(), markup=False)
    # The nearest public class: an internal subclass's name means nothing to a user.
    label = next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))
    err_console.print(f"[bold red]error[/] ({label}): ", end="")
    err_console.print(str(exc), markup=False, soft_wrap=True)
    sys.exit(exit_code(exc))


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


def guard(debug: bool, fn: Callable[[], Any]) -> Any:
    """``fn()``, with a library error printed as one message and its exit code (``--debug``
    adds the traceback), Ctrl-C as exit 130, and lifecycle warnings as one line each."""
    try:
        with _one_line_warnings():
            return fn()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(EXIT_CODES["interrupted"])
    except CalliopeError as exc:
        _fail(exc, debug)


def load_flow(flow: str) -> Flow:
    """FLOW as the commands take it: a shipped flow's name or a YAML/JSON file."""
    from calliope_graph.flow import Flow

    return Flow.load(flow)


def parse_inputs(values: Sequence[str]) -> dict[str, Any]:
    """``--input NAME=VALUE`` (``@file`` reads the file's text) as the flow's inputs. Values
    stay text here: a list or object input parses its text as JSON (``NAME='["a", "b"]'``,
    ``NAME=@file.json``) when the run checks it against the flow's declaration."""
    inputs: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"{item!r}: write --input NAME=VALUE (a path for media, @file.txt to read text, "
                "JSON or @file.json for a list)",
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


@dataclass(frozen=True)
class Simulation:
    """``--simulate``, ``--faults``, ``--simulate-limits`` and ``--limits``, parsed (the
    option group :func:`calliope_graph.cli.options.simulation_options` builds it), with the
    offline switch of the environment (``switch``: ``CALLIOPE_SIMULATE=1``,
    ``CALLIOPE_FAULTS``, ``CALLIOPE_SIMULATE_LIMITS``); the options win over the switch."""

    simulate: bool = False
    faults: list[Fault] | None = None
    simulate_limits: dict[str, LimitSpec] | None = None
    limits: str | None = None
    faults_text: str | None = None
    """``--faults`` as given (for the commands the CLI prints)."""
    simulate_limits_text: str | None = None
    """``--simulate-limits`` as given."""
    switch: OfflineSwitch | None = None
    """The environment's offline switch (None: off)."""

    def given(self) -> list[str]:
        """The options given on the command line, by their flags."""
        flags = zip(
            ("--simulate", "--faults", "--limits", "--simulate-limits"),
            (self.simulate, self.faults, self.limits, self.simulate_limits),
            strict=True,
        )
        return [flag for flag, value in flags if value]

    @property
    def simulated(self) -> bool:
        """Provider calls go to the simulator: ``--simulate`` or ``CALLIOPE_SIMULATE=1``."""
        return self.simulate or (self.switch is not None and self.switch.simulate)

    def check(self) -> None:
        """The simulator's options apply only when simulating (a usage error, exit 2)."""
        if self.faults and not self.simulated:
            raise click.UsageError("--faults only applies with --simulate.")
        if self.simulate_limits and not self.simulated:
            raise click.UsageError("--simulate-limits only applies with --simulate.")

    def _texts(self) -> tuple[str, str]:
        """The simulator's faults and limits in their syntax: the options', else the switch's."""
        switch = self.switch
        faults = self.faults_text or (switch.faults if switch is not None else "")
        limits = self.simulate_limits_text or (switch.limits if switch is not None else "")
        return faults, limits

    def simulator(self) -> Simulator | None:
        """The simulator to run against (None: the providers). A fault or limit set in the
        environment without the switch, or a bad one, is a ConfigurationError naming it."""
        from calliope_graph.session import OfflineSwitch

        if not self.simulated:
            if self.switch is not None:
                self.switch.simulator()  # CALLIOPE_FAULTS without the switch: say so
            return None
        if self.faults is not None or self.simulate_limits is not None:
            from calliope_graph.simulate import Simulator

            switch = self.switch  # its faults and limits apply with --simulate too
            env = (
                OfflineSwitch(simulate=True, faults=switch.faults, limits=switch.limits).simulator()
                if switch is not None
                else None
            )
            return Simulator(
                faults=self.faults if self.faults is not None else (env.faults if env else ()),
                limits=self.simulate_limits
                if self.simulate_limits is not None
                else (env.limits if env else None),
            )
        faults, limits = self._texts()
        return OfflineSwitch(simulate=True, faults=faults, limits=limits).simulator()

    def options(self) -> list[str]:
        """The options that make another command simulate the same way (the offline switch's
        as options too, so a printed command runs the same in a shell without it)."""
        words: list[str] = ["--simulate"] if self.simulated else []
        faults, limits = self._texts() if self.simulated else ("", "")
        words += ["--faults", faults] if faults else []
        words += ["--simulate-limits", limits] if limits else []
        words += ["--limits", self.limits] if self.limits else []
        return words


def resumable(
    exc: FlowRunError, flow: str, where: Sequence[str], simulation: Simulation
) -> FlowRunError:
    """``exc`` with the command that resumes its run from the CLI (``run FLOW WHERE…
    --resume THREAD`` and the simulation's options) in place of the library's hint."""
    if not exc.resume_hint or exc.thread_id is None:
        return exc
    command = continue_command(
        "run", flow, *where, "--resume", exc.thread_id, simulation=simulation
    )
    note = ""
    if "***" in " ".join(where):
        note = " (the password is not shown: put it back, or keep it in PGPASSWORD or ~/.pgpass)"
    message = str(exc).removesuffix(exc.resume_hint)
    hint = f" Fix the cause, then resume without re-running what completed: {command}{note}"
    return FlowRunError(
        message + hint,
        node=exc.node,
        attempts=exc.attempts,
        path=exc.path,
        cause_class=exc.cause_class,
        thread_id=exc.thread_id,
        resume_hint=hint,
    )


def continue_command(
    command: str, flow: str, *arguments: str, simulation: Simulation | None = None
) -> str:
    """A command the CLI prints for the user to run next (resume a run, run the rest of a
    batch, retry its failed items): ``calliope-graph COMMAND FLOW ARGUMENTS…`` with
    ``simulation``'s options, so it runs as printed. Written by the library's one builder,
    :func:`calliope_graph.commands.command_line`."""
    from calliope_graph.commands import command_line

    options = simulation.options() if simulation is not None else []
    return command_line(command, flow, *arguments, options=options)


@dataclass(frozen=True)
class Shared:
    """What the commands of one process share: the session (``--limits``, the simulator of
    ``--simulate``) and the keys read from the environment (None with ``--simulate``)."""

    session: Session
    keys: KeysModel | None

    @property
    def simulator(self) -> Simulator | None:
        return self.session.simulator

    def context(self, out_dir: str | Path) -> RunContext:
        """A run context of the session (with its own HTTP client), writing into ``out_dir``."""
        return self.session.run_context(out_dir)


def open_shared(simulation: Simulation) -> Shared:
    """The one place the CLI creates what a process shares: its session, with ``--limits``
    over the default limits, and the simulator (``--simulate``, or the offline switch
    ``CALLIOPE_SIMULATE=1`` with ``CALLIOPE_FAULTS``/``CALLIOPE_SIMULATE_LIMITS``) or the
    keys."""
    from calliope_graph.session import Session

    keys: KeysModel | None = None
    simulator = simulation.simulator()  # --simulate, else the offline switch (CALLIOPE_SIMULATE)
    if simulator is None:
        from calliope_graph.config import KeysModel

        keys = KeysModel.from_env()
    session = Session(
        keys=keys,
        simulator=simulator,
        limits=simulation.limits,
        where="--limits",
        simulate=simulator is not None,
    )
    return Shared(session=session, keys=keys)


def check_keys(flow: Flow, keys: KeysModel) -> None:
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
            f"Missing API keys: set {listed} — or run offline with --simulate "
            "(CALLIOPE_SIMULATE=1: every command)."
        )
