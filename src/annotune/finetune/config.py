"""Fine-tuning hyper-parameters: the `[finetune]` table of a config (and a `finetuned` system's own
`finetune` table, which overrides it key by key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from annotune.config import ConfigModel, Dtype


class FineTuneConfig(ConfigModel):
    """LoRA hyper-parameters. Defaults are for the embedded 135M model, chosen by `bench/recipe.py`: 3 epochs
    at lr 1e-3 (the best dev epoch kept) beat 1 epoch by 8–11 points of macro-F1 on BBC News with 100 and 200
    training articles, and the 2e-4 used for 7B models by 11."""

    objective: Literal["answer", "questions"] = Field(
        "answer", description="What the model learns to write: \"answer\", the task's prompt and its canonical "
        "answer (what `generate` writes); \"questions\", the questions `constrained` answering asks, one token "
        "tree per document (instructions once, document once, each question with its right option as a branch), "
        "the loss on the option tokens only: for `constrained` systems, and dimension tasks above all.")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int | float = Field(32, gt=0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout; its random masks cost ~10 % of a CPU step.")
    target_modules: list[str] | str = Field("all-linear", description="Modules that get LoRA adapters.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training documents (may be fractional); the "
                          "dev evaluation after each keeps the best.")
    batch_size: int = Field(8, ge=1, description="Documents per optimizer step.")
    micro_batch_tokens: int = Field(
        2560, ge=0, description="Tokens per forward pass: a step's documents go through in micro-batches (the "
        "largest divisor of batch_size whose examples hold at most this many tokens, 1 for longer examples), "
        "their gradients accumulated, so peak memory stays bounded while batch_size keeps meaning documents per "
        "step; 0: the whole batch in one pass (fastest, most memory).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(512, ge=16, description="Tokens per example (prompt + answer); documents are cut "
                                                     "to max_text_tokens, never labels; a longer free-text (qa) "
                                                     "answer is cut here.")
    max_text_tokens: int = Field(256, ge=1, description="Document tokens kept in the prompt (default: "
                                                        "[model].max_text_tokens where the config sets it, else 256).")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="Fraction of steps with a linear warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    save_steps: int = Field(25, ge=1, description="Checkpoint every this many steps (resume point).")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate on the dev split every this many steps "
                                                           "(default: once per epoch).")
    dev_size: float | int = Field(0.1, description="Part of the training data held out for evaluation during "
                                                   "training: a fraction in (0, 1) or a count.")
    max_dev: int = Field(64, ge=0, description="At most this many dev examples (0: no dev split).")
    short_prompt: bool = Field(True, description="Train with label names only (no definitions).")
    seed: int = Field(0, description="Seed of the dev split, LoRA initialisation and data order.")
    dtype: Dtype = Field(
        "auto", description="bf16 autocast where the CPU/GPU supports it, fp32 otherwise.")
    qlora: bool = Field(False, description="4-bit base weights through bitsandbytes (CUDA only).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (large models on small GPUs).")
    share_prefix: bool = Field(True, description="Encode the prompt prefix a batch shares (the instructions) once "
                               "per step instead of once per example: the same loss and gradients (with dropout, "
                               "one dropout mask over the prefix), less compute and memory; one process, no "
                               "gradient checkpointing.")
    min_examples: int = Field(4, ge=1, description="Refuse to train on fewer documents.")
    logging_steps: int = Field(5, ge=1, description="Log the loss every this many steps.")

    @model_validator(mode="after")
    def _dev_size_in_range(self) -> "FineTuneConfig":
        d = self.dev_size
        if isinstance(d, float) and not 0 <= d < 1 or isinstance(d, int) and d < 0:
            raise ValueError(f"dev_size must be a fraction in [0, 1) or a count >= 0, not {d!r}")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, file: str | Path | None = None,
                  where: str = "finetune") -> "FineTuneConfig":
        return cls.parse(data, file=file, where=where)


__all__ = ["FineTuneConfig"]
