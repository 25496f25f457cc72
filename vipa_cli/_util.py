"""The shared Typer app, consoles, and the one place errors become exit codes."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperGroup

from vipa.errors import UsageError, VipaError
from vipa.progress import stderr_console

# Library errors become one line on stderr; usage errors exit 2, the rest 1.
EXIT_RUNTIME_ERROR = 1
EXIT_USAGE_ERROR = 2
EXIT_INTERRUPTED = 130

console = Console(soft_wrap=True)
err_console = stderr_console()  # shared with the library's progress bars


def exit_code_for(error: VipaError) -> int:
    return EXIT_USAGE_ERROR if isinstance(error, UsageError) else EXIT_RUNTIME_ERROR


def fail(message: str, code: int = EXIT_RUNTIME_ERROR) -> typer.Exit:
    """Print ``error: message`` on one line and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


class VipaGroup(TyperGroup):
    """Turns library errors raised by any command into a one-line message and exit code."""

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            return super().invoke(ctx)
        except VipaError as error:
            raise fail(str(error), exit_code_for(error)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="vipa",
    cls=VipaGroup,
    help=(
        "Referring image segmentation with Visual Informative Part Attention.\n\n"
        "Give an image and a phrase such as [italic]'the left dog'[/italic]; get the mask "
        "of the object the phrase means. Encoders and fusion strategies are plugins: "
        "[bold]vipa plugins[/bold] lists what is installed."
    ),
    epilog="Docs: docs/index.md. Examples: [bold]vipa plugins --json[/bold]",
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def checkpoint_option() -> typer.models.OptionInfo:
    """``--checkpoint / -c``, shared by every command that reads a trained model."""
    return typer.Option(None, "--checkpoint", "-c",
                        help="Checkpoint (default: the latest run's best.safetensors).")


def device_option() -> typer.models.OptionInfo:
    """``--device`` of the commands that run a model."""
    return typer.Option("auto", help="auto, cpu, cuda, cuda:1 ...")


def setup_logging(verbose: bool) -> None:
    """Library logging goes to stderr through rich; warnings always, info with --verbose."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
        force=True,
    )
