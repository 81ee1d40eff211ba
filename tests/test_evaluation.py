"""Every metric of annotune.evaluation against values computed by hand, plus the Rethinking Scale numbers."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from annotune.codebook import Codebook
from annotune.evaluation.metrics import INVALID, agreement, bootstrap_ci, evaluate

FLOURISHING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flourishing"


def codebook(kind: str, names: list[str], **task) -> Codebook:
    return Codebook.from_dict(
        {"task": {"name": "t", "kind": kind, **task}, "labels": [{"name": n, "definition": f"about {n}"} for n in names]}
    )


def assert_plain_json(obj) -> None:
    """Only builtin types (no numpy scalars), str dict keys, no NaN."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str
            assert_plain_json(v)
    elif isinstance(obj, list):
        for v in obj:
            assert_plain_json(v)
    else:
        assert obj is None or type(obj) in (str, int, float, bool), (obj, type(obj))
    json.dumps(obj, allow_nan=False)


# --------------------------------------------------------------------------- single
# 6 documents, labels a/b/c, one INVALID answer (doc 4):
#   gold: a a b b    c c
#   pred: a b b None c a
#   correct: 1 0 1 0(INVALID) 1 0  -> accuracy 3/6 = 0.5; valid-only 3/5 = 0.6
#   a: predicted twice (d1, d6), TP 1, gold 2 -> P 1/2, R 1/2, F1 1/2
#   b: predicted twice (d2, d3), TP 1, gold 2 (d3, d4 INVALID) -> P 1/2, R 1/2, F1 1/2
#   c: predicted once (d5), TP 1, gold 2 -> P 1, R 1/2, F1 2/3
#   macro F1 = (1/2 + 1/2 + 2/3) / 3 = 5/9
#   kappa, categories a,b,c,INVALID: po = 1/2;
#     gold marginals 2,2,2,0; pred marginals 2,2,1,1 -> pe = (4+4+2+0)/36 = 5/18
#     kappa = (1/2 - 5/18) / (1 - 5/18) = (4/18) / (13/18) = 4/13
SINGLE = codebook("single", ["a", "b", "c"])
S_GOLD = ["a", "a", "b", "b", "c", "c"]
S_PRED = ["a", "b", "b", None, "c", "a"]


def test_single_hand_computed():
    r = evaluate(SINGLE, S_GOLD, S_PRED, n_boot=200)
    assert r["kind"] == "single" and r["primary"] == "macro_f1"
    assert (r["n"], r["n_valid"], r["n_invalid"]) == (6, 5, 1)
    assert r["valid_rate"] == pytest.approx(5 / 6)
    assert r["accuracy"] == pytest.approx(0.5)
    assert r["accuracy_valid"] == pytest.approx(0.6)
    assert r["macro_f1"] == pytest.approx(5 / 9)
    pc = r["per_class"]
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert r["confusion"] == {
        "rows": ["a", "b", "c"],
        "columns": ["a", "b", "c", INVALID],
        "matrix": [
            [1, 1, 0, 0],
            [0, 1, 0, 1],
            [1, 0, 1, 0],
        ],
    }
    assert r["kappa"] == pytest.approx(4 / 13)
    assert_plain_json(r)


def test_single_unused_label_lowers_macro_f1():
    # label d never occurs in gold or predictions: F1 0 (zero_division=0) -> macro = (5/3) / 4
    cb = codebook("single", ["a", "b", "c", "d"])
    r = evaluate(cb, S_GOLD, S_PRED, n_boot=0)
    assert r["macro_f1"] == pytest.approx(5 / 12)
    assert r["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["accuracy_ci"] is None and r["macro_f1_ci"] is None


def test_single_all_invalid():
    r = evaluate(SINGLE, ["a", "b"], [None, None], n_boot=20)
    assert r["n_valid"] == 0 and r["valid_rate"] == 0.0
    assert r["accuracy_valid"] is None
    assert r["accuracy"] == 0.0 and r["macro_f1"] == 0.0
    assert r["confusion"]["matrix"] == [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert r["accuracy_ci"] == [0.0, 0.0]
    assert_plain_json(r)


# --------------------------------------------------------------------------- multi
# 4 documents, labels x/y/z, doc 3 INVALID:
#   d1 G {x,y}  P {x}    TP x, FN y      jaccard 1/2  exact no   hit yes  wrong cells 1
#   d2 G {y}    P {y,z}  TP y, FP z      jaccard 1/2  exact no   hit yes  wrong cells 1
#   d3 G {x,z}  INVALID  FN x, FN z      jaccard 0    exact no   hit no   wrong cells 3 (all)
#   d4 G {z}    P {z}    TP z            jaccard 1    exact yes  hit yes  wrong cells 0
#   micro: TP 3, FP 1, FN 3 -> F1 = 6 / (6 + 1 + 3) = 0.6
#   x: TP1 FP0 FN1 -> P 1, R 1/2, F1 2/3;  y: same;  z: TP1 FP1 FN1 -> P 1/2, R 1/2, F1 1/2
#   macro = (2/3 + 2/3 + 1/2) / 3 = 11/18
#   jaccard = (1/2 + 1/2 + 0 + 1) / 4 = 1/2;  hamming = 5 / 12;  exact 1/4 (valid-only 1/3);  at least one 3/4
MULTI = codebook("multi", ["x", "y", "z"], max_labels=2)
M_GOLD = [("x", "y"), ("y",), ("x", "z"), ("z",)]
M_PRED = [("x",), ("y", "z"), None, ("z",)]


def test_multi_hand_computed():
    r = evaluate(MULTI, M_GOLD, M_PRED, n_boot=200)
    assert r["kind"] == "multi" and r["primary"] == "micro_f1"
    assert (r["n"], r["n_valid"]) == (4, 3)
    assert r["micro_f1"] == pytest.approx(0.6)
    assert r["macro_f1"] == pytest.approx(11 / 18)
    assert r["jaccard"] == pytest.approx(0.5)
    assert r["hamming_loss"] == pytest.approx(5 / 12)
    assert r["exact_match"] == pytest.approx(0.25)
    assert r["accuracy"] == pytest.approx(0.25)
    assert r["accuracy_valid"] == pytest.approx(1 / 3)
    assert r["at_least_one"] == pytest.approx(0.75)
    assert r["per_class"]["x"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert r["per_class"]["y"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert r["per_class"]["z"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert len(r["micro_f1_ci"]) == 2 and len(r["macro_f1_ci"]) == 2
    assert_plain_json(r)


def test_multi_accepts_lists_and_sets_and_ignores_order():
    r1 = evaluate(MULTI, M_GOLD, M_PRED, n_boot=0)
    r2 = evaluate(MULTI, [list(g) for g in M_GOLD], [None if p is None else set(reversed(p)) for p in M_PRED], n_boot=0)
    assert r1 == r2


# --------------------------------------------------------------------------- dimensions
# dimensions A/B/C, scale low/high, 4 documents, doc 3 INVALID:
#   d1 G {A:high, B:low}  P {A:high, B:high}  presence TP 2;      pairs: (A,high) ok, (B,high) wrong
#                                             cells right 3/3;    jaccard 1;   exact no
#   d2 G {C:low}          P {C:low, A:low}    presence TP 1 FP 1; pairs: (C,low) ok, (A,low) wrong
#                                             cells right 2/3;    jaccard 1/2; exact no
#   d3 G {A:low}          INVALID             presence FN 1;      cells right 0/3 (all wrong); jaccard 0
#   d4 G {}               P {}                nothing;            cells right 3/3; jaccard 1 (both empty); exact yes
#   presence micro: TP 3 FP 1 FN 1 -> P 3/4, R 3/4, F1 = 6/8 = 0.75
#   intensity: 2 correct of 4 predicted pairs, 4 gold pairs -> P 1/2, R 1/2, F1 1/2
#   accD = (3 + 2 + 0 + 3) / 12 = 2/3  (as an empty prediction d3 would have scored 2 -> 10/12)
#   accD on valid docs = 8/9;  jaccard = (1 + 1/2 + 0 + 1) / 4 = 5/8;  exact 1/4
#   per dimension: A gold {d1,d3} pred {d1,d2} -> TP1 FP1 FN1 -> F1 1/2 (support 2); B, C -> F1 1 (support 1)
#   macro presence F1 = (1/2 + 1 + 1) / 3 = 5/6
DIMS = codebook("dimensions", ["A", "B", "C"], scale=["low", "high"])
D_GOLD = [{"A": "high", "B": "low"}, {"C": "low"}, {"A": "low"}, {}]
D_PRED = [{"A": "high", "B": "high"}, {"C": "low", "A": "low"}, None, {}]


def test_dimensions_hand_computed():
    r = evaluate(DIMS, D_GOLD, D_PRED, n_boot=200)
    assert r["kind"] == "dimensions" and r["primary"] == "intensity_micro_f1"
    assert (r["n"], r["n_valid"]) == (4, 3)
    assert r["presence_micro_f1"] == pytest.approx(0.75)
    assert r["presence_precision"] == pytest.approx(0.75)
    assert r["presence_recall"] == pytest.approx(0.75)
    assert r["intensity_micro_f1"] == pytest.approx(0.5)
    assert r["intensity_precision"] == pytest.approx(0.5)
    assert r["intensity_recall"] == pytest.approx(0.5)
    assert r["accD"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["accuracy_valid"] == pytest.approx(8 / 9)
    assert r["jaccard"] == pytest.approx(5 / 8)
    assert r["exact_match"] == pytest.approx(0.25)
    assert r["macro_f1"] == pytest.approx(5 / 6)
    assert r["per_dimension"]["A"]["presence_f1"] == pytest.approx(0.5)
    assert r["per_dimension"]["A"]["support"] == 2
    assert r["per_dimension"]["B"]["presence_f1"] == pytest.approx(1.0)
    assert r["per_dimension"]["C"]["support"] == 1
    assert len(r["presence_micro_f1_ci"]) == 2 and len(r["intensity_micro_f1_ci"]) == 2
    # the seed paper's accI: cells whose intensity (absent included) is right = (2 + 2 + 0 + 3) / 12
    assert r["accI"] == pytest.approx(7 / 12)
    # per-dimension intensity F1: A 1 of 2 predicted pairs right, 2 gold -> 1/2; B 0; C 1
    assert [r["per_dimension"][d]["intensity_f1"] for d in "ABC"] == pytest.approx([0.5, 0.0, 1.0])
    # predicting nothing scores accD 8/12 here: this system's 2/3 is no better, and the result says so
    assert r["accD_predict_nothing"] == pytest.approx(2 / 3)
    assert any("predicting no dimension" in w for w in r["warnings"])
    assert_plain_json(r)


def test_dimensions_invalid_is_not_an_empty_prediction():
    # gold empty: predicting {} is right everywhere, INVALID is wrong everywhere
    r = evaluate(DIMS, [{}, {}], [{}, None], n_boot=0)
    assert r["accD"] == pytest.approx(0.5)
    assert r["accuracy_valid"] == pytest.approx(1.0)
    assert r["jaccard"] == pytest.approx(0.5)
    assert r["exact_match"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_resamples_documents_with_default_rng():
    values = np.array([0, 1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=float)
    lo, hi = bootstrap_ci(lambda idx: values[idx].mean(), len(values), n_boot=300, seed=7, ci=0.9)
    idx = np.random.default_rng(7).integers(0, len(values), size=(300, len(values)))
    expected = np.percentile(values[idx].mean(axis=1), [5, 95])
    assert [lo, hi] == pytest.approx(expected.tolist())
    assert type(lo) is float


def test_bootstrap_ci_rejects_bad_arguments():
    with pytest.raises(ValueError):
        bootstrap_ci(lambda idx: 0.0, 5, n_boot=0, seed=0, ci=0.95)
    with pytest.raises(ValueError):
        bootstrap_ci(lambda idx: 0.0, 5, n_boot=10, seed=0, ci=95)
    with pytest.raises(ValueError):
        bootstrap_ci(lambda idx: 0.0, 0, n_boot=10, seed=0, ci=0.95)


@pytest.mark.parametrize(
    "cb, gold, pred, keys",
    [
        (SINGLE, S_GOLD * 20, S_PRED * 20, ["accuracy", "macro_f1"]),
        (MULTI, M_GOLD * 20, M_PRED * 20, ["micro_f1", "macro_f1"]),
        (DIMS, D_GOLD * 20, D_PRED * 20, ["presence_micro_f1", "intensity_micro_f1"]),
    ],
    ids=["single", "multi", "dimensions"],
)
def test_ci_deterministic_and_contains_estimate(cb, gold, pred, keys):
    a = evaluate(cb, gold, pred, n_boot=300, seed=3)
    b = evaluate(cb, gold, pred, n_boot=300, seed=3)
    c = evaluate(cb, gold, pred, n_boot=300, seed=4)
    narrow = evaluate(cb, gold, pred, n_boot=300, seed=3, ci=0.5)
    for key in keys:
        lo, hi = a[f"{key}_ci"]
        assert a[f"{key}_ci"] == b[f"{key}_ci"]
        assert a[f"{key}_ci"] != c[f"{key}_ci"]
        assert lo <= a[key] <= hi and lo < hi
        nlo, nhi = narrow[f"{key}_ci"]
        assert lo <= nlo <= nhi <= hi


@pytest.mark.parametrize(
    "cb, gold, keys",
    [
        (SINGLE, S_GOLD, ["accuracy", "macro_f1"]),
        (MULTI, M_GOLD, ["micro_f1", "macro_f1"]),
        (DIMS, D_GOLD[:3], ["presence_micro_f1", "intensity_micro_f1"]),
    ],
    ids=["single", "multi", "dimensions"],
)
def test_all_correct_gives_ci_of_one(cb, gold, keys):
    r = evaluate(cb, gold, list(gold), n_boot=100)
    assert r["accuracy"] == r["accuracy_valid"] == 1.0
    for key in keys:
        assert r[key] == 1.0
        if key != "macro_f1":  # a resample may miss a label entirely: its F1 is 0 by convention
            assert r[f"{key}_ci"] == [1.0, 1.0]


@pytest.mark.parametrize(
    "cb, gold, pred, keys",
    [
        (SINGLE, S_GOLD * 5, S_PRED * 5, ["accuracy", "macro_f1"]),
        (MULTI, M_GOLD * 5, M_PRED * 5, ["micro_f1", "macro_f1"]),
        (DIMS, D_GOLD * 5, D_PRED * 5, ["presence_micro_f1", "intensity_micro_f1"]),
    ],
    ids=["single", "multi", "dimensions"],
)
def test_fast_bootstrap_matches_recomputing_the_metric(cb, gold, pred, keys):
    """The vectorised resampling gives the same interval as re-running evaluate() on every resample."""
    fast = evaluate(cb, gold, pred, n_boot=60, seed=11)
    for key in keys:

        def slow(idx, key=key):
            return evaluate(cb, [gold[i] for i in idx], [pred[i] for i in idx], n_boot=0)[key]

        assert fast[f"{key}_ci"] == pytest.approx(bootstrap_ci(slow, len(gold), n_boot=60, seed=11, ci=0.95))


def test_bootstrap_speed_2000_docs():
    rng = np.random.default_rng(0)
    n = 2000
    labels = [f"l{i}" for i in range(8)]
    dims = [f"d{i}" for i in range(46)]
    scale = ["low", "medium", "high"]
    single = codebook("single", labels)
    multi = codebook("multi", labels)
    dimensions = codebook("dimensions", dims, scale=scale)
    sg = [labels[i] for i in rng.integers(0, 8, n)]
    sp = [None if rng.random() < 0.05 else labels[i] for i in rng.integers(0, 8, n)]
    mg = [tuple({labels[i] for i in rng.integers(0, 8, 3)}) for _ in range(n)]
    mp = [None if rng.random() < 0.05 else tuple({labels[i] for i in rng.integers(0, 8, 2)}) for _ in range(n)]
    dg = [{dims[i]: scale[i % 3] for i in rng.integers(0, 46, 4)} for _ in range(n)]
    dp = [None if rng.random() < 0.05 else {dims[i]: scale[i % 3] for i in rng.integers(0, 46, 4)} for _ in range(n)]
    for cb, g, p in ((single, sg, sp), (multi, mg, mp), (dimensions, dg, dp)):
        t0 = time.perf_counter()
        evaluate(cb, g, p, n_boot=1000)
        assert time.perf_counter() - t0 < 2.0, cb.kind


# --------------------------------------------------------------------------- validation
def test_length_mismatch_and_empty_input():
    with pytest.raises(ValueError, match="same length"):
        evaluate(SINGLE, ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="zero documents"):
        evaluate(SINGLE, [], [])


@pytest.mark.parametrize(
    "cb, gold, pred",
    [
        (SINGLE, ["a"], ["nope"]),  # prediction not canonicalised
        (SINGLE, ["nope"], ["a"]),
        (SINGLE, [None], ["a"]),  # gold is never INVALID
        (SINGLE, ["a"], [INVALID]),  # INVALID is spelled None
        (MULTI, [("x",)], [("w",)]),
        (MULTI, [("x",)], ["x"]),  # a bare string is not a tuple of labels
        (DIMS, [{"A": "low"}], [{"A": "medium"}]),  # not on the scale
        (DIMS, [{"A": "low"}], [{"D": "low"}]),  # unknown dimension
    ],
)
def test_unknown_values_are_rejected(cb, gold, pred):
    with pytest.raises(ValueError):
        evaluate(cb, gold, pred, n_boot=0)


# --------------------------------------------------------------------------- agreement
def test_agreement_hand_computed():
    r = agreement(S_GOLD, S_PRED)  # same table as test_single_hand_computed
    assert r["n"] == 6
    assert r["percent_agreement"] == pytest.approx(0.5)
    assert r["kappa"] == pytest.approx(4 / 13)
    assert (r["n_invalid_a"], r["n_invalid_b"]) == (0, 1)
    assert_plain_json(r)


def test_agreement_edge_cases():
    # two coders: a a b b / a b b a -> po 1/2, marginals 2,2 vs 2,2 -> pe 1/2 -> kappa 0
    assert agreement(["a", "a", "b", "b"], ["a", "b", "b", "a"])["kappa"] == pytest.approx(0.0)
    # both invalid on the same documents agree with each other
    r = agreement([None, "a", "b"], [None, "a", "b"])
    assert r["percent_agreement"] == 1.0 and r["kappa"] == pytest.approx(1.0)
    # a label literally named "INVALID" is not an invalid answer
    assert agreement(["INVALID", "a"], [None, "a"])["percent_agreement"] == 0.5
    # one category only: kappa undefined
    r = agreement(["a", "a"], ["a", "a"])
    assert r["percent_agreement"] == 1.0 and r["kappa"] is None
    with pytest.raises(ValueError):
        agreement(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        agreement([], [])


# --------------------------------------------------------------------------- real data
def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.mark.skipif(not FLOURISHING.is_dir(), reason="shared flourishing data not available")
def test_rethinking_scale_gpt4_numbers():
    tweets = _read_jsonl(FLOURISHING / "tweets.jsonl")
    gpt4 = {row["id"]: row["labels"] for row in _read_jsonl(FLOURISHING / "gpt4_predictions.jsonl")}
    assert len(tweets) == 2404
    assert len(gpt4) == 2286  # the data README says 2,288; the file holds 2,286 distinct ids
    dims = sorted({d for t in tweets for d in t["labels"]})
    assert len(dims) == 46
    scale = ["low", "medium", "high"]
    assert {v for t in tweets for v in t["labels"].values()} == set(scale)
    assert {v for labels in gpt4.values() for v in labels.values()} <= set(scale)
    # GPT-4 spells one dimension differently from the gold standard
    unknown = Counter(d for labels in gpt4.values() for d in labels if d not in dims)
    assert unknown == {"mastery (ability or capability)": 216}
    assert "mastery (ability, capability)" in dims

    cb = codebook("dimensions", dims, scale=scale)
    gold = [t["labels"] for t in tweets]

    def predictions(rename: dict[str, str]) -> list[dict]:
        # a tweet GPT-4 did not label predicts nothing; dimensions outside the codebook are dropped
        out = []
        for t in tweets:
            labels = {rename.get(d, d): v for d, v in gpt4.get(t["id"], {}).items()}
            out.append({d: v for d, v in labels.items() if d in cb.label_names})
        return out

    # the published figures: the misspelt dimension does not match anything
    r = evaluate(cb, gold, predictions({}), n_boot=50)
    assert r["n"] == r["n_valid"] == 2404
    assert round(r["presence_micro_f1"], 3) == 0.555
    assert round(r["intensity_micro_f1"], 3) == 0.530
    assert round(r["accD"], 3) == 0.940
    lo, hi = r["intensity_micro_f1_ci"]
    assert lo < r["intensity_micro_f1"] < hi

    # matching the variant spelling to its dimension credits GPT-4 with 216 more answers
    fixed = evaluate(cb, gold, predictions({"mastery (ability or capability)": "mastery (ability, capability)"}), n_boot=0)
    assert round(fixed["presence_micro_f1"], 3) == 0.566
    assert round(fixed["intensity_micro_f1"], 3) == 0.541
    assert round(fixed["accD"], 3) == 0.941

    # predicting nothing at all: accD flatters, the F1 scores do not
    nothing = evaluate(cb, gold, [{} for _ in gold], n_boot=0)
    assert round(nothing["accD"], 3) == 0.920
    assert nothing["presence_micro_f1"] == 0.0 and nothing["intensity_micro_f1"] == 0.0


# --------------------------------------------------------------------------- warnings
def test_a_collapse_to_one_answer_is_a_warning_for_every_kind():
    gold = ["a", "b", "c"] * 8
    r = evaluate(SINGLE, gold, ["b"] * 23 + ["c"], n_boot=0)
    assert len(r["warnings"]) == 1 and r["warnings"][0].startswith("collapse: the same answer (b) for 96%")
    assert evaluate(SINGLE, gold, gold, n_boot=0)["warnings"] == []
    # a test set of one label is not a collapse when the system predicts it
    assert evaluate(SINGLE, ["b"] * 24, ["b"] * 24, n_boot=0)["warnings"] == []
    multi = evaluate(MULTI, [(g,) for g in ["x", "y", "z"] * 8], [("y",)] * 24, n_boot=0)
    assert any(w.startswith("collapse") for w in multi["warnings"])
    dims = evaluate(DIMS, [{"A": "low"}, {"B": "high"}, {}] * 8, [{}] * 24, n_boot=0)
    assert any(w.startswith("collapse") for w in dims["warnings"])


def test_kappa_near_zero_is_a_warning():
    gold = ["a", "b"] * 12
    pred = ["a", "a", "b", "b"] * 6  # right half of the time: chance agreement
    r = evaluate(SINGLE, gold, pred, n_boot=0)
    assert abs(r["kappa"]) < 0.05 and any(w.startswith("κ = 0.00") for w in r["warnings"])
