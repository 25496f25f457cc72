"""The shared Typer app, consoles, and the one place errors become exit codes."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from vipa.errors import UsageError, VipaError, first_line
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


# Set to see the traceback of an unexpected error instead of its one-line summary.
TRACEBACK_VARIABLE = "VIPA_TRACEBACK"
# Recent typer vendors its own click; its public BadParameter leads to the classes it raises.
_CLICK_ERRORS = {c.__name__: c for c in typer.BadParameter.__mro__}
UsageErrorClass = _CLICK_ERRORS["UsageError"]
ClickExceptionClass = _CLICK_ERRORS["ClickException"]


class VipaGroup(TyperGroup):
    """Turns every error a command raises into a one-line message and an exit code.

    Library errors: usage 2, runtime 1. Command-line parsing errors (a bad
    option value, a missing argument) are usage errors too, printed on one
    line instead of click's framed box. An OSError (a full disk, a
    permission) is one line with exit 1; any other exception is reported as
    an unexpected error on one line, with its traceback when
    ``VIPA_TRACEBACK=1`` is set.
    """

    def main(self, args=None, prog_name=None, complete_var=None,  # noqa: ANN001, ANN201
             standalone_mode: bool = True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except UsageErrorClass as error:
            command = error.ctx.command_path if error.ctx is not None else "vipa"
            message = first_line(error.format_message())
            if message:  # empty: a bare group (`vipa data`) whose help was just printed
                fail(f"{message} (see '{command} --help')", EXIT_USAGE_ERROR)
            code = EXIT_USAGE_ERROR
        except ClickExceptionClass as error:
            fail(first_line(error.format_message()), error.exit_code)
            code = error.exit_code
        except typer.Abort:
            fail("aborted", EXIT_RUNTIME_ERROR)
            code = EXIT_RUNTIME_ERROR
        if not standalone_mode:
            return code
        sys.exit(code)

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            return super().invoke(ctx)
        except (typer.Exit, ClickExceptionClass, typer.Abort):
            raise
        except VipaError as error:
            raise fail(str(error), exit_code_for(error)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None
        except OSError as error:
            where = f" ({error.filename})" if getattr(error, "filename", None) else ""
            raise fail(f"{error.strerror or first_line(error)}{where}") from None
        except Exception as error:  # a bug: one line unless its traceback is asked for
            if os.environ.get(TRACEBACK_VARIABLE):
                raise
            raise fail(f"unexpected error {type(error).__name__}: {first_line(error)} "
                       f"(set {TRACEBACK_VARIABLE}=1 for the traceback)") from None


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


# Every dataset --data takes, for the commands that read one (train, eval, data).
DATASETS_HELP = ("synthetic (built in), synthetic-heldout (built in: other shapes, palette and "
                 "wording, for checking a recipe), synthetic-gres (built in, with phrases "
                 "matching none or several objects), synthetic-wide (built in, a wider "
                 "wording), refcoco, refcoco+, refcocog, grefcoco (phrases matching none, one "
                 "or several objects), refer (the refer layout of your own data) or jsonl (a "
                 "manifest folder)")


def checkpoint_option(shared: bool = False) -> typer.models.OptionInfo:
    """``--checkpoint / -c``, shared by every command that reads a trained model.

    ``shared``: a model folder or a Hub id works too (commands that only run the model).
    """
    more = "; or a model folder, or a Hub id ORG/NAME, hf://ORG/NAME@REV" if shared else ""
    return typer.Option(None, "--checkpoint", "-c", callback=_checkpoint_meant,
                        help=f"Checkpoint (default: the latest run's best.safetensors; a run "
                             f"folder: its best.safetensors){more}.")


def _checkpoint_meant(value):  # noqa: ANN001, ANN202 - a Path or str, as the option types it
    """A run folder as its checkpoint; a resume state refused in one line (runs.checkpoint_in)."""
    from vipa.training.runs import checkpoint_in

    if value is None or not Path(str(value)).expanduser().exists():
        return value
    return type(value)(checkpoint_in(value))


def device_option() -> typer.models.OptionInfo:
    """``--device`` of the commands that run a model."""
    return typer.Option("auto", help="auto, cpu, cuda, cuda:1 ...")


def compile_option() -> typer.models.OptionInfo:
    """``--compile`` of the commands that run a checkpoint (predict, serve)."""
    return typer.Option(False, "--compile",
                        help="Run the checkpoint through torch.compile: the first call of "
                             "each batch size compiles (minutes), later ones are faster on "
                             "a GPU.")


def precision_option() -> typer.models.OptionInfo:
    """``--precision`` of the commands that run a checkpoint (predict, serve)."""
    return typer.Option("fp32", "--precision",
                        help="fp32, or bf16: the checkpoint's weights and activations in "
                             "bfloat16 (GPUs run it faster; masks may differ at the edges).")


def channels_last_option() -> typer.models.OptionInfo:
    """``--channels-last`` of the commands that run a checkpoint (predict, serve)."""
    return typer.Option(False, "--channels-last",
                        help="Keep images, feature maps and convolution weights in "
                             "channels-last (NHWC) memory, the layout GPU convolutions "
                             "prefer; the masks are the same.")


class ConsoleLines(logging.Handler):
    """A log record as one line on the stderr console (``warning: ...``), never wrapped.

    It shares the console with the progress bars, so a line is drawn above a
    running bar instead of tearing it.
    """

    PREFIXES = ((logging.ERROR, "[bold red]error:[/] "), (logging.WARNING, "[yellow]warning:[/] "))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = next((p for level, p in self.PREFIXES if record.levelno >= level), "")
            err_console.print(prefix + escape(" ".join(self.format(record).split())),
                              highlight=False)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(verbose: bool) -> None:
    """Library logging goes to stderr, one line a record; warnings always, info with --verbose."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(message)s", handlers=[ConsoleLines()], force=True)
