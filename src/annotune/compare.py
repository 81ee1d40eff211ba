"""`annotune compare`: every system on the same held-out split, one table.

A comparison config names the codebook, the data, the split and a list of systems::

    name = "bbc-news"
    seed = 13
    codebook = "bbc-news.codebook.toml"      # or an inline [codebook] table

    [data]
    builtin = "bbc-news"                     # or path = "codings.csv", text_field = ...

    [split]
    test_size = 200                          # or field = "split" (train/test column)

    [model]                                  # defaults for every local system
    name = "smollm2"

    [[systems]]
    name = "smollm2 zero-shot generate"
    type = "prompt"                          # prompt | tfidf | predictions
    shots = 0
    answer = "generate"                      # or constrained

Each finished system is saved at once under ``<output>/systems/`` with a fingerprint of everything
that determines its answers; a rerun (after a crash, or with one more system) reuses finished
systems whose fingerprint is unchanged, so numbers are reproduced and no work is lost.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import Prediction, RunStats
from .codebook import Codebook
from .data import Dataset, Doc, load_data
from .environment import hardware, library_versions
from .errors import AnnotuneError, ConfigError
from .evaluation import evaluate

SYSTEM_TYPES = ("prompt", "tfidf", "predictions")
_SYSTEM_KEYS = {
    "prompt": {"name", "type", "model", "shots", "answer", "dtype", "batch_size", "max_text_tokens",
               "max_new_tokens", "example_chars"},
    "tfidf": {"name", "type", "C"},
    "predictions": {"name", "type", "path", "id_field", "label_field", "cost_per_1k_docs"},
}
_TOP_KEYS = {"name", "seed", "codebook", "data", "split", "model", "systems", "output", "bootstrap"}


@dataclass
class CompareConfig:
    name: str
    seed: int
    codebook: Codebook
    data: dict
    split: dict
    model: dict
    systems: list[dict]
    output: Path
    n_boot: int
    source: Path
    raw: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, output: str | Path | None = None) -> "CompareConfig":
        path = Path(path)
        if not path.exists():
            raise ConfigError("config file not found", file=path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError("config is not UTF-8 text", file=path) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", file=path) from None
        for key in raw:
            if key not in _TOP_KEYS:
                raise ConfigError(f"unknown key {key!r} (allowed: {', '.join(sorted(_TOP_KEYS))})", file=path,
                                  field=key)
        base = path.parent
        cb_spec = raw.get("codebook")
        if isinstance(cb_spec, str):
            codebook = Codebook.load(base / cb_spec)
        elif isinstance(cb_spec, dict):
            codebook = Codebook.from_dict(cb_spec, source=str(path))
        else:
            raise ConfigError("missing codebook: a path or an inline [codebook] table", file=path, field="codebook")
        systems = raw.get("systems") or []
        if not systems:
            raise ConfigError("no [[systems]] to compare", file=path, field="systems")
        names = set()
        for i, spec in enumerate(systems, start=1):
            where = f"systems[{i}]"
            stype = spec.get("type", "prompt")
            if stype not in SYSTEM_TYPES:
                raise ConfigError(f"unknown system type {stype!r}; expected one of {', '.join(SYSTEM_TYPES)}",
                                  file=path, field=f"{where}.type")
            for key in spec:
                if key not in _SYSTEM_KEYS[stype]:
                    raise ConfigError(f"unknown key {key!r} for a {stype!r} system", file=path,
                                      field=f"{where}.{key}")
            if not spec.get("name"):
                raise ConfigError("every system needs a name", file=path, field=f"{where}.name")
            if spec["name"] in names:
                raise ConfigError(f"duplicate system name {spec['name']!r}", file=path, field=f"{where}.name")
            names.add(spec["name"])
            if stype == "prompt" and spec.get("answer", "generate") not in ("generate", "constrained"):
                raise ConfigError("answer must be 'generate' or 'constrained'", file=path, field=f"{where}.answer")
            if stype == "predictions" and not spec.get("path"):
                raise ConfigError("a predictions system needs path = a JSONL/CSV file", file=path,
                                  field=f"{where}.path")
        name = str(raw.get("name") or path.stem)
        out = Path(output) if output else Path(raw.get("output") or Path("runs") / name)
        return cls(name=name, seed=int(raw.get("seed", 0)), codebook=codebook, data=raw.get("data") or {},
                   split=raw.get("split") or {}, model=raw.get("model") or {}, systems=systems, output=out,
                   n_boot=int(raw.get("bootstrap", 1000)), source=path, raw=raw)


def split_data(cfg: CompareConfig, dataset: Dataset) -> tuple[Dataset, Dataset]:
    """Train/test split as the config says: a split column or a seeded stratified split; then optional
    seeded subsamples (``max_train``, ``max_test``)."""
    spec = cfg.split
    allowed = {"field", "train", "test", "test_size", "max_train", "max_test"}
    for key in spec:
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})", file=cfg.source,
                              field=f"split.{key}")
    if "field" in spec or any(d.split for d in dataset.docs[:1]) and "test_size" not in spec:
        train, test = dataset.by_split(spec.get("train", "train")), dataset.by_split(spec.get("test", "test"))
    else:
        train, test = dataset.split(test_size=spec.get("test_size", 0.2), seed=cfg.seed)
    if spec.get("max_train"):
        train = train.subsample(int(spec["max_train"]), seed=cfg.seed)
    if spec.get("max_test"):
        test = test.subsample(int(spec["max_test"]), seed=cfg.seed)
    if len(test) == 0:
        raise ConfigError("the test split is empty", file=cfg.source, field="split")
    return train, test


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "system"


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def label_to_json(label: Any) -> Any:
    return list(label) if isinstance(label, tuple) else label


def label_from_json(value: Any, codebook: Codebook) -> Any:
    if value is None:
        return None
    if codebook.kind == "multi":
        return tuple(value)
    return value


class Comparison:
    """Runs the systems of a `CompareConfig` and writes results.json, predictions.csv and the table."""

    def __init__(self, cfg: CompareConfig, *, progress: bool = True, fresh: bool = False, log=print):
        self.cfg = cfg
        self.progress = progress
        self.fresh = fresh
        self.log = log
        self._models: dict[tuple, Any] = {}

    # ------------------------------------------------------------------ systems
    def _local_backend(self, spec: dict):
        from .backend import LocalBackend

        defaults = self.cfg.model
        model = spec.get("model", defaults.get("name", "smollm2"))
        dtype = spec.get("dtype", defaults.get("dtype", "auto"))
        key = (model, dtype)
        if key not in self._models:
            import torch

            torch.manual_seed(self.cfg.seed)
            self._models = {}  # keep one model in memory at a time
            self._models[key] = LocalBackend(model, dtype=dtype)
        backend = self._models[key]
        backend.batch_size = int(spec.get("batch_size", defaults.get("batch_size", 8)))
        backend.max_text_tokens = spec.get("max_text_tokens", defaults.get("max_text_tokens", 512))
        backend.max_new_tokens = spec.get("max_new_tokens", defaults.get("max_new_tokens"))
        return backend

    def run_system(self, spec: dict, train: Dataset, test: Dataset) -> tuple[list[Prediction], RunStats]:
        stype = spec.get("type", "prompt")
        cb = self.cfg.codebook
        if stype == "tfidf":
            from .baseline import TfidfBaseline

            return TfidfBaseline(cb, seed=self.cfg.seed, C=float(spec.get("C", 10.0))).fit_predict(
                train.docs, test.docs)
        if stype == "predictions":
            return self._file_predictions(spec, test)
        from .prompts import PromptBuilder, draw_examples

        backend = self._local_backend(spec)
        examples = draw_examples(train.docs, cb, int(spec.get("shots", 0)), self.cfg.seed)
        builder = PromptBuilder(cb, examples, example_chars=int(spec.get("example_chars", 1500)))
        preds, stats = backend.label(test.docs, builder, spec.get("answer", "generate"), progress=self.progress)
        stats.extra["examples"] = [d.id for d in examples]
        return preds, stats

    def _file_predictions(self, spec: dict, test: Dataset) -> tuple[list[Prediction], RunStats]:
        """Labels produced elsewhere (e.g. GPT-4's codings), parsed like any model answer; documents
        without one count as INVALID."""
        from .data import read_records
        from .parsing import parse_answer

        cb = self.cfg.codebook
        path = Path(spec["path"])
        path = path if path.is_absolute() else self.cfg.source.parent / path
        id_field = spec.get("id_field", cb.id_field or "id")
        label_field = spec.get("label_field", cb.label_field)
        answers: dict[str, Any] = {}
        records, columns = read_records(path)
        for key in (id_field, label_field):
            if key not in columns:
                raise ConfigError(f"column {key!r} not found; available: {', '.join(map(str, columns))}",
                                  file=path, field=key)
        for _row, rec in records:
            answers[str(rec[id_field])] = rec[label_field]
        preds = []
        for doc in test.docs:
            if doc.id not in answers:
                preds.append(Prediction(doc.id, "", None, error="no prediction for this document"))
                continue
            raw = answers[doc.id]
            text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
            parsed = parse_answer(text, cb)
            preds.append(Prediction(doc.id, text, parsed.label, error=parsed.error))
        stats = RunStats(docs=len(test))
        if spec.get("cost_per_1k_docs") is not None:
            stats.extra["cost_usd"] = float(spec["cost_per_1k_docs"]) * len(test) / 1000
        return preds, stats

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        cfg = self.cfg
        started = time.time()
        dataset = load_data(cfg.data, cfg.codebook, cfg.source.parent, file=cfg.source)
        train, test = split_data(cfg, dataset)
        self.log(f"data: {len(dataset)} documents ({dataset.dropped_empty} empty dropped); "
                 f"train {len(train)}, test {len(test)}")
        out = cfg.output
        (out / "systems").mkdir(parents=True, exist_ok=True)
        gold = [d.label for d in test.docs]
        data_fp = _fingerprint(cfg.codebook.to_dict(), [(d.id, d.text, label_to_json(d.label)) for d in test.docs],
                               [d.id for d in train.docs], cfg.seed)
        systems = []
        for spec in cfg.systems:
            merged = {**{k: v for k, v in cfg.model.items() if spec.get("type", "prompt") == "prompt"}, **spec}
            fp = _fingerprint(data_fp, merged)
            store = out / "systems" / f"{_slug(spec['name'])}.json"
            if not self.fresh and store.exists():
                saved = json.loads(store.read_text())
                if saved.get("fingerprint") == fp:
                    self.log(f"{spec['name']}: reusing finished run from {store}")
                    systems.append(saved)
                    continue
            self.log(f"{spec['name']}: running on {len(test)} documents …")
            preds, stats = self.run_system(spec, train, test)
            metrics = evaluate(cfg.codebook, gold, [p.label for p in preds], n_boot=cfg.n_boot, seed=cfg.seed)
            record = {
                "name": spec["name"],
                "spec": merged,
                "fingerprint": fp,
                "metrics": metrics,
                "stats": stats.as_dict(),
                "predictions": [
                    {"id": p.id, "raw": p.raw, "label": label_to_json(p.label), "confidence": p.confidence,
                     "probs": p.probs, "error": p.error} for p in preds
                ],
            }
            tmp = store.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, ensure_ascii=False))
            tmp.replace(store)
            systems.append(record)
        results = {
            "name": cfg.name,
            "config": str(cfg.source),
            "seed": cfg.seed,
            "task": cfg.codebook.to_dict(),
            "data": {
                "documents": len(dataset),
                "dropped_empty": dataset.dropped_empty,
                "dropped_duplicates": getattr(dataset, "dropped_duplicates", 0),
                "train": len(train),
                "test": len(test),
                "test_ids_sha256": hashlib.sha256("\n".join(d.id for d in test.docs).encode()).hexdigest(),
            },
            "systems": [{k: v for k, v in s.items() if k != "predictions"} for s in systems],
            "environment": {"libraries": library_versions(), "hardware": hardware()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - started, 2),
        }
        (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
        write_predictions_csv(out / "predictions.csv", systems, test.docs, cfg.codebook)
        return results


def write_predictions_csv(path: Path, systems: list[dict], docs: list[Doc], codebook: Codebook) -> None:
    """One row per (system, document): id, gold, raw answer, parsed label (INVALID), probability."""
    from .parsing import answer_text

    gold = {d.id: answer_text(d.label, codebook) for d in docs}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["system", "id", "gold", "raw_answer", "parsed_label", "probability", "error"])
        for s in systems:
            for p in s["predictions"]:
                label = label_from_json(p["label"], codebook)
                parsed = "INVALID" if label is None else answer_text(label, codebook)
                prob = "" if p["confidence"] is None else f"{p['confidence']:.4f}"
                writer.writerow([s["name"], p["id"], gold[p["id"]], p["raw"], parsed, prob, p["error"] or ""])


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def _ci(m: dict, key: str) -> str:
    ci = m.get(f"{key}_ci")
    base = _fmt(m.get(key))
    return f"{base} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci and ci[0] is not None else base


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table for the task kind in ``results``."""
    kind = results["task"]["task"]["kind"]
    if kind == "single":
        header = ["System", "Valid %", "Acc (valid)", "Acc (all)", "Macro-F1 [95% CI]", "κ", "docs/s", "seconds"]
    elif kind == "multi":
        header = ["System", "Valid %", "Exact (valid)", "Exact (all)", "Micro-F1 [95% CI]", "Macro-F1", "Jaccard",
                  "docs/s", "seconds"]
    else:
        header = ["System", "Valid %", "Presence µF1", "Intensity µF1 [95% CI]", "accD", "Jaccard", "docs/s",
                  "seconds"]
    rows = []
    for s in results["systems"]:
        m, st = s["metrics"], s["stats"]
        speed = [_fmt(st.get("docs_per_s")) if st.get("docs_per_s") else "–",
                 f"{st['seconds']:.1f}" if st.get("seconds") else "–"]
        if kind == "single":
            rows.append([s["name"], _fmt(m["valid_rate"], True), _fmt(m["accuracy_valid"]), _fmt(m["accuracy"]),
                         _ci(m, "macro_f1"), _fmt(m.get("kappa")), *speed])
        elif kind == "multi":
            rows.append([s["name"], _fmt(m["valid_rate"], True), _fmt(m["accuracy_valid"]), _fmt(m["accuracy"]),
                         _ci(m, "micro_f1"), _fmt(m["macro_f1"]), _fmt(m["jaccard"]), *speed])
        else:
            rows.append([s["name"], _fmt(m["valid_rate"], True), _fmt(m["presence_micro_f1"]),
                         _ci(m, "intensity_micro_f1"), _fmt(m["accD"]), _fmt(m["jaccard"]), *speed])
    return header, rows


def markdown_table(results: dict) -> str:
    header, rows = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


__all__ = ["CompareConfig", "Comparison", "split_data", "table_rows", "markdown_table", "AnnotuneError"]
