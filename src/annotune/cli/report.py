"""`annotune report`: (re)write report.html and report.md for an output folder."""

from __future__ import annotations

from pathlib import Path

import typer

from annotune.cli.app import app, console, user_errors


@app.command()
@user_errors
def report(
    folder: Path = typer.Argument(..., help="Output folder of `annotune compare` or `annotune curve`."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the report to this folder instead."),
):
    """Write report.html (self-contained, can be mailed) and report.md for an output folder.

    Comparison table, confusion matrices, per-class F1, learning curve, cost and throughput, reproducibility
    manifest and a methods paragraph; figures are embedded in the HTML and written to figures/ for the
    Markdown."""
    from annotune.report import write_report

    paths = write_report(folder, output)
    console.print(f"report: {paths['html']}  markdown: {paths['markdown']}  figures: {paths['figures']}",
                  markup=False, highlight=False)
