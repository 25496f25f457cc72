"""`vipa plugins`: what encoders and fusion strategies are installed, and from where."""

from __future__ import annotations

import inspect
import json

import typer
from rich.table import Table

from vipa.errors import UnknownNameError
from vipa_cli._util import app, console


@app.command("plugins")
def plugins_command(
    name: str = typer.Argument(None, help="Show one encoder or fusion with its options."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List every encoder and fusion strategy, its plugin and distribution.

    Plugins that failed to load are listed with their error; the rest keep
    working. Give a NAME to see one entry with the options its factory takes.

    [bold]Examples[/bold]: [cyan]vipa plugins[/cyan], [cyan]vipa plugins --json[/cyan],
    [cyan]vipa plugins swin-bert[/cyan]
    """
    from vipa_plugins import registry
    from vipa_plugins.manager import get_plugin_manager

    manager = get_plugin_manager()
    found = {kind: registry.collect(kind, manager) for kind in registry.KINDS}
    if name is not None:
        _show_one(name, found, as_json)
        return

    if as_json:
        payload = {
            f"{kind}s": [
                {"name": r.name, "description": r.description, "plugin": r.plugin,
                 "distribution": r.distribution, "version": r.version,
                 **({"presets": list(r.presets), "sizes": r.sizes} if kind == "encoder" else {})}
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
            broken.add_row(b.name, b.source, b.error)
        console.print(broken)


def _factory_options(factory) -> dict[str, str]:
    """The keyword options a factory accepts, with defaults, as display strings."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins or C callables have no signature
        return {}
    shown = {}
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        shown[p.name] = "required" if p.default is p.empty else repr(p.default)
    return shown


def _show_one(name: str, found: dict, as_json: bool) -> None:
    from vipa_plugins import registry

    matches = [found[kind][name] for kind in registry.KINDS if name in found[kind]]
    if not matches:
        raise UnknownNameError(name, [n for kind in registry.KINDS for n in found[kind]])
    for r in matches:
        options = _factory_options(r.factory)
        if as_json:
            typer.echo(json.dumps({"kind": r.kind, "name": r.name, "description": r.description,
                                   "plugin": r.plugin, "distribution": r.distribution,
                                   "version": r.version, "presets": list(r.presets),
                                   "sizes": r.sizes, "options": options}, indent=2))
            continue
        console.print(f"[bold]{r.name}[/] ({r.kind}) - {r.description}")
        console.print(f"  plugin: {r.plugin}, from {r.source}")
        if r.kind == "encoder":
            sizes = ", ".join(f"{size} -> {preset}" for size, preset in r.sizes.items())
            console.print(f"  presets: {', '.join(r.presets) or 'none'}"
                          + (f" (recipe sizes: {sizes})" if sizes else ""))
        for option, default in options.items():
            console.print(f"  option [cyan]{option}[/]: {default}")
