"""The `annotune` command line: a thin layer over the Python API.

Errors in the user's input are printed as one line (file, row, field) with exit status 2, never as a
traceback; Ctrl-C says what was kept.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .errors import AnnotuneError

app = typer.Typer(
    name="annotune",
    help="Code text corpora with small open LLMs and measure, honestly, whether they can replace a big "
    "closed model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


def user_errors(fn):
    """Turn user errors into one clear line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AnnotuneError as exc:
            err_console.print(f"[bold red]error:[/] {exc.format()}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: finished parts are saved; run the same command again to resume.")
            raise typer.Exit(130) from None

    return wrapper


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", module="transformers")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def print_results_table(results: dict) -> None:
    from .compare import table_rows

    header, rows = table_rows(results)
    kind = results["task"]["task"]["kind"]
    table = Table(title=f"{results['name']} — {kind} task, {results['data']['test']} test documents")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)


@app.command()
@user_errors
def compare(
    config: Path = typer.Argument(..., help="Comparison config (TOML): codebook, data, split, systems."),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder (default: the config's `output`, "
                                "else runs/<name>)."),
    fresh: bool = typer.Option(False, "--fresh", help="Recompute every system instead of reusing finished ones."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Run every system of CONFIG on the same test split and print one comparison table.

    Writes results.json, predictions.csv and one file per finished system to the output folder; an
    interrupted run resumes where it stopped.
    """
    _quiet_libraries()
    from .compare import CompareConfig, Comparison

    cfg = CompareConfig.load(config, output)
    results = Comparison(cfg, progress=not quiet, fresh=fresh,
                         log=lambda msg: err_console.print(msg, highlight=False)).run()
    print_results_table(results)
    console.print(f"results: {cfg.output / 'results.json'}  predictions: {cfg.output / 'predictions.csv'}")


@app.command()
@user_errors
def check(
    config: Path = typer.Argument(..., help="Comparison config or codebook (TOML/YAML)."),
):
    """Validate a codebook (and the data a config names) without running any model."""
    from .codebook import Codebook
    from .compare import CompareConfig, split_data
    from .data import load_data

    text = config.read_text(encoding="utf-8", errors="replace") if config.exists() else ""
    if config.exists() and "[[systems]]" in text:
        cfg = CompareConfig.load(config)
        dataset = load_data(cfg.data, cfg.codebook, cfg.source.parent, file=cfg.source)
        train, test = split_data(cfg, dataset)
        cb = cfg.codebook
        console.print(f"codebook {cb.name!r}: {cb.kind}, {len(cb.labels)} labels — ok")
        console.print(f"data: {len(dataset)} documents ({dataset.dropped_empty} empty dropped), "
                      f"train {len(train)}, test {len(test)} — ok")
        console.print(f"systems: {', '.join(s['name'] for s in cfg.systems)}")
    else:
        cb = Codebook.load(config)
        console.print(f"codebook {cb.name!r}: {cb.kind}, {len(cb.labels)} labels — ok")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
