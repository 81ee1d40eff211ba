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

import hashlib
import json
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotune.backends.base import Prediction, RunStats
from annotune.codebook import Codebook, normalise
from annotune.data.dataset import BUILTINS, Dataset, load_data
from annotune.environment import hardware, library_versions
from annotune.errors import AnnotuneError, ConfigError, DataError, reject_unknown_keys
from annotune.evaluation.metrics import evaluate
from annotune.experiments.results import write_predictions_csv
from annotune.tasks.labels import label_to_json
from annotune.backends.api.client import API_SYSTEM_KEYS
from annotune.systems.api import check_api_spec

SYSTEM_TYPES = ("prompt", "finetuned", "tfidf", "predictions", "api")
_SYSTEM_KEYS = {
    "prompt": {"name", "type", "model", "shots", "answer", "dtype", "batch_size", "max_text_tokens",
               "max_new_tokens", "example_chars"},
    "finetuned": {"name", "type", "model", "answer", "dtype", "batch_size", "max_text_tokens", "max_new_tokens",
                  "train_size", "run", "finetune"},
    "tfidf": {"name", "type", "C"},
    "predictions": {"name", "type", "path", "id_field", "label_field", "cost_per_1k_docs"},
    "api": API_SYSTEM_KEYS,  # an OpenAI-compatible endpoint (api.py)
}
_TOP_KEYS = {"name", "seed", "codebook", "data", "split", "model", "systems", "output", "bootstrap", "finetune",
             "curve"}  # [curve]: `annotune curve` (curve.py)
_MODEL_KEYS = {"name", "dtype", "batch_size", "max_text_tokens", "max_new_tokens"}
_DTYPES = ("auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32")  # models.parse_dtype
_SPLIT_KEYS = {"field", "train", "test", "test_size", "max_train", "max_test"}
# expected type of every option: (types, description, minimum for numbers)
_OPTION_TYPES: dict[str, tuple[tuple[type, ...], str, float | None]] = {
    "name": ((str,), "a non-empty string", None),
    "model": ((str,), "a model name, folder or hub id", None),
    "dtype": ((str,), "one of auto, bf16, fp16, fp32", None),
    "answer": ((str,), "'generate' or 'constrained'", None),
    "path": ((str,), "a file path", None),
    "id_field": ((str,), "a column name", None),
    "label_field": ((str,), "a column name", None),
    "shots": ((int,), "an integer >= 0", 0),
    "batch_size": ((int,), "an integer >= 1", 1),
    "max_text_tokens": ((int,), "an integer >= 1", 1),
    "max_new_tokens": ((int,), "an integer >= 1", 1),
    "example_chars": ((int,), "an integer >= 1", 1),
    "C": ((int, float), "a number > 0", None),
    "cost_per_1k_docs": ((int, float), "a number >= 0", 0),
    "field": ((str,), "a column name", None),
    "train": ((str,), "a split name", None),
    "test": ((str,), "a split name", None),
    "max_train": ((int,), "an integer >= 1", 1),
    "max_test": ((int,), "an integer >= 1", 1),
}


def _check_option(key: str, value: Any, file: Path, where: str) -> None:
    """ConfigError unless ``value`` has the type (and range) the option ``key`` needs."""
    if key not in _OPTION_TYPES:
        return
    types, desc, minimum = _OPTION_TYPES[key]
    ok = isinstance(value, types) and not isinstance(value, bool)
    if ok and isinstance(value, str):
        ok = bool(value.strip())
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and key == "C":
        ok = value > 0
    if ok and key == "dtype":
        ok = value in _DTYPES
    if not ok:
        raise ConfigError(f"{key} must be {desc}, not {value!r}", file=file, field=where)


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
    finetune: dict
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
        reject_unknown_keys(raw, _TOP_KEYS, file=path)
        base = path.parent

        def table(key: str) -> dict:
            value = raw.get(key)
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise ConfigError(f"{key} must be a table ([{key}]), not {value!r}", file=path, field=key)
            return value

        for key, ok, desc in (("name", lambda v: isinstance(v, str) and v.strip(), "a non-empty string"),
                              ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
                              ("bootstrap", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                               "an integer >= 0 (resamples for the confidence intervals; 0: none)"),
                              ("output", lambda v: isinstance(v, str) and v.strip(), "a folder path")):
            if key in raw and not ok(raw[key]):
                raise ConfigError(f"{key} must be {desc}, not {raw[key]!r}", file=path, field=key)
        data, split, model = table("data"), table("split"), table("model")
        if data.get("labelled", True) is False:
            raise ConfigError("a comparison scores systems against the gold labels: the data must be labelled",
                              file=path, field="data.labelled")
        reject_unknown_keys(split, _SPLIT_KEYS, file=path, prefix="split.")
        for key, value in split.items():
            if key != "test_size":  # test_size (fraction or count) is checked with the data
                _check_option(key, value, path, f"split.{key}")
        if "field" in split and "test_size" in split:
            raise ConfigError("give either field (a train/test column) or test_size (a seeded split), not both",
                              file=path, field="split")
        reject_unknown_keys(model, _MODEL_KEYS, file=path, prefix="model.")
        for key, value in model.items():
            _check_option("model" if key == "name" else key, value, path, f"model.{key}")
        cb_spec = raw.get("codebook")
        if isinstance(cb_spec, str):
            codebook = Codebook.load(base / cb_spec)
        elif isinstance(cb_spec, dict):
            codebook = Codebook.from_dict(cb_spec, source=str(path))
        else:
            raise ConfigError("missing codebook: a path or an inline [codebook] table", file=path, field="codebook")
        systems = raw.get("systems") or []
        if not systems and "curve" not in raw:  # a learning curve needs no reference systems
            raise ConfigError("no [[systems]] to compare", file=path, field="systems")
        if not isinstance(systems, list):
            raise ConfigError("systems must be a list of [[systems]] tables", file=path, field="systems")
        names: set[str] = set()
        slugs: dict[str, str] = {}
        for i, spec in enumerate(systems, start=1):
            where = f"systems[{i}]"
            if not isinstance(spec, dict):
                raise ConfigError(f"each system must be a [[systems]] table, not {spec!r}", file=path, field=where)
            stype = spec.get("type", "prompt")
            if not isinstance(stype, str) or stype not in SYSTEM_TYPES:
                raise ConfigError(f"unknown system type {stype!r}; expected one of {', '.join(SYSTEM_TYPES)}",
                                  file=path, field=f"{where}.type")
            for key in spec:
                if key not in _SYSTEM_KEYS[stype]:
                    raise ConfigError(f"unknown key {key!r} for a {stype!r} system", file=path,
                                      field=f"{where}.{key}")
            if "name" not in spec:
                raise ConfigError("every system needs a name", file=path, field=f"{where}.name")
            for key, value in spec.items():
                _check_option(key, value, path, f"{where}.{key}")
            if stype == "api":
                check_api_spec(spec, path, where)
            if spec["name"] in names:
                raise ConfigError(f"duplicate system name {spec['name']!r}", file=path, field=f"{where}.name")
            names.add(spec["name"])
            slug = _slug(spec["name"])
            if slug in slugs:  # both would be saved to systems/<slug>.json and overwrite each other
                raise ConfigError(f"system names {slugs[slug]!r} and {spec['name']!r} are too similar (both saved "
                                  f"as systems/{slug}.json); rename one", file=path, field=f"{where}.name")
            slugs[slug] = spec["name"]
            if stype in ("prompt", "finetuned") and spec.get("answer", "generate") not in ("generate", "constrained"):
                raise ConfigError("answer must be 'generate' or 'constrained'", file=path, field=f"{where}.answer")
            if stype == "predictions":
                if not spec.get("path"):
                    raise ConfigError("a predictions system needs path = a JSONL/CSV file", file=path,
                                      field=f"{where}.path")
                pred_path = Path(spec["path"]).expanduser()
                pred_path = pred_path if pred_path.is_absolute() else base / pred_path
                if not pred_path.is_file():
                    raise ConfigError(f"predictions file not found: {pred_path}", file=path, field=f"{where}.path")
        name = str(raw.get("name") or path.stem)
        out = Path(output) if output else Path(raw.get("output") or Path("runs") / name)
        if out.exists() and not out.is_dir():
            raise ConfigError("the output folder is a file", file=out, field="output")
        return cls(name=name, seed=int(raw.get("seed", 0)), codebook=codebook, data=data, split=split, model=model,
                   systems=systems, output=out, finetune=table("finetune"), n_boot=int(raw.get("bootstrap", 1000)),
                   source=path, raw=raw)

    def data_spec(self) -> dict:
        """The [data] table, with the [split] column passed on to the loader (``split.field``)."""
        spec = dict(self.data)
        if "field" in self.split and "builtin" in spec:
            builtin = BUILTINS.get(normalise(str(spec["builtin"])))
            if builtin == "bbc-news":
                raise ConfigError("the builtin 'bbc-news' has no train/test column; use test_size = ... instead",
                                  file=self.source, field="split.field")
            if builtin == "flourishing" and self.split["field"] != "split":
                raise ConfigError(f"the builtin 'flourishing' has no column {self.split['field']!r}; its "
                                  "train/test column is 'split'", file=self.source, field="split.field")
        if "field" in self.split and "builtin" not in spec:
            if spec.get("split_field", self.split["field"]) != self.split["field"]:
                raise ConfigError(f"split.field {self.split['field']!r} differs from data.split_field "
                                  f"{spec['split_field']!r}", file=self.source, field="split.field")
            spec["split_field"] = self.split["field"]
        return spec

    def load_data(self) -> Dataset:
        return load_data(self.data_spec(), self.codebook, self.source.parent, file=self.source)


def effective_spec(cfg: CompareConfig, spec: dict) -> dict:
    """A system's spec with the config-wide defaults it inherits (what its fingerprint covers)."""
    stype = spec.get("type", "prompt")
    merged = {**(cfg.model if stype in ("prompt", "finetuned") else {}), **spec}
    if stype == "finetuned":
        merged["finetune"] = {**cfg.finetune, **(spec.get("finetune") or {})}
    return merged


def split_data(cfg: CompareConfig, dataset: Dataset) -> tuple[Dataset, Dataset]:
    """Train/test split as the config says: a split column or a seeded stratified split; then optional
    seeded subsamples (``max_train``, ``max_test``)."""
    spec = cfg.split
    reject_unknown_keys(spec, _SPLIT_KEYS, file=cfg.source, prefix="split.")
    if "field" in spec or (any(d.split for d in dataset.docs[:1]) and "test_size" not in spec):
        train, test = dataset.by_split(spec.get("train", "train")), dataset.by_split(spec.get("test", "test"))
    else:
        try:
            train, test = dataset.split(test_size=spec.get("test_size", 0.2), seed=cfg.seed)
        except AnnotuneError as exc:  # name the config, where test_size was written
            raise ConfigError(exc.message, file=cfg.source, field="split.test_size") from None
    if spec.get("max_train"):
        train = train.subsample(int(spec["max_train"]), seed=cfg.seed)
    if spec.get("max_test"):
        test = test.subsample(int(spec["max_test"]), seed=cfg.seed)
    if len(test) == 0:
        raise ConfigError("the test split is empty", file=cfg.source, field="split")
    return train, test


def _model_identity(source) -> dict:
    """What identifies a model's weights cheaply: the GGUF file, or the weight files' names, sizes and
    modification times (a hub id is identified by its name only)."""
    info: dict[str, Any] = {"location": source.describe()}
    loc = Path(source.location)
    files = [loc / source.gguf_file] if source.gguf_file else (
        sorted(p for p in loc.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")) if loc.is_dir()
        else [])
    info["files"] = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()]
    return info


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "system"


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        from annotune.backends.local import LocalBackend

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
            from annotune.systems.tfidf import TfidfBaseline

            return TfidfBaseline(cb, seed=self.cfg.seed, C=float(spec.get("C", 10.0))).fit_predict(
                train.docs, test.docs)
        if stype == "predictions":
            return self._file_predictions(spec, test)
        if stype == "finetuned":
            return self._finetuned(spec, train, test)
        if stype == "api":
            from annotune.systems.api import run_api_system

            return run_api_system(self.cfg, spec, train, test, progress=self.progress, log=self.log)
        from annotune.tasks.prompts import PromptBuilder, draw_examples

        backend = self._local_backend(spec)
        examples = draw_examples(train.docs, cb, int(spec.get("shots", 0)), self.cfg.seed)
        builder = PromptBuilder(cb, examples, example_chars=int(spec.get("example_chars", 1500)))
        preds, stats = backend.label(test.docs, builder, spec.get("answer", "generate"), progress=self.progress)
        stats.extra["examples"] = [d.id for d in examples]
        return preds, stats

    def finetune_spec(self, spec: dict, train: Dataset) -> tuple[Dataset, "FineTuneConfig", str, Path]:
        """Training data, hyper-parameters, base model and run folder of a fine-tuned system. The folder
        is named by a fingerprint of all three, so systems that share a training run (e.g. `generate`
        and `constrained` answering) train once."""
        from annotune.finetune.trainer import FineTuneConfig

        cfg = self.cfg
        params = {**cfg.finetune, **(spec.get("finetune") or {})}
        params.setdefault("seed", cfg.seed)
        ft_cfg = FineTuneConfig.from_dict(params, file=cfg.source, where=f"systems.{spec['name']}.finetune")
        data = train.subsample(int(spec["train_size"]), seed=cfg.seed) if spec.get("train_size") else train
        base = spec.get("model", cfg.model.get("name", "smollm2"))
        if spec.get("run"):
            run = Path(spec["run"])
            run = run if run.is_absolute() else cfg.source.parent / run
        else:
            fp = _fingerprint(base, params, [d.id for d in data.docs], cfg.codebook.to_dict())
            run = cfg.output / "finetuned" / f"{_slug(str(spec.get('train_size') or 'all'))}-{fp}"
        return data, ft_cfg, base, run

    def _finetuned(self, spec: dict, train: Dataset, test: Dataset) -> tuple[list[Prediction], RunStats]:
        from annotune.backends.local import LocalBackend
        from annotune.finetune.trainer import FineTuner, is_run_folder, run_prompt_builder

        data, ft_cfg, base, run = self.finetune_spec(spec, train)
        if not is_run_folder(run):
            self.log(f"{spec['name']}: fine-tuning {base} on {len(data)} examples → {run}")
            resume = (run / "checkpoints").exists()
            FineTuner(self.cfg.codebook, ft_cfg, base).train(data.docs, run, resume=resume, progress=self.progress,
                                                              log=self.log)
        manifest = json.loads((run / "manifest.json").read_text())
        key = (str(run), spec.get("dtype", "auto"))
        if key not in self._models:
            self._models = {key: LocalBackend(str(run), dtype=spec.get("dtype", "auto"))}
        backend = self._models[key]
        backend.batch_size = int(spec.get("batch_size", self.cfg.model.get("batch_size", 8)))
        backend.max_text_tokens = spec.get("max_text_tokens", ft_cfg.max_text_tokens)
        backend.max_new_tokens = spec.get("max_new_tokens")
        builder = run_prompt_builder(run, self.cfg.codebook)
        preds, stats = backend.label(test.docs, builder, spec.get("answer", "generate"), progress=self.progress)
        stats.extra["run"] = str(run)
        stats.extra["train_examples"] = len(data)
        stats.extra["train_seconds"] = manifest["training"]["wall_seconds"]
        stats.extra["train_tokens_per_s"] = manifest["training"]["tokens_per_s"]
        return preds, stats

    def _file_predictions(self, spec: dict, test: Dataset) -> tuple[list[Prediction], RunStats]:
        """Labels produced elsewhere (e.g. GPT-4's codings), parsed like any model answer; documents
        without one count as INVALID."""
        from annotune.tasks.parsing import parse_answer

        cb = self.cfg.codebook
        answers = self._read_answers(spec)
        matched = sum(doc.id in answers for doc in test.docs)
        if answers and not matched:  # surely an id mismatch, not a model that skipped every document
            example = next(iter(answers))
            self.log(f"warning: {spec['name']}: none of the {len(answers)} ids in {self._predictions_path(spec)} "
                     f"is a test document id (file: {example!r}, data: {test.docs[0].id!r}); every document "
                     "counts as INVALID")
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

    def _predictions_path(self, spec: dict) -> Path:
        path = Path(spec["path"]).expanduser()
        return path if path.is_absolute() else self.cfg.source.parent / path

    def _read_answers(self, spec: dict) -> dict[str, Any]:
        """{document id: raw answer} from a predictions file."""
        from annotune.data.dataset import _id_value, read_records

        cb = self.cfg.codebook
        path = self._predictions_path(spec)
        id_field = spec.get("id_field", cb.id_field or "id")
        label_field = spec.get("label_field", cb.label_field)
        records, columns = read_records(path)
        for key, option in ((id_field, "id_field"), (label_field, "label_field")):
            if key not in columns:
                raise DataError(f"column {key!r} not found; available columns: "
                                f"{', '.join(repr(str(c)) for c in columns)} (set {option} = ... in the system)",
                                file=path, field=key)
        answers: dict[str, Any] = {}
        first: dict[str, int] = {}
        for row, rec in records:
            doc_id = _id_value(rec.get(id_field))
            if not doc_id:
                raise DataError("empty id", file=path, row=row, field=id_field)
            if doc_id in first:
                raise DataError(f"duplicate id {doc_id!r} (first seen at row {first[doc_id]})", file=path, row=row,
                                field=id_field)
            first[doc_id] = row
            answers[doc_id] = rec.get(label_field)
        return answers

    # ------------------------------------------------------------------ run
    def _model_spec(self, spec: dict) -> str:
        return spec.get("model", self.cfg.model.get("name", "smollm2"))

    def preflight(self) -> dict[str, Any]:
        """Check what every system needs before any of them runs (a typo in the last system's model
        must not surface after an hour of the first); returns, per local system, what identifies its
        model's weights (or the predictions file's content), so that a model retrained in the same folder,
        or a corrected predictions file, is not mistaken for the old one."""
        from annotune.backends.models import resolve_model

        identities: dict[str, Any] = {}
        for i, spec in enumerate(self.cfg.systems, start=1):
            stype = spec.get("type", "prompt")
            if stype == "predictions":
                self._read_answers(spec)
                identities[spec["name"]] = hashlib.sha256(self._predictions_path(spec).read_bytes()).hexdigest()
            elif stype == "api":
                from annotune.systems.api import api_identity

                identities[spec["name"]] = api_identity(self.cfg, spec, i)
            elif stype == "prompt":
                try:
                    source = resolve_model(self._model_spec(spec))
                except AnnotuneError as exc:
                    raise ConfigError(exc.format(), file=self.cfg.source, field=f"systems[{i}].model") from None
                identities[spec["name"]] = _model_identity(source)
        return identities

    def run(self) -> dict:
        cfg = self.cfg
        started = time.time()
        dataset = cfg.load_data()
        train, test = split_data(cfg, dataset)
        models = self.preflight()
        self.log(f"data: {len(dataset)} documents ({dataset.dropped_empty} empty dropped); "
                 f"train {len(train)}, test {len(test)}")
        out = cfg.output
        (out / "systems").mkdir(parents=True, exist_ok=True)
        gold = [d.label for d in test.docs]
        data_fp = _fingerprint(cfg.codebook.to_dict(), [(d.id, d.text, label_to_json(d.label)) for d in test.docs],
                               [(d.id, d.text, label_to_json(d.label)) for d in train.docs], cfg.seed)
        systems = []
        for spec in cfg.systems:
            merged = effective_spec(cfg, spec)
            fp = _fingerprint(data_fp, merged, models.get(spec["name"]))
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


__all__ = ["CompareConfig", "Comparison", "split_data"]
