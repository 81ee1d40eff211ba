"""Evaluation on the dev documents while a LoRA model trains: the task's primary metric, the best state.

At every evaluation of the Trainer (once per epoch, or every ``eval_steps``) the model being trained labels
the dev documents with `constrained` answers (always valid, one pass per document), the primary metric is
recorded, and the adapter weights of the best evaluation so far are kept (also on disk, so that a resumed
run keeps them). At the end the best weights are put back before the run folder is written, and the
warnings of the best evaluation (collapse to one answer, κ ≈ 0) are reported: a model that learned only the
label prior is said to have done so, on the console and in the manifest.

For multi-label and dimension tasks each evaluation also tunes the decision scale of the "no"/"absent"
option on the dev documents (`annotune.finetune.thresholds`): the metric is the one at the tuned scale (the
untuned one is kept as ``<metric>_unscaled``), and the best evaluation's scale is the one the run answers
with (`LocalBackend` reads it from the manifest). A model that learned to answer "absent" everywhere but
ranks the documents well is thus rescued, as a classification head's threshold is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from annotune.codebook import Codebook
from annotune.finetune.thresholds import decide, tune_scale

BEST_FILE = "dev-best.pt"


def dev_callback(codebook: Codebook, dev_docs: list, builder, tokenizer, source, folder: Path,
                 max_text_tokens: int, log: Callable[[str], None] = print):
    """A `TrainerCallback` (built on first use, so importing annotune does not import transformers)."""
    import torch
    from transformers import TrainerCallback

    from annotune.backends.local import LocalBackend

    task = codebook.task
    key = "dev_" + task.primary_metric

    class DevEvaluation(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[dict] = []
            self.best: dict | None = None
            saved = folder / BEST_FILE
            if saved.exists():  # a resumed run
                data = torch.load(saved, weights_only=True)
                self.best, self.history, self.best_state = data["best"], data["history"], data["state"]

        def on_evaluate(self, args, state, control, model=None, **kwargs):
            if self.history and self.history[-1]["step"] == state.global_step:
                return  # the final evaluate() after the last epoch's: same weights, already labelled
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            was_training = base.training
            base.eval()
            backend = LocalBackend(loaded=(base, tokenizer, source), batch_size=args.per_device_eval_batch_size,
                                   max_text_tokens=max_text_tokens, decision_scale=1.0)  # raw probabilities
            # in the precision the model trains in: a bf16 run keeps fp32 weights, which would label in fp32
            with torch.autocast(backend.device.type, dtype=torch.bfloat16, enabled=bool(args.bf16)):
                probs = backend.option_probabilities(dev_docs, builder)
            base.train(was_training)
            gold = [d.label for d in dev_docs]
            scale, _ = tune_scale(codebook, probs, gold)
            metrics = task.evaluate(gold, [decide(codebook, p, scale)[0] for p in probs], n_boot=0)
            loss = (kwargs.get("metrics") or {}).get("eval_loss")  # finer than the metric on a small dev part
            point = {"step": state.global_step, "epoch": round(state.epoch or 0, 3),
                     key: metrics[task.primary_metric], "dev_kappa": metrics.get("kappa"),
                     "dev_loss": None if loss is None else round(float(loss), 5), "warnings": metrics["warnings"]}
            if task.threshold_option is not None:
                point["decision_scale"] = scale
                point[key + "_unscaled"] = (metrics[task.primary_metric] if scale == 1.0 else task.evaluate(
                    gold, [decide(codebook, p)[0] for p in probs], n_boot=0)[task.primary_metric])
            self.history.append(point)
            score = metrics[task.primary_metric] or 0.0
            if self.best is None or score > self.best[key]:
                self.best = point
                self.best_state = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
                torch.save({"best": self.best, "history": self.history, "state": self.best_state},
                           folder / BEST_FILE)
            log(f"dev evaluation at step {state.global_step}: {task.primary_name} {score:.3f}"
                + (f" (decision scale {scale:g})" if scale != 1.0 else "")
                + (f" (best {self.best[key]:.3f} at step {self.best['step']})" if self.best is not point else ""))

        def restore_best(self, model) -> dict | None:
            """Put the best evaluation's weights back; returns what the manifest records."""
            if self.best is None:
                return None
            with torch.no_grad():
                for k, v in model.named_parameters():
                    if k in self.best_state:
                        v.copy_(self.best_state[k])
            (folder / BEST_FILE).unlink(missing_ok=True)
            for warning in self.best["warnings"]:
                log(f"WARNING (dev documents, best evaluation): {warning}")
            return {"best": self.best, "history": self.history}

    return DevEvaluation()


__all__ = ["dev_callback", "BEST_FILE"]
