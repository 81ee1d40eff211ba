"""How metric values are written in tables: three decimals, percentages with one, "–" for missing."""

from __future__ import annotations


def fmt(x: float | None, pct: bool = False) -> str:
    """``0.8123`` -> ``"0.812"`` (``pct``: ``"81.2"``); None -> ``"–"``."""
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def fmt_ci(metrics: dict, key: str) -> str:
    """A metric with its bootstrap interval: ``"0.812 [0.790, 0.833]"`` (the bare value without one)."""
    ci = metrics.get(f"{key}_ci")
    base = fmt(metrics.get(key))
    return f"{base} [{fmt(ci[0])}, {fmt(ci[1])}]" if ci and ci[0] is not None else base
