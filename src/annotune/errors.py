"""User-facing errors: one clear line naming the file, row and field, never a traceback.

Anything a researcher can cause (a bad file, a typo in a codebook, an unknown label) raises
`AnnotuneError`; the CLI prints its message and exits with status 2. Programming errors stay
ordinary exceptions so that they are not hidden.
"""

from __future__ import annotations

from pathlib import Path


class AnnotuneError(Exception):
    """An error in the user's input, with where it happened."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ):
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class CodebookError(AnnotuneError):
    """The codebook is malformed or inconsistent."""


class DataError(AnnotuneError):
    """A data file cannot be read or does not match the codebook."""


class ConfigError(AnnotuneError):
    """A run configuration (compare, finetune…) is malformed."""


def reject_unknown_keys(table: dict, allowed, *, file=None, prefix: str = "") -> None:
    """A typo in a config key must fail loudly, naming the key and what is allowed, not be ignored."""
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})", file=file,
                              field=f"{prefix}{key}")
