"""The ``[data]`` table of a run config: a data file with its options, or a built-in corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annotune.codebook import Codebook, normalise
from annotune.data.builtins import BUILTINS, load_bbc_news, load_flourishing
from annotune.data.dataset import Dataset
from annotune.errors import ConfigError

_FILE_KEYS = {"path", "text_field", "label_field", "id_field", "split_field", "sheet", "aliases", "empty", "labelled", "limit"}


def load_data(spec: dict[str, Any], codebook: Codebook, base_dir: str | Path, *, file: str | Path | None = None) -> Dataset:
    """Load the data named by a run config's data table (``file`` is the config, for messages).

    ``{"builtin": "bbc-news"}``, ``{"builtin": "flourishing", "path": ...}`` or
    ``{"path": "codings.csv", "text_field": ..., "label_field": ..., "id_field": ...,
    "split_field": ..., "sheet": ..., "aliases": {...}, "empty": "drop", "labelled": true,
    "limit": ...}``. Relative paths resolve against ``base_dir`` (the config's folder).
    """

    def fail(msg: str, key: str | None = None) -> ConfigError:
        return ConfigError(msg, file=file, field=f"data.{key}" if key else "data")

    if not isinstance(spec, dict):
        raise fail("the data entry must be a table, e.g. {path = 'codings.csv'} or {builtin = 'bbc-news'}")
    base = Path(base_dir)

    def resolve(p: Any) -> Path:
        if not isinstance(p, (str, Path)) or not str(p).strip():
            raise fail("path must be a file path string", "path")
        pp = Path(p).expanduser()
        return pp if pp.is_absolute() else base / pp

    limit = spec.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise fail(f"limit must be a positive integer, not {limit!r}", "limit")

    if "builtin" in spec:
        name = BUILTINS.get(normalise(str(spec["builtin"])))
        if name is None:
            raise fail(f"unknown builtin dataset {spec['builtin']!r}; known: bbc-news, flourishing", "builtin")
        allowed = {"builtin", "limit"} | ({"path"} if name == "flourishing" else set())
        for key in spec:
            if key not in allowed:
                raise fail(f"unknown key {key!r} for builtin {name!r} (allowed: {', '.join(sorted(allowed))})", key)
        if name == "bbc-news":
            ds = load_bbc_news(codebook)
        else:
            if "path" not in spec:
                raise fail("builtin 'flourishing' needs path = the folder holding tweets.jsonl", "path")
            ds = load_flourishing(resolve(spec["path"]), codebook)
        return ds[:limit] if limit is not None else ds

    for key in spec:
        if key not in _FILE_KEYS:
            raise fail(f"unknown key {key!r} (allowed: builtin, {', '.join(sorted(_FILE_KEYS))})", key)
    if "path" not in spec:
        raise fail("the data entry needs a path (or builtin = 'bbc-news' / 'flourishing')", "path")
    kwargs: dict[str, Any] = {}
    for key in ("text_field", "label_field", "id_field", "split_field"):
        if spec.get(key) is not None:
            if not isinstance(spec[key], str) or not spec[key].strip():
                raise fail(f"{key} must be a column name", key)
            kwargs[key] = spec[key]
    if spec.get("sheet") is not None:
        if not isinstance(spec["sheet"], (str, int)) or isinstance(spec["sheet"], bool):
            raise fail("sheet must be a sheet name or a 0-based index", "sheet")
        kwargs["sheet"] = spec["sheet"]
    if spec.get("aliases") is not None:
        if not isinstance(spec["aliases"], dict):
            raise fail("aliases must be a table {raw value = 'label name'}", "aliases")
        kwargs["aliases"] = {str(k): str(v) for k, v in spec["aliases"].items()}
    empty = spec.get("empty", "drop")
    if empty not in ("drop", "error"):
        raise fail(f"empty must be 'drop' or 'error', not {empty!r}", "empty")
    labelled = spec.get("labelled", True)
    if not isinstance(labelled, bool):
        raise fail("labelled must be true or false", "labelled")
    return Dataset.load(resolve(spec["path"]), codebook, empty=empty, labelled=labelled, limit=limit, **kwargs)
