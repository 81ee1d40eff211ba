"""`annotune curve`: seeded stratified subsamples, the primary metric and its intervals computed from counts
(identical to `evaluate`), aggregation over seeds and "matches the reference", config errors, and a real
curve with a tiny random Llama that is interrupted, resumed point by point, extended and re-evaluated."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from annotune.cli import app
from annotune.experiments.compare import run_context, split_data
from annotune.experiments.config import load_config
from annotune.experiments.fingerprints import fingerprint
from annotune.experiments.curve import (
    Curve,
    aggregate,
    f1_from_counts,
    primary_counts,
    resample_weights,
    resampled_metric,
    seed_interval,
)
from annotune.data.dataset import Dataset, Doc
from annotune.errors import ConfigError
from annotune.evaluation.metrics import evaluate

from conftest import TOPIC_LABELS as LABELS, TOPIC_WORDS as WORDS, TOPICS_CODEBOOK as CODEBOOK, make_codebook

# ---------------------------------------------------------------------------- subsamples
def dataset(counts: dict[str, int]) -> Dataset:
    docs = [Doc(f"{lab}-{i:03d}", f"text {lab} {i}", lab) for lab, n in counts.items() for i in range(n)]
    random.Random(0).shuffle(docs)
    return Dataset(docs, make_codebook("single"))


def test_subsample_is_deterministic_and_stratified():
    data = dataset({"business": 50, "politics": 30, "sport": 15, "tech": 5})
    a, b = data.subsample(20, seed=1), data.subsample(20, seed=1)
    assert [d.id for d in a] == [d.id for d in b]  # same seed, same documents
    assert len({tuple(d.id for d in data.subsample(20, seed=s)) for s in range(6)}) == 6  # seeds differ
    for seed in range(6):
        sample = data.subsample(20, seed=seed)
        counts = {lab: sum(d.label == lab for d in sample) for lab in ("business", "politics", "sport", "tech")}
        assert counts == {"business": 10, "politics": 6, "sport": 3, "tech": 1}  # proportional to the strata
        order = [d.id for d in data.docs]
        assert [order.index(d.id) for d in sample] == sorted(order.index(d.id) for d in sample)  # original order
    tiny = data.subsample(4, seed=3)  # as many documents as labels: one of each
    assert sorted(d.label for d in tiny) == ["business", "politics", "sport", "tech"]
    assert len(data.subsample(1000, seed=1)) == 100


def test_point_training_set_is_the_seeded_subsample(tmp_path):
    config = write_project(tmp_path, "/nonexistent-model")
    cfg = load_config(config, tmp_path / "out")
    train, _ = split_data(cfg, cfg.load_data())
    curve = Curve(cfg, progress=False)
    for size, seed in ((6, 1), (6, 2), (12, 1)):
        system = curve.point_system(size, seed, "constrained", run_context(cfg, seed=seed))
        data = system.training_data(train)
        ft_cfg, run = system.config.finetune, system.run_folder(data)
        assert [d.id for d in data] == [d.id for d in train.subsample(size, seed=seed)]
        assert ft_cfg.seed == seed and ft_cfg.r == 4  # the point's seed, the shared [finetune] table
        assert run.parent == tmp_path / "out" / "finetuned"


# ---------------------------------------------------------------------------- metric and intervals
def random_labels(kind: str, n: int, rng: random.Random, invalid: float = 0.0) -> list:
    cb = make_codebook(kind)
    out = []
    for _ in range(n):
        if rng.random() < invalid:
            out.append(None)
        elif kind == "single":
            out.append(rng.choice(cb.label_names))
        elif kind == "multi":
            out.append(tuple(sorted(rng.sample(cb.label_names, rng.randint(1, 2)))))
        else:
            out.append({d: rng.choice(cb.scale) for d in cb.label_names if rng.random() < 0.6})
    return out


@pytest.mark.parametrize("kind", ["single", "multi", "dimensions"])
def test_primary_metric_and_interval_from_counts_equal_evaluate(kind):
    rng = random.Random(4)
    cb = make_codebook(kind)
    gold = random_labels(kind, 50, rng)
    pred = random_labels(kind, 50, rng, invalid=0.2)
    m = evaluate(cb, gold, pred, n_boot=300, seed=9)
    counts = primary_counts(cb, gold, pred)
    assert float(f1_from_counts(counts.sum(0))) == pytest.approx(m[m["primary"]], abs=1e-12)
    boot = resampled_metric(resample_weights(50, 300, 9), counts)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert [lo, hi] == pytest.approx(m[m["primary"] + "_ci"], abs=1e-12)  # the same resamples as evaluate


def labels_with_accuracy(gold: list[str], correct: int, seed: int) -> list:
    """Predictions right on ``correct`` documents (chosen by seed), wrong or INVALID on the others."""
    rng = random.Random(seed)
    right = set(rng.sample(range(len(gold)), correct))
    out = []
    for i, g in enumerate(gold):
        if i in right:
            out.append(g)
        else:
            out.append(None if i % 3 == 0 else LABELS[(LABELS.index(g) + 1) % 3])
    return out


def test_aggregate_means_intervals_and_matches():
    cb = make_codebook("single")
    gold = [LABELS[i % 3] for i in range(60)]
    reference = labels_with_accuracy(gold, 33, seed=100)
    plan = {10: (18, 24), 20: (34, 36), 40: (52, 55)}  # correct documents per seed
    points = []
    for size, corrects in plan.items():
        for seed, correct in zip((1, 2), corrects):
            labels = labels_with_accuracy(gold, correct, seed=size * 10 + seed)
            points.append({"size": size, "seed": seed, "n_train": size, "training": {"wall_seconds": size / 10},
                           "answers": {"generate": {"labels": labels, "stats": {"seconds": 1.0},
                                                    "metrics": evaluate(cb, gold, labels, n_boot=0)}}})
    random.Random(1).shuffle(points)
    agg = aggregate(cb, gold, points, {"zero-shot": reference}, answers=["generate"], n_boot=400, seed=3)
    ref_value = evaluate(cb, gold, reference, n_boot=0)["macro_f1"]
    assert agg["references"][0]["value"] == pytest.approx(ref_value)
    rows = agg["answers"]["generate"]["rows"]
    assert [r["size"] for r in rows] == [10, 20, 40]
    for row in rows:
        values = [evaluate(cb, gold, p["answers"]["generate"]["labels"], n_boot=0)["macro_f1"]
                  for p in sorted(points, key=lambda p: p["seed"]) if p["size"] == row["size"]]
        assert row["values"] == pytest.approx(values) and row["seeds"] == [1, 2]
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["sd"] == pytest.approx(np.std(values, ddof=1))
        half = 12.706204736 * row["sd"] / np.sqrt(2)  # t(0.975, 1 df)
        assert row["seed_ci"] == pytest.approx([max(0, row["mean"] - half), min(1, row["mean"] + half)], abs=1e-6)
        assert row["ci"][0] <= row["mean"] <= row["ci"][1]
        diff = row["vs_references"]["zero-shot"]
        assert diff["difference"] == pytest.approx(row["mean"] - ref_value)
        assert diff["ci"][0] <= diff["difference"] <= diff["ci"][1]
        assert row["train_seconds"] == pytest.approx(row["size"] / 10)
    (match,) = agg["answers"]["generate"]["matches"]
    by_mean = next(r for r in rows if r["mean"] >= ref_value)
    by_ci = next(r for r in rows if r["ci"][0] >= ref_value)
    assert match["by_mean"]["size"] == by_mean["size"] == 20  # mean above the reference ...
    assert match["by_ci"]["size"] == by_ci["size"] == 40  # ... but only at 40 with 95 % confidence
    assert match["by_mean"]["mean"] == by_mean["mean"] and match["by_mean"]["ci"] == by_mean["ci"]

    # one seed: no spread, no seed interval; no bootstrap: no intervals and no match "by_ci"
    single = [p for p in points if p["seed"] == 1]
    agg1 = aggregate(cb, gold, single, {"zero-shot": reference}, answers=["generate"], n_boot=0, seed=3)
    row = agg1["answers"]["generate"]["rows"][0]
    assert row["sd"] is None and row["seed_ci"] is None and row["ci"] is None
    assert agg1["answers"]["generate"]["matches"][0]["by_ci"] is None


def test_seed_interval():
    assert seed_interval([0.5]) is None
    lo, hi = seed_interval([0.6, 0.7, 0.8])
    assert (lo + hi) / 2 == pytest.approx(0.7) and hi - lo == pytest.approx(2 * 4.302652730 * 0.1 / np.sqrt(3))
    assert seed_interval([0.99, 0.5]) == [pytest.approx(0.0), pytest.approx(1.0)]  # clipped to [0, 1]


# ---------------------------------------------------------------------------- config
def write_project(root: Path, model: str | Path, curve: str | None = None) -> Path:
    with open(root / "data.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        writer.writeheader()
        for i in range(60):
            label = LABELS[i % 3]
            writer.writerow({"id": f"doc{i:03d}", "text": f"Story {i}: {WORDS[label]} news {i % 7}", "label": label})
    (root / "codebook.toml").write_text(CODEBOOK, encoding="utf-8")
    curve = curve if curve is not None else ('sizes = [6, 12]\nseeds = [1, 2]\nanswer = ["generate", "constrained"]\n'
                                             'references = ["tf-idf", "tiny zero-shot constrained"]\n')
    (root / "config.toml").write_text(f"""\
name = "curve-demo"
seed = 7
bootstrap = 100
codebook = "codebook.toml"

[data]
path = "data.csv"

[split]
test_size = 20

[model]
name = "{model}"
dtype = "fp32"
batch_size = 4
max_new_tokens = 6

[finetune]
epochs = 1
batch_size = 4
r = 4
alpha = 8
max_length = 128
save_steps = 2
max_dev = 0
dev_size = 0

[curve]
{curve}
[[systems]]
name = "tf-idf"
type = "tfidf"

[[systems]]
name = "tiny zero-shot constrained"
answer = "constrained"

[[systems]]
name = "tiny zero-shot generate"
answer = "generate"
""", encoding="utf-8")
    return root / "config.toml"


@pytest.mark.parametrize("curve, field, message", [
    ("sizes = [10]\nsteps = 3\n", "curve.steps", "unknown key 'steps'"),
    ("sizes = [0, 10]\n", "curve.sizes", "integers >= 1"),
    ('sizes = ["most"]\n', "curve.sizes", 'or "all"'),
    ("sizes = []\n", "curve.sizes", "non-empty"),
    ("sizes = [10, 10]\n", "curve.sizes", "must not repeat"),
    ("seeds = [1, 1]\n", "curve.seeds", "must not repeat"),
    ('seeds = ["a"]\n', "curve.seeds", "list of integers"),
    ('answer = "sample"\n', "curve.answer", "'generate', 'constrained'"),
    ('references = ["GPT-5"]\n', "curve.references", r"'GPT-5' is not a \[\[systems\]\] name"),
    ("keep_checkpoints = 1\n", "curve.keep_checkpoints", "true or false"),
])
def test_bad_curve_tables_are_rejected_clearly(tmp_path, curve, field, message):
    config = write_project(tmp_path, "smollm2", curve=curve)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(config)
    assert str(config) in str(err.value) and field in str(err.value)


def test_curve_without_a_curve_table_and_compare_without_systems(tmp_path):
    config = write_project(tmp_path, "smollm2", curve="")
    config.write_text(config.read_text().replace("[curve]\n", ""), encoding="utf-8")
    result = CliRunner().invoke(app, ["curve", str(config), "-q"])
    assert result.exit_code == 2 and "no [curve] table" in result.stderr
    # a config with only a [curve] is valid for `curve`, and `compare` says what to do with it
    only_curve = write_project(tmp_path, "smollm2", curve="sizes = [6]\nseeds = [1]\n")
    only_curve.write_text(only_curve.read_text().split("[[systems]]")[0], encoding="utf-8")
    assert load_config(only_curve).curve.references is None
    result = CliRunner().invoke(app, ["compare", str(only_curve), "-q"])
    assert result.exit_code == 2 and "run `annotune curve`" in result.stderr


def test_sizes_too_small_to_fine_tune_are_refused_before_any_work(tmp_path):
    config = write_project(tmp_path, "smollm2", curve="sizes = [2, 12]\n")
    cfg = load_config(config, tmp_path / "out")
    with pytest.raises(ConfigError, match="size 2 is too small: fine-tuning needs at least 4 documents") as err:
        Curve(cfg, progress=False, log=lambda m: None).run()
    assert "curve.sizes" in str(err.value) and not (tmp_path / "out").exists()


def test_a_curve_of_trained_reference_systems_only(tmp_path):
    """answer = []: no LoRA points (no base model needed), the trained references at every size and seed."""
    config = write_project(tmp_path, "no-such-model", curve='sizes = [6, 12]\nseeds = [1, 2]\nanswer = []\n'
                                                             'references = ["tf-idf"]\n')
    result = invoke("curve", config, "-o", tmp_path / "out", "-q")
    curve = json.loads((tmp_path / "out" / "curve" / "curve.json").read_text())
    assert list(curve["answers"]) == ["tf-idf"] and curve["curve"]["answers"] == []
    rows = curve["answers"]["tf-idf"]["rows"]
    assert [(r["n_train"], r["seeds"]) for r in rows] == [(6, [1, 2]), (12, [1, 2])]
    assert all(p["training"] == {} and "run" not in p for p in curve["points"])
    fits = [p["answers"]["tf-idf"]["stats"]["train_seconds"] for p in curve["points"]]
    assert all(f >= 0 for f in fits) and curve["train_seconds_total"] == pytest.approx(sum(fits), abs=0.01)
    assert "learning curve, “tf-idf”" in result.stdout and not (tmp_path / "out" / "finetuned").exists()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "At each size annotune trained “tf-idf” on seeded stratified subsamples" in report
    assert "we trained “tf-idf” on seeded" in report
    assert "LoRA" not in report and "Curve base model" not in report
    # with nothing that trains there is no curve to draw: refused when the config is read
    text = config.read_text()
    config.write_text(text.replace('references = ["tf-idf"]', 'references = ["tiny zero-shot generate"]'),
                      encoding="utf-8")
    with pytest.raises(ConfigError, match=r"answer = \[\] asks for no fine-tuned points") as err:
        load_config(config)
    assert "curve.answer" in str(err.value)
    result = CliRunner().invoke(app, ["check", str(config)])
    assert result.exit_code == 2 and "asks for no fine-tuned points" in result.stderr
    # a reference named like an answer mode would share a line with the LoRA points
    config.write_text(text.replace('references = ["tf-idf"]', "").replace("answer = []", "")
                      .replace('name = "tiny zero-shot generate"', 'name = "generate"'), encoding="utf-8")
    with pytest.raises(ConfigError, match="a reference system named 'generate' would share its line"):
        load_config(config)


# ---------------------------------------------------------------------------- a real curve
def invoke(*args) -> "object":
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory, tiny_model_dir):
    """Four points (2 sizes × 2 seeds, both answer modes): interrupted by Ctrl-C in the third point, then
    resumed."""
    root = tmp_path_factory.mktemp("curve")
    config = write_project(root, tiny_model_dir)
    out = root / "out"
    original = Curve.run_point
    calls = []

    def interrupted(self, size, seed, *args, **kwargs):
        calls.append((size, seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, size, seed, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(Curve, "run_point", interrupted)
    try:
        first = CliRunner().invoke(app, ["curve", str(config), "-o", str(out), "-q"])
    finally:
        mp.undo()
    saved = sorted(p.name for p in (out / "curve" / "points").glob("*.json"))
    half = {"result": first, "points": saved, "curve_json": (out / "curve" / "curve.json").exists(),
            "files": {name: (out / "curve" / "points" / name).read_text() for name in saved}}
    resumed = invoke("curve", config, "-o", out, "-q")
    return {"root": root, "config": config, "out": out, "half": half, "resumed": resumed}


def test_an_interrupted_curve_keeps_finished_points(curve_run):
    half = curve_run["half"]
    assert half["result"].exit_code == 130 and "interrupted" in half["result"].stderr
    assert half["points"] == ["6-1.json", "6-2.json"] and not half["curve_json"]
    assert not list((curve_run["out"] / "curve" / "points").glob("*.tmp"))


def test_a_rerun_skips_finished_points(curve_run):
    err = curve_run["resumed"].stderr
    assert "curve point 1/4 (size 6, seed 1): reusing" in err and "curve point 2/4 (size 6, seed 2): reusing" in err
    assert "curve point 3/4: size 12, seed 1 …" in err and "curve point 4/4: size 12, seed 2 …" in err
    assert "tf-idf: reusing finished run" in err  # the references were finished before the interruption
    for name, text in curve_run["half"]["files"].items():  # finished points untouched
        assert (curve_run["out"] / "curve" / "points" / name).read_text() == text


def test_points_hold_metrics_training_and_predictions(curve_run):
    out = curve_run["out"]
    cfg = load_config(curve_run["config"], out)
    train, test = split_data(cfg, cfg.load_data())
    runs = set()
    for size in (6, 12):
        for seed in (1, 2):
            point = json.loads((out / "curve" / "points" / f"{size}-{seed}.json").read_text())
            assert point["size"] == size and point["seed"] == seed and point["n_train"] == size
            assert len(point["fingerprint"]) == 16
            assert point["train_ids_sha256"] == fingerprint([d.id for d in train.subsample(size, seed=seed)])
            # the fine-tuned answer modes, and the trained reference (TF-IDF) on the same subsample
            assert set(point["answers"]) == {"generate", "constrained", "tf-idf"}
            for answer in point["answers"].values():
                assert answer["metrics"]["n"] == len(test) == 20
                assert [p["id"] for p in answer["predictions"]] == [d.id for d in test.docs]
            assert point["answers"]["constrained"]["metrics"]["valid_rate"] == 1.0
            training = point["training"]
            assert training["wall_seconds"] > 0 and training["tokens"] > 0
            assert training["hyperparameters"]["seed"] == seed
            run = Path(point["run"])
            assert (run / "manifest.json").exists() and not (run / "checkpoints").exists()  # checkpoints removed
            # the dev evaluations (best one kept) travel with the point
            assert training["dev"] == json.loads((run / "manifest.json").read_text())["training"]["dev"]
            runs.add(run)
    assert len(runs) == 4 and len(list((out / "finetuned").iterdir())) == 4  # one training per point


def test_curve_json_table_and_report(curve_run):
    out = curve_run["out"]
    curve = json.loads((out / "curve" / "curve.json").read_text())
    assert curve["primary"] == "macro_f1" and curve["curve"]["sizes"] == [6, 12] and curve["n_boot"] == 100
    assert [r["name"] for r in curve["references"]] == ["tf-idf", "tiny zero-shot constrained"]
    for answer in ("generate", "constrained"):
        rows = curve["answers"][answer]["rows"]
        assert [(r["size"], r["seeds"]) for r in rows] == [(6, [1, 2]), (12, [1, 2])]
        assert len(curve["answers"][answer]["matches"]) == 2
    # the trained reference is a line of its own, learning from each point's subsample
    assert curve["curve"]["trained_systems"] == ["tf-idf"]
    tfidf = curve["answers"]["tf-idf"]["rows"]
    assert [(r["size"], r["n_train"], r["seeds"]) for r in tfidf] == [(6, 6, [1, 2]), (12, 12, [1, 2])]
    # each line reports its own training: TF-IDF its fit, the LoRA points theirs (counted once in the total)
    lora = [p["training"]["wall_seconds"] for p in curve["points"]]
    fits = [p["answers"]["tf-idf"]["stats"]["train_seconds"] for p in curve["points"]]
    assert all(0 < r["train_seconds"] < min(lora) for r in tfidf)
    assert curve["answers"]["generate"]["rows"][0]["train_seconds"] > 0
    assert curve["train_seconds_total"] == pytest.approx(sum(lora) + sum(fits), abs=0.01)
    assert len(curve["points"]) == 4 and "predictions" not in curve["points"][0]["answers"]["generate"]
    results = json.loads((out / "results.json").read_text())  # the references, as `compare` writes them
    assert [s["name"] for s in results["systems"]] == ["tf-idf", "tiny zero-shot constrained"]
    assert curve["data"]["test_ids_sha256"] == results["data"]["test_ids_sha256"]
    stdout = curve_run["resumed"].stdout
    assert "learning curve, fine-tuned (generate answers)" in stdout and "Mean macro-F1 [95% CI]" in stdout
    assert "vs tf-idf (1.000)" in stdout
    assert (out / "report.html").exists() and (out / "figures" / "learning-curve.png").exists()


def test_extending_and_changing_a_curve_reruns_only_what_changed(curve_run):
    config, out = curve_run["config"], curve_run["out"]
    # one more seed: only its two points are trained
    config.write_text(config.read_text().replace("seeds = [1, 2]", "seeds = [1, 2, 3]"), encoding="utf-8")
    more = invoke("curve", config, "-o", out, "-q")
    assert more.stderr.count("): reusing") == 4
    assert "size 6, seed 3 …" in more.stderr and "size 12, seed 3 …" in more.stderr
    assert more.stderr.count("fine-tuning") == 2
    # a damaged point file is recomputed, not trusted: its adapter is reused, nothing is trained
    (out / "curve" / "points" / "6-1.json").write_text('{"size": 6, "se', encoding="utf-8")
    # a different bootstrap changes every fingerprint (intervals differ): the 6 points and the 2 references
    # are re-evaluated, nothing is retrained
    config.write_text(config.read_text().replace("bootstrap = 100", "bootstrap = 50"), encoding="utf-8")
    again = invoke("curve", config, "-o", out, "-q")
    assert "reusing" not in again.stderr and again.stderr.count(" …") == 8
    assert "fine-tuning" not in again.stderr
    curve = json.loads((out / "curve" / "curve.json").read_text())
    assert curve["n_boot"] == 50 and all(len(r["seeds"]) == 3 for r in curve["answers"]["generate"]["rows"])
