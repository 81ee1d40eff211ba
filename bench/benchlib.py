"""What every bench script shares: writing its JSON result."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(path: str | Path, result: dict) -> Path:
    """Write a bench's result as JSON (its folder created) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
    return path
