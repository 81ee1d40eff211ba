"""GGUF export and the llama.cpp system: a real tiny fine-tuned run converted by llama.cpp's own converter,
quantised by llama.cpp, and run through llama-cpp-python next to the PyTorch original."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotune.backends.llamacpp import LlamaCppBackend
from annotune.backends.local import LocalBackend
from annotune.cli import app
from annotune.data.dataset import Doc
from annotune.errors import ConfigError
from annotune.export.gguf import convert_to_gguf, export_gguf, export_info
from annotune.finetune.trainer import FineTuner, load_run, run_prompt_builder
from annotune.tasks.prompts import PromptBuilder

from conftest import make_codebook
from test_compare import SINGLE_CODEBOOK, config_text, invoke, load_results
from test_finetune import docs, small_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sharp_model_dir) -> Path:
    run = tmp_path_factory.mktemp("run")
    FineTuner(make_codebook("single"), small_config(epochs=30, learning_rate=3e-2, save_steps=1000),
              base_model=str(sharp_model_dir)).train(docs(), run, progress=False, data_file="inline",
                                                          log=lambda m: None)
    export_gguf(run, quant="q4_k_m", log=lambda m: None)
    return run


def sample() -> list[Doc]:
    return [Doc(f"t{i}", d.text.replace("Item", "Case"), None) for i, d in enumerate(docs(2))]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_writes_gguf_files_modelfile_and_manifest(exported):
    folder = exported / "gguf"
    info = json.loads((folder / "export.json").read_text())
    assert set(info["files"]) == {"f16", "q4_k_m"} and info["deploy"] == "model-q4_k_m.gguf"
    for entry in info["files"].values():
        path = folder / entry["file"]
        assert path.read_bytes()[:4] == b"GGUF" and entry["sha256"] == sha256(path)
        assert entry["bytes"] == path.stat().st_size
    assert info["files"]["q4_k_m"]["bytes"] < info["files"]["f16"]["bytes"]
    assert info["run"] == str(exported.resolve()) and "llama.cpp" in info["converter"]
    assert info["run_decision_scale"] == 1.0  # a single-label run tunes none
    modelfile = (folder / "Modelfile").read_text()
    assert "FROM ./model-q4_k_m.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "- business" in modelfile and "PARAMETER temperature 0" in modelfile  # the run's system prompt
    assert json.loads((folder / "prompt.json").read_text()) == json.loads((exported / "prompt.json").read_text())
    assert not (folder / "merged").exists() and not (exported / "gguf.tmp").exists()  # temporary merge removed
    assert export_info(folder / "model-f16.gguf")["run"] == info["run"]


def test_exported_f16_answers_like_the_pytorch_run(exported, tmp_path):
    codebook = make_codebook("single")
    builder = run_prompt_builder(exported, codebook)
    model, tokenizer, _ = load_run(exported, dtype="fp32")
    torch_preds, _ = LocalBackend(loaded=(model, tokenizer, None), batch_size=4).label(sample(), builder,
                                                                                      progress=False)
    backend = LlamaCppBackend(exported / "gguf" / "model-f16.gguf", grammar=False)
    gguf_preds, stats = backend.label(sample(), builder, progress=False)
    backend.close()
    same = sum(a.raw == b.raw for a, b in zip(torch_preds, gguf_preds))
    assert same >= 6, [(a.raw, b.raw) for a, b in zip(torch_preds, gguf_preds)]  # 24 greedy tokens each
    assert stats.docs == 8 and stats.generated_tokens > 0 and stats.extra["engine"] == "llama.cpp"
    # the adapter is in the file: the base model, converted the same way, answers differently
    convert_to_gguf(Path(json.loads((exported / "manifest.json").read_text())["base_model"]["spec"]),
                    tmp_path / "base.gguf")
    base = LlamaCppBackend(tmp_path / "base.gguf", grammar=False)
    base_preds, _ = base.label(sample(), builder, progress=False)
    base.close()
    assert sum(a.raw == b.raw for a, b in zip(base_preds, gguf_preds)) <= 2


@pytest.mark.parametrize("kind", ["single", "multi", "dimensions"])
def test_grammar_keeps_every_answer_valid(exported, kind):
    codebook = make_codebook(kind)
    backend = LlamaCppBackend(exported / "gguf" / "model-q4_k_m.gguf", max_new_tokens=80)
    preds, stats = backend.label(sample(), PromptBuilder(codebook), progress=False)
    backend.close()
    assert all(p.label is not None for p in preds), [(p.raw, p.error) for p in preds if p.label is None]
    assert all(codebook.task.answer_text(p.label) == p.raw for p in preds)  # canonical answers only
    assert stats.extra["grammar"] is True


def write_data(root: Path) -> None:
    with open(root / "data.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        labels = {"business": "business", "politics": "business", "sport": "sport", "tech": "tech"}
        for d in docs(10):
            writer.writerow([d.id, d.text, labels[d.label]])


def test_compare_shows_the_run_before_and_after_export(exported, tmp_path):
    root = tmp_path
    (root / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    write_data(root)
    gguf = exported / "gguf"
    systems = (f'[[systems]]\nname = "pytorch"\ntype = "finetuned"\nrun = "{exported}"\ndtype = "fp32"\n'
               'max_new_tokens = 6\n\n'
               f'[[systems]]\nname = "gguf-f16"\ntype = "llamacpp"\nmodel = "{gguf / "model-f16.gguf"}"\n'
               'grammar = false\nmax_new_tokens = 6\n\n'
               f'[[systems]]\nname = "gguf-q4"\ntype = "llamacpp"\nmodel = "{gguf / "model-q4_k_m.gguf"}"\n')
    (root / "config.toml").write_text(config_text("codebook.toml", systems, split="test_size = 8"), encoding="utf-8")
    invoke("compare", root / "config.toml", "--output", root / "out", "--quiet")
    results = {s["name"]: s for s in load_results(root / "out")["systems"]}
    assert set(results) == {"pytorch", "gguf-f16", "gguf-q4"}
    assert results["gguf-q4"]["metrics"]["valid_rate"] == 1.0  # the grammar admits labels only
    assert results["gguf-f16"]["stats"]["exported_run"] == str(exported.resolve())
    trained = json.loads((exported / "manifest.json").read_text())["hyperparameters"]["max_text_tokens"]
    assert results["gguf-q4"]["stats"]["max_text_tokens"] == trained  # documents cut where the run's were
    raw = {}
    with open(root / "out" / "predictions.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            raw.setdefault(row["system"], {})[row["id"]] = row["raw_answer"]
    assert sum(raw["pytorch"][i] == raw["gguf-f16"][i] for i in raw["pytorch"]) >= 6


def test_bad_exports_and_models_are_refused_clearly(exported, sharp_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="not a fine-tuned run folder"):
        export_gguf(sharp_model_dir)
    with pytest.raises(ConfigError, match="unknown quantisation 'q3'.*q4_k_m"):
        export_gguf(exported, quant="q3")
    result = CliRunner().invoke(app, ["export-run", str(tmp_path), "--gguf"])
    assert result.exit_code == 2 and "not a fine-tuned run folder" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    write_data(tmp_path)
    systems = f'[[systems]]\nname = "x"\ntype = "llamacpp"\nmodel = "{sharp_model_dir}"\n'
    (tmp_path / "config.toml").write_text(config_text("codebook.toml", systems), encoding="utf-8")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "config.toml"), "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2 and "systems[1].model" in result.stderr and "annotune export-run" in result.stderr


def test_export_cli_prints_files_and_the_system_to_add(exported, tmp_path):
    result = invoke("export-run", exported, "--gguf", "--quant", "q8_0", "--output", tmp_path / "q8")
    assert (tmp_path / "q8" / "model-q8_0.gguf").exists() and (tmp_path / "q8" / "model-f16.gguf").exists()
    assert 'type = "llamacpp"' in result.stdout and "model-q8_0.gguf" in result.stdout
    assert "ollama create" in result.stdout


@pytest.mark.parametrize("kind", ["single", "multi", "dimensions"])
def test_llama_cpp_compiles_every_answer_grammar(kind):
    import llama_cpp
    from test_task_contract import LABELS, codebook_for

    for labels in (LABELS, [{"name": 'say "no"\\ ünï', "definition": "quotes"}, *LABELS[:2]]):
        grammar = codebook_for(kind, labels).task.answer_grammar()
        assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None


def test_a_failed_conversion_says_why_and_leaves_nothing_behind(exported, tmp_path):
    import shutil

    from annotune.errors import AnnotuneError

    run = tmp_path / "run"
    shutil.copytree(exported, run, ignore=shutil.ignore_patterns("gguf"))
    (run / "merged").mkdir()  # merged weights of an architecture llama.cpp does not know
    (run / "merged" / "config.json").write_text(json.dumps({"architectures": ["NoSuchModelForCausalLM"]}))
    with pytest.raises(AnnotuneError, match="(?s)converter .* failed .*NoSuchModelForCausalLM is not supported"):
        export_gguf(run, quant="q4_k_m", log=lambda m: None)
    assert not (run / "gguf").exists() and not (run / "gguf.tmp").exists()


def test_export_run_without_gguf_writes_merged_weights(exported, tmp_path):
    invoke("export-run", exported, "--output", tmp_path / "merged")
    assert (tmp_path / "merged" / "config.json").exists() and (tmp_path / "merged" / "tokenizer.json").exists()
    result = CliRunner().invoke(app, ["export-run", str(tmp_path)])
    assert result.exit_code == 2 and "not a fine-tuned run folder" in result.stderr


def test_exporting_warns_what_llama_cpp_does_not_do_as_the_run(exported, tmp_path):
    import shutil

    from annotune.errors import AnnotuneError

    run = tmp_path / "run"
    shutil.copytree(exported, run, ignore=shutil.ignore_patterns("gguf"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["hyperparameters"]["objective"] = "questions"
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "merged").mkdir()  # stop at the converter: the warning comes before it
    (run / "merged" / "config.json").write_text(json.dumps({"architectures": ["NoSuchModelForCausalLM"]}))
    said: list[str] = []
    with pytest.raises(AnnotuneError):
        export_gguf(run, quant=None, log=said.append)
    assert any(m.startswith("WARNING") and 'objective = "questions"' in m for m in said)
    said.clear()
    manifest["hyperparameters"]["objective"] = "answer"
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AnnotuneError):
        export_gguf(run, quant=None, log=said.append)
    assert not any("WARNING" in m for m in said)
    said.clear()
    manifest.setdefault("training", {})["dev"] = {"best": {"epoch": 2, "decision_scale": 0.25}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AnnotuneError):
        export_gguf(run, quant=None, log=said.append)
    warnings = [m for m in said if m.startswith("WARNING")]
    assert len(warnings) == 1 and "decision scale of 0.25" in warnings[0]
