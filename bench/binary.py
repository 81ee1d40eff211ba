#!/usr/bin/env python
"""Binary tasks with 400 balanced training documents, run with annotune's defaults: does a fine-tuned small
model collapse to one class?

Issue 10 asks that "a binary task with 400 balanced training documents must not end at κ ≈ 0 with the default
recipe". Each task here is one flourishing dimension turned into a yes/no question (does the tweet express
it, positively or negatively?): 200 "yes" and 200 "no" tweets drawn (seeded) from the train split of
../shared/data/flourishing/tweets.jsonl, evaluated on the whole test split (513 tweets, its own class balance).
No setting is tuned to these tasks: every system runs with its defaults.

    python bench/binary.py [--dimensions happiness "expressing optimism"] [--out bench/results/binary.json]

Systems: TF-IDF + LR, MiniLM embeddings + LR, SmolLM2-135M LoRA (default recipe; generated and constrained
answers from one run) and the `head` system (default recipe). Finished systems are reused by a rerun
(bench/results/binary/<dimension>/).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from benchlib import comparison_header, write_result

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "flourishing"
PER_CLASS = 200


def definitions() -> dict[str, str]:
    import tomllib

    raw = tomllib.loads((ROOT / "examples" / "flourishing.toml").read_text())
    return {lab["name"]: lab["definition"] for lab in raw["codebook"]["labels"]}


def write_task(dimension: str, definition: str, folder: Path) -> Path:
    """The task's data (balanced train part, whole test split) and config; returns the config's path."""
    tweets = [json.loads(line) for line in (DATA / "tweets.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(13)
    train = [t for t in tweets if t["split"] == "train"]
    rng.shuffle(train)
    yes = [t for t in train if t["labels"].get(dimension)][:PER_CLASS]
    no = [t for t in train if not t["labels"].get(dimension)][:PER_CLASS]
    if len(yes) < PER_CLASS:
        raise SystemExit(f"{dimension!r}: only {len(yes)} training tweets express it, {PER_CLASS} needed")
    rows = [{"id": t["id"], "text": t["text"], "label": "yes" if t["labels"].get(dimension) else "no",
             "split": "train"} for t in yes + no]
    rows += [{"id": t["id"], "text": t["text"], "label": "yes" if t["labels"].get(dimension) else "no",
              "split": "test"} for t in tweets if t["split"] == "test"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    config = f'''name = {json.dumps(dimension)}
seed = 13

[codebook.task]
name = {json.dumps(dimension)}
kind = "single"
instructions = {json.dumps(f"You are coding tweets. Does the tweet express {dimension} ({definition}), "
                           "positively or negatively?")}
text_field = "text"
label_field = "label"

[[codebook.labels]]
name = "yes"
definition = {json.dumps(f"the tweet expresses {dimension}")}

[[codebook.labels]]
name = "no"
definition = {json.dumps(f"the tweet does not express {dimension}")}

[data]
path = "data.jsonl"

[split]
field = "split"

[model]
name = "smollm2"

[[systems]]
name = "tf-idf + LR"
type = "tfidf"

[[systems]]
name = "minilm embeddings + LR"
type = "embedding"
model = "minilm"

[[systems]]
name = "smollm2 LoRA generate"
type = "finetuned"
answer = "generate"

[[systems]]
name = "smollm2 LoRA constrained"
type = "finetuned"
answer = "constrained"

[[systems]]
name = "smollm2 head"
type = "head"
'''
    (folder / "config.toml").write_text(config)
    return folder / "config.toml"


def main(argv=None) -> int:
    from annotune.cli.render import print_results_table
    from annotune.environment import quiet_libraries
    from annotune.experiments.compare import Comparison
    from annotune.experiments.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dimensions", nargs="+", default=["happiness", "expressing optimism"])
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "binary"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "binary.json"))
    args = ap.parse_args(argv)
    quiet_libraries()
    defs = definitions()
    started = time.time()
    tasks, header = [], None
    for dimension in args.dimensions:
        folder = Path(args.output) / dimension.replace(" ", "-")
        cfg = load_config(write_task(dimension, defs[dimension], folder), output=folder / "comparison")
        results = Comparison(cfg, progress=False, log=print).run()
        print_results_table(results)
        header = header or comparison_header("binary", started, results)
        keys = ("accuracy", "macro_f1", "macro_f1_ci", "kappa", "valid_rate", "per_class", "confusion")
        tasks.append({"dimension": dimension, "train": results["data"]["train"], "test": results["data"]["test"],
                      "systems": [{"name": s["name"], "metrics": {k: s["metrics"].get(k) for k in keys},
                                   "warnings": s["metrics"].get("warnings") or [],
                                   "train_docs": s.get("train_docs"), "seconds": s["stats"].get("seconds")}
                                  for s in results["systems"]]})
    print("\n| task | system | macro-F1 [95% CI] | κ | accuracy | share answered yes | warnings |")
    print("|---|---|---|---|---|---|---|")
    for t in tasks:
        for s in t["systems"]:
            m = s["metrics"]
            ci = m.get("macro_f1_ci") or [float("nan")] * 2
            confusion = m["confusion"]
            said_yes = sum(row[confusion["columns"].index("yes")] for row in confusion["matrix"])
            print(f"| {t['dimension']} | {s['name']} | {m['macro_f1']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
                  f"{m['kappa']:.3f} | {m['accuracy']:.3f} | {said_yes / t['test']:.2f} | "
                  f"{'; '.join(w.split(':')[0] for w in s['warnings']) or '–'} |")
    header["seconds"] = round(time.time() - started, 1)
    write_result(args.out, {**header, "per_class_train": PER_CLASS, "tasks": tasks})
    return 0


if __name__ == "__main__":
    sys.exit(main())
