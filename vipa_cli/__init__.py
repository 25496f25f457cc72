"""The `vipa` command line: one module per command, each a thin wrapper over the library."""

from __future__ import annotations

import typer

from vipa.version import __version__

# Importing a command module registers its command; the order is the order in --help.
# isort: off
from vipa_cli import train, evaluate, predict, export, package, serve, demo, data, plugins  # noqa: F401, E501
# isort: on
from vipa_cli._util import app, setup_logging


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vipa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show informational logs."),
) -> None:
    setup_logging(verbose)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
