"""Fine-tuning: a real (tiny, seconds-long) LoRA run, completion-only masking token by token,
resume after kill -9, manifest fields, loading a run folder back, bad configs rejected clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annotune.backends.local import LocalBackend
from annotune.data.dataset import Doc
from annotune.errors import ConfigError, DataError
from annotune.finetune.trainer import FineTuneConfig, FineTuner, is_run_folder, load_run, run_prompt_builder
from annotune.tasks.parsing import answer_text

from conftest import make_codebook

TEXTS = {
    "business": "Shares rose as the company reported profit.",
    "politics": "The government lost the vote in parliament.",
    "sport": "The team won the match with a late goal.",
    "tech": "The new software update improves the browser.",
}


def docs(n_per_label: int = 4) -> list[Doc]:
    return [Doc(f"{lab}-{i}", f"{text} Item {i}.", lab) for i in range(n_per_label) for lab, text in TEXTS.items()]


def small_config(**kw) -> FineTuneConfig:
    base = dict(epochs=1, batch_size=4, save_steps=2, max_dev=4, logging_steps=1, max_length=256, r=4, alpha=8)
    base.update(kw)
    return FineTuneConfig(**base)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("run")
    FineTuner(make_codebook("single"), small_config(), base_model=str(tiny_model_dir)).train(
        docs(), out, progress=False, data_file="inline", log=lambda m: None)
    return out


def test_run_folder_holds_adapter_tokenizer_codebook_manifest(trained_run, tiny_model_dir):
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "codebook.json",
                 "prompt.json", "manifest.json"):
        assert (trained_run / name).exists(), name
    assert is_run_folder(trained_run)
    m = json.loads((trained_run / "manifest.json").read_text())
    assert m["base_model"]["spec"] == str(tiny_model_dir)
    assert len(m["base_model"]["sha256"]) == 64
    assert len(m["data"]["sha256"]) == 64 and m["data"]["train"] + m["data"]["dev"] == 16
    assert m["seed"] == 0
    hp = m["hyperparameters"]
    assert hp["r"] == 4 and hp["alpha"] == 8 and hp["learning_rate"] == 1e-3
    assert m["libraries"]["transformers"] and m["libraries"]["peft"] and m["libraries"]["trl"]
    assert m["hardware"]["cpu_count"] >= 1
    assert m["training"]["wall_seconds"] > 0
    assert m["training"]["tokens"] > 0 and m["training"]["tokens_per_s"] > 0
    assert m["data"]["dev"] == 2 and m["resolved"]["steps"] == 4  # 14 training examples / batch 4, one epoch
    assert m["training"]["resumed_from_step"] is None
    assert json.loads((trained_run / "codebook.json").read_text())["task"]["kind"] == "single"
    # the dev documents were labelled (constrained) at every evaluation; the best state was kept
    dev = m["training"]["dev"]
    assert dev["history"] and all("dev_macro_f1" in point and "warnings" in point for point in dev["history"])
    assert all(isinstance(point["dev_loss"], float) and point["dev_loss"] > 0 for point in dev["history"])
    assert dev["best"]["dev_macro_f1"] == max(point["dev_macro_f1"] for point in dev["history"])
    assert not (trained_run / "dev-best.pt").exists()


def test_loading_a_run_folder_back_needs_only_the_folder(trained_run):
    cb = make_codebook("single")
    backend = LocalBackend(str(trained_run), dtype="fp32")
    builder = run_prompt_builder(trained_run, cb)
    assert builder.definitions is False  # trained with the short prompt
    preds, stats = backend.label(docs(1), builder, "constrained", progress=False)
    assert all(p.label in cb.label_names for p in preds)
    assert stats.docs == 4
    model, tokenizer, manifest = load_run(trained_run, dtype="fp32")
    assert manifest["kind"] == "lora"


def test_loss_covers_only_the_answer_tokens(tmp_path, tiny_model_dir):
    cb = make_codebook("single")
    tuner = FineTuner(cb, small_config(max_dev=0, dev_size=0), base_model=str(tiny_model_dir))
    trainer, info = tuner.build_trainer(docs(1), tmp_path, progress=False)
    tok = info["tokenizer"]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        ids, labels = ids[mask.bool()].tolist(), labels[mask.bool()].tolist()
        scored = [i for i, lab in enumerate(labels) if lab != -100]
        # the scored tokens are one contiguous block at the end: the answer and the end-of-turn marker
        assert scored == list(range(scored[0], len(ids)))
        assert all(labels[i] == ids[i] for i in scored)
        answer = tok.decode([ids[i] for i in scored])
        assert answer.strip().removesuffix("<|im_end|>").strip() in cb.label_names
        prompt = tok.decode(ids[: scored[0]])
        assert prompt.endswith("<|im_start|>assistant\n")
        assert "Text:" in prompt


def test_shared_prefix_gives_the_same_loss_and_gradients_as_encoding_it_in_every_row(tmp_path, tiny_model_dir):
    """`share_prefix` encodes the batch's common prompt prefix once and continues every row from its keys
    and values: loss and every LoRA gradient equal the plain per-row computation (fp32, no dropout)."""
    import torch

    from annotune.finetune.sft import shared_prefix_length

    results = {}
    for share in (False, True):
        tuner = FineTuner(make_codebook("single"), small_config(max_dev=0, dev_size=0, share_prefix=share, dtype="fp32"),
                          base_model=str(tiny_model_dir))
        trainer, _ = tuner.build_trainer(docs(2), tmp_path / str(share), progress=False)
        model = trainer.model
        generator = torch.Generator().manual_seed(0)
        for name, p in sorted(model.named_parameters()):
            if "lora_B" in name:  # B starts at zero: make the adapter change the prefix's keys and values
                p.data = torch.randn(p.shape, generator=generator) * 0.5
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        shared = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"])
        assert shared >= 16 and trainer.share_prefix is share
        model.train()
        model.zero_grad()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results[share] = (loss.item(), grads, trainer.prefix_tokens_saved)
    (plain_loss, plain, saved_plain), (shared_loss, sharing, saved) = results[False], results[True]
    assert saved_plain == 0 and saved == shared * (len(batch["input_ids"]) - 1)
    assert abs(plain_loss - shared_loss) < 1e-5 * max(1.0, abs(plain_loss))
    assert plain.keys() == sharing.keys() and any(g.abs().sum() > 0 for n, g in plain.items() if "lora_A" in n)
    for name in plain:
        torch.testing.assert_close(sharing[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_token_budget_below_the_batch_trains_in_micro_batches_of_the_configured_steps(tmp_path, tiny_model_dir):
    """`micro_batch_tokens` smaller than one example: one example per forward pass, gradients accumulated to
    `batch_size` documents per optimizer step (nothing is shared between rows of one)."""
    out = tmp_path / "run"
    cfg = small_config(max_dev=0, dev_size=0, batch_size=4, micro_batch_tokens=1)
    FineTuner(make_codebook("single"), cfg, base_model=str(tiny_model_dir)).train(
        docs(2), out, progress=False, log=lambda m: None)
    m = json.loads((out / "manifest.json").read_text())
    assert m["resolved"]["steps"] == 2  # 8 documents, 4 per step
    assert m["hyperparameters"]["micro_batch_tokens"] == 1
    assert m["training"]["encoded_tokens"] == m["training"]["tokens"] > 0


def test_shared_prefix_length_stops_at_differences_padding_and_answers():
    import torch

    from annotune.finetune.sft import shared_prefix_length

    ids = torch.tensor([list(range(40)), list(range(30)) + [99] * 10])
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[:, 35:] = 1
    assert shared_prefix_length(ids, mask, labels) == 30  # the rows differ from token 30
    labels[1, 25:] = 1
    assert shared_prefix_length(ids, mask, labels) == 24  # the hidden state at 24 predicts a scored token
    labels[1, :] = -100
    assert shared_prefix_length(ids, mask, labels) == 0  # a row without a scored token: no sharing
    labels[1, 35:] = 1
    mask[0, 20:] = 0
    assert shared_prefix_length(ids, mask, labels) == 20  # padding is never shared
    assert shared_prefix_length(ids[:1], mask[:1], labels[:1]) == 0  # one row: nothing to share
    assert shared_prefix_length(ids[:, :10], mask[:, :10], labels[:, :10]) == 0  # below the minimum


def test_training_examples_use_canonical_answers_and_cut_documents(tiny_model_dir):
    from transformers import AutoTokenizer

    cb = make_codebook("multi")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tuner = FineTuner(cb, small_config(max_text_tokens=5), base_model=str(tiny_model_dir))
    long_doc = Doc("x", "word " * 100, ("business", "tech"))
    (example,) = tuner.examples([long_doc], tok)
    assert example["completion"] == [{"role": "assistant", "content": answer_text(("business", "tech"), cb)}]
    user = example["prompt"][-1]["content"]
    assert user.count("word") == 5
    assert "companies and markets" not in example["prompt"][0]["content"]  # short prompt: no definitions


RESUME_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from conftest import make_codebook
from test_finetune import docs, small_config
from annotune.finetune.trainer import FineTuner
FineTuner(make_codebook("single"), small_config(epochs=12, save_steps=2, max_dev=0, dev_size=0),
          base_model={base!r}).train(docs(2), {out!r}, resume={resume}, progress=False)
"""


def test_resume_after_kill_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    tests = str(Path(__file__).parent)
    script = RESUME_SCRIPT.format(tests=tests, base=str(tiny_model_dir), out=str(out), resume=False)
    env = {**os.environ, "PYTHONPATH": tests}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    ckpts = out / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpts.exists() and len(list(ckpts.glob("checkpoint-*"))) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed: " + proc.stderr.read().decode()[-500:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    saved = sorted(int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*")
                   if (p / "trainer_state.json").exists())
    last = saved[-1]

    # without --resume the folder is protected
    with pytest.raises(ConfigError, match="--resume"):
        FineTuner(make_codebook("single"), small_config(epochs=12, save_steps=2, max_dev=0, dev_size=0),
                  base_model=str(tiny_model_dir)).train(docs(2), out, progress=False)

    script = RESUME_SCRIPT.format(tests=tests, base=str(tiny_model_dir), out=str(out), resume=True)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=400)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["resumed_from_step"] >= last  # a checkpoint written while being killed may be newer
    assert manifest["resolved"]["steps"] == 24  # 8 examples / batch 4 × 12 epochs: the full schedule


@pytest.mark.parametrize("options, match", [
    ({"rank": 8}, "field 'finetune.rank': unknown key 'rank'"),
    ({"r": 0}, "field 'finetune.r': must be >= 1"),
    ({"learning_rate": -1.0}, "field 'finetune.learning_rate': must be > 0"),
    ({"dropout": 1.5}, "field 'finetune.dropout': must be < 1"),
    ({"epochs": 0}, "field 'finetune.epochs': must be > 0"),
    ({"batch_size": 2.5}, "field 'finetune.batch_size': must be an integer"),
    ({"qlora": "yes"}, "field 'finetune.qlora': must be true or false"),
])
def test_bad_fine_tuning_options_are_rejected_clearly(options, match):
    with pytest.raises(ConfigError, match=match) as err:
        FineTuneConfig.from_dict(options, file="cfg.toml")
    assert "cfg.toml" in str(err.value) and "finetune." in str(err.value)


def test_too_little_data_or_a_label_without_examples_is_rejected(tiny_model_dir, tmp_path):
    cb = make_codebook("single")
    tuner = FineTuner(cb, small_config(), base_model=str(tiny_model_dir))
    with pytest.raises(DataError, match="only 2 training examples"):
        tuner.train(docs(4)[:2], tmp_path / "a", progress=False)
    no_tech = [d for d in docs(4) if d.label != "tech"]
    with pytest.raises(DataError, match="no training example for label.*tech"):
        tuner.train(no_tech, tmp_path / "b", progress=False)


def test_qlora_without_a_gpu_is_refused(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    tuner = FineTuner(make_codebook("single"), small_config(qlora=True), base_model=str(tiny_model_dir))
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        tuner.train(docs(), tmp_path / "q", progress=False)


def test_a_checkpoint_left_half_written_by_a_kill_is_removed_not_resumed(tmp_path):
    from annotune.finetune.trainer import complete_checkpoints

    for step, complete in ((2, True), (10, True), (12, False)):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
    messages = []
    found = complete_checkpoints(tmp_path, log=messages.append)
    assert [p.name for p in found] == ["checkpoint-2", "checkpoint-10"]  # numeric, not lexical, order
    assert not (tmp_path / "checkpoint-12").exists()
    assert "incomplete checkpoint" in messages[0]


def test_annotune_finetune_under_torchrun_trains_one_model_across_two_processes(tmp_path, tiny_model_dir):
    """`annotune finetune` unchanged under `torchrun` (2 CPU processes, gloo DDP): every rank ends with the
    same adapter, rank 0 alone writes the run folder, the steps are split between the ranks, and the run
    loads back."""
    (tmp_path / "data.csv").write_text("id,text,label\n" + "".join(f"{d.id},{d.text},{d.label}\n" for d in docs(6)),
                                       encoding="utf-8")
    labels = "".join(f'[[codebook.labels]]\nname = "{lab}"\ndefinition = "{lab} news"\n' for lab in TEXTS)
    (tmp_path / "config.toml").write_text(
        f'name = "ddp"\nseed = 0\n[codebook.task]\nname = "topics"\nkind = "single"\n{labels}'
        f'[data]\npath = "data.csv"\n[split]\ntest_size = 4\n[model]\nname = "{tiny_model_dir}"\ndtype = "fp32"\n'
        "[finetune]\nepochs = 1\nbatch_size = 2\nmax_dev = 0\nr = 4\nalpha = 8\nmax_length = 128\n"
        'dtype = "fp32"\n[[systems]]\nname = "lora"\ntype = "finetuned"\n', encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "annotune", "finetune", str(tmp_path / "config.toml"), "-o", str(tmp_path / "run"),
                           "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "run"
    assert is_run_folder(run) and not (run / "merged").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    launch = manifest["training"]["launch"]
    assert launch["world_size"] == 2 and "gloo" in launch["backend"]
    assert len(launch["adapter_sha256"]) == 2 and launch["replicas_identical"], launch
    train = manifest["data"]["train"]  # 20 documents: 2 per step on each of 2 ranks
    assert train == 20 and manifest["resolved"]["steps"] == 5
    model, _, loaded = load_run(run, dtype="fp32")
    assert loaded["data"]["sha256"] == manifest["data"]["sha256"] and model.training is False


def test_the_manifest_dev_loss_is_the_final_weights_loss(tmp_path, tiny_model_dir):
    """The last step's logged evaluation stands in for a second pass over the dev documents; it must be the
    loss a fresh evaluation of the final weights gives (before the best dev state is restored)."""
    from annotune.finetune.trainer import final_evaluation

    tuner = FineTuner(make_codebook("single"), small_config(), base_model=str(tiny_model_dir))
    trainer, _ = tuner.build_trainer(docs(), tmp_path / "run", progress=False, log=lambda m: None)
    result = trainer.train()
    logged = final_evaluation(trainer, result.global_step)
    assert logged in trainer.state.log_history  # reused, not recomputed
    assert logged["eval_loss"] == pytest.approx(trainer.evaluate()["eval_loss"], rel=1e-5)
    assert "eval_loss" in final_evaluation(trainer, result.global_step + 1)  # no logged one: evaluated
