"""The training loop's parts: `SFTTrainer` with an answer-only loss and a progress bar with tokens/s
(`trainer_classes`), the prompt prefix a batch shares (`shared_prefix_length`), and the peak memory of a
run (`peak_memory_gib`)."""

from __future__ import annotations

import functools
import math
import time


def peak_memory_gib() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return round(torch.cuda.max_memory_allocated() / 2**30, 3)
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB → GiB (Linux)
    except Exception:  # pragma: no cover - platform without resource
        return None


MIN_SHARED_PREFIX = 16


def shared_prefix_length(input_ids, attention_mask, labels) -> int:
    """Leading tokens that every row of a batch has in common (the codebook's instructions, say), that are
    attended and before any scored position: they can be encoded once for the whole batch. 0 when fewer
    than `MIN_SHARED_PREFIX` or one row only."""
    import torch

    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(0)
    common = int(same.long().cumprod(0).sum())
    scored = labels != -100
    if not scored.any(1).all():
        return 0
    # the hidden state at position j predicts token j + 1: every scored j must lie after the prefix
    first_scored = int(torch.argmax(scored.long(), dim=1).min()) - 1
    n = min(common, first_scored, input_ids.shape[1] - 1)
    return n if n >= MIN_SHARED_PREFIX else 0


def caches_plain_layers(config) -> bool:
    """Whether every attention layer is global (a sliding-window cache drops tokens, so its prefix cannot be
    reused as is)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    return not (getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True))


def micro_batch_size(batch_size: int, lengths: list[int], budget: int) -> int:
    """The largest divisor of ``batch_size`` whose micro-batch holds at most ``budget`` tokens of the mean
    example length (1 for examples longer than that; the whole batch for ``budget`` 0): a step's documents go
    through in micro-batches, their gradients accumulated, so memory stays bounded and ``batch_size`` keeps
    meaning documents per step."""
    if budget <= 0:
        return batch_size
    mean = sum(lengths) / max(1, len(lengths))
    fits = max(1, math.floor(budget / max(1.0, mean)))
    return max(d for d in range(1, batch_size + 1) if batch_size % d == 0 and d <= fits)


def scored_logits(trainer, model, ids, select, *, prefix=None, **forward):
    """Vocabulary logits (fp32) only at the positions ``select`` keeps of the output layer's input (a pre-hook:
    the forward still goes through the PEFT and DDP wrappers). With ``prefix`` (ids [1, P]) the rows continue
    from its key/value cache, encoded once and repeated, gradients flowing back through it; None when the
    model returns no cache. bf16 autocast on a CPU when the run trains in bf16 (the Trainer applies none
    there: without it bf16 = true trains in fp32, 2x slower)."""
    import torch
    from transformers import Cache

    head = trainer.accelerator.unwrap_model(model).get_output_embeddings()
    cpu_bf16 = trainer.args.bf16 and ids.device.type == "cpu"
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16):
        cache = None
        if prefix is not None:
            cache = getattr(model(input_ids=prefix, use_cache=True, logits_to_keep=1), "past_key_values", None)
            if not isinstance(cache, Cache):
                return None
            cache.batch_repeat_interleave(ids.shape[0])
        hook = head.register_forward_pre_hook(lambda module, args: (select(args[0]),) + tuple(args[1:]))
        try:
            return model(input_ids=ids, past_key_values=cache, use_cache=cache is not None, **forward).logits.float()
        finally:
            hook.remove()


class LossOnlyEvaluation:
    """A `Trainer` mixin: dev evaluation computes the loss only (no logits gathered over the dev set; the
    dev metric comes from `annotune.finetune.dev_eval`)."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        import torch

        with torch.no_grad():
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None


@functools.cache
def trainer_classes():
    """`SFTTrainer` with an answer-only loss, and a progress callback (classes built on first use so that
    importing annotune does not import TRL)."""
    import torch.nn.functional as F
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class AnswerOnlyTrainer(LossOnlyEvaluation, SFTTrainer):
        """Vocabulary logits only at answer positions: a pre-hook on the output layer hands it only the hidden
        states whose next-token label is not masked. The forward still goes through the (PEFT, DDP...)
        wrappers, so a launcher's gradient synchronisation works. Measured on SmolLM2-135M (8 × 348 tokens,
        bf16 autocast, 2 cores), TRL's chunked fused head took 14 s a step, this about 4 s.

        With ``share_prefix`` (one process, no gradient checkpointing), the prompt prefix every row of a batch
        shares is encoded once (batch of one, gradients flowing back through its keys and values) and the rows
        continue from it: the same loss and gradients as encoding it in every row (with LoRA dropout, the
        rows share one dropout mask over the prefix), for a fraction of the compute when the codebook's
        instructions are long. Off for sliding-window attention, models without a key/value cache and
        batches with position ids (packed)."""

        def __init__(self, *args, share_prefix: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False  # the loss is a per-batch mean; the Trainer scales it
            self.tokens_seen = 0
            self.prefix_tokens_saved = 0
            self.share_prefix = (share_prefix and not self.args.gradient_checkpointing
                                 and self.accelerator.num_processes == 1
                                 and caches_plain_layers(self.accelerator.unwrap_model(self.model).config))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, mask, labels = inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"]
            scored = labels[:, 1:] != -100
            positions = inputs.get("position_ids")
            shared = shared_prefix_length(ids, mask, labels) if self.share_prefix and positions is None else 0
            logits = None
            if shared:
                logits = scored_logits(self, model, ids[:, shared:], lambda h: h[:, :-1][scored[:, shared:]],
                                       prefix=ids[:1, :shared], attention_mask=mask)
                if logits is None:  # a model without a key/value cache (a state-space model, say): no sharing
                    self.share_prefix, shared = False, 0
            if logits is None:
                logits = scored_logits(self, model, ids, lambda h: h[:, :-1][scored], attention_mask=mask,
                                       position_ids=positions)
            loss = F.cross_entropy(logits, labels[:, 1:][scored]) if scored.any() else logits.sum() * 0.0
            if model.training and mask is not None:
                self.tokens_seen += int(mask.sum())
                self.prefix_tokens_saved += shared * (ids.shape[0] - 1)
            return (loss, {"logits": logits}) if return_outputs else loss

    class Progress(TrainerCallback):
        """A bar with loss, tokens/s and ETA (the Trainer's own bar shows neither tokens/s nor loss)."""

        def __init__(self, enabled: bool = True):
            self.enabled = enabled
            self.bar = None
            self.trainer = None
            self.active_seconds = 0.0
            self._t0 = 0.0

        @property
        def tokens(self) -> int:
            return self.trainer.tokens_seen if self.trainer is not None else 0

        def on_train_begin(self, args, state, control, **kw):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="fine-tuning", unit="step",
                            disable=not self.enabled)
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.active_seconds = time.perf_counter() - self._t0
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.bar is not None and logs and "loss" in logs:
                tps = self.tokens / self.active_seconds if self.active_seconds else 0
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}", tok_s=f"{tps:.0f}")

        def close(self):
            if self.bar is not None:
                self.bar.close()

    return AnswerOnlyTrainer, Progress


__all__ = ["LossOnlyEvaluation", "caches_plain_layers", "micro_batch_size", "peak_memory_gib", "scored_logits",
           "shared_prefix_length", "trainer_classes"]
