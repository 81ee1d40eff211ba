#!/usr/bin/env python
"""Labelling speed when another busy process shares the CPU, for each OpenMP wait policy and thread count.

    python bench/contention.py [--docs 16] [--out bench/results/contention.json]

Users run annotune on laptops and shared servers next to other programs. Each measurement is a fresh process
that labels the first ``--docs`` BBC test articles with the embedded SmolLM2-135M (``generate`` and
``constrained``, zero-shot, after a two-document warm-up), under one of these settings:

- ``default``: GNU OpenMP's own behaviour (idle threads spin 300,000 times before they sleep; written out as
  ``GOMP_SPINCOUNT=300000``, which also keeps annotune from choosing), torch's default threads (one per core);
- ``short spin``: ``GOMP_SPINCOUNT=10000``;
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once; annotune's default);
- ``1 thread``: ``passive`` with one torch thread;

and next to one of these competitors, started by the bench before the measurement and stopped after it:
none; a pure-Python busy loop (one core); a second torch process multiplying matrices on every core. Reports
docs/s and the slowdown against the same setting without a competitor, and against ``default`` alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ChildFailed, report_child_result, run_child, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

SETTINGS = {
    "default": {"GOMP_SPINCOUNT": "300000"},  # GNU OpenMP's built-in value, written out
    "short spin": {"GOMP_SPINCOUNT": "10000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
}
COMPETITORS = {
    "none": None,
    "busy loop (1 core)": "while True: pass",
    "torch matmul (all cores)": "import torch\na = torch.randn(1024, 1024)\nwhile True: a @ a",
}


def measure(n_docs: int) -> dict:
    """Label in this process (a child of the bench) and return docs/s per answer mode."""
    import torch

    from annotune.backends.local import LocalBackend
    from annotune.environment import quiet_libraries
    from annotune.experiments.compare import split_data
    from annotune.experiments.config import load_config
    from annotune.tasks.prompts import PromptBuilder

    quiet_libraries()
    cfg = load_config(ROOT / "examples" / "bbc-news.toml")
    _, test = split_data(cfg, cfg.load_data())
    docs = test.docs[:n_docs]
    backend = LocalBackend("smollm2", max_text_tokens=256)
    builder = PromptBuilder(cfg.codebook)
    out = {"torch_threads": torch.get_num_threads()}
    for answer in ("generate", "constrained"):
        backend.label(docs[:2], builder, answer, progress=False)  # warm-up
        started = time.perf_counter()
        backend.label(docs, builder, answer, progress=False)
        out[answer] = len(docs) / (time.perf_counter() - started)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "contention.json"))
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        report_child_result(measure(args.docs))
        return 0

    from annotune.environment import hardware, library_versions

    started = time.time()
    omp = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
    base_env = {k: v for k, v in os.environ.items() if k not in omp}
    rows = []
    for competitor, code in COMPETITORS.items():
        for setting, env in SETTINGS.items():
            rival = subprocess.Popen([sys.executable, "-c", code], env=base_env) if code else None
            try:
                time.sleep(2 if rival else 0)  # let the competitor get going
                measured = run_child(__file__, ["--one", "--docs", str(args.docs)], env={**base_env, **env})
            except ChildFailed as exc:
                print(exc, file=sys.stderr)
                return 1
            finally:
                if rival:
                    rival.kill()
                    rival.wait()
            row = {"competitor": competitor, "setting": setting, **measured}
            rows.append(row)
            print(f"{competitor:26} {setting:9} generate {row['generate']:.2f} docs/s  "
                  f"constrained {row['constrained']:.2f} docs/s", flush=True)
    alone = {r["setting"]: r for r in rows if r["competitor"] == "none"}
    for r in rows:
        for answer in ("generate", "constrained"):
            r[f"{answer}_slowdown"] = alone[r["setting"]][answer] / r[answer]
            r[f"{answer}_vs_default_alone"] = alone["default"][answer] / r[answer]
    print("\ncompetitor | setting | generate docs/s | × slower | constrained docs/s | × slower | "
          "× slower than default alone (generate, constrained)")
    for r in rows:
        print(f"{r['competitor']} | {r['setting']} | {r['generate']:.2f} | {r['generate_slowdown']:.1f} | "
              f"{r['constrained']:.2f} | {r['constrained_slowdown']:.1f} | "
              f"{r['generate_vs_default_alone']:.1f}, {r['constrained_vs_default_alone']:.1f}")
    out = {"bench": "contention", "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - started, 1),
           "hardware": hardware(), "libraries": library_versions(), "docs": args.docs, "rows": rows}
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
