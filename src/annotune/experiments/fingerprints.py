"""Fingerprints: short hashes of everything that determines a result, so finished work is reused only
when nothing it depends on has changed."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def slug(name: str) -> str:
    """A file-name-safe form of a system name or size."""
    return re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "system"


def model_identity(source) -> dict:
    """What identifies a model's weights cheaply: the GGUF file, or the weight files' names, sizes and
    modification times (a hub id is identified by its name only)."""
    info: dict[str, Any] = {"location": source.describe()}
    loc = Path(source.location)
    files = [loc / source.gguf_file] if source.gguf_file else (
        sorted(p for p in loc.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")) if loc.is_dir()
        else [])
    info["files"] = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()]
    return info


def data_fingerprint(codebook, train, test, seed: int) -> str:
    """The codebook, both splits (ids, texts, labels) and the seed."""
    from annotune.tasks.labels import label_to_json

    def rows(ds):
        return [(d.id, d.text, label_to_json(d.label)) for d in ds.docs]

    return fingerprint(codebook.to_dict(), rows(test), rows(train), seed)


def ids_sha256(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


__all__ = ["fingerprint", "slug", "model_identity", "data_fingerprint", "ids_sha256"]
