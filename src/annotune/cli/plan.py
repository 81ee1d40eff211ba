"""`annotune plan`: tokens and cost of a config's API systems, before anything is sent."""

from __future__ import annotations

from pathlib import Path

import typer

from annotune.cli.app import app, console, user_errors
from annotune.cli.render import print_plan_table
from annotune.environment import quiet_libraries


@app.command()
@user_errors
def plan(
    config: Path = typer.Argument(..., help="Comparison config (TOML) with one or more `api` systems."),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder (where the response cache is)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
):
    """Estimate the tokens and cost of CONFIG's API systems before anything is sent.

    Counts the exact requests a run would send (prompt tokens exactly when a system names a `tokenizer`,
    else ~4 characters a token), prices them from the price table, shows the batch-API price where the
    provider has a discount, and how many requests the response cache already holds.
    """
    import json

    quiet_libraries()
    from annotune.workflows import load_config
    from annotune.experiments.plan import plan_config

    cfg = load_config(config, output)
    plans = [p.as_dict() for p in plan_config(cfg)]
    if as_json:
        console.print_json(json.dumps({"config": str(config), "systems": plans}))
        return
    if not plans:
        console.print("no api systems in this config: nothing would be sent.")
        return

    print_plan_table(cfg.name, plans)
