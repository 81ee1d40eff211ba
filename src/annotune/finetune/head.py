"""LoRA + a classification head trained end to end (the `head` system's engine).

The model is any Hugging Face backbone (`AutoModel`: a decoder such as SmolLM2 or Gemma, or an encoder)
with LoRA adapters, its last hidden states pooled (mean over tokens, or the last token), a LayerNorm and
one linear layer whose outputs are split into one softmax per constrained question of the task kind: one
question over the labels for `single`, a yes/no question per label for `multi`, ``none`` + the scale per
dimension for `dimensions`. One forward pass per document, no generation.

Training holds out a stratified dev part of the training documents, evaluates on it once per epoch with
the task's primary metric, keeps the best state, and then tunes one decision scale on the same dev part
(for kinds whose first option is the "no"/"absent" answer: how much more probable that answer must be).
The test documents are never seen before the run folder is finished. A checkpoint every ``save_steps``
steps makes an interrupted training resume where it stopped.

A run folder holds the adapter (``adapter/``), the head (``head.safetensors``), the tokenizer, the
codebook and ``annotune-head.json`` (base model, settings, questions, dev history, decision scale, time).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from annotune.backends.attention import use_fast_cpu_attention
from annotune.backends.models import load_tokenizer, pool_hidden_states
from annotune.codebook import Codebook
from annotune.environment import hardware, library_versions
from annotune.errors import ConfigError
from annotune.finetune.thresholds import decide, tune_scale

HEAD_MANIFEST = "annotune-head.json"
HEAD_WEIGHTS = "head.safetensors"
ADAPTER = "adapter"


def is_head_run(path: str | Path) -> bool:
    return (Path(path) / HEAD_MANIFEST).exists() and (Path(path) / HEAD_WEIGHTS).exists()


def question_layout(codebook: Codebook) -> tuple[list, list[int]]:
    """The task's constrained questions and the offset of each one's outputs in the head."""
    questions = codebook.task.constrained_questions()
    offsets = [0]
    for q in questions:
        offsets.append(offsets[-1] + len(q.options))
    return questions, offsets


def targets_of(codebook: Codebook, labels: list) -> np.ndarray:
    """(documents, questions) index of the right option of every question."""
    questions, _ = question_layout(codebook)
    task = codebook.task
    return np.array([[q.options.index(t) for q, t in zip(questions, task.option_targets(lab))]
                     for lab in labels], dtype=np.int64).reshape(len(labels), len(questions))


def _head_module(hidden: int, outputs: int):
    from torch import nn

    head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, outputs))
    nn.init.normal_(head[1].weight, std=hidden ** -0.5)
    nn.init.zeros_(head[1].bias)
    return head


class HeadModel:
    """Backbone (with or without LoRA) + head; forward gives the head's raw outputs (fp32)."""

    def __init__(self, backbone, head, pooling: str, autocast: bool, device: str = "cpu", layer: int = -1):
        self.backbone, self.head, self.pooling, self.autocast = backbone, head, pooling, autocast
        self.device, self.layer = device, layer

    def named_trainable(self) -> dict:
        named = {f"backbone.{k}": v for k, v in self.backbone.named_parameters() if v.requires_grad}
        named.update({f"head.{k}": v for k, v in self.head.named_parameters()})
        return named

    def train(self, mode: bool = True) -> None:
        self.backbone.train(mode)
        self.head.train(mode)

    def __call__(self, batch):
        import torch

        batch = {k: v.to(self.device) for k, v in batch.items()}
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                output_hidden_states=self.layer != -1)
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        pooled = pool_hidden_states(hidden.float(), batch["attention_mask"], self.pooling)
        return self.head(pooled)


def _batches(ids: list[list[int]], order: list[int], size: int, pad_id: int):
    import torch

    for start in range(0, len(order), size):
        chunk = order[start:start + size]
        width = max(len(ids[i]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
            mask[row, :len(ids[i])] = 1
        yield chunk, {"input_ids": input_ids, "attention_mask": mask}


def encode_texts(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each text (special tokens as the tokenizer adds them), cut to ``max_tokens``; never
    empty."""
    out = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"]
        out.append(ids or [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0])
    return out


def option_probabilities(model: HeadModel, ids: list[list[int]], offsets: list[int], batch_size: int,
                         pad_id: int) -> list[list[np.ndarray]]:
    """Per document, the option probabilities of every question (documents batched by length)."""
    import torch

    model.train(False)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    rows: dict[int, np.ndarray] = {}
    with torch.inference_mode():
        for chunk, batch in _batches(ids, order, batch_size, pad_id):
            logits = model(batch).float().cpu()
            parts = [torch.softmax(logits[:, a:b], -1).numpy() for a, b in zip(offsets, offsets[1:])]
            for row, i in enumerate(chunk):
                rows[i] = [p[row] for p in parts]
    return [rows[i] for i in range(len(ids))]


def _loss(logits, targets, offsets):
    import torch.nn.functional as F

    losses = [F.cross_entropy(logits[:, a:b], targets[:, q]) for q, (a, b) in enumerate(zip(offsets, offsets[1:]))]
    return sum(losses) / len(losses)


class HeadTrainer:
    """Trains a `HeadModel` on labelled documents and writes a run folder (see the module docstring).
    ``cfg`` is the `head` system's config (settings read by attribute)."""

    def __init__(self, codebook: Codebook, cfg: Any, *, seed: int = 0, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.codebook, self.cfg, self.seed, self.progress, self.log = codebook, cfg, seed, progress, log

    def _build(self, path: str, device: str, autocast: bool) -> HeadModel:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModel

        cfg = self.cfg
        _, offsets = question_layout(self.codebook)
        torch.manual_seed(self.seed)
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
        if device == "cpu":
            use_fast_cpu_attention(backbone)
        hidden = backbone.config.get_text_config().hidden_size
        lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules)
        backbone = get_peft_model(backbone, lora)
        head = _head_module(hidden, offsets[-1])
        return HeadModel(backbone.to(device), head.to(device), cfg.pooling, autocast, device, cfg.layer)

    def train(self, base: str, fit, dev, run: Path) -> Path:
        """Train on ``fit`` (documents), evaluate on ``dev``, write ``run``; resumes from its checkpoint."""
        import torch

        from annotune.backends.models import default_device, loadable_path, parse_dtype
        from annotune.backends.models import resolve_model as resolve

        cfg, task = self.cfg, self.codebook.task
        source = resolve(base)
        path = loadable_path(source)
        device = default_device()
        autocast = parse_dtype(cfg.dtype, device) == torch.bfloat16
        tokenizer = load_tokenizer(path, padding_side="right")
        model = self._build(path, device, autocast)
        questions, offsets = question_layout(self.codebook)
        fit_ids = encode_texts(tokenizer, [d.text for d in fit.docs], cfg.max_text_tokens)
        dev_ids = encode_texts(tokenizer, [d.text for d in dev.docs], cfg.max_text_tokens) if dev else []
        targets = torch.from_numpy(targets_of(self.codebook, [d.label for d in fit.docs]))
        steps_per_epoch = math.ceil(len(fit_ids) / cfg.batch_size)
        total = max(1, math.ceil(steps_per_epoch * cfg.epochs))
        warmup = int(round(cfg.warmup_ratio * total))
        params = model.named_trainable()
        optimizer = torch.optim.AdamW(params.values(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        checkpoint = run / "checkpoints" / "last.pt"
        state = {"step": 0, "best": None, "history": [], "seconds": 0.0, "tokens": 0}
        if checkpoint.exists():
            saved = torch.load(checkpoint, weights_only=True)
            _assign(params, saved["params"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["state"]
            self.log(f"resuming the head training from step {state['step']} of {total}")
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=state["step"], desc="head training", unit="step", disable=not self.progress)
        gold_dev = [d.label for d in dev.docs] if dev else []
        started = time.perf_counter() - state["seconds"]
        model.train(True)
        for step in range(state["step"], total):
            epoch, within = divmod(step, steps_per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(len(fit_ids)).tolist()
            chunk = order[within * cfg.batch_size:(within + 1) * cfg.batch_size]
            _, batch = next(_batches(fit_ids, chunk, len(chunk), tokenizer.pad_token_id))
            for group in optimizer.param_groups:
                group["lr"] = cfg.learning_rate * _schedule(step, warmup, total)
            loss = _loss(model(batch), targets[chunk].to(device), offsets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["tokens"] += int(batch["attention_mask"].sum())
            state["step"] = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            end_of_epoch = (step + 1) % steps_per_epoch == 0 or step + 1 == total
            if end_of_epoch and dev_ids:
                probs = option_probabilities(model, dev_ids, offsets, cfg.batch_size * 2, tokenizer.pad_token_id)
                preds = [decide(self.codebook, p)[0] for p in probs]
                metrics = task.evaluate(gold_dev, preds, n_boot=0)
                point = {"step": step + 1, "epoch": round((step + 1) / steps_per_epoch, 3),
                         "dev_" + task.primary_metric: metrics[task.primary_metric], "dev_kappa": metrics.get("kappa"),
                         "train_loss": round(float(loss.item()), 5), "warnings": metrics["warnings"]}
                state["history"].append(point)
                score = metrics[task.primary_metric] or 0.0
                if state["best"] is None or score > state["best"]["score"]:
                    state["best"] = {"score": score, "step": step + 1, "warnings": metrics["warnings"]}
                    torch.save({k: v.detach().clone() for k, v in params.items()}, run / "best.pt")
                model.train(True)
            state["seconds"] = time.perf_counter() - started
            if (step + 1) % cfg.save_steps == 0 and step + 1 < total:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                _save_atomic({"params": {k: v.detach() for k, v in params.items()},
                              "optimizer": optimizer.state_dict(), "state": state}, checkpoint)
        bar.close()
        if state["best"] is not None:
            _assign(params, torch.load(run / "best.pt", weights_only=True))
        self._write(run, model, tokenizer, source, questions, fit, dev, state, autocast)
        self._tune(run, dev, device)
        for leftover in (run / "best.pt", checkpoint):
            leftover.unlink(missing_ok=True)
        for warning in (state["best"] or {}).get("warnings", []):
            self.log(f"WARNING (dev documents, best epoch): {warning}")
        self.log(f"head trained in {state['seconds']:.0f} s ({state['step']} steps"
                 + (f", best dev {task.primary_metric} {state['best']['score']:.3f} at step {state['best']['step']}"
                    if state["best"] else "") + f"); run folder: {run}")
        return run

    def _write(self, run, model, tokenizer, source, questions, fit, dev, state, autocast) -> None:
        from safetensors.torch import save_file

        from annotune.backends.models import model_fingerprint

        cfg = self.cfg
        model.backbone.save_pretrained(run / ADAPTER)
        save_file({k: v.detach().contiguous() for k, v in model.head.state_dict().items()}, run / HEAD_WEIGHTS)
        tokenizer.save_pretrained(run)
        (run / "codebook.json").write_text(json.dumps(self.codebook.to_dict(), indent=2, ensure_ascii=False))
        seconds = state["seconds"]
        self.manifest = {
            "annotune_head_run": 1,
            "base_model": model_fingerprint(source),
            "codebook": self.codebook.name,
            "task_kind": self.codebook.kind,
            "questions": [{"text": q.text, "options": list(q.options), "target": q.target} for q in questions],
            "pooling": cfg.pooling,
            "layer": cfg.layer,
            "max_text_tokens": cfg.max_text_tokens,
            "bf16_autocast": autocast,
            "settings": cfg.settings(),
            "seed": self.seed,
            "data": {"fit": len(fit), "dev": len(dev) if dev else 0, "dev_ids": list(dev.ids) if dev else []},
            "training": {"steps": state["step"], "seconds": round(seconds, 2), "tokens": state["tokens"],
                         "tokens_per_s": round(state["tokens"] / seconds, 1) if seconds else None,
                         "history": state["history"], "best": state["best"]},
            "decision_scale": 1.0,
            "libraries": library_versions(),
            "hardware": hardware(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _tune(self, run: Path, dev, device: str) -> None:
        """Tune the decision scale on the dev part with the model as it loads back from ``run``, then write
        the manifest (which marks the run folder finished)."""
        manifest = self.manifest
        if dev:
            classifier = HeadClassifier(run, manifest=manifest, device=device)
            probs = classifier.option_probs([d.text for d in dev.docs], self.cfg.batch_size * 2)
            scale, metric = tune_scale(self.codebook, probs, [d.label for d in dev.docs])
            manifest["decision_scale"] = scale
            manifest["training"]["dev_metric_tuned"] = metric
        tmp = run / (HEAD_MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
        tmp.replace(run / HEAD_MANIFEST)


def _schedule(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then linear decay to zero."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def _assign(params: dict, values: dict) -> None:
    import torch

    with torch.no_grad():
        for k, v in params.items():
            v.copy_(values[k])


def _save_atomic(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


class HeadClassifier:
    """A finished (or just written) head run folder, loaded for labelling: base model + merged adapter +
    head. The same folder gives the same probabilities every time it is loaded."""

    def __init__(self, run: str | Path, *, manifest: dict | None = None, device: str | None = None):
        import torch
        from peft import PeftModel
        from safetensors.torch import load_file
        from transformers import AutoModel

        from annotune.backends.models import default_device, loadable_path
        from annotune.backends.models import resolve_model as resolve

        run = Path(run)
        if manifest is None:
            if not is_head_run(run):
                raise ConfigError("not a head run folder (no annotune-head.json + head.safetensors)", file=run)
            manifest = json.loads((run / HEAD_MANIFEST).read_text(encoding="utf-8"))
        self.manifest = manifest
        device = device or default_device()
        base = resolve(manifest["base_model"]["spec"])
        backbone = AutoModel.from_pretrained(loadable_path(base), dtype=torch.float32)
        backbone = PeftModel.from_pretrained(backbone, run / ADAPTER).merge_and_unload()
        weights = load_file(run / HEAD_WEIGHTS)
        hidden, outputs = weights["1.weight"].shape[1], weights["1.weight"].shape[0]
        head = _head_module(hidden, outputs)
        head.load_state_dict(weights)
        self.tokenizer = load_tokenizer(run, padding_side="right")
        self.model = HeadModel(backbone.to(device).eval(), head.to(device).eval(), manifest["pooling"],
                               manifest["bf16_autocast"], device, manifest.get("layer", -1))
        sizes = [len(q["options"]) for q in manifest["questions"]]
        self.offsets = [0, *np.cumsum(sizes).tolist()]
        self.device = device

    @property
    def scale(self) -> float:
        return float(self.manifest.get("decision_scale", 1.0))

    def option_probs(self, texts: list[str], batch_size: int = 16) -> list[list[np.ndarray]]:
        ids = encode_texts(self.tokenizer, texts, self.manifest["max_text_tokens"])
        return option_probabilities(self.model, ids, self.offsets, batch_size, self.tokenizer.pad_token_id)


__all__ = ["HeadTrainer", "HeadClassifier", "is_head_run", "question_layout", "targets_of", "HEAD_MANIFEST"]
