"""The *Rethinking Scale* flourishing task: LoRA-fine-tuned SmolLM2-135M vs GPT-4's published codings.

Fine-tunes on the `train` split of ../shared/data/flourishing/tweets.jsonl (46 dimensions x
low/medium/high, answered as a JSON object), evaluates on the `test` split (513 tweets) and puts GPT-4's
codings of the same tweets (gpt4_predictions.jsonl), a TF-IDF baseline and zero-shot prompting of the
same small model in one table: presence micro-F1, intensity micro-F1, accD, Jaccard, valid-JSON rate.

    python bench/flourishing.py [--train N] [--test N] [--epochs 1] [--questions]
                                [--out bench/results/flourishing.json]

``--questions`` adds two `constrained` systems: the same LoRA run (trained on JSON answers) answering the
46 per-dimension questions, and a run trained on those questions (``objective = "questions"``, one token tree
per tweet) — whether training on what `constrained` asks pays.

Finished systems and the trained run are kept under bench/results/flourishing/ and reused by a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchlib import comparison_header, write_result

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from annotune.cli.render import print_results_table
    from annotune.environment import quiet_libraries as _quiet_libraries
    from annotune.experiments.compare import Comparison
    from annotune.experiments.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=None, help="training tweets (default: the whole train split)")
    ap.add_argument("--test", type=int, default=None, help="test tweets (default: all 513)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "flourishing.json"))
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "flourishing"),
                    help="folder of the comparison (systems and runs, reused by a rerun)")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--questions", action="store_true", help="also constrained answering, trained on the answers "
                    "and on the questions (objective = \"questions\")")
    args = ap.parse_args(argv)
    _quiet_libraries()

    cfg = load_config(ROOT / "examples" / "flourishing.toml", output=args.output)
    split = {"field": "split", **({"max_test": args.test} if args.test else {})}
    finetune = {"epochs": args.epochs, "max_text_tokens": 128, "max_length": 768,
                **({"learning_rate": args.lr} if args.lr else {})}
    finetuned = {"type": "finetuned", "answer": "generate", "max_new_tokens": 192,
                 **({"train_size": args.train} if args.train else {})}
    label = f"LoRA {args.train or 'all'}"
    cfg = cfg.derive(split=split, finetune=finetune, systems=[
        {"name": "GPT-4 (published codings)", "type": "predictions",
         "path": str(ROOT.parent / "shared" / "data" / "flourishing" / "gpt4_predictions.jsonl"),
         "label_field": "labels"},
        {"name": "tf-idf + logistic regression", "type": "tfidf"},
        {"name": f"smollm2 {label} generate", **finetuned},
        *([{"name": f"smollm2 {label} constrained", **finetuned, "answer": "constrained"},
           {"name": f"smollm2 {label} questions-trained constrained", **finetuned, "answer": "constrained",
            "finetune": {"objective": "questions"}}] if args.questions else []),
    ])
    started = time.time()
    results = Comparison(cfg, progress=True, fresh=args.fresh, log=print).run()
    print_results_table(results)
    runs = {s["name"]: json.loads((Path(s["stats"]["run"]) / "manifest.json").read_text())
            for s in results["systems"] if s["spec"]["type"] == "finetuned"}
    manifest = runs[f"smollm2 {label} generate"]
    keys = ("valid_rate", "presence_micro_f1", "intensity_micro_f1", "intensity_micro_f1_ci", "accD", "jaccard")
    out = {
        **comparison_header("flourishing", started, results),
        "test_documents": results["data"]["test"],
        "training": {k: manifest["training"][k] for k in ("wall_seconds", "tokens", "tokens_per_s",
                                                          "train_loss", "dev_loss", "peak_memory_gib")}
        | {"train_examples": manifest["data"]["train"], "dev_examples": manifest["data"]["dev"]},
        "systems": [{"name": s["name"], "metrics": {k: s["metrics"].get(k) for k in keys},
                     "seconds": s["stats"].get("seconds"),
                     **({"objective": runs[s["name"]]["hyperparameters"]["objective"],
                         "train_seconds": runs[s["name"]]["training"]["wall_seconds"],
                         "train_tokens": runs[s["name"]]["training"]["tokens"]} if s["name"] in runs else {})}
                    for s in results["systems"]],
    }
    print(f"training: {out['training']}")
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
