"""`type = "prompt"`: zero- or few-shot prompting of a local model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from annotune.systems.base import System, answer_words, readable_model, register_system, shot_words
from annotune.systems.local import LocalModelConfig, model_source_identity


class PromptConfig(LocalModelConfig):
    type: Literal["prompt"] = "prompt"
    shots: int = Field(0, ge=0, description="Labelled training examples shown before each document.")
    example_chars: int = Field(1500, ge=1, description="Characters of each example's text kept in the prompt.")

    inherited = ("model", "dtype", "batch_size", "max_text_tokens", "max_new_tokens")


@register_system
class PromptSystem(System):
    """Prompts a local model with the codebook (and ``shots`` examples from the training split)."""

    type = "prompt"
    open_answers = True
    config_class = PromptConfig

    @classmethod
    def describe(cls, record: dict) -> str:
        spec = record.get("spec", {})
        return f"{readable_model(spec)} prompted {shot_words(spec)} with {answer_words(spec)} (“{record['name']}”)"

    def preflight(self, index: int) -> dict:
        return model_source_identity(self, index)

    def run(self, train, test):
        from annotune.backends.local import LocalBackend
        from annotune.tasks.prompts import few_shot_builder

        cfg, ctx = self.config, self.context
        loaded = ctx.models.get(cfg.model, cfg.dtype, seed=ctx.seed)
        backend = LocalBackend(loaded=loaded, batch_size=cfg.batch_size, max_text_tokens=cfg.max_text_tokens,
                               max_new_tokens=cfg.max_new_tokens)
        builder = few_shot_builder(ctx.codebook, train.docs, cfg.shots, ctx.seed, example_chars=cfg.example_chars)
        preds, stats = backend.label(test.docs, builder, cfg.answer, progress=ctx.progress)
        stats.extra["examples"] = [d.id for d in builder.examples]
        return preds, stats
