"""The CPU training attention (`annotune.backends.attention`) gives sdpa's loss and gradients on real tiny models:
GQA heads, right padding, rows continuing from a shared prefix's cache, tree masks (boolean and additive),
sliding-window layers (Gemma 3) — and never NaN on a fully masked row."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from annotune.backends.attention import (  # noqa: E402
    ATTENTION,
    MAX_SCORES,
    matrix_attention,
    attention_forward,
    use_fast_cpu_attention,
)


def _models(path):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    fast = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    assert use_fast_cpu_attention(fast) and fast.config._attn_implementation == ATTENTION
    return plain, fast


def _loss_and_grads(model, **forward):
    model.zero_grad()
    out = model(**forward)
    logits = out.logits.float()
    loss = (logits.log_softmax(-1)[..., :7] * torch.linspace(-1, 1, 7)).sum() / logits.shape[0]
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(autouse=True)
def matrix_calls(monkeypatch) -> list:
    """Calls of the matrix path (so that an equivalence test cannot pass by comparing sdpa with itself)."""
    import annotune.backends.attention as attention

    calls, real = [], attention.matrix_attention
    monkeypatch.setattr(attention, "matrix_attention", lambda *a: calls.append(1) or real(*a))
    return calls


def _assert_same(plain, fast, **forward):
    loss_p, grads_p = _loss_and_grads(plain, **forward)
    loss_f, grads_f = _loss_and_grads(fast, **forward)
    assert loss_f == pytest.approx(loss_p, rel=1e-5, abs=1e-5)
    _assert_same_grads(grads_p, grads_f)


def _assert_same_grads(expected: dict, actual: dict) -> None:
    """Equal up to fp32 rounding: each tensor's largest difference under 1e-4 of its largest value."""
    assert expected.keys() == actual.keys() and expected
    for name, grad in expected.items():
        assert (actual[name] - grad).abs().max() <= 1e-4 * grad.abs().max(), name


@pytest.mark.parametrize("model_dir", ["sharp_model_dir", "tiny_gemma_dir"])
def test_padded_batches_train_as_with_sdpa(request, model_dir, matrix_calls):
    plain, fast = _models(request.getfixturevalue(model_dir))
    ids = torch.randint(5, 500, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0  # right padding
    mask[2, 12:] = 0
    _assert_same(plain, fast, input_ids=ids, attention_mask=mask)
    _assert_same(plain, fast, input_ids=ids)  # no mask: causal
    assert matrix_calls


@pytest.mark.parametrize("model_dir", ["sharp_model_dir", "tiny_gemma_dir"])
def test_rows_continuing_from_a_prefix_cache_train_as_with_sdpa(request, model_dir, matrix_calls):
    """As `share_prefix` trains: a prefix encoded once, its cache repeated, gradients through it."""
    plain, fast = _models(request.getfixturevalue(model_dir))
    prefix, rows = torch.randint(5, 500, (1, 24)), torch.randint(5, 500, (3, 20))
    mask = torch.ones(3, 44, dtype=torch.long)
    mask[1, 38:] = 0
    results = []
    for model in (plain, fast):
        model.zero_grad()
        cache = model(input_ids=prefix, use_cache=True).past_key_values
        cache.batch_repeat_interleave(3)
        logits = model(input_ids=rows, past_key_values=cache, attention_mask=mask).logits
        logits.float().log_softmax(-1)[..., 3].sum().backward()
        results.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    _assert_same_grads(*results)
    assert matrix_calls


@pytest.mark.parametrize("boolean", [True, False])
def test_tree_masks_train_as_with_sdpa(sharp_model_dir, boolean, matrix_calls):
    """A custom 4-D mask (a token tree's: branches that do not see each other), boolean or additive."""
    plain, fast = _models(sharp_model_dir)
    n = 30
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    allowed[20:25, 15:20] = False  # a branch hidden from another
    allowed = allowed.expand(2, n, n).unsqueeze(1)
    if boolean:
        mask = allowed
    else:
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    positions = torch.arange(n).expand(2, n)
    _assert_same(plain, fast, input_ids=torch.randint(5, 500, (2, n)), attention_mask=mask, position_ids=positions)
    assert bool(matrix_calls) == boolean  # additive masks go to sdpa (in bf16 they may hold -inf)


def test_a_query_that_sees_no_key_gets_zero_as_with_sdpa():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 6, 8, requires_grad=True)
    k, v = torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    mask[1, :, 0] = False  # a padding query that sees nothing
    out = matrix_attention(None, q, k, v, mask, None, True)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()
    assert (out[1, 0] == 0).all()  # as sdpa gives a query that sees no key
    expected = torch.nn.functional.scaled_dot_product_attention(
        q[:1], k[:1].repeat_interleave(2, 1), v[:1].repeat_interleave(2, 1), attn_mask=mask[:1])
    torch.testing.assert_close(out[:1], expected.transpose(1, 2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU trains through sdpa")
def test_fine_tuning_on_a_cpu_uses_it(single_codebook, tiny_model_dir, tmp_path):
    from annotune.data.dataset import Doc
    from annotune.finetune.config import FineTuneConfig
    from annotune.finetune.trainer import FineTuner

    labels = [label.name for label in single_codebook.labels]
    docs = [Doc(id=str(i), text=f"text {i}", label=labels[i % len(labels)]) for i in range(8)]
    tuner = FineTuner(single_codebook, FineTuneConfig(epochs=1, max_dev=0, batch_size=4), base_model=str(tiny_model_dir))
    trainer, _ = tuner.build_trainer(docs, tmp_path / "run", progress=False)
    config = trainer.accelerator.unwrap_model(trainer.model).config
    assert config._attn_implementation == ATTENTION


@pytest.mark.parametrize("queries,keys,grad,flash", [
    (8, 40, True, False), (8, 40, False, True), (1450, 1400, True, True), (1300, 1200, True, False)])
def test_only_short_rows_under_training_leave_the_flash_kernel(queries, keys, grad, flash):
    """Matrix products while gradients are recorded on short rows; SDPA's kernel for inference and for long
    rows (it is faster there and holds no batch × heads × queries × keys tensor)."""
    from torch.profiler import ProfilerActivity, profile

    assert (not grad or 4 * queries * keys > MAX_SCORES) == flash
    q = torch.randn(1, 4, queries, 64, requires_grad=grad)  # the limit is for 64-dimension heads
    k, v = torch.randn(1, 2, keys, 64), torch.randn(1, 2, keys, 64)
    mask = torch.ones(1, 1, queries, keys, dtype=torch.bool)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    with torch.set_grad_enabled(grad), profile(activities=[ProfilerActivity.CPU]) as prof:
        out, _ = attention_forward(module, q, k, v, mask)
    ops = {e.key for e in prof.key_averages()}
    assert any("scaled_dot_product" in op for op in ops) == flash
    assert out.shape == (1, queries, 4, 64)


@pytest.mark.parametrize("case", ["value heads of another size", "no mask, fewer queries than keys", "additive mask"])
def test_shapes_the_matrix_path_does_not_cover_go_to_sdpa(case, matrix_calls):
    q = torch.randn(1, 4, 8, 16, requires_grad=True)
    k, v = torch.randn(1, 2, 12, 16), torch.randn(1, 2, 12, 8 if case == "value heads of another size" else 16)
    mask = torch.ones(1, 1, 8, 12, dtype=torch.bool).tril(4)
    if case == "no mask, fewer queries than keys":
        mask = None
    elif case == "additive mask":
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    out, _ = attention_forward(module, q, k, v, mask)
    assert not matrix_calls and out.shape == (1, 8, 4, v.shape[-1])
