"""The `annotune` application object, its consoles and the user-error handling every command shares.

Errors in the user's input are printed as one line (file, row, field) with exit status 2, never as a
traceback; Ctrl-C says what was kept.
"""

from __future__ import annotations

import functools
import inspect
import sys

import typer
from rich.console import Console
from rich.markup import escape

from annotune.errors import AnnotuneError

app = typer.Typer(
    name="annotune",
    help="Code text corpora with small open LLMs and measure, honestly, whether they can replace a big "
    "closed model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 200)
# soft_wrap: an error stays one line (grep-able, copy-pasteable) whatever the terminal width
err_console = Console(stderr=True, soft_wrap=True)


def reflow_command_help(typer_app: typer.Typer) -> None:
    """Join each paragraph of every command's docstring into one line: Typer's command list keeps the source's
    line breaks (a summary broken mid-sentence), while each command's own --help reflows them anyway."""
    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            paragraphs = inspect.getdoc(info.callback).split("\n\n")
            info.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)


def log(msg: str) -> None:
    """Progress messages on stderr, printed literally (system names may contain brackets)."""
    err_console.print(msg, highlight=False, markup=False)


def user_errors(fn):
    """Turn user errors into one clear line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AnnotuneError as exc:
            # the message is user data (file names, labels, "[task]"...): never parse it as markup
            err_console.print(f"[bold red]error:[/] {escape(exc.format())}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: finished parts are saved; run the same command again to resume.")
            raise typer.Exit(130) from None

    return wrapper


def output_option():
    return typer.Option(None, "--output", "-o", help="Output folder (default: the config's `output`, else "
                        "runs/<name>).")


def quiet_option():
    return typer.Option(False, "--quiet", "-q", help="No progress bars.")
