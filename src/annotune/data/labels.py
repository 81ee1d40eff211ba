"""Turning raw label cells into canonical label values for a codebook.

Label values follow the project convention (``single``: the canonical label name; ``multi``: a tuple of
canonical names in codebook order; ``dimensions``: a dict {dimension: scale value} of the present
dimensions, in codebook order). What one cell may look like is the task kind's business
(`TaskKind.read_label`); `parse_label` lends it a `CellReader` (`Cells`) built from this package's cell
helpers, the user's aliases and the error context (file, row, field).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from annotune.codebook import Codebook, normalise
from annotune.data.readers import describe, is_missing, scalar_str
from annotune.errors import DataError

Label = str | tuple[str, ...] | dict[str, str]


# ---------------------------------------------------------------------- label parsing
def alias_map(aliases: dict[str, str] | None, codebook: Codebook, file: str | None) -> dict[str, str]:
    """{normalise(raw): label name} from a user's {raw: label} aliases; unknown targets are a `DataError`."""
    if not aliases:
        return {}
    if not isinstance(aliases, dict):
        raise DataError("aliases must be a mapping {raw value: label name}", file=file, field="aliases")
    out = {}
    for raw, target in aliases.items():
        canon = codebook.canonical_label(str(target))
        if canon is None:
            raise DataError(
                f"alias {raw!r} maps to {target!r}, which is not a codebook label "
                f"(labels: {list_names(codebook.label_names)})",
                file=file,
                field="aliases",
            )
        out[normalise(str(raw))] = canon
    return out


def list_names(names: list[str], limit: int = 12) -> str:
    """Names joined with commas for messages, at most ``limit`` of them."""
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


@dataclass(frozen=True)
class Cells:
    """The `CellReader` that `parse_label` lends a task kind: cell helpers, aliases and error context."""

    codebook: Codebook
    aliases: dict[str, str]  # {normalise(raw): label name}
    file: str | None = None
    row: int | None = None
    field: str | None = None

    def fail(self, message: str) -> DataError:
        return DataError(message, file=self.file, row=self.row, field=self.field)

    def name(self, item: Any, what: str = "label") -> str:
        cb = self.codebook
        if isinstance(item, (dict, list, tuple)) or item is None:
            raise self.fail(f"{cb.task.data_format}; got {describe(item)} inside the label")
        s = scalar_str(item)
        canon = cb.canonical_label(self.aliases.get(normalise(s), s))
        if canon is None:
            raise self.fail(
                f"unknown {what} {s!r}; expected one of {list_names(cb.label_names)} "
                f"(map other spellings in [data]: aliases = {{{json.dumps(s)} = \"<label>\"}}, or list them in the "
                f"label's own aliases)"
            )
        return canon

    def is_label(self, text: str) -> bool:
        return self.codebook.canonical_label(self.aliases.get(normalise(text), text)) is not None

    def missing(self, value: Any) -> bool:
        return is_missing(value)

    def text(self, value: Any) -> str:
        return scalar_str(value)

    def describe(self, value: Any) -> str:
        return describe(value)


def parse_label(
    raw: Any,
    codebook: Codebook,
    aliases: dict[str, str] | None = None,
    *,
    file: str | None = None,
    row: int | None = None,
    field: str | None = None,
) -> Label:
    """Turn a raw cell/JSON value into the canonical label value for the codebook's task kind.

    ``aliases`` is a normalised map {normalise(raw): label name} (see `alias_map`); plain
    ``{raw: label}`` dicts are accepted too.
    """
    if aliases and any(k != normalise(k) for k in aliases):
        aliases = alias_map(aliases, codebook, file)
    cells = Cells(codebook, aliases or {}, file=file, row=row, field=field)
    if is_missing(raw):
        raise cells.fail(
            "empty label (every row of a labelled dataset needs one; an unlabelled pool is read with labelled = false "
            "in [data], labelled=False in Python"
            + codebook.task.empty_label_hint + ")"
        )
    return codebook.task.read_label(raw, cells)
