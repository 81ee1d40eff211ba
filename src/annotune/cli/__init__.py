"""The `annotune` command line (see `annotune.cli.main`)."""

from annotune.cli.main import app

__all__ = ["app"]
