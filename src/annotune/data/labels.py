"""Turning raw label cells into canonical label values for a codebook.

Label values follow the project convention:

- ``single``: ``str``, the canonical label name;
- ``multi``: ``tuple[str, ...]``, canonical names in codebook order, no duplicates;
- ``dimensions``: ``dict[str, str]`` {dimension: scale value}, present dimensions only, keys in
  codebook order.

The kind-specific branches of `parse_label` are kept together here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


def _kind_expects(kind: str) -> str:
    return {
        "single": "kind 'single' expects one label name per row, as a string",
        "multi": "kind 'multi' expects a list of label names (a JSON list, or a string like 'a; b')",
        "dimensions": 'kind \'dimensions\' expects a JSON object {dimension: value}, e.g. {"happiness": "high"}',
    }[kind]


def parse_label(
    raw: Any,
    codebook: Codebook,
    aliases: dict[str, str] | None = None,
    *,
    file: str | None = None,
    row: int | None = None,
    field: str | None = None,
) -> Label:
    """Turn a raw cell/JSON value into the canonical label value for ``codebook.kind``.

    ``aliases`` is a normalised map {normalise(raw): label name} (see `alias_map`); plain
    ``{raw: label}`` dicts are accepted too.
    """
    if aliases and any(k != normalise(k) for k in aliases):
        aliases = alias_map(aliases, codebook, file)
    aliases = aliases or {}
    kind = codebook.kind
    where = {"file": file, "row": row, "field": field}

    def fail(msg: str) -> DataError:
        return DataError(msg, **where)

    def name_of(item: Any, what: str = "label") -> str:
        if isinstance(item, (dict, list, tuple)) or item is None:
            raise fail(f"{_kind_expects(kind)}; got {describe(item)} inside the label")
        s = scalar_str(item)
        canon = codebook.canonical_label(aliases.get(normalise(s), s))
        if canon is None:
            raise fail(
                f"unknown {what} {s!r}; expected one of {list_names(codebook.label_names)} "
                f"(map other spellings with aliases, e.g. aliases = {{{s!r}: '<label>'}})"
            )
        return canon

    if is_missing(raw):
        raise fail(
            "empty label (every row of a labelled dataset needs one; pass labelled=False for an unlabelled pool"
            + (", or write {} for a text with no dimensions)" if kind == "dimensions" else ")")
        )

    if kind == "single":
        if isinstance(raw, str) and raw.strip()[:1] in ("[", "{"):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, (list, dict)):
                raw = parsed
        if isinstance(raw, (list, tuple, dict)):
            raise fail(f"{_kind_expects(kind)}; got {describe(raw)}")
        return name_of(raw)

    if kind == "multi":
        items = _multi_items(raw, codebook, aliases, fail)
        names = {name_of(item) for item in items}
        if not names:
            raise fail("empty label list (kind 'multi' needs at least one label per row)")
        ordered = tuple(n for n in codebook.label_names if n in names)
        if codebook.max_labels is not None and len(ordered) > codebook.max_labels:
            raise fail(f"{len(ordered)} labels ({', '.join(ordered)}) but the codebook allows max_labels = {codebook.max_labels}")
        return ordered

    # dimensions
    value = raw
    if isinstance(value, str):
        s = value.strip()
        if not s.startswith("{"):
            raise fail(f"{_kind_expects(kind)}; got {describe(value)}")
        try:
            value = json.loads(s)
        except ValueError as exc:
            raise fail(f"invalid JSON object ({exc.msg} at char {exc.pos}); {_kind_expects(kind)}") from None
    if isinstance(value, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        value = dict(value) if value else value  # Parquet map columns come as [(key, value), ...]
    if not isinstance(value, dict):
        raise fail(f"{_kind_expects(kind)}; got {describe(value)}")
    found: dict[str, str] = {}
    for key, val in value.items():
        if is_missing(val):
            continue  # null = dimension absent (e.g. Parquet struct columns)
        dim = name_of(key, "dimension")
        canon = codebook.canonical_value(scalar_str(val)) if not isinstance(val, (dict, list)) else None
        if canon is None:
            raise fail(f"unknown value {describe(val)} for dimension {dim!r}; expected one of {', '.join(codebook.scale)}")
        if dim in found and found[dim] != canon:
            raise fail(f"dimension {dim!r} given twice with different values ({found[dim]!r}, {canon!r})")
        found[dim] = canon
    return {n: found[n] for n in codebook.label_names if n in found}


def _multi_items(raw: Any, codebook: Codebook, aliases: dict[str, str], fail: Callable[[str], DataError]) -> list[Any]:
    if isinstance(raw, dict):
        raise fail(f"{_kind_expects('multi')}; got a JSON object")
    if isinstance(raw, (list, tuple)):
        return [x for x in raw if not is_missing(x)]
    if hasattr(raw, "tolist") and not isinstance(raw, (str, bytes)):
        return _multi_items(raw.tolist(), codebook, aliases, fail)
    s = scalar_str(raw)
    if s.startswith("["):
        try:
            parsed = json.loads(s)
        except ValueError as exc:
            raise fail(f"invalid JSON list ({exc.msg} at char {exc.pos}); {_kind_expects('multi')}") from None
        if not isinstance(parsed, list):
            raise fail(f"{_kind_expects('multi')}; got {describe(parsed)}")
        return [x for x in parsed if not is_missing(x)]
    if s.startswith("{"):
        raise fail(f"{_kind_expects('multi')}; got a JSON object")
    if codebook.canonical_label(aliases.get(normalise(s), s)) is not None:
        return [s]  # a single label, possibly containing a delimiter character
    for sep in (";", "|", ","):
        if sep in s:
            return [p.strip() for p in s.split(sep) if p.strip()]
    return [s]
