"""Token trees: one document and all the questions asked about it in one row, the layout the constrained
scorer (`annotune.backends.local`) reads and the ``questions`` training objective (`annotune.finetune.tree`)
trains on."""

from __future__ import annotations

import numpy as np


def question_tree(doc: list[int], q_rows: list[list[int]], opt_rows: list[list[list[int]]]):
    """One document's token tree: the document, then every question hanging off its last token, then each
    option of a question as a branch off the question's last token. Returns (tokens, parents, targets): a
    token's parent is the index of its predecessor (-1: it follows the prefix), and each target
    ``(position, token, question, option)`` says that the hidden state at ``position`` predicts ``token``
    (an option's last token is scored but needs no position of its own)."""
    toks = list(doc)
    par = list(range(-1, len(doc) - 1))
    targets = []
    for qi, (q, opts) in enumerate(zip(q_rows, opt_rows)):
        q_start = len(toks)
        toks += q
        # each question hangs off the document's last token, not off the previous question's tree
        par += [len(doc) - 1 if j == 0 else q_start + j - 1 for j in range(len(q))]
        q_last = len(toks) - 1
        for oi, opt in enumerate(opts):
            prev = q_last
            for j, tok in enumerate(opt):
                targets.append((prev, tok, qi, oi))
                if j < len(opt) - 1:
                    toks.append(tok)
                    par.append(prev)
                    prev = len(toks) - 1
    return toks, par, targets


def branch_trees(q_rows: list[list[int]], opt_rows: list[list[list[int]]]):
    """Each question's branch of `question_tree` on its own, without the document it hangs off: a list of
    (tokens, parents, targets) per question, a parent of -1 following the document, targets
    ``(position, token, question, option)``."""
    branches = []
    for qi, (q, opts) in enumerate(zip(q_rows, opt_rows)):
        toks, par, targets = question_tree([], [q], [opts])
        branches.append((toks, par, [(pos, tok, qi, oi) for pos, tok, _, oi in targets]))
    return branches


def tree_layout(rows: list[list[int]], parents: list[list[int]], prefix_len: int, pad_id: int):
    """Right-padded token ids, position ids and the attention pattern [R, L, prefix_len + L] (True: may
    attend) of rows of token trees after a shared prefix: a token sees the prefix, its ancestors and itself,
    its position is the prefix length plus its depth; padding sees only itself."""
    n_rows = len(rows)
    width = max(len(r) for r in rows)
    ids = np.full((n_rows, width), pad_id, dtype=np.int64)
    pos = np.zeros((n_rows, width), dtype=np.int64)
    allowed = np.zeros((n_rows, width, prefix_len + width), dtype=bool)
    allowed[:, :, :prefix_len] = True
    for r, (toks, par) in enumerate(zip(rows, parents)):
        ids[r, : len(toks)] = toks
        anc = allowed[r, :, prefix_len:]
        depth = pos[r]
        for i, p in enumerate(par):
            if p >= 0:
                anc[i] = anc[p]
                depth[i] = depth[p] + 1
            anc[i, i] = True
        for i in range(len(toks), width):
            anc[i, i] = True
    return ids, pos + prefix_len, allowed


def sliding_window(config) -> tuple[int | None, list[str]]:
    """A model's sliding window (None when every layer attends globally) and its layer types."""
    text_config = config.get_text_config(decoder=True)
    types = sorted(set(getattr(text_config, "layer_types", None) or ()))
    return (getattr(text_config, "sliding_window", None) if "sliding_attention" in types else None), types


def attention_mask(allowed, query_pos, key_pos, dtype, window: int | None = None, layer_types=()):
    """The additive mask [R, 1, Q, K] of ``allowed`` (a bool tensor [R, Q, K]); for a model with sliding-window
    layers (``window``: Gemma 3) a mask per layer type, the sliding one also hiding keys a window or more
    behind the query (positions ``query_pos`` [R, Q] and ``key_pos`` [R, K]; None: the keys are a prefix at
    positions 0, 1, … followed by the queries themselves, as in `tree_layout`)."""
    import torch

    def additive(ok):
        mask = torch.zeros(ok.shape, dtype=dtype, device=ok.device)
        return mask.masked_fill_(~ok, torch.finfo(dtype).min).unsqueeze(1)

    if window is None:
        return additive(allowed)
    if key_pos is None:
        prefix = torch.arange(allowed.shape[-1] - query_pos.shape[1], device=query_pos.device)
        key_pos = torch.cat([prefix.expand(len(query_pos), -1), query_pos], dim=1)
    near = allowed & (query_pos[:, :, None] - key_pos[:, None, :] < window)
    return {t: additive(near if t == "sliding_attention" else allowed) for t in layer_types}


__all__ = ["branch_trees", "question_tree", "tree_layout", "sliding_window", "attention_mask"]
