"""The `annotune` command line: one module per command over the Python API (`annotune.workflows`), rendering in
`annotune.cli.render`. Errors in the user's input are printed as one line (file, row, field) with exit status
2, never as a traceback; Ctrl-C says what was kept."""

from annotune.cli import (  # noqa: F401 - registers
    check, compare, curve, export_run, finetune, judge, labelling, plan, report, review, schema, serve)
from annotune.cli.app import app, reflow_command_help

reflow_command_help(app)

__all__ = ["app"]
