"""Flourishing learning curve: what would more labelled tweets do for the systems that learn?

The seed paper's task (46 dimensions × low/medium/high, its own split: 1,891 training tweets, 513 test
tweets). `annotune curve` with ``answer = []`` (no generative LoRA points: one epoch of it takes 30 minutes
and scores far below, see bench/flourishing.py): the SmolLM2-135M `head` system, MiniLM embeddings + LR and
TF-IDF, each trained on seeded stratified subsamples of 1/8, 1/4, 1/2 and all of the training tweets (two
seeds) and scored on the same test tweets; GPT-4's published codings are the line to reach.

    python bench/flourishing_curve.py [--sizes 236 472 945 all] [--seeds 13 7]
                                      [--output bench/results/flourishing_curve]
                                      [--out bench/results/flourishing_curve.json]

Prints the curve tables, and per line a least-squares fit of intensity micro-F1 against log2(training
tweets): the gain per doubling and where the fitted line would reach GPT-4 — an extrapolation, not a
measurement (learning curves flatten). Points, references and the report are kept under
bench/results/flourishing_curve/ (a rerun skips finished points); the figure is copied next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from labelling_speed import working_roofline  # noqa: E402

GPT4 = ROOT.parent / "shared" / "data" / "flourishing" / "gpt4_predictions.jsonl"
SYSTEMS = [
    {"name": "GPT-4 (published codings)", "type": "predictions", "path": str(GPT4), "label_field": "labels"},
    {"name": "smollm2 head", "type": "head", "max_text_tokens": 128},
    {"name": "minilm embeddings + LR", "type": "embedding", "model": "minilm"},
    {"name": "tf-idf + logistic regression", "type": "tfidf"},
]


def log_fit(rows: list[dict], target: float) -> dict | None:
    """Least squares of the seed-mean against log2(training documents): the gain per doubling and the
    training documents at which the fitted line reaches ``target`` (None where it never rises)."""
    xs, ys = [math.log2(r["n_train"]) for r in rows], [r["mean"] for r in rows]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    reach = 2 ** (mx + (target - my) / slope) if slope > 0 else None
    return {"per_doubling": slope, "intercept_at_1": my - slope * mx, "reaches_target_at": reach}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["236", "472", "945", "all"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[13, 7],
                    help="13 (the config's seed) reuses the full-size reference runs for the 'all' point")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "flourishing_curve"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "flourishing_curve.json"))
    args = ap.parse_args(argv)

    from annotune.cli.render import print_curve_table, print_results_table
    from annotune.environment import hardware, library_versions, quiet_libraries
    from annotune.experiments.config import load_config
    from annotune.experiments.curve import Curve
    from annotune.report import write_report

    quiet_libraries()
    roofline = working_roofline()
    sizes = [s if s == "all" else int(s) for s in args.sizes]
    output = Path(args.output)
    cfg = load_config(ROOT / "examples" / "flourishing.toml", output=output)
    cfg = cfg.derive(split={"field": "split"}, systems=SYSTEMS, curve={
        "sizes": sizes, "seeds": args.seeds, "answer": [], "references": [s["name"] for s in SYSTEMS]})
    started = time.time()
    curve = Curve(cfg, progress=True, log=print).run()
    seconds = time.time() - started
    print_results_table(json.loads((output / "results.json").read_text()))
    print_curve_table(curve)
    gpt4 = next(r["value"] for r in curve["references"] if r["name"] == SYSTEMS[0]["name"])
    fits = {line: log_fit(block["rows"], gpt4) for line, block in curve["answers"].items()}
    print(f"\nleast squares of intensity micro-F1 on log2(training tweets), GPT-4 at {gpt4:.3f}:")
    for line, fit in fits.items():
        if fit:
            reach = fit["reaches_target_at"]
            pool = curve["data"]["train_pool"]
            where = ("never" if reach is None else f"{reach:,.0f} tweets ({reach / pool:,.0f}× the training set)"
                     if reach < 1000 * pool else f"over 1,000× the training set ({reach:.1e} tweets)")
            print(f"  {line}: {fit['per_doubling']:+.3f} per doubling; the line reaches GPT-4 at {where}")
    paths = write_report(output)
    figure = Path(args.out).with_suffix(".png")
    figure.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paths["figures"] / "learning-curve.png", figure)
    summary = {
        "bench": "flourishing_curve", "date": time.strftime("%Y-%m-%d"), "seconds": round(seconds, 1),
        "seconds_note": "wall time of this invocation; points and references reused from an earlier run cost ~0",
        "train_seconds_total": curve["train_seconds_total"], "roofline": roofline,
        "hardware": hardware(), "libraries": library_versions(),
        "settings": {"sizes": sizes, "seeds": args.seeds, "systems": SYSTEMS[1:], "test": curve["data"]["test"],
                     "train_pool": curve["data"]["train_pool"], "n_boot": curve["n_boot"]},
        "primary": curve["primary"], "references": curve["references"],
        "curve": {line: [{k: r[k] for k in ("size", "n_train", "seeds", "values", "mean", "ci", "train_seconds",
                                            "eval_docs_per_s", "vs_references")} for r in block["rows"]]
                  for line, block in curve["answers"].items()},
        "log2_fit": fits, "report": str(paths["html"]), "figure": str(figure),
    }
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"\n{roofline['dtype']} matmul roofline in this run: {roofline['gflops']:.0f} GFLOP/s; "
          f"{curve['train_seconds_total']:.0f} s of training, {seconds:.0f} s in all; wrote {args.out}, {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
