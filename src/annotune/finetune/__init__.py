"""LoRA fine-tuning: hyper-parameters, the trainer and run folders."""

from annotune.finetune.config import FineTuneConfig
from annotune.finetune.trainer import FineTuner

__all__ = ["FineTuneConfig", "FineTuner"]
