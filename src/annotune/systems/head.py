"""`type = "head"`: LoRA + a classification head trained end to end on a local model (decoder or encoder).

One forward pass per document, no generation: the model's pooled hidden states go through one softmax per
constrained question of the task kind (labels for `single`, yes/no per label for `multi`, absent + scale per
dimension for `dimensions`). A stratified dev part of the training documents picks the best epoch and tunes
the decision threshold; the test documents are labelled only by the finished run folder
(`annotune.finetune.head`). The run folder is named by a fingerprint of model, settings, training documents,
codebook and seed, so a rerun (or another system with the same settings) loads it instead of training, and
an interrupted training resumes from its checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from annotune.backends.base import Prediction, RunStats
from annotune.config import DEFAULT_MODEL, Dtype, resolve_model_path, resolve_path
from annotune.systems.base import System, SystemConfig, readable_model, register_system, trained_on
from annotune.systems.local import model_source_identity


class HeadConfig(SystemConfig):
    type: Literal["head"] = "head"
    model: str = Field(DEFAULT_MODEL, min_length=1, description="Base model: smollm2 (embedded), a HF folder or hub "
                                                                "id (decoder or encoder) or a .gguf file (default: "
                                                                "[model].name).")
    pooling: Literal["mean", "last"] = Field("mean", description="Pool the last hidden states: mean over tokens, "
                                                                 "or the last token.")
    layer: int = Field(-1, description="Hidden layer to pool (-1: the last; a middle layer of a decoder can "
                                       "classify better: Gemma 3 270M's 14 of 18 on BBC).")
    max_text_tokens: int = Field(256, ge=8, description="Document tokens the model sees (longer texts are cut; "
                                                         "default: [model].max_text_tokens where the config sets "
                                                         "it, else 256).")
    epochs: float = Field(2.0, gt=0, description="Passes over the training documents; the best epoch on the dev "
                                                 "part is kept.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (LoRA and head).")
    batch_size: int = Field(8, ge=1, description="Documents per step (and twice this per labelling batch).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Fraction of steps with a linear warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int | float = Field(32, gt=0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | str = Field("all-linear", description="Modules that get LoRA adapters.")
    dev_size: float = Field(0.15, gt=0, lt=1, description="Fraction of the training documents held out (stratified) "
                                                          "to pick the best epoch and tune the decision threshold.")
    max_dev: int = Field(200, ge=0, description="At most this many dev documents (0: no dev part; the last epoch "
                                                "is kept and nothing is tuned).")
    dtype: Dtype = Field("auto", description="auto: bf16 autocast where the CPU/GPU supports it; fp32: none.")
    seed: int | None = Field(None, description="Training seed: the dev part, the head's initialisation, the order "
                                               "of documents (default: the config's seed; the test split and the "
                                               "training documents stay the config's).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many steps (resume point).")
    run: str | None = Field(None, min_length=1, description="Run folder (default: under <output>/head/, named by a "
                                                            "fingerprint); a finished one is used as it is.")

    inherited = ("model", "max_text_tokens")

    def resolve_paths(self, base: Path) -> None:
        self.model = resolve_model_path(self.model, base)
        if self.run:
            self.run = str(resolve_path(self.run, base))


@register_system
class HeadSystem(System):
    type = "head"
    config_class = HeadConfig
    trains = True

    @classmethod
    def describe(cls, record: dict) -> str:
        spec = record.get("spec", {})
        return (f"{readable_model(spec)} with LoRA and a classification head on its {spec.get('pooling', 'mean')}"
                f"-pooled hidden states, trained end to end for up to {spec.get('epochs', 2):g} epochs on "
                f"{trained_on(record)} (best epoch and decision threshold chosen on a held-out part of them) "
                f"(“{record['name']}”)")

    def preflight(self, index: int) -> dict:
        return model_source_identity(self, index)

    def dev_split(self, train):
        """(fit, dev): a stratified dev part of the training documents (None when there is none)."""
        cfg = self.config
        n_dev = min(cfg.max_dev, int(round(len(train) * cfg.dev_size)))
        if n_dev < 2 or len(train) - n_dev < 2:
            return train, None
        return train.split(test_size=n_dev, seed=self.training_seed)

    @property
    def training_seed(self) -> int:
        return self.context.seed if self.config.seed is None else self.config.seed

    def run_folder(self, train) -> Path:
        from annotune.experiments.fingerprints import fingerprint, slug

        cfg, ctx = self.config, self.context
        if cfg.run:
            return Path(cfg.run)
        settings = {k: v for k, v in cfg.settings().items() if k not in ("name", "run", "train_size")
                    and not (k == "seed" and v is None)}  # runs from before the option keep their folders
        fp = fingerprint(settings, ctx.seed, [d.id for d in train.docs], ctx.codebook.to_dict())
        return ctx.output / "head" / f"{slug(str(self.train_size or 'all'))}-{fp}"

    def train(self, train) -> Path:
        """Train unless the run folder is finished; returns it."""
        from annotune.finetune.head import HeadTrainer, is_head_run
        from annotune.finetune.trainer import check_training_data

        cfg, ctx = self.config, self.context
        folder = self.run_folder(train)
        if is_head_run(folder):
            return folder
        check_training_data(train.docs, ctx.codebook)
        fit, dev = self.dev_split(train)
        folder.mkdir(parents=True, exist_ok=True)
        ctx.log(f"{self.name}: training LoRA + a classification head on {cfg.model} with {len(fit)} documents "
                f"(dev: {len(dev) if dev else 0}), {cfg.epochs:g} epochs → {folder}")
        HeadTrainer(ctx.codebook, cfg, seed=self.training_seed, progress=ctx.progress, log=ctx.log).train(
            cfg.model, fit, dev, folder)
        return folder

    def _label(self, classifier, test) -> list[Prediction]:
        from annotune.finetune.thresholds import decide

        ctx = self.context
        preds = []
        for doc, option_probs in zip(test.docs, classifier.option_probs(test.texts, self.config.batch_size * 2)):
            label, confidence, label_probs = decide(ctx.codebook, option_probs, classifier.scale)
            preds.append(Prediction(doc.id, ctx.codebook.task.answer_text(label), label, confidence, label_probs))
        return preds

    def predictor(self, train):
        from annotune.finetune.head import HeadClassifier

        classifier = HeadClassifier(self.train(train))  # loaded once for every batch
        return lambda test: self._label(classifier, test)

    def run(self, train, test):
        from annotune.finetune.head import HeadClassifier

        folder = self.train(train)
        classifier = HeadClassifier(folder)
        started = time.perf_counter()
        preds = self._label(classifier, test)
        stats = RunStats(docs=len(test), seconds=time.perf_counter() - started)
        training = classifier.manifest["training"]
        stats.extra.update({"run": str(folder), "train_examples": len(train), "train_seconds": training["seconds"],
                            "train_tokens_per_s": training["tokens_per_s"], "best": training["best"],
                            "dev_history": training["history"], "decision_scale": classifier.scale})
        return preds, stats


__all__ = ["HeadConfig", "HeadSystem"]
