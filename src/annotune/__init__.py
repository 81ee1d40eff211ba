"""annotune: code text corpora with small open LLMs and measure, honestly, whether they replace a big one.

The Python API in three lines::

    import annotune
    cfg = annotune.load_config("examples/bbc-news.toml")
    results = annotune.compare(cfg)          # results["systems"][i]["metrics"]

Heavy libraries (torch, transformers) load only when a verb needs them.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

OPENMP_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
if not any(name in os.environ for name in OPENMP_SETTINGS):
    # Idle OpenMP threads sleep instead of spinning: next to another busy process labelling runs 1.2-1.7x
    # slower instead of 2.7-5x, for 8-12 % alone (bench/contention.py). Read when torch loads, so it takes
    # effect when annotune is imported first (the CLI); set either variable to choose yourself
    # (GOMP_SPINCOUNT=300000 is the OpenMP default).
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

_EXPORTS = {
    "Codebook": "annotune.codebook",
    "Dataset": "annotune.data.dataset",
    "Doc": "annotune.data.dataset",
    "load_data": "annotune.data.loader",
    "evaluate": "annotune.evaluation.metrics",
    "load_config": "annotune.experiments.config",
    "ExperimentConfig": "annotune.experiments.config",
    "compare": "annotune.workflows",
    "curve": "annotune.workflows",
    "finetune": "annotune.workflows",
    "export_gguf": "annotune.export.gguf",
    "get_backend": "annotune.workflows",
    "register_system": "annotune.systems.base",
    "System": "annotune.systems.base",
    "SystemConfig": "annotune.systems.base",
    "AnnotuneError": "annotune.errors",
    "Project": "annotune.labelling.workflow",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'annotune' has no attribute {name!r}")
