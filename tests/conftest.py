"""Shared fixtures: codebooks for each task kind and a tiny random model that runs in milliseconds.

The tiny model is a 2-layer Llama built from a config with the embedded SmolLM2 tokenizer (so prompts,
chat template and tokenisation are real); its answers are random, which is what INVALID accounting and
engine-equivalence tests need. Tests marked ``slow`` run the real embedded model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from annotune.codebook import Codebook

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FLOURISHING = SHARED_DATA / "flourishing"

# The news topics that end-to-end tests write their data files and codebook.toml from: each label's
# documents use its own words, so a trained system can tell them apart.
TOPIC_LABELS = ("business", "sport", "tech")
TOPIC_WORDS = {
    "business": "shares profit market company investors",
    "sport": "match goal team player season",
    "tech": "software computer internet phone chip",
    "politics": "election minister vote parliament party",
}
TOPICS_CODEBOOK = """\
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

[[labels]]
name = "tech"
definition = "computers, software and the internet"
"""


def make_codebook(kind: str = "single", **task) -> Codebook:
    if kind == "dimensions":
        labels = [
            {"name": "happiness", "definition": "joy or its absence"},
            {"name": "expressing gratitude", "definition": "thankfulness"},
            {"name": "perceiving discrimination", "definition": "unfair treatment"},
        ]
        task.setdefault("scale", ["low", "medium", "high"])
    else:
        labels = [
            {"name": "business", "definition": "companies and markets"},
            {"name": "politics", "definition": "government and elections"},
            {"name": "sport", "definition": "matches and athletes", "aliases": ["sports"]},
            {"name": "tech", "definition": "computers and the internet", "aliases": ["technology"]},
        ]
        if kind == "multi":
            task.setdefault("max_labels", 2)
    return Codebook.from_dict({"task": {"name": f"test-{kind}", "kind": kind, "instructions": "Code the text.",
                                        **task}, "labels": labels})


@pytest.fixture
def single_codebook() -> Codebook:
    return make_codebook("single")


@pytest.fixture
def multi_codebook() -> Codebook:
    return make_codebook("multi")


@pytest.fixture
def dimensions_codebook() -> Codebook:
    return make_codebook("dimensions")


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The embedded SmolLM2 materialised once into a plain checkpoint (cached across runs)."""
    from annotune.backends.models import materialise_gguf, resolve_model

    return materialise_gguf(resolve_model("smollm2"))


def save_tiny_llama(out: Path, tokenizer_dir: Path, **config) -> Path:
    """A randomly initialised 2-layer Llama (seed 0) with the tokenizer and chat template of ``tokenizer_dir``,
    saved to ``out``; ``config`` overrides LlamaConfig settings."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    settings = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                    tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**settings, **config})).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A randomly initialised 2-layer Llama with the real SmolLM2 tokenizer and chat template."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-model"), embedded_model_dir)


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A randomly initialised 2-layer Gemma 3 (one sliding-window layer of 16 tokens, one global) with the
    SmolLM2 tokenizer and chat template: prompts are far longer than its window."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    out = tmp_path_factory.mktemp("tiny-gemma")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=16,
                              layer_types=["sliding_attention", "full_attention"], initializer_range=0.3,
                              max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Gemma3ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sharp_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """The tiny Llama with weights 15× larger: its logits spread over several units (the 0.02-scale
    embeddings of `tiny_model_dir` keep every log-probability near -log(vocabulary)), so that LoRA can move
    its answers and numeric differences between engines show."""
    return save_tiny_llama(tmp_path_factory.mktemp("sharp-model"), embedded_model_dir, initializer_range=0.3)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny model as an F16 GGUF file, written by llama.cpp's converter (for `llamacpp` systems)."""
    from annotune.export.gguf import convert_to_gguf

    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny-f16.gguf"
    convert_to_gguf(tiny_model_dir, out)
    return out


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Test forwards are small: one thread is as fast as two, and far faster when another process shares
    the cores (OpenMP threads then wait for each other)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def install_fake_distribution(monkeypatch, folder: Path, entry_points: dict[str, dict[str, str]]) -> None:
    """Make an installed-distribution record (``*.dist-info`` with METADATA and entry_points.txt) on sys.path,
    so that `importlib.metadata.entry_points` finds the given plug-ins as it would for a pip-installed package."""
    dist = folder / "annotune_test_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: annotune-test-plugin\nVersion: 0.1\n",
                                   encoding="utf-8")
    lines = []
    for group, names in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in names.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
