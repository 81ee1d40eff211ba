"""`type = "setfit"`: contrastive fine-tuning of a sentence encoder plus a logistic-regression head, with
the `setfit` library (Tunstall et al. 2022).

Sized for a CPU: texts are cut to ``max_text_tokens`` and training stops after ``max_steps`` pair batches
(the default trains 400 documents in a few minutes on 2 cores). Pairs are positive when two documents have
the same label (for multi-label and dimension tasks: the same answer to every question). The fine-tuned
encoder is saved to a run folder under ``<output>/setfit/``, named by a fingerprint of encoder, settings,
training documents and codebook: a rerun loads it back and predicts identically. The head is the
`embedding` system's: a logistic regression per question of the task kind (C by cross-validation) on the
fine-tuned embeddings, so every task kind is handled and every label gets a probability.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from annotune.backends.base import RunStats
from annotune.config import resolve_model_path, resolve_path
from annotune.errors import AnnotuneError, ConfigError
from annotune.systems.base import System, SystemConfig, readable_model, register_system, trained_on

MANIFEST = "annotune-setfit.json"
MINILM_BYTES = 90_868_376  # all-MiniLM-L6-v2's model.safetensors
SECONDS_PER_STEP_MINILM = 2.7  # bench/encoders.py, 2026-12-02: 100 steps in 266 s


class SetfitConfig(SystemConfig):
    type: Literal["setfit"] = "setfit"
    model: str = Field("minilm", min_length=1, description="Sentence encoder: minilm (embedded), or a "
                                                           "sentence-transformers / BERT-like folder or hub id.")
    max_text_tokens: int = Field(128, ge=8, description="Document tokens the encoder sees.")
    max_steps: int = Field(100, ge=1, description="Contrastive training steps (pair batches): the time budget.")
    batch_size: int = Field(16, ge=2, description="Pairs per step.")
    learning_rate: float = Field(2e-5, gt=0, description="Learning rate of the encoder.")
    run: str | None = Field(None, min_length=1, description="Run folder (default: under <output>/setfit/, named "
                                                            "by a fingerprint).")

    def resolve_paths(self, base: Path) -> None:
        self.model = resolve_model_path(self.model, base)
        if self.run:
            self.run = str(resolve_path(self.run, base))


def _progress(enabled: bool):
    """A step bar with ETA (library progress bars are silenced in annotune's output)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kw):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc="setfit", unit="step", disable=not enabled)

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kw):
            self.bar.close()

    return Progress()


def _is_decoder(path: str) -> bool:
    config = Path(path) / "config.json"
    if not config.exists():
        return False
    data = json.loads(config.read_text(encoding="utf-8"))
    return any(a.endswith("ForCausalLM") for a in data.get("architectures") or [])


@register_system
class SetfitSystem(System):
    type = "setfit"
    config_class = SetfitConfig
    trains = True

    @classmethod
    def describe(cls, record: dict) -> str:
        spec = record.get("spec", {})
        return (f"SetFit on {readable_model({'model': spec.get('model', 'minilm')})} ({spec.get('max_steps', 100)} "
                f"contrastive steps of {spec.get('batch_size', 16)} pairs, then a logistic regression) trained on "
                f"{trained_on(record)} (“{record['name']}”)")

    def preflight(self, index: int) -> dict:
        from annotune.backends.models import encoder_path, resolve_model as resolve
        from annotune.experiments.fingerprints import model_identity

        cfg = self.config
        try:
            import setfit  # noqa: F401
        except ImportError:
            raise self.fail("the setfit library is not installed: pip install setfit", "type", index) from None
        try:
            path = encoder_path(cfg.model)
        except AnnotuneError as exc:
            raise self.fail(exc.format(), "model", index) from None
        if _is_decoder(path):
            raise self.fail(f"setfit needs an encoder (sentence-transformers, BERT-like), not the decoder "
                            f"{cfg.model!r}; use type = \"embedding\" or \"finetuned\" for decoders", "model", index)
        return model_identity(resolve(path))

    def run_folder(self, train) -> Path:
        from annotune.experiments.fingerprints import fingerprint, slug

        cfg, ctx = self.config, self.context
        if cfg.run:
            return Path(cfg.run)
        fp = fingerprint(cfg.model, cfg.max_text_tokens, cfg.max_steps, cfg.batch_size, cfg.learning_rate,
                         ctx.seed, [d.id for d in train.docs], ctx.codebook.to_dict())
        return ctx.output / "setfit" / f"{slug(str(self.train_size or 'all'))}-{fp}"

    def estimate_seconds(self, path: str) -> float:
        """Rough training time on a 2-core CPU, from the encoder's size and the step budget (measured:
        all-MiniLM-L6-v2, 100 steps of 16 pairs at 128 tokens, 2.7 s a step)."""
        weights = sum(p.stat().st_size for p in Path(path).glob("*.safetensors")) or MINILM_BYTES
        tokens = self.config.batch_size * 2 * self.config.max_text_tokens
        return self.config.max_steps * SECONDS_PER_STEP_MINILM * (weights / MINILM_BYTES) * tokens / (16 * 2 * 128)

    def _pair_labels(self, docs) -> list[str]:
        """One class per distinct answer to all the task's questions (pairs are positive within a class)."""
        task = self.context.codebook.task
        return [" | ".join(task.option_targets(d.label)) for d in docs]

    def train(self, train) -> Path:
        """Fine-tune unless the run folder holds a finished model; returns the folder."""
        from datasets import Dataset as HFDataset
        from setfit import SetFitModel, Trainer, TrainingArguments
        from setfit import logging as setfit_logging

        from annotune.backends.models import encoder_path

        cfg, ctx = self.config, self.context
        folder = self.run_folder(train)
        if (folder / MANIFEST).exists():
            return folder
        setfit_logging.set_verbosity_error()  # annotune says what happens; the progress bar shows the ETA
        encoder = encoder_path(cfg.model)
        model = SetFitModel.from_pretrained(encoder)
        model.model_body.max_seq_length = cfg.max_text_tokens
        data = HFDataset.from_dict({"text": [d.text for d in train.docs], "label": self._pair_labels(train.docs)})
        scratch = Path(tempfile.mkdtemp(prefix="annotune-setfit-"))  # the library's own checkpoints: not kept
        args = TrainingArguments(output_dir=str(scratch), save_strategy="no", batch_size=cfg.batch_size,
                                 num_epochs=1, max_steps=cfg.max_steps, body_learning_rate=cfg.learning_rate,
                                 seed=ctx.seed, report_to="none", show_progress_bar=ctx.progress,
                                 logging_strategy="no")
        ctx.log(f"{self.name}: contrastive fine-tuning of {cfg.model} on {len(train)} documents, {cfg.max_steps} "
                f"steps of {cfg.batch_size} pairs (about {self.estimate_seconds(encoder) / 60:.0f} "
                f"min on a 2-core CPU) → {folder}")
        started = time.time()
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[_progress(ctx.progress)])
        # only the encoder: the head is annotune's per-question regression, fitted at labelling time
        try:
            trainer.train_embeddings(*trainer.dataset_to_parameters(data), args=args)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        seconds = time.time() - started
        model.save_pretrained(str(folder))
        (folder / MANIFEST).write_text(json.dumps({"train_docs": len(train), "train_seconds": round(seconds, 2),
                                                   "settings": cfg.settings(), "seed": ctx.seed}, indent=2))
        return folder

    def run(self, train, test):
        from setfit import SetFitModel

        from annotune.systems.embedding import EmbeddingConfig, logistic_regression
        from annotune.systems.questions import fit_questions, predict_questions

        ctx = self.context
        folds = EmbeddingConfig.model_fields["cv_folds"].default  # the embedding system's head
        folder = self.train(train)
        manifest = json.loads((folder / MANIFEST).read_text())
        model = SetFitModel.from_pretrained(str(folder))
        model.model_body.max_seq_length = self.config.max_text_tokens
        started = time.perf_counter()

        def encode(docs):
            return np.asarray(model.encode([d.text for d in docs], show_progress_bar=False), dtype=np.float32)

        fitted = fit_questions(ctx.codebook, encode(train.docs), [d.label for d in train.docs],
                               logistic_regression(None, folds, ctx.seed))
        head_seconds = time.perf_counter() - started  # encoding the training documents + the regressions
        preds = predict_questions(ctx.codebook, fitted, encode(test.docs), test.ids)
        stats = RunStats(docs=len(test), seconds=time.perf_counter() - started)
        stats.extra.update({"run": str(folder), "train_seconds": round(manifest["train_seconds"] + head_seconds, 3),
                            "contrastive_seconds": manifest["train_seconds"]})
        return preds, stats


__all__ = ["SetfitConfig", "SetfitSystem", "ConfigError"]
