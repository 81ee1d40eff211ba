"""`annotune curve`: the learning curve of a config's [curve] table."""

from __future__ import annotations

from pathlib import Path

import typer

from annotune.cli.app import app, output_option, quiet_option, console, log, user_errors
from annotune.environment import quiet_libraries
from annotune.cli.render import print_curve_table


@app.command()
@user_errors
def curve(
    config: Path = typer.Argument(..., help="Comparison config with a `curve` table (sizes, seeds, answer, "
                                  "references)."),
    output: Path = output_option(),
    fresh: bool = typer.Option(False, "--fresh", help="Re-evaluate every point and reference instead of reusing "
                               "finished ones (trained adapters are reused)."),
    quiet: bool = quiet_option(),
):
    """Learning curve: fine-tune on subsamples of each size × seed and compare with the references.

    For every size and seed, a seeded stratified subsample of the training split is fine-tuned with the
    config's `finetune` table and scored on the one test split; references that learn (head, embedding,
    tfidf, setfit) are trained on the same subsample, each a line of its own (`answer = []`: only they).
    Each finished point is saved at once under <output>/curve/points/; a rerun skips finished points.
    Writes curve/curve.json and the report (report.html, report.md).
    """
    quiet_libraries()
    from annotune.workflows import curve as run_curve, load_config
    from annotune.report import write_report

    cfg = load_config(config, output)
    result = run_curve(cfg, progress=not quiet, fresh=fresh, log=log)
    print_curve_table(result)
    console.print(f"curve: {cfg.output / 'curve' / 'curve.json'}  report: {write_report(cfg.output)['html']}",
                  markup=False, highlight=False)
