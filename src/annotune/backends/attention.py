"""Attention for training on a CPU: short rows through plain matrix products, long ones through SDPA.

PyTorch's CPU flash-attention kernel (what ``sdpa`` runs there) is slow on the short rows annotune trains on:
for SmolLM2-135M's 9 heads of 64 dimensions in bf16 on 2 cores, batch 8 of 165 queries over 225 keys, its
forward and backward took 32-51 ms per layer where two batched matrix products and a softmax took 11-15 ms —
the same gradients up to rounding (`bench/attention.py`). Whole training steps, alternating the two in one
process: 1.21-1.25x faster on the quick BBC example, 1.11-1.15x on 256-token articles, 1.12-1.32x on
flourishing (two runs). The kernel wins on large batches of long rows and holds no [batch × heads × queries ×
keys] score tensor, so above 8 million scores per 64 head dimensions it runs (Gemma 3's 256-dimension heads:
the matrix path was 1.3-1.9x faster up to 33 million scores, 8 × 1,024 × 1,024 × 4 heads). Labelling gained too little to switch (0.93-1.17x on
whole BBC runs, and a few near-tied labels flipped with the rounding), so inference keeps ``sdpa``.

`use_fast_cpu_attention` switches a model that uses ``sdpa`` to `ATTENTION`, which takes the matrix-product
path while gradients are recorded on a CPU below that size and calls Hugging Face's ``sdpa`` function
otherwise (no gradients, GPUs, long rows, soft-capped logits, attention dropout, additive or per-head masks,
value heads of another size).
"""

from __future__ import annotations

import contextlib
import contextvars

ATTENTION = "annotune_cpu_training"
_WITHOUT_GRADIENTS = contextvars.ContextVar("annotune_matrix_attention_without_gradients", default=False)
# batch × heads × queries × keys of the score tensor above which the flash kernel runs, for 64-dimension heads and
# in proportion for others (bench/attention.py, bf16, 2 cores: forward and backward faster up to 7-9 M, slower
# from 10-19 M with 64 dimensions; faster up to 33 M, the largest measured, with 256)
MAX_SCORES = 8_000_000


def matrix_attention(module, query, key, value, attention_mask, scaling: float | None, is_causal: bool | None):
    """softmax(q kᵀ · scale + mask) v with each key/value head serving its group of query heads without copies
    (query [B, H, Q, D], key/value [B, Hkv, K, D], a boolean mask [B, 1, Q, K] or None for causal attention of
    as many queries as keys, or one query); returns [B, Q, H, D] as HF's attention functions do."""
    import torch

    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    grouped = (query * scale).reshape(batch, kv_heads, group * q_len, dim)
    scores = torch.matmul(grouped, key.transpose(-1, -2)).view(batch, kv_heads, group, q_len, k_len)
    if attention_mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if causal and q_len > 1:
            attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()
    unseeing = None
    if attention_mask is not None and attention_mask.dtype != torch.bool:  # additive (labelling's token trees)
        scores = scores + attention_mask[..., None, :, :]
    elif attention_mask is not None:
        mask = attention_mask[..., None, :, :]  # [B, 1, 1, Q, K]: every head of a group
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        unseeing = ~mask.any(-1, keepdim=True)  # queries that see no key (padding): 0, as sdpa gives
    # without gradients (labelling) the softmax runs in fp32, as the flash kernel's does
    probs = torch.softmax(scores, dim=-1) if torch.is_grad_enabled() else torch.softmax(
        scores, dim=-1, dtype=torch.float32).to(value.dtype)
    if unseeing is not None and unseeing.any():
        probs = probs.masked_fill(unseeing, 0.0)
    probs = probs.view(batch, kv_heads, group * q_len, k_len)
    out = torch.matmul(probs, value).view(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous()


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs):
    """An attention function of Hugging Face's `AttentionInterface`."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, queries, dim = query.shape
    keys = key.shape[2]
    short = batch * heads * queries * keys <= MAX_SCORES * dim / 64 and heads % key.shape[1] == 0
    # boolean [B, 1, Q, K] masks as `sdpa_mask` makes them, or none where causal alignment is unambiguous (an
    # additive mask could hold -inf in bf16, a static cache's prefill aligns queries with the first keys)
    matrix_wanted = torch.is_grad_enabled() or _WITHOUT_GRADIENTS.get()
    mask_fits = (attention_mask is None and queries in (1, keys)) or (
        attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] == 1
        and (attention_mask.dtype == torch.bool or _WITHOUT_GRADIENTS.get()))
    if (query.device.type == "cpu" and matrix_wanted and short and mask_fits and not dropout
            and value.shape[-1] == dim
            and kwargs.get("softcap") is None and kwargs.get("position_bias") is None
            and not kwargs.get("output_attentions")):
        return matrix_attention(module, query, key, value, attention_mask, scaling, is_causal), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


@contextlib.contextmanager
def matrix_attention_without_gradients():
    """Within it, a model on `ATTENTION` takes the matrix path without gradients too (additive masks
    included): for labelling many short rows over a long cache (`LocalBackend`'s question rows), where the
    flash kernel is slowest."""
    token = _WITHOUT_GRADIENTS.set(True)
    try:
        yield
    finally:
        _WITHOUT_GRADIENTS.reset(token)


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention_forward)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks sdpa gets


def use_fast_cpu_attention(model) -> bool:
    """Switch a model that attends through ``sdpa`` to `ATTENTION` (training, and labelling's question rows, on a
    CPU); False where it cannot (another implementation, or a model without Hugging Face's attention
    interface)."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    register()
    try:
        model.set_attn_implementation(ATTENTION)
    except (ValueError, ImportError):
        return False
    return getattr(model.config, "_attn_implementation", None) == ATTENTION


def uses_boolean_masks(config) -> bool:
    """Whether the model's attention takes boolean masks (sdpa and `ATTENTION`; eager adds a float mask)."""
    return getattr(config, "_attn_implementation", None) in ("sdpa", ATTENTION)


__all__ = ["ATTENTION", "MAX_SCORES", "attention_forward", "matrix_attention", "matrix_attention_without_gradients",
           "register", "use_fast_cpu_attention",
           "uses_boolean_masks"]
