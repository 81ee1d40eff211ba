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
from typing import Any

import numpy as np
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    jaccard_score,
    precision_recall_fscore_support,
)
from sklearn.preprocessing import MultiLabelBinarizer

from annotune.codebook import Codebook

__all__ = ["INVALID", "evaluate", "bootstrap_ci", "agreement"]

INVALID = "INVALID"


# --------------------------------------------------------------------------- helpers
def _num(x: Any) -> float | None:
    """A plain Python float, or None for None/NaN (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _f1(tp: np.ndarray | float, fp: np.ndarray | float, fn: np.ndarray | float) -> Any:
    """F1 = 2TP / (2TP + FP + FN), 0 where the denominator is 0 (elementwise)."""
    tp, fp, fn = np.asarray(tp, float), np.asarray(fp, float), np.asarray(fn, float)
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = cohen_kappa_score(a, b)
    return _num(k)


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


def _check_inputs(codebook: Codebook, gold: list, pred: list) -> int:
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
    return n


def _unknown(value: Any, where: str, names: Sequence[str], what: str = "label") -> ValueError:
    shown = ", ".join(map(repr, list(names)[:8])) + (", …" if len(names) > 8 else "")
    return ValueError(
        f"{where}: {value!r} is not a codebook {what} (expected one of {shown}); "
        "canonicalise predictions before evaluating and use None for an invalid answer"
    )


def _label_set(value: Any, where: str, known: set[str], names: Sequence[str]) -> set[str]:
    if isinstance(value, str) or not isinstance(value, Iterable) or isinstance(value, dict):
        raise ValueError(f"{where}: expected a tuple of labels for a multi-label task, got {value!r}")
    out = set()
    for lab in value:
        if not isinstance(lab, str) or lab not in known:
            raise _unknown(lab, where, names)
        out.add(lab)
    return out


def _ci_or_none(fn: Callable[[np.ndarray], float], n: int, n_boot: int, seed: int, ci: float):
    if n_boot == 0:
        return None
    return bootstrap_ci(fn, n, n_boot=n_boot, seed=seed, ci=ci)


def _mean_jaccard(Y: np.ndarray, P: np.ndarray, valid: np.ndarray) -> float:
    """Mean per-document |P∩G|/|P∪G| (both empty -> 1); an INVALID document scores 0."""
    if not valid.any():
        return 0.0
    on_valid = jaccard_score(Y[valid], P[valid], average="samples", zero_division=1.0)
    return float(on_valid * valid.sum() / len(valid))


def _common(kind: str, n: int, valid: np.ndarray, primary: str, n_boot: int, ci: float) -> dict:
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
def evaluate(
    codebook: Codebook,
    gold: list,
    pred: list,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """Score predictions against gold for the codebook's task kind.

    Returns a JSON-serialisable dict with ``kind``, ``n``, ``n_valid``, ``n_invalid``,
    ``valid_rate``, ``primary`` (the key of the headline metric), ``accuracy``,
    ``accuracy_valid``, ``macro_f1`` and the kind's own metrics and bootstrap intervals (see the
    module docstring for how INVALID predictions are counted).
    """
    n = _check_inputs(codebook, gold, pred)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.95), got {ci}")
    if codebook.kind == "single":
        return _evaluate_single(codebook, gold, pred, n, n_boot, seed, ci)
    if codebook.kind == "multi":
        return _evaluate_multi(codebook, gold, pred, n, n_boot, seed, ci)
    if codebook.kind == "dimensions":
        return _evaluate_dimensions(codebook, gold, pred, n, n_boot, seed, ci)
    raise ValueError(f"unknown task kind {codebook.kind!r}")


def _evaluate_single(cb: Codebook, gold: list, pred: list, n: int, n_boot: int, seed: int, ci: float) -> dict:
    labels = cb.label_names
    if INVALID in labels:
        raise ValueError(f"a codebook label may not be called {INVALID!r}: it is reserved for unparseable answers")
    index = {lab: i for i, lab in enumerate(labels)}
    L = len(labels)
    g = np.empty(n, dtype=int)
    p = np.empty(n, dtype=int)
    for i, (gv, pv) in enumerate(zip(gold, pred)):
        if not isinstance(gv, str) or gv not in index:
            raise _unknown(gv, f"gold label of document {i}", labels)
        g[i] = index[gv]
        if pv is None:
            p[i] = L  # INVALID
        elif isinstance(pv, str) and pv in index:
            p[i] = index[pv]
        else:
            raise _unknown(pv, f"prediction for document {i}", labels)
    valid = p < L
    correct = g == p
    gold_names = [labels[k] for k in g]
    pred_names = [labels[k] if k < L else INVALID for k in p]

    res = _common("single", n, valid, "macro_f1", n_boot, ci)
    res["accuracy"] = float(correct.mean())
    res["accuracy_valid"] = float(correct[valid].mean()) if valid.any() else None
    res["macro_f1"] = float(f1_score(gold_names, pred_names, labels=labels, average="macro", zero_division=0))
    prec, rec, f1, sup = precision_recall_fscore_support(
        gold_names, pred_names, labels=labels, average=None, zero_division=0
    )
    res["per_class"] = {
        lab: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]), "support": int(sup[k])}
        for k, lab in enumerate(labels)
    }
    columns = [*labels, INVALID]
    cm = confusion_matrix(gold_names, pred_names, labels=columns)[:L]  # gold is never INVALID
    res["confusion"] = {"rows": list(labels), "columns": columns, "matrix": cm.astype(int).tolist()}
    res["kappa"] = _kappa(g.tolist(), p.tolist())

    # bootstrap: per-class counts from bincounts over the resampled documents
    def acc(idx: np.ndarray) -> float:
        return float(correct[idx].mean())

    def macro(idx: np.ndarray) -> float:
        gi, pi, ci_ = g[idx], p[idx], correct[idx]
        tp = np.bincount(gi[ci_], minlength=L)
        n_gold = np.bincount(gi, minlength=L)
        n_pred = np.bincount(pi, minlength=L + 1)[:L]
        return float(_f1(tp, n_pred - tp, n_gold - tp).mean())

    res["accuracy_ci"] = _ci_or_none(acc, n, n_boot, seed, ci)
    res["macro_f1_ci"] = _ci_or_none(macro, n, n_boot, seed, ci)
    return res


def _evaluate_multi(cb: Codebook, gold: list, pred: list, n: int, n_boot: int, seed: int, ci: float) -> dict:
    labels = cb.label_names
    known = set(labels)
    gold_sets = [_label_set(gv, f"gold labels of document {i}", known, labels) for i, gv in enumerate(gold)]
    pred_sets = [
        set() if pv is None else _label_set(pv, f"prediction for document {i}", known, labels)
        for i, pv in enumerate(pred)
    ]
    valid = np.array([pv is not None for pv in pred], dtype=bool)
    mlb = MultiLabelBinarizer(classes=labels)
    Y = mlb.fit_transform(gold_sets).astype(bool)
    P = mlb.transform(pred_sets).astype(bool)  # INVALID rows are all False

    tp = Y & P
    fp = P & ~Y
    fn = Y & ~P
    exact = (Y == P).all(axis=1) & valid
    hit = tp.any(axis=1) & valid
    res = _common("multi", n, valid, "micro_f1", n_boot, ci)
    res["micro_f1"] = float(f1_score(Y, P, average="micro", zero_division=0))
    res["macro_f1"] = float(f1_score(Y, P, average="macro", zero_division=0))
    res["jaccard"] = _mean_jaccard(Y, P, valid)
    hl_valid = hamming_loss(Y[valid], P[valid]) * valid.sum() if valid.any() else 0.0
    res["hamming_loss"] = float((hl_valid + (~valid).sum()) / n)
    res["exact_match"] = float(exact.mean())
    res["at_least_one"] = float(hit.mean())
    res["accuracy"] = res["exact_match"]
    res["accuracy_valid"] = float(exact[valid].mean()) if valid.any() else None
    prec, rec, f1, sup = precision_recall_fscore_support(Y, P, average=None, zero_division=0)
    res["per_class"] = {
        lab: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]), "support": int(sup[k])}
        for k, lab in enumerate(labels)
    }

    tp_c, fp_c, fn_c = tp.astype(np.int32), fp.astype(np.int32), fn.astype(np.int32)
    tp_d, fp_d, fn_d = tp_c.sum(1), fp_c.sum(1), fn_c.sum(1)

    def micro(idx: np.ndarray) -> float:
        return float(_f1(tp_d[idx].sum(), fp_d[idx].sum(), fn_d[idx].sum()))

    def macro(idx: np.ndarray) -> float:
        return float(_f1(tp_c[idx].sum(0), fp_c[idx].sum(0), fn_c[idx].sum(0)).mean())

    res["micro_f1_ci"] = _ci_or_none(micro, n, n_boot, seed, ci)
    res["macro_f1_ci"] = _ci_or_none(macro, n, n_boot, seed, ci)
    return res


def _evaluate_dimensions(cb: Codebook, gold: list, pred: list, n: int, n_boot: int, seed: int, ci: float) -> dict:
    dims = cb.label_names
    D = len(dims)
    dindex = {d: j for j, d in enumerate(dims)}
    scale = list(cb.scale)
    sindex = {v: k + 1 for k, v in enumerate(scale)}  # 0 = not present

    def encode(value: Any, where: str) -> np.ndarray:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a {{dimension: value}} dict for a dimensions task, got {value!r}")
        row = np.zeros(D, dtype=np.int8)
        for dim, v in value.items():
            if not isinstance(dim, str) or dim not in dindex:
                raise _unknown(dim, where, dims, "dimension")
            if not isinstance(v, str) or v not in sindex:
                raise _unknown(v, f"{where}, dimension {dim!r}", scale, "scale value")
            row[dindex[dim]] = sindex[v]
        return row

    G = np.stack([encode(gv, f"gold labels of document {i}") for i, gv in enumerate(gold)])
    valid = np.array([pv is not None for pv in pred], dtype=bool)
    zero = np.zeros(D, dtype=np.int8)
    Pm = np.stack(
        [zero if pv is None else encode(pv, f"prediction for document {i}") for i, pv in enumerate(pred)]
    )
    Gp, Pp = G > 0, Pm > 0  # presence matrices; INVALID rows predict nothing

    # presence counts per document x dimension
    tp = (Gp & Pp).astype(np.int32)
    fp = (Pp & ~Gp).astype(np.int32)
    fn = (Gp & ~Pp).astype(np.int32)
    # intensity: (dimension, value) pairs; TP = predicted pair exactly in gold
    itp_d = (Pp & (G == Pm)).sum(1)
    ipred_d = Pp.sum(1)
    igold_d = Gp.sum(1)
    tp_d, fp_d, fn_d = tp.sum(1), fp.sum(1), fn.sum(1)

    def intensity(itp: float, ipred: float, igold: float) -> tuple[float, float, float]:
        p_, r_ = _ratio(itp, ipred), _ratio(itp, igold)
        return p_, r_, (2 * p_ * r_ / (p_ + r_) if p_ + r_ > 0 else 0.0)

    correct_cells = (Gp == Pp).sum(1)
    correct_cells[~valid] = 0  # an INVALID document is wrong on every dimension
    exact = (G == Pm).all(axis=1) & valid

    res = _common("dimensions", n, valid, "intensity_micro_f1", n_boot, ci)
    res["presence_micro_f1"] = float(f1_score(Gp, Pp, average="micro", zero_division=0))
    res["presence_precision"] = _ratio(tp_d.sum(), tp_d.sum() + fp_d.sum())
    res["presence_recall"] = _ratio(tp_d.sum(), tp_d.sum() + fn_d.sum())
    ip, ir, if1 = intensity(itp_d.sum(), ipred_d.sum(), igold_d.sum())
    res["intensity_micro_f1"] = if1
    res["intensity_precision"] = ip
    res["intensity_recall"] = ir
    res["macro_f1"] = float(f1_score(Gp, Pp, average="macro", zero_division=0))
    res["accD"] = float(correct_cells.sum() / (n * D))
    res["accuracy"] = res["accD"]
    res["accuracy_valid"] = float(correct_cells[valid].sum() / (valid.sum() * D)) if valid.any() else None
    res["jaccard"] = _mean_jaccard(Gp, Pp, valid)
    res["exact_match"] = float(exact.mean())
    pf1 = f1_score(Gp, Pp, average=None, zero_division=0)
    prec, rec, _, sup = precision_recall_fscore_support(Gp, Pp, average=None, zero_division=0)
    res["per_dimension"] = {
        d: {
            "presence_f1": float(pf1[j]),
            "presence_precision": float(prec[j]),
            "presence_recall": float(rec[j]),
            "support": int(sup[j]),
        }
        for j, d in enumerate(dims)
    }

    def presence(idx: np.ndarray) -> float:
        return float(_f1(tp_d[idx].sum(), fp_d[idx].sum(), fn_d[idx].sum()))

    def intens(idx: np.ndarray) -> float:
        return intensity(itp_d[idx].sum(), ipred_d[idx].sum(), igold_d[idx].sum())[2]

    res["presence_micro_f1_ci"] = _ci_or_none(presence, n, n_boot, seed, ci)
    res["intensity_micro_f1_ci"] = _ci_or_none(intens, n, n_boot, seed, ci)
    return res


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
        "kappa": _kappa(ea, eb),
        "n_invalid_a": sum(x is None for x in a),
        "n_invalid_b": sum(x is None for x in b),
    }
