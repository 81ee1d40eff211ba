"""How labels of each task kind go to and from JSON (results files, caches)."""

from __future__ import annotations

from typing import Any

from annotune.codebook import Codebook


def label_to_json(label: Any) -> Any:
    return list(label) if isinstance(label, tuple) else label


def label_from_json(value: Any, codebook: Codebook) -> Any:
    if value is None:
        return None
    if codebook.kind == "multi":
        return tuple(value)
    return value
