"""LoRA runs tune the decision scale of the "absent"/"no" option on their dev documents, and answer with it."""

from __future__ import annotations

import json

from annotune.backends.local import LocalBackend
from annotune.data.dataset import Doc
from annotune.finetune.thresholds import SCALES, decide, run_decision_scale
from annotune.finetune.trainer import FineTuneConfig, FineTuner, run_prompt_builder

from conftest import make_codebook

TWEETS = [
    ("I am so happy and thankful for my friends today", {"happiness": "high", "expressing gratitude": "high"}),
    ("They treated me unfairly because of where I come from", {"perceiving discrimination": "high"}),
    ("A quiet day, nothing special", {}),
    ("Feeling a bit better, thanks to the nurses", {"happiness": "low", "expressing gratitude": "medium"}),
]


def test_a_run_tunes_its_decision_scale_on_dev_and_labels_with_it(tmp_path, sharp_model_dir):
    codebook = make_codebook("dimensions")
    docs = [Doc(f"t{i}-{c}", f"{text} ({c})", dict(label)) for c in range(6) for i, (text, label) in enumerate(TWEETS)]
    cfg = FineTuneConfig(epochs=1, batch_size=4, save_steps=50, dev_size=16, max_dev=16, r=4, alpha=8,
                         dtype="fp32", max_length=256)
    run = tmp_path / "run"
    FineTuner(codebook, cfg, base_model=str(sharp_model_dir)).train(docs, run, progress=False, log=lambda m: None)
    manifest = json.loads((run / "manifest.json").read_text())
    best = manifest["training"]["dev"]["best"]
    assert best["decision_scale"] in SCALES
    # scale 1 is among those tried: the tuned dev metric is never below the untuned one
    assert best["dev_intensity_micro_f1"] >= best["dev_intensity_micro_f1_unscaled"]
    dev_ids = set(manifest["data"]["dev_ids"])
    assert len(dev_ids) == 16 and dev_ids <= {d.id for d in docs}

    backend = LocalBackend(str(run), dtype="fp32")
    assert backend.decision_scale == run_decision_scale(run) == best["decision_scale"]
    builder = run_prompt_builder(run, codebook)
    dev = [d for d in docs if d.id in dev_ids]
    probs = backend.option_probabilities(dev, builder)
    preds, _ = backend.label(dev, builder, "constrained", progress=False)
    assert [p.label for p in preds] == [decide(codebook, p, best["decision_scale"])[0] for p in probs]

    # the scale weighs "absent": a large one leaves fewer dimensions present than a small one
    present = {}
    for scale in (1 / 16, 16.0):
        scaled_backend = LocalBackend(loaded=(backend.model, backend.tokenizer, backend.source), decision_scale=scale)
        labels = [p.label for p in scaled_backend.label(dev, builder, "constrained", progress=False)[0]]
        present[scale] = sum(len(label) for label in labels)
    assert present[1 / 16] > present[16.0]


def test_models_that_are_not_tuned_runs_answer_at_scale_one(tmp_path, tiny_model_dir):
    assert run_decision_scale(None) == run_decision_scale(tiny_model_dir) == run_decision_scale(tmp_path) == 1.0
    (tmp_path / "manifest.json").write_text(json.dumps({"training": {"dev": {"best": {"decision_scale": 0.25}}}}))
    assert run_decision_scale(tmp_path) == 0.25
    (tmp_path / "manifest.json").write_text("{not json")
    assert run_decision_scale(tmp_path) == 1.0
