#!/usr/bin/env python
"""Does a decision scale tuned on the dev documents rescue a fine-tuned run's `constrained` answers?

Fine-tuned on flourishing, a LoRA run answers "absent" to nearly every dimension question (92 % of the
training answers are "absent"). LoRA runs now tune one scale of the "absent" option's probability on their dev
documents during training (`annotune.finetune.dev_eval`), as the `head` system does. This bench takes the
finished runs of `bench/flourishing.py --questions` (both objectives), tunes that scale on each run's own dev
documents (its manifest's ``dev_ids``) exactly as training now does, and scores the test tweets of that bench
with and without it (one scoring pass: the same option probabilities decided twice).

    python bench/decision_scale.py [--runs bench/results/flourishing-questions/finetuned] [--test 100]
                                   [--out bench/results/decision_scale.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchlib import write_result

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=str(ROOT / "bench" / "results" / "flourishing-questions" / "finetuned"),
                    help="a folder of run folders (bench/flourishing.py --questions writes them)")
    ap.add_argument("--test", type=int, default=100, help="test tweets (the --test of bench/flourishing.py)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "decision_scale.json"))
    args = ap.parse_args(argv)

    from annotune.backends.local import LocalBackend
    from annotune.environment import hardware, library_versions, quiet_libraries
    from annotune.experiments.compare import split_data
    from annotune.experiments.config import load_config
    from annotune.finetune.thresholds import decide, tune_scale
    from annotune.finetune.trainer import is_run_folder, run_prompt_builder

    quiet_libraries()
    started = time.time()
    cfg = load_config(ROOT / "examples" / "flourishing.toml")
    cfg = cfg.derive(split={"field": "split", "max_test": args.test})
    train, test = split_data(cfg, cfg.load_data())
    codebook, task = cfg.codebook, cfg.codebook.task
    by_id = {d.id: d for d in train.docs}
    rows = []
    for run in sorted(p for p in Path(args.runs).iterdir() if is_run_folder(p)):
        manifest = json.loads((run / "manifest.json").read_text())
        dev = [by_id[i] for i in manifest["data"]["dev_ids"]]
        backend = LocalBackend(str(run), dtype=cfg.model.dtype, decision_scale=1.0,
                               max_text_tokens=manifest["hyperparameters"]["max_text_tokens"])
        builder = run_prompt_builder(run, codebook)
        t0 = time.time()
        scale, dev_metric = tune_scale(codebook, backend.option_probabilities(dev, builder),
                                       [d.label for d in dev])
        probs = backend.option_probabilities(test.docs, builder)
        seconds = time.time() - t0
        gold = [d.label for d in test.docs]
        row = {"run": run.name, "objective": manifest["hyperparameters"]["objective"],
               "train": manifest["data"]["train"], "dev": len(dev), "decision_scale": scale,
               "dev_metric_tuned": dev_metric, "seconds": round(seconds, 1)}
        for name, s in (("scale 1", 1.0), ("tuned", scale)):
            m = task.evaluate(gold, [decide(codebook, p, s)[0] for p in probs], seed=cfg.seed)
            row[name] = {k: m.get(k) for k in ("intensity_micro_f1", "intensity_micro_f1_ci", "presence_micro_f1",
                                               "accD", "accI", "warnings")}
        rows.append(row)
        print(f"{run.name} ({row['objective']}): scale {scale:g}, test intensity µF1 "
              f"{row['scale 1']['intensity_micro_f1']:.3f} → {row['tuned']['intensity_micro_f1']:.3f}", flush=True)
    print(f"\nflourishing, {len(test.docs)} test tweets, `constrained` answers of each run\n")
    print("| run (objective, train tweets) | decision scale (dev) | intensity µF1 [95% CI], scale 1 | "
          "intensity µF1 [95% CI], tuned | presence µF1 tuned | accD scale 1 → tuned |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        a, b = r["scale 1"], r["tuned"]
        ci_a, ci_b = a["intensity_micro_f1_ci"], b["intensity_micro_f1_ci"]
        print(f"| {r['objective']}, {r['train']} | {r['decision_scale']:g} | {a['intensity_micro_f1']:.3f} "
              f"[{ci_a[0]:.3f}, {ci_a[1]:.3f}] | {b['intensity_micro_f1']:.3f} [{ci_b[0]:.3f}, {ci_b[1]:.3f}] | "
              f"{b['presence_micro_f1']:.3f} | {a['accD']:.3f} → {b['accD']:.3f} |")
    write_result(args.out, {"bench": "decision_scale", "date": time.strftime("%Y-%m-%d"),
                            "seconds": round(time.time() - started, 1), "hardware": hardware(),
                            "libraries": library_versions(), "test_documents": len(test.docs), "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
