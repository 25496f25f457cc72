"""`vipa plugins`: what encoders and fusion strategies are installed, and from where."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from vipa_cli._util import app, console


@app.command("plugins")
def plugins_command(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List every encoder and fusion strategy, its plugin and distribution.

    Plugins that failed to load are listed with their error; the rest keep
    working.

    [bold]Examples[/bold]: [cyan]vipa plugins[/cyan], [cyan]vipa plugins --json[/cyan]
    """
    from vipa_plugins import registry
    from vipa_plugins.manager import get_plugin_manager

    manager = get_plugin_manager()
    found = {kind: registry.collect(kind, manager) for kind in registry.KINDS}

    if as_json:
        payload = {
            f"{kind}s": [
                {"name": r.name, "description": r.description, "plugin": r.plugin,
                 "distribution": r.distribution, "version": r.version}
                for r in found[kind].values()
            ]
            for kind in registry.KINDS
        }
        payload["broken"] = [
            {"plugin": b.name, "target": b.target, "distribution": b.distribution,
             "version": b.version, "error": b.error}
            for b in manager.broken
        ]
        typer.echo(json.dumps(payload, indent=2))
        return

    table = Table(title="vipa plugins", title_justify="left")
    for column in ("kind", "name", "description", "plugin", "distribution"):
        table.add_column(column, overflow="fold")
    for kind in registry.KINDS:
        for r in found[kind].values():
            table.add_row(kind, f"[bold]{r.name}[/]", r.description, r.plugin, r.source)
    console.print(table)
    if manager.broken:
        broken = Table(title="plugins that failed to load", title_justify="left",
                       title_style="bold red")
        for column in ("plugin", "distribution", "error"):
            broken.add_column(column, overflow="fold")
        for b in manager.broken:
            dist = f"{b.distribution} {b.version or ''}".strip() if b.distribution else b.target
            broken.add_row(b.name, dist, b.error)
        console.print(broken)
