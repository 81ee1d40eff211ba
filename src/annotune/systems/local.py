"""Settings shared by the systems that run a local model (`prompt`, `finetuned`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from annotune.config import DEFAULT_MODEL, Answer, Dtype, resolve_model_path
from annotune.errors import AnnotuneError
from annotune.systems.base import SystemConfig


class LocalModelConfig(SystemConfig):
    """A local model and how it answers; unset keys come from the config's ``[model]`` table."""

    model: str = Field(DEFAULT_MODEL, min_length=1, description="Model: smollm2 (embedded), a HF folder or hub "
                                                                "id, a .gguf file or a fine-tuned run folder.")
    answer: Answer = Field("generate", description="generate: free generation, parsed; constrained: the "
                                                   "probability of every allowed answer.")
    dtype: Dtype = Field("auto", description="Weights' precision: auto (bf16 where supported), bf16, fp16, fp32.")
    batch_size: int = Field(8, ge=1, description="Documents per forward pass (on a CPU, `generate` then "
                                                       "decodes four batches' answers together).")
    max_text_tokens: int = Field(512, ge=1, description="Document tokens kept in the prompt.")
    max_new_tokens: int | None = Field(None, ge=1, description="Longest generated answer (default: by task kind).")

    def resolve_paths(self, base: Path) -> None:
        self.model = resolve_model_path(self.model, base)


def model_source_identity(system, index: int) -> dict:
    """Preflight of a local model name: it must resolve; its weights identify it in the fingerprint."""
    from annotune.backends.models import resolve_model as resolve
    from annotune.experiments.fingerprints import model_identity

    try:
        source = resolve(system.config.model)
    except AnnotuneError as exc:
        raise system.fail(exc.format(), "model", index) from None
    return model_identity(source)


__all__ = ["LocalModelConfig", "Dtype", "Answer", "model_source_identity"]
