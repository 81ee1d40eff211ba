"""`annotune compare`: every system of an experiment config on the same held-out split, one table.

Each finished system is saved at once under ``<output>/systems/`` with a fingerprint of everything
that determines its answers (data, split, its settings, its model's weights or file's content); a rerun
(after a crash, or with one more system) reuses finished systems whose fingerprint is unchanged, so
numbers are reproduced and no work is lost. The loop knows nothing of system types: each is a
registered `annotune.systems.System`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from annotune.data.dataset import Dataset
from annotune.environment import hardware, library_versions
from annotune.errors import AnnotuneError, ConfigError
from annotune.evaluation.metrics import evaluate
from annotune.experiments.config import ExperimentConfig, build_systems
from annotune.experiments.judged import check_judge, judge_records
from annotune.experiments.fingerprints import data_fingerprint, fingerprint, ids_sha256, slug
from annotune.experiments.results import load_finished, write_atomic, write_predictions_csv
from annotune.systems.base import ModelPool, RunContext, System
from annotune.tasks.labels import label_to_json


def split_data(cfg: ExperimentConfig, dataset: Dataset) -> tuple[Dataset, Dataset]:
    """Train/test split as the config says: a split column or a seeded stratified split; then optional
    seeded subsamples (``max_train``, ``max_test``)."""
    split = cfg.split
    if split.field or (any(d.split for d in dataset.docs[:1]) and split.test_size is None):
        train, test = dataset.by_split(split.train), dataset.by_split(split.test)
    else:
        try:
            train, test = dataset.split(test_size=0.2 if split.test_size is None else split.test_size, seed=cfg.seed)
        except AnnotuneError as exc:  # name the config, where test_size was written
            raise ConfigError(exc.message, file=cfg.source, field="split.test_size") from None
    if split.max_train:
        train = train.subsample(split.max_train, seed=cfg.seed)
    if split.max_test:
        test = test.subsample(split.max_test, seed=cfg.seed)
    if len(test) == 0:
        raise ConfigError("the test split is empty", file=cfg.source, field="split")
    return train, test


def run_context(cfg: ExperimentConfig, *, progress: bool = True, log: Callable[[str], None] = print,
                models: ModelPool | None = None, seed: int | None = None) -> RunContext:
    """What the systems of ``cfg`` run with (``seed`` overrides the config's)."""
    return RunContext(codebook=cfg.codebook, seed=cfg.seed if seed is None else seed, output=Path(cfg.output),
                      base_dir=cfg.base_dir, source=cfg.source, progress=progress, log=log,
                      models=models or ModelPool(), train_size=cfg.train_size)


def system_record(system: System, fp: str, preds, stats, metrics: dict, train: Dataset) -> dict:
    """What `compare` stores for a finished system (``systems/<slug>.json``)."""
    return {
        "name": system.name,
        "type": system.type,
        "train_docs": len(train) if system.trains else None,
        "train_ids_sha256": ids_sha256(train.ids) if system.trains else None,
        "spec": system.config.settings(),
        "fingerprint": fp,
        "metrics": metrics,
        "stats": stats.as_dict(),
        "predictions": [
            {"id": p.id, "raw": p.raw, "label": label_to_json(p.label), "confidence": p.confidence,
             "probs": p.probs, "error": p.error} for p in preds
        ],
    }


class Comparison:
    """Runs the systems of an `ExperimentConfig` and writes results.json, predictions.csv and one file per
    finished system."""

    def __init__(self, cfg: ExperimentConfig, *, progress: bool = True, fresh: bool = False,
                 log: Callable[[str], None] = print, systems: list[str] | None = None):
        self.cfg = cfg
        self.progress = progress
        self.fresh = fresh
        self.log = log
        self.context = run_context(cfg, progress=progress, log=log)
        wanted = [s for s in cfg.systems if systems is None or s.name in systems]
        self.systems = build_systems(cfg.model_copy(update={"systems": wanted}), self.context)

    def preflight(self, train: Dataset | None = None) -> dict[str, Any]:
        """Check what every system needs before any of them runs (a typo in the last system's model must
        not surface after an hour of the first); returns what identifies each system's inputs."""
        check_judge(self.cfg)
        index = {s.name: i for i, s in enumerate(self.cfg.systems, start=1)}
        for s in self.systems:
            s.check_task(index[s.name])
            if train is not None and s.train_size and s.train_size > len(train):
                own = s.config.train_size is not None
                raise ConfigError(f"train_size {s.train_size} is larger than the training split ({len(train)} "
                                  "documents)", file=self.cfg.source,
                                  field=f"systems[{index[s.name]}].train_size" if own else "train_size")
        return {s.name: s.preflight(index[s.name]) for s in self.systems}

    def run(self) -> dict:
        cfg = self.cfg
        started = time.time()
        dataset = cfg.load_data()
        train, test = split_data(cfg, dataset)
        identities = self.preflight(train)
        self.log(f"data: {len(dataset)} documents ({dataset.dropped_empty} empty dropped); "
                 f"train {len(train)}, test {len(test)}")
        out = Path(cfg.output)
        (out / "systems").mkdir(parents=True, exist_ok=True)
        gold = [d.label for d in test.docs]
        data_fp = data_fingerprint(cfg.codebook, train, test, cfg.seed)
        records = []
        for system in self.systems:
            fp = fingerprint(data_fp, system.type, system.fingerprint(identities.get(system.name)), cfg.bootstrap,
                             system.train_size)
            store = out / "systems" / f"{slug(system.name)}.json"
            saved = None if self.fresh else load_finished(store, fp)
            if saved is not None:
                self.log(f"{system.name}: reusing finished run from {store}")
                records.append(saved)
                continue
            self.log(f"{system.name}: running on {len(test)} documents …")
            data = system.training_data(train)
            preds, stats = system.run(data, test)
            metrics = evaluate(cfg.codebook, gold, [p.label for p in preds], n_boot=cfg.bootstrap, seed=cfg.seed)
            record = system_record(system, fp, preds, stats, metrics, data)
            write_atomic(store, record)
            records.append(record)
            for warning in metrics.get("warnings") or []:
                self.log(f"WARNING {system.name}: {warning}")
        judge_records(cfg, records, test, out, progress=self.progress, log=self.log)
        results = {
            "name": cfg.name,
            "config": str(cfg.source),
            "config_text": cfg.config_text,
            "seed": cfg.seed,
            "model": cfg.model.settings(),
            "judge": cfg.judge.settings() if cfg.judge is not None else None,
            "task": cfg.codebook.to_dict(),
            "data": {
                "documents": len(dataset),
                "dropped_empty": dataset.dropped_empty,
                "dropped_duplicates": getattr(dataset, "dropped_duplicates", 0),
                "train": len(train),
                "test": len(test),
                "test_ids_sha256": ids_sha256([d.id for d in test.docs]),
            },
            "systems": [{k: v for k, v in r.items() if k != "predictions"} for r in records],
            "environment": {"libraries": library_versions(), "hardware": hardware()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - started, 2),
        }
        (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
        write_predictions_csv(out / "predictions.csv", records, test.docs, cfg.codebook)
        return results


def check(cfg: ExperimentConfig) -> dict[str, Any]:
    """What `annotune check` verifies without running a model: data, split, every system's preflight."""
    dataset = cfg.load_data()
    train, test = split_data(cfg, dataset)
    Comparison(cfg, progress=False, log=lambda m: None).preflight(train)
    return {"dataset": dataset, "train": train, "test": test}


__all__ = ["Comparison", "split_data", "run_context", "check", "load_finished", "write_atomic"]
