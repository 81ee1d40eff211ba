"""LoRA fine-tuning: hyper-parameters, the trainer and run folders."""

from annotune.finetune.trainer import FineTuneConfig, FineTuner

__all__ = ["FineTuneConfig", "FineTuner"]
