"""The classical baseline every LLM system must beat: TF-IDF features + logistic regression.

It trains in seconds on the same training split, so a comparison table without it flatters LLMs.
Multi-label tasks use one-vs-rest; dimension tasks one classifier per dimension over
``none`` + the scale values.
"""

from __future__ import annotations

import time

import numpy as np

from annotune.backends.base import Prediction, RunStats, decide_constrained
from annotune.codebook import Codebook
from annotune.data.dataset import Doc
from annotune.tasks.parsing import answer_text
from annotune.tasks.prompts import absent_value, dimension_values


class TfidfBaseline:
    """TF-IDF (word 1-2 grams) + logistic regression, fitted on the training documents."""

    name = "tfidf-logreg"

    def __init__(self, codebook: Codebook, *, seed: int = 0, max_features: int = 50000, C: float = 10.0):
        self.codebook = codebook
        self.seed = seed
        self.max_features = max_features
        self.C = C

    def _vectorizer(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=self.max_features)

    def _classifier(self):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)

    def fit_predict(self, train: list[Doc], test: list[Doc]) -> tuple[list[Prediction], RunStats]:
        started = time.perf_counter()
        cb = self.codebook
        vec = self._vectorizer()
        x_train = vec.fit_transform([d.text for d in train])
        x_test = vec.transform([d.text for d in test])
        if cb.kind == "single":
            y = [d.label for d in train]
            clf = self._classifier().fit(x_train, y)
            proba = clf.predict_proba(x_test)
            classes = list(clf.classes_)
            preds = []
            for doc, p in zip(test, proba):
                best = int(np.argmax(p))
                probs = {name: float(p[classes.index(name)]) if name in classes else 0.0 for name in cb.label_names}
                preds.append(Prediction(doc.id, classes[best], classes[best], float(p[best]), probs))
        else:
            targets = cb.label_names
            columns = []
            for name in targets:
                if cb.kind == "multi":
                    y = ["yes" if name in d.label else "no" for d in train]
                else:
                    y = [d.label.get(name, absent_value(cb)) for d in train]
                if len(set(y)) == 1:  # a constant column: predict it with certainty
                    columns.append(([y[0]], np.ones((len(test), 1))))
                    continue
                clf = self._classifier().fit(x_train, y)
                columns.append((list(clf.classes_), clf.predict_proba(x_test)))
            preds = [self._decide(doc, i, targets, columns) for i, doc in enumerate(test)]
        stats = RunStats(docs=len(test), seconds=time.perf_counter() - started)
        return preds, stats

    def _decide(self, doc: Doc, i: int, targets: list[str], columns) -> Prediction:
        """Align each target's class probabilities with the constrained answer options and decide
        exactly as the LLM `constrained` mode does."""
        cb = self.codebook
        values = ("yes", "no") if cb.kind == "multi" else dimension_values(cb)
        option_probs = []
        for classes, p in columns:
            option_probs.append(np.array([p[i][classes.index(v)] if v in classes else 0.0 for v in values]))
        label, conf, probs = decide_constrained(cb, option_probs)
        return Prediction(doc.id, answer_text(label, cb), label, conf, probs)
