"""Classifiers on document features, one per constrained question of the task kind.

`TaskKind.option_targets` gives, for a label, the right option of each constrained question: for a
single-label task one question over the labels, for multi-label tasks a yes/no question per label, for
dimension tasks one question per dimension over ``none`` + the scale. A classifier is fitted per question
and its class probabilities are decided exactly as the LLM `constrained` mode decides (``TaskKind.decide``),
so every feature-based system (TF-IDF, embeddings) answers every task kind the same way.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from annotune.backends.base import Prediction
from annotune.codebook import Codebook


def fit_questions(codebook: Codebook, x_train: Any, train_labels: list,
                  make_classifier: Callable[[], Any]) -> list[tuple[list, Any]]:
    """One fitted classifier per question of the task kind: ``(classes, classifier)``, or ``(classes, None)``
    for a question whose training answer never varies (predicted with certainty)."""
    task = codebook.task
    targets = [task.option_targets(label) for label in train_labels]
    fitted = []
    for q in range(len(task.constrained_questions())):
        y = [t[q] for t in targets]
        if len(set(y)) == 1:
            fitted.append(([y[0]], None))
            continue
        clf = make_classifier().fit(x_train, y)
        fitted.append((list(clf.classes_), clf))
    return fitted


def predict_questions(codebook: Codebook, fitted: list[tuple[list, Any]], x_test: Any,
                      test_ids: list[str]) -> list[Prediction]:
    """Decide a label for each row of ``x_test`` from the classifiers of `fit_questions`."""
    task = codebook.task
    columns = [(classes, np.ones((len(test_ids), 1)) if clf is None else clf.predict_proba(x_test))
               for classes, clf in fitted]
    preds = []
    for i, doc_id in enumerate(test_ids):
        option_probs = [np.array([p[i][classes.index(v)] if v in classes else 0.0 for v in q.options])
                        for q, (classes, p) in zip(task.constrained_questions(), columns)]
        label, conf, probs = task.decide(option_probs)
        preds.append(Prediction(doc_id, task.answer_text(label), label, conf, probs))
    return preds


def fit_predict_questions(codebook: Codebook, x_train: Any, train_labels: list, x_test: Any, test_ids: list[str],
                          make_classifier: Callable[[], Any]) -> list[Prediction]:
    """Fit one classifier per question on ``x_train`` and decide a label for each row of ``x_test``."""
    return predict_questions(codebook, fit_questions(codebook, x_train, train_labels, make_classifier), x_test,
                             test_ids)


__all__ = ["fit_predict_questions", "fit_questions", "predict_questions"]
