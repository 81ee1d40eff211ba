"""`annotune schema` and `annotune options`: the config reference, generated from the config classes."""

from __future__ import annotations

import json

from annotune.cli.app import app, console


@app.command()
def schema():
    """Print the JSON Schema of a config file (for editors: point your TOML/JSON schema plugin at it)."""
    from annotune.experiments.reference import schema as config_schema

    console.print_json(json.dumps(config_schema()))


@app.command()
def options():
    """Print every config table and system type with its keys, defaults and meanings (Markdown)."""
    from annotune.experiments.reference import options_markdown

    print(options_markdown(), end="")
