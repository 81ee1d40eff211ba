"""`annotune curve`: how much labelled data does fine-tuning (or any system that learns) need?

A ``[curve]`` table in a comparison config asks for a learning curve::

    [curve]
    sizes = [25, 50, 100, 200, "all"]   # training documents; "all": the whole training split
    seeds = [1, 2]                      # one fine-tuning run per (size, seed)
    answer = "generate"                 # or "constrained", ["generate", "constrained"], or [] (no LoRA)
    references = ["smollm2 zero-shot generate", "GPT-4"]   # [[systems]] drawn as horizontal lines
    # model = "smollm2"                 # base model (default: [model] name)
    # keep_checkpoints = false          # delete a point's training checkpoints once it is recorded

For every (size, seed) point the seed draws a stratified subsample of the training split and seeds the
fine-tuning with the config's ``[finetune]`` (as ``finetuned`` systems), scored on the one fixed test split;
reference systems that learn (``head``, ``embedding``, ``tfidf``...) run on every subsample too, each a line of
its own (with ``answer = []`` the only lines). It is the `Comparison` machinery (run folders named by a
fingerprint, resumed from checkpoints); the reference systems also run once, as `compare` runs them.

Each point is written to ``<output>/curve/points/<size>-<seed>.json`` as soon as it is finished (atomic
rename), with a fingerprint of everything that determines it: a crash or Ctrl-C loses only the point in
progress, and a rerun skips every finished point whose fingerprint is unchanged.

Aggregates (``<output>/curve/curve.json``), per answer mode and size, for the task's primary metric
(macro-F1, micro-F1 or intensity micro-F1):

- ``mean``, ``sd``, ``min``, ``max`` over the seeds, and every seed's value with the point's own
  bootstrap interval;
- ``ci``: 95 % percentile bootstrap interval of the seed-mean over test documents: each resample of the
  test documents (the same resamples as `evaluate`'s intervals) scores every seed's predictions and
  averages them. It is the uncertainty due to the finite test set; the spread over seeds is ``sd``;
- ``seed_ci``: 95 % t-interval of the mean over seeds (with 2 seeds it is wide: t = 12.7);
- per reference: the difference seed-mean − reference with a *paired* bootstrap interval (the same
  resampled documents for both).

"Matches a reference" is reported two ways, both the *smallest* size that satisfies it:

- ``by_mean``: the mean over seeds is ≥ the reference's value;
- ``by_ci``: the lower bound of ``ci`` is ≥ the reference's value (the fine-tuned model is at least as
  good with 95 % confidence over test documents).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
import time
from pathlib import Path
from typing import Any

import numpy as np

from annotune.codebook import Codebook
from annotune.config import ANSWER_MODES
from annotune.environment import hardware, library_versions
from annotune.errors import ConfigError
from annotune.evaluation.metrics import evaluate
from annotune.experiments.compare import Comparison, load_finished, run_context, split_data, write_atomic
from annotune.experiments.config import CurveConfig, ExperimentConfig, parse_system
from annotune.experiments.curve_config import reference_systems, trained_references
from annotune.experiments.fingerprints import data_fingerprint, fingerprint, model_identity, slug
from annotune.systems.base import system_types
from annotune.systems.finetuned import FinetunedSystem
from annotune.tasks.labels import label_from_json, label_to_json

CURVE_DIR = "curve"


# ---------------------------------------------------------------------------- primary metric from counts
def primary_counts(codebook: Codebook, gold: list, pred: list) -> np.ndarray:
    """Per-document (tp, fp, fn) counts, shape (documents, groups, 3), from which the task's primary metric
    is the mean over groups of F1 = 2tp / (2tp + fp + fn) of the summed counts (the task kind's
    `primary_counts`). INVALID (None) predicts nothing, as in `evaluate`."""
    return codebook.task.primary_counts(gold, pred)


def f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Mean over groups of F1 from summed counts of shape (..., groups, 3); 0 where undefined."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    den = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, den, out=np.zeros_like(den, dtype=float), where=den > 0)
    return f1.mean(axis=-1)


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) multiplicities of the documents in each bootstrap resample: the resamples
    `evaluation.bootstrap_ci` draws with the same seed."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def resampled_metric(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The primary metric on every resample: shape (n_boot,)."""
    n, groups, _ = counts.shape
    summed = (weights @ counts.reshape(n, groups * 3)).reshape(-1, groups, 3)
    return f1_from_counts(summed)


def _interval(stats: np.ndarray, ci: float = 0.95) -> list[float] | None:
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return None
    alpha = (1 - ci) / 2
    lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def seed_interval(values: list[float], ci: float = 0.95) -> list[float] | None:
    """t-interval of the mean over seeds (None with fewer than 2 seeds), clipped to [0, 1]."""
    if len(values) < 2:
        return None
    from scipy import stats

    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.5 + ci / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return [max(0.0, mean - half), min(1.0, mean + half)]


def aggregate(codebook: Codebook, gold: list, points: list[dict], references: dict[str, list], *,
              answers: list[str], n_boot: int, seed: int, ref_metrics: dict[str, dict] | None = None) -> dict:
    """Per answer mode: one row per size (mean, spread and intervals over seeds, differences to the
    references) and the smallest sizes that match each reference. ``points`` carry their predictions
    (``answers[answer]["labels"]``); ``references`` maps a reference name to its predicted labels."""
    n = len(gold)
    weights = resample_weights(n, n_boot, seed) if n_boot else None
    ref_counts = {name: primary_counts(codebook, gold, labels) for name, labels in references.items()}
    ref_value = {name: float(f1_from_counts(c.sum(0))) for name, c in ref_counts.items()}
    ref_boot = {name: resampled_metric(weights, c) for name, c in ref_counts.items()} if weights is not None else {}
    ref_ci = {}
    for name in ref_counts:  # the interval `compare` reported (the same resamples), else computed here
        stored = (ref_metrics or {}).get(name)
        ref_ci[name] = (stored.get(f"{stored['primary']}_ci") if stored else None) or (
            _interval(ref_boot[name]) if name in ref_boot else None)
    out: dict[str, Any] = {"references": [{"name": name, "value": ref_value[name], "ci": ref_ci[name]}
                                          for name in ref_counts], "answers": {}}
    for answer in answers:
        by_size: dict[str, list[dict]] = {}
        for p in points:
            if answer in p["answers"]:
                by_size.setdefault(str(p["size"]), []).append(p)
        rows = []
        for key, pts in by_size.items():
            pts = sorted(pts, key=lambda p: p["seed"])
            counts = [primary_counts(codebook, gold, p["answers"][answer]["labels"]) for p in pts]
            lora_training = [p["training"] if answer in ANSWER_MODES else  # else the line's own (a head's)
                             {"tokens_per_s": p["answers"][answer]["stats"].get("train_tokens_per_s")} for p in pts]
            values = [float(f1_from_counts(c.sum(0))) for c in counts]
            row: dict[str, Any] = {
                "size": pts[0]["size"],
                "n_train": int(round(float(np.mean([p["n_train"] for p in pts])))),
                "seeds": [p["seed"] for p in pts],
                "values": values,
                "value_cis": [p["answers"][answer]["metrics"].get(f"{p['answers'][answer]['metrics']['primary']}_ci")
                              for p in pts],
                "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "min": float(min(values)),
                "max": float(max(values)),
                "seed_ci": seed_interval(values),
                "valid_rate": float(np.mean([p["answers"][answer]["metrics"]["valid_rate"] for p in pts])),
                "accuracy": float(np.mean([p["answers"][answer]["metrics"]["accuracy"] for p in pts])),
                "train_seconds": _mean([line_train_seconds(p, answer) for p in pts]),
                "train_tokens": _mean([lora.get("tokens") for lora in lora_training]),
                "train_tokens_per_s": _mean([lora.get("tokens_per_s") for lora in lora_training]),
                "eval_seconds": _mean([p["answers"][answer]["stats"].get("seconds") for p in pts]),
                "eval_docs_per_s": _mean([p["answers"][answer]["stats"].get("docs_per_s") for p in pts]),
                "ci": None,
                "vs_references": {},
            }
            boot = np.mean([resampled_metric(weights, c) for c in counts], axis=0) if weights is not None else None
            if boot is not None:
                row["ci"] = _interval(boot)
            for name in ref_counts:
                diff = {"difference": row["mean"] - ref_value[name], "ci": None}
                if boot is not None:
                    diff["ci"] = _interval(boot - ref_boot[name])
                row["vs_references"][name] = diff
            rows.append(row)
        rows.sort(key=lambda r: (r["n_train"], r["size"] == "all"))
        matches = []
        for name in ref_counts:
            match = {"reference": name, "reference_value": ref_value[name], "reference_ci": ref_ci[name],
                     "by_mean": None, "by_ci": None}
            for rule, ok in (("by_mean", lambda r: r["mean"] >= ref_value[name]),
                             ("by_ci", lambda r: r["ci"] is not None and r["ci"][0] >= ref_value[name])):
                hit = next((r for r in rows if ok(r)), None)
                if hit is not None:
                    match[rule] = {"size": hit["size"], "n_train": hit["n_train"], "mean": hit["mean"],
                                   "ci": hit["ci"], "difference": hit["vs_references"][name]["difference"],
                                   "difference_ci": hit["vs_references"][name]["ci"]}
            matches.append(match)
        out["answers"][answer] = {"rows": rows, "matches": matches}
    return out


def line_train_seconds(point: dict, line: str) -> float | None:
    """Training seconds of one line of a point: what its system reports (a head's training, an embedding's
    encoding of the training documents + fit), else the point's LoRA training for an answer-mode line."""
    seconds = point["answers"][line]["stats"].get("train_seconds")
    return seconds if seconds is not None or line not in ANSWER_MODES else point["training"].get("wall_seconds")


def point_train_seconds(point: dict) -> float:
    """All training of a point: its LoRA run once (however many answer modes read it) and every trained
    reference system's."""
    lines = [a for a in point["answers"] if a not in ANSWER_MODES]
    return (point["training"].get("wall_seconds") or 0) + sum(line_train_seconds(point, a) or 0 for a in lines)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# ---------------------------------------------------------------------------- running
class Curve:
    """Runs the reference systems and every (size, seed) point of a learning curve; writes
    ``curve/points/*.json`` as points finish and ``curve/curve.json`` at the end."""

    def __init__(self, cfg: ExperimentConfig, *, progress: bool = True, fresh: bool = False, log=print):
        if cfg.curve is None:
            raise ConfigError("no [curve] table: add one with sizes = [...] and seeds = [...] (see the README)",
                              file=cfg.source, field="curve")
        if cfg.codebook.task.open_answers:
            raise ConfigError(f"learning curves resample counts of labels; a {cfg.codebook.kind!r} task has none "
                              "(compare fine-tuned systems with different train_size instead)",
                              file=cfg.source, field="curve")
        self.cfg = cfg
        self.curve: CurveConfig = cfg.curve
        self.progress = progress
        self.fresh = fresh
        self.log = log

    @property
    def folder(self) -> Path:
        return Path(self.cfg.output) / CURVE_DIR

    def reference_names(self) -> list[str]:
        return [s.name for s in reference_systems(self.cfg)]

    def base_model(self) -> str:
        return self.curve.model or self.cfg.model.name

    def trained_reference(self, config, size: int | str, context):
        """A trained reference system learning from the point's subsample."""
        sized = config.model_copy(update={"train_size": None if size == "all" else int(size)})
        return system_types()[config.type](sized, context)

    def point_system(self, size: int | str, seed: int, answer: str, context) -> FinetunedSystem:
        """The fine-tuned system a point is: the config's [finetune] with the point's seed, the point's
        subsample, and the [model] settings that apply to inference."""
        raw: dict[str, Any] = {"name": f"curve {size}/{seed} {answer}", "type": "finetuned",
                               "model": self.base_model(), "answer": answer, "finetune": {"seed": seed}}
        if size != "all":
            raw["train_size"] = int(size)
        config = parse_system(raw, 1, self.cfg.defaults(seed), file=self.cfg.source)
        return FinetunedSystem(config, context)

    def check_sizes(self) -> None:
        """Refuse, before any work, sizes too small to train on (every label needs an example; fine-tuning
        also [finetune] min_examples)."""
        cfg, lora = self.cfg, bool(self.curve.answers)
        ft = cfg.finetune_config()
        needed = cfg.codebook.task.min_training_examples()  # e.g. one per label
        smallest = max(ft.min_examples, needed) if lora else needed
        why = ["one per label"] * (needed > 1) + [f"min_examples = {ft.min_examples}"] * lora
        for size in self.curve.sizes:
            if size != "all" and size < smallest:
                raise ConfigError(f"size {size} is too small: {'fine-tuning' if lora else 'training'} needs at least "
                                  f"{smallest} documents ({' and '.join(why)})", file=cfg.source, field="curve.sizes")

    def run(self) -> dict:
        from annotune.backends.models import resolve_model

        cfg, curve = self.cfg, self.curve
        started = time.time()
        try:
            base_identity = model_identity(resolve_model(self.base_model())) if curve.answers else None
        except Exception as exc:  # noqa: BLE001 - a clear config error, before any work
            raise ConfigError(getattr(exc, "message", str(exc)), file=cfg.source, field="curve.model") from None
        self.check_sizes()
        refs = self.reference_names()
        trained = trained_references(cfg)  # answer = [] without any: refused by load_config
        identity = {ref.name: self.trained_reference(ref, "all", run_context(cfg)).preflight(
            cfg.systems.index(ref) + 1) for ref in trained}  # e.g. the encoder's weights, for the fingerprints
        lines = [*curve.answers, *(ref.name for ref in trained)]
        what = ", ".join([f"LoRA on {self.base_model()}"] * bool(curve.answers) + [r.name for r in trained])
        self.log(f"curve: {len(refs)} reference system(s), then {len(curve.sizes)} sizes × {len(curve.seeds)} "
                 f"seeds of {what}")
        results = Comparison(cfg, progress=self.progress, fresh=self.fresh, log=self.log, systems=refs).run()

        dataset = cfg.load_data()
        train, test = split_data(cfg, dataset)
        gold = [d.label for d in test.docs]
        data_fp = data_fingerprint(cfg.codebook, train, test, cfg.seed)
        points_dir = self.folder / "points"
        points_dir.mkdir(parents=True, exist_ok=True)
        for size in curve.sizes:
            if size != "all" and size >= len(train):
                self.log(f"curve: size {size} ≥ the training split ({len(train)} documents): it uses all of them")
        points = []
        todo = [(size, seed) for size in curve.sizes for seed in curve.seeds]
        for i, (size, seed) in enumerate(todo, start=1):
            store = points_dir / f"{slug(str(size))}-{seed}.json"
            # a point's size is its own: the config-wide train_size does not apply
            context = replace(run_context(cfg, progress=self.progress, log=self.log, seed=seed), train_size=None)
            systems = {a: self.point_system(size, seed, a, context) for a in curve.answers}
            systems.update({ref.name: self.trained_reference(ref, size, context) for ref in trained})
            fp = fingerprint(data_fp, {a: s.fingerprint(identity.get(a)) for a, s in systems.items()}, base_identity,
                             cfg.bootstrap)
            saved = None if self.fresh else load_finished(store, fp)
            if saved is not None:
                self.log(f"curve point {i}/{len(todo)} (size {size}, seed {seed}): reusing {store}")
                points.append(saved)
                continue
            self.log(f"curve point {i}/{len(todo)}: size {size}, seed {seed} …")
            record = self.run_point(size, seed, systems, train, test, gold)
            record["fingerprint"] = fp
            write_atomic(store, record)
            if not curve.keep_checkpoints and "run" in record:
                shutil.rmtree(Path(record["run"]) / "checkpoints", ignore_errors=True)
            summary = ", ".join(f"{a} {r['metrics']['primary']} {r['metrics'][r['metrics']['primary']]:.3f}"
                                for a, r in record["answers"].items())
            self.log(f"curve point {i}/{len(todo)}: size {size}, seed {seed}: {summary} "
                     f"(trained in {point_train_seconds(record):.0f} s)")
            points.append(record)

        ref_labels, ref_metrics = {}, {}
        for name in refs:
            stored = json.loads((Path(cfg.output) / "systems" / f"{slug(name)}.json").read_text(encoding="utf-8"))
            ref_labels[name] = [label_from_json(p["label"], cfg.codebook) for p in stored["predictions"]]
            ref_metrics[name] = stored["metrics"]
        for p in points:
            for a in p["answers"].values():
                a["labels"] = [label_from_json(x["label"], cfg.codebook) for x in a["predictions"]]
        agg = aggregate(cfg.codebook, gold, points, ref_labels, answers=lines, n_boot=cfg.bootstrap,
                        seed=cfg.seed, ref_metrics=ref_metrics)
        out = {
            "name": cfg.name,
            "config": str(cfg.source),
            "curve": curve.settings() | {"answers": curve.answers, "trained_systems": [r.name for r in trained]},
            "base_model": self.base_model(),
            "finetune": dict(cfg.finetune),
            "primary": cfg.codebook.task.primary_metric,
            "seed": cfg.seed,
            "n_boot": cfg.bootstrap,
            "data": {"train_pool": len(train), "test": len(test),
                     "test_ids_sha256": results["data"]["test_ids_sha256"]},
            "references": agg["references"],
            "answers": agg["answers"],
            "points": [{k: v for k, v in p.items() if k != "answers"} | {
                "answers": {a: {"metrics": r["metrics"], "stats": r["stats"]} for a, r in p["answers"].items()}}
                for p in points],
            "environment": {"libraries": library_versions(), "hardware": hardware()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - started, 2),
            "train_seconds_total": round(sum(point_train_seconds(p) for p in points), 2),
        }
        write_atomic(self.folder / "curve.json", out)
        return out

    def run_point(self, size: int | str, seed: int, systems: dict[str, FinetunedSystem], train, test,
                  gold: list) -> dict:
        cfg = self.cfg
        record: dict[str, Any] = {"size": size, "seed": seed, "answers": {}}
        for answer, system in systems.items():
            data = system.training_data(train)
            preds, stats = system.run(data, test)
            metrics = evaluate(cfg.codebook, gold, [p.label for p in preds], n_boot=cfg.bootstrap, seed=cfg.seed)
            record["answers"][answer] = {
                "metrics": metrics,
                "stats": stats.as_dict(),
                "predictions": [{"id": p.id, "raw": p.raw, "label": label_to_json(p.label), "error": p.error}
                                for p in preds],
            }
            record.setdefault("n_train", len(data))
            record.setdefault("train_ids_sha256", fingerprint([d.id for d in data.docs]))
            if isinstance(system, FinetunedSystem):
                record["run"] = str(system.run_folder(data))
        if "run" not in record:  # no LoRA points: the trained systems report their own training
            record["training"] = {}
            return record
        manifest = json.loads((Path(record["run"]) / "manifest.json").read_text(encoding="utf-8"))
        training = manifest["training"]
        record["training"] = {
            "wall_seconds": training.get("wall_seconds"),
            "tokens": training.get("tokens"),
            "tokens_per_s": training.get("tokens_per_s"),
            "train_loss": training.get("train_loss"),
            "dev_loss": training.get("dev_loss"),
            "dev": training.get("dev"),  # the dev evaluations and the best one, whose weights were kept
            "steps": manifest.get("resolved", {}).get("steps"),
            "device": manifest.get("resolved", {}).get("device"),
            "dtype": manifest.get("resolved", {}).get("dtype"),
            "fit_examples": manifest.get("data", {}).get("train"),
            "dev_examples": manifest.get("data", {}).get("dev"),
            "hyperparameters": manifest.get("hyperparameters"),
        }
        return record


def load_points(folder: Path) -> list[dict]:
    """Finished points of a curve folder (``<output>/curve``), for inspection."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((Path(folder) / "points").glob("*.json"))]


__all__ = ["Curve", "aggregate", "primary_counts", "f1_from_counts", "resample_weights",
           "seed_interval", "load_points"]
