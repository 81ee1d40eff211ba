"""`annotune.backends.models`: how a model spec resolves (embedded aliases, GGUF files, folders, hub ids),
the GGUF checkpoint materialised once into the cache, what a manifest records about a model, dtypes on this
machine, and loading a plain model folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from annotune.backends.models import (
    EMBEDDED_FILE,
    ModelSource,
    default_dtype,
    embedded_model_file,
    file_sha256,
    load_causal_lm,
    loadable_path,
    materialise_gguf,
    materialised_dir,
    model_fingerprint,
    parse_dtype,
    resolve_model,
)
from annotune.errors import ConfigError


# ---------------------------------------------------------------------------- resolve_model
@pytest.mark.parametrize("spec", [None, "", "smollm2", "default", "SmolLM2", " smollm2-135m-instruct "])
def test_embedded_aliases_resolve_to_the_shipped_gguf(spec):
    source = resolve_model(spec)
    assert source.is_gguf and source.gguf_file == EMBEDDED_FILE
    assert Path(source.location) / source.gguf_file == embedded_model_file()
    assert source.describe() == str(embedded_model_file())
    assert embedded_model_file().is_file()


def test_blank_spec_is_the_embedded_model_like_an_empty_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = resolve_model("  ")
    assert source.is_gguf and source.gguf_file == EMBEDDED_FILE


def test_missing_gguf_file_is_a_config_error_naming_it(tmp_path):
    missing = tmp_path / "weights" / "model.Q4_K_M.gguf"
    with pytest.raises(ConfigError) as info:
        resolve_model(str(missing))
    assert info.value.file == str(missing)
    assert str(missing) in str(info.value) and "GGUF model file not found" in str(info.value)
    with pytest.raises(ConfigError, match="not found"):  # the suffix is matched case-insensitively
        resolve_model(str(tmp_path / "MODEL.GGUF"))


def test_existing_gguf_file_resolves_to_its_folder(tmp_path):
    gguf = tmp_path / "sub" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")  # resolve_model only locates it; nothing is read
    source = resolve_model(str(gguf))
    assert source == ModelSource(str(gguf), str(gguf.parent.resolve()), "m.gguf")
    assert source.is_gguf and source.describe() == str(gguf.parent.resolve() / "m.gguf")


def test_existing_folder_is_a_local_model(tmp_path, monkeypatch):
    folder = tmp_path / "my-model"
    folder.mkdir()
    source = resolve_model(str(folder))
    assert source == ModelSource(str(folder), str(folder.resolve()))
    assert not source.is_gguf and source.describe() == str(folder.resolve())
    monkeypatch.chdir(tmp_path)  # a relative folder is made absolute
    assert resolve_model("my-model").location == str(folder.resolve())


@pytest.mark.parametrize("spec", ["./no-such-model", "../no-such-model", "/no/such/model", "~/no-such-annotune-model"])
def test_missing_path_that_looks_like_a_path_is_an_error(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="neither a model directory nor a .gguf file") as info:
        resolve_model(spec)
    assert "no-such" in info.value.file or "/no/such" in info.value.file


def test_existing_file_that_is_not_a_model_is_an_error(tmp_path):
    notes = tmp_path / "config.json"
    notes.write_text("{}")
    with pytest.raises(ConfigError, match="neither a model directory") as info:
        resolve_model(str(notes))
    assert info.value.file == str(notes)


@pytest.mark.parametrize("spec", ["HuggingFaceTB/SmolLM2-360M-Instruct", "gpt2"])
def test_hub_id_is_left_as_is(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    source = resolve_model(spec)
    assert source == ModelSource(spec, spec) and not source.is_gguf
    assert loadable_path(source) == spec  # no materialisation for a non-GGUF source


# ---------------------------------------------------------------------------- GGUF materialisation
def test_materialise_gguf_is_cached_once(embedded_model_dir):
    source = resolve_model("smollm2")
    assert embedded_model_dir == materialised_dir(source)
    started = time.perf_counter()
    again = materialise_gguf(source)
    assert time.perf_counter() - started < 1.0  # no second conversion (a conversion takes many seconds)
    assert again == embedded_model_dir
    assert loadable_path(source) == str(embedded_model_dir)
    marker = json.loads((embedded_model_dir / "annotune-materialised.json").read_text())
    assert marker["gguf_file"] == str(embedded_model_file())
    assert (embedded_model_dir / "config.json").is_file()
    assert sorted(embedded_model_dir.glob("*.safetensors")), "a plain safetensors checkpoint"
    assert not list(embedded_model_dir.parent.glob(embedded_model_dir.name + ".tmp*"))  # no leftovers


def test_materialised_dir_depends_on_the_gguf_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOTUNE_CACHE", str(tmp_path / "cache"))
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"one")
    b.write_bytes(b"one")
    dir_a = materialised_dir(resolve_model(str(a)))
    assert dir_a.parent == tmp_path / "cache" / "models" and dir_a.name.startswith("a-")
    assert dir_a == materialised_dir(resolve_model(str(a)))  # stable
    assert dir_a.name[2:] != materialised_dir(resolve_model(str(b))).name[2:]  # another file, another key
    a.write_bytes(b"changed")  # a replaced file is converted again
    assert materialised_dir(resolve_model(str(a))) != dir_a


def test_fingerprint_of_gguf_and_of_a_folder(embedded_model_dir, tiny_model_dir):
    gguf = resolve_model("smollm2")
    info = model_fingerprint(gguf)
    assert info["spec"] == "smollm2" and info["location"] == str(embedded_model_file())
    marker = json.loads((embedded_model_dir / "annotune-materialised.json").read_text())
    assert info["sha256"] == marker["gguf_sha256"] and len(info["sha256"]) == 64

    folder = resolve_model(str(tiny_model_dir))
    info = model_fingerprint(folder)
    weights = sorted(tiny_model_dir.glob("*.safetensors"))
    assert weights and len(info["sha256"]) == 64
    import hashlib

    expected = hashlib.sha256("".join(file_sha256(w) for w in weights).encode()).hexdigest()
    assert info["sha256"] == expected


def test_fingerprint_of_a_folder_without_weights_and_of_a_hub_id(tmp_path):
    assert model_fingerprint(resolve_model(str(tmp_path))) == {"spec": str(tmp_path),
                                                               "location": str(tmp_path.resolve())}
    assert model_fingerprint(ModelSource("org/model", "org/model")) == {"spec": "org/model", "location": "org/model"}


def test_file_sha256_reads_in_chunks(tmp_path):
    import hashlib

    data = bytes(range(256)) * 1000
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path, chunk=1000) == file_sha256(path) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- dtypes
def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def test_default_dtype_on_this_machine():
    assert default_dtype("cuda") is torch.bfloat16
    assert default_dtype("cuda:1") is torch.bfloat16
    assert default_dtype("cpu") is (torch.bfloat16 if _cpu_has_native_bf16() else torch.float32)


@pytest.mark.parametrize("name,expected", [("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16),
                                           ("fp32", torch.float32), ("float32", torch.float32),
                                           ("fp16", torch.float16), ("float16", torch.float16)])
def test_parse_dtype_names(name, expected):
    assert parse_dtype(name, "cpu") is expected
    assert parse_dtype(name, "cuda") is expected  # an explicit name wins over the device's default


@pytest.mark.parametrize("name", [None, "", "auto"])
def test_parse_dtype_auto_is_the_device_default(name):
    assert parse_dtype(name, "cpu") is default_dtype("cpu")
    assert parse_dtype(name, "cuda") is torch.bfloat16


@pytest.mark.parametrize("name", ["int8", "float64", "half"])
def test_parse_dtype_rejects_unknown_names(name):
    with pytest.raises(ConfigError) as info:
        parse_dtype(name, "cpu")
    assert info.value.field == "dtype" and repr(name) in str(info.value)


# ---------------------------------------------------------------------------- loading
def test_load_causal_lm_from_a_plain_folder(tiny_model_dir):
    model, tokenizer, source = load_causal_lm(str(tiny_model_dir), dtype="fp32", device="cpu")
    assert source == resolve_model(str(tiny_model_dir)) and not source.is_gguf
    assert not model.training and next(model.parameters()).dtype is torch.float32
    assert model.config.num_hidden_layers == 2
    assert tokenizer.pad_token_id is not None
    ids = tokenizer("hello world", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape[-1] == model.config.vocab_size


def test_load_causal_lm_reports_a_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_causal_lm(str(tmp_path / "gone.gguf"), device="cpu")
