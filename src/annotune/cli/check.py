"""`annotune check`: validate a config or codebook without running a model."""

from __future__ import annotations

from pathlib import Path

import typer

from annotune.cli.app import app, console, user_errors


@app.command()
@user_errors
def check(
    config: Path = typer.Argument(..., help="Comparison config or codebook (TOML/YAML)."),
):
    """Validate a codebook (and the data a config names) without running any model."""
    from annotune.codebook import Codebook
    from annotune.errors import ConfigError
    from annotune.experiments.compare import check as check_config
    from annotune.experiments.config import config_from_toml, is_experiment, read_toml

    def say(msg: str) -> None:
        console.print(msg, markup=False, highlight=False)

    if not config.is_file():
        raise ConfigError("file not found" if not config.exists() else "expected a file, got a folder", file=config)
    raw = text = None
    if config.suffix.lower() not in (".yaml", ".yml"):
        try:
            raw, text = read_toml(config)
        except ConfigError:
            pass  # Codebook.load says what is wrong, in one line
    is_config = raw is not None and is_experiment(raw)
    if is_config:
        cfg = config_from_toml(config, raw, text)
        checked = check_config(cfg)
        cb, dataset = cfg.codebook, checked["dataset"]
        say(f"codebook {cb.name!r}: {cb.kind}, {len(cb.labels)} labels — ok")
        say(f"data: {len(dataset)} documents ({dataset.dropped_empty} empty dropped), "
            f"train {len(checked['train'])}, test {len(checked['test'])} — ok")
        say(f"systems: {', '.join(s.name for s in cfg.systems) or 'none'} — ok")
        if cfg.curve:
            say(f"curve: sizes {cfg.curve.sizes}, seeds {cfg.curve.seeds} — ok")
    else:
        cb = Codebook.load(config)
        say(f"codebook {cb.name!r}: {cb.kind}, {len(cb.labels)} labels — ok")
