"""Sentence encoders as the peer to beat: frozen embeddings + LR and SetFit vs TF-IDF (and GPT-4's codings
on flourishing), every trained system on the same training documents.

- BBC News: the split of examples/bbc-news.toml (200 test articles), ``--bbc-train`` (200) training
  articles shared by every system.
- Flourishing: the test split (513 tweets, or ``--flourishing-test``), ``--flourishing-train`` training
  tweets (default: all 1,891), GPT-4's published codings as the closed-model row.

    python bench/encoders.py [--bbc-train 200] [--flourishing-train N] [--setfit-steps 100] [--skip-setfit]

Prints one table per task and writes bench/results/encoders.json (training seconds, labelling docs/s and
the task's metrics per system). Finished systems are reused by a rerun (bench/results/encoders/).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchlib import write_result

ROOT = Path(__file__).resolve().parents[1]


def run(cfg, print_results_table, Comparison) -> dict:
    started = time.time()
    results = Comparison(cfg, progress=True, log=print).run()
    print_results_table(results)
    return {"seconds": round(time.time() - started, 1), "results": results}


def rows(results: dict, keys: tuple[str, ...]) -> list[dict]:
    out = []
    for s in results["systems"]:
        st = s["stats"]
        train_s = st.get("train_seconds") or (st.get("encode_train_seconds") if s["type"] == "embedding" else None)
        out.append({"name": s["name"], "type": s["type"], "train_docs": s.get("train_docs"),
                    "metrics": {k: s["metrics"].get(k) for k in keys}, "train_seconds": train_s,
                    "label_seconds": st.get("seconds"), "docs_per_s": st.get("docs_per_s")})
    return out


def main(argv=None) -> int:
    from annotune.cli.render import print_results_table
    from annotune.environment import quiet_libraries
    from annotune.experiments.compare import Comparison
    from annotune.experiments.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bbc-train", type=int, default=200)
    ap.add_argument("--flourishing-train", type=int, default=None)
    ap.add_argument("--flourishing-test", type=int, default=None)
    ap.add_argument("--setfit-steps", type=int, default=100)
    ap.add_argument("--skip-setfit", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "encoders.json"))
    args = ap.parse_args(argv)
    quiet_libraries()
    out_dir = ROOT / "bench" / "results" / "encoders"

    encoders = [{"name": "minilm embeddings + LR", "type": "embedding", "model": "minilm"}]
    if not args.skip_setfit:
        encoders.append({"name": f"minilm SetFit {args.setfit_steps} steps", "type": "setfit", "model": "minilm",
                         "max_steps": args.setfit_steps})
    tfidf = {"name": "tf-idf + logistic regression", "type": "tfidf"}

    bbc = load_config(ROOT / "examples" / "bbc-news.toml", output=out_dir / "bbc")
    bbc = bbc.derive(train_size=args.bbc_train, systems=[tfidf, *encoders])
    bbc_run = run(bbc, print_results_table, Comparison)

    flo = load_config(ROOT / "examples" / "flourishing.toml", output=out_dir / "flourishing")
    split = {"field": "split", **({"max_test": args.flourishing_test} if args.flourishing_test else {})}
    gpt4 = {"name": "GPT-4 (published codings)", "type": "predictions",
            "path": str(ROOT.parent / "shared" / "data" / "flourishing" / "gpt4_predictions.jsonl"),
            "label_field": "labels"}
    flo = flo.derive(split=split, train_size=args.flourishing_train, systems=[gpt4, tfidf, *encoders])
    flo_run = run(flo, print_results_table, Comparison)

    env = bbc_run["results"]["environment"]
    out = {
        "bench": "encoders",
        "date": time.strftime("%Y-%m-%d"),
        "hardware": env["hardware"],
        "libraries": env["libraries"],
        "bbc": {"seconds": bbc_run["seconds"], "test_documents": bbc_run["results"]["data"]["test"],
                "systems": rows(bbc_run["results"], ("accuracy", "macro_f1", "macro_f1_ci", "valid_rate"))},
        "flourishing": {"seconds": flo_run["seconds"], "test_documents": flo_run["results"]["data"]["test"],
                        "systems": rows(flo_run["results"], ("intensity_micro_f1", "intensity_micro_f1_ci",
                                                             "presence_micro_f1", "accD", "valid_rate"))},
    }
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
