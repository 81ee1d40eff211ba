"""Documents per second of `annotune label` in this process and on Ray Data (a local Ray), same system and data.

    python bench/label_throughput.py [--docs 500] [--systems tfidf,embedding,head] [--ray-workers 1,2]
                                     [--batch-size 64] [--head-train 400] [--labelled 2404]

A flourishing project is built in a temporary folder: all 2,404 human-labelled tweets (the training labels,
10 % held out as `label` does) and the first ``--docs`` tweets of the unlabelled pool. Each (system, engine)
labels a fresh copy of it, so every run labels all 2,404 + N documents, fits its system itself and starts
with an empty embedding cache. Systems: ``tfidf``; ``embedding`` (MiniLM embeddings + LR); ``head`` (LoRA +
classification head on the embedded SmolLM2, trained once on ``--head-train`` tweets for one epoch before any
timing and kept in bench/results/label_throughput/head/; delete it to retrain).

Timed: `Project.label` end to end (fitting, Ray's start-up and actors, labelling, one committed transaction per
batch), the time to the first committed batch, and the rate after it (steady docs/s: meaningful with many
batches; with few, Ray's actors finish several before the driver commits the first). Ray gets a local cluster
of this machine's CPUs; a single actor gets all of them (its torch threads), two actors half each. Prints a
table and writes bench/results/label_throughput.json (with the load average before and after).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchlib import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

DATA = ROOT.parent / "shared" / "data" / "flourishing"
RESULTS = ROOT / "bench" / "results"
HEAD_RUNS = RESULTS / "label_throughput" / "head"


def systems_toml(head_train: int, head_run: Path) -> str:
    return f'''
[[systems]]
name = "tfidf"
type = "tfidf"

[[systems]]
name = "embedding"
type = "embedding"
model = "minilm"

[[systems]]
name = "head"
type = "head"
model = "smollm2"
epochs = 1
train_size = {head_train}
run = "{head_run.as_posix()}"
'''


def build_project(folder: Path, docs: int, head_train: int, labelled: int | None = None) -> Path:
    """The template project: codebook, human-labelled tweets (all, or the first ``labelled``), ``docs`` pool
    tweets, the three systems."""
    from annotune.codebook import Codebook
    from annotune.experiments.fingerprints import fingerprint
    from annotune.labelling import Project

    codebook = Codebook.load(ROOT / "examples" / "flourishing.toml")
    project = Project.init(folder, codebook)
    project.import_file(DATA / "tweets.jsonl", limit=labelled)
    if docs:
        project.import_file(DATA / "unlabelled_pool.jsonl", labels=False, limit=docs)
    project.close()
    head_run = HEAD_RUNS / f"smollm2-{head_train}-{fingerprint(codebook.to_dict(), head_train, labelled)}"
    path = folder / "annotune-project.toml"
    path.write_text(path.read_text(encoding="utf-8").split("[[systems]]")[0] + systems_toml(head_train, head_run),
                    encoding="utf-8")
    return folder


def timed_label(folder: Path, system: str, engine: str, workers: int, batch_size: int) -> dict:
    """Label every document of the project at ``folder``; seconds end to end and per committed batch."""
    from annotune.labelling import Project

    project = Project.open(folder)
    commits: list[tuple[float, int]] = []
    add = project.store.add_proposals

    def add_timed(rows, **kwargs):
        n = add(rows, **kwargs)
        commits.append((time.perf_counter(), n))
        return n

    project.store.add_proposals = add_timed
    started = time.perf_counter()
    out = project.label(system, engine=engine, workers=workers, batch_size=batch_size)
    seconds = time.perf_counter() - started
    project.close()
    docs = out["labelled"]
    first_at, first_n = commits[0] if commits else (started, 0)
    steady = (docs - first_n) / (commits[-1][0] - first_at) if len(commits) > 1 else None
    return {"system": system, "engine": engine, "workers": workers if engine == "ray" else None, "docs": docs,
            "seconds": round(seconds, 2), "docs_per_s": round(docs / seconds, 1),
            "first_batch_s": round(first_at - started, 2), "steady_docs_per_s": round(steady, 1) if steady else None}


def ray_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return None


def print_table(runs: list[dict]) -> None:
    print("\n| system | engine | docs | seconds | docs/s | first batch s | steady docs/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in runs:
        engine = r["engine"] + (f" ×{r['workers']}" if r["workers"] else "")
        print(f"| {r['system']} | {engine} | {r['docs']:,} | {r['seconds']:.1f} | {r['docs_per_s']:.1f} | "
              f"{r['first_batch_s']:.1f} | {r['steady_docs_per_s'] or '–'} |")


def main(argv=None) -> int:
    from annotune.environment import hardware, library_versions, quiet_libraries
    from annotune.labelling import Project

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=500, help="Pool tweets added to the 2,404 labelled ones.")
    ap.add_argument("--systems", default="tfidf,embedding,head")
    ap.add_argument("--ray-workers", default="1,2", help="Ray actor counts to measure (comma-separated).")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--head-train", type=int, default=400, help="Tweets the head system is trained on.")
    ap.add_argument("--labelled", type=int, default=None, help="Import only the first N labelled tweets (a "
                    "quick check of the script; default all 2,404).")
    ap.add_argument("--out", default=str(RESULTS / "label_throughput.json"))
    args = ap.parse_args(argv)
    quiet_libraries()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    engines = [("local", 1)] + [("ray", int(w)) for w in args.ray_workers.split(",") if w.strip()]
    if any(e == "ray" for e, _ in engines):
        from annotune.labelling.ray_engine import import_ray

        import_ray()  # a clear message before anything is built
    runs, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="label-throughput-") as tmp:
        template = build_project(Path(tmp) / "template", args.docs, args.head_train, args.labelled)
        if "head" in systems:
            print("training the head system (once; reused by later runs)…", flush=True)
            trainer = Project.open(template, progress=True, log=print)
            trainer.train("head")
            trainer.close()
        for system in systems:
            for engine, workers in engines:
                work = Path(tmp) / f"{system}-{engine}-{workers}"
                shutil.copytree(template, work)
                print(f"{system} / {engine}{f' ×{workers}' if engine == 'ray' else ''}…", flush=True)
                runs.append(timed_label(work, system, engine, workers, args.batch_size))
                shutil.rmtree(work)
    print_table(runs)
    out = {"bench": "label_throughput", "date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
           "libraries": {**library_versions(), "ray": ray_version()},
           "settings": {"pool_docs": args.docs, "labelled_docs": args.labelled or 2404, "batch_size": args.batch_size,
                        "head_train": args.head_train, "ray_workers": [w for e, w in engines if e == "ray"]},
           "load_average": {"before": load_before, "after": os.getloadavg()}, "runs": runs}
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
