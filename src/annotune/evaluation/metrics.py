"""Honest evaluation of coded labels against a gold standard.

A model that answers in a form that cannot be parsed has not coded the document. Papers often
report accuracy on the parseable answers only, which flatters models that fail often; here every
INVALID answer (``None``) stays in the denominator and is counted as wrong, while the
valid-only figure (``accuracy_valid``) is reported next to it so that both can be compared.
Every metric comes with the number of documents, the valid rate and, for the headline metrics, a
seeded percentile-bootstrap confidence interval over documents, so that two models can be
compared with their uncertainty rather than by a single number.

Values follow the project conventions:

- ``single``: gold and predictions are canonical label names (``str``);
- ``multi``: tuples (or any iterable) of canonical label names;
- ``dimensions``: ``{dimension: scale value}``; a dimension absent from the dict is "not present".
- An INVALID prediction is ``None``; gold is never ``None``. Labels that are not in the codebook
  raise ``ValueError``: predictions must be parsed and canonicalised before evaluation.

Definition choices (INVALID is never mapped to a label):

- F1-type metrics (macro/micro F1, presence and intensity F1, per-class figures): an INVALID
  prediction predicts nothing, so it costs recall (every gold label of the document is missed)
  and adds no false positive. In ``single`` tasks the confusion matrix has an extra ``INVALID``
  column and Cohen's kappa treats INVALID as its own category.
- Accuracy-type metrics (``accuracy``, ``exact_match``, ``at_least_one``, ``jaccard``,
  ``hamming_loss``, ``accD``): an INVALID document is wrong on *every* decision. Treating it as an
  empty prediction would reward it for every label that is absent from the gold (with 46
  flourishing dimensions, predicting nothing already scores accD 0.92), so for ``accD`` and
  ``hamming_loss`` all the cells of an INVALID document count as errors, and its Jaccard is 0.
- ``accuracy_valid`` is the same accuracy-type figure on the valid documents only (``None`` when
  there are none): exact match for ``multi``, accD for ``dimensions``.
- Macro averages run over *all* codebook labels (scikit-learn ``labels=codebook.label_names,
  zero_division=0``): a label with no support and no predictions scores 0 and lowers the macro
  average. Micro F1 with nothing predicted and nothing in the gold is 0.
- Confidence intervals: percentile bootstrap, ``n_boot`` resamples of the documents with
  replacement, drawn with ``numpy.random.default_rng(seed)``; ``n_boot=0`` skips them (``None``).
- Cohen's kappa is ``None`` where it is undefined (both coders use a single, identical category).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import (
    cohen_kappa_score,
    jaccard_score,
)

if TYPE_CHECKING:
    from annotune.codebook import Codebook

__all__ = [
    "INVALID",
    "agreement",
    "bootstrap_ci",
    "check_inputs",
    "ci_or_none",
    "common_fields",
    "evaluate",
    "kappa",
    "label_set",
    "mean_jaccard",
    "num",
    "ratio",
    "safe_f1",
    "unknown_value",
]

INVALID = "INVALID"


# --------------------------------------------------------------------------- helpers
def num(x: Any) -> float | None:
    """A plain Python float, or None for None/NaN (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def safe_f1(tp: np.ndarray | float, fp: np.ndarray | float, fn: np.ndarray | float) -> Any:
    """F1 = 2TP / (2TP + FP + FN), 0 where the denominator is 0 (elementwise)."""
    tp, fp, fn = np.asarray(tp, float), np.asarray(fp, float), np.asarray(fn, float)
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = cohen_kappa_score(a, b)
    return num(k)


def bootstrap_ci(
    fn: Callable[[np.ndarray], float],
    n: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> list[float]:
    """Percentile bootstrap interval ``[lo, hi]`` of a statistic over ``n`` documents.

    ``fn`` receives an integer array of ``n`` document indices drawn with replacement and returns
    the statistic on that resample. The ``n_boot`` resamples come from
    ``numpy.random.default_rng(seed)``, so the same seed gives the same interval. Keep ``fn``
    cheap (sum precomputed per-document counts over the indices) — it is called ``n_boot`` times.
    """
    if n < 1:
        raise ValueError("bootstrap_ci needs at least one document")
    if n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.95), got {ci}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    stats = np.fromiter((fn(row) for row in idx), dtype=float, count=n_boot)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return [math.nan, math.nan]
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.percentile(stats, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return [float(lo), float(hi)]


def unknown_value(value: Any, where: str, names: Sequence[str], what: str = "label") -> ValueError:
    shown = ", ".join(map(repr, list(names)[:8])) + (", …" if len(names) > 8 else "")
    return ValueError(
        f"{where}: {value!r} is not a codebook {what} (expected one of {shown}); "
        "canonicalise predictions before evaluating and use None for an invalid answer"
    )


def label_set(value: Any, where: str, known: set[str], names: Sequence[str]) -> set[str]:
    if isinstance(value, str) or not isinstance(value, Iterable) or isinstance(value, dict):
        raise ValueError(f"{where}: expected a tuple of labels for a multi-label task, got {value!r}")
    out = set()
    for lab in value:
        if not isinstance(lab, str) or lab not in known:
            raise unknown_value(lab, where, names)
        out.add(lab)
    return out


def ci_or_none(fn: Callable[[np.ndarray], float], n: int, n_boot: int, seed: int, ci: float):
    if n_boot == 0:
        return None
    return bootstrap_ci(fn, n, n_boot=n_boot, seed=seed, ci=ci)


def mean_jaccard(Y: np.ndarray, P: np.ndarray, valid: np.ndarray) -> float:
    """Mean per-document |P∩G|/|P∪G| (both empty -> 1); an INVALID document scores 0."""
    if not valid.any():
        return 0.0
    on_valid = jaccard_score(Y[valid], P[valid], average="samples", zero_division=1.0)
    return float(on_valid * valid.sum() / len(valid))


def common_fields(kind: str, n: int, valid: np.ndarray, primary: str, n_boot: int, ci: float) -> dict:
    n_valid = int(valid.sum())
    return {
        "kind": kind,
        "n": n,
        "n_valid": n_valid,
        "n_invalid": n - n_valid,
        "valid_rate": n_valid / n,
        "primary": primary,
        "n_boot": n_boot,
        "ci_level": ci,
    }


# --------------------------------------------------------------------------- public API
def check_inputs(gold: list, pred: list, n_boot: int = 0, ci: float = 0.95) -> int:
    """Validate what every kind's metrics need; return the number of documents."""
    if len(gold) != len(pred):
        raise ValueError(
            f"gold and pred must have the same length: {len(gold)} gold labels vs {len(pred)} predictions"
        )
    n = len(gold)
    if n == 0:
        raise ValueError("cannot evaluate zero documents: gold and pred are empty")
    for i, g in enumerate(gold):
        if g is None:
            raise ValueError(f"gold label of document {i} is None; gold is never INVALID")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.95), got {ci}")
    return n


def evaluate(
    codebook: Codebook,
    gold: list,
    pred: list,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """Score predictions against gold for the codebook's task kind (``codebook.task.evaluate``).

    Returns a JSON-serialisable dict with ``kind``, ``n``, ``n_valid``, ``n_invalid``,
    ``valid_rate``, ``primary`` (the key of the headline metric), ``accuracy``,
    ``accuracy_valid``, ``macro_f1`` and the kind's own metrics and bootstrap intervals (see the
    module docstring for how INVALID predictions are counted).
    """
    return codebook.task.evaluate(gold, pred, n_boot=n_boot, seed=seed, ci=ci)


def agreement(a: list, b: list) -> dict:
    """Cohen's kappa and raw agreement between two coders' single-label codings.

    ``None`` (an invalid answer) is a category of its own, never mapped to a label. Labels may be
    any hashable values (tuples of labels are compared as whole codings). Returns ``n``,
    ``percent_agreement`` (fraction of identical codings, 0..1), ``kappa`` (``None`` where
    undefined: both coders always give the same single category), ``n_invalid_a``/``n_invalid_b``.
    """
    if len(a) != len(b):
        raise ValueError(f"the two codings must have the same length: {len(a)} vs {len(b)}")
    if len(a) == 0:
        raise ValueError("cannot measure agreement on zero documents: both codings are empty")
    codes: dict[Any, int] = {}
    # None gets its own key so that a label literally called "INVALID" cannot collide with it
    ea = [codes.setdefault(("invalid",) if x is None else ("label", x), len(codes)) for x in a]
    eb = [codes.setdefault(("invalid",) if x is None else ("label", x), len(codes)) for x in b]
    same = sum(x == y for x, y in zip(ea, eb))
    return {
        "n": len(a),
        "percent_agreement": same / len(a),
        "kappa": kappa(ea, eb),
        "n_invalid_a": sum(x is None for x in a),
        "n_invalid_b": sum(x is None for x in b),
    }
