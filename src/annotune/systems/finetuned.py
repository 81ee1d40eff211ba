"""`type = "finetuned"`: LoRA fine-tuning of a local model on the training split, then labelling.

The run folder is named by a fingerprint of base model, hyper-parameters, training documents and codebook,
so systems that share a training run (e.g. `generate` and `constrained` answering) train once, and an
interrupted training resumes from its checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from annotune.config import resolve_path
from annotune.finetune.config import FineTuneConfig
from annotune.systems.base import Defaults, System, answer_words, readable_model, register_system, trained_on
from annotune.systems.local import LocalModelConfig, model_source_identity


class FinetunedConfig(LocalModelConfig):
    type: Literal["finetuned"] = "finetuned"
    max_text_tokens: int | None = Field(None, ge=1, description="Document tokens kept in the prompt (default: "
                                                                "the fine-tuning max_text_tokens).")
    run: str | None = Field(None, min_length=1, description="Run folder (default: under the output folder, "
                                                            "named by a fingerprint).")
    finetune: FineTuneConfig = Field(default_factory=FineTuneConfig,
                                     description="Hyper-parameters: the config's [finetune], overridden key by key.")

    inherited = ("model", "dtype", "batch_size", "max_new_tokens")

    @classmethod
    def inherit(cls, raw: dict[str, Any], defaults: Defaults) -> dict[str, Any]:
        out = super().inherit(raw, defaults)
        own = out.get("finetune", {})
        if isinstance(own, dict):  # else validation names the wrong type
            # [model] max_text_tokens cuts the documents it trains on too, unless [finetune] says otherwise
            cut = {"max_text_tokens": defaults.model["max_text_tokens"]} if "max_text_tokens" in defaults.model else {}
            out["finetune"] = {"seed": defaults.seed, **cut, **defaults.finetune, **own}
        return out

    @model_validator(mode="after")
    def _text_tokens(self) -> "FinetunedConfig":
        if self.max_text_tokens is None:
            self.max_text_tokens = self.finetune.max_text_tokens
        if self.finetune.objective == "questions" and self.answer != "constrained":
            raise ValueError('finetune.objective = "questions" trains the answers that `constrained` answering '
                             f'scores, not what `{self.answer}` writes: set answer = "constrained"')
        return self

    def resolve_paths(self, base: Path) -> None:
        super().resolve_paths(base)
        if self.run:
            self.run = str(resolve_path(self.run, base))


@register_system
class FinetunedSystem(System):
    """Fine-tunes (once) and labels with the fine-tuned run."""

    type = "finetuned"
    open_answers = True
    config_class = FinetunedConfig
    trains = True

    @classmethod
    def describe(cls, record: dict) -> str:
        spec = record.get("spec", {})
        return (f"{readable_model(spec)} fine-tuned with LoRA on {trained_on(record)}, answering by "
                f"{answer_words(spec)} (“{record['name']}”)")

    def preflight(self, index: int) -> dict:
        return model_source_identity(self, index)

    def run_folder(self, data) -> Path:
        from annotune.experiments.fingerprints import fingerprint, slug

        cfg, ctx = self.config, self.context
        if cfg.run:
            return Path(cfg.run)
        fp = fingerprint(cfg.model, cfg.finetune.settings(), [d.id for d in data.docs], ctx.codebook.to_dict())
        return ctx.output / "finetuned" / f"{slug(str(self.train_size or 'all'))}-{fp}"

    def train(self, data, *, resume: bool | None = None, data_file: str | None = None) -> Path:
        """Fine-tune on ``data`` (the system's training documents) unless the run folder is finished;
        returns it."""
        from annotune.finetune.trainer import FineTuner, is_run_folder

        cfg, ctx = self.config, self.context
        run = self.run_folder(data)
        if is_run_folder(run) and not resume:
            return run
        ctx.log(f"{self.name}: fine-tuning {cfg.model} on {len(data)} examples → {run}")
        resume = (run / "checkpoints").exists() if resume is None else resume
        FineTuner(ctx.codebook, cfg.finetune, cfg.model).train(data.docs, run, resume=resume, progress=ctx.progress,
                                                               data_file=data_file, log=ctx.log)
        return run

    def run(self, train, test):
        from annotune.backends.local import LocalBackend
        from annotune.finetune.trainer import run_prompt_builder

        cfg, ctx = self.config, self.context
        run = self.train(train)
        manifest = json.loads((run / "manifest.json").read_text())
        loaded = ctx.models.get(str(run), cfg.dtype)
        backend = LocalBackend(loaded=loaded, batch_size=cfg.batch_size, max_text_tokens=cfg.max_text_tokens,
                               max_new_tokens=cfg.max_new_tokens)
        builder = run_prompt_builder(run, ctx.codebook)
        preds, stats = backend.label(test.docs, builder, cfg.answer, progress=ctx.progress)
        stats.extra["run"] = str(run)
        stats.extra["train_examples"] = len(train)
        stats.extra["train_seconds"] = manifest["training"]["wall_seconds"]
        stats.extra["train_tokens_per_s"] = manifest["training"]["tokens_per_s"]
        if manifest["training"].get("dev"):  # the dev evaluations during training, the best one kept
            stats.extra["dev"] = manifest["training"]["dev"]
        if cfg.answer == "constrained" and ctx.codebook.task.threshold_option is not None:
            stats.extra["decision_scale"] = backend.decision_scale  # tuned on the run's dev documents
        return preds, stats
