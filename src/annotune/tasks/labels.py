"""How labels go to and from JSON (results files, caches): delegates to the codebook's task kind."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from annotune.codebook import Codebook


def label_to_json(label: Any, codebook: Codebook | None = None) -> Any:
    """A label value as JSON data (``codebook.task.label_to_json``). Without a codebook, tuples become
    lists and everything else is kept, which is right for every built-in kind."""
    if codebook is not None:
        return codebook.task.label_to_json(label)
    return list(label) if isinstance(label, tuple) else label


def label_from_json(value: Any, codebook: Codebook) -> Any:
    """The label value of JSON data written by `label_to_json` (``codebook.task.label_from_json``)."""
    if value is None:
        return None
    return codebook.task.label_from_json(value)
