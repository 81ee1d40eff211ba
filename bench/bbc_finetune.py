"""LoRA fine-tuning of the embedded SmolLM2-135M on BBC News vs zero-/few-shot prompting of the same model.

Fine-tunes on a seeded stratified subsample of the training split (400 articles by default, one epoch),
evaluates every system on the same 200 held-out articles as `examples/bbc-news.toml`, and reports
training speed as tokens/s and as a fraction of the matmul roofline (bf16 where native, else fp32) measured
in the same run (LoRA training costs ≈ 4 × non-embedding parameters FLOPs per token: forward 2N, backward through the
activations 2N; the frozen weights get no gradient).

    python bench/bbc_finetune.py [--train 400] [--epochs 1] [--out bench/results/bbc_finetune.json]

Finished systems and the trained run are kept under bench/results/bbc_finetune/ and reused by a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchlib import comparison_header, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from labelling_speed import working_roofline  # noqa: E402


def main(argv=None) -> int:
    from annotune.cli.render import print_results_table
    from annotune.environment import quiet_libraries as _quiet_libraries
    from annotune.experiments.compare import Comparison
    from annotune.experiments.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=400, help="training articles (seeded stratified subsample)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=None, help="LoRA learning rate (default: annotune's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bbc_finetune.json"))
    ap.add_argument("--fresh", action="store_true", help="recompute every system")
    args = ap.parse_args(argv)
    _quiet_libraries()

    cfg = load_config(ROOT / "examples" / "bbc-news.toml", output=ROOT / "bench" / "results" / "bbc_finetune")
    finetune = {"epochs": args.epochs, "batch_size": args.batch_size}
    if args.lr:
        finetune["learning_rate"] = args.lr
    cfg = cfg.derive(finetune=finetune, systems=[
        {"name": "smollm2 zero-shot generate", "type": "prompt", "shots": 0, "answer": "generate"},
        {"name": "smollm2 zero-shot constrained", "type": "prompt", "shots": 0, "answer": "constrained"},
        {"name": "smollm2 3-shot constrained", "type": "prompt", "shots": 3, "answer": "constrained",
         "example_chars": 600},
        {"name": f"smollm2 LoRA {args.train} generate", "type": "finetuned", "train_size": args.train,
         "answer": "generate"},
        {"name": f"smollm2 LoRA {args.train} constrained", "type": "finetuned", "train_size": args.train,
         "answer": "constrained"},
        {"name": "tf-idf + logistic regression", "type": "tfidf"},
    ])
    roof = working_roofline()
    started = time.time()
    results = Comparison(cfg, progress=True, fresh=args.fresh, log=print).run()
    print_results_table(results)

    ft = next(s for s in results["systems"] if s["spec"]["type"] == "finetuned")
    manifest = json.loads((Path(ft["stats"]["run"]) / "manifest.json").read_text())
    from annotune.backends.models import load_causal_lm

    model, _, _ = load_causal_lm("smollm2", dtype="fp32")
    n_total = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()
    non_embedding = n_total - n_embed
    tps = manifest["training"]["tokens_per_s"]
    achieved = tps * 4 * non_embedding / 1e9 if tps else None
    training = {
        "train_examples": manifest["data"]["train"],
        "dev_examples": manifest["data"]["dev"],
        "epochs": args.epochs,
        "steps": manifest["resolved"]["steps"],
        "dtype": manifest["resolved"]["dtype"],
        "wall_seconds": manifest["training"]["wall_seconds"],
        "tokens": manifest["training"]["tokens"],
        "tokens_per_s": tps,
        "non_embedding_params": non_embedding,
        "achieved_gflops": achieved,
        "bf16_roofline_gflops": roof["gflops"],
        "roofline_fraction": achieved / roof["gflops"] if achieved else None,
        "peak_memory_gib": manifest["training"]["peak_memory_gib"],
        "train_loss": manifest["training"]["train_loss"],
        "dev_loss": manifest["training"]["dev_loss"],
    }
    print("\ntraining: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in training.items()))
    out = {
        **comparison_header("bbc_finetune", started, results),
        "training": training,
        "systems": [{"name": s["name"], "metrics": {k: s["metrics"].get(k) for k in (
            "valid_rate", "accuracy_valid", "accuracy", "macro_f1", "macro_f1_ci", "kappa")},
            "docs_per_s": s["stats"].get("docs_per_s"), "seconds": s["stats"].get("seconds")}
            for s in results["systems"]],
    }
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
