"""A fine-tuned SmolLM2-135M on BBC News before and after GGUF export: the PyTorch run, its F16 GGUF and its
Q4_K_M GGUF run by llama.cpp, on the same 200 held-out articles as `examples/bbc-news.toml`.

Fine-tunes on a seeded stratified subsample of the training split (400 articles, one epoch; the run is kept
under bench/results/gguf_export/ and reused), exports it with `annotune export-run --gguf` (timed), then
compares: the run answering in PyTorch (generate, fp32 and bf16, and constrained), the F16 and Q4_K_M files
through llama.cpp with the answer grammar, and Q4_K_M without it. Agreement = the share of articles whose
label equals the PyTorch fp32 run's. Needs annotune[gguf].

    python bench/gguf_export.py [--train 400] [--quant q4_k_m]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from benchlib import comparison_header, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from labelling_speed import rooflines  # noqa: E402


def main(argv=None) -> int:
    from annotune.cli.render import print_results_table
    from annotune.environment import quiet_libraries
    from annotune.experiments.compare import Comparison
    from annotune.experiments.config import load_config
    from annotune.export.gguf import export_gguf

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=400, help="training articles (seeded stratified subsample)")
    ap.add_argument("--quant", default="q4_k_m")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gguf_export.json"))
    args = ap.parse_args(argv)
    quiet_libraries()
    folder = ROOT / "bench" / "results" / "gguf_export"
    started = time.time()
    roof = {dtype: r["gflops"] for dtype, r in rooflines().items()}

    base = load_config(ROOT / "examples" / "bbc-news.toml", output=folder)
    lora = {"type": "finetuned", "train_size": args.train}
    torch_rows = [
        {"name": "PyTorch fp32, generate", **lora, "answer": "generate", "dtype": "fp32"},
        {"name": "PyTorch bf16, generate", **lora, "answer": "generate", "dtype": "bf16"},
        {"name": "PyTorch bf16, constrained", **lora, "answer": "constrained", "dtype": "bf16"},
    ]
    first = Comparison(base.derive(finetune={"epochs": 1}, systems=torch_rows[:1]), progress=True,
                       log=print).run()
    run = Path(first["systems"][0]["stats"]["run"])
    export_started = time.perf_counter()
    info = export_gguf(run, quant=args.quant, log=print)
    export_seconds = time.perf_counter() - export_started
    gguf = Path(info["folder"])
    rows = torch_rows + [
        {"name": "llama.cpp F16, grammar", "type": "llamacpp", "model": str(gguf / info["files"]["f16"]["file"])},
        {"name": f"llama.cpp {args.quant.upper()}, grammar", "type": "llamacpp",
         "model": str(gguf / info["files"][args.quant]["file"])},
        {"name": f"llama.cpp {args.quant.upper()}, free", "type": "llamacpp", "grammar": False,
         "model": str(gguf / info["files"][args.quant]["file"])},
    ]
    results = Comparison(base.derive(finetune={"epochs": 1}, systems=rows), progress=True, log=print).run()
    print_results_table(results)

    labels: dict[str, dict[str, str]] = {}
    with open(folder / "predictions.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            labels.setdefault(row["system"], {})[row["id"]] = row["parsed_label"]
    reference = labels[torch_rows[0]["name"]]

    def agreement(name: str) -> float:
        return sum(labels[name][i] == reference[i] for i in reference) / len(reference)

    systems = []
    for s in results["systems"]:
        m = s["metrics"]
        systems.append({
            "name": s["name"],
            "metrics": {k: m.get(k) for k in ("valid_rate", "accuracy", "accuracy_valid", "macro_f1", "macro_f1_ci",
                                              "kappa")},
            "agreement_with_pytorch_fp32": agreement(s["name"]),
            "docs_per_s": s["stats"].get("docs_per_s"),
            "prompt_tokens_per_s": s["stats"].get("prompt_tokens_per_s"),
            "seconds": s["stats"].get("seconds"),
        })
    print(f"\nexport: {export_seconds:.0f} s; files: " + ", ".join(
        f"{q} {e['bytes'] / 2**20:.0f} MiB" for q, e in info["files"].items()))
    print("\n| System | Valid % | Accuracy | Macro-F1 [95% CI] | Agreement with PyTorch fp32 | docs/s |")
    print("|---|---|---|---|---|---|")
    for s in systems:
        m, ci = s["metrics"], s["metrics"]["macro_f1_ci"]
        print(f"| {s['name']} | {100 * m['valid_rate']:.1f} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} "
              f"[{ci[0]:.3f}, {ci[1]:.3f}] | {s['agreement_with_pytorch_fp32']:.3f} | {s['docs_per_s']:.2f} |")
    write_result(args.out, {
        **comparison_header("gguf_export", started, results),
        "roofline_gflops": roof,
        "run": str(run),
        "train_articles": args.train,
        "export_seconds": round(export_seconds, 1),
        "files": {q: {"bytes": e["bytes"], "sha256": e["sha256"]} for q, e in info["files"].items()},
        "converter": info["converter"],
        "systems": systems,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
