"""The classical baseline every LLM system must beat: TF-IDF features + logistic regression.

It trains in seconds on the same training split, so a comparison table without it flatters LLMs.
One classifier per constrained question of the task kind (``TaskKind.option_targets``): for single-label
tasks one over the labels; multi-label tasks one-vs-rest (yes/no per label); dimension tasks one per
dimension over ``none`` + the scale values. Labels are decided as in `constrained` mode.
"""

from __future__ import annotations

import time
from typing import Callable, Literal

from pydantic import Field

from annotune.backends.base import Prediction, RunStats
from annotune.codebook import Codebook
from annotune.systems.base import System, SystemConfig, register_system, trained_on
from annotune.data.dataset import Doc


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

    def fit(self, train: list[Doc]) -> Callable[[list[Doc]], list[Prediction]]:
        """Fit on ``train`` once; returns a function labelling any documents."""
        from annotune.systems.questions import fit_questions, predict_questions

        vec = self._vectorizer()
        fitted = fit_questions(self.codebook, vec.fit_transform([d.text for d in train]), [d.label for d in train],
                               self._classifier)
        return lambda docs: predict_questions(self.codebook, fitted, vec.transform([d.text for d in docs]),
                                              [d.id for d in docs]) if docs else []

    def fit_predict(self, train: list[Doc], test: list[Doc]) -> tuple[list[Prediction], RunStats]:
        """Fit on ``train`` and label ``test``; the stats time both, and the fit alone (``train_seconds``)."""
        started = time.perf_counter()
        if not test:
            return [], RunStats(docs=0, seconds=0.0)
        label = self.fit(train)
        fitted = time.perf_counter()
        preds = label(test)
        stats = RunStats(docs=len(test), seconds=time.perf_counter() - started)
        stats.extra["train_seconds"] = round(fitted - started, 3)
        return preds, stats


class TfidfConfig(SystemConfig):
    type: Literal["tfidf"] = "tfidf"
    C: float = Field(10.0, gt=0, description="Inverse regularisation strength of the logistic regression.")


@register_system
class TfidfSystem(System):
    """TF-IDF + logistic regression trained on the training split."""

    type = "tfidf"
    config_class = TfidfConfig
    trains = True

    @classmethod
    def describe(cls, record: dict) -> str:
        C = record.get("spec", {}).get("C", 10.0)
        return f"a TF-IDF + logistic-regression baseline (C = {C}) trained on {trained_on(record)}"

    def run(self, train, test):
        ctx = self.context
        return TfidfBaseline(ctx.codebook, seed=ctx.seed, C=self.config.C).fit_predict(train.docs, test.docs)

    def predictor(self, train):
        ctx = self.context
        label = TfidfBaseline(ctx.codebook, seed=ctx.seed, C=self.config.C).fit(train.docs)
        return lambda test: label(test.docs)
