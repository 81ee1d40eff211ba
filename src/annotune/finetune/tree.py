"""The ``questions`` training objective: fine-tune on the questions that `constrained` answering asks.

Each training document becomes one token tree, built exactly as the constrained scorer builds it
(`annotune.backends.local.ConstrainedPrompt` and `question_tree`): the instructions once (encoded once per
step for the whole batch), the document once, then every question as a branch off the document's last token,
followed by the tokens of its right option. A tree attention mask lets each token see the instructions, its
ancestors and itself, so the branches do not see each other, and the loss covers only the option tokens. A
dimension task with 46 dimensions thus trains on all 46 questions in one pass over the document, instead of a
JSON answer that `constrained` answering never reads.

Rows are long for tasks with many questions: a step's documents go through in micro-batches of at most
``micro_batch_tokens`` tree tokens (as ``answer`` examples do), their gradients accumulated, so ``batch_size``
keeps meaning documents per step.
"""

from __future__ import annotations

import functools

import numpy as np

from annotune.backends.attention import uses_boolean_masks
from annotune.backends.prompt_tokens import ConstrainedPrompt, document_ids
from annotune.backends.token_trees import question_tree, tree_layout
from annotune.errors import ConfigError
from annotune.finetune.sft import LossOnlyEvaluation, scored_logits


def tree_examples(docs, builder, tokenizer, max_text_tokens: int, *, inline_prefix: bool = False):
    """(prefix ids, records): one record per document with its tree's ``input_ids`` and ``parents`` and the
    ``positions`` whose hidden states must predict ``targets`` (the right options' tokens). With
    ``inline_prefix`` the instructions start every row and the returned prefix is empty."""
    prompt = ConstrainedPrompt.build(tokenizer, builder)
    task = builder.codebook.task
    records = []
    for d in docs:
        doc = document_ids(tokenizer, d.text, max_text_tokens)[0] + prompt.between_ids
        right = [[opts[q.options.index(target)]]
                 for q, opts, target in zip(prompt.questions, prompt.opt_rows, task.option_targets(d.label))]
        if inline_prefix:
            doc = prompt.prefix_ids + doc
        toks, parents, targets = question_tree(doc, prompt.q_rows, right)
        records.append({"input_ids": toks, "parents": parents, "positions": [t[0] for t in targets],
                        "targets": [t[1] for t in targets]})
    return ([] if inline_prefix else prompt.prefix_ids), records


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

    class QuestionTreeTrainer(LossOnlyEvaluation, Trainer):
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
            self.bool_mask = uses_boolean_masks(config)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, allowed, index = inputs["input_ids"], inputs["tree_mask"], inputs["target_index"]
            n_rows, n_prefix = ids.shape[0], len(self.prefix_ids)
            if self.bool_mask:
                mask = allowed
            else:  # eager attention adds the mask to the scores
                dtype = next(self.accelerator.unwrap_model(model).get_output_embeddings().parameters()).dtype
                mask = torch.zeros(allowed.shape, dtype=dtype, device=ids.device)
                mask.masked_fill_(~allowed, torch.finfo(dtype).min)
            prefix = torch.tensor([self.prefix_ids], device=ids.device) if n_prefix else None
            logits = scored_logits(self, model, ids, lambda h: h.reshape(-1, h.shape[-1])[index], prefix=prefix,
                                   attention_mask=mask, position_ids=inputs["position_ids"])
            if logits is None:
                raise ConfigError('objective = "questions" shares the instructions as a key/value cache; this '
                                  "model returns none: set gradient_checkpointing = true (instructions in every "
                                  "row) or use the default objective", field="finetune.objective")
            loss = F.cross_entropy(logits, inputs["targets"])
            if model.training:
                self.tokens_seen += int(inputs["row_tokens"].sum()) + n_prefix * n_rows
                self.prefix_tokens_saved += n_prefix * (n_rows - 1)
            return (loss, {"logits": logits}) if return_outputs else loss

    return QuestionTreeTrainer


__all__ = ["collate_trees", "tree_examples", "tree_trainer_class"]
