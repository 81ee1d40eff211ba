#!/usr/bin/env python
"""One table of how fast annotune labels and trains on this machine, each row in a fresh process (peak RSS is
per process), next to the matmul roofline and llama.cpp measured in the same run.

    python bench/throughput.py [--docs 48] [--steps 6] [--rows WORD ...] [--out bench/results/throughput.json]

Labelling rows (the first N test articles of `examples/bbc-news.toml`'s split, the embedded SmolLM2-135M, 256
document tokens, the faster of two timed runs): `constrained` zero- and 3-shot and `generate` zero-shot
(`LocalBackend.label`, bf16 where the CPU has it), llama.cpp on the model's own GGUF (Q4_1) and on an F16 GGUF
written by llama.cpp's converter (same prompts token for token, answer grammar; needs annotune[gguf]), the
encoding pass of an `embedding` system (mean-pooled hidden states of the same model) and a `head` system's
labelling (one forward pass per document; the head is first trained briefly on 16 articles, which does not
change its speed); `constrained` on the first N test tweets of `examples/flourishing.toml` (46 dimensions), in two
stages (the default) and as one tree per tweet. Training rows: LoRA on BBC News and on flourishing, shared prompt prefix (the default),
`--steps` steps of batch 8 (`bench/train_speed.py`'s measurement; first step left out), with the process's
resident memory after each stage (libraries, data, model and trainer, each step). FLOPs: 2 (labelling) or 4
(LoRA training) × non-embedding parameters per encoded token; fractions are of the roofline of the dtype
annotune computes in on this CPU (bf16 where native: AVX512-BF16 or AMX; fp32 otherwise).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from benchlib import ChildFailed, report_child_result, run_child, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

MAX_TEXT_TOKENS = 256
REPEATS = 2  # labelling rows: the faster of two timed runs (this VM's speed varies between runs)
LABEL_ROWS = {
    "constrained, zero-shot": ("torch", "constrained", 0),
    "constrained, 3-shot": ("torch", "constrained", 3),
    "generate, zero-shot": ("torch", "generate", 0),
    "llama.cpp Q4_1 (the shipped GGUF), grammar": ("llamacpp", "q4_1", 0),
    "llama.cpp F16, grammar": ("llamacpp", "f16", 0),
    "embedding: mean-pooled hidden states": ("embedding", None, 0),
    "head: LoRA + classification head (one forward pass)": ("head", None, 0),
    # flourishing's 46 dimensions (`examples/flourishing.toml`): each tweet's question branches scored in two
    # stages over its cache (the default for codebooks this large), and as one tree per tweet (the default before)
    "constrained, zero-shot, flourishing 46 dimensions": ("flourishing", "constrained", 0),
    "constrained, zero-shot, flourishing, one tree per tweet": ("flourishing-one-tree", "constrained", 0),
}
HEAD_TRAIN_DOCS = 16  # the head row trains briefly first: its speed does not depend on how well it learned
TRAIN_ROWS = {"LoRA training, BBC News": "bbc", "LoRA training, flourishing": "flourishing"}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def label_row(name: str, n_docs: int, f16_path: str) -> dict:
    """Run one labelling row in this process (a child) and return its measurement."""
    import torch

    from annotune.backends.local import LocalBackend
    from annotune.environment import quiet_libraries
    from annotune.experiments.compare import split_data
    from annotune.experiments.config import load_config
    from annotune.tasks.prompts import PromptBuilder, draw_examples

    quiet_libraries()
    engine, mode, shots = LABEL_ROWS[name]
    cfg = load_config(ROOT / "examples" / ("flourishing.toml" if engine.startswith("flourishing") else "bbc-news.toml"))
    if engine == "flourishing-one-tree":
        import annotune.backends.local as local

        local.BRANCH_TREE_TOKENS = sys.maxsize
    train, test = split_data(cfg, cfg.load_data())
    docs = test.docs[:n_docs]
    builder = PromptBuilder(cfg.codebook, draw_examples(train.docs, cfg.codebook, shots, cfg.seed), example_chars=600)
    if engine == "embedding":
        from annotune.systems.embedding import EmbeddingConfig, _Encoder

        encoder = _Encoder(EmbeddingConfig(name="e", type="embedding", model="smollm2",
                                           max_text_tokens=MAX_TEXT_TOKENS))
        texts = [d.text for d in docs]
        encoder.encode(texts[:2])  # load and warm up
        seconds = float("inf")
        for _ in range(REPEATS):
            started = time.perf_counter()
            encoder.encode(texts)
            seconds = min(seconds, time.perf_counter() - started)
        tokenizer = encoder._model[1] if isinstance(encoder._model, tuple) else None  # (model, tokenizer) for HF
        encoded = (sum(len(tokenizer(t, truncation=True, max_length=MAX_TEXT_TOKENS)["input_ids"]) for t in texts)
                   if tokenizer else None)
        return {"docs": len(docs), "seconds": seconds, "encoded_tokens": encoded, "peak_rss_gib": peak_rss_gib()}
    if engine == "head":
        import tempfile

        from annotune.finetune.head import HeadClassifier, HeadTrainer, encode_texts
        from annotune.systems.head import HeadConfig

        head_cfg = HeadConfig(name="h", type="head", model="smollm2", max_text_tokens=MAX_TEXT_TOKENS, epochs=1,
                              max_dev=0)
        run = Path(tempfile.mkdtemp(prefix="annotune-throughput-head-")) / "run"
        HeadTrainer(cfg.codebook, head_cfg, seed=0, progress=False, log=lambda *_: None).train(
            "smollm2", train.subsample(HEAD_TRAIN_DOCS, seed=0), None, run)
        classifier = HeadClassifier(run)
        texts = [d.text for d in docs]
        batch = head_cfg.batch_size * 2  # as the head system labels
        classifier.option_probs(texts[:2], batch)  # warm-up
        seconds = float("inf")
        for _ in range(REPEATS):
            started = time.perf_counter()
            classifier.option_probs(texts, batch)
            seconds = min(seconds, time.perf_counter() - started)
        encoded = sum(map(len, encode_texts(classifier.tokenizer, texts, MAX_TEXT_TOKENS)))
        return {"docs": len(docs), "seconds": seconds, "encoded_tokens": encoded,
                "torch_threads": torch.get_num_threads(), "peak_rss_gib": peak_rss_gib()}
    if engine == "llamacpp":
        from annotune.backends.llamacpp import LlamaCppBackend
        from annotune.backends.models import resolve_model

        source = resolve_model("smollm2")
        path = Path(source.location) / source.gguf_file if mode == "q4_1" else Path(f16_path)
        backend = LlamaCppBackend(path, max_text_tokens=MAX_TEXT_TOKENS)
        answer = "generate"
    else:  # torch, flourishing
        backend = LocalBackend("smollm2", dtype="auto", batch_size=8, max_text_tokens=MAX_TEXT_TOKENS)
        answer = mode
    backend.label(docs[:2], builder, answer, progress=False)  # warm-up
    preds, stats = min((backend.label(docs, builder, answer, progress=False) for _ in range(REPEATS)),
                       key=lambda run: run[1].seconds)
    return {"docs": len(docs), "seconds": stats.seconds, "encoded_tokens": stats.prompt_tokens + stats.generated_tokens,
            "prompt_tokens_nominal": stats.prompt_tokens_nominal,
            "accuracy": sum(p.label == d.label for p, d in zip(preds, docs)) / len(docs),
            "torch_threads": torch.get_num_threads(), "peak_rss_gib": peak_rss_gib()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=48)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rows", nargs="+", metavar="ROW", help="run only the rows whose name contains one of these "
                    "words (e.g. head training)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "throughput.json"))
    ap.add_argument("--one", nargs=3, metavar=("KIND", "ROW", "ARG"), help=argparse.SUPPRESS)  # a child's row
    args = ap.parse_args(argv)
    if args.one:
        kind, row, arg = args.one
        if kind == "label":
            report_child_result(label_row(row, args.docs, arg))
        else:
            from train_speed import measure

            report_child_result(measure(TRAIN_ROWS[row], True, args.steps))
        return 0

    import tempfile

    from annotune.environment import hardware, library_versions
    from labelling_speed import native_bf16, rooflines

    from annotune.backends.models import load_causal_lm

    started = time.time()
    model, _, _ = load_causal_lm("smollm2", dtype="fp32")  # here, not in the measured children
    non_embedding = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    del model
    roofline = {dtype: r["gflops"] for dtype, r in rooflines().items()}
    working = "bf16" if native_bf16() else "fp32"  # the dtype annotune computes in here; fractions are of its roofline
    f16 = Path(tempfile.mkdtemp(prefix="annotune-throughput-")) / "model-f16.gguf"
    try:
        from annotune.backends.models import loadable_path, resolve_model
        from annotune.export.gguf import convert_to_gguf

        convert_to_gguf(loadable_path(resolve_model("smollm2")), f16)
    except Exception as exc:  # no llama.cpp: its rows are skipped
        print(f"F16 GGUF not written ({exc}); llama.cpp rows will fail", flush=True)
    rows = {}
    selected = [n for n in [*LABEL_ROWS, *TRAIN_ROWS] if not args.rows or any(w in n for w in args.rows)]
    for name in selected:
        kind = "label" if name in LABEL_ROWS else "train"
        try:
            m = run_child(__file__, ["--docs", str(args.docs), "--steps", str(args.steps), "--one", kind, name,
                                     str(f16)])
        except ChildFailed as exc:
            print(f"{name}: failed\n{str(exc)[-600:]}", flush=True)
            continue
        if kind == "label":
            m["docs_per_s"] = m["docs"] / m["seconds"]
            m["encoded_tokens_per_s"] = m["encoded_tokens"] / m["seconds"] if m.get("encoded_tokens") else None
            m["non_embedding"] = non_embedding
            flops = 2 * non_embedding * (m["encoded_tokens_per_s"] or 0)
        else:
            m["docs_per_s"] = m["batch_size"] / m["seconds_per_step"]
            flops = 4 * m["non_embedding_params"] * m["encoded_tokens_per_s"]
        m["gflops"] = flops / 1e9 or None
        m["roofline_fraction"] = m["gflops"] / roofline[working] if m["gflops"] else None
        rows[name] = m
        print(f"{name}: {m['docs_per_s']:.2f} docs/s, {m['encoded_tokens_per_s'] or 0:.0f} encoded tok/s, "
              f"{100 * (m['roofline_fraction'] or 0):.0f} % of {working} roofline, "
              f"peak RSS {m['peak_rss_gib']:.2f} GiB", flush=True)
    f16.unlink(missing_ok=True)
    print("\nroofline: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in roofline.items()) + "\n")
    print(f"| row | docs/s | encoded tok/s | % of {working} roofline | peak RSS GiB |")
    print("|---|---|---|---|---|")
    for name, m in rows.items():
        tps = m["encoded_tokens_per_s"]
        frac = m["roofline_fraction"]
        print(f"| {name} | {m['docs_per_s']:.2f} | {f'{tps:,.0f}' if tps else '–'} | "
              f"{f'{100 * frac:.0f} %' if frac else '–'} | {m['peak_rss_gib']:.2f} |")
    for name, m in rows.items():
        if m.get("memory_gib"):  # training rows: where the peak comes from
            stages = ", ".join(f"{stage} {v['now']:.2f}" for stage, v in m["memory_gib"].items())
            print(f"\n{name}, resident GiB after each stage: {stages}; peak {m['peak_rss_gib']:.2f}")
    write_result(args.out, {"bench": "throughput", "date": time.strftime("%Y-%m-%d"),
                            "seconds": round(time.time() - started, 1), "machine": hardware(),
                            "libraries": library_versions(), "roofline_gflops": roofline, "roofline_dtype": working,
                            "docs": args.docs,
                            "steps": args.steps, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
