"""Open medical question answering (issue 12): SmolLM2-135M base vs LoRA fine-tuned on MedQuAD, the dataset's
reference answers as a row, ROUGE-L and an LLM judge whose own reliability is measured — the Sarus study's table.

`examples/medquad-qa.toml` on a copy of ``../shared/data/medquad/qa.jsonl`` keeping the pairs whose reference
answer has at most ``--max-answer-words`` words (300: about three quarters of the pairs; longer references
would not fit the fine-tuning length or the judge's prompt on this CPU): fine-tune on ``--train`` training
pairs (seeded), answer ``--test`` test questions, judge every system's answers with the local judge
(the embedded model, each score chosen in a verdict annotune writes: ``structured``; the reference answers
judged without being shown to themselves). Then the
judge's reliability: unparsed verdicts, its spread over repeats, the length bias (Spearman ρ of score and
answer length), the position bias (base and fine-tuned answers judged together in both orders on
``--pairwise`` questions), and — when ``ANNOTUNE_JUDGE_BASE_URL``, ``ANNOTUNE_JUDGE_MODEL`` and the key's
variable ``ANNOTUNE_JUDGE_KEY_ENV`` are set — an API judge on the same answers and the agreement of the two
judges (Spearman ρ, Krippendorff's α).

    python bench/medquad_qa.py [--train 2000] [--test 100] [--pairwise 50]

Finished systems, the trained run and the judge's verdicts are kept under bench/results/medquad_qa/ and
reused by a rerun; results go to bench/results/medquad_qa.json and the score histograms to medquad_qa.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import comparison_header, write_result  # noqa: E402
from labelling_speed import working_roofline  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "medquad" / "qa.jsonl"
FOLDER = ROOT / "bench" / "results" / "medquad_qa"


def short_pairs(max_words: int) -> Path:
    """The MedQuAD pairs whose reference answer has at most ``max_words`` words, in the original order."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    out = FOLDER / f"qa-max{max_words}.jsonl"
    if not out.exists():
        with open(DATA, encoding="utf-8") as src, open(out.with_suffix(".tmp"), "w", encoding="utf-8") as dst:
            for line in src:
                if len(json.loads(line)["answer"].split()) <= max_words:
                    dst.write(line)
        out.with_suffix(".tmp").replace(out)
    return out


def answers_file(results_dir: Path, names: list[str], test_docs) -> Path:
    """question, reference and one column per system (empty where INVALID), for `judge_file`."""
    from annotune.experiments.fingerprints import slug

    answers = {}
    for name in names:
        rec = json.loads((results_dir / "systems" / f"{slug(name)}.json").read_text())
        answers[name] = {p["id"]: p["label"] or "" for p in rec["predictions"]}
    path = results_dir / "answers.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "question", "reference", *names])
        for d in test_docs:
            w.writerow([d.id, d.text, d.label, *[answers[n].get(d.id, "") for n in names]])
    return path


def histogram(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in results["systems"] if s["metrics"].get("judge_items")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for s in systems:
        for ax, key in ((axes[0], "judge_items"), (axes[1], "judge_expected_items")):
            scores = [v for v in s["metrics"].get(key) or [] if v is not None]
            if scores:
                ax.hist(scores, bins=36, range=(1, 10), alpha=0.5, label=s["name"])
        axes[2].hist(s["metrics"]["rouge_l_per_document"], bins=20, range=(0, 1), alpha=0.5, label=s["name"])
    axes[0].set(title="judge score per answer (chosen scores)", xlabel="score (1–10)", ylabel="answers")
    axes[1].set(title="probability-weighted judge score", xlabel="E[score] (1–10)", ylabel="answers")
    axes[2].set(title="ROUGE-L against the reference", xlabel="ROUGE-L F1", ylabel="answers")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    from annotune.cli.render import print_results_table
    from annotune.environment import quiet_libraries
    from annotune.experiments.compare import Comparison, split_data
    from annotune.experiments.config import load_config
    from annotune.experiments.fingerprints import slug
    from annotune.experiments.judged import JUDGE_SUFFIX
    from annotune.judging import Judge, agreement, judge_file

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=2000, help="training pairs (seeded subsample)")
    ap.add_argument("--test", type=int, default=100, help="test questions (seeded subsample)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-answer-words", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3, help="judge repeats (a greedy local judge reuses its call)")
    ap.add_argument("--pairwise", type=int, default=50, help="questions judged pairwise in both orders (0: none)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "medquad_qa.json"))
    ap.add_argument("--fresh", action="store_true", help="recompute every system")
    args = ap.parse_args(argv)
    quiet_libraries()

    data = short_pairs(args.max_answer_words)
    cfg = load_config(ROOT / "examples" / "medquad-qa.toml", output=FOLDER)
    cfg = cfg.derive(data={"path": str(data)}, split={"field": "split", "max_train": args.train,
                                                      "max_test": args.test},
                     finetune={**cfg.finetune, "epochs": args.epochs})
    cfg = cfg.model_copy(update={"judge": cfg.judge.model_copy(update={"repeats": args.repeats})})
    roof = working_roofline()
    started = time.time()
    results = Comparison(cfg, progress=True, fresh=args.fresh, log=print).run()
    print_results_table(results)

    _, test = split_data(cfg, cfg.load_data())
    names = [s["name"] for s in results["systems"] if s["type"] != "reference"]
    table = answers_file(FOLDER, names, test.docs)
    reliability: dict = {}
    if args.pairwise and len(names) == 2:
        print(f"\nposition bias: {names[0]} and {names[1]} judged together, both orders, {args.pairwise} questions")
        pair = judge_file(table, names, judge=lambda: Judge.from_config(cfg.judge.model_copy(
            update={"repeats": 2})), reference_field="reference", pairwise=True, limit=args.pairwise,
            progress=True)
        reliability["pairwise"] = {"questions": pair["rows"], "position_bias": pair["position_bias"],
                                   "columns": {c: {"mean": v["overall"]["mean"], "unparsed": v["unparsed"],
                                                   "judgements": v["judgements"]} for c, v in pair["columns"].items()}}
    api = {k: os.environ.get(f"ANNOTUNE_JUDGE_{k.upper()}") for k in ("base_url", "model", "key_env")}
    if api["base_url"] and api["model"]:
        print(f"\nAPI judge {api['model']} at {api['base_url']}")
        api_cfg = cfg.judge.model_copy(update={"backend": "api", "base_url": api["base_url"], "model": api["model"],
                                               "api_key_env": api["key_env"], "dtype": "auto"})
        judged = judge_file(table, [*names, "reference"], judge=lambda: Judge.from_config(api_cfg),
                            reference_field="reference", progress=True)
        local_items = {s["name"]: s["metrics"].get("judge_items") or [] for s in results["systems"]}
        reliability["api_judge"] = {"model": api["model"], "columns": {}}
        for col, st in judged["columns"].items():
            local = local_items.get(col if col != "reference" else next(
                s["name"] for s in results["systems"] if s["type"] == "reference"))
            entry = {"mean": st["overall"]["mean"], "ci": st["overall"]["ci"], "unparsed": st["unparsed"]}
            if local and len(local) == len(st["overall"]["item_means"]):
                entry["agreement_with_local"] = agreement(local, st["overall"]["item_means"]).as_dict()
            reliability["api_judge"]["columns"][col] = entry
    else:
        reliability["api_judge"] = None  # no ANNOTUNE_JUDGE_BASE_URL / ANNOTUNE_JUDGE_MODEL configured

    ft = next(s for s in results["systems"] if s["type"] == "finetuned")
    manifest = json.loads((Path(ft["stats"]["run"]) / "manifest.json").read_text())
    judge_stats = {s["name"]: json.loads((FOLDER / "systems" / f"{slug(s['name'])}{JUDGE_SUFFIX}").read_text())["stats"]
                   for s in results["systems"]}
    rows = []
    print(f"\n{'system':32} {'valid':>6} {'ROUGE-L [95% CI]':>22} {'judge [95% CI]':>20} {'E[score]':>8} "
          f"{'unparsed':>9} {'words':>6} {'len. ρ':>7}")
    for s in results["systems"]:
        m, js = s["metrics"], judge_stats[s["name"]]
        ci = m.get("judge_score_ci")
        rho = js["length_bias"].get("rho")
        row = {"name": s["name"], "type": s["type"], "valid_rate": m["valid_rate"], "rouge_l": m["rouge_l"],
               "rouge_l_ci": m["rouge_l_ci"], "judge_score": m.get("judge_score"), "judge_score_ci": ci,
               "judge_expected": m.get("judge_expected"), "judge_expected_ci": m.get("judge_expected_ci"),
               "judge_sd": m.get("judge_sd"),
               "judge_unparsed": m.get("judge_unparsed"), "judge_calls": m.get("judge_calls"),
               "mean_words": m.get("mean_words"), "length_bias": js["length_bias"],
               "docs_per_s": s["stats"].get("docs_per_s"), "seconds": s["stats"].get("seconds")}
        rows.append(row)

        def f(x, d=3):
            return "–" if x is None else f"{x:.{d}f}"
        jci = f"{f(row['judge_score'], 2)} [{f(ci[0], 2)}, {f(ci[1], 2)}]" if ci else f(row["judge_score"], 2)
        print(f"{s['name']:32} {100 * m['valid_rate']:5.1f}% {f(m['rouge_l'])} [{f(m['rouge_l_ci'][0])}, "
              f"{f(m['rouge_l_ci'][1])}] {jci:>20} {f(row['judge_expected'], 2):>8} "
              f"{row['judge_unparsed']}/{row['judge_calls']:<5} {f(row['mean_words'], 0):>6} {f(rho, 2):>7}")
    if reliability.get("pairwise"):
        pb = reliability["pairwise"]["position_bias"]["overall"]
        print(f"position bias over {reliability['pairwise']['questions']} questions: {json.dumps(pb)}")
    histogram(results, Path(args.out).with_suffix(".png"))
    out = {
        **comparison_header("medquad_qa", started, results),
        "roofline_gflops": roof["gflops"], "roofline_dtype": roof["dtype"],
        "data": {"file": str(DATA.relative_to(ROOT.parent)), "max_answer_words": args.max_answer_words,
                 **results["data"]},
        "judge": results["judge"],
        "training": {k: manifest["training"][k] for k in ("wall_seconds", "tokens", "tokens_per_s", "train_loss",
                                                           "dev_loss", "peak_memory_gib")}
        | {"train_examples": manifest["data"]["train"], "steps": manifest["resolved"]["steps"],
           "hyperparameters": manifest["hyperparameters"]},
        "systems": rows,
        "reliability": reliability,
    }
    write_result(args.out, out)
    print(f"wrote {Path(args.out).with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
