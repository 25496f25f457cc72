"""`vipa plugins`: what is installed, from where, for which contract; `check` tests one."""

from __future__ import annotations

import inspect
import json

import typer
from rich.markup import escape
from rich.table import Table

from vipa.errors import UnknownNameError
from vipa_cli._util import app, console
from vipa_plugins.versions import CURRENT


@app.command("plugins")
def plugins_command(
    name: str = typer.Argument(None, help="Show one encoder, fusion, tokenizer or logger with "
                                          "its options; or [cyan]check[/cyan]."),
    target: str = typer.Argument(None, help="After [cyan]check[/cyan]: the encoder, fusion or "
                                            "logger to run the conformance suite on."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    preset: str = typer.Option(None, "--preset", help="check: the encoder size to build "
                                                      "(default: its cpu size)."),
    weights: str = typer.Option("random", "--weights", help="check: the encoder weights "
                                                            "(random needs no download)."),
) -> None:
    """List every encoder, fusion, tokenizer and logger: its plugin, distribution and contract.

    Plugins that failed to load are listed with their error; the rest keep
    working. Give a NAME to see one entry with the options its factory takes.
    The contract column is the version the plugin declares it was written for
    (docs/plugins.md, "Contract versions").

    [cyan]vipa plugins check NAME[/cyan] runs the contract's conformance suite on an
    installed plugin (builds it small, checks stages, text features, tokenizer,
    a training step with every built-in fusion, ONNX export parity): one line per
    check, exit 0 when all pass, 1 when one fails. For a plugin author's CI.

    [bold]Examples[/bold]: [cyan]vipa plugins[/cyan], [cyan]vipa plugins --json[/cyan],
    [cyan]vipa plugins swin-bert[/cyan], [cyan]vipa plugins check my-encoder[/cyan]
    """
    from vipa_plugins import registry
    from vipa_plugins.manager import get_plugin_manager

    if name == "check":
        _check(target, as_json, preset, weights)
        return
    if target is not None:
        raise typer.BadParameter(f"got {target!r} after {name!r}; did you mean "
                                 f"'vipa plugins check {target}'?")
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
                 "contract": r.contract, "contract_supported": r.support.supported,
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
    for column in ("kind", "name", "description", "plugin", "distribution", "contract"):
        table.add_column(column, overflow="fold")
    for kind in registry.KINDS:
        for r in found[kind].values():
            label = r.support.label if r.support.supported else f"[red]{r.support.label}[/]"
            table.add_row(kind, f"[bold]{r.name}[/]", r.description, r.plugin, r.source, label)
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
                                   "version": r.version, "contract": r.contract,
                                   "contract_supported": r.support.supported,
                                   "presets": list(r.presets),
                                   "sizes": r.sizes, "options": options}, indent=2))
            continue
        console.print(f"[bold]{r.name}[/] ({r.kind}) - {r.description}")
        console.print(f"  plugin: {r.plugin}, from {r.source}")
        console.print(f"  contract: {r.kind} {r.support.label} (this vipa runs "
                      f"{r.kind} {CURRENT[r.kind]})")
        if r.kind == "encoder":
            sizes = ", ".join(f"{size} -> {preset}" for size, preset in r.sizes.items())
            console.print(f"  presets: {', '.join(r.presets) or 'none'}"
                          + (f" (recipe sizes: {sizes})" if sizes else ""))
        for option, default in options.items():
            console.print(f"  option [cyan]{option}[/]: {default}")


def _check(target: str | None, as_json: bool, preset: str | None, weights: str) -> None:
    """`vipa plugins check NAME`: the conformance suite, one line per check as it finishes."""
    if target is None:
        raise typer.BadParameter("name the plugin to check: vipa plugins check NAME")
    from vipa.quiet import quiet_transformers
    from vipa_plugins.conformance import check_plugin, find

    def show(result) -> None:  # noqa: ANN001 - a conformance.Result
        if not as_json:
            console.print("  " + escape(result.line()), highlight=False)

    if not as_json:
        found = find(target)
        console.print(f"{found.kind} {target!r} of {escape(found.origin)}", highlight=False)
    with quiet_transformers():
        report = check_plugin(target, preset=preset, weights=weights, on_result=show)
    failed = len(report.failures)
    if as_json:
        typer.echo(json.dumps({"kind": report.kind, "name": report.name, "origin": report.origin,
                               "ok": report.ok, "checks": [vars(r) for r in report.results]},
                              indent=2))
    else:
        console.print(f"{'[red]' if failed else '[green]'}{len(report.results) - failed} passed, "
                      f"{failed} failed[/]")
    if failed:
        raise typer.Exit(1)
