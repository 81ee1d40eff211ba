"""Honest evaluation: `evaluate` (the codebook's task kind scores it), `agreement`, `bootstrap_ci`."""

from annotune.evaluation.metrics import INVALID, agreement, bootstrap_ci, evaluate

__all__ = ["INVALID", "agreement", "bootstrap_ci", "evaluate"]
