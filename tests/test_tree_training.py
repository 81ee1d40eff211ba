"""The ``questions`` training objective: one token tree per document, trained on exactly what the constrained
scorer asks (its loss is the scorer's own log-probability of the right options), micro-batched, end to end."""

from __future__ import annotations

import json

import pytest

from annotune.backends.local import ConstrainedPrompt, LocalBackend
from annotune.data.dataset import Doc
from annotune.errors import ConfigError
from annotune.finetune.trainer import FineTuneConfig, FineTuner, is_run_folder, run_prompt_builder
from annotune.finetune.sft import micro_batch_size

from conftest import make_codebook

TWEETS = [
    ("I am so happy and thankful for my friends today", {"happiness": "high", "expressing gratitude": "high"}),
    ("They treated me unfairly because of where I come from", {"perceiving discrimination": "high"}),
    ("A quiet day, nothing special", {}),
    ("Feeling a bit better, thanks to the nurses", {"happiness": "low", "expressing gratitude": "medium"}),
]


def dimension_docs(copies: int = 2) -> list[Doc]:
    return [Doc(f"t{i}-{c}", f"{text} ({c})", dict(label)) for c in range(copies)
            for i, (text, label) in enumerate(TWEETS)]


def tree_config(**kw) -> FineTuneConfig:
    base = dict(objective="questions", epochs=1, batch_size=4, save_steps=50, max_dev=0, dev_size=0,
                logging_steps=1, r=4, alpha=8, dtype="fp32", learning_rate=5e-3)
    return FineTuneConfig(**{**base, **kw})


def randomise_lora_b(model) -> None:
    """LoRA B starts at zero; random values make the adapter change every hidden state (the instructions'
    keys and values included), so that a wrong mask or position would change the loss."""
    import torch

    generator = torch.Generator().manual_seed(0)
    for name, p in sorted(model.named_parameters()):
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=generator) * 0.5


@pytest.mark.parametrize("kind", ["dimensions", "single", "multi"])
def test_tree_loss_is_the_constrained_scorers_log_probability_of_the_right_options(tmp_path, sharp_model_dir,
                                                                                   kind):
    """The training loss of a batch equals minus the mean log-probability that `LocalBackend`'s constrained
    scorer gives the right option tokens (same weights, fp32): the model is trained on exactly the tokens,
    positions and attention pattern it is asked at inference. With the instructions inline in every row (as
    under a launcher) the loss is the same."""
    import torch

    codebook = make_codebook(kind)
    if kind == "dimensions":
        data = dimension_docs(1)
    else:
        labels = [["business"], ["sport", "tech"], ["politics"], ["tech"]] if kind == "multi" else \
            ["business", "sport", "politics", "tech"]
        data = [Doc(f"d{i}", text, tuple(lab) if kind == "multi" else lab)
                for i, (text, lab) in enumerate(zip([t for t, _ in TWEETS], labels))]
    losses = {}
    for inline in (False, True):
        tuner = FineTuner(codebook, tree_config(gradient_checkpointing=inline), base_model=str(sharp_model_dir))
        trainer, info = tuner.build_trainer(data, tmp_path / str(inline), progress=False)
        randomise_lora_b(trainer.model)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        trainer.model.eval()
        with torch.no_grad():
            losses[inline] = trainer.compute_loss(trainer.model, batch).item()
        assert (trainer.prefix_ids == []) is inline
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)

    # the constrained scorer on the same weights, right options only
    backend = LocalBackend(loaded=(trainer.model.get_base_model(), info["tokenizer"], None), dtype="fp32")
    prompt = ConstrainedPrompt.build(info["tokenizer"], tuner.builder())
    targets = [codebook.task.option_targets(d.label) for d in data]
    total, count = 0.0, 0
    with torch.inference_mode():
        prefix_kv = backend._encode_prefix(prompt.prefix_ids)
        for doc, right in zip(data, targets):
            doc_ids = info["tokenizer"](doc.text, add_special_tokens=False)["input_ids"] + prompt.between_ids
            per_question = backend._score(prefix_kv, len(prompt.prefix_ids), [doc_ids], prompt.q_rows,
                                          prompt.opt_rows)[0]
            for q, opts, logps, option in zip(prompt.questions, prompt.opt_rows, per_question, right):
                k = q.options.index(option)
                total += float(logps[k])
                count += len(opts[k])
    assert count == len(batch["targets"])
    assert losses[False] == pytest.approx(-total / count, rel=1e-4)


def test_micro_batches_keep_documents_per_step_and_fit_the_token_budget():
    budget = FineTuneConfig().micro_batch_tokens
    assert micro_batch_size(8, [100] * 8, budget) == 8
    assert micro_batch_size(8, [1300] * 8, budget) == 1  # 46 questions of a flourishing tweet: one tree per forward
    assert micro_batch_size(8, [700] * 8, budget) == 2  # 3 would fit, 2 divides 8
    assert micro_batch_size(6, [700] * 8, budget) == 3  # 3 fit and divide 6
    assert micro_batch_size(8, [444] * 8, budget) == 4  # a flourishing JSON-answer example, instructions included
    assert micro_batch_size(8, [1300] * 8, 0) == 8  # 0: the whole batch at once


def test_questions_objective_trains_end_to_end_and_the_run_labels_with_constrained(tmp_path, sharp_model_dir):
    """A dimension task trained on its questions: micro-batches of one tree accumulate to the configured
    documents per step; dev evaluation runs; the run folder loads back and labels every document."""
    codebook = make_codebook("dimensions")
    data = dimension_docs(4)  # 16 documents, 4 of them dev
    cfg = tree_config(batch_size=4, epochs=2, max_dev=4, dev_size=4, micro_batch_tokens=10)  # one tree per pass
    tuner = FineTuner(codebook, cfg, base_model=str(sharp_model_dir))
    out = tmp_path / "run"
    tuner.train(data, out, progress=False, log=lambda m: None)
    assert is_run_folder(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["hyperparameters"]["objective"] == "questions"
    assert manifest["resolved"]["steps"] == 6  # 12 training documents, 4 per step, 2 epochs
    assert manifest["training"]["dev"]["history"]
    # one tree per forward: each encodes the instructions (shared only within a micro-batch)
    assert manifest["training"]["encoded_tokens"] == manifest["training"]["tokens"] > 0
    backend = LocalBackend(str(out), dtype="fp32")
    preds, _ = backend.label(data[:4], run_prompt_builder(out, codebook), "constrained", progress=False)
    assert all(p.label is not None and p.error is None for p in preds)


@pytest.mark.parametrize("objective", ["questions", "answer"])
@pytest.mark.parametrize(("budget", "micro"), [(0, 4), (1280, 4), (10, 1)])
def test_micro_batches_accumulate_to_the_configured_documents_per_step(tmp_path, sharp_model_dir, objective,
                                                                        budget, micro):
    tuner = FineTuner(make_codebook("dimensions"),
                      tree_config(batch_size=4, grad_accum=2, micro_batch_tokens=budget, objective=objective),
                      base_model=str(sharp_model_dir))
    trainer, _ = tuner.build_trainer(dimension_docs(2), tmp_path, progress=False)
    args = trainer.args
    assert args.per_device_train_batch_size == micro
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 8


def test_questions_objective_is_refused_for_free_text_tasks_and_generate_systems(tmp_path, tiny_model_dir):
    from annotune.codebook import Codebook

    qa = Codebook.from_dict({"task": {"name": "qa", "kind": "qa", "instructions": "Answer."}})
    docs = [Doc(f"q{i}", f"Question {i}?", f"Answer {i}.") for i in range(6)]
    with pytest.raises(ConfigError, match="free-text"):
        FineTuner(qa, tree_config(), base_model=str(tiny_model_dir)).build_trainer(docs, tmp_path, progress=False)
