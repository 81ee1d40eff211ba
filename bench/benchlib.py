"""What the bench scripts share: writing the JSON result, and measurements in fresh child processes (peak RSS
is per process; the parent starts one child at a time)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

RESULT = "RESULT "


def report_child_result(measurement: dict) -> None:
    """In the child: hand the measurement to the parent (one line on stdout)."""
    print(RESULT + json.dumps(measurement))


class ChildFailed(RuntimeError):
    pass


def run_child(script: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """In the parent: run ``script args`` in a fresh Python process and return what it reported; the child's
    output tail is raised with `ChildFailed` when it fails or reports nothing."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env)
    line = next((x for x in done.stdout.splitlines() if x.startswith(RESULT)), None)
    if done.returncode != 0 or line is None:
        raise ChildFailed(done.stdout[-2000:] + done.stderr[-4000:])
    return json.loads(line.removeprefix(RESULT))


def comparison_header(bench: str, started: float, results: dict) -> dict:
    """The fields a bench's JSON starts with when it ran a comparison: name, date, seconds since ``started``
    (a `time.time()`), and the comparison's hardware and library versions."""
    return {"bench": bench, "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - started, 1),
            "hardware": results["environment"]["hardware"], "libraries": results["environment"]["libraries"]}


def write_result(path: str | Path, result: dict) -> Path:
    """Write a bench's result as JSON (its folder created) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
    return path


__all__ = ["ChildFailed", "comparison_header", "report_child_result", "run_child", "write_result"]
