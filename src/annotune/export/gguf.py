"""`annotune export-run <run> --gguf`: a fine-tuned run as GGUF files for llama.cpp and Ollama.

The adapter is merged into the base weights, llama.cpp's own converter (vendored in ``converter/``) writes an
F16 GGUF, llama.cpp's library quantises it (Q4_K_M by default), and an Ollama Modelfile with the run's system
prompt goes next to them. ``export.json`` records the run, the files' sha256 and the prompt the run was trained
with, so that a ``type = "llamacpp"`` system given one of the files asks exactly what the run learnt to answer —
and the comparison table shows the metric before and after export side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from annotune.errors import AnnotuneError, ConfigError
from annotune.export.quantize import QUANT_TYPES

CONVERTER = Path(__file__).parent / "converter" / "convert_hf_to_gguf.py"
CONVERTER_VERSION = "llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f (convert_hf_to_gguf.py, vendored)"
EXPORT_MANIFEST = "export.json"
MODELFILE = "Modelfile"
F16 = "f16"
QUANTS = (F16, *QUANT_TYPES)


def gguf_name(quant: str) -> str:
    return f"model-{quant}.gguf"


def _run(command: list[str], what: str) -> None:
    """Run one step in its own process; a failure is an `AnnotuneError` with the step's last output lines."""
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise AnnotuneError(f"{what} failed (exit status {proc.returncode}):\n{tail}")


def convert_to_gguf(model_dir: str | Path, target: str | Path) -> None:
    """An F16 GGUF of a Hugging Face model folder, written by llama.cpp's converter."""
    _run([sys.executable, str(CONVERTER), str(model_dir), "--outfile", str(target), "--outtype", F16],
         f"llama.cpp's converter ({CONVERTER.name}) on {model_dir}")


def quantize_gguf(source: str | Path, target: str | Path, quant: str, threads: int = 0) -> None:
    """``source`` quantised to ``quant`` by llama.cpp (needs llama-cpp-python)."""
    _run([sys.executable, "-m", "annotune.export.quantize", str(source), str(target), quant, str(threads)],
         f"llama.cpp quantisation to {quant}")


def modelfile(gguf: str, system: str, stop: str, context: int) -> str:
    """An Ollama Modelfile: the file, the run's system prompt, greedy answers that stop at the end of turn.
    The chat template is the one stored in the GGUF."""
    quoted = system.replace('"""', '" " "')
    lines = [
        "# Ollama: ollama create <name> -f Modelfile && ollama run <name>",
        "# Send each document as the user message the run was trained on: \"Text:\\n<document>\\n\\n<question>\"",
        "# (see prompt.json); answers are the codebook's labels as annotune writes them.",
        f"FROM ./{gguf}",
        f'SYSTEM """{quoted}"""',
        "PARAMETER temperature 0",
        f"PARAMETER num_ctx {context}",
    ]
    if stop:
        lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n"


def export_gguf(run: str | Path, *, quant: str | None = "q4_k_m", output: str | Path | None = None,
                threads: int = 0, context: int = 4096, log=print) -> dict:
    """Export a fine-tuned run (``type = "finetuned"``, LoRA) to ``output`` (default ``<run>/gguf``): the F16
    GGUF, the ``quant`` one unless ``quant`` is None or ``"f16"``, an Ollama Modelfile and ``export.json``
    (returned). An existing export folder is replaced only once the new one is complete."""
    from annotune.backends.llamacpp import import_llama_cpp
    from annotune.finetune.trainer import RUN_MANIFEST, is_run_folder

    run = Path(run)
    quant = None if quant in (None, F16) else quant.lower()
    if quant is not None and quant not in QUANT_TYPES:
        raise ConfigError(f"unknown quantisation {quant!r} (choose from {', '.join(QUANTS)})", field="quant")
    if not is_run_folder(run):
        head = (run / RUN_MANIFEST).exists()
        raise ConfigError("a classifier-head run cannot become a GGUF (llama.cpp generates text); export a "
                          "generative LoRA run (type = \"finetuned\")" if head else
                          "not a fine-tuned run folder (no manifest.json + adapter)", file=run)
    run_manifest = json.loads((run / RUN_MANIFEST).read_text())
    for warning in export_warnings(run_manifest):
        log("WARNING: " + warning)
    if quant is not None:
        import_llama_cpp()  # fail before the slow steps
    target = Path(output) if output else run / "gguf"
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _write_export(run, run_manifest, tmp, quant, threads, context, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written export (nor its merged weights) stays behind
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return manifest | {"folder": str(target)}


def export_warnings(run_manifest: dict) -> list[str]:
    """What a GGUF of this run will not do as the run itself does: llama.cpp and Ollama generate the answer
    greedily, without the run's questions objective or its tuned decision scale."""
    from annotune.finetune.thresholds import manifest_decision_scale

    warnings = []
    if run_manifest.get("hyperparameters", {}).get("objective") == "questions":
        warnings.append('this run was trained on the constrained questions (objective = "questions"), not to '
                        "write its answer; llama.cpp and Ollama generate the answer: check the exported file with "
                        "a llamacpp system on held-out documents before using it")
    scale = manifest_decision_scale(run_manifest)
    if scale != 1.0:
        warnings.append(f"this run answers `constrained` with a decision scale of {scale:g} on its \"no\"/"
                        "\"absent\" answers, tuned on its dev documents; llama.cpp and Ollama generate at scale 1 "
                        "(no tuning): expect other answers, and check the exported file with a llamacpp system on "
                        "held-out documents")
    return warnings


def _write_export(run: Path, run_manifest: dict, tmp: Path, quant: str | None, threads: int, context: int,
                  log) -> dict:
    """The files of an export, written into ``tmp``; returns export.json's content."""
    from annotune.backends.llamacpp import import_llama_cpp
    from annotune.backends.models import file_sha256, load_tokenizer
    from annotune.codebook import Codebook
    from annotune.finetune.thresholds import manifest_decision_scale
    from annotune.finetune.trainer import RUN_CODEBOOK, RUN_PROMPT, merge_run
    from annotune.tasks.prompts import end_of_turn, system_prompt

    merged = run / "merged"
    if not (merged / "config.json").exists():
        log(f"merging the adapter into the base weights → {tmp / 'merged'}")
        merged = merge_run(run, tmp / "merged")
    files = {F16: gguf_name(F16)}
    log(f"converting to GGUF (F16) with {CONVERTER_VERSION}")
    convert_to_gguf(merged, tmp / files[F16])
    if quant is not None:
        files[quant] = gguf_name(quant)
        log(f"quantising to {quant}")
        quantize_gguf(tmp / files[F16], tmp / files[quant], quant, threads)
    if merged.parent == tmp:
        shutil.rmtree(merged)

    codebook = Codebook.from_dict(json.loads((run / RUN_CODEBOOK).read_text()))
    prompt = json.loads((run / RUN_PROMPT).read_text())
    shutil.copy(run / RUN_PROMPT, tmp / RUN_PROMPT)
    shutil.copy(run / RUN_CODEBOOK, tmp / RUN_CODEBOOK)
    deployed = files[quant or F16]
    stop = end_of_turn(load_tokenizer(run))
    (tmp / MODELFILE).write_text(modelfile(deployed, system_prompt(codebook, bool(prompt.get("definitions"))),
                                           stop, context))
    manifest = {
        "run": str(run.resolve()),
        "base_model": run_manifest.get("base_model"),
        # what the run saw of each document: a llamacpp system cuts documents there too
        "max_text_tokens": run_manifest.get("hyperparameters", {}).get("max_text_tokens"),
        # the run's own constrained answers use it; the exported file (generation) cannot
        "run_decision_scale": manifest_decision_scale(run_manifest),
        "converter": CONVERTER_VERSION,
        "quantiser": f"llama-cpp-python {import_llama_cpp().__version__}" if quant else None,
        "files": {q: {"file": name, "bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
                  for q, name in files.items()},
        "deploy": deployed,
        "modelfile": MODELFILE,
        "prompt": RUN_PROMPT,
        "codebook": RUN_CODEBOOK,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (tmp / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def export_info(gguf: str | Path) -> dict | None:
    """The ``export.json`` next to a GGUF file written by `export_gguf` (None for any other GGUF)."""
    path = Path(gguf).parent / EXPORT_MANIFEST
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return info | {"folder": str(path.parent)}


__all__ = ["export_gguf", "export_info", "convert_to_gguf", "quantize_gguf", "QUANTS", "EXPORT_MANIFEST"]
