#!/usr/bin/env python
"""LoRA training speed and memory of SmolLM2-135M on three tasks, with and without the shared prompt prefix.

    python bench/train_speed.py [--tasks bbc flourishing medquad] [--steps 6] [--out bench/results/train_speed.json]

For each task (the example configs' prompts and ``[finetune]`` settings: BBC News 256 document tokens,
flourishing 128 tweet tokens with 46 dimensions in the instructions, MedQuAD answers of up to 384 tokens) and
each way of encoding the batch — ``per row`` (every row encodes its whole prompt, the plain Trainer way) and
``shared prefix`` (`[finetune] share_prefix`, the default: the prompt prefix all rows share is encoded once) —
one fresh process trains ``--steps`` steps of batch 8 on a seeded sample of training documents and reports:
seconds per step (the first step, warm-up, left out), tokens per step (every row's full prompt and answer),
tokens the model actually encoded, tokens/s, the fraction of the matmul roofline measured in this run (bf16 where
the CPU has it natively, fp32 otherwise: the dtype annotune trains in)
(4 × non-embedding parameters FLOPs per encoded token: forward and backward through frozen weights), and the
process's peak RSS. One process per measurement, run one after the other: peak RSS is per process, and two
torch processes on two cores slow each other down.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from benchlib import ChildFailed, report_child_result, run_child, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

TASKS = {
    "bbc": ("bbc-news.toml", {}, {}),
    "flourishing": ("flourishing.toml", {"field": "split"}, {"max_text_tokens": 128, "max_length": 768}),
    "medquad": ("medquad-qa.toml", {}, {}),
}
VARIANTS = {"per row": False, "shared prefix": True}


def rss_gib() -> dict[str, float]:
    """This process's resident memory now and its high-water mark so far (Linux /proc), GiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"now": int(fields["VmRSS"].split()[0]) / 2**20, "peak": int(fields["VmHWM"].split()[0]) / 2**20}


def speed_trainer(task: str, steps: int, folder: str, overrides: dict | None = None, memory: dict | None = None):
    """(trainer, settings): annotune's LoRA trainer for ``steps`` steps of batch-size seeded-shuffled training
    documents of ``task`` (its example config; no dev split, no checkpoint), ``overrides`` more `[finetune]`
    settings; ``memory`` gets the process's memory once the data are loaded and once the trainer is built."""
    import random

    from annotune.experiments.compare import split_data
    from annotune.experiments.config import load_config
    from annotune.finetune.trainer import FineTuner

    config, split, finetune = TASKS[task]
    cfg = load_config(ROOT / "examples" / config)
    if split or finetune:
        cfg = cfg.derive(**({"split": split} if split else {}), **({"finetune": finetune} if finetune else {}))
    train, _ = split_data(cfg, cfg.load_data())
    settings = cfg.finetune_config({"save_steps": 10_000, "max_dev": 0, "dev_size": 0, **(overrides or {})})
    docs = list(train.docs)
    random.Random(0).shuffle(docs)
    if memory is not None:
        memory["data loaded"] = rss_gib()
    trainer, _ = FineTuner(cfg.codebook, settings, base_model="smollm2").build_trainer(
        docs[: settings.batch_size * steps], folder, progress=False)
    trainer.args.max_steps = steps
    if memory is not None:
        memory["model and trainer built"] = rss_gib()
    return trainer, settings


def measure(task: str, share: bool, steps: int, overrides: dict | None = None) -> dict:
    """Train `steps` steps in this process and return the measurement (run in a child process), with the
    process's memory after each stage: libraries imported, data loaded, model + trainer built, each step;
    ``overrides``: more `[finetune]` settings."""
    import torch
    from transformers import TrainerCallback

    from annotune.environment import quiet_libraries

    quiet_libraries()
    memory = {"libraries imported": rss_gib()}
    trainer, settings = speed_trainer(task, steps, f"/tmp/annotune-train-speed-{task}-{share}",
                                      {"share_prefix": share, **(overrides or {})}, memory)
    seconds: list[float] = []
    tokens: list[tuple[int, int]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            self.started = time.perf_counter()
            self.before = (trainer.tokens_seen, trainer.prefix_tokens_saved)

        def on_step_end(self, *args, **kwargs):
            seconds.append(time.perf_counter() - self.started)
            seen, saved = trainer.tokens_seen - self.before[0], trainer.prefix_tokens_saved - self.before[1]
            tokens.append((seen, seen - saved))
            memory[f"after step {len(seconds)}"] = rss_gib()

    trainer.add_callback(StepTimer())
    trainer.train()
    model = trainer.model.get_base_model()
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)  # the adapter left out
    non_embedding = frozen - model.get_input_embeddings().weight.numel()
    timed = slice(1, None)  # the first step warms up
    wall = sum(seconds[timed])
    return {
        "task": task, "shared_prefix": share, "steps": len(seconds), "batch_size": settings.batch_size,
        "seconds_per_step": wall / len(seconds[timed]),
        "tokens_per_step": sum(t for t, _ in tokens[timed]) / len(tokens[timed]),
        "encoded_tokens_per_step": sum(e for _, e in tokens[timed]) / len(tokens[timed]),
        "tokens_per_s": sum(t for t, _ in tokens[timed]) / wall,
        "encoded_tokens_per_s": sum(e for _, e in tokens[timed]) / wall,
        "non_embedding_params": non_embedding,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "memory_gib": memory,
        "train_loss_first_steps": trainer.state.log_history[-1].get("train_loss"),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--steps", type=int, default=6, help="training steps per measurement (the first is warm-up)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed.json"))
    ap.add_argument("--one", nargs=2, metavar=("TASK", "SHARE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        report_child_result(measure(args.one[0], args.one[1] == "1", args.steps))
        return 0

    from annotune.environment import hardware, library_versions
    from labelling_speed import native_bf16, working_roofline

    started = time.time()
    roof_before = working_roofline()["gflops"]
    rows = []
    for task in args.tasks:
        for variant, share in VARIANTS.items():
            try:
                measured = run_child(__file__, ["--steps", str(args.steps), "--one", task, str(int(share))])
            except ChildFailed as exc:
                print(exc, file=sys.stderr)
                return 1
            row = {"variant": variant, **measured}
            rows.append(row)
            print(f"{task:12} {variant:14} {row['seconds_per_step']:.2f} s/step  {row['tokens_per_s']:.0f} tok/s  "
                  f"peak {row['peak_rss_gib']:.2f} GiB", flush=True)
    roof = max(roof_before, working_roofline()["gflops"])
    for row in rows:
        row["roofline_fraction"] = row["encoded_tokens_per_s"] * 4 * row["non_embedding_params"] / 1e9 / roof
        plain = next(r for r in rows if r["task"] == row["task"] and not r["shared_prefix"])
        row["speedup"] = row["tokens_per_s"] / plain["tokens_per_s"]

    header = ("task", "encoding", "tokens/step", "encoded/step", "s/step", "tokens/s", "encoded tok/s",
              "% roofline", "peak RSS GiB", "× per row")
    print("\n" + " | ".join(header))
    for r in rows:
        print(" | ".join([r["task"], r["variant"], f"{r['tokens_per_step']:.0f}",
                          f"{r['encoded_tokens_per_step']:.0f}", f"{r['seconds_per_step']:.2f}",
                          f"{r['tokens_per_s']:.0f}", f"{r['encoded_tokens_per_s']:.0f}",
                          f"{100 * r['roofline_fraction']:.0f}", f"{r['peak_rss_gib']:.2f}", f"{r['speedup']:.2f}"]))
    out = {"bench": "train_speed", "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - started, 1),
           "hardware": hardware(), "libraries": library_versions(), "roofline_gflops": roof,
           "roofline_dtype": "bf16" if native_bf16() else "fp32",
           "steps": args.steps, "rows": rows}
    print(f"{'bf16' if native_bf16() else 'fp32'} roofline {roof:.0f} GFLOP/s")
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
