#!/usr/bin/env python
"""How much of each article should the `head` system read? A `head` (SmolLM2-135M unless ``--model``) on BBC
News, 400 training articles, documents cut to each of ``--tokens`` (default: 256, the system's default, and 512),
on the same 200 held-out articles as `examples/bbc-news.toml`, next to TF-IDF (which reads whole articles) and
MiniLM embeddings + LR trained on the same 400 articles.

    python bench/head_length.py [--tokens 256 512] [--train 400] [--model gemma3-270m] [--seed N] [--out FILE]

Prints one table (macro-F1 with its 95 % interval, training minutes, labelling docs/s, next to the
matmul roofline of annotune's dtype here measured in the same run) and writes bench/results/head_length.json.
Runs are kept under bench/results/head_length/; a rerun reuses every finished system.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import comparison_header, write_result  # noqa: E402
from labelling_speed import working_roofline  # noqa: E402
from replace_gpt4 import show, table  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", nargs="+", type=int, default=[256, 512], help="document cuts of the head systems")
    ap.add_argument("--train", type=int, default=400, help="training articles of every trained system")
    ap.add_argument("--model", default="smollm2", help="the head's model (gemma3-270m needs the gemma extra)")
    ap.add_argument("--seed", type=int, help="the head's training seed (default: the config's, 13)")
    ap.add_argument("--out", default=str(RESULTS / "head_length.json"))
    args = ap.parse_args(argv)

    from annotune.environment import quiet_libraries
    from annotune.experiments.compare import Comparison
    from annotune.experiments.config import load_config

    quiet_libraries()
    n = args.train
    roofline = working_roofline()
    cfg = load_config(ROOT / "examples" / "bbc-news.toml", output=RESULTS / "head_length")
    cfg = cfg.derive(train_size=n, systems=[
        {"name": f"tf-idf {n}", "type": "tfidf"},
        {"name": f"minilm embeddings + LR {n}", "type": "embedding", "model": "minilm"},
        *({"name": f"{args.model} head {n}, {t} tokens" + (f", seed {args.seed}" if args.seed is not None else ""),
           "type": "head", "model": args.model, "max_text_tokens": t,
           **({"seed": args.seed} if args.seed is not None else {})} for t in args.tokens),
    ])
    started = time.time()
    results = Comparison(cfg, progress=True, log=print).run()
    out = {**comparison_header("head_length", started, results), "roofline": roofline, "train_documents": n,
           "test_documents": results["data"]["test"], "systems": table(results)}
    print(f"\n{roofline['dtype']} matmul roofline in this run: {roofline['gflops']:.0f} GFLOP/s")
    show(f"BBC News ({out['test_documents']} test articles, {n} training articles)", out["systems"])
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
