#!/usr/bin/env python
"""Which LoRA recipe should be annotune's default? Learning-curve points on BBC News, ≥ 2 seeds per recipe.

Each recipe is a set of ``[finetune]`` settings; for each, `annotune curve`'s machinery fine-tunes the embedded
SmolLM2-135M-Instruct on seeded stratified subsamples of the training split of `examples/bbc-news.toml`
(``--sizes`` × ``--seeds``), keeps the best dev evaluation (10 % of the documents, once per epoch) and scores it
on the same 200 held-out articles with ``--answers``. One table: the task's primary metric (macro-F1) as the
mean over seeds with each seed's value, accuracy, and training seconds.

    python bench/recipe.py [--recipes RECIPE ...] [--sizes 100] [--seeds 1 2]
                           [--answers generate] [--out bench/results/recipe.json]

Points are kept under bench/results/recipe/<recipe>/; a rerun skips every finished point.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchlib import write_result

ROOT = Path(__file__).resolve().parents[1]

RECIPES = {  # name -> [finetune] settings over annotune's defaults (r 16, α 32, lr 1e-3, 3 epochs, no dropout)
    "1 epoch, lr 1e-3": {"epochs": 1},
    "3 epochs, lr 1e-3": {"epochs": 3},
    "3 epochs, lr 2e-4": {"epochs": 3, "learning_rate": 2e-4},
    "paper's LoRA (r 64, α 32, dropout 0.1), 3 epochs, lr 2e-4": {"epochs": 3, "learning_rate": 2e-4, "r": 64,
                                                                   "alpha": 32, "dropout": 0.1},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES)[:3], choices=list(RECIPES), metavar="RECIPE",
                    help=f"recipes to run (default: the first three): {', '.join(map(repr, RECIPES))}")
    ap.add_argument("--sizes", nargs="+", type=int, default=[100], help="training-set sizes")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--answers", nargs="+", default=["generate"], choices=["generate", "constrained"])
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "recipe"), help="points per recipe")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "recipe.json"), help="JSON summary")
    args = ap.parse_args(argv)

    import torch

    from annotune.environment import quiet_libraries
    from annotune.experiments.config import load_config
    from annotune.experiments.curve import Curve
    from annotune.experiments.fingerprints import slug
    from labelling_speed import native_bf16, working_roofline

    quiet_libraries()
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()
    roofline = working_roofline()["gflops"]
    recipes, environment = {}, None
    for name in args.recipes:
        cfg = load_config(ROOT / "examples" / "bbc-news.toml", output=Path(args.output) / slug(name))
        cfg = cfg.derive(finetune=RECIPES[name], curve={"sizes": args.sizes, "seeds": args.seeds,
                                                        "answer": args.answers,
                                                        "references": ["tf-idf + logistic regression"]})
        print(f"\n=== {name}", flush=True)
        curve = Curve(cfg, progress=False, log=print).run()
        environment = curve["environment"]
        recipes[name] = {
            "finetune": RECIPES[name],
            "primary": curve["primary"],
            "references": curve["references"],
            "rows": {answer: [{k: r[k] for k in ("size", "seeds", "values", "mean", "sd", "ci", "accuracy",
                                                 "valid_rate", "train_seconds")} for r in block["rows"]]
                     for answer, block in curve["answers"].items()},
            "best_dev_epoch": {f"{p['size']}-{p['seed']}": ((p["training"].get("dev") or {}).get("best") or {})
                               .get("epoch") for p in curve["points"]},
        }

    print(f"\n{'bf16' if native_bf16() else 'fp32'} roofline {roofline:.0f} GFLOP/s; BBC News, 200 test articles\n")
    print("| recipe | answers | train docs | macro-F1, mean over seeds [95% CI] | per seed | accuracy | train s "
          "| best dev epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rec in recipes.items():
        for answer, rows in rec["rows"].items():
            for r in rows:
                epochs = [e for k, e in rec["best_dev_epoch"].items() if k.startswith(f"{r['size']}-")]
                print(f"| {name} | {answer} | {r['size']} | {r['mean']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | "
                      f"{', '.join(f'{v:.3f}' for v in r['values'])} | {r['accuracy']:.3f} | "
                      f"{r['train_seconds'] or 0:.0f} | "
                      f"{', '.join(str(e) for e in epochs)} |")
    write_result(args.out, {"bench": "recipe", "date": time.strftime("%Y-%m-%d"),
                            "seconds": round(time.time() - started, 1), "roofline_gflops": roofline,
                            "roofline_dtype": "bf16" if native_bf16() else "fp32",
                            "hardware": environment["hardware"] if environment else None,
                            "libraries": environment["libraries"] if environment else None,
                            "settings": {"sizes": args.sizes, "seeds": args.seeds, "answers": args.answers},
                            "recipes": recipes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
