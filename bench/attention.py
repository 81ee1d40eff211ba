#!/usr/bin/env python
"""Attention kernels on this CPU: PyTorch's SDPA (its CPU flash-attention kernel) against annotune's
matrix-product path (`annotune.backends.attention`), forward alone and forward + backward, at the shapes
annotune trains and labels with SmolLM2-135M (9 query heads, 3 key/value heads, 64 dimensions).

    python bench/attention.py [--tasks bbc-quick bbc flourishing] [--steps 11] [--out bench/results/attention.json]

Each shape is timed in the dtype annotune computes in here (bf16 where the CPU has it natively, fp32 otherwise),
the best of 5 runs, both ways in the same process; the table gives milliseconds, the speed-up of the matrix path,
and the largest difference of its output (and, for training shapes, its gradients) from SDPA's relative to
their size. ``path`` is the one annotune takes for that shape (the matrix path only while training: on whole
labelling runs it gained too little, see `annotune.backends.attention`).

Then whole LoRA training steps (`bench/train_speed.py`'s setting: the example configs' prompts, batch 8, shared
prefix) for each of ``--tasks``, one fresh process per task, the model switched between ``sdpa`` and annotune's
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


TRAINING = {"bbc-quick": ("bbc", {"max_text_tokens": 128}), "bbc": ("bbc", {}), "flourishing": ("flourishing", {})}


def alternating_steps(task: str, steps: int) -> dict:
    """Train ``steps`` steps in this process (a child), switching the attention at every step."""
    import random

    from transformers import TrainerCallback

    from annotune.backends.attention import ATTENTION
    from annotune.environment import quiet_libraries
    from annotune.experiments.compare import split_data
    from annotune.experiments.config import load_config
    from annotune.finetune.trainer import FineTuner
    from train_speed import TASKS

    quiet_libraries()
    name, overrides = TRAINING[task]
    config, split, finetune = TASKS[name]
    cfg = load_config(ROOT / "examples" / config)
    if split or finetune:
        cfg = cfg.derive(**({"split": split} if split else {}), **({"finetune": finetune} if finetune else {}))
    train, _ = split_data(cfg, cfg.load_data())
    settings = cfg.finetune_config({"save_steps": 10_000, "max_dev": 0, "dev_size": 0, **overrides})
    docs = list(train.docs)
    random.Random(0).shuffle(docs)
    trainer, _ = FineTuner(cfg.codebook, settings, base_model="smollm2").build_trainer(
        docs[: settings.batch_size * steps], f"/tmp/annotune-attention-{task}", progress=False)
    trainer.args.max_steps = steps
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
    sdpa, ours = (sum(v) / len(v) for v in (seconds["sdpa"], seconds[ATTENTION]))
    return {"task": task, "steps": steps, "sdpa_s_per_step": sdpa, "annotune_s_per_step": ours,
            "speedup": sdpa / ours, "timed_steps": {k: len(v) for k, v in seconds.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="*", default=list(TRAINING), choices=list(TRAINING),
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
    for what, batch, queries, keys, backward in SHAPES:
        row = {"shape": what, "batch": batch, "queries": queries, "keys": keys, "backward": backward,
               "path": "matrix" if backward and batch * 9 * queries * keys <= MAX_SCORES else "sdpa",
               **measure(batch, queries, keys, backward, dtype)}
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
