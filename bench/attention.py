#!/usr/bin/env python
"""Attention kernels on this CPU: PyTorch's SDPA (its CPU flash-attention kernel) against annotune's
matrix-product path (`annotune.backends.attention`), forward alone and forward + backward, at the shapes
annotune trains and labels with SmolLM2-135M (9 query heads, 3 key/value heads, 64 dimensions).

    python bench/attention.py [--out bench/results/attention.json]

Each shape is timed in the dtype annotune computes in here (bf16 where the CPU has it natively, fp32 otherwise),
the best of 5 runs, both ways in the same process; the table gives milliseconds, the speed-up of the matrix path,
and the largest difference of its output (and, for training shapes, its gradients) from SDPA's relative to
their size. ``path`` is the one `annotune.backends.attention` takes for that shape.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchlib import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

# (what it is, batch, queries, keys, backward too)
SHAPES = [
    ("training: BBC quick example, rows after a shared prefix", 8, 165, 225, True),
    ("training: 256-token articles", 8, 290, 350, True),
    ("training: 512-token rows (head @ 512)", 4, 512, 512, True),
    ("training: flourishing question tree", 2, 1300, 1900, True),
    ("labelling: documents over the prompt prefix", 8, 150, 250, False),
    ("labelling: documents over a 3-shot prefix", 8, 150, 950, False),
    ("labelling: decoding step of 32 rows", 32, 1, 300, False),
    ("labelling: 512-token documents", 4, 512, 600, False),
    ("labelling: flourishing question tree", 1, 1300, 1900, False),
]


def time_best(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure(batch: int, queries: int, keys: int, backward: bool, dtype) -> dict:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from annotune.backends.attention import matrix_attention

    torch.manual_seed(0)
    heads, kv_heads, dim = 9, 3, 64
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    q = torch.randn(batch, heads, queries, dim, dtype=dtype, requires_grad=backward)
    k = torch.randn(batch, kv_heads, keys, dim, dtype=dtype, requires_grad=backward)
    v = torch.randn(batch, kv_heads, keys, dim, dtype=dtype, requires_grad=backward)
    mask = torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries).expand(batch, 1, queries, keys)
    grad_out = torch.randn(batch, queries, heads, dim, dtype=dtype)
    ways = {"sdpa": lambda: sdpa_attention_forward(module, q, k, v, mask)[0],
            "matrix": lambda: matrix_attention(module, q, k, v, mask, None, True)}
    seconds, outputs = {}, {}
    for name, forward in ways.items():
        if backward:
            def step(forward=forward):
                q.grad = k.grad = v.grad = None
                forward().backward(grad_out)
            seconds[name] = time_best(step)
            step()
            outputs[name] = [x.grad.float() for x in (q, k, v)]
        else:
            with torch.no_grad():
                seconds[name] = time_best(forward)
                outputs[name] = [forward().float()]
    difference = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(outputs["matrix"], outputs["sdpa"]))
    return {"sdpa_ms": 1e3 * seconds["sdpa"], "matrix_ms": 1e3 * seconds["matrix"],
            "speedup": seconds["sdpa"] / seconds["matrix"], "relative_difference": difference}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "attention.json"))
    args = ap.parse_args(argv)

    import torch

    from annotune.backends.attention import MAX_INFERENCE_SCORES, MAX_TRAINING_SCORES
    from annotune.environment import hardware, library_versions
    from labelling_speed import native_bf16, working_roofline

    started = time.time()
    dtype = torch.bfloat16 if native_bf16() else torch.float32
    roof = working_roofline()
    rows = []
    print("shape | batch × queries × keys | pass | path | SDPA ms | matrix ms | × | rel. difference")
    for what, batch, queries, keys, backward in SHAPES:
        limit = MAX_TRAINING_SCORES if backward else MAX_INFERENCE_SCORES
        row = {"shape": what, "batch": batch, "queries": queries, "keys": keys, "backward": backward,
               "path": "matrix" if batch * 9 * queries * keys <= limit else "sdpa",
               **measure(batch, queries, keys, backward, dtype)}
        rows.append(row)
        print(f"{what} | {batch} × {queries} × {keys} | {'fwd+bwd' if backward else 'fwd'} | {row['path']} | "
              f"{row['sdpa_ms']:.1f} | {row['matrix_ms']:.1f} | {row['speedup']:.2f} | "
              f"{row['relative_difference']:.1e}", flush=True)
    print(f"{roof['dtype']} roofline {roof['gflops']:.0f} GFLOP/s, {torch.get_num_threads()} threads")
    write_result(args.out, {"bench": "attention", "date": time.strftime("%Y-%m-%d"),
                            "seconds": round(time.time() - started, 1), "hardware": hardware(),
                            "libraries": library_versions(), "dtype": str(dtype).replace("torch.", ""),
                            "roofline": roof, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
