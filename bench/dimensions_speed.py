"""Constrained answering of a 46-dimension codebook (flourishing tweets): one token tree per document vs the
branched engine (document first, then one row per question over its cache), in the same run.

    python bench/dimensions_speed.py [--docs 24] [--model smollm2]

Both engines label the same first N test tweets of `examples/flourishing.toml` with the embedded SmolLM2-135M
(zero-shot, `LocalBackend.label(..., "constrained")`); the bench reports docs/s, encoded tokens/s, the fraction
of the bf16 matmul roofline measured in the same run (2 × non-embedding parameters FLOPs per encoded token),
how many documents get the same label from both, and the largest difference of any option probability.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchlib import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from labelling_speed import matmul_roofline  # noqa: E402


def flat(value) -> list[float]:
    """The numbers of a nested probabilities dict, in order."""
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in flat(value[k])]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in flat(v)]
    return [float(value)] if isinstance(value, (int, float)) else []


def main(argv=None) -> int:
    import torch

    from annotune.backends.local import LocalBackend
    from annotune.experiments.compare import split_data
    from annotune.experiments.config import load_config
    from annotune.tasks.prompts import PromptBuilder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=24)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dimensions_speed.json"))
    args = ap.parse_args(argv)

    cfg = load_config(ROOT / "examples" / "flourishing.toml")
    _, test = split_data(cfg, cfg.load_data())
    docs = test.docs[: args.docs]
    roof = matmul_roofline(torch.bfloat16)["gflops"]
    backend = LocalBackend(args.model, dtype="auto", batch_size=8)
    model = backend.model
    non_embedding = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    builder = PromptBuilder(cfg.codebook)
    backend.label(docs[:2], builder, "constrained", progress=False)  # warm-up

    rows, preds = {}, {}
    branched = backend._score_branched
    for name, engine in (("one tree per document", backend._score), ("branched", branched)):
        backend._score_branched = engine  # the engine label() uses for many questions
        started = time.perf_counter()
        p, stats = backend.label(docs, builder, "constrained", progress=False)
        seconds = time.perf_counter() - started
        encoded = stats.prompt_tokens
        gflops = 2 * non_embedding * encoded / seconds / 1e9
        rows[name] = {"seconds": seconds, "docs_per_s": len(docs) / seconds, "encoded_tokens": encoded,
                      "encoded_tokens_per_s": encoded / seconds, "gflops": gflops, "roofline_fraction": gflops / roof}
        preds[name] = p
        print(f"{name}: {len(docs) / seconds:.2f} docs/s, {encoded / seconds:.0f} encoded tokens/s, "
              f"{100 * gflops / roof:.0f} % of the bf16 roofline ({roof:.0f} GFLOP/s)", flush=True)
    a, b = preds.values()
    same = sum(x.label == y.label for x, y in zip(a, b))
    diff = max(abs(u - v) for x, y in zip(a, b) for u, v in zip(flat(x.probs), flat(y.probs)))
    speedup = rows["branched"]["docs_per_s"] / rows["one tree per document"]["docs_per_s"]
    print(f"same labels: {same}/{len(docs)}; largest option-probability difference {diff:.2e}; "
          f"branched {speedup:.2f}× faster")
    write_result(args.out, {"bench": "dimensions_speed", "date": time.strftime("%Y-%m-%d"), "docs": len(docs),
                            "model": args.model, "dtype": str(backend.dtype), "roofline_bf16_gflops": roof,
                            "rows": rows, "same_labels": same, "max_probability_difference": diff,
                            "speedup": speedup})
    return 0


if __name__ == "__main__":
    sys.exit(main())
