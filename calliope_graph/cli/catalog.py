"""What there is to use: ``nodes`` (node kinds and their providers) and ``models`` (the
model catalog; ``--check`` asks the providers)."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from calliope_graph.cli.common import (
    EXIT_CODES,
    Simulation,
    err_console,
    guard,
    open_shared,
    out_console,
)
from calliope_graph.cli.options import debug_option

if TYPE_CHECKING:
    from calliope_graph.config import ModelCatalog
    from calliope_graph.model_list import CheckReport
    from calliope_graph.nodes import Node, Port

__all__ = ["EXIT_MODELS_MISSING", "MODELS_EPILOG", "models", "nodes"]

MODELS_EPILOG = (
    "Exit codes: 0 ok (with --check: every catalog model is listed by its provider), "
    "2 usage, 4 configuration (a bad --catalog), 7 with --check: catalog models their "
    "provider no longer lists (named in the report), 1 with --check: a provider could not be "
    "asked."
)
#: ``models --check``: some catalog models are missing from their provider's list.
EXIT_MODELS_MISSING = EXIT_CODES["models_missing"]


@click.command()
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True, help="The kind's ports and params as JSON.")
def nodes(kind: str | None, as_json: bool) -> None:
    """List node kinds with their ports and the providers that serve them; with KIND, one
    kind in full: its ports and its params (type, default, allowed values, an example)."""
    from calliope_graph.engines import supported
    from calliope_graph.flow import Flow  # noqa: F401  (registers the subflow kind, `flow`)
    from calliope_graph.nodes import node_kinds

    kinds = node_kinds()
    serving = supported()
    if kind is not None:
        cls = kinds.get(kind)
        if cls is None:
            raise click.BadParameter(
                f"{kind!r} is not a node kind; use one of {', '.join(kinds)}.",
                param_hint="KIND",
            )
        names = [p.value for p in serving.get(cls.conversion, [])] if cls.conversion else []
        if as_json:
            click.echo(json.dumps(_kind_dict(cls, names), indent=2))
        else:
            _print_kind(cls, names)
        return
    if as_json:
        every = [
            _kind_dict(c, [p.value for p in serving.get(c.conversion, [])] if c.conversion else [])
            for c in kinds.values()
        ]
        click.echo(json.dumps(every, indent=2))
        return
    for name, cls in kinds.items():
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
            f"[bold]{name}[/]  ({ins or 'ports from params'}) → ({outs or 'from params'})",
            soft_wrap=True,
        )
        out_console.print(f"    {cls.description}", markup=False, soft_wrap=True)
        if providers:
            out_console.print(f"    providers: {providers}", markup=False, soft_wrap=True)
    out_console.print(
        "`calliope-graph nodes KIND` shows a kind's params.", markup=False, soft_wrap=True
    )


def _kind_dict(cls: type[Node], providers: list[str]) -> dict[str, Any]:
    from calliope_graph.nodes import param_docs

    def ports(items: tuple[Port, ...]) -> list[dict[str, Any]]:
        return [
            {
                "name": p.name,
                "type": p.type.value,
                "required": p.required,
                "many": p.many,
                "description": p.description,
            }
            for p in items
        ]

    return {
        "kind": cls.kind,
        "description": cls.description,
        "model": {"needed": cls.needs_model, "default": cls.default_model},
        "providers": providers,
        "inputs": ports(cls.inputs),
        "outputs": ports(cls.outputs),
        "params": [d.to_dict() for d in param_docs(cls)],
    }


def _print_kind(cls: type[Node], providers: list[str]) -> None:
    """One kind in full: ports, model, params — each param with its type, bounds, default,
    allowed values and an example line to paste under ``params:``."""
    from calliope_graph.nodes import param_docs, shown

    def say(text: str) -> None:
        out_console.print(text, markup=False, soft_wrap=True, highlight=False)

    def port_lines(items: tuple[Port, ...], empty: str) -> None:
        for p in items:
            kind = f"{p.type.value}{'[] (several sources)' if p.many else ''}"
            extra = "" if p.required else " (optional)"
            note = f" — {p.description}" if p.description else ""
            say(f"    {p.name}: {kind}{extra}{note}")
        if not items:
            say(f"    {empty}")

    say(f"{cls.kind} — {cls.description}")
    if cls.needs_model:
        default = f" (default: {cls.default_model})" if cls.default_model else ""
        say(f"  model: a catalog name or an inline model{default}")
    if providers:
        say(f"  providers: {', '.join(providers)}")
    say("  inputs:")
    port_lines(cls.inputs, "set by its params (see below)")
    say("  outputs:")
    port_lines(cls.outputs, "set by its params (see below)")
    docs = param_docs(cls)
    if not docs:
        say("  params: none")
        return
    say("  params:")
    for d in docs:
        facts = [d.type]
        if d.bounds:
            facts.append(d.bounds)
        if d.required:
            facts.append("required")
        elif d.default is None:
            facts.append("optional")
        else:
            default = shown(d.default)
            facts.append(f"default {default if len(default) <= 40 else default[:37] + '...'}")
        say(f"    {d.name}: {'; '.join(facts)}")
        if d.allowed:
            say(f"        allowed: {', '.join(shown(v) for v in d.allowed)}")
        if d.description:
            say(f"        {d.description}")
        say(f"        e.g.  {d.name}: {shown(d.example)}")


@click.command(epilog=MODELS_EPILOG)
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
@debug_option
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

    sys.exit(guard(debug, go))


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


async def _check_models(
    models_: ModelCatalog, provider: str | None, simulate: bool, as_json: bool
) -> int:
    from calliope_graph.model_list import check_providers
    from calliope_graph.session import OfflineSwitch

    # --simulate, else the offline switch (CALLIOPE_SIMULATE=1), as for every command
    shared = open_shared(Simulation(simulate=simulate, switch=OfflineSwitch.from_env()))
    with tempfile.TemporaryDirectory(prefix="calliope-models-") as out:
        ctx = shared.context(out)
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
    else:
        _print_check(report, code)
    return code


def _print_check(report: CheckReport, code: int) -> None:
    """``models --check`` as text: a line per provider, then the missing models on stderr."""
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
            f"{', '.join(report.missing)} (exit {code})",
            markup=False,
            soft_wrap=True,
        )
