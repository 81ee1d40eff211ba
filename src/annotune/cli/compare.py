"""`annotune compare`: every system of a config on one test split."""

from __future__ import annotations

from pathlib import Path

import typer

from annotune.cli.app import app, output_option, quiet_option, console, log, user_errors
from annotune.environment import quiet_libraries
from annotune.cli.render import print_results_table


@app.command()
@user_errors
def compare(
    config: Path = typer.Argument(..., help="Comparison config (TOML): codebook, data, split, systems."),
    output: Path = output_option(),
    fresh: bool = typer.Option(False, "--fresh", help="Recompute every system instead of reusing finished ones."),
    quiet: bool = quiet_option(),
):
    """Run every system of CONFIG on the same test split and print one comparison table.

    Writes results.json, predictions.csv and one file per finished system to the output folder; an
    interrupted run resumes where it stopped.
    """
    quiet_libraries()
    from annotune.workflows import compare as run_compare, load_config

    cfg = load_config(config, output)
    results = run_compare(cfg, progress=not quiet, fresh=fresh, log=log)
    print_results_table(results)
    console.print(f"results: {cfg.output / 'results.json'}  predictions: {cfg.output / 'predictions.csv'}",
                  markup=False, highlight=False)
    from annotune.report import write_report

    console.print(f"report: {write_report(cfg.output)['html']}", markup=False, highlight=False)
