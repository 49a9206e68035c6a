"""The CLI's options, each group declared once and shared by the commands that take it.

An option group is a decorator: stacked on a command like one ``click.option``, it adds its
options (in order). :func:`simulation_options` also gathers its four values into one
:class:`~calliope_graph.cli.common.Simulation` argument, so a command's signature names the
group once instead of repeating its options.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from calliope_graph.cli.common import Simulation
from calliope_graph.errors import ConfigurationError

if TYPE_CHECKING:
    from calliope_graph.limits import LimitSpec
    from calliope_graph.simulate import Fault

__all__ = [
    "checked_limits",
    "choose_option",
    "compose",
    "concurrency_option",
    "debug_option",
    "faults_option",
    "flow_argument",
    "media_store_option",
    "out_dir_option",
    "output_option",
    "parse_choices",
    "parse_faults",
    "parse_simulate_limits",
    "simulation_options",
]

F = TypeVar("F", bound=Callable[..., Any])


def compose(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """Several decorators as one, applied as if stacked in the order given."""

    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


# -- values read from the command line (a malformed one is a usage error naming the bad part)
def parse_faults(value: str | None) -> list[Fault] | None:
    """``--faults`` read into simulator faults."""
    if not value:
        return None
    from calliope_graph.simulate import FaultSpecError
    from calliope_graph.simulate import parse_faults as parse

    try:
        return parse(value)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None


def parse_simulate_limits(
    value: str | None, hint: str = "--simulate-limits"
) -> dict[str, LimitSpec] | None:
    """``--simulate-limits`` read into the simulator's limits."""
    if not value:
        return None
    from calliope_graph.simulate import parse_simulate_limits as parse

    try:
        return parse(value, where=hint)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def parse_choices(values: tuple[str, ...]) -> dict[str, int]:
    """``--choose NODE=INDEX`` (repeatable) as ``{node: index}``."""
    choices: dict[str, int] = {}
    for item in values:
        node, sep, index = (part.strip() for part in item.partition("="))
        if not sep or not node or not index.isdigit():
            raise click.BadParameter(
                f"{item!r}: write --choose NODE=INDEX, the index (0, 1, ...) of the candidate "
                "to keep at node NODE (a paused run printed them)",
                param_hint="--choose",
            )
        if node in choices:
            raise click.BadParameter(f"node {node!r} is chosen twice", param_hint="--choose")
        choices[node] = int(index)
    return choices


def checked_limits(value: str | None) -> str | None:
    """``--limits``, checked (applied later, by :func:`~calliope_graph.cli.common.open_shared`)."""
    if not value:
        return value
    from calliope_graph.limits import parse_limits

    try:
        parse_limits(value, where="--limits")
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--limits") from None
    return value


def _checked_store(_ctx: Any, _param: Any, value: str | None) -> str | None:
    if not value:
        return None
    from calliope_graph.object_store import parse_store_url

    try:
        parse_store_url(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None
    return value.strip()


# -- the options ------------------------------------------------------------------------------
flow_argument = click.argument("flow")

debug_option = click.option("--debug", is_flag=True, help="Print tracebacks.")


def faults_option(help: str) -> Callable[[F], F]:
    """``--faults``, parsed; ``help`` gives the command's example."""
    return click.option("--faults", default=None, callback=_kept(parse_faults), help=help)


def _kept(parse: Callable[[str | None], Any]) -> Callable[[click.Context, Any, str | None], Any]:
    """A callback that parses an option and keeps its text (``ctx.meta``), so a command the
    CLI prints can give it again as it was written."""

    def callback(ctx: click.Context, param: Any, value: str | None) -> Any:
        ctx.meta[f"calliope.{param.name}"] = value or None
        return parse(value)

    return callback


def _simulation(command: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the group's four values, with the environment's offline switch
    (``CALLIOPE_SIMULATE``...; a bad value is a configuration error, exit 4), to ``command``
    as one ``simulation`` argument."""

    @functools.wraps(command)
    def gathered(
        *args: Any,
        simulate: bool,
        faults: list[Fault] | None,
        simulate_limits: dict[str, LimitSpec] | None,
        limits: str | None,
        **kwargs: Any,
    ) -> Any:
        from calliope_graph.cli.common import guard
        from calliope_graph.session import OfflineSwitch

        meta = click.get_current_context().meta
        switch = guard(False, OfflineSwitch.from_env)
        simulation = Simulation(
            simulate,
            faults,
            simulate_limits,
            limits,
            faults_text=meta.get("calliope.faults"),
            simulate_limits_text=meta.get("calliope.simulate_limits"),
            switch=switch if switch.simulate or switch.faults or switch.limits else None,
        )
        return command(*args, simulation=simulation, **kwargs)

    return gathered


#: ``--simulate``, ``--faults``, ``--simulate-limits`` and ``--limits`` (``run``, ``batch``,
#: ``worker``), given to the command as one :class:`Simulation` named ``simulation``.
simulation_options = compose(
    click.option(
        "--simulate",
        is_flag=True,
        help="Use the offline provider simulator (no keys); CALLIOPE_SIMULATE=1 does the same "
        "(with CALLIOPE_FAULTS, CALLIOPE_SIMULATE_LIMITS).",
    ),
    click.option(
        "--faults",
        default=None,
        callback=_kept(parse_faults),
        help="Simulator faults, e.g. 'hang@openai:seconds=2;rate_limit@stability:first_n=1' "
        "(a hang without seconds= lasts the client's whole read timeout).",
    ),
    click.option(
        "--simulate-limits",
        "simulate_limits",
        default=None,
        callback=_kept(parse_simulate_limits),
        help="Make the simulated providers limit like the real ones, e.g. "
        "'stability:rpm=60;openai:rpm=500,tpm=200000' (429s with Retry-After).",
    ),
    click.option(
        "--limits",
        default=None,
        callback=_kept(checked_limits),
        help="Per-provider rate limits, e.g. 'openai:rpm=500,tpm=200000;stability:rps=15'.",
    ),
    _simulation,
)

#: ``--media-store`` (``$CALLIOPE_MEDIA_STORE``), checked when given.
media_store_option = click.option(
    "--media-store",
    "media_store",
    default=None,
    metavar="URL",
    envvar="CALLIOPE_MEDIA_STORE",
    show_envvar=True,
    callback=_checked_store,
    help="Keep media in object storage too: s3://BUCKET/PREFIX (credentials and endpoint "
    "from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL); media inputs may then "
    "be the store's s3:// URIs or signed URLs.",
)


def out_dir_option(help: str, **kwargs: Any) -> Callable[[F], F]:
    """``-o``/``--out`` naming an output folder (``out_dir``): ``required=True`` or a
    ``default``."""
    return click.option("-o", "--out", "out_dir", help=help, **kwargs)


def output_option(help: str) -> Callable[[F], F]:
    """``-o``/``--out``/``--output`` naming one output file (``output``)."""
    return click.option("-o", "--out", "--output", "output", default=None, help=help)


def concurrency_option(help: str, default: int | None) -> Callable[[F], F]:
    """``--concurrency``/``-j``: items running at once."""
    return click.option(
        "--concurrency",
        "-j",
        type=click.IntRange(1, 10_000),
        default=default,
        show_default=default is not None,
        help=help,
    )


#: ``--choose NODE=INDEX`` (repeatable): the candidate to keep where a resumed run waits.
choose_option = click.option(
    "--choose",
    "choices",
    multiple=True,
    metavar="NODE=INDEX",
    callback=lambda _ctx, _param, values: parse_choices(values),
    help="With --resume: keep candidate INDEX (0, 1, ...) at node NODE of a run waiting for "
    "a choice (exit 6 printed the commands). Repeat for several nodes.",
)
