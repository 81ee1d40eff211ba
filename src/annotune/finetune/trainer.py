"""LoRA fine-tuning of a local model on labelled examples, with TRL's `SFTTrainer` and PEFT.

Each training example is the task's prompt (by default the *short* prompt: label names without their
definitions, since the model learns the labels from the examples) and the canonical answer as the
completion; the loss covers only the answer tokens, and vocabulary logits are computed only at those
positions, since the output layer is the most expensive part of a 135M model.

A run folder holds everything needed to use the model again, and nothing more: the adapter, the
tokenizer, a copy of the codebook, ``prompt.json`` (how the model was prompted) and ``manifest.json``
(base model and its sha256, data hash, seed, hyper-parameters, library versions, hardware, wall time,
tokens/s). Checkpoints go to ``checkpoints/`` every ``save_steps`` steps; ``resume`` continues from the
newest one, so an interrupted run loses at most the steps since the last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from annotune.backends.attention import use_fast_cpu_attention
from annotune.codebook import Codebook
from annotune.data.dataset import Doc
from annotune.environment import hardware, library_versions
from annotune.errors import ConfigError, DataError
from annotune.finetune.config import FineTuneConfig
from annotune.finetune.dev_eval import dev_callback
from annotune.finetune.distributed import (
    is_main_process,
    launch_summary,
    main_process_first,
    wait_for_everyone,
    world_size,
)
from annotune.finetune.sft import caches_plain_layers, micro_batch_size, peak_memory_gib, trainer_classes
from annotune.tasks.parsing import answer_text
from annotune.tasks.prompts import PromptBuilder

RUN_MANIFEST = "manifest.json"
RUN_PROMPT = "prompt.json"
RUN_CODEBOOK = "codebook.json"


def data_fingerprint(docs: list[Doc]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(json.dumps([d.id, d.text, d.label if not isinstance(d.label, tuple) else list(d.label)],
                            ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()


def check_training_data(train: list[Doc], codebook: Codebook, min_examples: int = 4) -> None:
    """Refuse data that cannot train a classifier, with a message that says what is missing."""
    if len(train) < min_examples:
        raise DataError(f"only {len(train)} training examples; fine-tuning needs at least {min_examples}")
    unlabelled = [d.id for d in train if d.label is None]
    if unlabelled:
        raise DataError(f"{len(unlabelled)} training documents have no label (first: {unlabelled[0]!r})")
    missing = codebook.task.missing_training_labels([d.label for d in train])
    if missing:
        raise DataError(f"no training example for label(s) {', '.join(missing)}; add examples or remove "
                        "the label from the codebook")


class FineTuner:
    """Fine-tunes a base model with LoRA on a codebook's labelled documents."""

    def __init__(self, codebook: Codebook, config: FineTuneConfig | None = None, base_model: str | None = None):
        self.codebook = codebook
        self.config = config or FineTuneConfig()
        self.base_model = base_model or "smollm2"

    def builder(self) -> PromptBuilder:
        return PromptBuilder(self.codebook, definitions=not self.config.short_prompt)

    # ------------------------------------------------------------------ data
    def examples(self, docs: list[Doc], tokenizer) -> list[dict]:
        """Conversational prompt-completion records; documents are cut to ``max_text_tokens``."""
        builder = self.builder()
        out = []
        for d in docs:
            ids = tokenizer(d.text, add_special_tokens=False)["input_ids"]
            text = d.text
            if len(ids) > self.config.max_text_tokens:
                text = tokenizer.decode(ids[: self.config.max_text_tokens])
            out.append({
                "prompt": builder.messages(text),
                "completion": [{"role": "assistant", "content": answer_text(d.label, self.codebook)}],
            })
        return out

    def split_dev(self, docs: list[Doc]) -> tuple[list[Doc], list[Doc]]:
        import random

        cfg = self.config
        n_dev = int(cfg.dev_size if cfg.dev_size >= 1 else round(len(docs) * cfg.dev_size))
        n_dev = min(n_dev, cfg.max_dev, max(0, len(docs) - cfg.min_examples))
        if n_dev <= 0:
            return list(docs), []
        order = list(range(len(docs)))
        random.Random(cfg.seed).shuffle(order)
        dev_idx = set(order[:n_dev])
        return [d for i, d in enumerate(docs) if i not in dev_idx], [d for i, d in enumerate(docs) if i in dev_idx]

    # ------------------------------------------------------------------ model
    def _load_base(self, device: str):
        import torch
        from transformers import AutoModelForCausalLM

        from annotune.backends.models import load_tokenizer, loadable_path, resolve_model

        with main_process_first():  # under a launcher, each machine materialises a GGUF model once
            source = resolve_model(self.base_model)
            path = loadable_path(source)
        tokenizer = load_tokenizer(path)
        kwargs: dict[str, Any] = {"dtype": torch.float32}
        if self.config.qlora:
            if not device.startswith("cuda"):
                raise ConfigError("qlora needs a CUDA GPU (bitsandbytes 4-bit); use plain LoRA on CPU",
                                  field="finetune.qlora")
            from transformers import BitsAndBytesConfig

            kwargs = {"quantization_config": BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16), "dtype": torch.bfloat16}
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if device == "cpu":
            use_fast_cpu_attention(model)
        return model, tokenizer, source

    # ------------------------------------------------------------------ train
    def build_trainer(self, train_docs: list[Doc], output: str | Path, *, progress: bool = True, log=print):
        """The configured `SFTTrainer` (LoRA, completion-only loss) and its bookkeeping, without training."""
        import datasets
        import torch
        from datasets import Dataset as HFDataset
        from peft import LoraConfig
        from transformers import set_seed
        from transformers.trainer_callback import PrinterCallback
        from trl import SFTConfig

        from annotune.backends.models import default_device, parse_dtype

        cfg = self.config
        check_training_data(train_docs, self.codebook, cfg.min_examples)
        if cfg.objective == "questions" and self.codebook.task.open_answers:
            raise ConfigError('objective = "questions" trains the options of the questions `constrained` answering '
                              "asks; a free-text (qa) task has none: use the default \"answer\"",
                              field="finetune.objective")
        set_seed(cfg.seed)
        device = default_device()
        if device.startswith("cuda") and torch.cuda.device_count() > 1 and world_size() == 1:
            raise ConfigError(f"{torch.cuda.device_count()} GPUs and no launcher: run `torchrun --nproc-per-node "
                              f"{torch.cuda.device_count()} -m annotune finetune ...` to train on all of them, or "
                              "set CUDA_VISIBLE_DEVICES=0 for one", field="finetune")
        dtype = parse_dtype(cfg.dtype, device)
        model, tokenizer, source = self._load_base(device)
        fit_docs, dev_docs = self.split_dev(train_docs)
        if not progress:
            datasets.disable_progress_bars()
        questions = cfg.objective == "questions"
        if questions:
            from annotune.finetune.tree import tree_examples

            # under a launcher, gradient checkpointing or sliding-window attention the instructions cannot be a
            # cache shared by the rows: they start every row
            inline = cfg.gradient_checkpointing or world_size() > 1 or not caches_plain_layers(model.config)
            prefix_ids, records = tree_examples(fit_docs + dev_docs, self.builder(), tokenizer, cfg.max_text_tokens,
                                                inline_prefix=inline)
            fit_records, dev_records = records[: len(fit_docs)], records[len(fit_docs):]
        else:
            fit_records, dev_records = self.examples(fit_docs, tokenizer), self.examples(dev_docs, tokenizer)
        train_ds = HFDataset.from_list(fit_records)
        dev_ds = HFDataset.from_list(dev_records) if dev_records else None
        micro = micro_batch_size(cfg.batch_size, example_lengths(fit_records, tokenizer), cfg.micro_batch_tokens)
        steps_per_epoch = math.ceil(len(fit_docs) / (cfg.batch_size * cfg.grad_accum))
        total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
        common = dict(
            output_dir=str(Path(output) / "checkpoints"),
            num_train_epochs=cfg.epochs,
            per_device_train_batch_size=micro,
            per_device_eval_batch_size=micro,
            gradient_accumulation_steps=cfg.grad_accum * (cfg.batch_size // micro),
            learning_rate=cfg.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=int(round(cfg.warmup_ratio * total_steps)),
            weight_decay=cfg.weight_decay,
            bf16=dtype == torch.bfloat16,
            fp16=False,
            use_cpu=device == "cpu",
            save_strategy="steps",
            save_steps=cfg.save_steps,
            save_total_limit=2,
            eval_strategy=("steps" if cfg.eval_steps else "epoch") if dev_ds is not None else "no",
            eval_steps=cfg.eval_steps,
            logging_steps=cfg.logging_steps,
            report_to=[],
            seed=cfg.seed,
            data_seed=cfg.seed,
            disable_tqdm=True,
            dataloader_num_workers=0,
            gradient_checkpointing=cfg.gradient_checkpointing,  # TRL turns it on; it costs ~30 % on a small model
        )
        peft_config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                 target_modules=cfg.target_modules, task_type="CAUSAL_LM")
        trainer_cls, progress_cls = trainer_classes()
        progress_cb = progress_cls(enabled=progress and is_main_process())
        if questions:
            from peft import get_peft_model
            from transformers import TrainingArguments

            from annotune.finetune.tree import collate_trees, tree_trainer_class

            if cfg.gradient_checkpointing:
                model.enable_input_require_grads()  # checkpointed LoRA layers need inputs that require grad
            trainer = tree_trainer_class()(
                model=get_peft_model(model, peft_config), args=TrainingArguments(**common, remove_unused_columns=False),
                train_dataset=train_ds, eval_dataset=dev_ds, processing_class=tokenizer, callbacks=[progress_cb],
                data_collator=collate_trees(len(prefix_ids), tokenizer.pad_token_id), prefix_ids=prefix_ids)
        else:
            sft_args = SFTConfig(**common, max_length=cfg.max_length, completion_only_loss=True)
            trainer = trainer_cls(model=model, args=sft_args, train_dataset=train_ds, eval_dataset=dev_ds,
                                  processing_class=tokenizer, peft_config=peft_config, callbacks=[progress_cb],
                                  share_prefix=cfg.share_prefix)
        progress_cb.trainer = trainer
        trainer.remove_callback(PrinterCallback)  # our bar shows the loss; no dict dumps on the terminal
        # dev evaluation by the primary metric needs constrained answers; free-text (qa) runs keep the dev loss;
        # under a launcher rank 0 alone evaluates (the others wait for it at the next gradient exchange)
        dev_eval = dev_callback(self.codebook, dev_docs, self.builder(), tokenizer, source, Path(output),
                                cfg.max_text_tokens, log) if (dev_docs and not self.codebook.task.open_answers
                                                              and is_main_process()) else None
        if dev_eval is not None:
            trainer.add_callback(dev_eval)
        info = {"source": source, "device": device, "dtype": dtype, "fit_docs": fit_docs, "dev_docs": dev_docs,
                "progress": progress_cb, "tokenizer": tokenizer, "dev_eval": dev_eval}
        return trainer, info

    def train(self, train_docs: list[Doc], output: str | Path, *, resume: bool = False, progress: bool = True,
              data_file: str | None = None, log=print) -> Path:
        """Fine-tune and write the run folder; returns its path."""
        import torch

        from annotune.backends.models import model_fingerprint

        cfg = self.config
        output = Path(output)
        checkpoints = complete_checkpoints(output / "checkpoints", log=log)
        if checkpoints and not resume:
            raise ConfigError("this folder already holds checkpoints of a run; pass --resume to continue it or "
                              "choose another output folder", file=output)
        trainer, info = self.build_trainer(train_docs, output, progress=progress, log=log)
        progress_cb = info["progress"]
        resumed_from = int(checkpoints[-1].name.rsplit("-", 1)[1]) if (resume and checkpoints) else None
        if resumed_from is not None:
            log(f"resuming from {checkpoints[-1]} (step {resumed_from})")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.time()
        result = trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if resumed_from is not None else None)
        wall = time.time() - started
        progress_cb.close()
        eval_metrics = final_evaluation(trainer, result.global_step) if info["dev_docs"] else {}
        launch = launch_summary(trainer.model)  # every rank's adapter fingerprint, under a launcher
        dev = info["dev_eval"].restore_best(trainer.model) if info["dev_eval"] else None  # the best dev state
        if not is_main_process():
            wait_for_everyone()  # rank 0 writes the run folder
            return output
        trainer.model.save_pretrained(output)
        info["tokenizer"].save_pretrained(output)
        tokens = progress_cb.tokens * world_size() or None  # this rank's share × ranks
        manifest = {
            "annotune_run": 1,
            "kind": "qlora" if cfg.qlora else "lora",
            "base_model": model_fingerprint(info["source"]),
            "codebook": self.codebook.name,
            "task_kind": self.codebook.kind,
            "data": {"file": data_file, "sha256": data_fingerprint(train_docs), "train": len(info["fit_docs"]),
                     "dev": len(info["dev_docs"]), "dev_ids": [d.id for d in info["dev_docs"]]},
            "seed": cfg.seed,
            "hyperparameters": cfg.settings(),
            "resolved": {"device": info["device"], "dtype": str(info["dtype"]).replace("torch.", ""),
                         "steps": result.global_step},
            "training": {
                "wall_seconds": round(wall, 2),
                "train_loss": result.training_loss,
                "dev_loss": eval_metrics.get("eval_loss"),
                "dev": dev,
                "tokens": tokens,
                "tokens_per_s": (tokens / progress_cb.active_seconds) if tokens and progress_cb.active_seconds
                else None,
                # tokens the model actually encoded: a prefix shared by a batch counts once (`share_prefix`)
                "encoded_tokens": (progress_cb.tokens - trainer.prefix_tokens_saved) * world_size() or None,
                "peak_memory_gib": peak_memory_gib(),
                "resumed_from_step": resumed_from,
                "launch": launch,
            },
            "libraries": library_versions(),
            "hardware": hardware(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (output / RUN_CODEBOOK).write_text(json.dumps(self.codebook.to_dict(), indent=2, ensure_ascii=False))
        (output / RUN_PROMPT).write_text(json.dumps({"definitions": not cfg.short_prompt}, indent=2))
        (output / RUN_MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
        log(f"fine-tuned in {wall:.0f} s ({result.global_step} steps, train loss {result.training_loss:.3f}); "
            f"run folder: {output}")
        wait_for_everyone()
        return output


def final_evaluation(trainer, step: int) -> dict:
    """The dev metrics of the final weights: the evaluation logged at the last step when there was one (each
    epoch's end, by default), else a new one."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return entry
    return trainer.evaluate()


def complete_checkpoints(folder: Path, log=print) -> list[Path]:
    """Checkpoints in step order, keeping only complete ones: a run killed while saving leaves a folder
    without ``trainer_state.json``, which is removed so that resuming uses the previous checkpoint."""
    found = []
    for path in folder.glob("checkpoint-*"):
        step = path.name.rsplit("-", 1)[1]
        if not step.isdigit():
            continue
        if (path / "trainer_state.json").exists():
            found.append((int(step), path))
        else:
            log(f"removing incomplete checkpoint {path} (the run was interrupted while saving it)")
            shutil.rmtree(path, ignore_errors=True)
    return [p for _, p in sorted(found)]


def example_lengths(records: list[dict], tokenizer) -> list[int]:
    """Tokens of each training example: a token tree's own, or a conversational record's as the chat
    template renders it (prompt and answer)."""
    if records and "input_ids" in records[0]:
        return [len(r["input_ids"]) for r in records]
    return [len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True)["input_ids"])
            for r in records]


def is_run_folder(path: str | Path) -> bool:
    return (Path(path) / RUN_MANIFEST).exists() and (Path(path) / "adapter_config.json").exists()


def load_run(path: str | Path, *, dtype: str | None = "auto", device: str | None = None):
    """(model, tokenizer, manifest) of a fine-tuned run folder: the base model from the manifest plus the
    adapter, merged for fast inference."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from annotune.backends.models import default_device, load_tokenizer, loadable_path, parse_dtype, resolve_model

    path = Path(path)
    if not is_run_folder(path):
        raise ConfigError("not a fine-tuned run folder (no manifest.json + adapter)", file=path)
    manifest = json.loads((path / RUN_MANIFEST).read_text())
    device = device or default_device()
    if (path / "merged" / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(path / "merged", dtype=parse_dtype(dtype, device))
    else:
        base = resolve_model(manifest["base_model"]["spec"])
        model = AutoModelForCausalLM.from_pretrained(loadable_path(base), dtype=parse_dtype(dtype, device))
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    tokenizer = load_tokenizer(path)
    model.to(device).eval()
    return model, tokenizer, manifest


def merge_run(path: str | Path, target: str | Path | None = None) -> Path:
    """Write merged full weights to ``target`` (default ``<run>/merged``), for serving or llama.cpp
    conversion."""
    model, tokenizer, _ = load_run(path, dtype="fp32", device="cpu")
    target = Path(target) if target else Path(path) / "merged"
    tmp = target.with_name("merged.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def run_prompt_builder(path: str | Path, codebook: Codebook) -> PromptBuilder:
    """The prompt a run was trained with, for inference."""
    info = json.loads((Path(path) / RUN_PROMPT).read_text())
    return PromptBuilder(codebook, definitions=bool(info.get("definitions", False)))


__all__ = ["FineTuneConfig", "FineTuner", "load_run", "merge_run", "is_run_folder", "run_prompt_builder"]
