#!/usr/bin/env python
"""Labelling speed of the local backend on BBC News, next to baselines measured in the same run.

    python bench/labelling_speed.py [--docs N] [--out bench/results/labelling_speed.json]

Measures, on the first N test articles of the seeded split of ``examples/bbc-news.toml`` (the embedded
SmolLM2-135M-Instruct, ``max_text_tokens = 256`` and ``batch_size = 8`` as in that config):

1. roofline: bf16 and fp32 GFLOP/s of a 2048x2048 @ 2048x2048 torch matmul (best of a few reps);
2. naive fp32 loop: one HF forward per document over the full prompt with logits at every position,
   argmax over the labels' first tokens;
3. batched bf16 forward: length-sorted batches of ``batch_size`` left-padded full prompts, logits only at
   the last position (``logits_to_keep=1``), argmax over the labels' first tokens;
4. ``LocalBackend.label``: ``generate`` zero-shot, ``constrained`` zero-shot and 3-shot, end to end.

The baselines are timed on pre-tokenised prompts (model time only); ``label()`` is timed end to end
(tokenisation, prompt assembly, scoring, parsing). Every prompt has the same tokens as the backend's:
prefix (system prompt [+ examples]) + document cut at ``max_text_tokens`` + question + generation prompt.
See bench/README.md for the definitions of every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

import torch  # noqa: E402

from annotune.backends.base import RunStats
from annotune.backends.local import LocalBackend  # noqa: E402
from annotune.experiments.compare import split_data  # noqa: E402
from annotune.experiments.config import load_config  # noqa: E402
from annotune.environment import hardware, library_versions  # noqa: E402
from annotune.backends.models import load_causal_lm  # noqa: E402
from annotune.tasks.prompts import PromptBuilder, draw_examples, main_question  # noqa: E402

CONFIG = ROOT / "examples" / "bbc-news.toml"
TARGET_TOKENS_PER_S = 1000.0  # the target for `constrained`, prompt tokens/s end to end
MAX_TEXT_TOKENS = 256  # as in examples/bbc-news.toml (the backend's own default is 512)
BATCH_SIZE = 8
SHOTS = 3
EXAMPLE_CHARS = 600  # as the 3-shot system of examples/bbc-news.toml


class Timer:
    """Wall-clock and process CPU seconds of a block (CPU/wall < threads means the CPU was shared)."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.wall0
        self.cpu_seconds = time.process_time() - self.cpu0


def cpu_idle(seconds: float = 5.0) -> float | None:
    """Fraction of the machine's CPU time that was idle over the next ``seconds`` (Linux /proc/stat)."""
    def sample():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return sum(v[:8]), v[3] + v[4]
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except OSError:
        return None
    return (i1 - i0) / max(1, t1 - t0)


def wait_idle(limit: float, threshold: float = 0.9) -> float | None:
    """Wait (at most ``limit`` seconds) until the machine is ≥ ``threshold`` idle; returns the last idle share."""
    end = time.monotonic() + limit
    idle = cpu_idle(2.0)
    while idle is not None and idle < threshold and time.monotonic() < end:
        print(f"machine busy ({100 * idle:.0f}% idle), waiting …", flush=True)
        idle = cpu_idle(10.0)
    return idle


def short_dtype(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}.get(dtype, str(dtype))


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------- baselines
def matmul_roofline(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> dict:
    """GFLOP/s of an n×n @ n×n matmul: wall clock with all threads (best of ``reps``), and one thread
    timed in process CPU seconds, which other processes on the machine cannot slow down. ``gflops``, the
    roofline used for the fractions, is the larger of the wall figure and one-thread figure × threads."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    flops = 2 * n**3
    threads = torch.get_num_threads()
    a @ b  # warm-up (kernel selection, page faults)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(1)
    try:
        a @ b
        best_cpu = float("inf")
        for _ in range(reps):
            t = time.process_time()
            a @ b
            best_cpu = min(best_cpu, time.process_time() - t)
    finally:
        torch.set_num_threads(threads)
    wall, one = flops / best / 1e9, flops / best_cpu / 1e9
    return {"dtype": short_dtype(dtype), "n": n, "reps": reps, "threads": threads,
            "best_seconds": best, "wall_gflops": wall, "one_thread_cpu_gflops": one,
            "gflops": max(wall, one * threads)}


def native_bf16() -> bool:
    """Whether annotune's ``dtype = "auto"`` computes in bf16 on this CPU (AVX512-BF16 or AMX); without them
    a bf16 matmul is emulated (~1 GFLOP/s on an AVX2 CPU) and the fp32 roofline is the one that counts."""
    from annotune.backends.models import default_dtype

    return default_dtype("cpu") == torch.bfloat16


def working_roofline() -> dict:
    """The matmul roofline of the dtype annotune computes in here: bf16 where native, fp32 otherwise."""
    return matmul_roofline(torch.bfloat16 if native_bf16() else torch.float32)


def rooflines() -> dict[str, dict]:
    """fp32 always, bf16 where the CPU has it natively (timing an emulated bf16 matmul takes minutes)."""
    return {**({"bf16": matmul_roofline(torch.bfloat16)} if native_bf16() else {}),
            "fp32": matmul_roofline(torch.float32)}


def prompt_rows(backend: LocalBackend, builder: PromptBuilder, docs) -> tuple[list[list[int]], int]:
    """The full prompt of each document as the backend tokenises it (pieces joined), and the prefix length."""
    parts = builder.parts(backend.tokenizer)
    prefix = backend.encode(parts.prefix)
    if getattr(backend.tokenizer, "chat_template", None) is None and backend.tokenizer.bos_token_id is not None:
        prefix = [backend.tokenizer.bos_token_id] + prefix
    between = backend.encode(parts.between)
    question = backend.encode(main_question(builder.codebook) + parts.suffix)
    scratch = RunStats()
    return [prefix + backend._doc_ids(d.text, scratch) + between + question for d in docs], len(prefix)


def label_first_tokens(backend: LocalBackend, codebook) -> list[int]:
    firsts = [backend.encode(name)[0] for name in codebook.label_names]
    if len(set(firsts)) != len(firsts):
        raise RuntimeError(f"labels share a first token: {dict(zip(codebook.label_names, firsts))}")
    return firsts


def naive_loop(model, rows: list[list[int]], firsts: list[int]) -> tuple[dict, list[int]]:
    """One document at a time, full logits at every position (what a first implementation does)."""
    first_t = torch.tensor(firsts)
    preds = []
    with torch.inference_mode(), Timer() as t:
        for ids in rows:
            logits = model(input_ids=torch.tensor([ids])).logits  # [1, L, vocab], every position
            preds.append(int(logits[0, -1, first_t].argmax()))
    tokens = sum(map(len, rows))
    return {"seconds": t.seconds, "cpu_seconds": t.cpu_seconds, "docs": len(rows), "tokens": tokens,
            "encoded_tokens": tokens}, preds


def batched_forward(model, rows: list[list[int]], firsts: list[int], batch_size: int, pad_id: int):
    """Length-sorted batches, left padding, logits only at the last position."""
    first_t = torch.tensor(firsts)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    preds = [0] * len(rows)
    padded = 0
    with torch.inference_mode(), Timer() as t:
        for start in range(0, len(order), batch_size):
            batch = order[start: start + batch_size]
            width = max(len(rows[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, width - len(rows[i]):] = torch.tensor(rows[i])
                mask[r, width - len(rows[i]):] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
            for r, i in enumerate(batch):
                preds[i] = int(logits[r, -1, first_t].argmax())
            padded += ids.numel()
    tokens = sum(map(len, rows))
    return {"seconds": t.seconds, "cpu_seconds": t.cpu_seconds, "docs": len(rows), "tokens": tokens,
            "encoded_tokens": tokens, "padded_tokens": padded, "batch_size": batch_size}, preds


def cpu_share(r: dict) -> float:
    return r["cpu_seconds"] / (r.get("wall_seconds", r["seconds"]) * torch.get_num_threads())


def best_of(repeats: int, fn, *, settle=None, retries: int = 0):
    """Run a timed measurement ``repeats`` times and keep the fastest (every run's seconds and CPU share are
    kept). With ``settle`` (wait for an idle machine), a run that did not get ≥90% of the cores is
    followed by another one, at most ``retries`` extra runs."""
    runs = []
    while True:
        if settle is not None:
            settle()
        runs.append(fn())
        clean = sum(cpu_share(r) >= 0.9 for r, _ in runs)
        if len(runs) >= max(1, repeats) and (settle is None or clean >= 1 or len(runs) >= repeats + retries):
            break
        if settle is not None and cpu_share(runs[-1][0]) < 0.9:
            print(f"  run {len(runs)} got {100 * cpu_share(runs[-1][0]):.0f}% of the cores", flush=True)
    best, preds = min(runs, key=lambda rp: rp[0]["seconds"])
    best = dict(best)
    best["repeats"] = [{"seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"], "cpu_share": cpu_share(r)}
                       for r, _ in runs]
    return best, preds


def run_label(backend: LocalBackend, docs, builder: PromptBuilder, answer: str):
    with Timer() as t:
        preds, stats = backend.label(docs, builder, answer, progress=False)
    encoded = stats.prompt_tokens + stats.generated_tokens  # decoding steps are forwards too
    return {"seconds": stats.seconds, "wall_seconds": t.seconds, "cpu_seconds": t.cpu_seconds,
            "docs": stats.docs, "tokens": stats.prompt_tokens_nominal, "encoded_tokens": encoded,
            "prompt_tokens": stats.prompt_tokens, "generated_tokens": stats.generated_tokens,
            "truncated_docs": stats.truncated_docs,
            "valid": sum(p.label is not None for p in preds)}, [p.label for p in preds]


def llamacpp_rows(args, docs, builder: PromptBuilder, settle, retries):
    """The same zero-shot prompts through llama.cpp (`LlamaCppBackend`: generation restricted by the answer
    grammar, the shared prefix cached between documents): the model's own GGUF file (the embedded one is
    Q4_1) and an F16 GGUF written from its checkpoint by llama.cpp's converter. Yields (key, row, labels)."""
    import tempfile

    from annotune.backends.llamacpp import LlamaCppBackend, import_llama_cpp
    from annotune.backends.models import loadable_path, resolve_model
    from annotune.errors import AnnotuneError
    from annotune.export.gguf import convert_to_gguf

    try:
        import_llama_cpp()
    except AnnotuneError as exc:
        print(f"llama.cpp rows skipped: {exc}", flush=True)
        return
    source = resolve_model(args.model)
    files = {}
    if source.gguf_file:
        files[source.gguf_file.rsplit(".", 2)[-2].lower()] = Path(source.location) / source.gguf_file
    f16 = Path(tempfile.mkdtemp(prefix="annotune-bench-")) / "model-f16.gguf"
    convert_to_gguf(loadable_path(source), f16)
    files["f16"] = f16
    for quant, path in files.items():
        backend = LlamaCppBackend(path, max_text_tokens=MAX_TEXT_TOKENS)
        backend.label(docs[:2], builder, progress=False)  # warm-up
        r, p = best_of(args.repeats, lambda: run_label(backend, docs, builder, "generate"), settle=settle,
                       retries=retries)
        backend.close()
        yield f"llamacpp_{quant}", {"label": f"llama.cpp, grammar, zero-shot ({quant.upper()} GGUF)", "dtype": quant,
                                    "kind": "llama.cpp", "answer": "generate", "shots": 0,
                                    "threads": backend.threads, **r}, p
    f16.unlink()


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=48, help="first N test articles of the seeded split (48)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "labelling_speed.json"))
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="shared machines: before starting and before each measurement, wait up to S "
                         "seconds for the machine to be ≥90%% idle")
    ap.add_argument("--repeats", type=int, default=2,
                    help="time the batched forward and each label() run this many times, keep the fastest (2)")
    ap.add_argument("--skip-naive", action="store_true", help="skip the slow fp32 per-document loop")
    ap.add_argument("--no-llamacpp", dest="llamacpp", action="store_false",
                    help="skip the llama.cpp rows (default: run them when annotune[gguf] is installed)")
    args = ap.parse_args(argv)

    torch.set_num_threads(os.cpu_count())
    idle_before = wait_idle(args.wait_idle) if args.wait_idle else cpu_idle(2.0)
    started = time.perf_counter()
    load_before = loadavg()
    cfg = load_config(CONFIG)
    cb = cfg.codebook
    dataset = cfg.load_data()
    train, test = split_data(cfg, dataset)
    docs = test.docs[: args.docs]
    gold = [d.label for d in docs]
    print(f"{len(docs)} BBC test articles (seed {cfg.seed}, split of {len(dataset)}); "
          f"{torch.get_num_threads()} torch threads", flush=True)

    roofline = rooflines()
    print("roofline: " + ", ".join(f"{k} {v['gflops']:.0f} GFLOP/s (wall {v['wall_gflops']:.0f}, 1 thread "
                                   f"{v['one_thread_cpu_gflops']:.0f})" for k, v in roofline.items()), flush=True)

    torch.manual_seed(cfg.seed)
    backend = LocalBackend(args.model, dtype="auto", batch_size=BATCH_SIZE, max_text_tokens=MAX_TEXT_TOKENS)
    model = backend.model
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()
    non_embedding = n_params - n_embed  # lm_head is tied to the embeddings
    zero = PromptBuilder(cb)
    examples = draw_examples(train.docs, cb, SHOTS, cfg.seed)
    few = PromptBuilder(cb, examples, example_chars=EXAMPLE_CHARS)
    rows, prefix_len = prompt_rows(backend, zero, docs)
    rows_few, prefix_len_few = prompt_rows(backend, few, docs)
    firsts = label_first_tokens(backend, cb)
    names = cb.label_names

    results: dict[str, dict] = {}
    predictions: dict[str, list] = {}

    # warm-up (oneDNN kernel creation, allocator): two documents per path, not timed
    with torch.inference_mode():
        batched_forward(model, rows[:2], firsts, BATCH_SIZE, backend.tokenizer.pad_token_id)
    backend.label(docs[:2], zero, "constrained", progress=False)
    backend.label(docs[:2], zero, "generate", progress=False)

    # with --wait-idle, every measurement starts on an idle machine and is redone if it was disturbed
    settle = (lambda: wait_idle(args.wait_idle)) if args.wait_idle else None
    retries = 3 if args.wait_idle else 0

    r, p = best_of(args.repeats, lambda: batched_forward(model, rows, firsts, BATCH_SIZE,
                                                           backend.tokenizer.pad_token_id),
                   settle=settle, retries=retries)
    results["batched"] = {"label": f"batched bf16 forward, logits_to_keep=1 (bs {BATCH_SIZE})", "dtype": "bf16",
                          "kind": "baseline", **r}
    predictions["batched"] = [names[i] for i in p]
    print(f"batched bf16 forward: {r['tokens'] / r['seconds']:.0f} tokens/s", flush=True)

    for key, builder, answer, label in (
        ("constrained_0", zero, "constrained", "constrained, zero-shot"),
        ("constrained_3", few, "constrained", f"constrained, {SHOTS}-shot"),
        ("generate_0", zero, "generate", "generate, zero-shot"),
    ):
        r, p = best_of(args.repeats, lambda: run_label(backend, docs, builder, answer), settle=settle,
                       retries=retries)
        results[key] = {"label": label, "dtype": short_dtype(backend.dtype), "kind": "annotune",
                        "answer": answer, "shots": len(builder.examples), **r}
        predictions[key] = p
        print(f"{label}: {r['tokens'] / r['seconds']:.0f} prompt tokens/s", flush=True)

    if args.llamacpp:
        for key, r, p in llamacpp_rows(args, docs, zero, settle, retries):
            results[key] = r
            predictions[key] = p
            print(f"{r['label']}: {r['tokens'] / r['seconds']:.0f} prompt tokens/s", flush=True)

    if not args.skip_naive:
        fp32_model, _, _ = load_causal_lm(args.model, dtype="fp32")
        with torch.inference_mode():
            fp32_model(input_ids=torch.tensor([rows[0]]))  # warm-up
        r, p = best_of(1, lambda: naive_loop(fp32_model, rows, firsts), settle=settle, retries=2)
        results["naive"] = {"label": "naive fp32 loop, full logits", "dtype": "fp32", "kind": "baseline", **r}
        predictions["naive"] = [names[i] for i in p]
        del fp32_model
        print(f"naive fp32 loop: {r['tokens'] / r['seconds']:.0f} tokens/s", flush=True)

    # derived numbers
    ref = {k: results[k]["tokens"] / results[k]["seconds"] for k in ("naive", "batched") if k in results}
    ref_docs = {k: results[k]["docs"] / results[k]["seconds"] for k in ref}
    for key, r in results.items():
        r["docs_per_s"] = r["docs"] / r["seconds"]
        r["prompt_tokens_per_s"] = r["tokens"] / r["seconds"]
        r["encoded_tokens_per_s"] = r["encoded_tokens"] / r["seconds"]
        r["mean_prompt_tokens"] = r["tokens"] / r["docs"]
        # share of the machine this process got: < ~0.9 means other processes competed for the cores
        r["cpu_share"] = cpu_share(r)
        r["gflops"] = 2 * non_embedding * r["encoded_tokens"] / r["seconds"] / 1e9
        r["roofline_fraction_bf16"] = r["gflops"] / roofline["bf16"]["gflops"] if "bf16" in roofline else None
        r["roofline_fraction_own_dtype"] = r["gflops"] / roofline[r["dtype"]]["gflops"] if r["dtype"] in roofline else None
        for base, tps in ref.items():
            r[f"speedup_tokens_vs_{base}"] = r["prompt_tokens_per_s"] / tps
            # docs/s is only comparable for the same prompt (zero-shot)
            same_prompt = r.get("shots", 0) == 0
            r[f"speedup_docs_vs_{base}"] = r["docs_per_s"] / ref_docs[base] if same_prompt else None
        if gold:
            r["accuracy"] = sum(a == b for a, b in zip(predictions[key], gold)) / len(gold)
    agreement = {}
    if "naive" in predictions:
        for key in ("batched", "constrained_0"):
            agreement[f"naive_vs_{key}"] = sum(a == b for a, b in zip(predictions["naive"], predictions[key])) / len(docs)
    target_met = results["constrained_0"]["prompt_tokens_per_s"] >= TARGET_TOKENS_PER_S

    out = {
        "bench": "labelling_speed",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": hardware(),
        "libraries": library_versions(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "cpu_idle_before": idle_before,
        "settings": {
            "config": str(CONFIG.relative_to(ROOT)), "seed": cfg.seed, "docs": len(docs),
            "test_split": len(test), "model": backend.name, "dtype": short_dtype(backend.dtype),
            "max_text_tokens": MAX_TEXT_TOKENS, "batch_size": BATCH_SIZE, "shots": SHOTS,
            "example_chars": EXAMPLE_CHARS, "examples": [d.id for d in examples],
            "prefix_tokens_zero_shot": prefix_len, "prefix_tokens_few_shot": prefix_len_few,
            "params": n_params, "non_embedding_params": non_embedding,
            "flops_per_token": 2 * non_embedding,
            "label_first_tokens": dict(zip(names, firsts)),
            "repeats": args.repeats,
            "doc_labels": dict(Counter(str(g) for g in gold)),
            "first_docs_labels": Counter(str(g) for g in gold).most_common(1)[0][0] if gold else None,
        },
        "roofline": roofline,
        "results": results,
        "agreement": agreement,
        "target": {"constrained_prompt_tokens_per_s": TARGET_TOKENS_PER_S, "met": target_met},
        "seconds_total": time.perf_counter() - started,
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print_table(out)
    print(f"\nwritten {out_path} ({out['seconds_total']:.0f} s in all)")
    return 0


def print_table(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s, rl = out["settings"], out["roofline"]
    table = Table(title=f"Labelling speed — {s['docs']} BBC test articles, {s['model']}, "
                        f"max_text_tokens={s['max_text_tokens']}, {out['machine'].get('cpu')} "
                        f"× {out['torch_threads']} threads")
    cols = ["method", "dtype", "s", "docs/s", "prompt tok/s", "encoded tok/s", "× naive", "× batched",
            "GFLOP/s", "% bf16 roof", "cpu", "acc"]
    for c in cols:
        table.add_column(c, justify="left" if c == "method" else "right")

    def f(x, fmt="{:.0f}"):
        return "–" if x is None else fmt.format(x)

    for key in ("naive", "batched", "generate_0", "constrained_0", "constrained_3",
                *sorted(k for k in out["results"] if k.startswith("llamacpp_"))):
        r = out["results"].get(key)
        if r is None:
            continue
        table.add_row(r["label"], r["dtype"],
                      f(r["seconds"], "{:.1f}"), f(r["docs_per_s"], "{:.2f}"), f(r["prompt_tokens_per_s"]),
                      f(r["encoded_tokens_per_s"]), f(r.get("speedup_tokens_vs_naive"), "{:.1f}×"),
                      f(r.get("speedup_tokens_vs_batched"), "{:.2f}×"), f(r["gflops"]),
                      f(100 * r["roofline_fraction_bf16"] if r["roofline_fraction_bf16"] else None, "{:.0f}%"),
                      f(100 * r["cpu_share"], "{:.0f}%"), f(r.get("accuracy"), "{:.2f}"))
    console = Console(width=170)
    console.print(table)
    console.print("roofline (2048³ matmul, max of wall best-of-5 and 1-thread CPU-time × threads): " + ", ".join(
        f"{k} {v['gflops']:.0f} GFLOP/s (wall {v['wall_gflops']:.0f}, 1 thread {v['one_thread_cpu_gflops']:.0f})"
        for k, v in rl.items()) + f"; FLOPs = 2 × {s['non_embedding_params'] / 1e6:.1f}M "
                  f"non-embedding params × encoded tokens")
    console.print("× naive / × batched: prompt tokens/s (full prompt length) relative to the baseline; "
                  f"prefix {s['prefix_tokens_zero_shot']} tokens zero-shot, {s['prefix_tokens_few_shot']} 3-shot")
    console.print("cpu: process CPU time / (wall × threads), below ~90% the cores were shared with other "
                  "processes; acc: accuracy on these documents (the first test articles are nearly all "
                  f"'{s['first_docs_labels']}'), a sanity check, not a quality measure")
    if out["agreement"]:
        console.print("agreement of predictions: " + ", ".join(f"{k} {v:.2f}" for k, v in out["agreement"].items()))
    t = out["target"]
    c0 = out["results"]["constrained_0"]["prompt_tokens_per_s"]
    console.print(f"target constrained ≥ {t['constrained_prompt_tokens_per_s']:.0f} prompt tokens/s: "
                  f"{c0:.0f} → {'met' if t['met'] else 'NOT met'}; load average before/after "
                  f"{out['loadavg_before']} / {out['loadavg_after']}")


if __name__ == "__main__":
    raise SystemExit(main())
