#!/usr/bin/env python
"""What holds LoRA training's memory: SmolLM2-135M on flourishing (or BBC News), one fresh process per variant.

    python bench/train_memory.py [--task flourishing] [--steps 5] [--out bench/results/train_memory.json]

Variants, each `bench/train_speed.py`'s measurement (batch 8, the shared prompt prefix, resident memory after
libraries, data, model + trainer, and each step; the first step left out of the timing): the ``default``
(a step's 8 documents in micro-batches of at most ``micro_batch_tokens`` = 2,560 example tokens, gradients
accumulated); the ``whole batch in one pass`` (``micro_batch_tokens = 0``, the default before 2026-12-04);
the same with glibc's mmap threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``), so freed activations go
back to the system instead of staying in the heap; with gradient checkpointing (which turns the shared prefix
off); ``batch 4`` in one pass. Peak RSS minus the resident memory
before the first step is what a step's activations (and the allocator) take.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchlib import ChildFailed, report_child_result, run_child, write_result
from train_speed import ROOT, TASKS, measure

WHOLE = {"micro_batch_tokens": 0}
VARIANTS = {  # name -> ([finetune] overrides, environment)
    "default (micro-batches of <= 2,560 tokens)": ({}, {}),
    "whole batch in one pass": (WHOLE, {}),
    "whole batch, malloc returns memory": (WHOLE, {"MALLOC_MMAP_THRESHOLD_": "131072",
                                                   "MALLOC_TRIM_THRESHOLD_": "131072"}),
    "whole batch, gradient checkpointing": ({**WHOLE, "gradient_checkpointing": True}, {}),
    "batch 4 in one pass": ({**WHOLE, "batch_size": 4}, {}),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="flourishing", choices=list(TASKS))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_memory.json"))
    ap.add_argument("--one", metavar="VARIANT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        report_child_result(measure(args.task, True, args.steps, VARIANTS[args.one][0]))
        return 0

    from annotune.environment import hardware, library_versions

    started = time.time()
    rows = []
    for name in args.variants:
        overrides, env = VARIANTS[name]
        try:
            m = run_child(__file__, ["--task", args.task, "--steps", str(args.steps), "--one", name],
                          env={**os.environ, **env})
        except ChildFailed as exc:
            print(exc, file=sys.stderr)
            return 1
        built = m["memory_gib"]["model and trainer built"]["now"]
        after = m["memory_gib"][f"after step {m['steps']}"]["now"]
        rows.append({"variant": name, "overrides": overrides, "environment": env, **m,
                     "before_steps_gib": built, "after_steps_gib": after, "step_peak_gib": m["peak_rss_gib"] - built})
        print(f"{name:24} {m['seconds_per_step']:.1f} s/step  peak {m['peak_rss_gib']:.2f} GiB  "
              f"(before steps {built:.2f}, after {after:.2f})", flush=True)
    print("\n| variant | s/step | encoded tok/s | before steps GiB | peak GiB | resident after steps GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['seconds_per_step']:.1f} | {r['encoded_tokens_per_s']:.0f} | "
              f"{r['before_steps_gib']:.2f} | {r['peak_rss_gib']:.2f} | {r['after_steps_gib']:.2f} |")
    write_result(args.out, {"bench": "train_memory", "task": args.task, "date": time.strftime("%Y-%m-%d"),
                            "seconds": round(time.time() - started, 1), "hardware": hardware(),
                            "libraries": library_versions(), "steps": args.steps, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
