"""Learning curve on BBC News: how many labelled articles does LoRA fine-tuning of SmolLM2-135M need to match
zero-/few-shot prompting of the same model (and a tf-idf baseline)?

Fine-tunes the embedded SmolLM2-135M-Instruct on seeded stratified subsamples of the training split of
`examples/bbc-news.toml` (sizes 25, 50, 100, 200 × seeds 1, 2 by default, one epoch each), scores every model on
the same 200 held-out articles, runs the reference systems once, and writes the report.

    python bench/bbc_curve.py [--sizes 25 50 100 200] [--seeds 1 2] [--answers generate]
                              [--test 200] [--out bench/results/bbc_curve.json]

Points, references, adapters and the report (report.html, report.md, figures/) are kept under
bench/results/bbc_curve/; a rerun skips every finished point. The learning-curve figure is also copied to
bench/results/bbc_curve.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = ["smollm2 zero-shot generate", "smollm2 zero-shot constrained", "smollm2 3-shot constrained",
              "tf-idf + logistic regression"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["25", "50", "100", "200"],
                    help='training-set sizes (integers, or "all")')
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--answers", nargs="+", default=["generate"], choices=["generate", "constrained"])
    ap.add_argument("--references", nargs="*", default=REFERENCES,
                    help="systems of examples/bbc-news.toml drawn as reference lines")
    ap.add_argument("--test", type=int, default=None, help="score on a seeded subsample of N test articles "
                    "(default: all 200; for a quick check)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=None, help="LoRA learning rate (default: annotune's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "bbc_curve"),
                    help="output folder (points, references, adapters, report)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bbc_curve.json"), help="JSON summary")
    ap.add_argument("--reuse-systems", default=str(ROOT / "bench" / "results" / "bbc_finetune"),
                    help="copy finished reference systems from this output folder (reused only where their "
                         "fingerprint matches)")
    ap.add_argument("--fresh", action="store_true", help="re-evaluate every point and reference")
    args = ap.parse_args(argv)

    import torch

    from annotune.cli.render import print_curve_table, print_results_table
    from annotune.environment import quiet_libraries as _quiet_libraries
    from annotune.experiments.config import load_config
    from annotune.experiments.curve import Curve
    from annotune.experiments.fingerprints import slug
    from annotune.report import write_report

    _quiet_libraries()
    torch.set_num_threads(os.cpu_count() or 1)
    sizes = [s if s == "all" else int(s) for s in args.sizes]
    output = Path(args.output)
    cfg = load_config(ROOT / "examples" / "bbc-news.toml", output=output)
    split = cfg.split.model_dump(exclude_unset=True) | ({"max_test": args.test} if args.test else {})
    finetune = {"epochs": args.epochs, "batch_size": args.batch_size}
    if args.lr:
        finetune["learning_rate"] = args.lr
    known = {s.name for s in cfg.systems}
    missing = [r for r in args.references if r not in known]
    if missing:
        ap.error(f"unknown reference(s) {missing}; the config's systems: {sorted(known)}")
    cfg = cfg.derive(split=split, finetune=finetune, curve={"sizes": sizes, "seeds": args.seeds,
                                                             "answer": args.answers, "references": args.references})
    reuse = Path(args.reuse_systems) / "systems"
    if reuse.is_dir() and not args.fresh:  # Comparison reuses a copied system only if its fingerprint matches
        (output / "systems").mkdir(parents=True, exist_ok=True)
        for name in args.references:
            src, dst = reuse / f"{slug(name)}.json", output / "systems" / f"{slug(name)}.json"
            if src.exists() and not dst.exists():
                shutil.copy2(src, dst)

    load_before = os.getloadavg()
    started = time.time()
    curve = Curve(cfg, progress=True, fresh=args.fresh, log=print).run()
    seconds = time.time() - started
    results = json.loads((output / "results.json").read_text())
    print_results_table(results)
    print_curve_table(curve)
    paths = write_report(output)
    figure = Path(args.out).with_suffix(".png")
    figure.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paths["figures"] / "learning-curve.png", figure)

    points = curve["points"]
    summary = {
        "bench": "bbc_curve",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(seconds, 1),
        "seconds_note": "wall time of this invocation; points and references reused from an earlier run cost ~0",
        "train_seconds_total": curve["train_seconds_total"],
        "eval_seconds_total": round(sum(a["stats"].get("seconds") or 0 for p in points
                                        for a in p["answers"].values()), 1),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "hardware": curve["environment"]["hardware"],
        "libraries": curve["environment"]["libraries"],
        "settings": {"sizes": sizes, "seeds": args.seeds, "answers": args.answers, "references": args.references,
                     "test": curve["data"]["test"], "train_pool": curve["data"]["train_pool"],
                     "finetune": finetune, "base_model": curve["base_model"], "n_boot": curve["n_boot"],
                     "seed": curve["seed"]},
        "primary": curve["primary"],
        "references": curve["references"],
        "curve": {answer: {"rows": [{k: r[k] for k in ("size", "n_train", "seeds", "values", "mean", "sd", "ci",
                                                       "seed_ci", "valid_rate", "accuracy", "train_seconds",
                                                       "train_tokens", "train_tokens_per_s", "eval_seconds",
                                                       "vs_references")} for r in block["rows"]],
                           "matches": block["matches"]}
                  for answer, block in curve["answers"].items()},
        "points": [{"size": p["size"], "seed": p["seed"], "n_train": p["n_train"], "training": {
            k: p["training"].get(k) for k in ("wall_seconds", "tokens", "tokens_per_s", "steps", "train_loss",
                                              "dtype", "device")},
            "answers": {a: {"primary": r["metrics"][r["metrics"]["primary"]],
                            "ci": r["metrics"].get(r["metrics"]["primary"] + "_ci"),
                            "valid_rate": r["metrics"]["valid_rate"], "eval_seconds": r["stats"].get("seconds")}
                        for a, r in p["answers"].items()}} for p in points],
        "report": str(paths["html"]),
        "figure": str(figure),
    }
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"\n{len(points)} points, {curve['train_seconds_total']:.0f} s of training, {seconds:.0f} s in all")
    print(f"wrote {args.out}, {figure} and {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
