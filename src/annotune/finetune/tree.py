"""The ``questions`` training objective: fine-tune on the questions that `constrained` answering asks.

Each training document becomes one token tree, built exactly as the constrained scorer builds it
(`annotune.backends.local.ConstrainedPrompt` and `question_tree`): the instructions once (encoded once per
step for the whole batch), the document once, then every question as a branch off the document's last token,
followed by the tokens of its right option. A tree attention mask lets each token see the instructions, its
ancestors and itself, so the branches do not see each other, and the loss covers only the option tokens. A
dimension task with 46 dimensions thus trains on all 46 questions in one pass over the document, instead of a
JSON answer that `constrained` answering never reads.

Rows are long for tasks with many questions, so a step's documents go through in micro-batches of about the
tokens an ``answer`` step holds, their gradients accumulated: ``batch_size`` keeps meaning documents per step.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from annotune.backends.local import ConstrainedPrompt, question_tree, tree_layout

TOKENS_PER_DOCUMENT = 320  # about what an `answer` example of a short document holds: the micro-batch budget


def tree_examples(docs, builder, tokenizer, max_text_tokens: int, *, inline_prefix: bool = False):
    """(prefix ids, records): one record per document with its tree's ``input_ids`` and ``parents`` and the
    ``positions`` whose hidden states must predict ``targets`` (the right options' tokens). With
    ``inline_prefix`` the instructions start every row and the returned prefix is empty."""
    prompt = ConstrainedPrompt.build(tokenizer, builder)
    task = builder.codebook.task
    records = []
    for d in docs:
        doc = tokenizer(d.text, add_special_tokens=False)["input_ids"][:max_text_tokens] + prompt.between_ids
        right = [[opts[q.options.index(target)]]
                 for q, opts, target in zip(prompt.questions, prompt.opt_rows, task.option_targets(d.label))]
        if inline_prefix:
            doc = prompt.prefix_ids + doc
        toks, parents, targets = question_tree(doc, prompt.q_rows, right)
        records.append({"input_ids": toks, "parents": parents, "positions": [t[0] for t in targets],
                        "targets": [t[1] for t in targets]})
    return ([] if inline_prefix else prompt.prefix_ids), records


def micro_batch_size(batch_size: int, records: list[dict]) -> int:
    """The largest divisor of ``batch_size`` whose micro-batch holds at most ``batch_size`` ×
    `TOKENS_PER_DOCUMENT` tree tokens (1 for trees longer than that)."""
    mean = sum(len(r["input_ids"]) for r in records) / max(1, len(records))
    fits = max(1, math.floor(batch_size * TOKENS_PER_DOCUMENT / max(1.0, mean)))
    return max(d for d in range(1, batch_size + 1) if batch_size % d == 0 and d <= fits)


def collate_trees(prefix_len: int, pad_id: int):
    """A data collator: padded ids, positions, the tree mask [R, 1, L, prefix + L] and the flat indices of
    the scored positions with their target tokens."""
    import torch

    def collate(features: list[dict]) -> dict:
        rows = [f["input_ids"] for f in features]
        ids, pos, allowed = tree_layout(rows, [f["parents"] for f in features], prefix_len, pad_id)
        width = ids.shape[1]
        index = np.concatenate([r * width + np.asarray(f["positions"], dtype=np.int64)
                                for r, f in enumerate(features)])
        return {"input_ids": torch.from_numpy(ids), "position_ids": torch.from_numpy(pos),
                "tree_mask": torch.from_numpy(allowed).unsqueeze(1), "target_index": torch.from_numpy(index),
                "targets": torch.tensor([t for f in features for t in f["targets"]]),
                "row_tokens": torch.tensor([len(r) for r in rows])}

    return collate


@functools.cache
def tree_trainer_class():
    """The `Trainer` of the questions objective (built on first use: importing annotune imports no
    transformers)."""
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class QuestionTreeTrainer(Trainer):
        """Loss on the right options of every question of each document's token tree; the shared
        instructions are encoded once per micro-batch (gradients flowing back through their keys and
        values), the vocabulary logits computed only at the scored positions."""

        def __init__(self, *args, prefix_ids: list[int], **kwargs):
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False
            self.prefix_ids = list(prefix_ids)
            self.tokens_seen = 0
            self.prefix_tokens_saved = 0
            config = self.accelerator.unwrap_model(self.model).config
            self.bool_mask = getattr(config, "_attn_implementation", None) == "sdpa"

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, allowed, index = inputs["input_ids"], inputs["tree_mask"], inputs["target_index"]
            n_rows, n_prefix = ids.shape[0], len(self.prefix_ids)
            head = self.accelerator.unwrap_model(model).get_output_embeddings()
            if self.bool_mask:
                mask = allowed
            else:  # eager attention adds the mask to the scores
                dtype = next(head.parameters()).dtype
                mask = torch.zeros(allowed.shape, dtype=dtype, device=ids.device)
                mask.masked_fill_(~allowed, torch.finfo(dtype).min)

            def scored_positions_only(module, args):
                hidden = args[0]
                return (hidden.reshape(-1, hidden.shape[-1])[index],) + tuple(args[1:])

            cpu_bf16 = self.args.bf16 and ids.device.type == "cpu"  # no autocast from the Trainer on CPU
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16):
                cache = None
                if n_prefix:
                    prefix = torch.tensor([self.prefix_ids], device=ids.device)
                    cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
                    cache.batch_repeat_interleave(n_rows)
                hook = head.register_forward_pre_hook(scored_positions_only)
                try:
                    logits = model(input_ids=ids, attention_mask=mask, position_ids=inputs["position_ids"],
                                   past_key_values=cache, use_cache=cache is not None).logits.float()
                finally:
                    hook.remove()
            loss = F.cross_entropy(logits, inputs["targets"])
            if model.training:
                self.tokens_seen += int(inputs["row_tokens"].sum()) + n_prefix * n_rows
                self.prefix_tokens_saved += n_prefix * (n_rows - 1)
            return (loss, {"logits": logits}) if return_outputs else loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            with torch.no_grad():
                loss = self.compute_loss(model, self._prepare_inputs(inputs))
            return loss.detach(), None, None

    return QuestionTreeTrainer


__all__ = ["collate_trees", "micro_batch_size", "tree_examples", "tree_trainer_class"]
