"""The decision threshold of a classifier's option probabilities, tuned on dev documents.

For task kinds whose constrained questions start with a "no"/"absent" option (`TaskKind.threshold_option`:
multi-label yes/no questions, dimension questions), one scale multiplies that option's probability in every
question before the task kind decides; the scale that maximises the primary metric on the dev documents
is kept. A single-label task has nothing to tune (argmax over its labels). The `head` system and LoRA runs
(`annotune.finetune.dev_eval`, for `constrained` answers) tune it; a run folder's manifest keeps it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from annotune.codebook import Codebook

SCALES = tuple(float(2 ** e) for e in np.arange(-4, 4.01, 0.5))  # decision scales tried on the dev part
MIN_TUNING_DOCS = 16  # a smaller dev part leaves the scale at 1


def scaled(option_probs: list[np.ndarray], option: int | None, scale: float) -> list[np.ndarray]:
    """Multiply the probability of ``option`` of every question by ``scale`` and renormalise."""
    if option is None or scale == 1.0:
        return option_probs
    out = []
    for p in option_probs:
        p = p.astype(np.float64).copy()
        p[option] *= scale
        out.append(p / p.sum())
    return out


def decide(codebook: Codebook, option_probs: list[np.ndarray], scale: float = 1.0):
    task = codebook.task
    return task.decide(scaled(option_probs, task.threshold_option, scale))


def tune_scale(codebook: Codebook, probs: list[list[np.ndarray]], gold: list) -> tuple[float, float | None]:
    """The decision scale that maximises the primary metric on the dev documents (ties: the one closest to
    1), and that metric; 1 when the kind has nothing to tune or the dev part is too small."""
    task = codebook.task
    if task.threshold_option is None or len(gold) < MIN_TUNING_DOCS:
        return 1.0, None
    best = (-1.0, 0.0, 1.0)
    for s in SCALES:
        preds = [decide(codebook, p, s)[0] for p in probs]
        value = task.evaluate(gold, preds, n_boot=0)[task.primary_metric] or 0.0
        best = max(best, (value, -abs(math.log2(s)), s))
    return best[2], best[0]


def run_decision_scale(source) -> float:
    """The decision scale a fine-tuned LoRA run tuned on its dev documents (its manifest's best dev
    evaluation); 1 for a model that is not a run folder, or a run that tuned none. ``source``: a
    `ModelSource`, a path or None."""
    from annotune.finetune.trainer import RUN_MANIFEST  # lazy: the trainer imports dev_eval, which imports this

    location = getattr(source, "location", source)
    if not location:
        return 1.0
    manifest = Path(location) / RUN_MANIFEST
    try:
        run = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return 1.0
    return manifest_decision_scale(run)


def manifest_decision_scale(run_manifest: dict) -> float:
    """The decision scale a run manifest records for its best dev evaluation (1 when none)."""
    best = ((run_manifest.get("training") or {}).get("dev") or {}).get("best") or {}
    return float(best.get("decision_scale") or 1.0)


__all__ = ["scaled", "decide", "tune_scale", "run_decision_scale", "manifest_decision_scale", "SCALES",
           "MIN_TUNING_DOCS"]
