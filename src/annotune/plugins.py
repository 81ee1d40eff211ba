"""Plug-ins: other packages add system types and task kinds through entry points."""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import Callable

_LOADED: set[str] = set()


def load_plugins(group: str, register: Callable[[object], object], known: Callable[[str], bool]) -> None:
    """Register every entry point of ``group`` once per process; a plug-in that fails to load is a warning,
    never an error (it must not break the built-ins)."""
    if group in _LOADED:
        return
    _LOADED.add(group)
    for ep in entry_points(group=group):
        if known(ep.name):
            continue
        try:
            register(ep.load())
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"annotune plug-in {ep.name!r} ({ep.value}) of {group} could not be loaded: {exc}",
                          stacklevel=3)


__all__ = ["load_plugins"]
