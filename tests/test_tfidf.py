"""`annotune.systems.tfidf`: the TF-IDF + logistic regression baseline on small real data for each task kind
(valid labels, probabilities that add up per question, the right answer on separable data, determinism for a
seed, classes missing from training) and the registered `tfidf` system that wraps it."""

from __future__ import annotations

import random

import numpy as np
import pytest

from annotune.backends.base import Prediction, RunStats
from annotune.data.dataset import Dataset, Doc
from annotune.systems.base import RunContext, get_system_class
from annotune.systems.tfidf import TfidfBaseline, TfidfConfig, TfidfSystem

from conftest import TOPIC_WORDS, make_codebook

# words that every label's documents use (TOPIC_WORDS are each label's own)
FILLER = ["today", "the", "report", "said", "that", "people", "were", "talking", "about", "it", "again"]


def _text(rng: random.Random, words: list[str]) -> str:
    picked = rng.sample(words, k=min(3, len(words))) + rng.sample(FILLER, k=4)
    rng.shuffle(picked)
    return " ".join(picked)


def single_docs(labels, n_per: int, seed: int, prefix: str) -> list[Doc]:
    rng = random.Random(seed)
    return [Doc(f"{prefix}-{lab}-{i}", _text(rng, TOPIC_WORDS[lab].split()), lab)
            for i in range(n_per) for lab in labels]


def multi_docs(label_sets, n_per: int, seed: int, prefix: str) -> list[Doc]:
    rng = random.Random(seed)
    docs = []
    for i in range(n_per):
        for j, labels in enumerate(label_sets):
            words = [w for lab in labels for w in TOPIC_WORDS[lab].split()]
            docs.append(Doc(f"{prefix}-{j}-{i}", _text(rng, words) + " " + _text(rng, words), tuple(labels)))
    return docs


def dimension_docs(labels: list[dict], n_per: int, seed: int, prefix: str) -> list[Doc]:
    """A dimension at a value is written as one token per (dimension, value), e.g. ``happiness_high``."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_per):
        for j, label in enumerate(labels):
            words = [f"{dim.split()[0]}_{value}" for dim, value in label.items()] + rng.sample(FILLER, k=2)
            rng.shuffle(words)
            docs.append(Doc(f"{prefix}-{j}-{i}", " ".join(words), dict(label)))
    return docs


def check_predictions(cb, test: list[Doc], preds: list[Prediction], stats: RunStats) -> None:
    """Every prediction is a valid label of ``cb`` with JSON-able probabilities that add up per question."""
    task = cb.task
    assert [p.id for p in preds] == [d.id for d in test]
    assert stats.docs == len(test) and stats.seconds > 0
    for p in preds:
        assert p.error is None and p.label is not None
        assert task.parse(p.raw).label == p.label  # the raw answer is the canonical text of the label
        assert 0 < p.confidence <= 1 + 1e-9
        if cb.kind == "single":
            assert p.label in cb.label_names
            assert list(p.probs) == cb.label_names
            assert sum(p.probs.values()) == pytest.approx(1.0)
            assert p.probs[p.label] == pytest.approx(p.confidence) == pytest.approx(max(p.probs.values()))
        elif cb.kind == "multi":
            assert 1 <= len(p.label) <= cb.max_labels and set(p.label) <= set(cb.label_names)
            assert list(p.probs) == cb.label_names  # P(yes) of each label's question
            assert all(0.0 <= v <= 1.0 for v in p.probs.values())
        else:
            values = task.constrained_questions()[0].options
            assert set(p.label) <= set(cb.label_names) and set(p.label.values()) <= set(values[1:])
            assert list(p.probs) == cb.label_names
            for name, dist in p.probs.items():
                assert list(dist) == list(values)
                assert sum(dist.values()) == pytest.approx(1.0)
                chosen = p.label.get(name, values[0])
                assert dist[chosen] == pytest.approx(max(dist.values()))
        assert isinstance(p.confidence, float)


# ---------------------------------------------------------------------------- single
def test_single_label_predictions_are_valid_and_right_on_separable_data():
    cb = make_codebook("single")
    labels = cb.label_names
    train, test = single_docs(labels, 8, seed=1, prefix="tr"), single_docs(labels, 3, seed=2, prefix="te")
    preds, stats = TfidfBaseline(cb, seed=0).fit_predict(train, test)
    check_predictions(cb, test, preds, stats)
    accuracy = np.mean([p.label == d.label for p, d in zip(preds, test)])
    assert accuracy >= 0.9


def test_a_class_missing_from_training_gets_probability_zero():
    cb = make_codebook("single")
    seen = ["business", "politics", "sport"]  # no "tech" document to learn from
    train = single_docs(seen, 6, seed=3, prefix="tr")
    test = single_docs(cb.label_names, 2, seed=4, prefix="te")
    preds, stats = TfidfBaseline(cb).fit_predict(train, test)
    check_predictions(cb, test, preds, stats)
    assert all(p.probs["tech"] == 0.0 and p.label in seen for p in preds)
    assert [p.label for p, d in zip(preds, test) if d.label != "tech"] == [d.label for d in test if d.label != "tech"]


def test_one_class_in_training_is_predicted_with_certainty():
    cb = make_codebook("single")
    train = single_docs(["sport"], 5, seed=5, prefix="tr")
    test = single_docs(["business", "sport"], 2, seed=6, prefix="te")
    preds, stats = TfidfBaseline(cb).fit_predict(train, test)
    check_predictions(cb, test, preds, stats)
    assert {p.label for p in preds} == {"sport"}
    assert all(p.confidence == 1.0 and p.probs["business"] == 0.0 for p in preds)


# ---------------------------------------------------------------------------- multi
def test_multi_label_predictions_are_valid_and_right_on_separable_data():
    cb = make_codebook("multi")  # max_labels = 2
    sets = [("business",), ("politics",), ("sport",), ("business", "politics"), ("sport", "tech"), ("tech",)]
    train, test = multi_docs(sets, 6, seed=9, prefix="tr"), multi_docs(sets, 2, seed=10, prefix="te")
    preds, stats = TfidfBaseline(cb).fit_predict(train, test)
    check_predictions(cb, test, preds, stats)
    exact = np.mean([set(p.label) == set(d.label) for p, d in zip(preds, test)])
    assert exact >= 0.75
    for p in preds:  # the chosen labels are those with P(yes) > 0.5 (or the most likely one)
        assert set(p.label) == ({n for n, v in p.probs.items() if v > 0.5}
                                or {max(p.probs, key=p.probs.get)})


def test_multi_label_never_seen_is_never_predicted():
    cb = make_codebook("multi")
    sets = [("business",), ("politics",), ("business", "politics"), ("sport",)]  # never "tech"
    train = multi_docs(sets, 5, seed=11, prefix="tr")
    test = multi_docs([("tech",), ("sport",)], 2, seed=12, prefix="te")
    preds, stats = TfidfBaseline(cb).fit_predict(train, test)
    check_predictions(cb, test, preds, stats)
    assert all(p.probs["tech"] == 0.0 and "tech" not in p.label for p in preds)


# ---------------------------------------------------------------------------- dimensions
DIMENSION_LABELS = [
    {"happiness": "high"},
    {"happiness": "low", "expressing gratitude": "high"},
    {"expressing gratitude": "medium"},
    {"happiness": "high", "expressing gratitude": "low"},
    {},
]


def test_dimension_predictions_are_valid_and_right_on_separable_data():
    cb = make_codebook("dimensions")
    train = dimension_docs(DIMENSION_LABELS, 10, seed=13, prefix="tr")
    test = dimension_docs(DIMENSION_LABELS, 2, seed=14, prefix="te")
    preds, stats = TfidfBaseline(cb).fit_predict(train, test)
    check_predictions(cb, test, preds, stats)
    exact = np.mean([p.label == d.label for p, d in zip(preds, test)])
    assert exact >= 0.8
    # "perceiving discrimination" never occurs in training: always absent, with certainty
    assert all(p.probs["perceiving discrimination"]["none"] == 1.0 for p in preds)
    assert all("perceiving discrimination" not in p.label for p in preds)
    # happiness is never "medium" in training: that value gets probability zero
    assert all(p.probs["happiness"]["medium"] == 0.0 for p in preds)


# ---------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("kind", ["single", "multi", "dimensions"])
def test_same_seed_same_predictions(kind):
    cb = make_codebook(kind)
    if kind == "single":
        train, test = single_docs(cb.label_names, 5, 15, "tr"), single_docs(cb.label_names, 2, 16, "te")
    elif kind == "multi":
        sets = [("business",), ("politics", "tech"), ("sport",)]
        train, test = multi_docs(sets, 5, 15, "tr"), multi_docs(sets, 2, 16, "te")
    else:
        train, test = dimension_docs(DIMENSION_LABELS, 4, 15, "tr"), dimension_docs(DIMENSION_LABELS, 1, 16, "te")
    runs = [TfidfBaseline(cb, seed=3).fit_predict(train, test)[0] for _ in range(2)]
    strip = [[(p.id, p.raw, p.label, p.confidence, p.probs) for p in preds] for preds in runs]
    assert strip[0] == strip[1]


def test_regularisation_changes_confidence():
    cb = make_codebook("single")
    train, test = single_docs(cb.label_names, 5, 17, "tr"), single_docs(cb.label_names, 2, 18, "te")
    strong = TfidfBaseline(cb, C=0.01).fit_predict(train, test)[0]
    weak = TfidfBaseline(cb, C=100.0).fit_predict(train, test)[0]
    assert np.mean([p.confidence for p in strong]) < np.mean([p.confidence for p in weak])


# ---------------------------------------------------------------------------- the registered system
def test_tfidf_system_runs_on_datasets():
    cb = make_codebook("single")
    assert get_system_class("tfidf") is TfidfSystem and TfidfSystem.trains
    train = Dataset(single_docs(cb.label_names, 5, 19, "tr"), cb)
    test = Dataset(single_docs(cb.label_names, 2, 20, "te"), cb)
    system = TfidfSystem(TfidfConfig(name="tf-idf", C=1.0), RunContext(codebook=cb, seed=4, progress=False))
    preds, stats = system.run(train, test)
    check_predictions(cb, test.docs, preds, stats)
    direct, _ = TfidfBaseline(cb, seed=4, C=1.0).fit_predict(train.docs, test.docs)
    assert [(p.label, p.probs) for p in preds] == [(p.label, p.probs) for p in direct]


@pytest.mark.parametrize("value", [0, -1.0])
def test_tfidf_config_rejects_non_positive_C(value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TfidfConfig(name="t", C=value)


def test_an_empty_test_set_gives_no_predictions():
    from annotune.systems.tfidf import TfidfBaseline

    cb = make_codebook("single")
    train = [Doc(f"d{i}", f"{name} words {i}", name) for i, name in enumerate(cb.label_names * 3)]
    preds, stats = TfidfBaseline(cb).fit_predict(train, [])
    assert preds == [] and stats.docs == 0
